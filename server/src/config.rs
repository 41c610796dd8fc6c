//! Command-line flags and environment variables.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// Millrace: a streaming SQL database that speaks the PostgreSQL protocol.
///
/// Tables, and materialized views over them (including TUMBLE and HOP
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
}
