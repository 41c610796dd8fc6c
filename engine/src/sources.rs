//! The engine's side of sources: creating them, starting their ingest
//! threads, `FLUSH`, and stopping them at shutdown.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use arrow::record_batch::RecordBatch;
use millrace_connectors::config::SourceConfig;
use millrace_connectors::kafka::{self, Probe, SourceRunner};
use millrace_connectors::sink::{Arrival, BatchSink, SinkError};
use millrace_connectors::status::SourceStatus;
use millrace_connectors::ConnectorError;
use millrace_planner::source::SourceDef;
use millrace_storage::{Commit, RelationId};

use super::event_time::Progress;
use super::source_options::{metadata_sql_type, source_config};
use super::{check_unique_columns, encode_record, parse_one, Engine, Outcome, FLUSH_TIMEOUT};
use crate::catalog::{Kind, Relation};
use crate::error::{ErrorKind, SqlError, SqlResult};
use crate::source_rows::SourceRows;

impl Engine {
    /// Validates a source definition into its settings and columns.
    pub(super) async fn source_config(&self, def: &SourceDef) -> SqlResult<SourceConfig> {
        if def.columns.is_empty() {
            return Err(SqlError::new(
                ErrorKind::InvalidParameterValue,
                format!("source \"{}\" declares no columns", def.name),
            )
            .with_hint("List the payload's fields: CREATE SOURCE name (field TYPE, …) WITH (…)."));
        }
        if let Some(c) = def.columns.iter().find(|c| !c.options.is_empty()) {
            return Err(SqlError::unsupported(format!(
                "column constraints and defaults on source columns (column \"{}\"); every source column is nullable, and a missing field is NULL",
                c.name.value
            )));
        }
        // DataFusion has no JSON type: a JSONB column holds JSON text, and
        // `->`, `->>` and jsonb_extract_path reach into it.
        let mut json_columns = Vec::with_capacity(def.columns.len());
        let mut columns = Vec::with_capacity(def.columns.len() + def.includes.len());
        for c in &def.columns {
            let mut c = c.clone();
            let is_json = matches!(
                c.data_type,
                sqlparser::ast::DataType::JSON | sqlparser::ast::DataType::JSONB
            );
            if is_json {
                c.data_type = sqlparser::ast::DataType::Text;
            }
            json_columns.push(is_json);
            columns.push(c.to_string());
        }
        for i in &def.includes {
            columns.push(format!(
                "\"{}\" {}",
                i.column.replace('"', "\"\""),
                metadata_sql_type(i.metadata)
            ));
        }
        let sql = format!(
            "CREATE TABLE \"{}\" ({})",
            def.name.replace('"', "\"\""),
            columns.join(", ")
        );
        let schema = self.table_schema(&parse_one(&sql)?).await?;
        check_unique_columns(&schema)?;
        source_config(def, schema, json_columns)
    }

