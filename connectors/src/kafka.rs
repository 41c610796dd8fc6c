//! The ingest thread of one source: Kafka messages in, committed batches out.
//!
//! The thread assigns itself every partition of the topic at the offsets
//! committed in Millrace's storage (never Kafka's consumer-group offsets),
//! polls messages, decodes them and, when the batch is full, the consumer
//! has momentarily nothing more, or the checkpoint interval has passed,
//! pushes the batch and the partitions' next offsets through its
//! [`BatchSink`] (the engine, which commits rows, view changes and offsets
//! atomically). Only then does it poll again: consumption is paced by
//! processing, and librdkafka's prefetch queue is capped, so memory stays
//! bounded however far behind the source is.
//!
//! Anything that goes wrong (broker unreachable, a batch the sink refused)
//! drops the consumer, shows the error in the status table, waits with
//! exponential backoff and starts over from the committed offsets: nothing
//! is lost or counted twice, and the server keeps serving.
//!
//! A deleted topic is not something to retry: librdkafka keeps quiet about
//! it, so a session that reads nothing for a while asks the broker, and if
//! the topic is gone the source goes to state `error` ("topic … does not
//! exist") and looks again every few seconds. A topic that turns up again
//! under that name is a new topic whose offsets start over: it is read
//! from its beginning, deliberately, and the status table says so.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, BinaryBuilder, Int32Array, Int64Array, TimestampNanosecondArray};
use arrow::datatypes::{DataType, TimeUnit};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use millrace_planner::source::Metadata;

use crate::config::{SourceConfig, StartupMode};
use crate::decode::{self, DecodeError, Decoder};
use crate::error::ConnectorError;
use crate::sink::{Arrival, BatchSink, SinkError};
use crate::status::{SourceStatus, State};

pub mod range;

/// The longest the thread waits between two looks at its stop flag.
const TICK: Duration = Duration::from_millis(100);
/// A batch closes when no message arrived for this long.
const QUIET: Duration = Duration::from_millis(10);
/// Timeout of one watermark request.
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(5);
/// Backoff bounds after a failure.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How often a source whose topic does not exist looks for it again: one
/// metadata request, cheap, and a topic created again is picked up soon.
const MISSING_TOPIC_RECHECK: Duration = Duration::from_secs(5);
/// The least time between two metadata requests that check, after the
/// consumer reported an unknown topic or partition, whether the topic is
/// gone (librdkafka may report it for every fetch).
const TOPIC_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long after a broker said the topic does not exist it is asked again,
/// to be believed.
const TOPIC_CONFIRM_DELAY: Duration = Duration::from_secs(1);
/// A session that consumed nothing for this long asks the broker whether
/// its topic still exists. librdkafka does not tell an assigned consumer
/// that its topic was deleted: it keeps fetching and waits in silence, so
/// without asking, the source would look "running" and up to date.
const QUIET_TOPIC_CHECK: Duration = Duration::from_secs(5);

/// A partition behind its end that consumed nothing for this long is shown
/// as stalled (and `FLUSH` stops waiting for it). Long enough that a slow
/// broker or a long batch interval does not count (see
/// [`Ingest::watch_stall`]).
const STALL_AFTER: Duration = Duration::from_secs(30);

/// A second Kafka client of a source for questions about its partitions
/// (`FLUSH` asks for their ends). Separate from the ingest consumer so a
/// question never waits behind that consumer's fetches, and never stalls
/// ingestion.
struct QueryClient {
    config: SourceConfig,
    status: Arc<SourceStatus>,
    client: std::sync::Mutex<Option<SourceConsumer>>,
}

impl QueryClient {
    /// The partitions' current high watermarks, read from the broker.
    fn high_watermarks(&self) -> Result<BTreeMap<i32, i64>, ConnectorError> {
        let mut guard = self.client.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some(consumer(&self.config)?);
        }
        let Some(c) = guard.as_ref() else {
            return Err(ConnectorError::Internal("no Kafka client"));
        };
        let result = (|| {
            let parts = partitions(c, &self.config, WATERMARK_TIMEOUT)?;
            let mut out = BTreeMap::new();
            for p in parts {
                let (_, high) = c
                    .fetch_watermarks(&self.config.topic, p, WATERMARK_TIMEOUT)
                    .map_err(|source| ConnectorError::PartitionEnd {
                        partition: p,
                        source,
                    })?;
                // Read from the broker just now: newer than what the
                // consumer last saw, which may be from before a broker
                // restart.
                self.status.update(p, |s| s.high_watermark = high);
                out.insert(p, high);
            }
            Ok(out)
        })();
        if result.is_err() {
            // Start afresh next time.
            *guard = None;
        }
        result
    }
}

