//! When it runs and what survives a crash: the engine.
//!
//! The engine owns the catalog ([`catalog`]), DDL, the write path, the
//! checkpoints ([`checkpoint`]) and recovery, queries over the views'
//! published contents ([`providers`]) and the system tables
//! ([`system_tables`]). What to compute comes from `millrace-planner`, how
//! a change flows from `millrace-dataflow`, what sources read from
//! `millrace-connectors` (the engine is their batch sink, [`sources`]),
//! where it lives from `millrace-storage`. What a client's dialect adds
//! (PostgreSQL's functions, `information_schema`, client-query rewrites)
//! comes in through [`FrontEnd`], which the server implements.
//!
//! Writes (DDL, `INSERT`, consumed Kafka batches) are serialized by the
//! pipelines lock. An `INSERT` pushes its rows through every dependent
//! view's dataflow (in creation order, which is dependency order), writes
//! the rows to the write-ahead log in one flushed storage commit, and only
//! then lets the views' in-memory state and contents take the change: an
//! `INSERT` returns once its rows are durable, and the views are up to date
//! when it returns. Concurrent `INSERT`s and source batches share that
//! commit and its fsyncs ([`commit`]: group commit). Operator state and view contents reach the disk in
//! periodic checkpoints ([`checkpoint`]); recovery loads the last one and
//! replays the log after it. A `SELECT` builds its physical plan under the
//! read side of the same lock, so it sees every view at one consistent point.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use arrow::array::{ArrayRef, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::common::ParamValues;
use datafusion::execution::context::SessionContext;
use datafusion::execution::SessionState;
use datafusion::logical_expr::{DdlStatement, DmlStatement, Expr, LogicalPlan, WriteOp};
use datafusion::physical_plan::collect;
use datafusion::prelude::SessionConfig;
use datafusion::sql::parser::Statement as DfStatement;
use millrace_dataflow::contents::{Prepared, ViewContents};
use millrace_dataflow::delta::Delta;
use millrace_dataflow::window::WindowKind;
use millrace_dataflow::{Changes, Dataflow, EmitMode, ViewOptions, Watermarks};
use millrace_planner::event_time::EventTime;
use millrace_planner::naming;
use millrace_planner::source::WatermarkDef;
use millrace_planner::statement::{RelationKind, Statement};
use millrace_planner::window::{SessionFunction, WindowFunction};
use millrace_storage::{Commit, RelationId, Store, WalRecord};
use sqlparser::ast::{self, ObjectType, Statement as Sql};
use tokio::sync::RwLock;

use crate::catalog::{Catalog, CatalogRecord, CatalogSchema, Kind, Relation, SharedContents};
use crate::error::{ErrorKind, SqlError, SqlResult};
use crate::providers::snapshot_delta;
use event_time::{Arrival, Progress};
use millrace_connectors::config::SourceConfig;
use millrace_connectors::kafka::SourceRunner;
use sources::parse_source;
use system_tables::{Registry, SystemSchema};

pub mod catalog;
pub mod checkpoint;
mod commit;
pub mod error;
pub mod event_time;
pub mod providers;
mod source_options;
pub mod source_rows;
pub mod sources;
pub mod system_tables;
pub mod users;

pub use millrace_planner::naming::pg_type_name;

/// How long `FLUSH` waits for sources to catch up before giving up.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(120);

/// What a statement returns.
#[derive(Debug)]
pub enum Outcome {
    /// A result set.
    Rows {
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    },
    /// A command tag such as `CREATE TABLE` or `INSERT 0 3`.
    Command {
        tag: String,
        rows: Option<usize>,
        /// INSERT's tag carries an OID field (always 0).
        oid: bool,
    },
}

impl Outcome {
    fn command(tag: &str) -> Self {
        Outcome::Command {
            tag: tag.to_string(),
            rows: None,
            oid: false,
        }
    }
}

/// A running view: its dataflow, its contents, and what changed since the
/// last checkpoint.
struct ViewPipeline {
    name: String,
    id: RelationId,
    dataflow: Dataflow,
    /// The rows (shared with the scans of the view).
    contents: SharedContents,
    /// False until a checkpoint image holds the view.
    in_checkpoint: bool,
    /// Late rows its inputs turned away since the server started.
    late_rows: u64,
}

impl ViewPipeline {
    fn new(name: String, id: RelationId, dataflow: Dataflow) -> SqlResult<Self> {
        let contents = ViewContents::new(dataflow.schema().clone(), dataflow.append_only())?;
        Ok(Self {
            name,
            id,
            dataflow,
            contents: Arc::new(std::sync::RwLock::new(contents)),
            in_checkpoint: false,
            late_rows: 0,
        })
    }

    fn read_contents(&self) -> std::sync::RwLockReadGuard<'_, ViewContents> {
        // Changes are applied whole, so a panicking holder leaves it intact.
        self.contents.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_contents(&self) -> std::sync::RwLockWriteGuard<'_, ViewContents> {
        self.contents.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks the dataflow's output change `out` against the contents.
    fn prepare(&self, out: Option<Delta>) -> SqlResult<Prepared> {
        let out = out.unwrap_or_else(|| Delta::empty(self.dataflow.schema().clone()));
        self.read_contents()
            .prepare(&out)
            .map_err(|e| SqlError::internal(format!("materialized view \"{}\": {e}", self.name)))
    }

    /// The epoch's writes are durable: its output joins the contents, and
    /// its state changes the next checkpoint image.
    fn finish(&mut self, change: Prepared) {
        self.write_contents().apply(change);
        self.dataflow.committed();
    }
}

/// Each touched view's output change of one push, by view.
pub(crate) type ViewOutputs = Vec<(RelationId, Option<Delta>)>;

/// The dataflows of all views and the position of the write-ahead log.
#[derive(Default)]
struct Pipelines {
    views: BTreeMap<RelationId, ViewPipeline>,
    /// The sequence number of the next write-ahead log record.
    next_seq: u64,
    /// Event-time progress of the tables and sources that declare it.
    event_times: HashMap<RelationId, Progress>,
}

/// Views' checked output changes, waiting for the log write they belong to.
type PreparedChanges = Vec<(RelationId, Prepared)>;

impl Pipelines {
    /// Pushes `delta` (a change of relation `source`) through every view
    /// that depends on it. Returns each touched view's checked output
    /// change; the views' state changes stay pending until [`Self::finish`]
    /// or [`Self::rollback`]. On error nothing is pending.
    fn propagate(
        &mut self,
        source: &str,
        delta: Delta,
        watermarks: &Watermarks,
    ) -> SqlResult<PreparedChanges> {
        let outputs = self.push_through(source, delta, watermarks)?;
        let mut prepared: PreparedChanges = Vec::with_capacity(outputs.len());
        for (id, out) in &outputs {
            let checked = match self.views.get(id) {
                Some(pipe) => pipe.prepare(out.clone()),
                None => continue,
            };
            match checked {
                Ok(change) => prepared.push((*id, change)),
                Err(e) => {
                    let ids: Vec<RelationId> = outputs.iter().map(|(id, _)| *id).collect();
                    self.rollback(&ids);
                    return Err(e);
                }
            }
        }
        Ok(prepared)
    }

