//! User-visible errors: every failure a client sees carries an
//! [`ErrorKind`], chosen here from the error's origin (the kind of a
//! planner, dataflow or storage error; DataFusion's and Arrow's errors by
//! their variant and, where DataFusion gives nothing better, its message).
//! The server maps kinds to SQLSTATEs.

use datafusion::common::SchemaError;
use datafusion::error::DataFusionError;
use millrace_dataflow::DataflowError;
use millrace_planner::PlanError;
use millrace_storage::StorageError;

/// What kind of failure an error is, in PostgreSQL's terms (its error
/// conditions, appendix A). The server maps each kind to its SQLSTATE, in
/// one place (`server/src/sqlstate.rs`); the engine never spells a code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// `syntax_error`.
    SyntaxError,
    /// `syntax_error_or_access_rule_violation`.
    SyntaxErrorOrAccessRuleViolation,
    /// `undefined_table`.
    UndefinedTable,
    /// `undefined_column`.
    UndefinedColumn,
    /// `undefined_function`.
    UndefinedFunction,
    /// `ambiguous_column`.
    AmbiguousColumn,
    /// `duplicate_table`.
    DuplicateTable,
    /// `duplicate_column`.
    DuplicateColumn,
    /// `datatype_mismatch`.
    DatatypeMismatch,
    /// `wrong_object_type`.
    WrongObjectType,
    /// `dependent_objects_still_exist`.
    DependentObjectsStillExist,
    /// `division_by_zero`.
    DivisionByZero,
    /// `invalid_text_representation`.
    InvalidTextRepresentation,
    /// `numeric_value_out_of_range`.
    NumericValueOutOfRange,
    /// `invalid_parameter_value`.
    InvalidParameterValue,
    /// `invalid_escape_sequence`.
    InvalidEscapeSequence,
    /// `null_value_not_allowed`.
    NullValueNotAllowed,
    /// `not_null_violation`.
    NotNullViolation,
    /// `feature_not_supported`.
    FeatureNotSupported,
    /// `protocol_violation`.
    ProtocolViolation,
    /// `undefined_parameter`.
    UndefinedParameter,
    /// `grouping_error`.
    GroupingError,
    /// `datetime_field_overflow`.
    DatetimeFieldOverflow,
    /// `undefined_object`.
    UndefinedObject,
    /// `internal_error`.
    InternalError,
    /// `io_error`.
    IoError,
    /// `connection_failure`.
    ConnectionFailure,
    /// `unable_to_connect`.
    UnableToConnect,
    /// `query_canceled`.
    QueryCanceled,
    /// `invalid_cursor_name`.
    InvalidCursorName,
    /// `duplicate_object`.
    DuplicateObject,
    /// `duplicate_cursor`.
    DuplicateCursor,
    /// `invalid_cursor_definition`.
    InvalidCursorDefinition,
    /// `program_limit_exceeded`.
    ProgramLimitExceeded,
    /// `no_active_sql_transaction_for_branch`.
    NoActiveSqlTransactionForBranch,
}

/// An error as the client sees it.
#[derive(Debug, Clone)]
pub struct SqlError {
    /// What kind of failure (the server maps it to a SQLSTATE).
    pub kind: ErrorKind,
    /// Primary message.
    pub message: String,
    /// Optional DETAIL.
    pub detail: Option<String>,
    /// Optional HINT.
    pub hint: Option<String>,
}

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for SqlError {}

impl SqlError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    /// Adds a DETAIL line.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Adds a HINT line.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// 0A000.
    pub fn unsupported(what: impl std::fmt::Display) -> Self {
        Self::new(
            ErrorKind::FeatureNotSupported,
            format!("{what} is not supported"),
        )
    }

    /// XX000: a bug in Millrace.
    pub fn internal(message: impl std::fmt::Display) -> Self {
        Self::new(
            ErrorKind::InternalError,
            format!("internal error: {message}"),
        )
    }
}

/// Result of a statement.
pub type SqlResult<T> = std::result::Result<T, SqlError>;

