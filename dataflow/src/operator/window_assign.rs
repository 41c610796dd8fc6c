//! `TUMBLE` and `HOP`: stateless assignment of `window_start` and
//! `window_end` (a `HOP` row belongs to several windows and is repeated).

use arrow::datatypes::SchemaRef;

use super::Operator;
use crate::delta::Delta;
use crate::window::{assign_windows, WindowSpec};
use crate::Closing;
use crate::{DataflowError, Result};

/// Window assignment over one input.
#[derive(Debug)]
pub struct WindowAssign {
    spec: WindowSpec,
    schema: SchemaRef,
}

impl WindowAssign {
    /// Assigns the windows of `spec`, producing `schema` (the input's
    /// columns, then `window_start`, `window_end`).
    pub fn new(spec: WindowSpec, schema: SchemaRef) -> Self {
        Self { spec, schema }
    }
}

impl Operator for WindowAssign {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn explain(&self) -> String {
        format!("WindowAssign: {} (stateless)", self.spec)
    }

    /// `window_start` closes one window size after the time column's
    /// watermark, `window_end` with it.
    fn closings(&self, inputs: &[Vec<Option<Closing>>]) -> Vec<Option<Closing>> {
        let mut out = inputs.first().cloned().unwrap_or_default();
        let time = out.get(self.spec.time_column).cloned().flatten();
        let time = time.filter(|c| c.after_ns == 1);
        out.push(time.clone().map(|c| Closing {
            relation: c.relation.clone(),
            after_ns: self.spec.size_ns,
        }));
        out.push(time.map(|c| Closing {
            relation: c.relation,
            after_ns: 0,
        }));
        out
    }

    fn append_only(&self, inputs: &[bool]) -> bool {
        inputs.iter().all(|a| *a)
    }

    fn on_change(&mut self, _input: usize, d: Delta) -> Result<Option<Delta>> {
        let (batch, weights) =
            assign_windows(&d.batch, Some(&d.weights), &self.spec, &self.schema)?;
        let weights = weights.ok_or_else(|| DataflowError::Internal("window weights".into()))?;
        Ok(Some(Delta { batch, weights }))
    }
}