    /// Pushes `delta` (a change of relation `source`) through every view
    /// that depends on it, as [`Self::propagate`] does, without checking
    /// the outputs against the views' contents: returns every touched
    /// view with its output change. The state changes stay pending, on top
    /// of any already pending (a group commit pushes several writes before
    /// one commit). On error the views it touched are rolled back, which
    /// undoes *all* their pending changes.
    fn push_through(
        &mut self,
        source: &str,
        delta: Delta,
        watermarks: &Watermarks,
    ) -> SqlResult<ViewOutputs> {
        let mut changes = Changes::new();
        changes.insert(source.to_string(), delta);
        let mut ids: Vec<RelationId> = Vec::new();
        let mut outputs = Vec::new();
        // A panic in an operator must not leave earlier views with state
        // that no commit will match: catch it here and roll back.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for (id, pipe) in self.views.iter_mut() {
                if !pipe
                    .dataflow
                    .inputs()
                    .iter()
                    .any(|i| changes.contains_key(i))
                {
                    continue;
                }
                ids.push(*id);
                let out = pipe.dataflow.push(&changes, watermarks)?;
                if let Some(out) = out.as_ref().filter(|o| !o.is_empty()) {
                    changes.insert(pipe.name.clone(), out.clone());
                }
                outputs.push((*id, out));
            }
            Ok::<_, SqlError>(())
        }))
        .unwrap_or_else(|panic| Err(SqlError::internal(panic_message(&*panic))));
        match result {
            Ok(()) => Ok(outputs),
            Err(e) => {
                self.rollback(&ids);
                Err(e)
            }
        }
    }

    fn rollback(&mut self, ids: &[RelationId]) {
        for id in ids {
            if let Some(p) = self.views.get_mut(id) {
                p.dataflow.rollback();
            }
        }
    }

    /// The log write of `touched` is durable: the views take their changes.
    fn finish(&mut self, touched: PreparedChanges) {
        for (id, change) in touched {
            if let Some(p) = self.views.get_mut(&id) {
                p.finish(change);
            }
        }
    }

    /// Captures a checkpoint image: what changed since the last one, or
    /// with `full` everything. From now on nothing counts as changed.
    fn capture(&mut self, full: bool) -> SqlResult<checkpoint::Captured> {
        let mut views = Vec::with_capacity(self.views.len());
        for pipe in self.views.values_mut() {
            let mut state = Vec::new();
            pipe.dataflow
                .checkpoint(full, &mut |op, key, value| {
                    state.push(checkpoint::StateRecord(
                        op,
                        Cow::Owned(key.to_vec()),
                        value.map(Cow::Owned),
                    ))
                })
                .map_err(|e| {
                    SqlError::internal(format!("materialized view \"{}\": {e}", pipe.name))
                })?;
            let contents = pipe.write_contents().take_image(full);
            let empty = state.is_empty() && contents.rows.is_empty() && contents.batches.is_empty();
            if full || !empty || !pipe.in_checkpoint {
                views.push(checkpoint::CapturedView {
                    id: pipe.id,
                    state,
                    contents,
                });
            }
            pipe.in_checkpoint = true;
        }
        Ok(checkpoint::Captured {
            full,
            cut: self.next_seq,
            event_times: self
                .event_times
                .iter()
                .map(|(id, p)| (*id, p.clone()))
                .collect(),
            views,
        })
    }
}

/// The checkpoint files and what the next checkpoint must do.
struct CheckpointState {
    files: millrace_storage::Checkpoints,
    /// The cut of the last checkpoint written.
    last_cut: Option<u64>,
    /// A capture was lost (its write failed): the next image must be full.
    force_full: bool,
}

/// A full image replaces the chain once it holds this many files...
const MAX_CHAIN_FILES: usize = 64;
/// ... or once its increments outweigh its base and this many bytes.
const MIN_COMPACTION_BYTES: u64 = 16 * 1024 * 1024;

impl CheckpointState {
    /// A capture must hold everything: there is no chain to add to, or
    /// the last capture's changes were lost with its write.
    fn needs_full_capture(&self) -> bool {
        self.force_full || self.files.chain_len() == 0
    }

    /// The chain has grown enough to be merged into one file.
    fn wants_compaction(&self) -> bool {
        let increments = self.files.chain_bytes() - self.files.base_bytes();
        self.files.chain_len() >= MAX_CHAIN_FILES
            || increments > self.files.base_bytes().max(MIN_COMPACTION_BYTES)
    }
}

/// The database: catalog, storage, dataflows and the SQL engine.
pub struct Engine {
    store: Store,
    catalog: Arc<Catalog>,
    ctx: SessionContext,
    pipelines: RwLock<Pipelines>,
    /// Readers hold it while they plan a query (a scan takes the views'
    /// rows then); writers hold it only while view contents change: the
    /// last step of a write, and DDL. A query thus sees every view at one
    /// point and waits for a publish, never for a write's operators or its
    /// fsync.
    published: RwLock<()>,
    /// Set when a storage commit failed: sled may hold part of it, so what
    /// is in memory can no longer be trusted to match the disk. Writes and
    /// checkpoints are refused until a restart reloads everything from disk.
    poisoned: std::sync::atomic::AtomicBool,
    /// Writes waiting for a group commit, and its counts ([`commit`]).
    writers: commit::Writers,
    /// Users and their password verifiers.
    users: Arc<crate::users::Users>,
    /// What the client's dialect adds (catalog tables, functions, query
    /// rewrites).
    front_end: Arc<dyn FrontEnd>,
    /// Workers a view's `GROUP BY` is split over (see [`EngineOptions`]).
    workers: usize,
    /// The ingest threads of sources, by relation id.
    sources: std::sync::Mutex<HashMap<RelationId, SourceRunner>>,
    /// The sources' live status (the system tables read it).
    registry: Arc<Registry>,
    /// This engine, for the ingest threads it starts.
    me: Weak<Engine>,
    /// Checkpoint files; held while one checkpoint is written.
    checkpoints: tokio::sync::Mutex<CheckpointState>,
    /// Dropped with the engine, which ends the periodic checkpoints before
    /// the runtime shuts down (a timer polled during shutdown panics).
    _checkpoint_stop: tokio::sync::watch::Sender<()>,
}

/// Settings of an engine.
#[derive(Clone)]
pub struct EngineOptions {
    /// How often views are checkpointed (`None`: only on FLUSH, view
    /// creation and shutdown).
    pub checkpoint_interval: Option<Duration>,
    /// What the client's dialect adds to the engine's SQL.
    pub front_end: Arc<dyn FrontEnd>,
    /// Workers each view's `GROUP BY` is split over by key (1: none).
    pub workers: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            checkpoint_interval: Some(Duration::from_secs(1)),
            front_end: Arc::new(PlainSql),
            workers: 1,
        }
    }
}

impl std::fmt::Debug for EngineOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineOptions")
            .field("checkpoint_interval", &self.checkpoint_interval)
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

/// What a client dialect adds to the SQL the engine plans: catalog tables
/// beside the relations, functions, and rewrites of what clients send. The
/// server implements it for PostgreSQL (pg_catalog, `information_schema`,
/// psql's and drivers' catalog queries); the engine never names a dialect.
pub trait FrontEnd: Send + Sync {
    /// The catalog clients see, given the engine's `catalog` (which holds
    /// schema `public`) and every catalog of the session.
    fn wrap_catalog(
        &self,
        catalog: Arc<dyn datafusion::catalog::CatalogProvider>,
        all: Weak<dyn datafusion::catalog::CatalogProviderList>,
    ) -> Arc<dyn datafusion::catalog::CatalogProvider> {
        let _ = all;
        catalog
    }

    /// Registers the dialect's catalog tables and functions on `ctx`, after
    /// the engine's own.
    fn register(&self, ctx: &SessionContext, relations: Arc<Catalog>) -> SqlResult<()> {
        let _ = (ctx, relations);
        Ok(())
    }

    /// Rewrites a client's statement into what DataFusion plans.
    fn rewrite(&self, sql: Sql) -> SqlResult<Sql> {
        Ok(sql)
    }
}

/// No dialect: DataFusion's SQL as it is.
#[derive(Debug, Default)]
pub struct PlainSql;

impl FrontEnd for PlainSql {}

impl Engine {
    /// Opens the data directory `dir` with the default settings.
    pub async fn open(dir: &Path) -> SqlResult<Arc<Self>> {
        Self::open_with(dir, EngineOptions::default()).await
    }

