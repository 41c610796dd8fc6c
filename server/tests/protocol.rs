//! The wire protocol as drivers use it: extended query protocol with `$n`
//! parameters, named statements, binary results for every supported type,
//! portals read with row limits, errors with SQLSTATEs that leave the
//! session usable, and psql and psycopg 3 as real clients.

mod common;

use std::process::Command;

use common::{scratch_dir, TestServer};
use tokio_postgres::types::Type;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_parameters_binary_results_and_portals() {
    let dir = scratch_dir("protocol-extended");
    let server = TestServer::start(&dir);
    let mut client = server.connect().await;

    client
        .batch_execute(
            "CREATE TABLE t (i2 SMALLINT, i4 INT, i8 BIGINT, f4 REAL, f8 DOUBLE PRECISION,
                             n NUMERIC(10,2), b BOOLEAN, s VARCHAR, x TEXT, d DATE, ts TIMESTAMP);
             CREATE MATERIALIZED VIEW totals AS SELECT b, count(*) AS c, sum(i8) AS s FROM t GROUP BY b;",
        )
        .await
        .unwrap();

    // A named, parameterized INSERT executed several times.
    let insert = client
        .prepare("INSERT INTO t (i2, i4, i8, f4, f8, b, s, x, d, ts) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
        .await
        .unwrap();
    assert_eq!(insert.params()[2], Type::INT8);
    let ts = chrono::NaiveDate::from_ymd_opt(2026, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 1)
        .unwrap();
    let d = chrono::NaiveDate::from_ymd_opt(2026, 1, 2).unwrap();
    for i in 0..10i64 {
        let n = client
            .execute(
                &insert,
                &[
                    &(i as i16),
                    &(i as i32),
                    &i,
                    &(i as f32 * 0.5),
                    &(i as f64 * 0.25),
                    &(i % 2 == 0),
                    &format!("s{i}"),
                    &"text",
                    &d,
                    &ts,
                ],
            )
            .await
            .unwrap();
        assert_eq!(n, 1);
    }

    // Binary results for every column type (tokio-postgres asks for binary).
    let row = client
        .query_one(
            "SELECT i2, i4, i8, f4, f8, n, b, s, x, d, ts, ts AT TIME ZONE 'UTC' AS tz, INTERVAL '1 day 2 hours' AS iv
             FROM t WHERE i8 = $1",
            &[&3i64],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i16>(0), 3);
    assert_eq!(row.get::<_, i32>(1), 3);
    assert_eq!(row.get::<_, i64>(2), 3);
    assert_eq!(row.get::<_, f32>(3), 1.5);
    assert_eq!(row.get::<_, f64>(4), 0.75);
    assert_eq!(row.get::<_, Option<rust_decimal::Decimal>>(5), None);
    assert!(!row.get::<_, bool>(6));
    assert_eq!(row.get::<_, String>(7), "s3");
    assert_eq!(row.get::<_, String>(8), "text");
    assert_eq!(row.get::<_, chrono::NaiveDate>(9), d);
    assert_eq!(row.get::<_, chrono::NaiveDateTime>(10), ts);
    assert_eq!(row.columns()[11].type_(), &Type::TIMESTAMPTZ);
    assert_eq!(
        row.get::<_, chrono::DateTime<chrono::Utc>>(11),
        ts.and_utc()
    );
    assert_eq!(row.columns()[12].type_(), &Type::INTERVAL);

    // numeric in and out, binary.
    client
        .execute(
            "INSERT INTO t (i8, n) VALUES ($1, $2)",
            &[&100i64, &rust_decimal::Decimal::new(12345, 2)],
        )
        .await
        .unwrap();
    let n: rust_decimal::Decimal = client
        .query_one("SELECT n FROM t WHERE i8 = 100", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n.to_string(), "123.45");

    // The view saw every insert, read through a parameterized query.
    let row = client
        .query_one("SELECT c, s FROM totals WHERE b = $1", &[&true])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 5);
    assert_eq!(row.get::<_, i64>(1), 2 + 4 + 6 + 8);

    // A portal read 3 rows at a time (Execute with a row limit).
    let tx = client.transaction().await.unwrap();
    let stmt = tx
        .prepare("SELECT i8 FROM t WHERE i8 < $1 ORDER BY i8")
        .await
        .unwrap();
    let portal = tx.bind(&stmt, &[&10i64]).await.unwrap();
    let mut seen = Vec::new();
    let mut fetches = 0;
    loop {
        let rows = tx.query_portal(&portal, 3).await.unwrap();
        fetches += 1;
        if rows.is_empty() {
            break;
        }
        seen.extend(rows.iter().map(|r| r.get::<_, i64>(0)));
    }
    assert_eq!(seen, (0..10).collect::<Vec<i64>>());
    assert!(
        fetches >= 4,
        "expected the portal to be suspended between fetches"
    );
    tx.commit().await.unwrap();

    // Errors carry SQLSTATEs and leave the session usable.
    let err = client
        .query("SELECT * FROM missing WHERE a = $1", &[&1i64])
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("42P01"));
    let err = client
        .query("SELECT 1 / $1::bigint", &[&0i64])
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("22012"));
    let err = client.prepare("SELEC 1").await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("42601"));
    // EXPLAIN describes its own columns in the extended protocol.
    let plan = client.query("EXPLAIN SELECT i8 FROM t", &[]).await.unwrap();
    assert!(!plan.is_empty());
    let dataflow = client
        .query(
            "EXPLAIN CREATE MATERIALIZED VIEW x AS SELECT b, count(*) FROM t GROUP BY b",
            &[],
        )
        .await
        .unwrap();
    assert!(dataflow
        .iter()
        .any(|r| r.get::<_, String>(0).contains("Aggregate")));
    let one: i64 = client
        .query_one("SELECT 1::bigint", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(one, 1);
}

