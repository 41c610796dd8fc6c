//! How a change flows: the incremental runtime.
//!
//! A materialized view runs as a [`Dataflow`]: a [`graph::Graph`] of
//! [`Operator`]s, one type per file under [`operator`], that each consume
//! and produce changes ([`delta::Delta`], Arrow rows with signed weights).
//! Window columns are assigned by [`window`]; how a column relates to event
//! time (so that a `GROUP BY` on a window can free its groups) is
//! [`closing`]. A view's rows are the running sum of its changes,
//! [`contents::ViewContents`].
//!
//! This crate knows no SQL and does no I/O: the planner builds the graph,
//! the engine feeds it changes and watermarks, and persists the state that
//! operators report through [`Stateful`] and [`StateSink`].

pub mod closing;
pub mod contents;
pub mod delta;
pub mod error;
mod flow;
pub mod graph;
pub mod operator;
pub mod state;
pub mod time;
pub mod window;

use std::collections::HashMap;

pub use closing::Closing;
pub use error::{DataflowError, Result};
pub use flow::{Dataflow, EmitMode, ViewOptions};
pub use operator::{Operator, Stateful};

/// Where operators report state records at a checkpoint: `(operator,
/// key, value or None when removed)`.
pub type StateSink<'a> = dyn FnMut(u32, &[u8], Option<Vec<u8>>) + 'a;

/// The changes of one transaction, by relation name.
pub type Changes = HashMap<String, delta::Delta>;

/// The watermarks of relations with event time, by relation name
/// (nanoseconds since the epoch): rows behind them are no longer accepted.
pub type Watermarks = HashMap<String, i64>;