impl From<PlanError> for SqlError {
    fn from(e: PlanError) -> Self {
        match e {
            PlanError::Syntax(m) => SqlError::new(ErrorKind::SyntaxError, m),
            PlanError::Unsupported(m) => SqlError::unsupported(m),
            PlanError::OutOfRange(m) => SqlError::new(ErrorKind::NumericValueOutOfRange, m),
            PlanError::UndefinedColumn(m) => SqlError::new(ErrorKind::UndefinedColumn, m),
            PlanError::WrongType(m) => SqlError::new(ErrorKind::DatatypeMismatch, m),
            PlanError::DataFusion(e) => e.into(),
            PlanError::Internal(m) => SqlError::internal(m),
        }
    }
}

impl From<DataflowError> for SqlError {
    fn from(e: DataflowError) -> Self {
        match e {
            DataflowError::Unsupported(m) => SqlError::unsupported(m),
            DataflowError::OutOfRange(m) => SqlError::new(ErrorKind::NumericValueOutOfRange, m),
            DataflowError::DataFusion(e) => e.into(),
            DataflowError::Internal(m) => SqlError::internal(m),
        }
    }
}

impl From<StorageError> for SqlError {
    fn from(e: StorageError) -> Self {
        tracing::error!("storage failure: {e}");
        SqlError::new(ErrorKind::IoError, e.to_string())
    }
}

impl From<arrow::error::ArrowError> for SqlError {
    fn from(e: arrow::error::ArrowError) -> Self {
        classify_arrow(&e)
    }
}

fn classify_arrow(e: &arrow::error::ArrowError) -> SqlError {
    use arrow::error::ArrowError as A;
    match e {
        A::DivideByZero => SqlError::new(ErrorKind::DivisionByZero, "division by zero"),
        A::CastError(m) if m.contains("Can't cast value") || m.contains("overflow") => {
            SqlError::new(ErrorKind::NumericValueOutOfRange, clean(m))
        }
        A::CastError(m) | A::ParseError(m) => {
            SqlError::new(ErrorKind::InvalidTextRepresentation, clean(m))
        }
        A::ArithmeticOverflow(m) => SqlError::new(ErrorKind::NumericValueOutOfRange, clean(m)),
        A::ComputeError(m) if m.contains("Overflow") || m.contains("overflow") => {
            SqlError::new(ErrorKind::NumericValueOutOfRange, clean(m))
        }
        A::InvalidArgumentError(m) | A::ComputeError(m) => {
            SqlError::new(ErrorKind::InvalidParameterValue, clean(m))
        }
        A::NotYetImplemented(m) => SqlError::unsupported(m),
        other => SqlError::internal(other),
    }
}

fn clean(m: &str) -> String {
    m.trim().to_string()
}

impl From<DataFusionError> for SqlError {
    fn from(e: DataFusionError) -> Self {
        classify_datafusion(&e)
    }
}

