//! Incremental cost benchmark: the cost of one insert batch into a table
//! feeding a windowed materialized view must not grow with the table.
//!
//! Runs the real engine in-process over a real data directory (every batch
//! is a durable, flushed commit), loads a table of bids feeding
//!
//! ```sql
//! SELECT window_start, window_end, auction, count(*), sum(price), max(price)
//! FROM TUMBLE(bids, date_time, INTERVAL '10 seconds') GROUP BY 1, 2, 3
//! ```
//!
//! and measures the same probe (insert batches of `PROBE_ROWS` rows into
//! current windows) after 10 thousand and after 10 million earlier rows.
//!
//! `cargo bench -p millrace-server --bench incremental`
//! (`MILLRACE_BENCH_ROWS=1000000` for a quicker run).

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Int64Array, TimestampNanosecondArray};
use arrow::record_batch::RecordBatch;
use millrace_engine::Engine;

mod common;
use common::{env_count, exec, rss_mib, scratch_dir};

const PROBE_ROWS: usize = 1_000;
const PROBES: usize = 30;
const LOAD_BATCH: usize = 100_000;
const AUCTIONS: i64 = 100;
/// Event time advances 1 ms per row: 10 000 rows per 10-second window.
const NANOS_PER_ROW: i64 = 1_000_000;

struct Generator {
    next: i64,
}

impl Generator {
    fn batch(&mut self, schema: &arrow::datatypes::SchemaRef, n: usize) -> RecordBatch {
        let start = self.next;
        self.next += n as i64;
        let ids: Vec<i64> = (start..start + n as i64).collect();
        let auction = Int64Array::from(
            ids.iter()
                .map(|i| (i * 7919) % AUCTIONS)
                .collect::<Vec<_>>(),
        );
        let bidder = Int64Array::from(ids.iter().map(|i| i % 1000).collect::<Vec<_>>());
        let price = Int64Array::from(
            ids.iter()
                .map(|i| 100 + (i * 31) % 10_000)
                .collect::<Vec<_>>(),
        );
        let ts = TimestampNanosecondArray::from(
            ids.iter()
                .map(|i| 1_767_225_600_000_000_000 + i * NANOS_PER_ROW)
                .collect::<Vec<_>>(),
        );
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(auction),
                Arc::new(bidder),
                Arc::new(price),
                Arc::new(ts),
            ],
        )
        .expect("batch")
    }
}

async fn load(engine: &Engine, gen: &mut Generator, rows: usize) -> Duration {
    let rel = engine.relation("bids").expect("bids");
    let started = Instant::now();
    let mut left = rows;
    while left > 0 {
        let n = left.min(LOAD_BATCH);
        engine
            .append(&rel, vec![gen.batch(&rel.schema, n)])
            .await
            .expect("append");
        left -= n;
    }
    started.elapsed()
}

async fn probe(engine: &Engine, gen: &mut Generator, label: &str, history: u64) {
    let rel = engine.relation("bids").expect("bids");
    let mut times = Vec::with_capacity(PROBES);
    for _ in 0..PROBES {
        let batch = gen.batch(&rel.schema, PROBE_ROWS);
        let t = Instant::now();
        engine.append(&rel, vec![batch]).await.expect("append");
        times.push(t.elapsed());
    }
    times.sort();
    let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3;
    let total: f64 = times.iter().map(|d| d.as_secs_f64()).sum();
    let groups: usize = engine.state_sizes().await.iter().map(|(_, n)| n).sum();
    println!(
        "{label:>8} | history {history:>10} rows | batch {PROBE_ROWS} rows | p50 {:7.2} ms | p90 {:7.2} ms | max {:7.2} ms | {:9.0} rows/s | groups in state {groups:>8} | peak RSS {:7.1} MiB",
        pct(0.5),
        pct(0.9),
        pct(1.0),
        (PROBES * PROBE_ROWS) as f64 / total,
        rss_mib().1,
    );
}

fn main() {
    let big = env_count("MILLRACE_BENCH_ROWS", 10_000_000);
    let dir = scratch_dir("millrace-bench");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let engine = Engine::open_with(&dir, millrace_server::engine_options())
            .await
            .expect("open");
        exec(
            &engine,
            "CREATE TABLE bids (auction BIGINT, bidder BIGINT, price BIGINT, date_time TIMESTAMP);
             CREATE MATERIALIZED VIEW per_auction AS
               SELECT window_start, window_end, auction, count(*) AS n, sum(price) AS total, max(price) AS high
               FROM TUMBLE(bids, date_time, INTERVAL '10 seconds')
               GROUP BY window_start, window_end, auction;",
        )
        .await;
        let mut gen = Generator { next: 0 };
        println!("incremental insert cost: table -> TUMBLE(10 s) GROUP BY window, auction ({AUCTIONS} auctions), durable commit per batch");
        let d = load(&engine, &mut gen, 10_000).await;
        println!("loaded 10000 rows in {:.2} s", d.as_secs_f64());
        let history = gen.next as u64;
        probe(&engine, &mut gen, "small", history).await;
        let target = big.saturating_sub(gen.next as usize);
        let d = load(&engine, &mut gen, target).await;
        println!(
            "loaded {target} more rows in {:.1} s ({:.0} rows/s through the view)",
            d.as_secs_f64(),
            target as f64 / d.as_secs_f64()
        );
        let history = gen.next as u64;
        probe(&engine, &mut gen, "large", history).await;
    });
    let _ = std::fs::remove_dir_all(&dir);
}
