//! The engine's system tables `millrace_catalog.source_partitions` (what
//! every source partition is doing, from the connectors' live
//! [`SourceStatus`]) and `millrace_catalog.watermarks` (how far event time
//! has come, which the engine publishes after every commit that moves it),
//! and `millrace_catalog.wal` (how many writes the write-ahead log took
//! and how many group commits and fsyncs that cost).
//! A `SELECT` on a system table copies the current figures.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use arrow::array::{
    ArrayRef, Float64Array, Int32Array, Int64Array, StringArray, TimestampNanosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, Session};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use millrace_connectors::kafka::Probe;
use millrace_connectors::status::{SourceStatus, State};

/// The name of the system schema.
pub const SYSTEM_SCHEMA: &str = "millrace_catalog";

/// The event-time figures of one relation (a row of `watermarks`).
#[derive(Clone, Debug)]
pub struct WatermarkStatus {
    /// Relation name.
    pub relation: String,
    /// "table", "source" or "materialized view".
    pub kind: &'static str,
    /// The event-time column (tables and sources).
    pub column: Option<String>,
    /// The watermark (ns since the epoch): for a view, the one its windows
    /// are closed up to.
    pub watermark: Option<i64>,
    /// Rows dropped for arriving behind the watermark: by the relation
    /// (stored, ever) or, for a view, turned away by its inputs and its own
    /// closed windows since the server started.
    pub late_rows: u64,
    /// Groups a view holds in state (open windows and other groups).
    pub state_groups: Option<u64>,
}

/// The write-ahead log's counts since the server started (the one row of
/// `wal`).
#[derive(Clone, Copy, Debug, Default)]
pub struct WalStatus {
    /// `INSERT`s and source batches made durable.
    pub writes: u64,
    /// Group commits they took: each one storage commit.
    pub group_commits: u64,
    /// Storage commits of every kind (group commits and DDL).
    pub commits: u64,
    /// fsyncs of those commits (row files and sled flushes).
    pub fsyncs: u64,
}

/// How long a read of `source_partitions` waits for the broker to say
/// where the partitions end; past it, `lag` is NULL rather than stale.
const FRESH_END_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// All running sources (their statuses and how to ask their broker), by
/// source name, and the latest event-time figures.
#[derive(Debug, Default)]
pub struct Registry {
    sources: Mutex<HashMap<String, Probe>>,
    watermarks: Mutex<Vec<WatermarkStatus>>,
    wal: Mutex<WalStatus>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Probe>> {
        self.sources.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds (or replaces) a running source.
    pub fn insert(&self, probe: Probe) {
        self.lock().insert(probe.status.name.clone(), probe);
    }

    /// Removes the status of source `name`.
    pub fn remove(&self, name: &str) {
        self.lock().remove(name);
    }

    /// The status of source `name`.
    pub fn get(&self, name: &str) -> Option<Arc<SourceStatus>> {
        self.lock().get(name).map(|p| p.status.clone())
    }

    /// Every running source, by name.
    fn all(&self) -> Vec<Probe> {
        let mut v: Vec<_> = self.lock().values().cloned().collect();
        v.sort_by(|a, b| a.status.name.cmp(&b.status.name));
        v
    }

    /// Every source with where its partitions end now, as the broker says
    /// (None where it did not say within [`FRESH_END_TIMEOUT`]). Asked at
    /// each read: the consumer's own view of the ends is only as new as its
    /// last fetch, which after a broker restart can be far behind.
    async fn fresh_ends(&self) -> Vec<(Arc<SourceStatus>, Option<BTreeMap<i32, i64>>)> {
        let mut asks = tokio::task::JoinSet::new();
        for (i, probe) in self.all().into_iter().enumerate() {
            asks.spawn(async move {
                let ends = tokio::time::timeout(FRESH_END_TIMEOUT, probe.high_watermarks())
                    .await
                    .ok()
                    .and_then(Result::ok);
                (i, probe.status, ends)
            });
        }
        let mut out = Vec::new();
        while let Some(done) = asks.join_next().await {
            if let Ok(row) = done {
                out.push(row);
            }
        }
        out.sort_by_key(|(i, _, _)| *i);
        out.into_iter().map(|(_, s, e)| (s, e)).collect()
    }

    /// Replaces the event-time figures.
    pub fn publish_watermarks(&self, rows: Vec<WatermarkStatus>) {
        *self.watermarks.lock().unwrap_or_else(|p| p.into_inner()) = rows;
    }

    /// Replaces the write-ahead log's counts.
    pub fn publish_wal(&self, status: WalStatus) {
        *self.wal.lock().unwrap_or_else(|p| p.into_inner()) = status;
    }

    /// The row of `wal`.
    fn wal_batch(&self) -> DfResult<RecordBatch> {
        let w = *self.wal.lock().unwrap_or_else(|p| p.into_inner());
        let columns: Vec<ArrayRef> = [w.writes, w.group_commits, w.commits, w.fsyncs]
            .into_iter()
            .map(|n| Arc::new(Int64Array::from(vec![n as i64])) as ArrayRef)
            .collect();
        Ok(RecordBatch::try_new(wal_schema(), columns)?)
    }

    /// The current rows of `watermarks`.
    fn watermarks_batch(&self) -> DfResult<RecordBatch> {
        let rows = self
            .watermarks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.relation.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.kind))),
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.column.clone()).collect::<Vec<_>>(),
            )),
            Arc::new(TimestampNanosecondArray::from(
                rows.iter().map(|r| r.watermark).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.late_rows as i64),
            )),
            Arc::new(Int64Array::from(
                rows.iter()
                    .map(|r| r.state_groups.map(|g| g as i64))
                    .collect::<Vec<_>>(),
            )),
        ];
        Ok(RecordBatch::try_new(watermarks_schema(), columns)?)
    }

    /// The current rows of `source_partitions`.
    async fn partitions_batch(&self) -> DfResult<RecordBatch> {
        let mut source = Vec::new();
        let mut partition = Vec::new();
        let mut committed = Vec::new();
        let mut high = Vec::new();
        let mut lag = Vec::new();
        let mut messages = Vec::new();
        let mut bytes = Vec::new();
        let mut rate = Vec::new();
        let mut errors = Vec::new();
        let mut last_error = Vec::new();
        let mut state = Vec::new();
        let mut max_event_time = Vec::new();
        let mut idle = Vec::new();
        for (s, ends) in self.fresh_ends().await {
            let (st, source_error) = s.state();
            for (p, f) in s.partitions() {
                source.push(s.name.clone());
                partition.push(p);
                committed.push(f.committed);
                let hw = (f.high_watermark >= 0).then_some(f.high_watermark);
                high.push(hw);
                let fresh = ends.as_ref().and_then(|e| e.get(&p));
                lag.push(fresh.map(|h| (h - f.committed).max(0)));
                messages.push(f.messages as i64);
                bytes.push(f.bytes as i64);
                rate.push(f.rate);
                errors.push(f.decode_errors as i64);
                let stalled = st == State::Running && f.stalled.is_some();
                last_error.push(match st {
                    State::Running if stalled => f.stalled.clone(),
                    State::Running => f.last_error.clone(),
                    _ => source_error.clone().or_else(|| f.last_error.clone()),
                });
                state.push(if stalled { "stalled" } else { st.as_str() });
                max_event_time.push(f.max_event_time);
                idle.push(f.idle);
            }
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(source)),
            Arc::new(Int32Array::from(partition)),
            Arc::new(Int64Array::from(committed)),
            Arc::new(Int64Array::from(high)),
            Arc::new(Int64Array::from(lag)),
            Arc::new(Int64Array::from(messages)),
            Arc::new(Int64Array::from(bytes)),
            Arc::new(Float64Array::from(rate)),
            Arc::new(Int64Array::from(errors)),
            Arc::new(StringArray::from(last_error)),
            Arc::new(StringArray::from(state)),
            Arc::new(TimestampNanosecondArray::from(max_event_time)),
            Arc::new(arrow::array::BooleanArray::from(idle)),
        ];
        Ok(RecordBatch::try_new(partitions_schema(), columns)?)
    }
}

