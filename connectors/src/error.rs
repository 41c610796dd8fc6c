//! Connector errors, each saying what failed. A message that does not
//! decode is the producer's fault and never an error of the source: it is a
//! [`DecodeError`], counted, skipped and shown in the status table. What
//! stops a source's consuming session (and is retried) or refuses a
//! `CREATE SOURCE` or `FLUSH` is a [`ConnectorError`]; the engine gives each
//! variant its kind, never by reading the message.

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// Why talking to Kafka, or handing a batch on, failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The broker answered: there is no such topic.
    #[error("Kafka topic \"{topic}\" does not exist")]
    UnknownTopic {
        /// The topic asked for.
        topic: String,
    },
    /// The broker did not answer a metadata request in time.
    #[error("could not reach the Kafka broker at {brokers} within {timeout_ms} ms: {source}")]
    Unreachable {
        /// The bootstrap servers tried.
        brokers: String,
        /// How long the request waited.
        timeout_ms: u64,
        /// librdkafka's report.
        source: KafkaError,
    },
    /// The broker answered about the topic with an error.
    #[error("Kafka topic \"{topic}\": {code}")]
    Topic {
        /// The topic asked for.
        topic: String,
        /// The broker's error code.
        code: RDKafkaErrorCode,
    },
    /// librdkafka refused the client settings.
    #[error("invalid Kafka client settings: {0}")]
    ClientSettings(#[source] KafkaError),
    /// Reading a partition's end (for `FLUSH`) failed.
    #[error("reading the end of partition {partition}: {source}")]
    PartitionEnd {
        /// The partition.
        partition: i32,
        /// librdkafka's report.
        source: KafkaError,
    },
    /// Reading a partition's first and last offsets (where a new source
    /// starts) failed.
    #[error("reading the offsets of partition {partition}: {source}")]
    PartitionOffsets {
        /// The partition.
        partition: i32,
        /// librdkafka's report.
        source: KafkaError,
    },
    /// Looking up the offsets of `scan.startup.timestamp.millis` failed.
    #[error("looking up offsets for scan.startup.timestamp.millis: {0}")]
    OffsetsForTimes(#[source] KafkaError),
    /// Assigning the partitions to the consumer failed.
    #[error("assigning partitions: {0}")]
    Assign(#[source] KafkaError),
    /// Creating the producer of dead letters failed.
    #[error("creating the dead-letter producer: {0}")]
    DeadLetterProducer(#[source] KafkaError),
    /// The dead-letter topic did not take a message.
    #[error("sending to dead-letter topic \"{topic}\": {source}")]
    DeadLetterSend {
        /// The dead-letter topic.
        topic: String,
        /// librdkafka's report.
        source: KafkaError,
    },
    /// Another call into librdkafka failed.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// The question asked of a source's Kafka client did not finish (its
    /// task panicked or was cancelled).
    #[error("the watermark query did not finish: {0}")]
    QueryAborted(#[source] tokio::task::JoinError),
    /// The receiver could not tell where the partitions resume.
    #[error("{0}")]
    Offsets(#[source] crate::sink::SinkError),
    /// The receiver refused a batch.
    #[error("a batch could not be applied: {0}")]
    Refused(#[source] crate::sink::SinkError),
    /// The decoded rows could not be assembled into a batch.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// Arrow refused a metadata column.
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
    /// Rows a source consumed earlier are needed again (a new view's
    /// backfill, a `SELECT` on the source, recovery), and the topic no
    /// longer holds them.
    #[error(
        "Kafka topic \"{topic}\" partition {partition} no longer holds offset {wanted} (it now \
         starts at offset {low}): the rows this source read there were deleted by the topic's \
         retention"
    )]
    Retention {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The first offset needed.
        wanted: i64,
        /// Where the partition starts now.
        low: i64,
    },
    /// Reading rows again stopped short: the broker delivered nothing more.
    #[error(
        "reading Kafka topic \"{topic}\" partition {partition} again stalled at offset {at}: \
         no message for {seconds} s"
    )]
    ReadStalled {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The next offset wanted.
        at: i64,
        /// How long nothing came.
        seconds: u64,
    },
    /// A broken invariant inside Millrace (our bug).
    #[error("internal error: {0}")]
    Internal(&'static str),
}

/// Why one message (or, for [`DecodeError::UndecodableType`] and
/// [`DecodeError::Internal`], a batch of decoded messages) could not be
/// decoded. The text is what `last_error` and the dead letters' headers
/// show.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// The message has no payload.
    #[error("empty message")]
    Empty,
    /// The message is larger than `max.message.bytes`.
    #[error("a message of {size} bytes is larger than max.message.bytes ({limit})")]
    TooLarge {
        /// The payload's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The payload is not JSON (serde_json's explanation).
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// The payload is JSON, but not an object.
    #[error("the JSON message is not an object")]
    NotAnObject,
    /// The payload holds no CSV record.
    #[error("empty CSV record")]
    EmptyCsv,
    /// The payload is not CSV (the csv crate's explanation).
    #[error("invalid CSV: {0}")]
    InvalidCsv(String),
    /// The CSV record has another number of fields than the source columns.
    #[error("the CSV record has {found} fields, the source has {expected} columns")]
    CsvFieldCount {
        /// Fields in the record.
        found: usize,
        /// Payload columns of the source.
        expected: usize,
    },
    /// A field's value does not fit its column.
    #[error("field \"{field}\": {error}")]
    Field {
        /// The column's name.
        field: String,
        /// Why the value does not fit.
        error: ValueError,
    },
    /// A column of a type messages cannot hold (refused at `CREATE SOURCE`
    /// already).
    #[error("columns of type {0} cannot be decoded from messages yet")]
    UndecodableType(String),
    /// A broken invariant of the decoder (our bug).
    #[error("internal: {0}")]
    Internal(String),
}

/// Why one value does not fit its column.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ValueError {
    /// Text that does not parse as the column's type.
    #[error("invalid input syntax for type {type_name}: \"{text}\"")]
    InvalidText {
        /// The column's type, in PostgreSQL's spelling.
        type_name: String,
        /// The text.
        text: String,
    },
    /// An integer outside the column's range.
    #[error("value {value} is out of range for type {type_name}")]
    OutOfRange {
        /// The value.
        value: i64,
        /// The column's type, in PostgreSQL's spelling.
        type_name: String,
    },
    /// A number with more digits than the column's precision.
    #[error("numeric field overflow: {0}")]
    NumericOverflow(String),
    /// A JSON number for an integer column that is not an integer (or does
    /// not fit 64 bits).
    #[error("{0} is not an integer")]
    NotAnInteger(serde_json::Number),
    /// A JSON number for a floating-point column that is not a number.
    #[error("{0} is not a number")]
    NotANumber(serde_json::Number),
    /// A JSON number for a timestamp column that is not whole milliseconds.
    #[error("{0} is not a whole number of epoch milliseconds")]
    NotEpochMillis(serde_json::Number),
    /// Epoch milliseconds beyond what a timestamp holds.
    #[error("{0} ms is out of the timestamp range")]
    TimestampOutOfRange(serde_json::Number),
    /// A JSON value of a kind the column's type cannot be read from.
    #[error("{kind} cannot be read as {type_name}")]
    WrongKind {
        /// The JSON value's kind ("a boolean", "an array", …).
        kind: &'static str,
        /// The column's type, in PostgreSQL's spelling.
        type_name: String,
    },
    /// A column of a type messages cannot hold.
    #[error("columns of type {0} cannot be decoded from messages yet")]
    UndecodableType(String),
}
