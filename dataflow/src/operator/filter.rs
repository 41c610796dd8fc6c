//! `WHERE`: keeps the changes whose row satisfies a predicate.

use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;

use super::Operator;
use crate::delta::Delta;
use crate::Closing;
use crate::{DataflowError, Result};

/// A stateless filter: a retraction passes exactly when its insertion did.
#[derive(Debug)]
pub struct Filter {
    predicate: Arc<dyn PhysicalExpr>,
    display: String,
    schema: SchemaRef,
}

impl Filter {
    /// Keeps rows of `schema` where `predicate` is true (NULL counts as false).
    pub fn new(predicate: Arc<dyn PhysicalExpr>, display: String, schema: SchemaRef) -> Self {
        Self {
            predicate,
            display,
            schema,
        }
    }
}

impl Operator for Filter {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn explain(&self) -> String {
        format!("Filter: {} (stateless)", self.display)
    }

    fn closings(&self, inputs: &[Vec<Option<Closing>>]) -> Vec<Option<Closing>> {
        inputs.first().cloned().unwrap_or_default()
    }

    fn append_only(&self, inputs: &[bool]) -> bool {
        inputs.iter().all(|a| *a)
    }

    fn on_change(&mut self, _input: usize, d: Delta) -> Result<Option<Delta>> {
        let mask = self.predicate.evaluate(&d.batch)?.into_array(d.len())?;
        let mask = mask
            .as_boolean_opt()
            .ok_or_else(|| DataflowError::Internal("filter predicate is not boolean".into()))?;
        // NULL counts as false, as in WHERE.
        let mask = if mask.null_count() > 0 {
            arrow::compute::prep_null_mask_filter(mask)
        } else {
            mask.clone()
        };
        Ok(Some(d.filter(&mask)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;
    use datafusion::logical_expr::Operator as BinOp;
    use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};
    use datafusion::scalar::ScalarValue;

    #[test]
    fn retractions_pass_where_their_insertions_did() {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
        let predicate = Arc::new(BinaryExpr::new(
            Arc::new(Column::new("a", 0)),
            BinOp::Gt,
            Arc::new(Literal::new(ScalarValue::Int64(Some(1)))),
        ));
        let mut f = Filter::new(predicate, "a > 1".into(), schema.clone());
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from(vec![
                Some(1),
                Some(2),
                None,
                Some(3),
            ]))],
        )
        .unwrap();
        let out = f
            .on_change(
                0,
                Delta {
                    batch,
                    weights: Int64Array::from(vec![1, -1, 1, 2]),
                },
            )
            .unwrap()
            .unwrap();
        assert_eq!(out.weights.values().to_vec(), vec![-1, 2]);
        assert_eq!(out.batch.num_rows(), 2);
    }
}
