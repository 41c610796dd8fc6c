//! What every partition of a source is doing, for people and for `FLUSH`.
//!
//! The ingest thread of a source updates its [`SourceStatus`] after every
//! poll and every commit; the engine shows it in the system table
//! `millrace_catalog.source_partitions` and waits on it in `FLUSH`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::watch;

/// What a source's ingest thread is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Connecting for the first time.
    Starting,
    /// Consuming.
    Running,
    /// The broker is unreachable or a batch failed; retrying with backoff.
    Retrying,
    /// The broker answered, and what it said leaves nothing to consume
    /// (the topic does not exist, e.g. it was deleted): a user has to act.
    /// Told apart from [`State::Retrying`] because waiting alone will not
    /// help; the source still looks again now and then, so that a topic
    /// created again under the same name is picked up.
    Error,
    /// Dropped or shut down.
    Stopped,
}

impl State {
    /// The state as the system table shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Running => "running",
            State::Retrying => "retrying",
            State::Error => "error",
            State::Stopped => "stopped",
        }
    }
}

/// Figures of one partition.
#[derive(Clone, Debug, Default)]
pub struct PartitionStatus {
    /// The next offset to consume, as committed in storage.
    pub committed: i64,
    /// The partition's high watermark (next offset to be written), as last
    /// seen by the consumer; -1 when not yet known.
    pub high_watermark: i64,
    /// Messages consumed (including skipped ones) since the server started.
    pub messages: u64,
    /// Payload bytes consumed since the server started.
    pub bytes: u64,
    /// Messages skipped because they did not decode.
    pub decode_errors: u64,
    /// The last decode error of this partition.
    pub last_error: Option<String>,
    /// Messages per second over the last rate interval.
    pub rate: f64,
    /// The largest event time accepted from this partition (sources with
    /// a WATERMARK), ns since the epoch.
    pub max_event_time: Option<i64>,
    /// No message for longer than the idle timeout: the partition does not
    /// hold the source's watermark back.
    pub idle: bool,
    /// Why the partition makes no progress although it is behind its end
    /// (None while it moves, or has nothing to read).
    pub stalled: Option<String>,
    /// When the committed offset last moved, or the partition was last
    /// seen with nothing to read: how long a stall has lasted.
    pub progressed_at: Option<Instant>,
    rate_mark: Option<(Instant, u64)>,
}

impl PartitionStatus {
    /// Recomputes the message rate when a second has passed since the last.
    pub fn tick_rate(&mut self, now: Instant) {
        match self.rate_mark {
            Some((at, n)) if now.duration_since(at).as_secs_f64() >= 1.0 => {
                self.rate = (self.messages - n) as f64 / now.duration_since(at).as_secs_f64();
                self.rate_mark = Some((now, self.messages));
            }
            Some(_) => {}
            None => self.rate_mark = Some((now, self.messages)),
        }
    }
}

/// The live status of one source.
#[derive(Debug)]
pub struct SourceStatus {
    /// The source's name.
    pub name: String,
    /// The topic it reads.
    pub topic: String,
    inner: Mutex<Inner>,
    /// Positions every partition is known to be consumed through (its
    /// committed offset, or its end when the consumer reached it with
    /// nothing left uncommitted): what `FLUSH` waits on. Empty until a
    /// consumer session has checked its committed offsets against the
    /// topic and published where it resumes: offsets of a topic since
    /// replaced must not count as read.
    caught_up: watch::Sender<BTreeMap<i32, i64>>,
}

#[derive(Debug)]
struct Inner {
    state: State,
    last_error: Option<String>,
    partitions: BTreeMap<i32, PartitionStatus>,
}

