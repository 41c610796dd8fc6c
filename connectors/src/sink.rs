//! The narrow interface through which a source hands its batches on.
//!
//! The ingest thread knows nothing of what receives its rows: it asks the
//! receiver where each partition resumes, pushes each decoded batch with
//! the partitions' next offsets, and stops once the receiver is closed. The
//! engine implements [`BatchSink`] and commits rows, view changes and
//! offsets atomically; the connector never names it.

use std::collections::{BTreeMap, BTreeSet};

use arrow::record_batch::RecordBatch;

/// Where the rows of one batch came from.
#[derive(Debug, Default)]
pub struct Arrival {
    /// The partition of every row (empty for a table: all rows count as
    /// partition 0).
    pub row_partitions: Vec<i32>,
    /// The offset of every row in its partition (empty for a table). A
    /// source that keeps no rows logs the offsets of the rows it turns away
    /// as late, so that rows read again from the topic are turned away the
    /// same way.
    pub row_offsets: Vec<i64>,
    /// Every partition the source reads.
    pub partitions: Vec<i32>,
    /// Partitions idle for longer than the idle timeout.
    pub idle: BTreeSet<i32>,
}

/// Why the receiver did not take a batch.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The receiver is gone (the server shuts down, or the source was
    /// dropped): the ingest thread stops.
    #[error("the source's receiver is closed")]
    Closed,
    /// The receiver could not apply the batch (or read its offsets); the
    /// thread retries from the committed offsets after a backoff. Holds the
    /// receiver's own error, whose type the connector does not know.
    #[error("{0}")]
    Refused(Box<dyn std::error::Error + Send + Sync>),
}

/// What receives a source's batches (the engine).
pub trait BatchSink: Send + Sync {
    /// False once the receiver is gone: the ingest thread stops.
    fn is_open(&self) -> bool;

    /// The next offset of every partition as committed by the receiver:
    /// where consumption resumes.
    fn committed_offsets(&self) -> Result<BTreeMap<i32, i64>, SinkError>;

    /// Applies `rows` (the decoded rows, if any) and records `next_offsets`
    /// as the partitions' positions, atomically; blocks until it is done.
    fn push(
        &self,
        rows: Option<RecordBatch>,
        next_offsets: &BTreeMap<i32, i64>,
        arrival: &Arrival,
    ) -> Result<(), SinkError>;
}
