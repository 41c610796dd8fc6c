// Go pgx (v4, Debian's golang-github-jackc-pgx-v4-dev) against millrace, as
// a new user would try it: pgx prepares every query as a named statement
// (its statement cache), sends parameters and reads results in binary for
// the types it knows, pipelines a Batch in one round trip, and can fall
// back to the simple protocol per query.
// Connects, runs parameterized queries, reads catalog metadata and a
// windowed view.
// Run (GOPATH mode, no module proxy needed):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go run millrace_pgx.go PORT
//
// Exits non-zero on any mismatch.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"time"

	"github.com/jackc/pgconn"
	"github.com/jackc/pgx/v4"
)

func check(ok bool, format string, args ...interface{}) {
	if !ok {
		fmt.Fprintf(os.Stderr, "pgx client: "+format+"\n", args...)
		os.Exit(1)
	}
}

func must(err error, what string) {
	check(err == nil, "%s: %v", what, err)
}

func main() {
	ctx := context.Background()
	url := fmt.Sprintf("postgres://tester@127.0.0.1:%s/millrace?sslmode=disable", os.Args[1])
	conn, err := pgx.Connect(ctx, url)
	must(err, "connect")
	defer conn.Close(ctx)

	// the same fixture as the asyncpg test (server/tests/asyncpg_client.py)
	_, err = conn.Exec(ctx, "CREATE TABLE trades (symbol TEXT, qty BIGINT, price DOUBLE PRECISION, ts TIMESTAMPTZ,"+
		" WATERMARK FOR ts AS ts - INTERVAL '1 second')")
	must(err, "create table")
	_, err = conn.Exec(ctx, "CREATE MATERIALIZED VIEW per_minute AS SELECT window_start, symbol, count(*) AS n,"+
		" sum(qty) AS volume, max(price) AS high"+
		" FROM TUMBLE(trades, ts, INTERVAL '1 minute') GROUP BY window_start, symbol")
	must(err, "create view")
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := 0; i < 20; i++ {
		// binary parameters: int8, float8 and timestamptz
		tag, err := conn.Exec(ctx, "INSERT INTO trades VALUES ($1, $2, $3, $4)",
			"ACME", int64(i+1), 10.0+float64(i), t0.Add(time.Duration(10*i)*time.Second))
		must(err, "insert")
		check(tag.RowsAffected() == 1, "insert tag %q", tag)
	}

	// a parameterized query, prepared and cached by pgx
	var n int64
	for round := 0; round < 3; round++ {
		must(conn.QueryRow(ctx, "SELECT count(*) FROM trades WHERE symbol = $1 AND qty > $2", "ACME", 5).Scan(&n), "count")
		check(n == 15, "count %d", n)
	}

	// the windowed view, binary results
	rows, err := conn.Query(ctx, "SELECT window_start, n, volume, high FROM per_minute WHERE symbol = $1 ORDER BY 1", "ACME")
	must(err, "query view")
	type window struct {
		start     time.Time
		n, volume int64
		high      float64
	}
	var got []window
	for rows.Next() {
		var w window
		must(rows.Scan(&w.start, &w.n, &w.volume, &w.high), "scan view")
		w.start = w.start.UTC()
		got = append(got, w)
	}
	must(rows.Err(), "view rows")
	want := []window{
		{t0, 6, 21, 15},
		{t0.Add(time.Minute), 6, 57, 21},
		{t0.Add(2 * time.Minute), 6, 93, 27},
		{t0.Add(3 * time.Minute), 2, 39, 29},
	}
	check(reflect.DeepEqual(got, want), "view rows %v, want %v", got, want)

	// the same read over the simple protocol (text results)
	var high float64
	var start time.Time
	must(conn.QueryRow(ctx, "SELECT window_start, high FROM per_minute WHERE n = $1 ORDER BY 1 LIMIT 1",
		pgx.QuerySimpleProtocol(true), 2).Scan(&start, &high), "simple protocol")
	check(start.Equal(t0.Add(3*time.Minute)) && high == 29, "simple protocol row %v %v", start, high)

	// a batch: several statements pipelined before one Sync
	batch := &pgx.Batch{}
	batch.Queue("SELECT max(qty) FROM trades WHERE symbol = $1", "ACME")
	batch.Queue("SELECT count(*) FROM per_minute")
	batch.Queue("SELECT $1::text || '!'", "hi")
	br := conn.SendBatch(ctx, batch)
	var maxQty, windows int64
	var hi string
	must(br.QueryRow().Scan(&maxQty), "batch 1")
	must(br.QueryRow().Scan(&windows), "batch 2")
	must(br.QueryRow().Scan(&hi), "batch 3")
	must(br.Close(), "batch close")
	check(maxQty == 20 && windows == 4 && hi == "hi!", "batch %d %d %q", maxQty, windows, hi)

	// catalog metadata, as tools read it
	rows, err = conn.Query(ctx, "SELECT column_name, data_type FROM information_schema.columns"+
		" WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position", "public", "trades")
	must(err, "information_schema.columns")
	var cols []string
	for rows.Next() {
		var name, typ string
		must(rows.Scan(&name, &typ), "scan columns")
		cols = append(cols, name+" "+typ)
	}
	must(rows.Err(), "columns rows")
	check(strings.Join(cols, ", ") == "symbol text, qty bigint, price double precision, ts timestamp with time zone",
		"columns %v", cols)
	var relkind string
	var oid uint32
	must(conn.QueryRow(ctx, "SELECT c.oid, c.relkind::text FROM pg_catalog.pg_class c"+
		" JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relname = $1",
		"per_minute").Scan(&oid, &relkind), "pg_class")
	check(relkind == "m" && oid > 0, "pg_class %d %q", oid, relkind)
	var attrs []string
	rows, err = conn.Query(ctx, "SELECT attname, format_type(atttypid, atttypmod) FROM pg_catalog.pg_attribute"+
		" WHERE attrelid = $1 AND attnum > 0 ORDER BY attnum", oid)
	must(err, "pg_attribute")
	for rows.Next() {
		var name, typ string
		must(rows.Scan(&name, &typ), "scan attributes")
		attrs = append(attrs, name+" "+typ)
	}
	must(rows.Err(), "attribute rows")
	check(strings.Join(attrs, ", ") ==
		"window_start timestamp with time zone, symbol text, n bigint, volume bigint, high double precision",
		"attributes %v", attrs)
	var version string
	must(conn.QueryRow(ctx, "SELECT version()").Scan(&version), "version")
	check(strings.HasPrefix(version, "PostgreSQL 15.0 (Millrace"), "version %q", version)
	check(conn.PgConn().ParameterStatus("server_version") != "", "server_version parameter")

	// errors carry SQLSTATEs and leave the connection usable
	_, err = conn.Exec(ctx, "SELECT * FROM no_such_table")
	var pgErr *pgconn.PgError
	check(errors.As(err, &pgErr) && pgErr.Code == "42P01", "missing table error %v", err)
	var one int32
	must(conn.QueryRow(ctx, "SELECT 1").Scan(&one), "after error")
	check(one == 1, "after error %d", one)
	fmt.Println("pgx client ok")
}
