//! The dataflow graph: operators, and which operator's output feeds which.
//!
//! Nodes are added inputs first, so the order of the node list is a
//! topological order: one epoch runs every node once, in that order, each
//! on what its inputs produced in the same epoch. A node's output may feed
//! several nodes, and a node may have several inputs (a union, a join).

use arrow::datatypes::SchemaRef;

use crate::delta::Delta;
use crate::operator::{Operator, Stateful};
use crate::{Changes, Closing, Watermarks};
use crate::{DataflowError, Result};

/// A node's place in its graph.
pub type NodeId = usize;

#[derive(Debug)]
struct Node {
    op: Box<dyn Operator>,
    inputs: Vec<NodeId>,
    /// Derived when the node is added (see [`Operator::closings`]).
    closings: Vec<Option<Closing>>,
    /// Derived when the node is added (see [`Operator::append_only`]).
    append_only: bool,
}

/// Operators and their edges.
#[derive(Debug, Default)]
pub struct Graph {
    nodes: Vec<Node>,
}

impl Graph {
    /// Adds `op`, fed by `inputs` (nodes already in the graph).
    pub fn add(&mut self, op: Box<dyn Operator>, inputs: Vec<NodeId>) -> Result<NodeId> {
        if let Some(bad) = inputs.iter().find(|i| **i >= self.nodes.len()) {
            return Err(DataflowError::Internal(format!(
                "dataflow node fed by node {bad}, which does not exist yet"
            )));
        }
        let input_closings: Vec<Vec<Option<Closing>>> = inputs
            .iter()
            .map(|i| self.nodes[*i].closings.clone())
            .collect();
        let input_append: Vec<bool> = inputs.iter().map(|i| self.nodes[*i].append_only).collect();
        let closings = op.closings(&input_closings);
        let append_only = op.append_only(&input_append);
        self.nodes.push(Node {
            op,
            inputs,
            closings,
            append_only,
        });
        Ok(self.nodes.len() - 1)
    }

    /// The schema of node `id`'s output.
    pub fn schema(&self, id: NodeId) -> SchemaRef {
        self.nodes[id].op.schema()
    }

    /// How node `id`'s output columns relate to event time.
    pub fn closings(&self, id: NodeId) -> &[Option<Closing>] {
        &self.nodes[id].closings
    }

    /// True when node `id` outputs insertions only.
    pub fn append_only(&self, id: NodeId) -> bool {
        self.nodes[id].append_only
    }

    /// Runs one epoch: the `changes` of the input relations, then the
    /// `watermarks` they reached. Returns what node `root` produced.
    pub fn run(
        &mut self,
        root: NodeId,
        changes: &Changes,
        watermarks: &Watermarks,
    ) -> Result<Option<Delta>> {
        let mut outputs: Vec<Option<Delta>> = Vec::with_capacity(self.nodes.len());
        for id in 0..self.nodes.len() {
            let mut parts = Vec::new();
            let node = &mut self.nodes[id];
            if let Some(relation) = node.op.reads() {
                if let Some(d) = changes.get(relation) {
                    parts.extend(node.op.on_change(0, d.clone())?);
                }
            } else {
                for (port, input) in node.inputs.iter().enumerate() {
                    if let Some(d) = &outputs[*input] {
                        parts.extend(node.op.on_change(port, d.clone())?);
                    }
                }
            }
            if let Some(closed) = node.op.on_watermarks(watermarks)? {
                if !closed.is_empty() {
                    parts.push(closed);
                }
            }
            let out = match parts.len() {
                0 => None,
                1 => parts.pop(),
                _ => Some(Delta::concat(&node.op.schema(), &parts)?),
            };
            outputs.push(out);
        }
        Ok(outputs.get_mut(root).and_then(Option::take))
    }

    /// Every operator that keeps state.
    pub fn stateful(&self) -> impl Iterator<Item = &dyn Stateful> {
        self.nodes.iter().filter_map(|n| n.op.stateful())
    }

    /// The operators that keep state, mutably.
    pub fn stateful_mut(&mut self) -> impl Iterator<Item = &mut dyn Stateful> {
        self.nodes.iter_mut().filter_map(|n| n.op.stateful_mut())
    }

    /// Calls `f` on every operator that keeps state, mutably.
    pub fn for_each_stateful(
        &mut self,
        f: &mut dyn FnMut(&mut dyn Stateful) -> Result<()>,
    ) -> Result<()> {
        for n in &mut self.nodes {
            if let Some(s) = n.op.stateful_mut() {
                f(s)?;
            }
        }
        Ok(())
    }

    /// The graph below `id` as indented lines, `id` first.
    pub fn explain(&self, id: NodeId, depth: usize, out: &mut Vec<String>) {
        let node = &self.nodes[id];
        out.push(format!("{}{}", "  ".repeat(depth), node.op.explain()));
        for input in &node.inputs {
            self.explain(*input, depth + 1, out);
        }
    }
}
