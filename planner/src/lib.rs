//! What to compute: SQL in, plans out.
//!
//! The planner turns SQL text into Millrace statements ([`statement`]), adds
//! the streaming table functions `TUMBLE`, `HOP` and `SESSION` to DataFusion
//! ([`window`]), and rewrites a materialized view's DataFusion logical plan
//! into an incremental `millrace_dataflow::Dataflow` ([`dataflow::plan`]): a
//! graph of operators that each consume and produce changes. The planner
//! never does I/O and runs nothing: the operators are `millrace-dataflow`'s,
//! and the engine feeds them.

pub mod dataflow;
pub mod error;
pub mod event_time;
pub mod json;
pub mod naming;
pub mod source;
pub mod statement;
pub mod window;

pub use error::{PlanError, Result};