    /// Opens the data directory `dir`, restoring every table and view, and
    /// starts the periodic checkpoints of `options`.
    pub async fn open_with(dir: &Path, options: EngineOptions) -> SqlResult<Arc<Self>> {
        let store = Store::open(dir)?;
        let checkpoint_files = millrace_storage::Checkpoints::open(dir)?;
        let catalog = Arc::new(Catalog::new(store.clone()));
        let config = SessionConfig::new()
            .with_default_catalog_and_schema("millrace", "public")
            // Served by the front end instead (the server's information_schema.rs),
            // with PostgreSQL's type names.
            .with_information_schema(false)
            .set_bool("datafusion.sql_parser.map_string_types_to_utf8view", false)
            // 1.005 is an exact numeric in PostgreSQL, not a double.
            .set_bool("datafusion.sql_parser.parse_float_as_decimal", true)
            .set_str("datafusion.sql_parser.dialect", "PostgreSQL")
            // timestamptz values carry a zone, as in PostgreSQL (UTC until
            // sessions can SET TimeZone).
            .set_str("datafusion.execution.time_zone", "UTC");
        let mut ctx = SessionContext::new_with_config(config);
        let default_catalog = ctx
            .catalog("millrace")
            .ok_or_else(|| SqlError::internal("default catalog missing"))?;
        let catalogs = Arc::downgrade(ctx.state().catalog_list());
        let default_catalog = options.front_end.wrap_catalog(default_catalog, catalogs);
        ctx.register_catalog("millrace", default_catalog.clone());
        default_catalog
            .register_schema("public", Arc::new(CatalogSchema(catalog.clone())))
            .map_err(SqlError::from)?;
        let registry = Arc::new(Registry::default());
        default_catalog
            .register_schema(
                system_tables::SYSTEM_SCHEMA,
                Arc::new(SystemSchema(registry.clone())),
            )
            .map_err(SqlError::from)?;
        for as_text in [false, true] {
            ctx.register_udf(
                millrace_planner::json::ExtractPath::udf(as_text)
                    .as_ref()
                    .clone(),
            );
        }
        datafusion::execution::FunctionRegistry::register_expr_planner(
            &mut ctx,
            Arc::new(millrace_planner::json::JsonOperators),
        )
        .map_err(SqlError::from)?;
        for (name, kind) in [("tumble", WindowKind::Tumble), ("hop", WindowKind::Hop)] {
            ctx.register_udtf(name, Arc::new(WindowFunction::new(kind, catalog.clone())));
        }
        ctx.register_udtf("session", Arc::new(SessionFunction::new(catalog.clone())));
        options.front_end.register(&ctx, catalog.clone())?;
        let users = crate::users::Users::new(store.clone());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
        let engine = Arc::new_cyclic(|me| Self {
            store,
            catalog,
            ctx,
            pipelines: RwLock::new(Pipelines::default()),
            published: RwLock::new(()),
            poisoned: std::sync::atomic::AtomicBool::new(false),
            writers: commit::Writers::default(),
            front_end: options.front_end.clone(),
            workers: options.workers.max(1),
            users,
            sources: std::sync::Mutex::new(HashMap::new()),
            registry,
            me: me.clone(),
            checkpoints: tokio::sync::Mutex::new(CheckpointState {
                files: checkpoint_files,
                last_cut: None,
                force_full: false,
            }),
            _checkpoint_stop: stop_tx,
        });
        let sources = engine.restore().await?;
        for (rel, config) in sources {
            engine.start_source(rel, config)?;
        }
        if let Some(every) = options.checkpoint_interval {
            tokio::spawn(checkpoint_loop(Arc::downgrade(&engine), every, stop_rx));
        }
        Ok(engine)
    }

    /// Writes a checkpoint of every view (see [`checkpoint`]). Ingestion
    /// waits only while the image is captured, not while it is written. A
    /// failed write is reported and leaves the next checkpoint full.
    pub async fn checkpoint(&self) -> SqlResult<()> {
        if self.poisoned.load(std::sync::atomic::Ordering::SeqCst) {
            // What is in memory may not match the disk any more.
            return Err(poisoned_error());
        }
        let mut state = self.checkpoints.lock().await;
        let full = state.needs_full_capture();
        let captured = {
            let mut pipelines = self.pipelines.write().await;
            pipelines.capture(full)?
        };
        if captured.is_noop(state.last_cut) {
            return Ok(());
        }
        // From here on the capture's changes exist only in `captured`.
        state.force_full = true;
        let cut = captured.cut;
        let bytes = tokio::task::spawn_blocking(move || checkpoint::encode(captured))
            .await
            .map_err(|e| SqlError::internal(format!("checkpoint encoder: {e}")))??;
        let CheckpointState { files, .. } = &mut *state;
        let written = blocking(|| files.write(&bytes, full));
        written.map_err(|e| {
            tracing::error!("checkpoint failed (the next one will be full): {e}");
            SqlError::from(e)
        })?;
        state.force_full = false;
        state.last_cut = Some(cut);
        // The log's event-time records before the cut are covered now.
        if let Err(e) = self.store.prune_progress(cut) {
            tracing::warn!("cannot prune the event-time log: {e}");
        }
        if state.wants_compaction() {
            // The chain stays valid if this fails: only recovery gets longer.
            if let Err(e) = self.compact(&mut state).await {
                tracing::warn!("cannot compact the checkpoint chain: {e}");
            }
        }
        Ok(())
    }

    /// Replaces the checkpoint chain by one full image merged from its
    /// files, off the pipelines' lock: ingestion goes on meanwhile, and the
    /// next checkpoint (which waits for `state`) adds to the new chain.
    async fn compact(&self, state: &mut CheckpointState) -> SqlResult<()> {
        let live: std::collections::BTreeSet<RelationId> = self
            .catalog
            .all()
            .iter()
            .filter(|r| r.kind == Kind::MaterializedView)
            .map(|r| r.id)
            .collect();
        let files = blocking(|| state.files.load())?;
        let bytes = tokio::task::spawn_blocking(move || checkpoint::compact(files, &live))
            .await
            .map_err(|e| SqlError::internal(format!("checkpoint compaction: {e}")))??;
        blocking(|| state.files.write(&bytes, true))?;
        Ok(())
    }

