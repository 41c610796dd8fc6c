//! Dataflow errors, each saying whose fault it is. The planner and the
//! server map them on (to `PlanError`, to a SQLSTATE) by variant, never by
//! message text.

use datafusion::error::DataFusionError;

/// Why a change could not be applied or an operator could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DataflowError {
    /// Valid input that the runtime cannot process (yet), such as a window
    /// finer than its time column's precision (0A000).
    #[error("{0}")]
    Unsupported(String),
    /// A value does not fit its type, such as an overflowing sum (22003).
    #[error("{0}")]
    OutOfRange(String),
    /// An error reported by DataFusion or Arrow while evaluating an
    /// expression; the server classifies it.
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
    /// A broken invariant inside Millrace (our bug; XX000).
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<arrow::error::ArrowError> for DataflowError {
    fn from(e: arrow::error::ArrowError) -> Self {
        DataflowError::DataFusion(DataFusionError::ArrowError(Box::new(e), None))
    }
}

/// Result type of the dataflow runtime.
pub type Result<T, E = DataflowError> = std::result::Result<T, E>;
