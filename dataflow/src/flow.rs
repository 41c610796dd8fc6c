//! A materialized view's incremental plan at run time: the operator graph,
//! its output, and what the engine asks of it (push an epoch's changes,
//! collect and restore state, report progress, `EXPLAIN`).

use std::collections::BTreeSet;

use arrow::datatypes::SchemaRef;

use crate::delta::Delta;
use crate::graph::{Graph, NodeId};
use crate::{Changes, DataflowError, Result, StateSink, Watermarks};

/// What a view's definition says beyond its query.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ViewOptions {
    /// When window rows appear.
    pub emit: EmitMode,
    /// `WITH (retention = …)`: closed windows' rows leave the view this
    /// long after they closed.
    pub retention_ns: Option<i64>,
    /// Workers a keyed operator (a `GROUP BY`) is split over by key, each
    /// on its own thread in an epoch (0 or 1: not split). A server setting,
    /// not part of the view's definition: a checkpoint reads the same
    /// whatever it is.
    pub workers: usize,
}

/// How a view's windows reach its rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum EmitMode {
    /// Every change updates the view at once; open windows show partial
    /// results (the default).
    #[default]
    OnUpdate,
    /// `EMIT ON WINDOW CLOSE`: a window's row appears once, final, when the
    /// watermark passes the window's end.
    OnWindowClose,
}

/// A materialized view's incremental plan.
#[derive(Debug)]
pub struct Dataflow {
    graph: Graph,
    root: NodeId,
    schema: SchemaRef,
    inputs: BTreeSet<String>,
    /// The view's changes are insertions only.
    append_only: bool,
}

impl Dataflow {
    /// A dataflow over `graph` whose output is node `root`: the view's
    /// changes, with `schema`, reading the relations `inputs`.
    pub fn new(graph: Graph, root: NodeId, schema: SchemaRef, inputs: BTreeSet<String>) -> Self {
        let append_only = graph.append_only(root);
        Self {
            graph,
            root,
            schema,
            inputs,
            append_only,
        }
    }

    /// True when the view's changes are insertions only, so that its
    /// contents can be kept as appended batches.
    pub fn append_only(&self) -> bool {
        self.append_only
    }

    /// Relabels the output columns with `schema`: the same columns under
    /// other names (PostgreSQL's names for unaliased expressions).
    pub fn rename_columns(&mut self, schema: SchemaRef) {
        self.schema = schema;
    }

    /// The view's output schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Names of the relations the view reads.
    pub fn inputs(&self) -> &BTreeSet<String> {
        &self.inputs
    }

    /// Turns the changes of the view's inputs into the change of the view,
    /// then closes the windows the inputs' `watermarks` have passed. State
    /// changes stay pending until [`Dataflow::committed`] or
    /// [`Dataflow::rollback`].
    pub fn push(&mut self, changes: &Changes, watermarks: &Watermarks) -> Result<Option<Delta>> {
        match self.graph.run(self.root, changes, watermarks)? {
            Some(d) => Ok(Some(d.with_schema(self.schema.clone())?)),
            None => Ok(None),
        }
    }

    /// Sets the watermarks windows were closed up to before a restart:
    /// call before [`Dataflow::load_state`].
    pub fn restore_watermarks(&mut self, watermarks: &Watermarks) {
        let _ = self.graph.for_each_stateful(&mut |op| {
            if let Some(wm) = op.closes_on().and_then(|r| watermarks.get(r)) {
                op.restore_watermark(*wm);
            }
            Ok(())
        });
    }

    /// True when the view closes windows on the watermark of `relation`.
    pub fn closes_on(&self, relation: &str) -> bool {
        self.graph
            .stateful()
            .any(|op| op.closes_on() == Some(relation))
    }

    /// The lowest watermark the view's operators closed windows up to, and
    /// the rows they dropped because their window had closed.
    pub fn progress(&self) -> (Option<i64>, u64) {
        let mut wm: Option<i64> = None;
        let mut late = 0;
        for op in self.graph.stateful() {
            if op.closes_on().is_some() {
                if let Some(w) = op.watermark() {
                    wm = Some(wm.map_or(w, |m| m.min(w)));
                }
            }
            late += op.late_rows();
        }
        (wm, late)
    }

    /// Reports to `persist` the state records changed since the last
    /// checkpoint (with `full`: all of them) as `(operator, key, value or
    /// None when removed)`; from then on nothing counts as changed.
    pub fn checkpoint(&mut self, full: bool, persist: &mut StateSink<'_>) -> Result<()> {
        self.graph
            .for_each_stateful(&mut |op| op.checkpoint(full, &mut *persist))
    }

    /// The pending state changes are durable.
    pub fn committed(&mut self) {
        let _ = self.graph.for_each_stateful(&mut |op| {
            op.committed();
            Ok(())
        });
    }

    /// Forgets every pending state change.
    pub fn rollback(&mut self) {
        let _ = self.graph.for_each_stateful(&mut |op| {
            op.rollback();
            Ok(())
        });
    }

    /// Restores the state records `(key, value)` of operator `op` read
    /// back from storage; about `additional` of them (see
    /// [`crate::operator::Stateful::reserve`]). The operator is
    /// found once, not per record: a restart loads millions.
    pub fn load_state<'r>(
        &mut self,
        op: u32,
        additional: usize,
        records: impl Iterator<Item = (&'r [u8], &'r [u8])>,
    ) -> Result<()> {
        let mut records = records.peekable();
        if records.peek().is_none() {
            return Ok(());
        }
        let Some(owner) = self.graph.stateful_mut().find(|s| s.owns(op)) else {
            return Err(DataflowError::Internal(format!(
                "stored state for operator {op}, which the view does not have"
            )));
        };
        owner.reserve(op, additional);
        for (key, value) in records {
            owner.load(op, key.to_vec(), value)?;
        }
        Ok(())
    }

    /// Total number of groups (and open sessions' rows) held by the view's
    /// operators.
    pub fn state_size(&self) -> usize {
        self.graph.stateful().map(|op| op.held()).sum()
    }

    /// The dataflow as indented lines, root first, for `EXPLAIN`.
    pub fn explain(&self, view: &str) -> Vec<String> {
        let columns: Vec<&str> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        let kept = if self.append_only {
            "appended batches in memory"
        } else {
            "rows by key in memory"
        };
        let mut out = vec![format!(
            "Materialize: {view} [{}] ({kept}, checkpointed, updated per change)",
            columns.join(", ")
        )];
        self.graph.explain(self.root, 1, &mut out);
        out
    }
}
