//! The select list: new columns computed from each changed row.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::physical_expr::PhysicalExpr;

use super::Operator;
use crate::closing::expr_closing;
use crate::delta::Delta;
use crate::Closing;
use crate::Result;

/// A stateless projection: each change keeps its weight.
#[derive(Debug)]
pub struct Project {
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    display: Vec<String>,
    schema: SchemaRef,
}

impl Project {
    /// Computes `exprs` (shown as `display`) into rows of `schema`.
    pub fn new(exprs: Vec<Arc<dyn PhysicalExpr>>, display: Vec<String>, schema: SchemaRef) -> Self {
        Self {
            exprs,
            display,
            schema,
        }
    }
}

impl Operator for Project {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn explain(&self) -> String {
        format!("Project: {} (stateless)", self.display.join(", "))
    }

    fn closings(&self, inputs: &[Vec<Option<Closing>>]) -> Vec<Option<Closing>> {
        let inner = inputs.first().cloned().unwrap_or_default();
        self.exprs.iter().map(|e| expr_closing(e, &inner)).collect()
    }

    fn append_only(&self, inputs: &[bool]) -> bool {
        inputs.iter().all(|a| *a)
    }

    fn on_change(&mut self, _input: usize, d: Delta) -> Result<Option<Delta>> {
        let n = d.len();
        let columns = self
            .exprs
            .iter()
            .map(|e| e.evaluate(&d.batch).and_then(|v| v.into_array(n)))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let batch = RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(n)),
        )?;
        Ok(Some(Delta {
            batch,
            weights: d.weights,
        }))
    }
}