#[test]
fn psql_runs_the_readme_example() {
    if Command::new("psql").arg("--version").output().is_err() {
        panic!("psql is required for this test (apt-get install postgresql-client)");
    }
    let dir = scratch_dir("protocol-psql");
    let server = TestServer::start(&dir);
    let out = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &server.port.to_string(), "-U", "me", "-d", "millrace"])
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .arg("-c")
        .arg(
            "CREATE TABLE bids (auction BIGINT, bidder BIGINT, price BIGINT, date_time TIMESTAMP);
             CREATE MATERIALIZED VIEW per_auction AS
               SELECT window_start, window_end, auction, count(*) AS n, sum(price) AS total,
                      min(price) AS low, max(price) AS high, avg(price) AS mean
               FROM TUMBLE(bids, date_time, INTERVAL '10 seconds')
               GROUP BY window_start, window_end, auction;
             INSERT INTO bids VALUES (1, 7, 100, '2026-01-01 00:00:01'), (1, 8, 120, '2026-01-01 00:00:04');
             SELECT * FROM per_auction ORDER BY window_start, auction;",
        )
        .output()
        .expect("run psql");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("2026-01-01 00:00:00|2026-01-01 00:00:10|1|2|220|100|120|110"),
        "unexpected psql output:\n{stdout}"
    );

    // Statements commit when they return: ROLLBACK says it undid nothing.
    use std::io::Write;
    let mut child = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &server.port.to_string(),
            "-U",
            "me",
            "-d",
            "millrace",
        ])
        .args(["-X", "-A", "-t"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run psql");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"BEGIN;\nINSERT INTO bids VALUES (2, 1, 1, '2026-01-01 00:00:02');\nROLLBACK;\nSELECT count(*) FROM bids;\n")
        .expect("write script");
    let out = child.wait_with_output().expect("psql");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("WARNING:  ROLLBACK did not undo 1 statement(s)"),
        "expected a warning from ROLLBACK, got:\n{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains('3'));
}

/// psql's describe commands (`\\l`, `\\dn`, `\\dt`, `\\dm`, `\\d`, `\\d name`,
/// `\\d+ name`, `\\df`) run the catalog queries psql 15 sends and show
/// tables, sources and materialized views with their columns.
#[test]
fn psql_describe_commands_list_relations_and_columns() {
    if Command::new("psql").arg("--version").output().is_err() {
        panic!("psql is required for this test (apt-get install postgresql-client)");
    }
    let dir = scratch_dir("protocol-psql-describe");
    let server = TestServer::start(&dir);
    let psql = |command: &str| {
        let out = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &server.port.to_string(),
                "-U",
                "me",
                "-d",
                "millrace",
            ])
            .args(["-X", "-v", "ON_ERROR_STOP=1", "-c", command])
            .output()
            .expect("run psql");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "psql {command} failed: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    psql(
        "CREATE TABLE clicks (user_id BIGINT, page TEXT, ts TIMESTAMPTZ);
         CREATE MATERIALIZED VIEW per_user AS SELECT user_id, count(*) AS n FROM clicks GROUP BY user_id;",
    );
    let expect = |command: &str, wanted: &[&str]| {
        let out = psql(command);
        for w in wanted {
            assert!(out.contains(w), "psql {command}: no {w:?} in\n{out}");
        }
        out
    };
    expect("\\l", &["millrace"]);
    expect("\\dn", &["public"]);
    let tables = expect("\\dt", &["clicks", "table"]);
    assert!(!tables.contains("per_user"), "\\dt lists views:\n{tables}");
    expect("\\dm", &["per_user", "materialized view"]);
    expect("\\d", &["clicks", "per_user"]);
    expect(
        "\\d clicks",
        &[
            "Table \"public.clicks\"",
            "user_id",
            "bigint",
            "page",
            "text",
            "ts",
            "timestamp with time zone",
        ],
    );
    expect(
        "\\d+ per_user",
        &[
            "Materialized view \"public.per_user\"",
            "user_id",
            "n",
            "View definition:",
            "SELECT user_id, count(*) AS n FROM clicks GROUP BY user_id;",
        ],
    );
    expect("\\df", &["List of functions"]);
}

