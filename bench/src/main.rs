//! `millrace-bench`: Nexmark queries through Millrace, with the figures
//! users compare streaming engines on (events/s, events per CPU-second,
//! peak memory, freshness latency), in three modes:
//!
//! - `engine`: bids generated in-process and appended as Arrow batches,
//!   no Kafka, no JSON: the cost of the operators and durable commits;
//! - `kafka`: bids as JSON in a Kafka-protocol broker on loopback
//!   (librdkafka's mock cluster by default, tansu, or `--broker ADDR`),
//!   consumed by a server process through `CREATE SOURCE`; then freshness
//!   (produce → visible over pgwire) at a fixed rate;
//! - `point`: point queries by key on a view of 1 M rows while bids are
//!   ingested from Kafka;
//! - `restart`: time to serve again after `kill -9` with a view of 10 M
//!   groups, and the memory it takes;
//! - `decode`: Millrace's JSON decoder against serde_json's raw parse;
//! - `inserts`: concurrent durable `INSERT`s into a table with a view
//!   (group commit).
//!
//! `serve` and `mock-broker` are not for users: they are how the Kafka
//! modes run the server (the same code as the `millrace` binary) and the
//! mock cluster in processes of their own, so that each one's CPU time and
//! memory are its own.

mod decode;
mod engine_only;
mod events;
mod inserts;
mod kafka;
mod measure;
mod processes;
mod queries;
mod restart;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "millrace-bench", about = "Nexmark benchmarks of Millrace")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Bids generated in-process, pushed as a source's batches (or appended
    /// to a table): operators only.
    Engine {
        /// Bids per query.
        #[arg(long, default_value_t = 10_000_000)]
        events: u64,
        /// How the bids reach the views: `source` (batches of a `CREATE
        /// SOURCE`, which keeps no rows: what Kafka-fed views cost without
        /// Kafka and JSON) or `table` (appended to a table, whose rows are
        /// logged and synced).
        #[arg(long, default_value = "source")]
        feed: engine_only::Feed,
        /// Comma-separated queries (q0,q1,q2,q5,q7,tumble) or `all`.
        #[arg(long, default_value = "all")]
        queries: String,
        /// Workers each view's `GROUP BY` is split over (the server's
        /// `--workers`).
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Where the data directories go.
        #[arg(long, default_value_os_t = std::env::temp_dir().join("millrace-bench"))]
        scratch: PathBuf,
        /// Runs the one query in this process and prints its figures as a
        /// line for the parent (each query runs in a process of its own, so
        /// that its peak RSS is its own).
        #[arg(long, hide = true)]
        child: bool,
    },
    /// Bids as JSON through a broker on loopback and `CREATE SOURCE`.
    Kafka {
        /// Bids in the topic, consumed by each query.
        #[arg(long, default_value_t = 10_000_000)]
        events: u64,
        /// Comma-separated queries (q0,q1,q2,q5,q7,tumble) or `all`.
        #[arg(long, default_value = "all")]
        queries: String,
        /// Partitions of the throughput topic.
        #[arg(long, default_value_t = 8)]
        partitions: i32,
        /// `mock` (librdkafka's mock cluster, in a process of its own),
        /// `tansu` (or `tansu:STORAGE`, default `sqlite://tansu.db` in the
        /// scratch directory), or the bootstrap address of a running broker.
        #[arg(long, default_value = "mock")]
        broker: String,
        /// Input rate of the freshness runs, bids/s (default: half the
        /// query's measured throughput).
        #[arg(long)]
        rate: Option<u64>,
        /// Length of each freshness run; 0 skips them.
        #[arg(long, default_value_t = 20)]
        freshness_seconds: u64,
        /// The source's `epoch.interval.ms` in freshness runs (default: the
        /// source's default).
        #[arg(long)]
        epoch_ms: Option<u64>,
        /// Where the data directories go.
        #[arg(long, default_value_os_t = std::env::temp_dir().join("millrace-bench"))]
        scratch: PathBuf,
    },
    /// Point SELECTs by group key on a view of `keys` rows while bids are
    /// ingested from Kafka at `rate` per second.
    Point {
        /// Rows of the view (distinct auction ids).
        #[arg(long, default_value_t = 1_000_000)]
        keys: u64,
        /// Bids per second ingested while the queries run.
        #[arg(long, default_value_t = 100_000)]
        rate: u64,
        /// Length of the measured phase.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Partitions of the topic.
        #[arg(long, default_value_t = 8)]
        partitions: i32,
        /// As in `kafka`: `mock`, `tansu[:STORAGE]` or a bootstrap address.
        #[arg(long, default_value = "mock")]
        broker: String,
        /// Where the data directories go.
        #[arg(long, default_value_os_t = std::env::temp_dir().join("millrace-bench"))]
        scratch: PathBuf,
    },
    /// Restart after kill -9 with a view of `rows` groups: time to the
    /// first answered query, peak RSS.
    Restart {
        /// Rows of the table, and groups of the view.
        #[arg(long, default_value_t = 10_000_000)]
        rows: u64,
        /// Where the data directory goes.
        #[arg(long, default_value_os_t = std::env::temp_dir().join("millrace-bench"))]
        scratch: PathBuf,
    },
    /// Concurrent single-row and multi-row INSERTs into a table with a
    /// view: INSERTs/s, rows/s, latency, fsyncs (group commit).
    Inserts {
        /// Comma-separated numbers of concurrent clients.
        #[arg(long, default_value = "1,8,32")]
        clients: String,
        /// Comma-separated rows per INSERT.
        #[arg(long, default_value = "1,100")]
        rows: String,
        /// Length of each run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Where the data directories go.
        #[arg(long, default_value_os_t = std::env::temp_dir().join("millrace-bench"))]
        scratch: PathBuf,
    },
    /// Millrace's JSON decoder against serde_json on the same bids.
    Decode {
        /// Messages decoded.
        #[arg(long, default_value_t = 2_000_000)]
        events: usize,
    },
    /// Runs librdkafka's mock cluster (used by `kafka` and `point`).
    #[command(hide = true)]
    MockBroker,
    /// Runs a server (used by `kafka`); takes the `millrace` binary's options.
    #[command(hide = true)]
    Serve {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("millrace-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.mode {
        Mode::Serve { args } => serve(&runtime, args),
        Mode::MockBroker => processes::run_mock_broker(),
        Mode::Point {
            keys,
            rate,
            seconds,
            partitions,
            broker,
            scratch,
        } => runtime.block_on(async {
            let _ = std::fs::remove_dir_all(&scratch);
            std::fs::create_dir_all(&scratch)?;
            let broker = processes::Broker::start(&scratch, &processes::BrokerChoice::parse(&broker))?;
            println!(
                "point: a view of {keys} rows by auction, filled from Kafka ({}, {partitions} partitions), \
                 then point SELECTs by key while {rate} bids/s update it for {seconds} s; load {}",
                broker.describe(),
                measure::load_average()
            );
            let r = kafka::point_queries(&broker, keys, rate, seconds, partitions, &scratch).await?;
            println!(
                "  {} queries, one at a time: p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms; \
                 ingested {:.0} bids/s meanwhile (asked {}); server CPU {:.0}% of one core; load {}",
                r.queries,
                r.p50.as_secs_f64() * 1e3,
                r.p99.as_secs_f64() * 1e3,
                r.max.as_secs_f64() * 1e3,
                r.ingested_per_second,
                r.rate,
                r.server_cpu_share * 100.0,
                measure::load_average()
            );
            Ok(())
        }),
        Mode::Restart { rows, scratch } => runtime.block_on(async {
            std::fs::create_dir_all(&scratch)?;
            println!(
                "restart: a view of {rows} groups (count, sum by a over a {rows}-row table), FLUSH, kill -9, start again; load {}",
                measure::load_average()
            );
            let r = restart::run(rows, &scratch).await?;
            println!(
                "  filled in {:.1} s; checkpoint {:.0} MiB on disk; RSS before the kill {:.0} MiB",
                r.fill_seconds,
                r.checkpoint_bytes as f64 / (1024.0 * 1024.0),
                r.rss_before_kill_mib
            );
            println!(
                "  restart: listening after {:.2} s, first query answered after {:.2} s; \
                 full scan of the view {:.2} s ({} groups); peak RSS {:.0} MiB; load {}",
                r.ready_seconds,
                r.first_query_seconds,
                r.scan_seconds,
                r.rows,
                r.peak_rss_mib,
                measure::load_average()
            );
            Ok(())
        }),
        Mode::Inserts {
            clients,
            rows,
            seconds,
            scratch,
        } => runtime.block_on(async {
            std::fs::create_dir_all(&scratch)?;
            let clients = parse_list(&clients)?;
            let rows = parse_list(&rows)?;
            println!(
                "inserts: C clients each INSERTing into a table with one view (count, sum by a) \
                 for {seconds} s per run; load {}",
                measure::load_average()
            );
            for &r in &rows {
                for &c in &clients {
                    let f = inserts::run(c, r, seconds, &scratch).await?;
                    let syncs = match f.groups_and_fsyncs {
                        Some((groups, fsyncs)) => format!(
                            "{:.0} groups/s, {:.0} fsyncs/s, {:.1} INSERTs per group",
                            groups as f64 / f.seconds,
                            fsyncs as f64 / f.seconds,
                            f.inserts as f64 / groups.max(1) as f64
                        ),
                        None => "fsyncs not counted by this server".into(),
                    };
                    println!(
                        "  C={:<3} {:>3} row(s)/INSERT: {:>8.0} INSERTs/s {:>9.0} rows/s, \
                         p50 {:.2} ms, p99 {:.2} ms; {syncs}; load {}",
                        f.clients,
                        f.rows,
                        f.inserts_per_second(),
                        f.rows_per_second(),
                        f.p50.as_secs_f64() * 1e3,
                        f.p99.as_secs_f64() * 1e3,
                        measure::load_average()
                    );
                }
            }
            Ok(())
        }),
        Mode::Decode { events } => {
            let r = decode::run(events)?;
            println!(
                "decode: {} Nexmark bids as JSON ({:.0} bytes each), one thread, load {}",
                r.messages,
                r.bytes as f64 / r.messages as f64,
                measure::load_average()
            );
            println!("  serde_json into the Bid struct: {:>10.0} msg/s", r.serde_struct);
            println!("  serde_json into a Value:        {:>10.0} msg/s", r.serde_value);
            let (ratio, than) = if r.millrace >= r.serde_struct {
                (r.millrace / r.serde_struct, "faster")
            } else {
                (r.serde_struct / r.millrace, "slower")
            };
            println!(
                "  Millrace decoder (to Arrow):    {:>10.0} msg/s = {ratio:.2}x {than} than the struct parse",
                r.millrace,
            );
            Ok(())
        }
        Mode::Engine {
            events,
            feed,
            queries,
            workers,
            scratch,
            child,
        } => runtime.block_on(async {
            let queries = queries::select(&queries)?;
            std::fs::create_dir_all(&scratch)?;
            if child {
                for q in queries {
                    let f = engine_only::run(q, events, feed, workers, &scratch).await?;
                    println!("{}", f.to_line());
                }
                return Ok(());
            }
            println!(
                "engine-only: {events} Nexmark bids per query, Arrow batches of 100,000 fed {}, a durable commit per batch, one process per query, {workers} worker(s) per GROUP BY; load before {}",
                feed.describe(),
                measure::load_average()
            );
            let mut all = Vec::new();
            for q in queries {
                println!("{}: {}", q.name, q.what);
                all.push(engine_only::run_in_child(q, events, feed, workers, &scratch)?);
            }
            println!("load after {}", measure::load_average());
            measure::print_header();
            all.iter().for_each(measure::print_row);
            Ok(())
        }),
        Mode::Kafka {
            events,
            queries,
            partitions,
            broker,
            rate,
            freshness_seconds,
            epoch_ms,
            scratch,
        } => runtime.block_on(async {
            let queries = queries::select(&queries)?;
            let _ = std::fs::remove_dir_all(&scratch);
            std::fs::create_dir_all(&scratch)?;
            let broker = processes::Broker::start(&scratch, &processes::BrokerChoice::parse(&broker))?;
            let mut all = Vec::new();
            if broker.keeps_everything() {
                broker.create_topic("nexmark_bid", partitions).await?;
                println!(
                    "kafka: producing {events} Nexmark bids as JSON to {partitions} partitions ({}); load {}",
                    broker.describe(),
                    measure::load_average()
                );
                let bids = events::bids(1_767_225_600_000).take(events as usize);
                let secs = kafka::produce(&broker.addr, "nexmark_bid", partitions, bids, None)?;
                println!("  produced in {secs:.1} s ({:.0} msg/s)", events as f64 / secs);
            } else {
                println!(
                    "kafka: {events} Nexmark bids as JSON over {partitions} partitions ({}), produced \
                     while each query's server consumes them (at most {} messages per partition ahead); load {}",
                    broker.describe(),
                    kafka::AHEAD_PER_PARTITION,
                    measure::load_average()
                );
            }
            for q in &queries {
                println!("{}: {}", q.name, q.what);
                let topic = if broker.keeps_everything() {
                    "nexmark_bid".to_string()
                } else {
                    let t = format!("nexmark_bid_{}", q.name);
                    broker.create_topic(&t, partitions).await?;
                    t
                };
                let broker_cpu = broker.cpu_seconds();
                let f = kafka::throughput(q, &broker, &topic, partitions, events, &scratch).await?;
                println!(
                    "  broker CPU during the run: {:.1} s; load {}",
                    broker.cpu_seconds() - broker_cpu,
                    measure::load_average()
                );
                all.push(f);
            }
            measure::print_header();
            all.iter().for_each(measure::print_row);
            if freshness_seconds > 0 {
                println!(
                    "freshness (one partition, epoch.interval.ms = {}, server checkpoints every 1 s, produce → visible):",
                    epoch_ms.map_or("default".to_string(), |ms| ms.to_string())
                );
                for (q, f) in queries.iter().zip(&all) {
                    if q.progress.is_none() {
                        continue;
                    }
                    let rate = rate.unwrap_or((f.events_per_second() / 2.0) as u64).max(1);
                    let r = kafka::freshness(q, &broker, rate, freshness_seconds, epoch_ms, &scratch).await?;
                    println!(
                        "  {:<8} {} bids/s for {} s: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; server CPU {:.0}% of one core; load {}",
                        q.name,
                        r.rate,
                        r.seconds,
                        r.p50.as_secs_f64() * 1e3,
                        r.p99.as_secs_f64() * 1e3,
                        r.max.as_secs_f64() * 1e3,
                        r.server_cpu_share * 100.0,
                        measure::load_average()
                    );
                }
            }
            Ok(())
        }),
    }
}

/// Runs the server as the `millrace` binary would, until killed.
fn serve(runtime: &tokio::runtime::Runtime, args: Vec<String>) -> anyhow::Result<()> {
    use clap::Parser as _;
    let config = millrace_server::config::Config::try_parse_from(
        std::iter::once("millrace".to_string()).chain(args),
    )?;
    millrace_server::server::init_logging(&config.log);
    runtime.block_on(millrace_server::server::run(config, std::future::pending()))
}

/// `1,8,32` as numbers.
fn parse_list(s: &str) -> anyhow::Result<Vec<usize>> {
    s.split(',')
        .map(|p| {
            p.trim()
                .parse()
                .map_err(|e| anyhow::anyhow!("{p:?} is not a number: {e}"))
        })
        .collect()
}
