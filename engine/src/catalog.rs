//! The catalog of relations: tables and materialized views, by name, with
//! what DataFusion needs to read them and what the planner needs to know
//! about their changes.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::SchemaProvider;
use datafusion::datasource::TableProvider;
use datafusion::error::Result as DfResult;
use millrace_dataflow::contents::ViewContents;
use millrace_planner::event_time::EventTime;
use millrace_planner::window::RelationLookup;
use millrace_storage::{RelationId, Store};
use serde::{Deserialize, Serialize};

use crate::providers::StoredRelation;
use crate::source_rows::SourceRows;

/// What a relation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `CREATE TABLE`: rows come from `INSERT`.
    Table,
    /// `CREATE MATERIALIZED VIEW`: rows are maintained by a dataflow.
    MaterializedView,
    /// `CREATE SOURCE`: rows come from a Kafka topic.
    Source,
}

impl Kind {
    /// The name PostgreSQL uses in messages ("table", "materialized view").
    pub fn noun(self) -> &'static str {
        match self {
            Kind::Table => "table",
            Kind::MaterializedView => "materialized view",
            Kind::Source => "source",
        }
    }
}

/// One relation as recorded in the catalog.
#[derive(Debug)]
pub struct Relation {
    /// Stable id: the key of its data in storage.
    pub id: RelationId,
    /// Name (lower-case unless quoted at creation).
    pub name: String,
    /// Table or view.
    pub kind: Kind,
    /// Columns.
    pub schema: SchemaRef,
    /// The statement that created it, replayed at startup.
    pub sql: String,
    /// Relations a view reads (empty for tables).
    pub inputs: Vec<String>,
    /// The declared event time of a table or source (`WATERMARK FOR`).
    pub event_time: Option<EventTime>,
    /// Its rows are kept in the table log: true for tables (and `CREATE
    /// TABLE … WITH (connector = …)`), false for `CREATE SOURCE`, whose rows
    /// stay in the topic (see `source_rows`), and for views.
    pub keeps_rows: bool,
}

/// The durable form of a catalog entry.
#[derive(Serialize, Deserialize)]
pub struct CatalogRecord {
    /// See [`Relation::id`].
    pub id: RelationId,
    /// See [`Relation::name`].
    pub name: String,
    /// See [`Relation::kind`].
    pub kind: Kind,
    /// See [`Relation::sql`].
    pub sql: String,
    /// See [`Relation::inputs`].
    pub inputs: Vec<String>,
}

impl CatalogRecord {
    /// The record of `rel`.
    pub fn of(rel: &Relation) -> Self {
        Self {
            id: rel.id,
            name: rel.name.clone(),
            kind: rel.kind,
            sql: rel.sql.clone(),
            inputs: rel.inputs.clone(),
        }
    }
}

/// The in-memory rows of a materialized view, shared by the engine (which
/// changes them) and the scans of the view.
pub type SharedContents = Arc<RwLock<ViewContents>>;

/// All relations, shared by the engine, DataFusion and the planner.
#[derive(Debug)]
pub struct Catalog {
    relations: RwLock<HashMap<String, Arc<Relation>>>,
    /// The contents of materialized views, by relation id.
    contents: RwLock<HashMap<RelationId, SharedContents>>,
    /// How to read the rows of sources that keep none, by relation id.
    source_rows: RwLock<HashMap<RelationId, Arc<SourceRows>>>,
    store: Store,
}

impl Catalog {
    /// An empty catalog over `store`.
    pub fn new(store: Store) -> Self {
        Self {
            relations: RwLock::new(HashMap::new()),
            contents: RwLock::new(HashMap::new()),
            source_rows: RwLock::new(HashMap::new()),
            store,
        }
    }

    /// The relation called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Relation>> {
        self.read().get(name).cloned()
    }

    /// Adds (or replaces) a relation.
    pub fn insert(&self, rel: Arc<Relation>) {
        self.write().insert(rel.name.clone(), rel);
    }

    /// Removes relation `name`.
    pub fn remove(&self, name: &str) {
        if let Some(rel) = self.write().remove(name) {
            self.contents
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&rel.id);
            self.source_rows
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&rel.id);
        }
    }

    /// Sets where the rows of materialized view `id` are.
    pub fn set_contents(&self, id: RelationId, contents: SharedContents) {
        self.contents
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, contents);
    }

    /// Sets how the rows of source `id` (one that keeps none) are read.
    pub fn set_source_rows(&self, id: RelationId, rows: Arc<SourceRows>) {
        self.source_rows
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, rows);
    }

    /// How the rows of source `id` are read, if it keeps none.
    pub fn source_rows(&self, id: RelationId) -> Option<Arc<SourceRows>> {
        self.source_rows
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    /// All relations in creation order (which is dependency order).
    pub fn all(&self) -> Vec<Arc<Relation>> {
        let mut v: Vec<_> = self.read().values().cloned().collect();
        v.sort_by_key(|r| r.id);
        v
    }

    /// Views that read `name`, directly or through other views, newest first
    /// (the order in which they can be dropped).
    pub fn dependents(&self, name: &str) -> Vec<Arc<Relation>> {
        let all = self.all();
        let mut names = vec![name.to_string()];
        let mut out: Vec<Arc<Relation>> = Vec::new();
        for r in &all {
            if r.inputs.iter().any(|i| names.contains(i)) {
                names.push(r.name.clone());
                out.push(r.clone());
            }
        }
        out.reverse();
        out
    }

    /// A DataFusion provider reading `rel` from storage.
    pub fn provider(&self, rel: Arc<Relation>) -> Arc<dyn TableProvider> {
        let contents = self
            .contents
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&rel.id)
            .cloned();
        let source_rows = self.source_rows(rel.id);
        Arc::new(StoredRelation::new(
            rel,
            self.store.clone(),
            contents,
            source_rows,
        ))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Relation>>> {
        // A poisoned lock only means another thread panicked while holding
        // it; the map itself is always left consistent (single inserts).
        self.relations.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Relation>>> {
        self.relations.write().unwrap_or_else(|p| p.into_inner())
    }
}

impl RelationLookup for Catalog {
    fn relation(&self, name: &str) -> Option<Arc<dyn TableProvider>> {
        self.get(name).map(|r| self.provider(r))
    }

    fn is_append_only(&self, name: &str) -> bool {
        matches!(
            self.get(name).map(|r| r.kind),
            Some(Kind::Table | Kind::Source)
        )
    }

    fn event_time(&self, name: &str) -> Option<EventTime> {
        self.get(name).and_then(|r| r.event_time.clone())
    }
}

/// The `public` schema as DataFusion sees it.
#[derive(Debug)]
pub struct CatalogSchema(pub Arc<Catalog>);

#[async_trait]
impl SchemaProvider for CatalogSchema {
    fn table_names(&self) -> Vec<String> {
        self.0.all().iter().map(|r| r.name.clone()).collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        Ok(self.0.get(name).map(|r| self.0.provider(r)))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.0.get(name).is_some()
    }
}
