//! `restart`: how long a server takes to come back after `kill -9` with a
//! large view, and how much memory it takes to get there.
//!
//! A table of `rows` rows (`a` distinct in every row, `b` a number) is
//! filled by `INSERT … SELECT … FROM generate_series` in chunks; a view
//! keeps `count(*)` and `sum(b)` per `a`, so it holds `rows` groups of
//! aggregate state and `rows` view rows. `FLUSH` writes a checkpoint, the
//! server is killed with SIGKILL, and a new server is started on the same
//! directory. Measured: the time from starting it to its first answered
//! query, the time to the answer of a full scan of the view (which must
//! count every group), the peak RSS of the restarted process, and the
//! checkpoint's size on disk.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::measure;
use crate::processes::Server;

/// What one restart measured.
pub struct Restart {
    pub rows: u64,
    pub fill_seconds: f64,
    pub checkpoint_bytes: u64,
    pub ready_seconds: f64,
    pub first_query_seconds: f64,
    pub scan_seconds: f64,
    pub rss_before_kill_mib: f64,
    pub peak_rss_mib: f64,
}

/// Rows per `INSERT … SELECT`.
const CHUNK: u64 = 1_000_000;

pub async fn run(rows: u64, scratch: &Path) -> anyhow::Result<Restart> {
    let data = scratch.join("restart");
    let server = Server::start(&data)?;
    let client = server.connect().await?;
    client
        .batch_execute(
            "CREATE TABLE t (a bigint, b bigint);
             CREATE MATERIALIZED VIEW v AS SELECT a, count(*) AS n, sum(b) AS s FROM t GROUP BY a;",
        )
        .await?;
    let fill = Instant::now();
    let mut done = 0;
    while done < rows {
        let n = CHUNK.min(rows - done);
        client
            .batch_execute(&format!(
                "INSERT INTO t SELECT g, g % 1000 FROM generate_series({}, {}) AS s(g)",
                done + 1,
                done + n
            ))
            .await?;
        done += n;
    }
    client.batch_execute("FLUSH").await?;
    let fill_seconds = fill.elapsed().as_secs_f64();
    let rss_before_kill_mib = measure::memory_mib(server.pid, "VmRSS:");
    let checkpoint_bytes = dir_bytes(&data.join("checkpoints"));
    drop(client);
    server.kill();

    let started = Instant::now();
    let launching = Server::launch(&data)?;
    let peak = measure::PeakRss::start(launching.pid);
    let server = launching.ready(Duration::from_secs(900))?;
    let ready_seconds = started.elapsed().as_secs_f64();
    let client = server.connect().await?;
    client.simple_query("SELECT 1").await?;
    let first_query_seconds = started.elapsed().as_secs_f64();
    let scan = Instant::now();
    let row = client
        .query_one("SELECT count(*), sum(n) FROM v", &[])
        .await?;
    let scan_seconds = scan.elapsed().as_secs_f64();
    let peak_rss_mib = peak.stop();
    let (groups, counted): (i64, i64) = (row.get(0), row.get(1));
    anyhow::ensure!(
        groups as u64 == rows && counted as u64 == rows,
        "after the restart the view holds {groups} groups counting {counted} rows, not {rows}"
    );
    Ok(Restart {
        rows,
        fill_seconds,
        checkpoint_bytes,
        ready_seconds,
        first_query_seconds,
        scan_seconds,
        rss_before_kill_mib,
        peak_rss_mib,
    })
}

/// The bytes of the files under `dir` (0 if it does not exist).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