/// A running source: its thread, its status and how to reach it.
pub struct SourceRunner {
    /// The live status (shared with the system table).
    pub status: Arc<SourceStatus>,
    stop: Arc<AtomicBool>,
    query: Arc<QueryClient>,
    thread: Option<JoinHandle<()>>,
}

impl SourceRunner {
    /// Starts the ingest thread of source `name`, pushing its batches to
    /// `sink` and resuming from the offsets the sink committed.
    pub fn start(
        name: String,
        sink: Box<dyn BatchSink>,
        config: SourceConfig,
        status: Arc<SourceStatus>,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let query = Arc::new(QueryClient {
            config: config.clone(),
            status: status.clone(),
            client: std::sync::Mutex::new(None),
        });
        let ingest = Ingest {
            sink,
            name,
            config,
            status: status.clone(),
            stop: stop.clone(),
            dead_letters: std::cell::RefCell::new(None),
            topic_missing: std::cell::Cell::new(false),
        };
        let thread = std::thread::Builder::new()
            .name(format!("source-{}", ingest.name))
            .spawn(move || ingest.run())?;
        Ok(Self {
            status,
            stop,
            query,
            thread: Some(thread),
        })
    }

    /// Asks the thread to stop; it does within [`TICK`] or after the batch
    /// it is committing.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// A handle to ask the running source questions without holding it.
    pub fn probe(&self) -> Probe {
        Probe {
            status: self.status.clone(),
            query: self.query.clone(),
        }
    }

    /// Stops the thread and waits for it to end.
    pub fn join(mut self) {
        self.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Asks a running source's thread for what only it can read.
#[derive(Clone)]
pub struct Probe {
    /// The source's live status.
    pub status: Arc<SourceStatus>,
    query: Arc<QueryClient>,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe")
            .field("source", &self.status.name)
            .finish_non_exhaustive()
    }
}

impl Probe {
    /// The partitions' current high watermarks, read from the broker.
    pub async fn high_watermarks(&self) -> Result<BTreeMap<i32, i64>, ConnectorError> {
        let query = self.query.clone();
        tokio::task::spawn_blocking(move || query.high_watermarks())
            .await
            .map_err(ConnectorError::QueryAborted)?
    }
}

impl Drop for SourceRunner {
    fn drop(&mut self) {
        self.stop();
        // Not joined: the thread may be waiting inside the sink (the engine's
        // write lock),
        // which whoever drops the runner may hold. It exits on its own.
        drop(self.thread.take());
    }
}

/// Routes librdkafka's own reports into Millrace's log: a source's
/// connection trouble is expected and retried, so it is a warning (and is
/// shown in the status table), and reaching a partition's end is no error.
pub struct SourceContext {
    source: String,
}

impl ClientContext for SourceContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::warn!(source = %self.source, "librdkafka {facility}: {message}")
            }
            RDKafkaLogLevel::Warning | RDKafkaLogLevel::Notice => {
                tracing::info!(source = %self.source, "librdkafka {facility}: {message}")
            }
            _ => tracing::debug!(source = %self.source, "librdkafka {facility}: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if !matches!(error, KafkaError::PartitionEOF(_)) {
            tracing::warn!(source = %self.source, "Kafka client: {error}: {reason}");
        }
    }
}

impl ConsumerContext for SourceContext {}

/// A consumer of one source.
pub type SourceConsumer = BaseConsumer<SourceContext>;

/// Creates a consumer for `config` that never commits to Kafka.
pub fn consumer(config: &SourceConfig) -> Result<SourceConsumer, ConnectorError> {
    let mut cc = ClientConfig::new();
    // Bounded prefetch: at most 16 MiB queued per partition.
    cc.set("queued.max.messages.kbytes", "16384");
    cc.set("socket.connection.setup.timeout.ms", "10000");
    for (k, v) in &config.kafka {
        cc.set(k, v);
    }
    // Millrace's checkpoint is the truth: Kafka's group offsets are not used.
    cc.set("enable.auto.commit", "false");
    cc.set("enable.auto.offset.store", "false");
    cc.set("enable.partition.eof", "true");
    cc.set("allow.auto.create.topics", "false");
    let source = config.kafka.get("group.id").cloned().unwrap_or_default();
    cc.create_with_context(SourceContext { source })
        .map_err(ConnectorError::ClientSettings)
}

