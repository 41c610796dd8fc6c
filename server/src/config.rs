//! Command-line flags and environment variables.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// Millrace: a streaming SQL database that speaks the PostgreSQL protocol.
///
/// Tables, and materialized views over them (including TUMBLE, HOP and SESSION
/// windows), are kept up to date incrementally as rows arrive. Connect with
/// psql or any PostgreSQL driver.
#[derive(Debug, Clone, Parser)]
#[command(name = "millrace", version, about, long_about)]
pub struct Config {
    /// Address and port to accept PostgreSQL connections on.
    #[arg(long, env = "MILLRACE_LISTEN", default_value = "127.0.0.1:6878")]
    pub listen: SocketAddr,

    /// Directory holding all data (created if missing).
    #[arg(long, env = "MILLRACE_DATA_DIR", default_value = "./millrace-data")]
    pub data_dir: PathBuf,

    /// Log filter, e.g. `info` or `millrace_server=debug` (RUST_LOG syntax).
    #[arg(long, env = "MILLRACE_LOG", default_value = "info")]
    pub log: String,

    /// How clients log in: `trust` lets anyone connect as any user (the
    /// default, for trying Millrace on one machine: only allowed on a
    /// loopback address); `password` checks SCRAM-SHA-256 passwords of
    /// users made with `CREATE USER name PASSWORD '…'`.
    #[arg(long, env = "MILLRACE_AUTH", value_enum, default_value = "trust")]
    pub auth: AuthMode,

    /// Accept `--auth trust` on a non-loopback address: anyone who can
    /// reach the port gets in.
    #[arg(long, env = "MILLRACE_ALLOW_TRUST_REMOTE")]
    pub allow_trust_remote: bool,

    /// With `--auth password`: the user that `MILLRACE_PASSWORD` creates or
    /// updates at startup, so that a fresh data directory can be logged into.
    #[arg(long, env = "MILLRACE_USER", default_value = "millrace")]
    pub user: String,

    /// TLS certificate chain (PEM) for client connections; with
    /// `--tls-key`, clients may (and with `sslmode=require`, must) encrypt.
    #[arg(long, env = "MILLRACE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM, PKCS#8, PKCS#1 or SEC1) of `--tls-cert`.
    #[arg(long, env = "MILLRACE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// How often the views' state and contents are checkpointed to disk,
    /// in milliseconds (also on FLUSH, view creation and shutdown). Between
    /// checkpoints only the write-ahead log of tables and source offsets is
    /// written; after a crash, recovery replays it from the last checkpoint.
    #[arg(long, env = "MILLRACE_CHECKPOINT_INTERVAL_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub checkpoint_interval_ms: u64,

    /// Workers (threads) each materialized view's `GROUP BY` is split over
    /// by group key, so that one heavy view uses several cores. 1 keeps
    /// every view on one thread.
    #[arg(long, env = "MILLRACE_WORKERS", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub workers: u16,

    /// The password of `--user`, set at startup (read from the environment
    /// only, so that it stays out of the process list).
    #[arg(skip = std::env::var("MILLRACE_PASSWORD").ok())]
    pub password: Option<String>,
}

/// How clients authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// No password asked.
    Trust,
    /// SCRAM-SHA-256 against the stored users.
    Password,
}
