"""asyncpg against millrace, as a new user would try it: asyncpg uses the
extended protocol with binary parameters and results everywhere, prepares
every statement, and reads cursors in pieces (portals with a row limit).
Connects, runs parameterized queries, reads catalog metadata and a windowed
view. Exits non-zero on any mismatch."""
import asyncio
import datetime
import sys

import asyncpg


async def main(port: int) -> None:
    conn = await asyncpg.connect(host="127.0.0.1", port=port, user="tester", database="millrace")
    try:
        await conn.execute(
            "CREATE TABLE trades (symbol TEXT, qty BIGINT, price DOUBLE PRECISION, ts TIMESTAMPTZ,"
            " WATERMARK FOR ts AS ts - INTERVAL '1 second')"
        )
        await conn.execute(
            "CREATE MATERIALIZED VIEW per_minute AS SELECT window_start, symbol, count(*) AS n,"
            " sum(qty) AS volume, max(price) AS high"
            " FROM TUMBLE(trades, ts, INTERVAL '1 minute') GROUP BY window_start, symbol"
        )
        t0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
        rows = [("ACME", i + 1, 10.0 + i, t0 + datetime.timedelta(seconds=10 * i)) for i in range(20)]
        # executemany: one prepared INSERT, binary parameters
        await conn.executemany("INSERT INTO trades VALUES ($1, $2, $3, $4)", rows)

        # parameterized query, binary results
        n = await conn.fetchval("SELECT count(*) FROM trades WHERE symbol = $1 AND qty > $2", "ACME", 5)
        assert n == 15, n

        # the windowed view
        got = await conn.fetch("SELECT window_start, n, volume, high FROM per_minute WHERE symbol = $1 ORDER BY 1", "ACME")
        assert [tuple(r) for r in got] == [
            (t0, 6, 21, 15.0),
            (t0 + datetime.timedelta(minutes=1), 6, 57, 21.0),
            (t0 + datetime.timedelta(minutes=2), 6, 93, 27.0),
            (t0 + datetime.timedelta(minutes=3), 2, 39, 29.0),
        ], got

        # an explicitly prepared statement, reused
        stmt = await conn.prepare("SELECT qty FROM trades WHERE qty = $1")
        for q in (1, 7, 20):
            assert await stmt.fetchval(q) == q
        assert [a.name for a in stmt.get_attributes()] == ["qty"]

        # a cursor read in pieces of 3 rows (Execute with a row limit)
        async with conn.transaction():
            seen = [r["qty"] async for r in conn.cursor("SELECT qty FROM trades ORDER BY qty", prefetch=3)]
        assert seen == list(range(1, 21)), seen
        async with conn.transaction():
            cur = await conn.cursor("SELECT qty FROM trades ORDER BY qty")
            first = await cur.fetch(4)
            assert [r["qty"] for r in first] == [1, 2, 3, 4], first
            nxt = await cur.fetchrow()
            assert nxt["qty"] == 5, nxt

        # catalog metadata, as tools read it
        tables = await conn.fetch(
            "SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1"
        )
        assert [r["table_name"] for r in tables] == ["per_minute", "trades"], tables
        cols = await conn.fetch(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a"
            " JOIN pg_catalog.pg_class c ON c.oid = a.attrelid WHERE c.relname = $1 AND a.attnum > 0 ORDER BY a.attnum",
            "trades",
        )
        assert [tuple(r) for r in cols] == [
            ("symbol", "text"),
            ("qty", "bigint"),
            ("price", "double precision"),
            ("ts", "timestamp with time zone"),
        ], cols
        version = await conn.fetchval("SELECT version()")
        assert version.startswith("PostgreSQL 15.0 (Millrace"), version
        assert conn.get_server_version().major == 15

        # errors carry SQLSTATEs and leave the connection usable
        try:
            await conn.fetch("SELECT * FROM no_such_table")
            raise SystemExit("expected an error")
        except asyncpg.exceptions.UndefinedTableError:
            pass
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()
    print("asyncpg client ok")


asyncio.run(main(int(sys.argv[1])))
