// node-postgres (`pg` from npm) against millrace, as a new user would try
// it: `pg` sends parameterized queries over the extended protocol with
// text parameters and text results (an unnamed statement, or a named one
// when the query has a `name`), parses results with its type parsers by
// type OID, and sends plain `client.query(text)` as a simple Query.
// Connects, runs parameterized queries, reads catalog metadata and a
// windowed view.
// Run: (cd server/tests/node && npm ci) && node server/tests/node/millrace_pg.js PORT
// Exits non-zero (a thrown error) on any mismatch.
'use strict';

const assert = require('assert');
const { Client } = require('pg');

async function main(port) {
  const client = new Client({ host: '127.0.0.1', port, user: 'tester', database: 'millrace' });
  await client.connect();
  try {
    // the same fixture as the asyncpg test (server/tests/asyncpg_client.py)
    await client.query(
      'CREATE TABLE trades (symbol TEXT, qty BIGINT, price DOUBLE PRECISION, ts TIMESTAMPTZ,' +
        " WATERMARK FOR ts AS ts - INTERVAL '1 second')"
    );
    await client.query(
      'CREATE MATERIALIZED VIEW per_minute AS SELECT window_start, symbol, count(*) AS n,' +
        ' sum(qty) AS volume, max(price) AS high' +
        " FROM TUMBLE(trades, ts, INTERVAL '1 minute') GROUP BY window_start, symbol"
    );
    const t0 = Date.UTC(2026, 0, 1);
    for (let i = 0; i < 20; i++) {
      // a parameterized INSERT; a Date parameter is sent as text with its offset
      const res = await client.query('INSERT INTO trades VALUES ($1, $2, $3, $4)', [
        'ACME',
        i + 1,
        10.0 + i,
        new Date(t0 + 10000 * i),
      ]);
      assert.strictEqual(res.rowCount, 1, 'insert row count');
    }

    // parameterized query; bigint arrives as a string (pg's default for int8)
    let res = await client.query('SELECT count(*) AS n FROM trades WHERE symbol = $1 AND qty > $2', ['ACME', 5]);
    assert.deepStrictEqual(res.rows, [{ n: '15' }]);
    assert.strictEqual(res.fields[0].dataTypeID, 20, 'count(*) is int8');

    // the windowed view: timestamptz parsed to Date, float8 to number
    res = await client.query({
      text: 'SELECT window_start, n, volume, high FROM per_minute WHERE symbol = $1 ORDER BY 1',
      values: ['ACME'],
      rowMode: 'array',
    });
    const minute = 60000;
    assert.deepStrictEqual(
      res.rows.map(([w, n, v, h]) => [w.getTime(), n, v, h]),
      [
        [t0, '6', '21', 15],
        [t0 + minute, '6', '57', 21],
        [t0 + 2 * minute, '6', '93', 27],
        [t0 + 3 * minute, '2', '39', 29],
      ]
    );
    assert.deepStrictEqual(
      res.fields.map((f) => [f.name, f.dataTypeID]),
      [
        ['window_start', 1184],
        ['n', 20],
        ['volume', 20],
        ['high', 701],
      ]
    );

    // a named prepared statement, parsed once and reused
    for (const q of [1, 7, 20]) {
      res = await client.query({ name: 'by-qty', text: 'SELECT qty, ts FROM trades WHERE qty = $1', values: [q] });
      assert.strictEqual(res.rows.length, 1);
      assert.strictEqual(res.rows[0].qty, String(q));
      assert.strictEqual(res.rows[0].ts.getTime(), t0 + 10000 * (q - 1));
    }

    // catalog metadata, as tools read it
    res = await client.query(
      'SELECT column_name, data_type, is_nullable FROM information_schema.columns' +
        ' WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position',
      ['public', 'per_minute']
    );
    assert.deepStrictEqual(
      res.rows.map((r) => [r.column_name, r.data_type]),
      [
        ['window_start', 'timestamp with time zone'],
        ['symbol', 'text'],
        ['n', 'bigint'],
        ['volume', 'bigint'],
        ['high', 'double precision'],
      ]
    );
    res = await client.query(
      "SELECT c.relname, c.relkind FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace" +
        " WHERE n.nspname = 'public' ORDER BY 1"
    );
    assert.deepStrictEqual(
      res.rows.map((r) => [r.relname, r.relkind]),
      [
        ['per_minute', 'm'],
        ['trades', 'r'],
      ]
    );
    res = await client.query("SELECT version() AS v, current_setting('TimeZone') AS tz");
    assert.ok(res.rows[0].v.startsWith('PostgreSQL 15.0 (Millrace'), res.rows[0].v);
    assert.strictEqual(res.rows[0].tz, 'UTC');
    assert.strictEqual(client.connectionParameters.database, 'millrace');

    // several statements in one simple Query (integer literals are bigint
    // in Millrace, int4 in PostgreSQL: the casts make both answer a number)
    res = await client.query('SELECT 1::int AS a; SELECT 2::int AS b');
    assert.deepStrictEqual(
      res.map((r) => r.rows),
      [[{ a: 1 }], [{ b: 2 }]]
    );

    // errors carry SQLSTATEs and leave the connection usable
    await assert.rejects(client.query('SELECT * FROM no_such_table'), (e) => e.code === '42P01');
    await assert.rejects(client.query('SELECT $1::int', ['x']), (e) => e.code === '22P02');
    res = await client.query('SELECT $1::int + 1::int AS two', [1]);
    assert.deepStrictEqual(res.rows, [{ two: 2 }]);
  } finally {
    await client.end();
  }
  console.log('node-postgres client ok');
}

main(Number(process.argv[2])).catch((e) => {
  console.error(e);
  process.exit(1);
});
