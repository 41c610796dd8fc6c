//! Engine-only mode: bids generated in-process as Arrow batches and pushed
//! straight into the engine, with no Kafka and no JSON, to separate the
//! cost of the operators (and of durable commits) from that of ingestion.
//!
//! The batches go in the way a Kafka source's do ([`Feed::Source`]: a
//! `CREATE SOURCE` over an empty topic of an in-process mock cluster, its
//! batches handed to the engine with made-up offsets; the source keeps no
//! rows, each batch logs its offsets) or as a table's `INSERT`s
//! ([`Feed::Table`]: the rows are written to the table log and synced).

use std::collections::BTreeMap;
use std::sync::mpsc::sync_channel;
use std::time::Instant;

use millrace_connectors::sink::Arrival;
use millrace_engine::{Engine, Outcome};

use crate::events::{self, BID_COLUMNS};
use crate::measure::{self, Figures};
use crate::queries::Query;

/// Rows per appended batch: what a Kafka source commits at most at once.
const BATCH_ROWS: usize = 100_000;

/// How the bids reach the engine.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Feed {
    /// As the batches of a source (which keeps no rows).
    Source,
    /// As rows appended to a table.
    Table,
}

impl Feed {
    /// How the header line says it.
    pub fn describe(self) -> &'static str {
        match self {
            Feed::Source => "as a source's batches (no rows kept)",
            Feed::Table => "as a table's appends (rows logged)",
        }
    }

    fn arg(self) -> &'static str {
        match self {
            Feed::Source => "source",
            Feed::Table => "table",
        }
    }
}

/// Runs `query` over `events` bids in a fresh engine and data directory.
pub async fn run(
    query: &Query,
    events: u64,
    feed: Feed,
    workers: usize,
    scratch: &std::path::Path,
) -> anyhow::Result<Figures> {
    let dir = scratch.join(format!("engine-{}", query.name));
    let _ = std::fs::remove_dir_all(&dir);
    let options = millrace_engine::EngineOptions {
        workers,
        ..millrace_server::engine_options()
    };
    let engine = Engine::open_with(&dir, options).await?;
    // The source's topic: one empty partition its ingest thread polls.
    let cluster = match feed {
        Feed::Source => {
            let cluster = rdkafka::mocking::MockCluster::new(1)?;
            cluster.create_topic("bid", 1, 1)?;
            execute(
                &engine,
                &format!(
                    "CREATE SOURCE bid ({BID_COLUMNS}) WITH (connector = 'kafka', topic = 'bid', \
                     properties.bootstrap.server = '{}', watermark.idle.timeout.ms = '0') \
                     FORMAT PLAIN ENCODE JSON",
                    cluster.bootstrap_servers()
                ),
            )
            .await?;
            Some(cluster)
        }
        Feed::Table => {
            execute(&engine, &format!("CREATE TABLE bid ({BID_COLUMNS})")).await?;
            None
        }
    };
    for view in query.views {
        execute(&engine, view).await?;
    }
    let rel = engine
        .relation("bid")
        .ok_or_else(|| anyhow::anyhow!("table bid was not created"))?;

    // The generator runs on its own thread, two batches ahead; its CPU time
    // is measured by itself and left out of the engine's.
    let (tx, rx) = sync_channel(2);
    let schema = rel.schema.clone();
    let generator = std::thread::spawn(move || -> anyhow::Result<f64> {
        let mut bids = events::bids(1_767_225_600_000);
        let mut left = events;
        while left > 0 {
            let n = (BATCH_ROWS as u64).min(left) as usize;
            let batch = events::to_batch(&schema, &mut bids, n)?;
            left -= n as u64;
            if tx.send(batch).is_err() {
                break;
            }
        }
        Ok(measure::thread_cpu_seconds())
    });

    let pid = std::process::id();
    let peak = measure::PeakRss::start(pid);
    let cpu_before = measure::process_cpu_seconds(pid);
    let started = Instant::now();
    let mut appended = 0u64;
    while let Ok(batch) = rx.recv() {
        let n = batch.num_rows();
        match feed {
            Feed::Source => {
                let arrival = Arrival {
                    row_partitions: vec![0; n],
                    row_offsets: (appended as i64..(appended + n as u64) as i64).collect(),
                    partitions: vec![0],
                    idle: Default::default(),
                };
                let next = BTreeMap::from([(0, (appended + n as u64) as i64)]);
                engine.ingest(&rel, Some(batch), &next, &arrival).await?;
            }
            Feed::Table => {
                engine.append(&rel, vec![batch]).await?;
            }
        }
        appended += n as u64;
    }
    let wall = started.elapsed();
    let generator_cpu = generator
        .join()
        .map_err(|_| anyhow::anyhow!("the event generator panicked"))??;
    let cpu = measure::process_cpu_seconds(pid) - cpu_before - generator_cpu;
    let peak = peak.stop();
    anyhow::ensure!(appended == events, "appended {appended} of {events} bids");
    let summary = first_value(&engine, query.summary).await?;
    println!("  {}: {} = {summary}", query.name, query.summary);
    query.check(&summary, events)?;
    engine.shutdown().await;
    drop(engine);
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Figures {
        query: query.name.to_string(),
        events,
        wall,
        cpu_seconds: cpu,
        peak_rss_mib: peak,
    })
}

/// Runs `query` in a new process of this binary (`engine --child`) and
/// returns the figures it prints; its other output is passed on.
pub fn run_in_child(
    query: &Query,
    events: u64,
    feed: Feed,
    workers: usize,
    scratch: &std::path::Path,
) -> anyhow::Result<Figures> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(["engine", "--child", "--queries", query.name])
        .args(["--feed", feed.arg()])
        .arg("--events")
        .arg(events.to_string())
        .arg("--workers")
        .arg(workers.to_string())
        .arg("--scratch")
        .arg(scratch)
        .stderr(std::process::Stdio::inherit())
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut figures = None;
    for line in stdout.lines() {
        match Figures::from_line(line) {
            Some(f) => figures = Some(f),
            None => println!("{line}"),
        }
    }
    anyhow::ensure!(out.status.success(), "the run of {} failed", query.name);
    figures.ok_or_else(|| anyhow::anyhow!("the run of {} printed no figures", query.name))
}

async fn execute(engine: &Engine, sql: &str) -> anyhow::Result<Outcome> {
    let mut last = None;
    for stmt in millrace_planner::statement::parse(sql)? {
        last = Some(engine.execute(&stmt, None).await?);
    }
    last.ok_or_else(|| anyhow::anyhow!("no statement in {sql:?}"))
}

/// The first column of the first row of `sql`'s result, as text.
async fn first_value(engine: &Engine, sql: &str) -> anyhow::Result<String> {
    match execute(engine, sql).await? {
        Outcome::Rows { batches, .. } => {
            let value = batches
                .iter()
                .find(|b| b.num_rows() > 0)
                .map(|b| arrow::util::display::array_value_to_string(b.column(0), 0))
                .transpose()?;
            Ok(value.unwrap_or_else(|| "(no rows)".into()))
        }
        _ => Ok("(no rows)".into()),
    }
}
