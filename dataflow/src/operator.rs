//! The one interface every dataflow operator implements.
//!
//! An operator consumes changes (Arrow batches with signed weights, see
//! [`Delta`]) on one or more numbered inputs and produces changes; it hears
//! of the epoch's watermarks after the epoch's changes, which is when
//! windowed state is freed (and, under `EMIT ON WINDOW CLOSE`, final rows
//! are emitted). An operator that keeps state exposes it through
//! [`Stateful`]: the engine alone decides when that state is persisted
//! (checkpoints) and restores it (recovery); operators never do I/O.
//!
//! Two facts about an operator's output are derived when the graph is
//! built, from the same facts about its inputs: how each output column
//! relates to event time ([`Closing`], which lets a `GROUP BY` on a window
//! free its groups), and whether the output is insertions only (which lets
//! `min`/`max` keep one value, and a view keep its rows as appended batches).

pub mod aggregate;
pub mod filter;
pub mod input;
pub mod project;
pub mod session;
pub mod shards;
pub mod union;
pub mod window_assign;

use arrow::datatypes::SchemaRef;

use crate::delta::Delta;
use crate::Result;
use crate::{Closing, StateSink, Watermarks};

/// A dataflow operator: changes in, changes out.
pub trait Operator: std::fmt::Debug + Send + Sync {
    /// The schema of the changes it produces.
    fn schema(&self) -> SchemaRef;

    /// One line for `EXPLAIN`, without indentation.
    fn explain(&self) -> String;

    /// How each output column relates to event time, given the same for
    /// each input's columns.
    fn closings(&self, inputs: &[Vec<Option<Closing>>]) -> Vec<Option<Closing>>;

    /// True when its output is insertions only, given the same of each input.
    fn append_only(&self, inputs: &[bool]) -> bool;

    /// Absorbs `delta`, a change of input `input`; returns its output change.
    fn on_change(&mut self, input: usize, delta: Delta) -> Result<Option<Delta>>;

    /// The epoch's watermark advances (by relation), after its changes;
    /// returns what closing windows emitted.
    fn on_watermarks(&mut self, _watermarks: &Watermarks) -> Result<Option<Delta>> {
        Ok(None)
    }

    /// Its state, when it keeps any.
    fn stateful(&self) -> Option<&dyn Stateful> {
        None
    }

    /// Its state, mutably, when it keeps any.
    fn stateful_mut(&mut self) -> Option<&mut dyn Stateful> {
        None
    }

    /// The relation whose changes it passes on, for the graph's inputs.
    fn reads(&self) -> Option<&str> {
        None
    }
}

/// What the engine needs of an operator that keeps state.
///
/// State changes made while processing an epoch are *pending*. Once the
/// epoch's log write is durable the engine calls [`Stateful::committed`],
/// and the changed keys join those the next checkpoint writes; if the write
/// fails it calls [`Stateful::rollback`], which restores the state from
/// before the epoch. At a checkpoint, between epochs, the engine collects
/// the records changed since the previous one ([`Stateful::checkpoint`]).
pub trait Stateful {
    /// True when records stored under operator id `op` are this operator's.
    fn owns(&self, op: u32) -> bool;
    /// Restores a record stored under `op`. The key is handed over, not
    /// borrowed: a restart loads millions of records, and an operator that
    /// keys its state by the same bytes keeps it without a copy.
    fn load(&mut self, op: u32, key: Vec<u8>, value: &[u8]) -> Result<()>;
    /// About `additional` records stored under `op` are about to be
    /// loaded: room for them can be made at once instead of growing (and
    /// rehashing) a map many times over.
    fn reserve(&mut self, _op: u32, _additional: usize) {}
    /// The relation whose watermark closes its state.
    fn closes_on(&self) -> Option<&str>;
    /// The watermark it has closed state up to.
    fn watermark(&self) -> Option<i64>;
    /// Sets the watermark state was closed up to before a restart.
    fn restore_watermark(&mut self, wm: i64);
    /// Rows it dropped because their window had closed.
    fn late_rows(&self) -> u64;
    /// Groups or rows held.
    fn held(&self) -> usize;
    /// Reports to `persist` every record changed by committed epochs since
    /// the last checkpoint (`None` when removed), or with `full` every
    /// record it holds; from then on nothing counts as changed. Called only
    /// between epochs, when nothing is pending.
    fn checkpoint(&mut self, full: bool, persist: &mut StateSink<'_>) -> Result<()>;
    /// The pending changes are durable.
    fn committed(&mut self);
    /// Forgets the pending changes.
    fn rollback(&mut self);
}
