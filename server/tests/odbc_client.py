"""psqlODBC (Debian's odbc-postgresql, through unixODBC and pyodbc) against
millrace, as a new user would try it. With UseDeclareFetch=1 and Fetch=3 in
the connection string psqlODBC reads every result set through a cursor:
`BEGIN;DECLARE "SQL_CUR…" CURSOR WITH HOLD FOR …;FETCH 3 IN "SQL_CUR…"` in
one simple Query (with the parameters substituted into the text by the
driver), then `FETCH 3` until a short batch, then CLOSE. The ODBC catalog
functions (SQLTables, SQLColumns) run psqlODBC's own pg_catalog queries.
Connects, runs parameterized queries, reads catalog metadata and a windowed
view. Exits non-zero on any mismatch.
Run: python3 odbc_client.py PORT"""
import atexit
import datetime
import os
import re
import shutil
import subprocess
import sys
import tempfile


def quiet_odbcinst() -> None:
    """Debian's odbcinst.ini turns psqlODBC's communication log on
    (CommLog=1), and the driver writes a /tmp/psqlodbc_*.log per process
    even with CommLog=0 in the connection string (its disconnect logs by
    the driver-wide setting). Point unixODBC at a copy with the log off;
    before pyodbc is imported, as unixODBC reads ODBCSYSINI once."""
    try:
        out = subprocess.run(["odbcinst", "-j"], capture_output=True, text=True).stdout
        found = re.search(r"DRIVERS\.*:\s*(\S+)", out)
        path = found.group(1) if found else "/etc/odbcinst.ini"
        with open(path) as f:
            text = f.read()
    except OSError:
        return
    quiet = tempfile.mkdtemp(prefix="millrace-odbc-")
    atexit.register(shutil.rmtree, quiet, ignore_errors=True)
    with open(os.path.join(quiet, "odbcinst.ini"), "w") as f:
        f.write(re.sub(r"(?im)^(\s*CommLog\s*=\s*)1", r"\g<1>0", text))
    os.environ["ODBCSYSINI"] = quiet


quiet_odbcinst()
import pyodbc  # noqa: E402


def main(port: int) -> None:
    conn = pyodbc.connect(
        "Driver={PostgreSQL Unicode};Server=127.0.0.1;"
        f"Port={port};Database=millrace;Uid=tester;Pwd=;"
        # no communication log (see quiet_odbcinst)
        "UseDeclareFetch=1;Fetch=3;CommLog=0;Debug=0",
        autocommit=True,
    )
    cur = conn.cursor()
    # the same fixture as the asyncpg test (server/tests/asyncpg_client.py)
    cur.execute(
        "CREATE TABLE trades (symbol TEXT, qty BIGINT, price DOUBLE PRECISION, ts TIMESTAMPTZ,"
        " WATERMARK FOR ts AS ts - INTERVAL '1 second')"
    )
    cur.execute(
        "CREATE MATERIALIZED VIEW per_minute AS SELECT window_start, symbol, count(*) AS n,"
        " sum(qty) AS volume, max(price) AS high"
        " FROM TUMBLE(trades, ts, INTERVAL '1 minute') GROUP BY window_start, symbol"
    )
    t0 = datetime.datetime(2026, 1, 1)
    for i in range(20):
        ts = (t0 + datetime.timedelta(seconds=10 * i)).strftime("%Y-%m-%d %H:%M:%S+00")
        cur.execute("INSERT INTO trades VALUES (?, ?, ?, ?)", "ACME", i + 1, 10.0 + i, ts)
        assert cur.rowcount == 1, cur.rowcount

    # a parameterized query (read through a cursor, FETCH 3 at a time)
    cur.execute("SELECT count(*) FROM trades WHERE symbol = ? AND qty > ?", "ACME", 5)
    assert cur.fetchone()[0] == 15

    # more rows than one FETCH: 20 rows in pieces of 3
    cur.execute("SELECT qty FROM trades WHERE symbol = ? ORDER BY qty", "ACME")
    assert [r[0] for r in cur.fetchall()] == list(range(1, 21))

    # the windowed view; psqlODBC hands timestamptz over as a naive timestamp
    # in the session's zone (UTC)
    cur.execute("SELECT window_start, n, volume, high FROM per_minute WHERE symbol = ? ORDER BY 1", "ACME")
    got = [tuple(r) for r in cur.fetchall()]
    assert got == [
        (t0, 6, 21, 15.0),
        (t0 + datetime.timedelta(minutes=1), 6, 57, 21.0),
        (t0 + datetime.timedelta(minutes=2), 6, 93, 27.0),
        (t0 + datetime.timedelta(minutes=3), 2, 39, 29.0),
    ], got
    assert [d[0] for d in cur.description] == ["window_start", "n", "volume", "high"], cur.description

    # catalog metadata through the ODBC catalog functions
    tables = sorted((t.table_name, t.table_type) for t in cur.tables(schema="public"))
    assert [t[0] for t in tables] == ["per_minute", "trades"], tables
    cols = [(c.column_name, c.type_name) for c in cur.columns(table="trades", schema="public")]
    assert cols == [
        ("symbol", "text"),
        ("qty", "int8"),
        ("price", "float8"),
        ("ts", "timestamptz"),
    ], cols
    cur.execute(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
        "public",
        "per_minute",
    )
    assert [tuple(r) for r in cur.fetchall()] == [
        ("window_start", "timestamp with time zone"),
        ("symbol", "text"),
        ("n", "bigint"),
        ("volume", "bigint"),
        ("high", "double precision"),
    ]
    cur.execute("SELECT version()")
    assert cur.fetchone()[0].startswith("PostgreSQL 15.0 (Millrace")
    assert conn.getinfo(pyodbc.SQL_DBMS_NAME) == "PostgreSQL"

    # an explicit cursor WITH HOLD, outside a transaction, as psqlODBC sends it
    cur.execute('DECLARE "mine" CURSOR WITH HOLD FOR SELECT qty FROM trades ORDER BY qty')
    cur.execute('FETCH 5 IN "mine"')
    assert [r[0] for r in cur.fetchall()] == [1, 2, 3, 4, 5]
    cur.execute('CLOSE "mine"')

    # errors carry SQLSTATEs and leave the connection usable
    try:
        cur.execute("SELECT * FROM no_such_table")
        raise SystemExit("expected an error")
    except pyodbc.Error as e:
        assert e.args[0] == "42P01", e.args
    cur.execute("SELECT 1")
    assert cur.fetchone()[0] == 1
    conn.close()
    print("psqlODBC client ok")


main(int(sys.argv[1]))
