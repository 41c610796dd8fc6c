//! `TUMBLE` and `HOP`: stateless assignment of `window_start` and
//! `window_end` (a `HOP` row belongs to several windows and is repeated).

use arrow::datatypes::{Schema, SchemaRef};

use super::Operator;
use crate::delta::Delta;
use crate::window::{assign_windows, windowed_schema, WindowSpec};
use crate::Closing;
use crate::{DataflowError, Result};

/// Window assignment over one input.
#[derive(Debug)]
pub struct WindowAssign {
    /// The assignment, its time column an index into the kept columns.
    spec: WindowSpec,
    /// The input columns passed on (all of them when `None`): a `HOP`
    /// repeats a row once per window, so columns nobody downstream reads
    /// would be copied several times over (a tenth of q5's time with the
    /// bids' long strings).
    keep: Option<Vec<usize>>,
    /// Names of the kept columns, for EXPLAIN.
    kept_names: Vec<String>,
    schema: SchemaRef,
}

impl WindowAssign {
    /// Assigns the windows of `spec`, producing `schema` (the input's
    /// columns, then `window_start`, `window_end`).
    pub fn new(spec: WindowSpec, schema: SchemaRef) -> Self {
        Self {
            spec,
            keep: None,
            kept_names: Vec::new(),
            schema,
        }
    }

    /// Assigns the windows of `spec` (its time column an index into the
    /// input) over only the input columns `keep` (in input order; must
    /// include the time column), producing the kept columns of `input`,
    /// then `window_start`, `window_end`.
    pub fn narrowed(spec: WindowSpec, input: &Schema, keep: Vec<usize>) -> Result<Self> {
        let time = keep
            .iter()
            .position(|&i| i == spec.time_column)
            .ok_or_else(|| {
                DataflowError::Internal("window assignment without its time column".into())
            })?;
        let fields = keep
            .iter()
            .map(|&i| {
                input.fields().get(i).cloned().ok_or_else(|| {
                    DataflowError::Internal(format!("window input has no column {i}"))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let kept_names = fields.iter().map(|f| f.name().clone()).collect();
        let schema = windowed_schema(&Schema::new(fields), time);
        Ok(Self {
            spec: WindowSpec {
                time_column: time,
                ..spec
            },
            keep: Some(keep),
            kept_names,
            schema,
        })
    }
}

impl Operator for WindowAssign {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn explain(&self) -> String {
        match &self.keep {
            None => format!("WindowAssign: {} (stateless)", self.spec),
            Some(_) => format!(
                "WindowAssign: {} over [{}] (stateless)",
                self.spec,
                self.kept_names.join(", ")
            ),
        }
    }

    /// `window_start` closes one window size after the time column's
    /// watermark, `window_end` with it.
    fn closings(&self, inputs: &[Vec<Option<Closing>>]) -> Vec<Option<Closing>> {
        let inner = inputs.first().cloned().unwrap_or_default();
        let mut out = match &self.keep {
            None => inner,
            Some(keep) => keep
                .iter()
                .map(|&i| inner.get(i).cloned().flatten())
                .collect(),
        };
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
        let input = match &self.keep {
            None => d.batch,
            Some(keep) => d.batch.project(keep)?,
        };
        let (batch, weights) = assign_windows(&input, Some(&d.weights), &self.spec, &self.schema)?;
        let weights = weights.ok_or_else(|| DataflowError::Internal("window weights".into()))?;
        Ok(Some(Delta { batch, weights }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::WindowKind;
    use arrow::array::{Array, AsArray, Int64Array, StringArray, TimestampNanosecondArray};
    use arrow::datatypes::{DataType, Field, Int64Type, TimeUnit};
    use arrow::record_batch::RecordBatch;
    use std::sync::Arc;

    const S: i64 = 1_000_000_000;

    #[test]
    fn a_narrowed_hop_repeats_only_the_kept_columns_and_keeps_their_closings() {
        let input = Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("long", DataType::Utf8, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
        ]);
        let spec = WindowSpec {
            kind: WindowKind::Hop,
            time_column: 2,
            time_column_name: "ts".into(),
            slide_ns: 5 * S,
            size_ns: 10 * S,
            offset_ns: 0,
        };
        let mut op = WindowAssign::narrowed(spec, &input, vec![0, 2]).unwrap();
        let names: Vec<_> = op
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["a", "ts", "window_start", "window_end"]);
        assert!(op.explain().contains("over [a, ts]"), "{}", op.explain());

        let batch = RecordBatch::try_new(
            Arc::new(input),
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec!["x", "y"])),
                Arc::new(TimestampNanosecondArray::from(vec![7 * S, 12 * S])),
            ],
        )
        .unwrap();
        let d = Delta {
            batch,
            weights: Int64Array::from(vec![1, -1]),
        };
        let out = op.on_change(0, d).unwrap().unwrap();
        assert_eq!(out.batch.num_columns(), 4);
        let a = out.batch.column(0).as_primitive::<Int64Type>();
        assert_eq!(a.values().to_vec(), vec![1, 1, 2, 2]);
        assert_eq!(out.weights.values().to_vec(), vec![1, 1, -1, -1]);
        let starts = arrow::compute::cast(out.batch.column(2), &DataType::Int64).unwrap();
        let starts = starts.as_primitive::<Int64Type>();
        assert_eq!(starts.values().to_vec(), vec![0, 5 * S, 5 * S, 10 * S]);
        assert_eq!(out.batch.column(1).len(), 4);

        let watermarked = Some(Closing {
            relation: "r".into(),
            after_ns: 1,
        });
        let closings = op.closings(&[vec![None, None, watermarked.clone()]]);
        assert_eq!(
            closings,
            vec![
                None,
                watermarked,
                Some(Closing {
                    relation: "r".into(),
                    after_ns: 10 * S
                }),
                Some(Closing {
                    relation: "r".into(),
                    after_ns: 0
                }),
            ]
        );
    }

    #[test]
    fn narrowing_without_the_time_column_is_refused() {
        let input = Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
        ]);
        let spec = WindowSpec {
            kind: WindowKind::Tumble,
            time_column: 1,
            time_column_name: "ts".into(),
            slide_ns: S,
            size_ns: S,
            offset_ns: 0,
        };
        assert!(WindowAssign::narrowed(spec, &input, vec![0]).is_err());
    }
}