/// The partitions of `config.topic`, or why they cannot be listed
/// ([`ConnectorError::UnknownTopic`] when the broker says there is no such
/// topic).
pub fn partitions(
    c: &SourceConsumer,
    config: &SourceConfig,
    timeout: Duration,
) -> Result<Vec<i32>, ConnectorError> {
    let unknown = || ConnectorError::UnknownTopic {
        topic: config.topic.clone(),
    };
    let md = c
        .fetch_metadata(Some(&config.topic), timeout)
        .map_err(|source| ConnectorError::Unreachable {
            brokers: config.brokers().to_string(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            source,
        })?;
    let topic = md
        .topics()
        .iter()
        .find(|t| t.name() == config.topic)
        .ok_or_else(unknown)?;
    if let Some(err) = topic.error() {
        return Err(match rdkafka::types::RDKafkaErrorCode::from(err) {
            rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition => unknown(),
            code => ConnectorError::Topic {
                topic: config.topic.clone(),
                code,
            },
        });
    }
    let mut ps: Vec<i32> = topic.partitions().iter().map(|p| p.id()).collect();
    ps.sort_unstable();
    if ps.is_empty() {
        return Err(unknown());
    }
    Ok(ps)
}

/// Where a new source starts in each partition, as concrete offsets (so a
/// crash before its first commit restarts at the same place).
pub fn start_offsets(
    c: &SourceConsumer,
    config: &SourceConfig,
    partitions: &[i32],
    timeout: Duration,
) -> Result<Vec<(i32, i64)>, ConnectorError> {
    let mut out = Vec::new();
    let by_time = match config.startup {
        StartupMode::Timestamp(ms) => {
            let mut tpl = TopicPartitionList::new();
            for p in partitions {
                tpl.add_partition_offset(&config.topic, *p, Offset::Offset(ms))?;
            }
            Some(
                c.offsets_for_times(tpl, timeout)
                    .map_err(ConnectorError::OffsetsForTimes)?,
            )
        }
        _ => None,
    };
    for p in partitions {
        let (low, high) = c
            .fetch_watermarks(&config.topic, *p, timeout)
            .map_err(|source| ConnectorError::PartitionOffsets {
                partition: *p,
                source,
            })?;
        let offset = match config.startup {
            StartupMode::Earliest => low,
            StartupMode::Latest => high,
            StartupMode::Timestamp(_) => match by_time
                .as_ref()
                .and_then(|t| t.find_partition(&config.topic, *p))
                .map(|e| e.offset())
            {
                Some(Offset::Offset(o)) => o,
                // No message at or after that time yet.
                _ => high,
            },
        };
        out.push((*p, offset));
    }
    Ok(out)
}

/// A partition's high watermark as the consumer last saw it in a fetch
/// response: no request to the broker, so it can be read in the poll loop.
fn cached_high_watermark(c: &SourceConsumer, topic: &str, partition: i32) -> Option<i64> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid while `c` lives, `topic` is a
    // NUL-terminated string that outlives the call, and librdkafka only
    // writes the two integers it is given.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            c.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some(high)
}

struct Ingest {
    /// Where batches go.
    sink: Box<dyn BatchSink>,
    /// The source's name.
    name: String,
    config: SourceConfig,
    status: Arc<SourceStatus>,
    stop: Arc<AtomicBool>,
    /// The dead-letter producer, created at the first dead letter.
    dead_letters: std::cell::RefCell<Option<BaseProducer>>,
    /// The broker said the topic does not exist since the source last
    /// consumed: a topic found under that name later is a new one, read
    /// from its beginning (its offsets have nothing to do with the
    /// committed ones).
    topic_missing: std::cell::Cell<bool>,
}

/// When a session last had a sign that its topic exists.
struct TopicWatch {
    /// The last message consumed (or the session's start).
    last_message: Instant,
    /// The last metadata request that looked for the topic.
    last_check: Option<Instant>,
}

/// Why a step of a consuming session did not go on.
enum SessionError {
    /// The receiver is closed.
    Stopped,
    /// Something failed; start over after a backoff.
    Failed(ConnectorError),
}

impl From<ConnectorError> for SessionError {
    fn from(e: ConnectorError) -> Self {
        SessionError::Failed(e)
    }
}

/// Why a consuming session ended.
enum End {
    /// Stop was asked for, or the source was dropped.
    Stopped,
    /// Something failed; start over after a backoff.
    Failed(ConnectorError),
}

