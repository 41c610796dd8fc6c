//! DataFusion table providers over stored relations: what a `SELECT` reads.
//!
//! A table's rows are read from storage, a source's from its topic (see
//! [`crate::source_rows`]; a source spelled `CREATE TABLE … WITH
//! (connector = …)` keeps them in storage), a materialized view's from its
//! in-memory contents, when the physical plan is built; the engine
//! builds plans under its read lock, so a query sees every relation at one
//! consistent point. `WHERE column = constant` on a materialized view is
//! handed to the view's point lookup when its contents can answer it (the
//! filter is applied again above the scan, as for any inexact pushdown).

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::scalar::ScalarValue;
use millrace_dataflow::delta::Delta;
use millrace_storage::Store;

use crate::catalog::{Kind, Relation, SharedContents};
use crate::error::{SqlError, SqlResult};
use crate::source_rows::{read_failed, SourceRows};

/// A table, source or materialized view.
#[derive(Debug)]
pub struct StoredRelation {
    rel: Arc<Relation>,
    store: Store,
    /// A view's rows (`None` for tables and sources).
    contents: Option<SharedContents>,
    /// Where a source that keeps no rows reads them.
    source_rows: Option<Arc<SourceRows>>,
}

impl StoredRelation {
    /// A provider for `rel`.
    pub fn new(
        rel: Arc<Relation>,
        store: Store,
        contents: Option<SharedContents>,
        source_rows: Option<Arc<SourceRows>>,
    ) -> Self {
        Self {
            rel,
            store,
            contents,
            source_rows,
        }
    }
}

#[async_trait]
impl TableProvider for StoredRelation {
    fn schema(&self) -> SchemaRef {
        self.rel.schema.clone()
    }

    fn table_type(&self) -> TableType {
        match self.rel.kind {
            Kind::Table | Kind::Source => TableType::Base,
            Kind::MaterializedView => TableType::View,
        }
    }

    /// The creating statement: `pg_catalog.pg_class` reads it to list a
    /// materialized view as relkind `m` (psql's `\dm`).
    fn get_table_definition(&self) -> Option<&str> {
        Some(&self.rel.sql)
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| match self.point_filter(f) {
                Some(_) => TableProviderFilterPushDown::Inexact,
                None => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let looked_up = match (
            &self.contents,
            filters.iter().find_map(|f| self.point_filter(f)),
        ) {
            (Some(view), Some((column, value))) => {
                let view = view.read().unwrap_or_else(|p| p.into_inner());
                view.lookup(column, &value.to_array_of_size(1)?)
                    .map_err(|e| DataFusionError::External(Box::new(e)))?
            }
            _ => None,
        };
        let batches = match looked_up {
            Some(rows) => rows,
            None => contents(
                &self.rel,
                &self.store,
                self.contents.as_ref(),
                self.source_rows.as_deref(),
            )
            .map_err(|e| DataFusionError::External(Box::new(e)))?,
        };
        let exec: Arc<dyn ExecutionPlan> = MemorySourceConfig::try_new_exec(
            &[batches],
            self.rel.schema.clone(),
            projection.cloned(),
        )?;
        Ok(exec)
    }
}

impl StoredRelation {
    /// `column = constant` (either way round) on a view column its contents
    /// can look up, as the column's number and the constant.
    fn point_filter(&self, filter: &Expr) -> Option<(usize, ScalarValue)> {
        let view = self.contents.as_ref()?;
        let Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) = filter
        else {
            return None;
        };
        let (column, value) = match (left.as_ref(), right.as_ref()) {
            (Expr::Column(c), Expr::Literal(v, _)) | (Expr::Literal(v, _), Expr::Column(c)) => {
                (c, v)
            }
            _ => return None,
        };
        let index = self.rel.schema.index_of(&column.name).ok()?;
        if &value.data_type() != self.rel.schema.field(index).data_type() {
            return None;
        }
        let view = view.read().unwrap_or_else(|p| p.into_inner());
        view.can_look_up(index).then(|| (index, value.clone()))
    }
}

/// The current rows of `rel`, each row as often as it is there.
fn contents(
    rel: &Relation,
    store: &Store,
    view: Option<&SharedContents>,
    source_rows: Option<&SourceRows>,
) -> SqlResult<Vec<RecordBatch>> {
    match (rel.kind, view) {
        (Kind::Source, _) if !rel.keeps_rows => match source_rows {
            Some(rows) => rows.consumed().map_err(|e| read_failed(&rel.name, e)),
            None => Err(SqlError::internal(format!(
                "source \"{}\" has no reader of its topic",
                rel.name
            ))),
        },
        (Kind::Table | Kind::Source, _) => store
            .table_batches(rel.id)?
            .into_iter()
            .map(|b| conform(b, &rel.schema))
            .collect(),
        (Kind::MaterializedView, Some(view)) => {
            let view = view.read().unwrap_or_else(|p| p.into_inner());
            Ok(view.batches()?.as_ref().clone())
        }
        (Kind::MaterializedView, None) => Err(SqlError::internal(format!(
            "materialized view \"{}\" has no contents",
            rel.name
        ))),
    }
}

/// All of `rel` as one change inserting its rows: how a new view starts
/// from the existing contents of the relations it reads.
pub fn snapshot_delta(
    rel: &Relation,
    store: &Store,
    view: Option<&SharedContents>,
    source_rows: Option<&SourceRows>,
) -> SqlResult<Delta> {
    match (rel.kind, view) {
        (Kind::MaterializedView, Some(view)) => {
            let view = view.read().unwrap_or_else(|p| p.into_inner());
            Ok(view.as_delta()?.with_schema(rel.schema.clone())?)
        }
        _ => {
            let parts: Vec<Delta> = contents(rel, store, view, source_rows)?
                .into_iter()
                .map(Delta::inserts)
                .collect();
            if parts.is_empty() {
                return Ok(Delta::empty(rel.schema.clone()));
            }
            Ok(Delta::concat(&rel.schema, &parts)?)
        }
    }
}

/// `batch` relabelled with `schema` (same column types).
pub fn conform(batch: RecordBatch, schema: &SchemaRef) -> SqlResult<RecordBatch> {
    if batch.schema_ref() == schema {
        return Ok(batch);
    }
    Ok(RecordBatch::try_new(
        schema.clone(),
        batch.columns().to_vec(),
    )?)
}
