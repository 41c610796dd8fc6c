//! DataFusion table providers over stored relations: what a `SELECT` reads.
//!
//! A scan copies the relation's current contents out of storage when the
//! physical plan is built; the engine builds plans under its read lock, so a
//! query sees every relation at one consistent point.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use millrace_planner::delta::Delta;
use millrace_storage::Store;

use crate::catalog::{Kind, Relation};
use crate::error::{SqlError, SqlResult};

/// Rows per batch when decoding view contents.
const BATCH_ROWS: usize = 8192;

/// A table or materialized view read from storage.
#[derive(Debug)]
pub struct StoredRelation {
    rel: Arc<Relation>,
    store: Store,
}

impl StoredRelation {
    /// A provider for `rel`.
    pub fn new(rel: Arc<Relation>, store: Store) -> Self {
        Self { rel, store }
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

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let batches = contents(&self.rel, &self.store)
            .map_err(|e| DataFusionError::External(Box::new(e)))?
            .into_iter()
            .map(|(b, _)| b)
            .collect::<Vec<_>>();
        let exec: Arc<dyn ExecutionPlan> = MemorySourceConfig::try_new_exec(
            &[batches],
            self.rel.schema.clone(),
            projection.cloned(),
        )?;
        Ok(exec)
    }
}

/// The current contents of `rel` as batches. For a view, the second item
/// holds each row's multiplicity (rows are not repeated); for a table it is
/// `None` (every row counts once).
fn contents(rel: &Relation, store: &Store) -> SqlResult<Vec<(RecordBatch, Option<Int64Array>)>> {
    match rel.kind {
        Kind::Table | Kind::Source => Ok(store
            .table_batches(rel.id)?
            .into_iter()
            .map(|b| conform(b, &rel.schema).map(|b| (b, None)))
            .collect::<SqlResult<_>>()?),
        Kind::MaterializedView => {
            let rows = store.view_rows(rel.id)?;
            decode_view_rows(&rel.schema, rows, true)
        }
    }
}

/// Decodes stored view rows. With `repeat`, a row of multiplicity n appears
/// n times and no weights are returned; otherwise each row once, weighted.
pub fn decode_view_rows(
    schema: &SchemaRef,
    rows: Vec<(Vec<u8>, i64)>,
    repeat: bool,
) -> SqlResult<Vec<(RecordBatch, Option<Int64Array>)>> {
    let converter = row_converter(schema)?;
    let parser = converter.parser();
    let mut out = Vec::new();
    for chunk in rows.chunks(BATCH_ROWS) {
        let mut parsed = Vec::with_capacity(chunk.len());
        let mut weights = Vec::with_capacity(chunk.len());
        for (key, count) in chunk {
            if repeat {
                for _ in 0..*count {
                    parsed.push(parser.parse(key));
                }
            } else {
                parsed.push(parser.parse(key));
                weights.push(*count);
            }
        }
        let columns: Vec<ArrayRef> = converter.convert_rows(parsed)?;
        let batch = RecordBatch::try_new_with_options(
            schema.clone(),
            columns,
            &arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(if repeat {
                chunk.iter().map(|(_, c)| *c as usize).sum()
            } else {
                chunk.len()
            })),
        )?;
        out.push((batch, (!repeat).then(|| Int64Array::from(weights))));
    }
    Ok(out)
}

/// All of `rel` as one change inserting its rows: how a new view starts
/// from the existing contents of the relations it reads.
pub fn snapshot_delta(rel: &Relation, store: &Store) -> SqlResult<Delta> {
    let parts: Vec<Delta> = match rel.kind {
        Kind::Table | Kind::Source => contents(rel, store)?
            .into_iter()
            .map(|(b, _)| Delta::inserts(b))
            .collect(),
        Kind::MaterializedView => decode_view_rows(&rel.schema, store.view_rows(rel.id)?, false)?
            .into_iter()
            .map(|(batch, w)| Delta {
                batch,
                weights: w.unwrap_or_else(|| Int64Array::from(Vec::<i64>::new())),
            })
            .collect(),
    };
    if parts.is_empty() {
        return Ok(Delta::empty(rel.schema.clone()));
    }
    Ok(Delta::concat(&rel.schema, &parts)?)
}

/// The order-preserving row encoding of a view's rows: a view row's storage key.
pub fn row_converter(schema: &SchemaRef) -> SqlResult<RowConverter> {
    RowConverter::new(
        schema
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect(),
    )
    .map_err(SqlError::from)
}

/// `batch` relabelled with `schema` (same column types).
fn conform(batch: RecordBatch, schema: &SchemaRef) -> SqlResult<RecordBatch> {
    if batch.schema_ref() == schema {
        return Ok(batch);
    }
    Ok(RecordBatch::try_new(
        schema.clone(),
        batch.columns().to_vec(),
    )?)
}