/// Runs a driver's client program against a fresh server: `command`
/// gets the server's port or connection string appended by `with_server`.
/// `needs` is a command that must succeed for the driver to be there.
fn run_client(
    name: &str,
    needs: &[&str],
    install: &str,
    with_server: impl Fn(&TestServer) -> Command,
) {
    let present = Command::new(needs[0]).args(&needs[1..]).output();
    if !present.map(|o| o.status.success()).unwrap_or(false) {
        panic!("{name} is required for this test: {install}");
    }
    let dir = scratch_dir(&format!("protocol-{name}"));
    let server = TestServer::start(&dir);
    let out = with_server(&server).output().expect("run the client");
    assert!(
        out.status.success(),
        "{name} client failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn psycopg3_client() {
    run_client(
        "psycopg",
        &["python3", "-c", "import psycopg"],
        "python3 -m pip install 'psycopg[binary]'",
        |server| {
            let mut c = Command::new("python3");
            c.arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/psycopg_client.py"
            ))
            .arg(server.conninfo());
            c
        },
    );
}

#[test]
fn asyncpg_client() {
    run_client(
        "asyncpg",
        &["python3", "-c", "import asyncpg"],
        "python3 -m pip install asyncpg",
        |server| {
            let mut c = Command::new("python3");
            c.arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/asyncpg_client.py"
            ))
            .arg(server.port.to_string());
            c
        },
    );
}

/// pgJDBC, Debian's `libpostgresql-jdbc-java`, run by the JDK's source
/// launcher (`java File.java`).
#[test]
fn pgjdbc_client() {
    let jar = std::env::var("PGJDBC_JAR")
        .unwrap_or_else(|_| "/usr/share/java/postgresql.jar".to_string());
    run_client(
        "pgjdbc",
        &["test", "-f", &jar],
        "apt-get install default-jdk-headless libpostgresql-jdbc-java (or set PGJDBC_JAR)",
        |server| {
            let mut c = Command::new("java");
            c.args(["-cp", &jar])
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/jdbc/MillraceJdbc.java"
                ))
                .arg(server.port.to_string());
            c
        },
    );
}