    /// `CREATE SOURCE`: checks that the topic exists, fixes where each
    /// partition starts, records the source and starts its ingest thread.
    pub(super) async fn create_source(&self, def: &SourceDef) -> SqlResult<Outcome> {
        let tag = if def.spelled_as_table {
            "CREATE TABLE"
        } else {
            "CREATE SOURCE"
        };
        if let Some(existing) = self.catalog.get(&def.name) {
            return self.exists(&existing, def.if_not_exists, tag);
        }
        let config = self.source_config(def).await?;
        // Ask the broker before taking the write lock: it may take up to
        // connect.timeout.ms, and writers should not wait for it.
        let probe = config.clone();
        let offsets =
            tokio::task::spawn_blocking(move || -> Result<Vec<(i32, i64)>, ConnectorError> {
                let c = kafka::consumer(&probe)?;
                let parts = kafka::partitions(&c, &probe, probe.connect_timeout)?;
                kafka::start_offsets(&c, &probe, &parts, probe.connect_timeout)
            })
            .await
            .map_err(|e| SqlError::internal(format!("the broker check did not finish: {e}")))?
            .map_err(|e| match e {
                ConnectorError::UnknownTopic { .. } => {
                    SqlError::new(ErrorKind::UndefinedObject, e.to_string())
                        .with_hint("Create the topic first; Millrace does not create topics.")
                }
                // librdkafka refused a properties.* setting: the statement's fault.
                ConnectorError::ClientSettings(_) => {
                    SqlError::new(ErrorKind::InvalidParameterValue, e.to_string())
                }
                _ => SqlError::new(ErrorKind::UnableToConnect, e.to_string())
                    .with_hint("Check properties.bootstrap.server and that the broker is running."),
            })?;
        let mut pipelines = self.pipelines.write().await;
        if let Some(existing) = self.catalog.get(&def.name) {
            return self.exists(&existing, def.if_not_exists, tag);
        }
        let id = self.store.next_relation_id()?;
        let rel = Arc::new(Relation {
            id,
            name: def.name.clone(),
            kind: Kind::Source,
            schema: config.schema.clone(),
            sql: def.to_string(),
            inputs: vec![],
            event_time: config.event_time.clone(),
            keeps_rows: def.spelled_as_table,
        });
        let mut commit = Commit::new();
        commit.reserve_relation_id(id);
        commit.put_catalog(&rel.name, encode_record(&rel)?);
        for (p, o) in &offsets {
            commit.set_source_offset(id, *p, *o);
            if !rel.keeps_rows {
                commit.set_source_start(id, *p, *o);
            }
        }
        self.commit(commit)?;
        self.catalog.insert(rel.clone());
        self.register_source_rows(&rel, &config);
        if rel.event_time.is_some() {
            pipelines.event_times.insert(id, Progress::default());
            self.publish_event_time(&pipelines);
        }
        drop(pipelines);
        self.start_source(rel, config)?;
        Ok(Outcome::command(tag))
    }

    /// Lets readers of source `rel` find its rows in the topic, if it keeps
    /// none.
    pub(super) fn register_source_rows(&self, rel: &Relation, config: &SourceConfig) {
        if rel.keeps_rows {
            return;
        }
        let rows = SourceRows::new(
            rel.id,
            rel.schema.clone(),
            config.clone(),
            self.store.clone(),
        );
        self.catalog.set_source_rows(rel.id, Arc::new(rows));
    }