    /// Replays the catalog (tables and sources get their schema back, views
    /// their dataflow), loads the last checkpoint into the views and replays
    /// the write-ahead log after it. Returns the sources to start.
    async fn restore(&self) -> SqlResult<Vec<(Arc<Relation>, SourceConfig)>> {
        let mut sources = Vec::new();
        let mut records = Vec::new();
        for (name, bytes) in self.store.catalog_records()? {
            let record: CatalogRecord = serde_json::from_slice(&bytes).map_err(|e| {
                SqlError::internal(format!("catalog record \"{name}\" is corrupt: {e}"))
            })?;
            records.push(record);
        }
        records.sort_by_key(|r| r.id);
        let files = {
            let state = self.checkpoints.lock().await;
            state.files.load()?
        };
        let mut image = checkpoint::Chain::read(&files)?;
        let mut pipelines = self.pipelines.write().await;
        pipelines.next_seq = self.store.last_seq()?.map_or(0, |s| s + 1).max(image.cut);
        let progress_of = |id: RelationId| image.event_times.get(&id).cloned().unwrap_or_default();
        for r in records {
            if r.kind == Kind::Source {
                let def = parse_source(&r.sql)?;
                let config = self.source_config(&def).await?;
                let rel = Arc::new(Relation {
                    id: r.id,
                    name: r.name,
                    kind: r.kind,
                    schema: config.schema.clone(),
                    sql: r.sql,
                    inputs: vec![],
                    event_time: config.event_time.clone(),
                    keeps_rows: def.spelled_as_table,
                });
                if rel.event_time.is_some() {
                    pipelines.event_times.insert(rel.id, progress_of(rel.id));
                }
                self.catalog.insert(rel.clone());
                self.register_source_rows(&rel, &config);
                sources.push((rel, config));
                continue;
            }
            let stmt = parse_statement(&r.sql)?;
            let (stmt, watermark, emit) = match stmt {
                Statement::Sql(s) => (*s, None, EmitMode::OnUpdate),
                Statement::CreateTable { table, watermark } => {
                    (*table, Some(*watermark), EmitMode::OnUpdate)
                }
                Statement::CreateViewOnWindowClose(v) => (*v, None, EmitMode::OnWindowClose),
                _ => {
                    return Err(SqlError::internal(format!(
                        "catalog record \"{}\" does not hold a CREATE statement",
                        r.name
                    )))
                }
            };
            match (r.kind, stmt) {
                (Kind::Table, table @ Sql::CreateTable(_)) => {
                    let schema = self.table_schema(&table).await?;
                    let event_time = match &watermark {
                        Some(w) => Some(EventTime::resolve(w, &schema)?),
                        None => None,
                    };
                    if event_time.is_some() {
                        pipelines.event_times.insert(r.id, progress_of(r.id));
                    }
                    self.catalog.insert(Arc::new(Relation {
                        id: r.id,
                        name: r.name,
                        kind: r.kind,
                        schema,
                        sql: r.sql,
                        inputs: vec![],
                        event_time,
                        keeps_rows: true,
                    }));
                }
                (Kind::MaterializedView, Sql::CreateView(cv)) => {
                    let dataflow = self.plan_view(&cv.query, view_options(&cv, emit)?).await?;
                    let mut pipe = ViewPipeline::new(r.name.clone(), r.id, dataflow)?;
                    if let Some(parts) = image.views.remove(&r.id) {
                        let mut watermarks = Watermarks::new();
                        for input in pipe.dataflow.inputs() {
                            let wm = self
                                .catalog
                                .get(input)
                                .and_then(|rel| image.event_times.get(&rel.id))
                                .and_then(|p| p.watermark);
                            if let Some(wm) = wm {
                                watermarks.insert(input.clone(), wm);
                            }
                        }
                        pipe.dataflow.restore_watermarks(&watermarks);
                        restore_view(&mut pipe, &parts)?;
                    }
                    self.catalog.insert(Arc::new(Relation {
                        id: r.id,
                        name: r.name,
                        kind: r.kind,
                        schema: pipe.dataflow.schema().clone(),
                        sql: r.sql,
                        inputs: r.inputs,
                        event_time: None,
                        keeps_rows: false,
                    }));
                    self.catalog.set_contents(r.id, pipe.contents.clone());
                    pipelines.views.insert(r.id, pipe);
                }
                _ => {
                    return Err(SqlError::internal(format!(
                        "catalog record \"{}\" does not hold a CREATE statement of its kind",
                        r.name
                    )))
                }
            }
        }
        let cut = image.cut;
        drop(image);
        drop(files);
        let replayed = self.replay(&mut pipelines, cut)?;
        self.publish_event_time(&pipelines);
        tracing::info!(
            relations = self.catalog.all().len(),
            replayed,
            "restored catalog, checkpoint and log from storage"
        );
        Ok(sources)
    }

    /// Brings the views from the checkpoint's cut to the end of the log:
    /// replays every later log record in order, with the event-time
    /// progress it logged, through the views the checkpoint holds; then
    /// fills the views it does not hold (created after it) from their
    /// inputs, as `CREATE MATERIALIZED VIEW` does. Returns the number of
    /// records replayed.
    fn replay(&self, pipelines: &mut Pipelines, cut: u64) -> SqlResult<usize> {
        let fresh: Vec<ViewPipeline> = {
            let ids: Vec<RelationId> = pipelines
                .views
                .values()
                .filter(|v| !v.in_checkpoint)
                .map(|v| v.id)
                .collect();
            ids.iter()
                .filter_map(|id| pipelines.views.remove(id))
                .collect()
        };
        let by_id: HashMap<RelationId, Arc<Relation>> =
            self.catalog.all().into_iter().map(|r| (r.id, r)).collect();
        let records = self.store.wal_since(cut)?;
        let replayed = records.len();
        // Sources whose rows could not be read again: their later epochs
        // are consumed again instead (see `rewind`).
        let mut rewound: std::collections::HashSet<RelationId> = Default::default();
        for mut record in records {
            let Some(rel) = by_id.get(&record.relation) else {
                continue;
            };
            if rewound.contains(&rel.id) {
                continue;
            }
            // A source that keeps no rows logged where its rows are.
            let mut batches = std::mem::take(&mut record.batches);
            if let (false, Some(span)) = (rel.keeps_rows, &record.span) {
                let read = match self.catalog.source_rows(rel.id) {
                    Some(rows) => rows.span(span),
                    None => Err(SqlError::internal("no reader of the source's topic")),
                };
                match read {
                    Ok(rows) => batches = rows,
                    Err(e) => {
                        self.rewind(rel, &record, &e)?;
                        rewound.insert(rel.id);
                        continue;
                    }
                }
            }
            let mut watermarks = Watermarks::new();
            if let Some(bytes) = &record.progress {
                let progress = Progress::decode(bytes)?;
                let before = pipelines.event_times.insert(rel.id, progress.clone());
                if let Some(wm) = progress.watermark {
                    if before.and_then(|b| b.watermark) != Some(wm) {
                        watermarks.insert(rel.name.clone(), wm);
                    }
                }
            }
            let parts: Vec<Delta> = batches
                .into_iter()
                .map(|b| crate::providers::conform(b, &rel.schema).map(Delta::inserts))
                .collect::<SqlResult<_>>()?;
            let delta = Delta::concat(&rel.schema, &parts)?;
            if delta.is_empty() && watermarks.is_empty() {
                continue;
            }
            let touched = pipelines.propagate(&rel.name, delta, &watermarks)?;
            pipelines.finish(touched);
        }
        for mut pipe in fresh {
            let (changes, watermarks) = self.backfill_input(&pipe, pipelines)?;
            let out = pipe.dataflow.push(&changes, &watermarks)?;
            let change = pipe.prepare(out)?;
            pipe.finish(change);
            pipelines.views.insert(pipe.id, pipe);
        }
        Ok(replayed)
    }

    /// Recovery could not read the epoch `span` of source `rel` (one that
    /// keeps no rows) from its topic again, say because the broker is down:
    /// rather than refuse to start, the source goes back to where that
    /// epoch started, and its ingest thread consumes it and what followed
    /// again once the broker answers. Nothing is lost or counted twice;
    /// only what depended on timing (which rows came late, when idle
    /// partitions let go) is decided anew.
    fn rewind(&self, rel: &Relation, record: &WalRecord, e: &SqlError) -> SqlResult<()> {
        tracing::warn!(
            source = %rel.name,
            "recovery cannot read the source's last epochs from Kafka again ({e}); \
             they will be consumed again"
        );
        let from: BTreeMap<i32, i64> = record
            .span
            .iter()
            .flatten()
            .map(|&(p, from, _)| (p, from.max(0)))
            .collect();
        let mut commit = Commit::new();
        self.store
            .forget_source_since(&mut commit, rel.id, record.seq, &from)?;
        self.commit(commit)
    }

    /// What a new view starts from: the current contents of its inputs,
    /// as one insertion each, and their watermarks.
    fn backfill_input(
        &self,
        pipe: &ViewPipeline,
        pipelines: &Pipelines,
    ) -> SqlResult<(Changes, Watermarks)> {
        let mut changes = Changes::new();
        let mut watermarks = Watermarks::new();
        for input in pipe.dataflow.inputs() {
            let input_rel = self.catalog.get(input).ok_or_else(|| {
                SqlError::new(
                    ErrorKind::UndefinedTable,
                    format!("relation \"{input}\" does not exist"),
                )
            })?;
            let contents = pipelines.views.get(&input_rel.id).map(|p| &p.contents);
            let source_rows = self.catalog.source_rows(input_rel.id);
            changes.insert(
                input.clone(),
                snapshot_delta(&input_rel, &self.store, contents, source_rows.as_deref())?,
            );
            if let Some(wm) = pipelines
                .event_times
                .get(&input_rel.id)
                .and_then(|p| p.watermark)
            {
                watermarks.insert(input.clone(), wm);
            }
        }
        Ok((changes, watermarks))
    }

    /// The DataFusion session used for planning and ad-hoc queries.
    pub fn session(&self) -> SessionState {
        self.ctx.state()
    }