impl Ingest {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || !self.sink.is_open()
    }

    fn run(self) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let started = Instant::now();
            match self.session() {
                End::Stopped => break,
                End::Failed(e @ ConnectorError::UnknownTopic { .. }) => {
                    // Nothing to retry until someone creates the topic
                    // again: say so (once in the log), and look again now
                    // and then.
                    if !self.topic_missing.replace(true) {
                        tracing::warn!(source = %self.name, "source stopped consuming: {e}");
                    }
                    self.status.set_state(
                        State::Error,
                        Some(format!(
                            "{e}; checking again every {} s: a topic created under that name \
                             is read from its beginning",
                            MISSING_TOPIC_RECHECK.as_secs()
                        )),
                    );
                    backoff = BACKOFF_MIN;
                    if !self.wait(MISSING_TOPIC_RECHECK) {
                        break;
                    }
                }
                End::Failed(e) => {
                    tracing::warn!(source = %self.name, "source retrying in {backoff:?}: {e}");
                    self.status.set_state(State::Retrying, Some(e.to_string()));
                    if started.elapsed() > BACKOFF_MAX {
                        backoff = BACKOFF_MIN;
                    }
                    if !self.wait(backoff) {
                        break;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        self.status.set_state(State::Stopped, None);
        tracing::info!(source = %self.name, "source stopped");
    }

    /// Sleeps `d`, looking at the stop flag; false when stopped.
    fn wait(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if self.stopped() {
                return false;
            }
            std::thread::sleep(TICK.min(until - Instant::now()));
        }
        !self.stopped()
    }

    /// Consumes from the committed offsets until stopped or failed.
    fn session(&self) -> End {
        self.status.forget_positions();
        let committed: BTreeMap<i32, i64> = match self.sink.committed_offsets() {
            Ok(o) => o,
            Err(SinkError::Closed) => return End::Stopped,
            Err(e @ SinkError::Refused(_)) => return End::Failed(ConnectorError::Offsets(e)),
        };
        let c = match consumer(&self.config) {
            Ok(c) => c,
            Err(e) => return End::Failed(e),
        };
        let parts = match self.partitions_confirmed(&c) {
            Ok(p) => p,
            Err(e) => return End::Failed(e),
        };
        let resume = match self.resume_offsets(&c, &parts, &committed) {
            Ok(r) => r,
            Err(SessionError::Stopped) => return End::Stopped,
            Err(SessionError::Failed(e)) => return End::Failed(e),
        };
        let positioned: BTreeMap<i32, i64> = resume
            .iter()
            .filter_map(|(p, o)| match o {
                Offset::Offset(o) => Some((*p, *o)),
                _ => None,
            })
            .collect();
        // Checked against the topic: consumed through, for FLUSH.
        self.status.publish_caught_up(&positioned);
        let mut tpl = TopicPartitionList::new();
        for (p, offset) in resume {
            if let Err(e) = tpl.add_partition_offset(&self.config.topic, p, offset) {
                return End::Failed(e.into());
            }
        }
        if let Err(e) = c.assign(&tpl) {
            return End::Failed(ConnectorError::Assign(e));
        }
        self.status.set_state(State::Running, None);
        let mut hw_refreshed = Instant::now() - Duration::from_secs(60);
        let mut watch = TopicWatch {
            last_message: Instant::now(),
            last_check: None,
        };
        let mut batch = Batch::new(&self.config);
        loop {
            match self.fill(&c, &parts, &mut batch, &mut hw_refreshed, &mut watch) {
                Ok(true) => {}
                Ok(false) => return End::Stopped,
                Err(gone @ ConnectorError::UnknownTopic { .. }) => {
                    // What was read before the topic went is kept.
                    return match self.commit(&c, parts.as_slice(), &mut batch) {
                        Ok(true) => End::Failed(gone),
                        Ok(false) => End::Stopped,
                        Err(e) => End::Failed(e),
                    };
                }
                Err(e) => return End::Failed(e),
            }
            match self.commit(&c, parts.as_slice(), &mut batch) {
                Ok(true) => {}
                Ok(false) => return End::Stopped,
                Err(e) => return End::Failed(e),
            }
        }
    }

    /// Where each partition resumes: at its committed offset, unless the
    /// topic is not the one those offsets belong to. That is the case when
    /// the broker said the topic did not exist since the source last
    /// consumed it (deleted, then created again), or when a partition now
    /// ends before its committed offset (the same, while the server was
    /// down). A new topic is read from its beginning: the restart is
    /// committed at once (so a crash does not forget it), logged, and shown
    /// as each partition's last error in the status table.
    fn resume_offsets(
        &self,
        c: &SourceConsumer,
        parts: &[i32],
        committed: &BTreeMap<i32, i64>,
    ) -> Result<Vec<(i32, Offset)>, SessionError> {
        let mut resume = Vec::new();
        let mut restarted = BTreeMap::new();
        let mut notes = BTreeMap::new();
        let was_missing = self.topic_missing.get();
        for p in parts {
            // A partition added after the source was created starts at its beginning.
            let Some(&at) = committed.get(p) else {
                resume.push((*p, Offset::Beginning));
                continue;
            };
            let (low, high) = c
                .fetch_watermarks(&self.config.topic, *p, WATERMARK_TIMEOUT)
                .map_err(|source| ConnectorError::PartitionOffsets {
                    partition: *p,
                    source,
                })?;
            let topic = &self.config.topic;
            let note = if was_missing {
                format!(
                    "Kafka topic \"{topic}\" was deleted and created again: partition {p} \
                     was read up to offset {at} of the old topic, the new one is read from \
                     offset {low}"
                )
            } else if at > high {
                format!(
                    "Kafka topic \"{topic}\" partition {p} ends at offset {high}, before offset \
                     {at} this source had read: taken as a topic created again under the old \
                     name, read from offset {low}"
                )
            } else {
                resume.push((*p, Offset::Offset(at)));
                continue;
            };
            notes.insert(*p, note);
            restarted.insert(*p, low);
            resume.push((*p, Offset::Offset(low)));
        }
        if !restarted.is_empty() {
            let arrival = Arrival {
                row_partitions: Vec::new(),
                row_offsets: Vec::new(),
                partitions: parts.to_vec(),
                idle: BTreeSet::new(),
            };
            match self.sink.push(None, &restarted, &arrival) {
                Ok(()) => {}
                Err(SinkError::Closed) => return Err(SessionError::Stopped),
                Err(e @ SinkError::Refused(_)) => {
                    return Err(SessionError::Failed(ConnectorError::Refused(e)))
                }
            }
            for note in notes.values() {
                tracing::warn!(source = %self.name, "{note}");
            }
            self.status.restart_partitions(&restarted, &notes);
        }
        self.topic_missing.set(false);
        Ok(resume)
    }

    /// The topic's partitions; that it does not exist only when the broker
    /// says so twice, [`TOPIC_CONFIRM_DELAY`] apart. A topic found missing
    /// is read from its beginning if it turns up again, so one wrong answer
    /// (a broker whose metadata is not up to date yet) must not count:
    /// it would make the source read the topic twice.
    fn partitions_confirmed(&self, c: &SourceConsumer) -> Result<Vec<i32>, ConnectorError> {
        match partitions(c, &self.config, WATERMARK_TIMEOUT) {
            Err(first @ ConnectorError::UnknownTopic { .. }) => {
                if !self.wait(TOPIC_CONFIRM_DELAY) {
                    return Err(first);
                }
                partitions(c, &self.config, WATERMARK_TIMEOUT)
            }
            other => other,
        }
    }

    /// Asks the broker whether the topic still exists, when the consumer
    /// reported an unknown topic or partition (`error`) or has consumed
    /// nothing for [`QUIET_TOPIC_CHECK`], and the last look is long enough
    /// ago: the error to end the session with if the topic is gone.
    fn check_topic(
        &self,
        c: &SourceConsumer,
        error: Option<&KafkaError>,
        watch: &mut TopicWatch,
    ) -> Result<(), ConnectorError> {
        use rdkafka::types::RDKafkaErrorCode as Code;
        let since_check = watch.last_check.map(|at| at.elapsed());
        let due = match error.and_then(KafkaError::rdkafka_error_code) {
            Some(Code::UnknownTopicOrPartition | Code::UnknownTopic | Code::UnknownPartition) => {
                since_check.is_none_or(|d| d >= TOPIC_CHECK_INTERVAL)
            }
            Some(_) => false,
            None => {
                watch.last_message.elapsed() >= QUIET_TOPIC_CHECK
                    && since_check.is_none_or(|d| d >= QUIET_TOPIC_CHECK)
            }
        };
        if !due {
            return Ok(());
        }
        watch.last_check = Some(Instant::now());
        match self.partitions_confirmed(c) {
            Err(gone @ ConnectorError::UnknownTopic { .. }) => Err(gone),
            // Still there (or the broker did not answer: librdkafka retries,
            // and says so if it cannot reach it).
            _ => Ok(()),
        }
    }

    /// Polls until the batch should be committed. False when stopped.
    fn fill(
        &self,
        c: &SourceConsumer,
        parts: &[i32],
        batch: &mut Batch,
        hw_refreshed: &mut Instant,
        watch: &mut TopicWatch,
    ) -> Result<bool, ConnectorError> {
        let mut opened: Option<Instant> = None;
        loop {
            if self.stopped() {
                return Ok(false);
            }
            self.check_topic(c, None, watch)?;
            if hw_refreshed.elapsed() >= Duration::from_secs(1) {
                *hw_refreshed = Instant::now();
                let now = Instant::now();
                for p in parts {
                    let high = cached_high_watermark(c, &self.config.topic, *p);
                    self.status.update(*p, |s| {
                        if let Some(h) = high {
                            s.high_watermark = s.high_watermark.max(h);
                        }
                        s.tick_rate(now);
                    });
                    self.watch_stall(*p, batch.next.contains_key(p), now);
                }
            }
            let timeout = match opened {
                None => TICK,
                Some(at) => {
                    let left = self.config.epoch_interval.saturating_sub(at.elapsed());
                    if left.is_zero() {
                        return Ok(true);
                    }
                    QUIET.min(left)
                }
            };
            match c.poll(timeout) {
                None => {
                    if opened.is_some() || !batch.eof.is_empty() {
                        return Ok(true);
                    }
                    if self.idle_changed(batch) {
                        return Ok(true);
                    }
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    batch.eof.insert(p);
                    batch.at_end_since.entry(p).or_insert_with(Instant::now);
                }
                Some(Err(e)) => {
                    self.check_topic(c, Some(&e), watch)?;
                    // librdkafka retries by itself; show what it reports.
                    self.status.set_state(State::Retrying, Some(e.to_string()));
                }
                Some(Ok(m)) => {
                    watch.last_message = Instant::now();
                    batch.at_end_since.remove(&m.partition());
                    if opened.is_none() {
                        opened = Some(Instant::now());
                        self.status.set_state(State::Running, None);
                    }
                    batch.add(&self.config, &m);
                    if batch.decoder.rows() >= self.config.max_batch_rows {
                        return Ok(true);
                    }
                }
            }
        }
    }

    /// Shows partition `p` as stalled when it is behind its end and has
    /// consumed nothing for [`STALL_AFTER`] (or three batch intervals, if
    /// longer) while the source runs; `moving` says it consumed something
    /// into the open batch. A stalled partition otherwise looks `running`
    /// with no error, which is what librdkafka shows when it cannot fetch
    /// a partition's next message (for example one larger than the fetch
    /// limits): it retries in silence.
    fn watch_stall(&self, p: i32, moving: bool, now: Instant) {
        let after = STALL_AFTER.max(self.config.epoch_interval * 3);
        let running = self.status.state().0 == State::Running;
        let why = self.status.update(p, |s| {
            let behind = s.high_watermark > s.committed;
            let since = match s.progressed_at {
                Some(at) if behind && !moving && running => at,
                _ => {
                    s.progressed_at = Some(now);
                    return None;
                }
            };
            let still = now.duration_since(since);
            (still >= after).then(|| {
                format!(
                    "partition {p} has consumed nothing for {} s at offset {} while it ends at \
                     offset {}: the broker returns no messages for it from that offset, and the \
                     Kafka client retries without an error. A message larger than the broker \
                     will return in one fetch (properties.fetch.message.max.bytes, \
                     properties.fetch.max.bytes) or a broker that cannot read the batch at that \
                     offset stops a partition like this",
                    still.as_secs(),
                    s.committed,
                    s.high_watermark
                )
            })
        });
        self.status.set_stalled(p, why);
    }

    /// Recomputes which partitions are idle (event-time sources only);
    /// true when that changed since the last commit.
    fn idle_changed(&self, batch: &mut Batch) -> bool {
        let (Some(_), Some(timeout)) = (&self.config.event_time, self.config.idle_timeout) else {
            return false;
        };
        let idle: BTreeSet<i32> = batch
            .at_end_since
            .iter()
            .filter(|(_, at)| at.elapsed() >= timeout)
            .map(|(p, _)| *p)
            .collect();
        let changed = idle != batch.idle;
        batch.idle = idle;
        changed
    }

    /// Copies the batch's undecodable messages to the dead-letter topic and
    /// waits until the broker has them, before the batch's offsets are
    /// committed: a dead letter is never lost (after a crash it may be
    /// sent twice).
    fn send_dead_letters(&self, batch: &mut Batch) -> Result<(), ConnectorError> {
        let letters = std::mem::take(&mut batch.dead_letters);
        let Some(topic) = &self.config.dead_letter_topic else {
            return Ok(());
        };
        if letters.is_empty() {
            return Ok(());
        }
        let mut slot = self.dead_letters.borrow_mut();
        if slot.is_none() {
            let mut cc = ClientConfig::new();
            for (k, v) in &self.config.kafka {
                if k != "group.id" && !k.starts_with("enable.") && !k.starts_with("auto.") {
                    cc.set(k, v);
                }
            }
            cc.set("message.max.bytes", "104857600");
            *slot = Some(cc.create().map_err(ConnectorError::DeadLetterProducer)?);
        }
        let Some(producer) = slot.as_ref() else {
            return Err(ConnectorError::Internal("no dead-letter producer"));
        };
        for l in &letters {
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "millrace.source",
                    value: Some(self.name.as_str()),
                })
                .insert(Header {
                    key: "millrace.error",
                    value: Some(l.error.as_str()),
                })
                .insert(Header {
                    key: "millrace.topic",
                    value: Some(self.config.topic.as_str()),
                })
                .insert(Header {
                    key: "millrace.partition",
                    value: Some(&l.partition.to_string()),
                })
                .insert(Header {
                    key: "millrace.offset",
                    value: Some(&l.offset.to_string()),
                });
            let mut record = BaseRecord::<[u8], [u8]>::to(topic)
                .payload(&l.payload)
                .headers(headers);
            if let Some(k) = &l.key {
                record = record.key(k);
            }
            producer
                .send(record)
                .map_err(|(source, _)| ConnectorError::DeadLetterSend {
                    topic: topic.clone(),
                    source,
                })?;
        }
        producer
            .flush(WATERMARK_TIMEOUT)
            .map_err(|source| ConnectorError::DeadLetterSend {
                topic: topic.clone(),
                source,
            })
    }

    /// Commits the batch through the sink. False when the sink is closed.
    fn commit(
        &self,
        c: &SourceConsumer,
        parts: &[i32],
        batch: &mut Batch,
    ) -> Result<bool, ConnectorError> {
        if !self.sink.is_open() {
            return Ok(false);
        }
        let progress = std::mem::take(&mut batch.next);
        if let Err(e) = self.send_dead_letters(batch) {
            batch.discard();
            return Err(e);
        }
        self.idle_changed(batch);
        if !progress.is_empty() || !batch.idle.is_empty() {
            let (rows, row_partitions, row_offsets) = batch.finish(&self.config)?;
            let arrival = Arrival {
                row_partitions,
                row_offsets,
                partitions: parts.to_vec(),
                idle: batch.idle.clone(),
            };
            match self.sink.push(rows, &progress, &arrival) {
                Ok(()) => {}
                Err(SinkError::Closed) => return Ok(false),
                Err(e @ SinkError::Refused(_)) => {
                    batch.discard();
                    return Err(ConnectorError::Refused(e));
                }
            }
        }
        let now = Instant::now();
        for (p, counts) in std::mem::take(&mut batch.counts) {
            self.status.update(p, |s| {
                s.messages += counts.messages;
                s.bytes += counts.bytes;
                s.decode_errors += counts.errors;
                if counts.last_error.is_some() {
                    s.last_error = counts.last_error;
                }
                s.tick_rate(now);
            });
        }
        for (p, o) in &progress {
            self.status.update(*p, |s| {
                s.committed = *o;
                s.progressed_at = Some(now);
            });
        }
        for p in parts {
            let idle = batch.idle.contains(p);
            self.status.update(*p, |s| s.idle = idle);
        }
        // A partition at its end is consumed through its position, which
        // also covers transaction markers no message stands for.
        let mut caught_up = progress;
        let eof = std::mem::take(&mut batch.eof);
        if !eof.is_empty() {
            if let Ok(positions) = c.position() {
                for e in positions.elements_for_topic(&self.config.topic) {
                    if let (true, Offset::Offset(o)) = (eof.contains(&e.partition()), e.offset()) {
                        let entry = caught_up.entry(e.partition()).or_insert(o);
                        *entry = (*entry).max(o);
                    }
                }
            }
        }
        self.status.publish_caught_up(&caught_up);
        Ok(true)
    }
}