fn classify_datafusion(e: &DataFusionError) -> SqlError {
    match e {
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            classify_datafusion(inner)
        }
        DataFusionError::Shared(inner) => classify_datafusion(inner),
        DataFusionError::Collection(errs) => match errs.first() {
            Some(first) => classify_datafusion(first),
            None => SqlError::internal("empty error collection"),
        },
        DataFusionError::ArrowError(a, _) => classify_arrow(a),
        DataFusionError::SQL(p, _) => {
            let text = p.to_string();
            let text = text.strip_prefix("sql parser error: ").unwrap_or(&text);
            SqlError::new(ErrorKind::SyntaxError, format!("syntax error: {text}"))
        }
        DataFusionError::SchemaError(s, _) => match s.as_ref() {
            SchemaError::FieldNotFound { field, .. } => SqlError::new(
                ErrorKind::UndefinedColumn,
                format!("column \"{}\" does not exist", field.name),
            ),
            SchemaError::AmbiguousReference { field } => SqlError::new(
                ErrorKind::AmbiguousColumn,
                format!("column reference \"{}\" is ambiguous", field.name),
            ),
            SchemaError::DuplicateQualifiedField { .. }
            | SchemaError::DuplicateUnqualifiedField { .. } => {
                SqlError::new(ErrorKind::DuplicateColumn, s.to_string())
            }
        },
        DataFusionError::NotImplemented(m) if m.contains("Unsupported SQL type") => SqlError::new(
            ErrorKind::UndefinedObject,
            format!("type does not exist: {m}"),
        ),
        DataFusionError::NotImplemented(m) => SqlError::unsupported(m),
        DataFusionError::Plan(m) => classify_plan_message(m),
        DataFusionError::Execution(m) => classify_execution_message(m),
        DataFusionError::External(inner) => {
            if let Some(p) = inner.downcast_ref::<PlanError>() {
                return match p {
                    PlanError::DataFusion(d) => classify_datafusion(d),
                    PlanError::Syntax(m) => SqlError::new(ErrorKind::SyntaxError, m.clone()),
                    PlanError::Unsupported(m) => SqlError::unsupported(m),
                    PlanError::OutOfRange(m) => {
                        SqlError::new(ErrorKind::NumericValueOutOfRange, m.clone())
                    }
                    PlanError::UndefinedColumn(m) => {
                        SqlError::new(ErrorKind::UndefinedColumn, m.clone())
                    }
                    PlanError::WrongType(m) => {
                        SqlError::new(ErrorKind::DatatypeMismatch, m.clone())
                    }
                    PlanError::Internal(m) => SqlError::internal(m),
                };
            }
            if let Some(e) = inner.downcast_ref::<SqlError>() {
                return e.clone();
            }
            if let Some(d) = inner.downcast_ref::<DataFusionError>() {
                return classify_datafusion(d);
            }
            SqlError::internal(inner)
        }
        other => SqlError::internal(other),
    }
}

fn classify_plan_message(m: &str) -> SqlError {
    let lower = m.to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix("table '") {
        if lower.ends_with("' not found") {
            let name = &m[7..7 + rest.len() - "' not found".len()];
            let short = name.rsplit('.').next().unwrap_or(name);
            return SqlError::new(
                ErrorKind::UndefinedTable,
                format!("relation \"{short}\" does not exist"),
            );
        }
    }
    if lower.contains("table function") && lower.contains("not found") {
        return SqlError::new(ErrorKind::UndefinedFunction, m.to_string());
    }
    if lower.contains("invalid function") || lower.contains("no function matches") {
        return SqlError::new(ErrorKind::UndefinedFunction, m.to_string());
    }
    if lower.contains("group by") && (lower.contains("must") || lower.contains("aggregate")) {
        return SqlError::new(ErrorKind::GroupingError, m.to_string());
    }
    if lower.contains("needs a timestamp column")
        || lower.contains("needs an interval")
        || lower.contains("needs constant intervals")
    {
        return SqlError::new(ErrorKind::DatatypeMismatch, m.to_string());
    }
    if lower.contains("cannot coerce")
        || lower.contains("cannot infer common")
        || lower.contains("non-boolean")
        || lower.contains("does not support")
        || lower.contains("cannot be cast")
        || lower.contains("type coercion")
        || lower.contains("failed to coerce")
        || lower.contains("expected boolean")
        || lower.contains("unsupported cast")
    {
        return SqlError::new(ErrorKind::DatatypeMismatch, m.to_string());
    }
    if lower.contains("division by zero") || lower.contains("divide by zero") {
        return SqlError::new(ErrorKind::DivisionByZero, "division by zero");
    }
    if lower.contains("projections require unique expression names") {
        return SqlError::new(ErrorKind::DuplicateColumn, m.to_string());
    }
    // Some other mistake in the statement: PostgreSQL's class 42 catch-all.
    SqlError::new(ErrorKind::SyntaxErrorOrAccessRuleViolation, m.to_string())
}

fn classify_execution_message(m: &str) -> SqlError {
    let lower = m.to_ascii_lowercase();
    if lower.contains("divide by zero") || lower.contains("division by zero") {
        SqlError::new(ErrorKind::DivisionByZero, "division by zero")
    } else if lower.contains("overflow") {
        SqlError::new(ErrorKind::NumericValueOutOfRange, m.to_string())
    } else if lower.contains("cast") || lower.contains("parse") {
        SqlError::new(ErrorKind::InvalidTextRepresentation, m.to_string())
    } else {
        SqlError::new(ErrorKind::InvalidParameterValue, m.to_string())
    }
}