    /// Executes one statement. `params` bind `$n` placeholders.
    pub async fn execute(
        &self,
        stmt: &Statement,
        params: Option<&ParamValues>,
    ) -> SqlResult<Outcome> {
        match stmt {
            Statement::Flush { sources } => self.flush(sources).await,
            Statement::ShowRelations(kind) => Ok(self.show_relations(*kind)),
            Statement::CreateSource(def) => self.create_source(def).await,
            Statement::DropSource(d) => {
                self.drop(Kind::Source, d.if_exists, &d.names, d.cascade)
                    .await
            }
            Statement::CreateTable { table, watermark } => match table.as_ref() {
                Sql::CreateTable(ct) => {
                    self.create_table(table, ct, Some(watermark), stmt.to_string())
                        .await
                }
                _ => Err(SqlError::internal(
                    "WATERMARK on something else than CREATE TABLE",
                )),
            },
            Statement::CreateViewOnWindowClose(view) => match view.as_ref() {
                Sql::CreateView(cv) if cv.materialized => {
                    self.create_view(cv, EmitMode::OnWindowClose, stmt.to_string())
                        .await
                }
                _ => Err(SqlError::new(
                    ErrorKind::SyntaxError,
                    "EMIT ON WINDOW CLOSE belongs to CREATE MATERIALIZED VIEW",
                )),
            },
            Statement::ExplainViewOnWindowClose(view) => match view.as_ref() {
                Sql::CreateView(cv) if cv.materialized => {
                    self.explain_view(cv, EmitMode::OnWindowClose).await
                }
                _ => Err(SqlError::new(
                    ErrorKind::SyntaxError,
                    "EMIT ON WINDOW CLOSE belongs to CREATE MATERIALIZED VIEW",
                )),
            },
            Statement::Sql(sql) => self.execute_sql(sql, params).await,
        }
    }

    async fn execute_sql(&self, sql: &Sql, params: Option<&ParamValues>) -> SqlResult<Outcome> {
        match sql {
            Sql::CreateTable(ct) => self.create_table(sql, ct, None, sql.to_string()).await,
            Sql::CreateView(cv) if cv.materialized => {
                self.create_view(cv, EmitMode::OnUpdate, sql.to_string())
                    .await
            }
            Sql::CreateView(_) => Err(SqlError::unsupported(
                "CREATE VIEW (plain views); use CREATE MATERIALIZED VIEW",
            )),
            Sql::Insert(_) => self.insert(sql, params).await,
            Sql::CreateRole(cr) => {
                let names: Vec<String> = cr.names.iter().map(object_name).collect();
                self.users
                    .create(&names, cr.if_not_exists, cr.password.as_ref())
            }
            Sql::AlterRole { name, operation } => self.users.alter(&name.value, operation),
            Sql::Drop {
                object_type: ObjectType::Role | ObjectType::User,
                if_exists,
                names,
                ..
            } => {
                let names: Vec<String> = names.iter().map(object_name).collect();
                self.users.drop_users(&names, *if_exists)
            }
            Sql::Drop {
                object_type,
                if_exists,
                names,
                cascade,
                ..
            } => {
                let kind = match object_type {
                    ObjectType::Table => Kind::Table,
                    ObjectType::MaterializedView => Kind::MaterializedView,
                    other => return Err(SqlError::unsupported(format!("DROP {other}"))),
                };
                let names: Vec<String> = names.iter().map(object_name).collect();
                self.drop(kind, *if_exists, &names, *cascade).await
            }
            Sql::Explain { statement, .. } => match statement.as_ref() {
                Sql::CreateView(cv) if cv.materialized => {
                    self.explain_view(cv, EmitMode::OnUpdate).await
                }
                _ => self.query(sql, params).await,
            },
            Sql::Query(_) => self.query(sql, params).await,
            Sql::Update { .. } | Sql::Delete(_) => Err(SqlError::unsupported(
                "UPDATE and DELETE (tables are append-only for now)",
            )),
            other => Err(SqlError::unsupported(format!(
                "the statement \"{}\"",
                first_words(&other.to_string())
            ))),
        }
    }

    /// The users that password authentication checks.
    pub fn users(&self) -> Arc<crate::users::Users> {
        self.users.clone()
    }

    /// `EXPLAIN CREATE MATERIALIZED VIEW`: the dataflow the view would run.
    async fn explain_view(
        &self,
        cv: &sqlparser::ast::CreateView,
        emit: EmitMode,
    ) -> SqlResult<Outcome> {
        let dataflow = self.plan_view(&cv.query, view_options(cv, emit)?).await?;
        Ok(text_rows(
            "QUERY PLAN",
            dataflow.explain(&object_name(&cv.name)),
        ))
    }

    /// Plans `sql` with DataFusion (binding `params`).
    pub async fn plan_sql(
        &self,
        sql: &Sql,
        params: Option<&ParamValues>,
    ) -> SqlResult<LogicalPlan> {
        let state = self.ctx.state();
        let sql = self.front_end.rewrite(sql.clone())?;
        let plan = state
            .statement_to_plan(DfStatement::Statement(Box::new(sql)))
            .await?;
        match params {
            Some(p) => Ok(plan.with_param_values(p.clone())?),
            None => Ok(plan),
        }
    }

    async fn query(&self, sql: &Sql, params: Option<&ParamValues>) -> SqlResult<Outcome> {
        let plan = self.plan_sql(&aliased(sql), params).await?;
        if !matches!(
            plan,
            LogicalPlan::Projection(_)
                | LogicalPlan::Sort(_)
                | LogicalPlan::Limit(_)
                | LogicalPlan::Filter(_)
                | LogicalPlan::Aggregate(_)
                | LogicalPlan::Distinct(_)
                | LogicalPlan::Union(_)
                | LogicalPlan::Values(_)
                | LogicalPlan::Explain(_)
                | LogicalPlan::Analyze(_)
                | LogicalPlan::SubqueryAlias(_)
                | LogicalPlan::Join(_)
                | LogicalPlan::Window(_)
                | LogicalPlan::TableScan(_)
                | LogicalPlan::EmptyRelation(_)
                | LogicalPlan::Subquery(_)
                | LogicalPlan::RecursiveQuery(_)
                | LogicalPlan::Unnest(_)
        ) {
            return Err(SqlError::unsupported(format!(
                "the statement \"{}\"",
                first_words(&sql.to_string())
            )));
        }
        let schema = result_schema(sql, &plan);
        let df = self.ctx.execute_logical_plan(plan).await?;
        let physical = {
            let _snapshot = self.published.read().await;
            df.create_physical_plan().await?
        };
        let batches = collect(physical, self.ctx.task_ctx()).await?;
        Ok(Outcome::Rows { schema, batches })
    }