#[derive(Default)]
struct Counts {
    messages: u64,
    bytes: u64,
    errors: u64,
    last_error: Option<String>,
}

/// A finished batch: its rows (if any), and each row's partition and offset.
type Finished = (Option<arrow::record_batch::RecordBatch>, Vec<i32>, Vec<i64>);

/// Messages consumed since the last commit.
struct Batch {
    decoder: Decoder,
    partition: Vec<i32>,
    offset: Vec<i64>,
    timestamp: Vec<Option<i64>>,
    key: Vec<Option<Vec<u8>>>,
    /// The next offset of every partition a message came from.
    next: BTreeMap<i32, i64>,
    /// Partitions that reached their end since the last commit.
    eof: BTreeSet<i32>,
    counts: BTreeMap<i32, Counts>,
    /// Undecodable messages, for the dead-letter topic.
    dead_letters: Vec<DeadLetter>,
    /// Since when each partition has been at its end with no message
    /// after (event-time sources let partitions idle there go). Only a
    /// partition known to be at its end can be idle: one that is merely
    /// slow to deliver while catching up on a backlog still holds the
    /// watermark back, or its messages would arrive late and be dropped.
    at_end_since: BTreeMap<i32, Instant>,
    /// The partitions idle at the last look.
    idle: BTreeSet<i32>,
}

