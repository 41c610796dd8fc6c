//! Group commit: concurrent `INSERT`s share fsyncs, and sharing them loses
//! nothing. Many sessions insert at once into a table with views; the real
//! server is killed with SIGKILL in the middle, restarted, and then (a)
//! every acknowledged `INSERT` is there, whole, and nothing else but
//! possibly the one statement each session had in flight, and (b) every
//! view equals the same query computed from scratch over the table.

mod common;

use std::time::Duration;

use common::{rows, scratch_dir, TestServer};

/// Sessions inserting at once.
const CLIENTS: i64 = 16;
/// Rows per `INSERT` (all with the same `(client, n)`, told apart by `k`).
const ROWS: i64 = 3;

const TABLE: &str = "CREATE TABLE t (client BIGINT, n BIGINT, k BIGINT)";

/// Views under test, and the from-scratch query each must equal.
const VIEWS: &[(&str, &str)] = &[
    (
        "CREATE MATERIALIZED VIEW per_client AS SELECT client, count(*) AS r, sum(n) AS s, max(n) AS top FROM t GROUP BY client",
        "SELECT client, count(*) AS r, sum(n) AS s, max(n) AS top FROM t GROUP BY client",
    ),
    (
        "CREATE MATERIALIZED VIEW per_k AS SELECT k, count(*) AS c, count(DISTINCT client) AS clients FROM t GROUP BY k",
        "SELECT k, count(*) AS c, count(DISTINCT client) AS clients FROM t GROUP BY k",
    ),
    (
        "CREATE MATERIALIZED VIEW sizes AS SELECT r, count(*) AS clients FROM per_client GROUP BY r",
        "SELECT r, count(*) AS clients FROM (SELECT client, count(*) AS r FROM t GROUP BY client) GROUP BY r",
    ),
];

async fn number(client: &tokio_postgres::Client, sql: &str) -> i64 {
    let r = rows(client, sql).await;
    r[0].parse()
        .unwrap_or_else(|e| panic!("{sql} gave {r:?}: {e}"))
}

fn insert(client: i64, n: i64) -> String {
    let values: Vec<String> = (0..ROWS).map(|k| format!("({client}, {n}, {k})")).collect();
    format!("INSERT INTO t VALUES {}", values.join(", "))
}

async fn assert_views_match(c: &tokio_postgres::Client, context: &str) {
    for (create, truth) in VIEWS {
        let name = create.split_whitespace().nth(3).unwrap_or("?");
        assert_eq!(
            rows(c, &format!("SELECT * FROM {name}")).await,
            rows(c, truth).await,
            "{context}: view {name} differs from its query"
        );
    }
}

