//! What the in-process engine benchmarks share: settings from the
//! environment, a scratch data directory, running SQL, and memory figures.

use std::path::PathBuf;

use millrace_engine::Engine;
use millrace_planner::statement::parse;

/// The number in environment variable `name`, or `default`.
pub fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A fresh data directory under the system's temporary directory.
pub fn scratch_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Runs every statement of `sql`, panicking on failure.
pub async fn exec(engine: &Engine, sql: &str) {
    for stmt in parse(sql).expect("parse") {
        engine.execute(&stmt, None).await.expect("execute");
    }
}

/// (current RSS, peak RSS) of this process in MiB.
pub fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(f64::NAN)
    };
    (field("VmRSS:"), field("VmHWM:"))
}