/// A message that did not decode, and why.
struct DeadLetter {
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    error: String,
    partition: i32,
    offset: i64,
}

impl Batch {
    fn new(config: &SourceConfig) -> Self {
        Self {
            decoder: Decoder::new(
                config.encoding.clone(),
                config.payload_fields(),
                config.json_columns.clone(),
            ),
            partition: Vec::new(),
            offset: Vec::new(),
            timestamp: Vec::new(),
            key: Vec::new(),
            next: BTreeMap::new(),
            eof: BTreeSet::new(),
            counts: BTreeMap::new(),
            dead_letters: Vec::new(),
            at_end_since: BTreeMap::new(),
            idle: BTreeSet::new(),
        }
    }

    fn add(&mut self, config: &SourceConfig, m: &rdkafka::message::BorrowedMessage<'_>) {
        let p = m.partition();
        self.eof.remove(&p);
        self.next.insert(p, m.offset() + 1);
        let payload = m.payload().unwrap_or(&[]);
        let counts = self.counts.entry(p).or_default();
        counts.messages += 1;
        counts.bytes += payload.len() as u64;
        let result = if payload.len() > config.max_message_bytes {
            Err(DecodeError::TooLarge {
                size: payload.len(),
                limit: config.max_message_bytes,
            })
        } else {
            self.decoder.push(payload)
        };
        match result {
            Ok(()) => {
                self.partition.push(p);
                self.offset.push(m.offset());
                self.timestamp.push(
                    m.timestamp()
                        .to_millis()
                        .map(|ms| ms.saturating_mul(1_000_000)),
                );
                self.key.push(m.key().map(<[u8]>::to_vec));
            }
            Err(e) => {
                counts.errors += 1;
                if config.dead_letter_topic.is_some() {
                    self.dead_letters.push(DeadLetter {
                        key: m.key().map(<[u8]>::to_vec),
                        payload: payload.to_vec(),
                        error: e.to_string(),
                        partition: p,
                        offset: m.offset(),
                    });
                }
                counts.last_error = Some(format!("offset {}: {e}", m.offset()));
            }
        }
    }