impl SourceStatus {
    /// A new status, in state starting, with the committed offsets.
    pub fn new(name: &str, topic: &str, committed: &[(i32, i64)]) -> Arc<Self> {
        let partitions = committed
            .iter()
            .map(|(p, o)| {
                (
                    *p,
                    PartitionStatus {
                        committed: *o,
                        high_watermark: -1,
                        ..Default::default()
                    },
                )
            })
            .collect();
        let (caught_up, _) = watch::channel(BTreeMap::new());
        Arc::new(Self {
            name: name.to_string(),
            topic: topic.to_string(),
            inner: Mutex::new(Inner {
                state: State::Starting,
                last_error: None,
                partitions,
            }),
            caught_up,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Only plain figures live behind this lock; a panic elsewhere
        // cannot leave them inconsistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the state, and the error that caused it (`None` keeps the last).
    pub fn set_state(&self, state: State, error: Option<String>) {
        let mut inner = self.lock();
        inner.state = state;
        if error.is_some() {
            inner.last_error = error;
        }
    }

    /// The current state and last error.
    pub fn state(&self) -> (State, Option<String>) {
        let inner = self.lock();
        (inner.state, inner.last_error.clone())
    }

    /// Changes the figures of `partition` (creating it if new).
    pub fn update<R>(&self, partition: i32, f: impl FnOnce(&mut PartitionStatus) -> R) -> R {
        let mut inner = self.lock();
        f(inner
            .partitions
            .entry(partition)
            .or_insert_with(|| PartitionStatus {
                high_watermark: -1,
                ..Default::default()
            }))
    }

    /// A copy of every partition's figures.
    pub fn partitions(&self) -> BTreeMap<i32, PartitionStatus> {
        self.lock().partitions.clone()
    }

    /// Publishes the positions partitions are consumed through.
    pub fn publish_caught_up(&self, positions: &BTreeMap<i32, i64>) {
        self.caught_up.send_modify(|current| {
            for (p, o) in positions {
                let e = current.entry(*p).or_insert(*o);
                *e = (*e).max(*o);
            }
        });
    }

    /// Starts the figures of `positions`' partitions over at those
    /// offsets, with `notes` (by partition) as their last error: the topic the source read
    /// was replaced by a new one under the same name, whose offsets begin
    /// again. (The positions `FLUSH` counts as consumed need no change:
    /// a session forgets them when it starts and publishes where it resumes,
    /// these offsets included.)
    pub fn restart_partitions(
        &self,
        positions: &BTreeMap<i32, i64>,
        notes: &BTreeMap<i32, String>,
    ) {
        let mut inner = self.lock();
        for (p, o) in positions {
            let s = inner.partitions.entry(*p).or_default();
            s.committed = *o;
            s.high_watermark = -1;
            s.idle = false;
            s.stalled = None;
            s.progressed_at = None;
            s.last_error = notes.get(p).cloned();
        }
    }

    /// Forgets every position known consumed: a consumer session starts,
    /// and until it has checked them against the topic (which may have
    /// been replaced), `FLUSH` must not take them as read.
    pub fn forget_positions(&self) {
        self.caught_up.send_modify(BTreeMap::clear);
    }

    /// Why each stalled partition makes no progress, by partition.
    pub fn stalls(&self) -> BTreeMap<i32, String> {
        self.lock()
            .partitions
            .iter()
            .filter_map(|(p, s)| s.stalled.clone().map(|why| (*p, why)))
            .collect()
    }

    /// Marks `partition` stalled for `why` (or moving again, with None),
    /// and wakes whoever waits on the positions (`FLUSH` gives up on a
    /// stalled partition rather than wait for its timeout).
    pub fn set_stalled(&self, partition: i32, why: Option<String>) {
        let changed = self.update(partition, |s| {
            let changed = s.stalled != why;
            s.stalled = why;
            changed
        });
        if changed {
            self.caught_up.send_modify(|_| {});
        }
    }

    /// Watches the positions partitions are consumed through.
    pub fn watch_caught_up(&self) -> watch::Receiver<BTreeMap<i32, i64>> {
        self.caught_up.subscribe()
    }
}