/// 16 sessions insert as fast as they can; the server is killed with
/// SIGKILL after a while; after the restart each session's statements are
/// there exactly up to its last acknowledged one, plus possibly the one it
/// had in flight, each whole; and the views equal their queries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_inserts_survive_kill_9() {
    let dir = scratch_dir("group-commit-crash");
    let mut server = TestServer::start(&dir);
    {
        let c = server.connect().await;
        c.batch_execute(TABLE).await.unwrap();
        for (create, _) in VIEWS {
            c.batch_execute(create).await.unwrap();
        }
    }
    // Statements acknowledged (and so durable) per session; each session
    // numbers its statements 0, 1, 2, ….
    let mut acked = vec![0i64; CLIENTS as usize];
    let mut total_acked = 0;
    for (round, kill_after_ms) in [400u64, 900, 250].into_iter().enumerate() {
        let mut writers = Vec::new();
        for client in 0..CLIENTS {
            let session = server.connect().await;
            let first = acked[client as usize];
            writers.push(tokio::spawn(async move {
                let mut next = first;
                // Stops at the first error: the kill.
                while session.simple_query(&insert(client, next)).await.is_ok() {
                    next += 1;
                }
                next
            }));
        }
        tokio::time::sleep(Duration::from_millis(kill_after_ms)).await;
        server.kill9();
        let mut done = Vec::new();
        for w in writers {
            done.push(w.await.unwrap());
        }
        server = TestServer::start(&dir);
        let c = server.connect().await;
        let stored = rows(
            &c,
            "SELECT client, count(*), count(DISTINCT n), min(n), max(n) FROM t GROUP BY client",
        )
        .await;
        let mut present = vec![0i64; CLIENTS as usize];
        for line in &stored {
            let f: Vec<i64> = line.split('|').map(|x| x.parse().unwrap()).collect();
            let (client, count, distinct, lo, hi) = (f[0], f[1], f[2], f[3], f[4]);
            // Whole statements, numbered without gaps from 0.
            assert_eq!(
                count,
                distinct * ROWS,
                "round {round}: torn statement: {line}"
            );
            assert_eq!((lo, hi + 1), (0, distinct), "round {round}: a gap: {line}");
            present[client as usize] = distinct;
        }
        for client in 0..CLIENTS as usize {
            let acknowledged = done[client];
            assert!(
                present[client] == acknowledged || present[client] == acknowledged + 1,
                "round {round}: session {client} had {acknowledged} statements acknowledged, \
                 {} are stored",
                present[client]
            );
        }
        // An unacknowledged, in-flight statement may or may not have committed.
        acked = present;
        let round_total: i64 = done.iter().sum();
        assert!(
            round_total > total_acked,
            "round {round}: no INSERT was acknowledged"
        );
        total_acked = acked.iter().sum();
        assert_views_match(&c, &format!("round {round}")).await;
        eprintln!(
            "round {round}: killed after {kill_after_ms} ms, {total_acked} statements stored, views consistent"
        );
    }
    // Views keep updating correctly after the crashes.
    let c = server.connect().await;
    c.batch_execute(&insert(CLIENTS, 0)).await.unwrap();
    assert_views_match(&c, "after the rounds").await;
}

/// 16 sessions inserting at once take fewer group commits (each one
/// storage commit and its fsyncs) than they make INSERTs, as the server
/// counts them in `millrace_catalog.wal`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_inserts_share_syncs() {
    const EACH: i64 = 25;
    let dir = scratch_dir("group-commit-share");
    let server = TestServer::start(&dir);
    let c = server.connect().await;
    c.batch_execute(TABLE).await.unwrap();
    for (create, _) in VIEWS {
        c.batch_execute(create).await.unwrap();
    }
    let counts = "SELECT writes, group_commits, fsyncs FROM millrace_catalog.wal";
    let before: Vec<i64> = rows(&c, counts).await[0]
        .split('|')
        .map(|x| x.parse().unwrap())
        .collect();
    let mut sessions = Vec::new();
    for _ in 0..CLIENTS {
        sessions.push(server.connect().await);
    }
    // Every session connected first, then all start together.
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(CLIENTS as usize));
    let mut writers = Vec::new();
    for (client, session) in sessions.into_iter().enumerate() {
        let start = start.clone();
        writers.push(tokio::spawn(async move {
            start.wait().await;
            for n in 0..EACH {
                session
                    .simple_query(&insert(client as i64, n))
                    .await
                    .unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let after: Vec<i64> = rows(&c, counts).await[0]
        .split('|')
        .map(|x| x.parse().unwrap())
        .collect();
    let (writes, groups, fsyncs) = (
        after[0] - before[0],
        after[1] - before[1],
        after[2] - before[2],
    );
    let inserts = CLIENTS * EACH;
    eprintln!("{inserts} INSERTs: {writes} writes in {groups} group commits, {fsyncs} fsyncs");
    assert_eq!(writes, inserts);
    assert!(
        groups < inserts,
        "{inserts} concurrent INSERTs took {groups} group commits: none was shared"
    );
    // Alone, each INSERT costs two fsyncs (its row file and sled).
    assert!(
        fsyncs < 2 * inserts,
        "{fsyncs} fsyncs for {inserts} INSERTs"
    );
    assert_eq!(number(&c, "SELECT count(*) FROM t").await, inserts * ROWS);
    assert_views_match(&c, "after the concurrent INSERTs").await;
}
