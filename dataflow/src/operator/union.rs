//! `UNION ALL`: the changes of every input, under one schema.

use arrow::datatypes::SchemaRef;

use super::Operator;
use crate::delta::Delta;
use crate::Closing;
use crate::Result;

/// A stateless union of any number of inputs.
#[derive(Debug)]
pub struct Union {
    schema: SchemaRef,
}

impl Union {
    /// A union producing `schema`.
    pub fn new(schema: SchemaRef) -> Self {
        Self { schema }
    }
}

impl Operator for Union {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn explain(&self) -> String {
        "Union (stateless)".into()
    }

    fn closings(&self, _inputs: &[Vec<Option<Closing>>]) -> Vec<Option<Closing>> {
        vec![None; self.schema.fields().len()]
    }

    fn append_only(&self, inputs: &[bool]) -> bool {
        inputs.iter().all(|a| *a)
    }

    fn on_change(&mut self, _input: usize, d: Delta) -> Result<Option<Delta>> {
        Ok(Some(d.with_schema(self.schema.clone())?))
    }
}
