//! Changes: the unit of work between operators.

use std::sync::Arc;

use arrow::array::{Array, Int64Array};
use arrow::compute::{concat_batches, filter_record_batch};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use crate::Result;

/// A batch of row changes: row `i` of `batch` is inserted `weights[i]` times
/// when positive and retracted `-weights[i]` times when negative.
#[derive(Clone, Debug)]
pub struct Delta {
    /// The changed rows.
    pub batch: RecordBatch,
    /// One signed multiplicity per row.
    pub weights: Int64Array,
}

impl Delta {
    /// Rows all inserted once (what an `INSERT` produces).
    pub fn inserts(batch: RecordBatch) -> Self {
        let weights = Int64Array::from(vec![1i64; batch.num_rows()]);
        Self { batch, weights }
    }

    /// No change, with `schema`.
    pub fn empty(schema: SchemaRef) -> Self {
        Self {
            batch: RecordBatch::new_empty(schema),
            weights: Int64Array::from(Vec::<i64>::new()),
        }
    }

    /// Number of changed rows.
    pub fn len(&self) -> usize {
        self.batch.num_rows()
    }

    /// True when no row changed.
    pub fn is_empty(&self) -> bool {
        self.batch.num_rows() == 0
    }

    /// Keeps the rows where `mask` is true.
    pub fn filter(&self, mask: &arrow::array::BooleanArray) -> Result<Self> {
        let batch = filter_record_batch(&self.batch, mask)?;
        let weights = arrow::compute::filter(&self.weights, mask)?;
        let weights = weights
            .as_any()
            .downcast_ref::<Int64Array>()
            .cloned()
            .unwrap_or_else(|| Int64Array::from(Vec::<i64>::new()));
        Ok(Self { batch, weights })
    }

    /// Concatenates changes that share `schema`.
    pub fn concat(schema: &SchemaRef, parts: &[Delta]) -> Result<Self> {
        let batches: Vec<&RecordBatch> = parts.iter().map(|d| &d.batch).collect();
        let batch = concat_batches(schema, batches)?;
        let weights: Vec<i64> = parts
            .iter()
            .flat_map(|d| d.weights.values().iter().copied())
            .collect();
        Ok(Self {
            batch,
            weights: Int64Array::from(weights),
        })
    }

    /// The same rows under another schema with the same column types.
    pub fn with_schema(self, schema: SchemaRef) -> Result<Self> {
        let columns: Vec<Arc<dyn Array>> = self
            .batch
            .columns()
            .iter()
            .zip(schema.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(c.clone())
                } else {
                    arrow::compute::cast(c, f.data_type())
                }
            })
            .collect::<Result<_, _>>()?;
        let batch = RecordBatch::try_new_with_options(
            schema,
            columns,
            &arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(self.len())),
        )?;
        Ok(Self {
            batch,
            weights: self.weights,
        })
    }
}
