//! The changes of one table, source or view entering a dataflow.

use arrow::datatypes::SchemaRef;

use super::Operator;
use crate::delta::Delta;
use crate::Closing;
use crate::Result;

/// Passes on the changes of `relation` (the graph feeds it).
#[derive(Debug)]
pub struct Input {
    relation: String,
    schema: SchemaRef,
    /// How its columns close (its event-time column, if it declares one).
    closings: Vec<Option<Closing>>,
    append_only: bool,
}

impl Input {
    /// The changes of `relation`, whose event-time column (if any) is
    /// `event_time_column`, and which is insert-only when `append_only`.
    pub fn new(
        relation: String,
        schema: SchemaRef,
        event_time_column: Option<usize>,
        append_only: bool,
    ) -> Self {
        let closings = (0..schema.fields().len())
            .map(|i| {
                (event_time_column == Some(i)).then(|| Closing {
                    relation: relation.clone(),
                    after_ns: 1,
                })
            })
            .collect();
        Self {
            relation,
            schema,
            closings,
            append_only,
        }
    }
}

impl Operator for Input {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn explain(&self) -> String {
        format!("Source: {} (changes)", self.relation)
    }

    fn closings(&self, _inputs: &[Vec<Option<Closing>>]) -> Vec<Option<Closing>> {
        self.closings.clone()
    }

    fn append_only(&self, _inputs: &[bool]) -> bool {
        self.append_only
    }

    fn on_change(&mut self, _input: usize, delta: Delta) -> Result<Option<Delta>> {
        Ok(Some(delta.with_schema(self.schema.clone())?))
    }

    fn reads(&self) -> Option<&str> {
        Some(&self.relation)
    }
}
