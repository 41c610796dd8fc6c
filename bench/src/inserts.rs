//! `inserts`: concurrent `INSERT`s into a table with one view over it, the
//! workload group commit is for.
//!
//! A server process is started on a fresh data directory; it gets a table
//! `t (a bigint, b bigint)` and a view counting and summing `b` by `a`.
//! Then `clients` sessions each run `INSERT INTO t VALUES …` of `rows`
//! rows, one statement after the other, for `seconds` seconds. Every
//! `INSERT` returns only once its rows are durable, so with one client the
//! rate is bounded by the fsync latency; with many, group commit lets
//! concurrent `INSERT`s share one fsync. Printed: `INSERT`s/s, rows/s,
//! latency per `INSERT` (p50, p99), and how many storage syncs the server
//! made (from `millrace_catalog.wal` when the server has it).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::measure;
use crate::processes::Server;

/// What one run measured.
pub struct Inserts {
    pub clients: usize,
    pub rows: usize,
    pub inserts: u64,
    pub seconds: f64,
    pub p50: Duration,
    pub p99: Duration,
    /// Write groups made durable and fsyncs done during the run, when the
    /// server counts them.
    pub groups_and_fsyncs: Option<(u64, u64)>,
}

impl Inserts {
    pub fn inserts_per_second(&self) -> f64 {
        self.inserts as f64 / self.seconds
    }

    pub fn rows_per_second(&self) -> f64 {
        (self.inserts * self.rows as u64) as f64 / self.seconds
    }
}

/// The server's counts of durable write groups and of fsyncs (`None` for a
/// server without `millrace_catalog.wal`).
async fn sync_counts(client: &tokio_postgres::Client) -> Option<(u64, u64)> {
    let row = client
        .query_one(
            "SELECT group_commits, fsyncs FROM millrace_catalog.wal",
            &[],
        )
        .await
        .ok()?;
    let groups: i64 = row.try_get(0).ok()?;
    let fsyncs: i64 = row.try_get(1).ok()?;
    Some((groups as u64, fsyncs as u64))
}

/// The text of one `INSERT` of `rows` rows by client `client`, its `n`-th.
fn statement(client: usize, n: u64, rows: usize) -> String {
    let mut sql = String::from("INSERT INTO t VALUES ");
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        let a = (client as u64 * 7919 + n * 31 + r as u64) % 1000;
        sql.push_str(&format!("({a}, {})", n % 100));
    }
    sql
}

pub async fn run(
    clients: usize,
    rows: usize,
    seconds: u64,
    scratch: &Path,
) -> anyhow::Result<Inserts> {
    let data = scratch.join(format!("inserts-{clients}-{rows}"));
    let server = Server::start(&data)?;
    let admin = server.connect().await?;
    admin
        .batch_execute(
            "CREATE TABLE t (a bigint, b bigint);
             CREATE MATERIALIZED VIEW v AS SELECT a, count(*) AS n, sum(b) AS s FROM t GROUP BY a;",
        )
        .await?;
    let mut sessions = Vec::with_capacity(clients);
    for _ in 0..clients {
        sessions.push(server.connect().await?);
    }
    let before = sync_counts(&admin).await;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = Vec::with_capacity(clients);
    for (i, session) in sessions.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let sql = statement(i, n, rows);
                let t = Instant::now();
                session.simple_query(&sql).await?;
                latencies.push(t.elapsed());
                n += 1;
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = sync_counts(&admin).await;
    // Every acknowledged row is in the table and in the view.
    let row = admin.query_one("SELECT count(*) FROM t", &[]).await?;
    let stored: i64 = row.get(0);
    let row = admin.query_one("SELECT sum(n)::bigint FROM v", &[]).await?;
    let counted: Option<i64> = row.get(0);
    let expected = latencies.len() as i64 * rows as i64;
    anyhow::ensure!(
        stored == expected && counted.unwrap_or(0) == expected,
        "{expected} rows acknowledged, the table holds {stored} and the view counts {counted:?}"
    );
    latencies.sort();
    Ok(Inserts {
        clients,
        rows,
        inserts: latencies.len() as u64,
        seconds: elapsed,
        p50: measure::percentile(&latencies, 50.0),
        p99: measure::percentile(&latencies, 99.0),
        groups_and_fsyncs: match (before, after) {
            (Some(b), Some(a)) => Some((a.0.saturating_sub(b.0), a.1.saturating_sub(b.1))),
            _ => None,
        },
    })
}
