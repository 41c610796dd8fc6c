"""psycopg 3 against millrace: server-side parameters, text and binary
results, a prepared statement, errors with SQLSTATEs. Exits non-zero on any
mismatch."""
import datetime
import decimal
import sys

import psycopg

conninfo = sys.argv[1]
with psycopg.connect(conninfo, autocommit=True) as conn:
    conn.execute("CREATE TABLE bids (auction BIGINT, price NUMERIC(10,2), ok BOOLEAN, date_time TIMESTAMP)")
    conn.execute(
        "CREATE MATERIALIZED VIEW w AS SELECT window_start, auction, count(*) AS n, max(price) AS top "
        "FROM TUMBLE(bids, date_time, INTERVAL '10 seconds') GROUP BY window_start, auction"
    )
    t0 = datetime.datetime(2026, 1, 1, 0, 0, 1)
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO bids VALUES (%s, %s, %s, %s)",
            [(1, decimal.Decimal("1.50"), True, t0), (1, decimal.Decimal("2.25"), False, t0 + datetime.timedelta(seconds=3))],
        )
    rows = conn.execute("SELECT window_start, auction, n, top FROM w WHERE auction = %s", [1]).fetchall()
    assert rows == [(datetime.datetime(2026, 1, 1), 1, 2, decimal.Decimal("2.25"))], rows

    # binary results
    with conn.cursor(binary=True) as cur:
        cur.execute("SELECT auction, price, ok, date_time FROM bids WHERE auction = %s ORDER BY date_time", [1])
        got = cur.fetchall()
        assert got[0] == (1, decimal.Decimal("1.50"), True, t0), got

    # interval and timestamptz, text and binary
    for binary in (False, True):
        with conn.cursor(binary=binary) as cur:
            cur.execute("SELECT INTERVAL '1 day 2 hours', TIMESTAMPTZ '2026-01-01 00:00:01+00', DATE '2026-01-02', 1.5::real, 2.5::double precision")
            iv, tz, d, f4, f8 = cur.fetchone()
            assert iv == datetime.timedelta(days=1, hours=2), (binary, iv)
            assert tz == datetime.datetime(2026, 1, 1, 0, 0, 1, tzinfo=datetime.timezone.utc), (binary, tz)
            assert d == datetime.date(2026, 1, 2), (binary, d)
            assert (f4, f8) == (1.5, 2.5), (binary, f4, f8)

    # prepared statement reused
    for _ in range(6):
        assert conn.execute("SELECT count(*) FROM bids WHERE ok = %s", [True], prepare=True).fetchone() == (1,)

    try:
        conn.execute("SELECT * FROM nope")
        raise SystemExit("expected an error")
    except psycopg.errors.UndefinedTable:
        pass
    assert conn.execute("SELECT 1").fetchone() == (1,)
print("psycopg ok")
