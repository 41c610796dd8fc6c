//! What a benchmark reads from the operating system: CPU time, memory,
//! and the percentiles of a set of latencies.

use std::time::Duration;

/// User + system CPU seconds used so far by process `pid`.
pub fn process_cpu_seconds(pid: u32) -> f64 {
    stat_cpu_seconds(&format!("/proc/{pid}/stat"))
}

/// User + system CPU seconds used so far by the calling thread.
pub fn thread_cpu_seconds() -> f64 {
    stat_cpu_seconds("/proc/thread-self/stat")
}

/// utime + stime of a `/proc/…/stat` file, in seconds (0 if unreadable).
fn stat_cpu_seconds(path: &str) -> f64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            // The command name may hold spaces: count fields after its ')'.
            let after: Vec<&str> = s.rsplit(')').next()?.split_whitespace().collect();
            let utime: f64 = after.get(11)?.parse().ok()?;
            let stime: f64 = after.get(12)?.parse().ok()?;
            Some((utime + stime) / clock_ticks())
        })
        .unwrap_or(0.0)
}

/// Clock ticks per second of /proc's CPU times (USER_HZ, 100 on Linux).
fn clock_ticks() -> f64 {
    100.0
}

/// A memory figure of process `pid` from /proc (`VmRSS:`, `VmHWM:`), in MiB.
pub fn memory_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// The highest RSS of a process while it runs, sampled every 20 ms by a
/// thread of its own: the kernel's VmHWM covers the whole life of the
/// process and cannot be reset everywhere, and each query needs its own.
pub struct PeakRss {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sampler: std::thread::JoinHandle<f64>,
}

impl PeakRss {
    /// Starts sampling process `pid`.
    pub fn start(pid: u32) -> PeakRss {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let sampler = std::thread::spawn(move || {
            let mut peak = 0f64;
            loop {
                peak = peak.max(memory_mib(pid, "VmRSS:"));
                if flag.load(std::sync::atomic::Ordering::Relaxed) {
                    return peak;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        PeakRss { stop, sampler }
    }

    /// Stops sampling; the peak RSS seen, in MiB.
    pub fn stop(self) -> f64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.sampler.join().unwrap_or(f64::NAN)
    }
}

/// The 1-minute load average, to print beside the figures.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// The `p`-th percentile (0-100) of `sorted`, nearest rank.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One query's figures, as every mode prints them.
#[derive(Clone, Debug)]
pub struct Figures {
    pub query: String,
    pub events: u64,
    pub wall: Duration,
    /// CPU seconds of the engine (server process, or in-process threads
    /// other than the generator).
    pub cpu_seconds: f64,
    pub peak_rss_mib: f64,
}

impl Figures {
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    pub fn events_per_cpu_second(&self) -> f64 {
        self.events as f64 / self.cpu_seconds.max(1e-9)
    }

    /// The figures as one line, for a parent process to read back.
    pub fn to_line(&self) -> String {
        format!(
            "figures {} {} {} {} {}",
            self.query,
            self.events,
            self.wall.as_secs_f64(),
            self.cpu_seconds,
            self.peak_rss_mib
        )
    }

    /// Reads a line written by [`Figures::to_line`].
    pub fn from_line(line: &str) -> Option<Figures> {
        let mut parts = line.strip_prefix("figures ")?.split_whitespace();
        Some(Figures {
            query: parts.next()?.to_string(),
            events: parts.next()?.parse().ok()?,
            wall: Duration::from_secs_f64(parts.next()?.parse().ok()?),
            cpu_seconds: parts.next()?.parse().ok()?,
            peak_rss_mib: parts.next()?.parse().ok()?,
        })
    }
}

/// Prints the table header for [`print_row`].
pub fn print_header() {
    println!(
        "{:<8} {:>11} {:>9} {:>12} {:>9} {:>14} {:>10}",
        "query", "events", "wall s", "events/s", "CPU s", "events/CPU-s", "peak RSS"
    );
}

/// Prints one query's figures as a table row.
pub fn print_row(f: &Figures) {
    println!(
        "{:<8} {:>11} {:>9.2} {:>12.0} {:>9.2} {:>14.0} {:>6.0} MiB",
        f.query,
        f.events,
        f.wall.as_secs_f64(),
        f.events_per_second(),
        f.cpu_seconds,
        f.events_per_cpu_second(),
        f.peak_rss_mib
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&v, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&v[..1], 99.0), Duration::from_millis(1));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }
}