/// node-postgres (`pg` from npm, pinned in `tests/node/package-lock.json`;
/// `.ci/run` installs it into `tests/node/node_modules` with `npm ci`).
#[test]
fn node_postgres_client() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node");
    run_client(
        "node-postgres",
        &["node", "-e", &format!("require('{dir}/node_modules/pg')")],
        "apt-get install nodejs npm, then npm ci in server/tests/node",
        |server| {
            let mut c = Command::new("node");
            c.current_dir(dir)
                .arg("millrace_pg.js")
                .arg(server.port.to_string());
            c
        },
    )
}

/// Go pgx v4 from Debian's golang-github-jackc-pgx-v4-dev, built in GOPATH
/// mode (Debian's Go sources, no module proxy).
#[test]
fn pgx_client() {
    let gopath = std::env::var("PGX_GOPATH").unwrap_or_else(|_| "/usr/share/gocode".to_string());
    let pgx = format!("{gopath}/src/github.com/jackc/pgx/v4");
    run_client(
        "pgx",
        &["sh", "-c", &format!("command -v go && test -d {pgx}")],
        "apt-get install golang-go golang-github-jackc-pgx-v4-dev (or set PGX_GOPATH)",
        |server| {
            let mut c = Command::new("go");
            c.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pgx"))
                .env("GO111MODULE", "off")
                .env("GOPATH", &gopath)
                .env("GOFLAGS", "")
                .args(["run", "millrace_pgx.go"])
                .arg(server.port.to_string());
            c
        },
    )
}

/// psqlODBC (Debian's odbc-postgresql) through unixODBC and pyodbc,
/// reading every result with `DECLARE … CURSOR WITH HOLD` / `FETCH`.
#[test]
fn psqlodbc_client() {
    run_client(
        "psqlodbc",
        &[
            "python3",
            "-c",
            "import pyodbc; assert 'PostgreSQL Unicode' in pyodbc.drivers()",
        ],
        "apt-get install odbc-postgresql unixodbc-dev; python3 -m pip install pyodbc",
        |server| {
            let mut c = Command::new("python3");
            c.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/odbc_client.py"))
                .arg(server.port.to_string());
            c
        },
    )
}

/// A CancelRequest (sent by the driver on a second connection) stops a
/// running query with 57014; the session stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_request_stops_a_running_query() {
    let dir = scratch_dir("protocol-cancel");
    let server = TestServer::start(&dir);
    let client = server.connect().await;
    let token = client.cancel_token();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        token
            .cancel_query(tokio_postgres::NoTls)
            .await
            .expect("send the cancel request");
    });
    let started = std::time::Instant::now();
    let err = client
        .query_one(
            "SELECT count(*) FROM generate_series(1, 2000000000) AS g(x) WHERE x % 7 = 3",
            &[],
        )
        .await
        .expect_err("the query is cancelled");
    assert_eq!(err.code().map(|c| c.code()), Some("57014"), "{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "cancelled only after {:?}",
        started.elapsed()
    );
    canceller.await.expect("canceller");
    let one: i64 = client
        .query_one("SELECT 1", &[])
        .await
        .expect("usable")
        .get(0);
    assert_eq!(one, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_socket_affects_no_other_session() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = scratch_dir("protocol-garbage");
    let server = TestServer::start(&dir);
    let healthy = server.connect().await;
    let payloads: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        vec![0xff; 64],
        // A startup packet announcing a huge length, then silence.
        vec![0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0],
        // A valid-looking startup followed by a query message with a lying length.
        {
            let mut v = Vec::new();
            let body = b"\x00\x03\x00\x00user\x00x\x00\x00";
            v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
            v.extend_from_slice(body);
            v.extend_from_slice(b"Q\x00\x00\x00\x02garbage");
            v
        },
        Vec::new(),
    ];
    for p in payloads {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
            .await
            .unwrap();
        let _ = s.write_all(&p).await;
        let mut buf = [0u8; 256];
        let _ = tokio::time::timeout(std::time::Duration::from_millis(300), s.read(&mut buf)).await;
        drop(s); // disconnect mid-message
    }
    let v: i64 = healthy
        .query_one("SELECT 41::bigint + 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 42);
    let fresh = server.connect().await;
    let v: i64 = fresh
        .query_one("SELECT 7::bigint", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 7);
}