    /// The decoded rows, if any, as a batch of the source's schema, and
    /// the partition and offset of each row.
    fn finish(&mut self, config: &SourceConfig) -> Result<Finished, ConnectorError> {
        if self.decoder.rows() == 0 {
            self.clear_rows();
            return Ok((None, Vec::new(), Vec::new()));
        }
        let partitions = self.partition.clone();
        let offsets = self.offset.clone();
        let payload = self.decoder.finish()?;
        let mut metadata: Vec<ArrayRef> = Vec::new();
        for (i, m) in config.metadata.iter().enumerate() {
            let field = config.schema.field(payload.len() + i);
            let array: ArrayRef = match m {
                Metadata::Partition => {
                    Arc::new(Int32Array::from(std::mem::take(&mut self.partition)))
                }
                Metadata::Offset => Arc::new(Int64Array::from(std::mem::take(&mut self.offset))),
                Metadata::Timestamp => {
                    let a = TimestampNanosecondArray::from(self.timestamp.clone());
                    let a: ArrayRef = Arc::new(match field.data_type() {
                        DataType::Timestamp(TimeUnit::Nanosecond, tz) => {
                            a.with_timezone_opt(tz.clone())
                        }
                        _ => a,
                    });
                    arrow::compute::cast(&a, field.data_type())?
                }
                Metadata::Key => {
                    let mut b = BinaryBuilder::new();
                    for k in &self.key {
                        b.append_option(k.as_deref());
                    }
                    Arc::new(b.finish())
                }
            };
            metadata.push(array);
        }
        self.clear_rows();
        Ok((
            Some(decode::batch(&config.schema, payload, metadata)?),
            partitions,
            offsets,
        ))
    }

    /// Forgets the decoded rows (kept: offsets and counts until committed).
    fn clear_rows(&mut self) {
        let _ = self.decoder.finish();
        self.partition.clear();
        self.offset.clear();
        self.timestamp.clear();
        self.key.clear();
    }

    /// Forgets everything since the last commit: it will be consumed again.
    fn discard(&mut self) {
        self.clear_rows();
        self.next.clear();
        self.eof.clear();
        self.counts.clear();
        self.dead_letters.clear();
    }
}
