//! The rows of a source that keeps none: read back from its topic.
//!
//! `CREATE SOURCE` stores no rows (as RisingWave's sources do): every
//! epoch logs only the offsets it consumed, the event-time progress it
//! reached and the rows it turned away as late. Whatever needs the rows
//! again reads them from Kafka:
//! - a view created later backfills from the source's start position up to
//!   where the source is now ([`SourceRows::consumed`]);
//! - an ad-hoc `SELECT` on the source reads the same span, so it sees what
//!   the views see;
//! - recovery reads each epoch logged after the last checkpoint again
//!   ([`SourceRows::span`]) and pushes exactly those rows through the
//!   views, with the progress that epoch logged, so that windows close
//!   where they closed before the crash.
//!
//! Rows the source turned away as late when it first consumed them are
//! left out every time, so every reader agrees with the views.
//! `CREATE TABLE … WITH (connector = 'kafka')` keeps its rows instead, in
//! the table log, and never comes here.

use std::collections::BTreeMap;
use std::sync::Mutex;

use arrow::array::BooleanArray;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use millrace_connectors::config::SourceConfig;
use millrace_connectors::kafka::range::RangeReader;
use millrace_storage::{RelationId, SpanPart, Store};

use crate::error::{SqlError, SqlResult};

/// Reads one source's consumed rows back from its topic.
pub struct SourceRows {
    id: RelationId,
    schema: SchemaRef,
    config: SourceConfig,
    store: Store,
    /// One consumer, created at the first read and kept: reads are rare
    /// and each would otherwise connect again.
    reader: Mutex<Option<RangeReader>>,
}

impl std::fmt::Debug for SourceRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SourceRows({}, {})", self.id, self.config.topic)
    }
}

impl SourceRows {
    /// The rows of source `id` (columns `schema`), read with `config`.
    pub fn new(id: RelationId, schema: SchemaRef, config: SourceConfig, store: Store) -> Self {
        Self {
            id,
            schema,
            config,
            store,
            reader: Mutex::new(None),
        }
    }

    /// Every row the source has consumed and kept, from its start position
    /// to its committed position: what a view reading it from the start
    /// holds.
    pub fn consumed(&self) -> SqlResult<Vec<RecordBatch>> {
        let from = self.store.source_start(self.id)?;
        let to: BTreeMap<i32, i64> = self.store.source_offsets(self.id)?.into_iter().collect();
        self.read(&from, &to)
    }

    /// The rows kept of one logged epoch.
    pub fn span(&self, span: &[SpanPart]) -> SqlResult<Vec<RecordBatch>> {
        let mut from = BTreeMap::new();
        let mut to = BTreeMap::new();
        for &(p, start, end) in span {
            // A negative start: the partition was read from its beginning.
            if start >= 0 {
                from.insert(p, start);
            }
            to.insert(p, end);
        }
        self.read(&from, &to)
    }

    fn read(
        &self,
        from: &BTreeMap<i32, i64>,
        to: &BTreeMap<i32, i64>,
    ) -> SqlResult<Vec<RecordBatch>> {
        if to
            .iter()
            .all(|(p, end)| from.get(p).is_some_and(|s| s >= end))
        {
            return Ok(Vec::new());
        }
        let rows = {
            let mut slot = self.reader.lock().unwrap_or_else(|p| p.into_inner());
            let reader = match &mut *slot {
                Some(r) => r,
                None => slot.insert(RangeReader::new(&self.config)?),
            };
            crate::blocking(|| reader.read(from, to))?
        };
        let late = self.store.late_rows(self.id)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let batch = if late.is_empty() {
                r.batch
            } else {
                let keep: BooleanArray = r
                    .partitions
                    .iter()
                    .zip(&r.offsets)
                    .map(|(p, o)| Some(!late.contains(&(*p, *o))))
                    .collect();
                arrow::compute::filter_record_batch(&r.batch, &keep)?
            };
            if batch.num_rows() > 0 {
                out.push(crate::providers::conform(batch, &self.schema)?);
            }
        }
        Ok(out)
    }
}

/// What a failed read of a source's rows means to the user.
pub fn read_failed(source: &str, e: SqlError) -> SqlError {
    let message = format!(
        "cannot read the rows of source \"{source}\" from Kafka: {}",
        e.message
    );
    SqlError { message, ..e }.with_hint(
        "A source keeps no rows of its own: they are read from its topic, which must still \
         hold them. CREATE TABLE … WITH (connector = 'kafka', …) keeps a copy instead.",
    )
}
