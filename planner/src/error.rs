//! Planner errors, each saying whose fault it is. The engine gives each
//! variant its error kind and the server maps kinds to PostgreSQL SQLSTATEs
//! in one place; nothing downstream looks at the message text.
//!
//! Code that must return DataFusion's error type (table functions, UDFs)
//! wraps a [`PlanError`] with [`PlanError::into_datafusion`], so that its
//! kind survives the trip through DataFusion.

use datafusion::error::DataFusionError;

/// Why a statement could not be planned or a change could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The SQL text does not parse (the user's fault; 42601).
    #[error("{0}")]
    Syntax(String),
    /// Valid SQL that Millrace cannot run (yet) (0A000).
    #[error("{0}")]
    Unsupported(String),
    /// A column the statement names does not exist (42703).
    #[error("{0}")]
    UndefinedColumn(String),
    /// A table or view the statement names does not exist (42P01). Holds
    /// the relation's name.
    #[error("relation \"{0}\" does not exist")]
    UndefinedTable(String),
    /// A value or column of the wrong type for where it is used (42804).
    #[error("{0}")]
    WrongType(String),
    /// A value does not fit its type (22003).
    #[error("{0}")]
    OutOfRange(String),
    /// A value the statement gives is not valid where it is used, such as a
    /// window size that is not positive (22023).
    #[error("{0}")]
    InvalidValue(String),
    /// Text that does not parse as its type, such as a JSON document
    /// (22P02).
    #[error("{0}")]
    InvalidText(String),
    /// A statement that is wrong in some other way, such as a window
    /// function given the wrong number or shape of arguments (42000).
    #[error("{0}")]
    Invalid(String),
    /// An error reported by DataFusion; the server classifies it.
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
    /// A broken invariant inside Millrace (our bug; XX000).
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<millrace_dataflow::DataflowError> for PlanError {
    /// The runtime's errors keep their kind: the same variant here.
    fn from(e: millrace_dataflow::DataflowError) -> Self {
        use millrace_dataflow::DataflowError as D;
        match e {
            D::Unsupported(m) => PlanError::Unsupported(m),
            D::OutOfRange(m) => PlanError::OutOfRange(m),
            D::DataFusion(e) => PlanError::DataFusion(e),
            D::Internal(m) => PlanError::Internal(m),
        }
    }
}

impl From<arrow::error::ArrowError> for PlanError {
    fn from(e: arrow::error::ArrowError) -> Self {
        PlanError::DataFusion(DataFusionError::ArrowError(Box::new(e), None))
    }
}

impl PlanError {
    /// This error as DataFusion's, for code that must return DataFusion's
    /// error type: an error DataFusion reported stays as it was, any other
    /// travels as [`DataFusionError::External`], from which the engine
    /// takes it back out by type.
    pub fn into_datafusion(self) -> DataFusionError {
        match self {
            PlanError::DataFusion(e) => e,
            other => DataFusionError::External(Box::new(other)),
        }
    }
}

/// Result type of the planner.
pub type Result<T, E = PlanError> = std::result::Result<T, E>;

/// Shorthand for [`PlanError::Unsupported`].
pub fn unsupported<T>(what: impl Into<String>) -> Result<T> {
    Err(PlanError::Unsupported(what.into()))
}
