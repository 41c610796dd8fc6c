//! What to compute: SQL in, plans out.
//!
//! The planner turns SQL text into Millrace statements ([`statement`]), adds
//! the streaming table functions `TUMBLE` and `HOP` to DataFusion
//! ([`window`]), and rewrites a materialized view's DataFusion logical plan
//! into an incremental [`dataflow::Dataflow`]: a tree of operators that each
//! consume and produce changes ([`delta::Delta`], rows with signed weights).
//! Operators are pure state machines: the planner never does I/O; the server
//! feeds them changes and persists the state they report dirty.

pub mod contents;
pub mod dataflow;
pub mod delta;
pub mod error;
pub mod event_time;
pub mod json;
pub mod naming;
pub mod source;
pub mod statement;
pub mod window;

pub use error::{PlanError, Result};
