//! A source's settings, as the connector needs them: what to read, from
//! where, how it is encoded, and how batches are cut.

use std::collections::BTreeMap;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use millrace_planner::event_time::EventTime;
use millrace_planner::source::Metadata;

use crate::decode::Encoding;

/// Where a new source starts reading (`scan.startup.mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartupMode {
    /// The oldest message still in each partition.
    Earliest,
    /// Only messages produced after the source is created.
    Latest,
    /// The first message at or after this time (epoch milliseconds).
    Timestamp(i64),
}

/// A source's settings, validated from its `CREATE SOURCE` statement.
#[derive(Clone, Debug)]
pub struct SourceConfig {
    /// The topic read.
    pub topic: String,
    /// librdkafka settings: `properties.*` with the prefix removed, and
    /// `bootstrap.servers`.
    pub kafka: BTreeMap<String, String>,
    /// Where a new source starts.
    pub startup: StartupMode,
    /// How payloads are encoded.
    pub encoding: Encoding,
    /// The relation's columns: payload columns, then metadata columns.
    pub schema: SchemaRef,
    /// The metadata columns, in order, after the payload columns.
    pub metadata: Vec<Metadata>,
    /// Which payload columns are JSONB (they hold any JSON value as text).
    pub json_columns: Vec<bool>,
    /// How long CREATE SOURCE waits for the broker to answer.
    pub connect_timeout: Duration,
    /// Messages larger than this are skipped and counted.
    pub max_message_bytes: usize,
    /// The epoch: the longest a consumed message waits before its batch is
    /// committed into the views and visible to queries. Short, because it
    /// is the freshness users see; checkpoints are the server's business.
    pub epoch_interval: Duration,
    /// The most rows in one committed batch (bounds memory).
    pub max_batch_rows: usize,
    /// Where messages that do not decode are copied, if anywhere.
    pub dead_letter_topic: Option<String>,
    /// The declared event time (`WATERMARK FOR`), if any.
    pub event_time: Option<EventTime>,
    /// A partition without messages for this long no longer holds the
    /// source's watermark back; `None` never lets it go.
    pub idle_timeout: Option<Duration>,
}

impl SourceConfig {
    /// The payload columns (the ones decoded from messages).
    pub fn payload_fields(&self) -> Vec<arrow::datatypes::FieldRef> {
        let n = self.schema.fields().len() - self.metadata.len();
        self.schema.fields().iter().take(n).cloned().collect()
    }

    /// The bootstrap servers, for messages.
    pub fn brokers(&self) -> &str {
        self.kafka
            .get("bootstrap.servers")
            .map(String::as_str)
            .unwrap_or("")
    }
}