fn partitions_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("source", DataType::Utf8, false),
        Field::new("partition", DataType::Int32, false),
        Field::new("committed_offset", DataType::Int64, false),
        Field::new("high_watermark", DataType::Int64, true),
        Field::new("lag", DataType::Int64, true),
        Field::new("messages", DataType::Int64, false),
        Field::new("bytes", DataType::Int64, false),
        Field::new("messages_per_second", DataType::Float64, false),
        Field::new("decode_errors", DataType::Int64, false),
        Field::new("last_error", DataType::Utf8, true),
        Field::new("state", DataType::Utf8, false),
        Field::new(
            "max_event_time",
            DataType::Timestamp(arrow::datatypes::TimeUnit::Nanosecond, None),
            true,
        ),
        Field::new("idle", DataType::Boolean, false),
    ]))
}

fn watermarks_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("relation", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("event_time_column", DataType::Utf8, true),
        Field::new(
            "watermark",
            DataType::Timestamp(arrow::datatypes::TimeUnit::Nanosecond, None),
            true,
        ),
        Field::new("late_rows", DataType::Int64, false),
        Field::new("state_groups", DataType::Int64, true),
    ]))
}

fn wal_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("writes", DataType::Int64, false),
        Field::new("group_commits", DataType::Int64, false),
        Field::new("commits", DataType::Int64, false),
        Field::new("fsyncs", DataType::Int64, false),
    ]))
}

/// The tables of the system schema.
const SYSTEM_TABLES: [&str; 3] = ["source_partitions", "watermarks", "wal"];

/// One table of `millrace_catalog`, read from the registry.
#[derive(Debug)]
struct SystemTable {
    registry: Arc<Registry>,
    name: &'static str,
}

impl SystemTable {
    async fn batch(&self) -> DfResult<RecordBatch> {
        match self.name {
            "watermarks" => self.registry.watermarks_batch(),
            "wal" => self.registry.wal_batch(),
            _ => self.registry.partitions_batch().await,
        }
    }
}

#[async_trait]
impl TableProvider for SystemTable {
    fn schema(&self) -> SchemaRef {
        match self.name {
            "watermarks" => watermarks_schema(),
            "wal" => wal_schema(),
            _ => partitions_schema(),
        }
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let batch = self.batch().await?;
        let exec: Arc<dyn ExecutionPlan> =
            MemorySourceConfig::try_new_exec(&[vec![batch]], self.schema(), projection.cloned())?;
        Ok(exec)
    }
}

/// The `millrace_catalog` schema as DataFusion sees it.
#[derive(Debug)]
pub struct SystemSchema(pub Arc<Registry>);

#[async_trait]
impl SchemaProvider for SystemSchema {
    fn table_names(&self) -> Vec<String> {
        SYSTEM_TABLES.iter().map(|t| t.to_string()).collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        Ok(SYSTEM_TABLES.iter().find(|t| **t == name).map(|t| {
            Arc::new(SystemTable {
                registry: self.0.clone(),
                name: t,
            }) as Arc<dyn TableProvider>
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        SYSTEM_TABLES.contains(&name)
    }
}
