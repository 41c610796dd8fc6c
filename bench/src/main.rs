//! `millrace-bench`: Nexmark queries through Millrace, with the figures
//! users compare streaming engines on (events/s, events per CPU-second,
//! peak memory, freshness latency), in three modes:
//!
//! - `engine`: bids generated in-process and appended as Arrow batches,
//!   no Kafka, no JSON: the cost of the operators and durable commits;
//! - `kafka`: bids as JSON in a real Kafka-protocol broker (tansu) on
//!   loopback, consumed by a server process through `CREATE SOURCE`;
//! - `decode`: Millrace's JSON decoder against serde_json's raw parse.
//!
//! `serve` is not for users: it is how `kafka` runs the server in its own
//! process (the same code as the `millrace` binary).

mod decode;
mod engine_only;
mod events;
mod kafka;
mod measure;
mod processes;
mod queries;

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
    /// Bids generated in-process, appended to a table: operators only.
    Engine {
        /// Bids per query.
        #[arg(long, default_value_t = 10_000_000)]
        events: u64,
        /// Comma-separated queries (q0,q1,q2,q5,q7,tumble) or `all`.
        #[arg(long, default_value = "all")]
        queries: String,
        /// Where the data directories go.
        #[arg(long, default_value_os_t = std::env::temp_dir().join("millrace-bench"))]
        scratch: PathBuf,
        /// Runs the one query in this process and prints its figures as a
        /// line for the parent (each query runs in a process of its own, so
        /// that its peak RSS is its own).
        #[arg(long, hide = true)]
        child: bool,
    },
    /// Bids as JSON through a tansu broker on loopback and `CREATE SOURCE`.
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
        /// tansu's storage (`sqlite://tansu.db` is relative to the scratch
        /// directory; `memory://tansu/` needs tansu built with `dynostore`).
        #[arg(long, default_value = "sqlite://tansu.db")]
        broker_storage: String,
        /// Input rate of the freshness runs, bids/s (default: half the
        /// query's measured throughput).
        #[arg(long)]
        rate: Option<u64>,
        /// Length of each freshness run; 0 skips them.
        #[arg(long, default_value_t = 20)]
        freshness_seconds: u64,
        /// The source's `checkpoint.interval.ms` in freshness runs.
        #[arg(long, default_value_t = 20)]
        checkpoint_ms: u64,
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
            println!(
                "  Millrace decoder (to Arrow):    {:>10.0} msg/s = {:.2}x slower than the struct parse",
                r.millrace,
                r.serde_struct / r.millrace
            );
            Ok(())
        }
        Mode::Engine {
            events,
            queries,
            scratch,
            child,
        } => runtime.block_on(async {
            let queries = queries::select(&queries)?;
            std::fs::create_dir_all(&scratch)?;
            if child {
                for q in queries {
                    let f = engine_only::run(q, events, &scratch).await?;
                    println!("{}", f.to_line());
                }
                return Ok(());
            }
            println!(
                "engine-only: {events} Nexmark bids per query, Arrow batches of 100,000, a durable commit per batch, one process per query; load before {}",
                measure::load_average()
            );
            let mut all = Vec::new();
            for q in queries {
                println!("{}: {}", q.name, q.what);
                all.push(engine_only::run_in_child(q, events, &scratch)?);
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
            broker_storage,
            rate,
            freshness_seconds,
            checkpoint_ms,
            scratch,
        } => runtime.block_on(async {
            let queries = queries::select(&queries)?;
            let _ = std::fs::remove_dir_all(&scratch);
            std::fs::create_dir_all(&scratch)?;
            let broker = processes::Broker::start(&scratch, &broker_storage)?;
            kafka::create_topic(&broker, "nexmark_bid", partitions).await?;
            println!(
                "kafka: producing {events} Nexmark bids as JSON to {partitions} partitions (tansu, {broker_storage}); load {}",
                measure::load_average()
            );
            let secs = kafka::produce(&broker, "nexmark_bid", partitions, events)?;
            println!("  produced in {secs:.1} s ({:.0} msg/s)", events as f64 / secs);
            let mut all = Vec::new();
            for q in &queries {
                println!("{}: {}", q.name, q.what);
                let broker_cpu = measure::process_cpu_seconds(broker.pid);
                let f = kafka::throughput(q, &broker, "nexmark_bid", events, &scratch).await?;
                println!(
                    "  broker CPU during the run: {:.1} s; load {}",
                    measure::process_cpu_seconds(broker.pid) - broker_cpu,
                    measure::load_average()
                );
                all.push(f);
            }
            measure::print_header();
            all.iter().for_each(measure::print_row);
            if freshness_seconds > 0 {
                println!("freshness (one partition, checkpoint.interval.ms = {checkpoint_ms}, produce → visible):");
                for (q, f) in queries.iter().zip(&all) {
                    if q.progress.is_none() {
                        continue;
                    }
                    let rate = rate.unwrap_or((f.events_per_second() / 2.0) as u64).max(1);
                    let r = kafka::freshness(q, &broker, rate, freshness_seconds, checkpoint_ms, &scratch).await?;
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