    async fn table_schema(&self, sql: &Sql) -> SqlResult<SchemaRef> {
        let plan = self.plan_sql(sql, None).await?;
        let LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(cmt)) = plan else {
            return Err(SqlError::internal("CREATE TABLE did not plan as a table"));
        };
        if !cmt.column_defaults.is_empty() {
            return Err(SqlError::unsupported("column DEFAULT values"));
        }
        if !cmt.constraints.is_empty() {
            return Err(SqlError::unsupported(
                "PRIMARY KEY and UNIQUE constraints (tables are append-only for now)",
            ));
        }
        let schema = cmt.input.schema().as_arrow().clone();
        Ok(Arc::new(schema))
    }

    /// `CREATE TABLE`; `watermark` is its event-time clause, `text` the
    /// statement as the catalog keeps it.
    async fn create_table(
        &self,
        sql: &Sql,
        ct: &ast::CreateTable,
        watermark: Option<&WatermarkDef>,
        text: String,
    ) -> SqlResult<Outcome> {
        let name = object_name(&ct.name);
        if ct.query.is_some() {
            return Err(SqlError::unsupported("CREATE TABLE … AS SELECT"));
        }
        if !matches!(ct.table_options, ast::CreateTableOptions::None) {
            return Err(SqlError::unsupported(
                "CREATE TABLE … WITH (…) (connectors come with CREATE SOURCE)",
            ));
        }
        let mut pipelines = self.pipelines.write().await;
        let _published = self.published.write().await;
        if let Some(existing) = self.catalog.get(&name) {
            return self.exists(&existing, ct.if_not_exists, "CREATE TABLE");
        }
        let schema = self.table_schema(sql).await?;
        check_unique_columns(&schema)?;
        let event_time = match watermark {
            Some(w) => Some(EventTime::resolve(w, &schema)?),
            None => None,
        };
        let id = self.store.next_relation_id()?;
        let rel = Relation {
            id,
            name: name.clone(),
            kind: Kind::Table,
            schema,
            sql: text,
            inputs: vec![],
            event_time,
            keeps_rows: true,
        };
        let mut commit = Commit::new();
        commit.reserve_relation_id(id);
        commit.put_catalog(&name, encode_record(&rel)?);
        self.commit(commit)?;
        let has_event_time = rel.event_time.is_some();
        self.catalog.insert(Arc::new(rel));
        if has_event_time {
            pipelines.event_times.insert(id, Progress::default());
            self.publish_event_time(&pipelines);
        }
        Ok(Outcome::command("CREATE TABLE"))
    }

    fn exists(&self, existing: &Relation, if_not_exists: bool, tag: &str) -> SqlResult<Outcome> {
        if if_not_exists {
            tracing::debug!("relation \"{}\" already exists, skipping", existing.name);
            Ok(Outcome::command(tag))
        } else {
            Err(SqlError::new(
                ErrorKind::DuplicateTable,
                format!("relation \"{}\" already exists", existing.name),
            ))
        }
    }

    /// Plans a view query into its dataflow (no side effects).
    async fn plan_view(&self, query: &ast::Query, options: ViewOptions) -> SqlResult<Dataflow> {
        let options = ViewOptions {
            workers: self.workers,
            ..options
        };
        let plan = self
            .plan_sql(
                &Sql::Query(Box::new(naming::with_unique_aliases(query))),
                None,
            )
            .await?;
        let state = self.ctx.state();
        let analyzed =
            state
                .analyzer()
                .execute_and_check(plan, state.config_options(), |_, _| {})?;
        let mut dataflow =
            millrace_planner::dataflow::plan(&analyzed, &state, self.catalog.as_ref(), options)?;
        let names = naming::rename(dataflow.schema(), naming::column_names(query));
        dataflow.rename_columns(names);
        if dataflow.schema().fields().is_empty() {
            return Err(SqlError::unsupported("a materialized view without columns"));
        }
        check_unique_columns(dataflow.schema())?;
        Ok(dataflow)
    }

    /// `CREATE MATERIALIZED VIEW`; `text` is the statement as the catalog
    /// keeps it.
    async fn create_view(
        &self,
        cv: &ast::CreateView,
        emit: EmitMode,
        text: String,
    ) -> SqlResult<Outcome> {
        let name = object_name(&cv.name);
        if cv.or_replace {
            return Err(SqlError::unsupported("CREATE OR REPLACE MATERIALIZED VIEW"));
        }
        if !cv.columns.is_empty() {
            return Err(SqlError::unsupported(
                "a column list after the view name (name the columns with AS in the query)",
            ));
        }
        let mut pipelines = self.pipelines.write().await;
        let published = self.published.write().await;
        if let Some(existing) = self.catalog.get(&name) {
            return self.exists(&existing, cv.if_not_exists, "CREATE MATERIALIZED VIEW");
        }
        let dataflow = self.plan_view(&cv.query, view_options(cv, emit)?).await?;
        let id = self.store.next_relation_id()?;
        let rel = Relation {
            id,
            name: name.clone(),
            kind: Kind::MaterializedView,
            schema: dataflow.schema().clone(),
            sql: text,
            inputs: dataflow.inputs().iter().cloned().collect(),
            event_time: None,
            keeps_rows: false,
        };
        let mut pipe = ViewPipeline::new(name.clone(), id, dataflow)?;
        // Backfill: the view starts from the current contents of its inputs.
        let (changes, watermarks) = self.backfill_input(&pipe, &pipelines)?;
        let pushed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pipe.dataflow.push(&changes, &watermarks)
        }))
        .unwrap_or_else(|panic| {
            Err(millrace_dataflow::DataflowError::Internal(panic_message(
                &*panic,
            )))
        })?;
        let change = pipe.prepare(pushed)?;
        let mut commit = Commit::new();
        commit.reserve_relation_id(id);
        commit.put_catalog(&name, encode_record(&rel)?);
        self.commit(commit)?;
        // Until the checkpoint below (or after a crash before it), recovery
        // rebuilds the view from its inputs the same way.
        pipe.finish(change);
        self.catalog.insert(Arc::new(rel));
        self.catalog.set_contents(id, pipe.contents.clone());
        pipelines.views.insert(id, pipe);
        self.publish_event_time(&pipelines);
        drop(published);
        drop(pipelines);
        if let Err(e) = self.checkpoint().await {
            tracing::warn!("checkpoint after CREATE MATERIALIZED VIEW failed: {e}");
        }
        Ok(Outcome::command("CREATE MATERIALIZED VIEW"))
    }

    async fn insert(&self, sql: &Sql, params: Option<&ParamValues>) -> SqlResult<Outcome> {
        let Sql::Insert(ins) = sql else {
            return Err(SqlError::internal("insert() on a non-INSERT"));
        };
        let name = match &ins.table {
            ast::TableObject::TableName(n) => object_name(n),
            _ => {
                return Err(SqlError::unsupported(
                    "INSERT INTO anything but a table name",
                ))
            }
        };
        let rel = self.catalog.get(&name).ok_or_else(|| {
            SqlError::new(
                ErrorKind::UndefinedTable,
                format!("relation \"{name}\" does not exist"),
            )
        })?;
        match rel.kind {
            Kind::Table => {}
            Kind::MaterializedView => {
                return Err(SqlError::new(
                    ErrorKind::WrongObjectType,
                    format!("cannot change materialized view \"{name}\""),
                ))
            }
            Kind::Source => {
                return Err(SqlError::new(
                    ErrorKind::WrongObjectType,
                    format!("cannot insert into source \"{name}\""),
                )
                .with_hint(
                    "A source's rows come from its Kafka topic: produce to the topic instead.",
                ))
            }
        }
        if ins.returning.is_some() || ins.on.is_some() {
            return Err(SqlError::unsupported("INSERT … ON CONFLICT / RETURNING"));
        }
        let plan = self.plan_sql(sql, params).await?;
        let LogicalPlan::Dml(DmlStatement {
            op: WriteOp::Insert(_),
            input,
            ..
        }) = plan
        else {
            return Err(SqlError::internal("INSERT did not plan as an insert"));
        };
        check_assignment_types(&input, &rel.schema)?;
        let df = self
            .ctx
            .execute_logical_plan(input.as_ref().clone())
            .await?;
        let physical = {
            let _snapshot = self.published.read().await;
            df.create_physical_plan().await?
        };
        let batches = collect(physical, self.ctx.task_ctx()).await?;
        let batches = batches
            .into_iter()
            .filter(|b| b.num_rows() > 0)
            .map(|b| conform_insert(b, &rel.schema))
            .collect::<SqlResult<Vec<_>>>()?;
        let rows = self.append(&rel, batches).await?;
        Ok(Outcome::Command {
            tag: "INSERT".into(),
            rows: Some(rows),
            oid: true,
        })
    }

    /// Appends rows to table `rel`, updates every dependent view and makes
    /// it all durable in one commit. Returns the number of rows.
    pub async fn append(&self, rel: &Relation, batches: Vec<RecordBatch>) -> SqlResult<usize> {
        self.append_with_offsets(rel, batches, &BTreeMap::new(), &Arrival::default())
            .await
    }

    /// Appends a batch consumed by source `rel` and records its partitions'
    /// next offsets in the same commit: after a crash, consumption resumes
    /// exactly after the last message whose effects are durable.
    pub async fn ingest(
        &self,
        rel: &Relation,
        batch: Option<RecordBatch>,
        offsets: &BTreeMap<i32, i64>,
        arrival: &Arrival,
    ) -> SqlResult<()> {
        self.append_with_offsets(rel, batch.into_iter().collect(), offsets, arrival)
            .await
            .map(|_| ())
    }

    /// Adds `late` rows turned away by `rel` to the views reading it (the
    /// caller publishes the event-time figures).
    fn add_late(&self, pipelines: &mut Pipelines, rel: &Relation, late: usize) {
        if rel.event_time.is_none() || late == 0 {
            return;
        }
        let relation = rel.name.as_str();
        for pipe in pipelines.views.values_mut() {
            if pipe.dataflow.inputs().contains(relation) {
                pipe.late_rows += late as u64;
            }
        }
    }

    /// Publishes `millrace_catalog.watermarks`: every relation with event
    /// time and every view that closes windows.
    fn publish_event_time(&self, pipelines: &Pipelines) {
        let mut rows = Vec::new();
        for rel in self.catalog.all() {
            if let Some(event) = &rel.event_time {
                let progress = pipelines
                    .event_times
                    .get(&rel.id)
                    .cloned()
                    .unwrap_or_default();
                if let Some(status) = self.registry.get(&rel.name) {
                    for (p, t) in &progress.max_by_partition {
                        status.update(*p, |s| s.max_event_time = Some(*t));
                    }
                }
                rows.push(system_tables::WatermarkStatus {
                    relation: rel.name.clone(),
                    kind: rel.kind.noun(),
                    column: Some(event.column.clone()),
                    watermark: progress.watermark,
                    late_rows: progress.late_rows,
                    state_groups: None,
                });
            } else if let Some(pipe) = pipelines.views.get(&rel.id) {
                if !pipe
                    .dataflow
                    .inputs()
                    .iter()
                    .any(|i| pipe.dataflow.closes_on(i))
                {
                    continue;
                }
                let (watermark, dropped) = pipe.dataflow.progress();
                rows.push(system_tables::WatermarkStatus {
                    relation: rel.name.clone(),
                    kind: rel.kind.noun(),
                    column: None,
                    watermark,
                    late_rows: pipe.late_rows + dropped,
                    state_groups: Some(pipe.dataflow.state_size() as u64),
                });
            }
        }
        self.registry.publish_watermarks(rows);
    }

    /// The relation called `name`.
    pub fn relation(&self, name: &str) -> Option<Arc<Relation>> {
        self.catalog.get(name)
    }

    async fn drop(
        &self,
        kind: Kind,
        if_exists: bool,
        names: &[String],
        cascade: bool,
    ) -> SqlResult<Outcome> {
        let tag = match kind {
            Kind::Table => "DROP TABLE",
            Kind::MaterializedView => "DROP MATERIALIZED VIEW",
            Kind::Source => "DROP SOURCE",
        };
        let mut pipelines = self.pipelines.write().await;
        let _published = self.published.write().await;
        let mut victims: Vec<Arc<Relation>> = Vec::new();
        for name in names {
            let name = name.clone();
            let Some(rel) = self.catalog.get(&name) else {
                if if_exists {
                    continue;
                }
                return Err(SqlError::new(
                    ErrorKind::UndefinedTable,
                    format!("{} \"{name}\" does not exist", kind.noun()),
                ));
            };
            if rel.kind != kind {
                let hint = match rel.kind {
                    Kind::Table => "Use DROP TABLE to remove a table.",
                    Kind::MaterializedView => {
                        "Use DROP MATERIALIZED VIEW to remove a materialized view."
                    }
                    Kind::Source => "Use DROP SOURCE to remove a source.",
                };
                return Err(SqlError::new(
                    ErrorKind::WrongObjectType,
                    format!("\"{name}\" is not a {}", kind.noun()),
                )
                .with_hint(hint));
            }
            let dependents: Vec<Arc<Relation>> = self
                .catalog
                .dependents(&name)
                .into_iter()
                .filter(|d| !names.contains(&d.name))
                .collect();
            if !dependents.is_empty() && !cascade {
                let detail = dependents
                    .iter()
                    .map(|d| {
                        format!(
                            "materialized view {} depends on {} {name}",
                            d.name,
                            rel.kind.noun()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
                return Err(SqlError::new(
                    ErrorKind::DependentObjectsStillExist,
                    format!(
                        "cannot drop {} {name} because other objects depend on it",
                        rel.kind.noun()
                    ),
                )
                .with_detail(detail)
                .with_hint("Use DROP … CASCADE to drop the dependent objects too."));
            }
            for d in dependents {
                if !victims.iter().any(|v| v.id == d.id) {
                    victims.push(d);
                }
            }
            if !victims.iter().any(|v| v.id == rel.id) {
                victims.push(rel);
            }
        }
        let mut commit = Commit::new();
        for v in &victims {
            self.store.drop_relation(&mut commit, v.id, &v.name)?;
        }
        self.commit(commit)?;
        for v in &victims {
            self.catalog.remove(&v.name);
            pipelines.views.remove(&v.id);
            pipelines.event_times.remove(&v.id);
            if v.kind == Kind::Source {
                self.registry.remove(&v.name);
                self.lock_sources().remove(&v.id);
            }
        }
        self.publish_event_time(&pipelines);
        Ok(Outcome::command(tag))
    }

    fn show_relations(&self, kind: RelationKind) -> Outcome {
        let want = match kind {
            RelationKind::Table => Kind::Table,
            RelationKind::MaterializedView => Kind::MaterializedView,
            RelationKind::Source => Kind::Source,
        };
        let mut names: Vec<String> = self
            .catalog
            .all()
            .into_iter()
            .filter(|r| r.kind == want)
            .map(|r| r.name.clone())
            .collect();
        names.sort();
        text_rows("Name", names)
    }

    /// Groups held by every view's operators, by view name (for benchmarks
    /// and diagnostics).
    pub async fn state_sizes(&self) -> Vec<(String, usize)> {
        let p = self.pipelines.read().await;
        p.views
            .values()
            .map(|v| (v.name.clone(), v.dataflow.state_size()))
            .collect()
    }
}

/// Loads a view's parts of the checkpoint chain into its pipeline: the
/// operator state on this thread and the contents on another, at once,
/// since a restart with millions of groups spends its time filling the
/// two maps.
fn restore_view(pipe: &mut ViewPipeline, parts: &[checkpoint::ViewPart<'_>]) -> SqlResult<()> {
    let schema = pipe.dataflow.schema().clone();
    let shared = pipe.contents.clone();
    let dataflow = &mut pipe.dataflow;
    std::thread::scope(|scope| {
        let rows = scope.spawn(move || -> SqlResult<()> {
            let mut held = shared.write().unwrap_or_else(|p| p.into_inner());
            for part in parts {
                held.restore_rows(part.rows())?;
                held.restore_batches(checkpoint::conform(part.batches()?, &schema)?)?;
            }
            Ok(())
        });
        let loaded = (|| -> SqlResult<()> {
            let state = checkpoint::ViewState::new(parts);
            for (op, records) in state.ops() {
                dataflow.load_state(op, records, state.records(op))?;
            }
            Ok(())
        })();
        let rows = rows
            .join()
            .unwrap_or_else(|panic| Err(SqlError::internal(panic_message(&*panic))));
        loaded.and(rows)
    })?;
    pipe.in_checkpoint = true;
    Ok(())
}

/// Runs `f`, which blocks on the disk, letting tokio move other tasks off
/// this worker meanwhile (block_in_place needs the multi-threaded runtime).
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Checkpoints the engine every `every` until it is dropped (which
/// closes `stop`).
async fn checkpoint_loop(
    engine: Weak<Engine>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<()>,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => return,
            _ = ticks.tick() => {}
        }
        let Some(engine) = engine.upgrade() else {
            return;
        };
        if let Err(e) = engine.checkpoint().await {
            tracing::warn!("periodic checkpoint failed: {e}");
        }
    }
}

/// `sql` with internal aliases that keep DataFusion from refusing
/// select lists PostgreSQL accepts (see [`naming::with_unique_aliases`]).
pub fn aliased(sql: &Sql) -> Sql {
    match sql {
        Sql::Query(q) => Sql::Query(Box::new(naming::with_unique_aliases(q))),
        other => other.clone(),
    }
}

/// The columns a query returns, named as PostgreSQL names them.
pub fn result_schema(sql: &Sql, plan: &LogicalPlan) -> SchemaRef {
    let schema: SchemaRef = Arc::new(plan.schema().as_arrow().clone());
    match sql {
        Sql::Query(q) => naming::rename(&schema, naming::column_names(q)),
        _ => schema,
    }
}

fn poisoned_error() -> SqlError {
    SqlError::new(
        ErrorKind::IoError,
        "a write to the data directory failed earlier; restart millrace to recover from the last durable state",
    )
}

/// The text of a caught panic.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

fn encode_record(rel: &Relation) -> SqlResult<Vec<u8>> {
    serde_json::to_vec(&CatalogRecord::of(rel))
        .map_err(|e| SqlError::internal(format!("encoding catalog record: {e}")))
}

/// The options of `CREATE MATERIALIZED VIEW … WITH (…)`.
fn view_options(cv: &ast::CreateView, emit: EmitMode) -> SqlResult<ViewOptions> {
    let mut options = ViewOptions {
        emit,
        retention_ns: None,
        workers: 1,
    };
    let list = match &cv.options {
        ast::CreateTableOptions::None => return Ok(options),
        ast::CreateTableOptions::With(list) => list,
        _ => return Err(SqlError::unsupported("view options other than WITH (…)")),
    };
    for o in list {
        let ast::SqlOption::KeyValue { key, value } = o else {
            return Err(SqlError::unsupported(format!("the view option {o}")));
        };
        match key.value.to_ascii_lowercase().as_str() {
            "retention" => {
                let text = match value {
                    ast::Expr::Value(v) => v.value.clone().into_string(),
                    _ => None,
                };
                let ns = text
                    .as_deref()
                    .and_then(millrace_planner::event_time::parse_fixed_interval)
                    .filter(|ns| *ns > 0)
                    .ok_or_else(|| {
                        SqlError::new(
                            ErrorKind::InvalidParameterValue,
                            format!("retention must be a positive interval of fixed length such as '1 day', not {value}"),
                        )
                    })?;
                options.retention_ns = Some(ns);
            }
            other => {
                return Err(SqlError::new(
                    ErrorKind::InvalidParameterValue,
                    format!("unknown materialized view option \"{other}\""),
                )
                .with_hint("Known options: retention."))
            }
        }
    }
    Ok(options)
}

/// Parses one stored statement of the Millrace dialect.
fn parse_statement(sql: &str) -> SqlResult<Statement> {
    let mut stmts = millrace_planner::statement::parse(sql)?;
    match (stmts.pop(), stmts.is_empty()) {
        (Some(s), true) => Ok(s),
        _ => Err(SqlError::internal(format!(
            "stored statement is not one statement: {sql}"
        ))),
    }
}

fn parse_one(sql: &str) -> SqlResult<Sql> {
    let mut stmts = millrace_planner::statement::parse(sql)?;
    match (stmts.pop(), stmts.is_empty()) {
        (Some(Statement::Sql(s)), true) => Ok(*s),
        _ => Err(SqlError::internal(format!(
            "stored statement is not one statement: {sql}"
        ))),
    }
}

/// A relation name as DataFusion resolves it: the last part, lower-cased
/// unless quoted.
pub fn object_name(n: &ast::ObjectName) -> String {
    n.0.last()
        .and_then(|p| p.as_ident())
        .map(|i| {
            if i.quote_style.is_some() {
                i.value.clone()
            } else {
                i.value.to_lowercase()
            }
        })
        .unwrap_or_default()
}

fn first_words(sql: &str) -> String {
    sql.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// A one-column text result.
fn text_rows(column: &str, lines: Vec<String>) -> Outcome {
    let schema = Arc::new(Schema::new(vec![Field::new(column, DataType::Utf8, false)]));
    let array: ArrayRef = Arc::new(StringArray::from(lines));
    match RecordBatch::try_new(schema.clone(), vec![array]) {
        Ok(b) => Outcome::Rows {
            schema,
            batches: vec![b],
        },
        Err(_) => Outcome::Rows {
            schema,
            batches: vec![],
        },
    }
}

fn check_unique_columns(schema: &Schema) -> SqlResult<()> {
    let mut seen = std::collections::HashSet::new();
    for f in schema.fields() {
        if !seen.insert(f.name()) {
            return Err(SqlError::new(
                ErrorKind::DuplicateColumn,
                format!("column \"{}\" specified more than once", f.name()),
            ));
        }
    }
    Ok(())
}

/// Broad type categories for PostgreSQL-style assignment checks.
#[derive(PartialEq, Eq, Clone, Copy)]
enum TypeClass {
    Numeric,
    Text,
    Bool,
    Temporal,
    Interval,
    Binary,
    Null,
    Other,
}

fn type_class(t: &DataType) -> TypeClass {
    match t {
        t if t.is_numeric() => TypeClass::Numeric,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => TypeClass::Text,
        DataType::Boolean => TypeClass::Bool,
        DataType::Timestamp(_, _)
        | DataType::Date32
        | DataType::Date64
        | DataType::Time32(_)
        | DataType::Time64(_) => TypeClass::Temporal,
        DataType::Interval(_) | DataType::Duration(_) => TypeClass::Interval,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => TypeClass::Binary,
        DataType::Null => TypeClass::Null,
        _ => TypeClass::Other,
    }
}

/// Refuses INSERTs whose values cannot be assigned to the columns under
/// PostgreSQL's rules (text literals and NULL go anywhere, and anything
/// goes to text; otherwise the type families must match).
fn check_assignment_types(input: &LogicalPlan, table: &Schema) -> SqlResult<()> {
    let LogicalPlan::Projection(p) = input else {
        return Ok(());
    };
    let strip = |e: &Expr| -> Expr {
        let inner = match e {
            Expr::Alias(a) => a.expr.as_ref(),
            e => e,
        };
        match inner {
            Expr::Cast(c) => c.expr.as_ref().clone(),
            Expr::TryCast(c) => c.expr.as_ref().clone(),
            e => e.clone(),
        }
    };
    for (expr, field) in p.expr.iter().zip(table.fields()) {
        let source = strip(expr);
        // VALUES lists carry their casts inside each row.
        if let (Expr::Column(c), LogicalPlan::Values(v)) = (&source, p.input.as_ref()) {
            if let Ok(idx) = v.schema.index_of_column(c) {
                for row in &v.values {
                    if let Some(value) = row.get(idx) {
                        check_assignable(&strip(value), &v.schema, field)?;
                    }
                }
                continue;
            }
        }
        check_assignable(&source, p.input.schema(), field)?;
    }
    Ok(())
}

fn check_assignable(
    source: &Expr,
    schema: &datafusion::common::DFSchema,
    field: &Field,
) -> SqlResult<()> {
    let Ok(from) = datafusion::logical_expr::ExprSchemable::get_type(source, schema) else {
        return Ok(());
    };
    let (fc, tc) = (type_class(&from), type_class(field.data_type()));
    let ok = fc == tc || matches!(fc, TypeClass::Text | TypeClass::Null) || tc == TypeClass::Text;
    if ok {
        return Ok(());
    }
    Err(SqlError::new(
        ErrorKind::DatatypeMismatch,
        format!(
            "column \"{}\" is of type {} but expression is of type {}",
            field.name(),
            pg_type_name(field.data_type()),
            pg_type_name(&from)
        ),
    )
    .with_hint("You will need to rewrite or cast the expression."))
}

/// An insert batch checked against NOT NULL and relabelled with the table's schema.
fn conform_insert(batch: RecordBatch, schema: &SchemaRef) -> SqlResult<RecordBatch> {
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (c, f) in batch.columns().iter().zip(schema.fields()) {
        if !f.is_nullable() && c.null_count() > 0 {
            return Err(SqlError::new(
                ErrorKind::NotNullViolation,
                format!(
                    "null value in column \"{}\" violates not-null constraint",
                    f.name()
                ),
            ));
        }
        if c.data_type() == f.data_type() {
            columns.push(c.clone());
        } else {
            columns.push(arrow::compute::cast(c, f.data_type())?);
        }
    }
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}
