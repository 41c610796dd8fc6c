//! Bounded state benchmark: an endless stream through windowed views must
//! run in flat memory, because closed windows free their state.
//!
//! Runs the real engine in-process over a real data directory (every batch
//! is a durable, flushed commit). A table of bids with
//! `WATERMARK FOR date_time AS date_time - INTERVAL '5 seconds'` (event time
//! advancing 1 ms per row, out of order by up to 3 s, so nothing is late)
//! feeds an `EMIT ON WINDOW CLOSE` and a continuous 10-second TUMBLE view
//! by auction, both with `retention = '1 hour'` (of event time) so that
//! the views' stored rows are bounded too. Every 10 million events it prints
//! throughput, the groups held in operator state, the current RSS and the
//! peak RSS so far. `MILLRACE_BENCH_RETENTION=none` keeps every closed
//! window's row instead. `MILLRACE_BENCH_WINDOW=session` uses session
//! windows instead (`SESSION(bids, date_time, INTERVAL '2 seconds',
//! auction)`; each auction then bids in bursts of 5 s, so its sessions end).
//! Its continuous view computes count and sum only: a session's rows can be
//! retracted (sessions merge), and `max` over a retractable input keeps
//! every value as its own state record, which costs about 4x in throughput
//! and grows sled's memory (a known limit of the aggregate, not of
//! sessions).
//!
//! `cargo bench -p millrace-server --bench event_time`
//! (`MILLRACE_BENCH_EVENTS=5000000` for a quicker run,
//! `MILLRACE_BENCH_REPORT_EVERY` to print more often).

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Int64Array, TimestampNanosecondArray};
use arrow::record_batch::RecordBatch;
use millrace_planner::statement::parse;

mod common;
use common::{env_count, exec, rss_mib, scratch_dir};

const BATCH: usize = 100_000;
const AUCTIONS: i64 = 100;
const BASE_NS: i64 = 1_767_225_600_000_000_000;

fn batch(schema: &arrow::datatypes::SchemaRef, start: i64, n: usize, bursts: bool) -> RecordBatch {
    let ids: Vec<i64> = (start..start + n as i64).collect();
    let auction = Int64Array::from(
        ids.iter()
            .map(|i| {
                if bursts {
                    (i / 5_000) % AUCTIONS
                } else {
                    (i * 7919) % AUCTIONS
                }
            })
            .collect::<Vec<_>>(),
    );
    let price = Int64Array::from(
        ids.iter()
            .map(|i| 100 + (i * 31) % 10_000)
            .collect::<Vec<_>>(),
    );
    // 1 ms per event, minus up to 3 s of disorder.
    let ts = TimestampNanosecondArray::from(
        ids.iter()
            .map(|i| BASE_NS + i * 1_000_000 - ((i * 104_729) % 3_000) * 1_000_000)
            .collect::<Vec<_>>(),
    );
    RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(auction), Arc::new(price), Arc::new(ts)],
    )
    .expect("batch")
}

fn main() {
    let events = env_count("MILLRACE_BENCH_EVENTS", 50_000_000);
    let report_every = env_count("MILLRACE_BENCH_REPORT_EVERY", 10_000_000);
    let retention = match std::env::var("MILLRACE_BENCH_RETENTION").as_deref() {
        Ok("none") => String::new(),
        Ok(r) => format!("WITH (retention = '{r}')"),
        Err(_) => "WITH (retention = '1 hour')".to_string(),
    };
    let sessions = std::env::var("MILLRACE_BENCH_WINDOW").as_deref() == Ok("session");
    let (window, group, window_text, live_high) = if sessions {
        (
            "SESSION(bids, date_time, INTERVAL '2 seconds', auction)",
            "window_start, window_end, auction",
            "SESSION(gap 2 s) per auction, in bursts of 5 s (continuous view: count, sum)",
            "",
        )
    } else {
        (
            "TUMBLE(bids, date_time, INTERVAL '10 seconds')",
            "window_start, auction",
            "TUMBLE(10 s) by auction",
            ", max(price) AS high",
        )
    };
    let dir = scratch_dir("millrace-bench-et");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let engine = millrace_engine::Engine::open_with(&dir, millrace_server::engine_options())
            .await
            .expect("open");
        exec(
            &engine,
            &format!(
                "CREATE TABLE bids (auction BIGINT, price BIGINT, date_time TIMESTAMP,
                   WATERMARK FOR date_time AS date_time - INTERVAL '5 seconds');
                 CREATE MATERIALIZED VIEW closed {retention} AS
                   SELECT window_start, auction, count(*) AS n, sum(price) AS total, max(price) AS high
                   FROM {window} GROUP BY {group} EMIT ON WINDOW CLOSE;
                 CREATE MATERIALIZED VIEW live {retention} AS
                   SELECT window_start, auction, count(*) AS n, sum(price) AS total{live_high}
                   FROM {window} GROUP BY {group};"
            ),
        )
        .await;
        let rel = engine.relation("bids").expect("bids");
        println!(
            "bounded state: {events} events (1 ms apart, up to 3 s out of order, {AUCTIONS} auctions) -> {window_text}, EMIT ON WINDOW CLOSE + continuous, {}; batches of {BATCH}, durable commit per batch",
            if retention.is_empty() { "no retention" } else { retention.as_str() }
        );
        let started = Instant::now();
        let mut segment = Instant::now();
        let mut done = 0usize;
        while done < events {
            let n = BATCH.min(events - done);
            engine
                .append(&rel, vec![batch(&rel.schema, done as i64, n, sessions)])
                .await
                .expect("append");
            done += n;
            if done.is_multiple_of(report_every) || done == events {
                let groups: usize = engine.state_sizes().await.iter().map(|(_, g)| g).sum();
                let (rss, peak) = rss_mib();
                let since = segment.elapsed().as_secs_f64();
                let in_segment = if done.is_multiple_of(report_every) { report_every } else { done % report_every };
                println!(
                    "{:>11} events | {:7.1} s | {:9.0} events/s (last segment) | groups in state {groups:>6} | RSS {rss:7.1} MiB | peak RSS {peak:7.1} MiB",
                    done,
                    started.elapsed().as_secs_f64(),
                    in_segment as f64 / since,
                );
                segment = Instant::now();
            }
        }
        let closed = engine
            .execute(&parse("SELECT count(*) FROM closed").expect("parse")[0], None)
            .await
            .expect("count");
        if let millrace_engine::Outcome::Rows { batches, .. } = closed {
            let n = batches
                .first()
                .and_then(|b| b.column(0).as_any().downcast_ref::<Int64Array>().map(|a| a.value(0)))
                .unwrap_or(-1);
            println!("rows in the EMIT ON WINDOW CLOSE view at the end: {n}");
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
}