    /// Starts the ingest thread of source `rel`.
    pub(super) fn start_source(&self, rel: Arc<Relation>, config: SourceConfig) -> SqlResult<()> {
        let committed = self.store.source_offsets(rel.id)?;
        let status = SourceStatus::new(&rel.name, &config.topic, &committed);
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| SqlError::internal(format!("no runtime for the source thread: {e}")))?;
        let id = rel.id;
        let name = rel.name.clone();
        let sink = Box::new(SourceSink {
            engine: self.me.clone(),
            rel,
            runtime,
        });
        let runner = SourceRunner::start(name, sink, config, status)
            .map_err(|e| SqlError::internal(format!("cannot start the source thread: {e}")))?;
        self.registry.insert(runner.probe());
        self.lock_sources().insert(id, runner);
        Ok(())
    }

    /// The committed next offset of every partition of source `id`.
    pub fn source_offsets(&self, id: RelationId) -> SqlResult<Vec<(i32, i64)>> {
        Ok(self.store.source_offsets(id)?)
    }

    pub(super) fn lock_sources(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<RelationId, SourceRunner>> {
        // The map is only ever changed by single inserts and removes.
        self.sources.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `FLUSH [source, …]`: waits until each source (every source when
    /// none is named) has committed everything its partitions held when
    /// FLUSH was called. Tables need no waiting: an INSERT is in every view
    /// when it returns. The sources are waited for together, so that a
    /// FLUSH that cannot finish names every source that holds it up, and a
    /// partition found stalled ends the wait at once instead of at the
    /// timeout.
    pub(super) async fn flush(&self, names: &[String]) -> SqlResult<Outcome> {
        let probes = self.flush_probes(names)?;
        let deadline = tokio::time::Instant::now() + FLUSH_TIMEOUT;
        let mut waits = tokio::task::JoinSet::new();
        for probe in probes {
            waits.spawn(async move {
                let name = probe.status.name.clone();
                (name, wait_caught_up(probe, deadline).await)
            });
        }
        let mut blocked: Vec<(String, Blocked)> = Vec::new();
        while let Some(done) = waits.join_next().await {
            match done {
                Ok((_, Ok(()))) => {}
                Ok((name, Err(b))) => blocked.push((name, b)),
                Err(e) => return Err(SqlError::internal(format!("FLUSH wait failed: {e}"))),
            }
        }
        if !blocked.is_empty() {
            return Err(flush_blocked(blocked, names.is_empty()));
        }
        // FLUSH also makes everything it waited for part of a checkpoint.
        self.checkpoint().await?;
        Ok(Outcome::command("FLUSH"))
    }

    /// The running sources `FLUSH names` waits for (all when `names` is
    /// empty); an error for a name that is not a source.
    fn flush_probes(&self, names: &[String]) -> SqlResult<Vec<Probe>> {
        let sources = self.lock_sources();
        if names.is_empty() {
            return Ok(sources.values().map(SourceRunner::probe).collect());
        }
        let mut probes = Vec::with_capacity(names.len());
        for name in names {
            let Some(rel) = self.catalog.get(name) else {
                return Err(SqlError::new(
                    ErrorKind::UndefinedTable,
                    format!("source \"{name}\" does not exist"),
                ));
            };
            if rel.kind != Kind::Source {
                return Err(SqlError::new(
                    ErrorKind::WrongObjectType,
                    format!("\"{name}\" is not a source"),
                )
                .with_hint(
                    "FLUSH names sources. A table needs no FLUSH: an INSERT is in every view \
                     when it returns.",
                ));
            }
            match sources.get(&rel.id) {
                Some(runner) => probes.push(runner.probe()),
                None => {
                    return Err(SqlError::internal(format!(
                        "source \"{name}\" has no ingest thread"
                    )))
                }
            }
        }
        Ok(probes)
    }

    /// Stops every source's ingest thread and waits for them (shutdown).
    pub async fn shutdown(&self) {
        let runners: Vec<SourceRunner> = self.lock_sources().drain().map(|(_, r)| r).collect();
        for r in &runners {
            r.stop();
        }
        let joined =
            tokio::task::spawn_blocking(move || runners.into_iter().for_each(SourceRunner::join));
        if tokio::time::timeout(std::time::Duration::from_secs(10), joined)
            .await
            .is_err()
        {
            tracing::warn!("source threads did not stop within 10 s");
        }
        if let Err(e) = self.checkpoint().await {
            tracing::warn!("final checkpoint failed (recovery will replay the log): {e}");
        }
    }
}

/// Why `FLUSH` could not finish waiting for one source.
enum Blocked {
    /// The broker did not say where the partitions end.
    EndUnknown(String),
    /// The source's thread stopped (the source was dropped).
    Stopped,
    /// A partition short of its target makes no progress.
    Stalled(String),
    /// Still short of the targets at the deadline: what is missing.
    TimedOut(String),
}

/// Waits until the source of `probe` has consumed what its partitions
/// held when asked, or `deadline`.
async fn wait_caught_up(probe: Probe, deadline: tokio::time::Instant) -> Result<(), Blocked> {
    let targets = match tokio::time::timeout_at(deadline, probe.high_watermarks()).await {
        Err(_) => {
            return Err(Blocked::EndUnknown(
                "the broker did not report the partitions' ends".into(),
            ))
        }
        Ok(Err(e)) => return Err(Blocked::EndUnknown(e.to_string())),
        Ok(Ok(t)) => t,
    };
    let mut rx = probe.status.watch_caught_up();
    loop {
        let behind = lagging(&rx.borrow_and_update(), &targets);
        if behind.is_empty() {
            return Ok(());
        }
        let stalls = probe.status.stalls();
        let stalled: Vec<String> = behind
            .iter()
            .filter_map(|(p, _)| stalls.get(p).cloned())
            .collect();
        if !stalled.is_empty() {
            return Err(Blocked::Stalled(stalled.join("; ")));
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(Blocked::Stopped),
            Err(_) => {
                let detail: Vec<String> = behind.into_iter().map(|(_, d)| d).collect();
                return Err(Blocked::TimedOut(detail.join("; ")));
            }
        }
    }
}

/// The error of a `FLUSH` some sources held up: names each, says why, and
/// how to wait for the others only.
fn flush_blocked(mut blocked: Vec<(String, Blocked)>, all: bool) -> SqlError {
    blocked.sort_by(|a, b| a.0.cmp(&b.0));
    let names = blocked
        .iter()
        .map(|(n, _)| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let kind = if blocked
        .iter()
        .all(|(_, b)| matches!(b, Blocked::EndUnknown(_)))
    {
        ErrorKind::ConnectionFailure
    } else {
        ErrorKind::QueryCanceled
    };
    let noun = if blocked.len() == 1 {
        "source"
    } else {
        "sources"
    };
    let detail = blocked
        .iter()
        .map(|(n, b)| match b {
            Blocked::EndUnknown(e) => {
                format!("source \"{n}\": cannot read where its partitions end: {e}")
            }
            Blocked::Stopped => format!("source \"{n}\" stopped during FLUSH"),
            Blocked::Stalled(why) => format!("source \"{n}\" is stalled: {why}"),
            Blocked::TimedOut(behind) => format!(
                "source \"{n}\" is still behind after {} s: {behind}",
                FLUSH_TIMEOUT.as_secs()
            ),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut hint = String::from(
        "See millrace_catalog.source_partitions for each partition's state and last error.",
    );
    if all {
        hint.push_str(" FLUSH source_name, … waits for the named sources only.");
    }
    SqlError::new(
        kind,
        format!("FLUSH cannot finish: held up by {noun} {names}"),
    )
    .with_detail(detail)
    .with_hint(hint)
}

/// The partitions still short of their FLUSH target, described.
fn lagging(caught_up: &BTreeMap<i32, i64>, targets: &BTreeMap<i32, i64>) -> Vec<(i32, String)> {
    targets
        .iter()
        .filter_map(|(p, target)| {
            let at = caught_up.get(p).copied().unwrap_or(0);
            (at < *target).then(|| (*p, format!("partition {p} is at offset {at} of {target}")))
        })
        .collect()
}

/// The `SourceDef` a stored `CREATE SOURCE` holds.
pub(super) fn parse_source(sql: &str) -> SqlResult<SourceDef> {
    let mut stmts = millrace_planner::statement::parse(sql)?;
    match (stmts.pop(), stmts.is_empty()) {
        (Some(millrace_planner::statement::Statement::CreateSource(def)), true) => Ok(*def),
        _ => Err(SqlError::internal(format!(
            "stored statement is not one CREATE SOURCE: {sql}"
        ))),
    }
}

/// The engine as the receiver of one source's batches: each batch is
/// committed (rows, view changes, offsets) by [`Engine::ingest`].
struct SourceSink {
    /// Weak: the engine owns the source's thread, not the other way round.
    engine: Weak<Engine>,
    rel: Arc<Relation>,
    runtime: tokio::runtime::Handle,
}

impl BatchSink for SourceSink {
    fn is_open(&self) -> bool {
        self.engine.strong_count() > 0
    }

    fn committed_offsets(&self) -> Result<BTreeMap<i32, i64>, SinkError> {
        let engine = self.engine.upgrade().ok_or(SinkError::Closed)?;
        match engine.source_offsets(self.rel.id) {
            Ok(o) => Ok(o.into_iter().collect()),
            Err(e) => Err(SinkError::Refused(Box::new(e))),
        }
    }

    fn push(
        &self,
        rows: Option<RecordBatch>,
        next_offsets: &BTreeMap<i32, i64>,
        arrival: &Arrival,
    ) -> Result<(), SinkError> {
        let engine = self.engine.upgrade().ok_or(SinkError::Closed)?;
        let result = self
            .runtime
            .block_on(engine.ingest(&self.rel, rows, next_offsets, arrival));
        match result {
            Ok(()) => Ok(()),
            // The source was dropped (or replaced) while the batch waited.
            Err(_) if engine.relation(&self.rel.name).map(|r| r.id) != Some(self.rel.id) => {
                Err(SinkError::Closed)
            }
            Err(e) => Err(SinkError::Refused(Box::new(e))),
        }
    }
}
