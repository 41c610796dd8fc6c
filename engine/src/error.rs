//! User-visible errors: every failure a client sees carries a PostgreSQL
//! SQLSTATE, chosen here, in one place, from the error's origin.

use datafusion::common::SchemaError;
use datafusion::error::DataFusionError;
use millrace_dataflow::DataflowError;
use millrace_planner::PlanError;
use millrace_storage::StorageError;

/// SQLSTATE codes Millrace reports (PostgreSQL appendix A).
pub mod sqlstate {
    pub const SYNTAX_ERROR: &str = "42601";
    pub const SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION: &str = "42000";
    pub const UNDEFINED_TABLE: &str = "42P01";
    pub const UNDEFINED_COLUMN: &str = "42703";
    pub const UNDEFINED_FUNCTION: &str = "42883";
    pub const AMBIGUOUS_COLUMN: &str = "42702";
    pub const DUPLICATE_TABLE: &str = "42P07";
    pub const DUPLICATE_COLUMN: &str = "42701";
    pub const DATATYPE_MISMATCH: &str = "42804";
    pub const WRONG_OBJECT_TYPE: &str = "42809";
    pub const DEPENDENT_OBJECTS_STILL_EXIST: &str = "2BP01";
    pub const DIVISION_BY_ZERO: &str = "22012";
    pub const INVALID_TEXT_REPRESENTATION: &str = "22P02";
    pub const NUMERIC_VALUE_OUT_OF_RANGE: &str = "22003";
    pub const INVALID_PARAMETER_VALUE: &str = "22023";
    pub const INVALID_ESCAPE_SEQUENCE: &str = "22025";
    pub const NULL_VALUE_NOT_ALLOWED: &str = "22004";
    pub const NOT_NULL_VIOLATION: &str = "23502";
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    pub const UNDEFINED_PARAMETER: &str = "42P02";
    pub const GROUPING_ERROR: &str = "42803";
    pub const DATETIME_FIELD_OVERFLOW: &str = "22008";
    pub const UNDEFINED_OBJECT: &str = "42704";
    pub const INTERNAL_ERROR: &str = "XX000";
    pub const IO_ERROR: &str = "58030";
    pub const CONNECTION_FAILURE: &str = "08006";
    pub const UNABLE_TO_CONNECT: &str = "08001";
    pub const QUERY_CANCELED: &str = "57014";
    pub const INVALID_CURSOR_NAME: &str = "34000";
    pub const DUPLICATE_OBJECT: &str = "42710";
    pub const DUPLICATE_CURSOR: &str = "42P03";
    pub const INVALID_CURSOR_DEFINITION: &str = "42P11";
    pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
    pub const NO_ACTIVE_SQL_TRANSACTION_FOR_BRANCH: &str = "25P01";
}

/// An error as the client sees it.
#[derive(Debug, Clone)]
pub struct SqlError {
    /// Five-character SQLSTATE.
    pub code: &'static str,
    /// Primary message.
    pub message: String,
    /// Optional DETAIL.
    pub detail: Option<String>,
    /// Optional HINT.
    pub hint: Option<String>,
}

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for SqlError {}

impl SqlError {
    /// An error with `code` and `message`.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
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
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!("{what} is not supported"),
        )
    }

    /// XX000: a bug in Millrace.
    pub fn internal(message: impl std::fmt::Display) -> Self {
        Self::new(
            sqlstate::INTERNAL_ERROR,
            format!("internal error: {message}"),
        )
    }
}

/// Result of a statement.
pub type SqlResult<T> = std::result::Result<T, SqlError>;

impl From<PlanError> for SqlError {
    fn from(e: PlanError) -> Self {
        match e {
            PlanError::Syntax(m) => SqlError::new(sqlstate::SYNTAX_ERROR, m),
            PlanError::Unsupported(m) => SqlError::unsupported(m),
            PlanError::OutOfRange(m) => SqlError::new(sqlstate::NUMERIC_VALUE_OUT_OF_RANGE, m),
            PlanError::UndefinedColumn(m) => SqlError::new(sqlstate::UNDEFINED_COLUMN, m),
            PlanError::WrongType(m) => SqlError::new(sqlstate::DATATYPE_MISMATCH, m),
            PlanError::DataFusion(e) => e.into(),
            PlanError::Internal(m) => SqlError::internal(m),
        }
    }
}

impl From<DataflowError> for SqlError {
    fn from(e: DataflowError) -> Self {
        match e {
            DataflowError::Unsupported(m) => SqlError::unsupported(m),
            DataflowError::OutOfRange(m) => SqlError::new(sqlstate::NUMERIC_VALUE_OUT_OF_RANGE, m),
            DataflowError::DataFusion(e) => e.into(),
            DataflowError::Internal(m) => SqlError::internal(m),
        }
    }
}

impl From<StorageError> for SqlError {
    fn from(e: StorageError) -> Self {
        tracing::error!("storage failure: {e}");
        SqlError::new(sqlstate::IO_ERROR, e.to_string())
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
        A::DivideByZero => SqlError::new(sqlstate::DIVISION_BY_ZERO, "division by zero"),
        A::CastError(m) if m.contains("Can't cast value") || m.contains("overflow") => {
            SqlError::new(sqlstate::NUMERIC_VALUE_OUT_OF_RANGE, clean(m))
        }
        A::CastError(m) | A::ParseError(m) => {
            SqlError::new(sqlstate::INVALID_TEXT_REPRESENTATION, clean(m))
        }
        A::ArithmeticOverflow(m) => SqlError::new(sqlstate::NUMERIC_VALUE_OUT_OF_RANGE, clean(m)),
        A::ComputeError(m) if m.contains("Overflow") || m.contains("overflow") => {
            SqlError::new(sqlstate::NUMERIC_VALUE_OUT_OF_RANGE, clean(m))
        }
        A::InvalidArgumentError(m) | A::ComputeError(m) => {
            SqlError::new(sqlstate::INVALID_PARAMETER_VALUE, clean(m))
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
            SqlError::new(sqlstate::SYNTAX_ERROR, format!("syntax error: {text}"))
        }
        DataFusionError::SchemaError(s, _) => match s.as_ref() {
            SchemaError::FieldNotFound { field, .. } => SqlError::new(
                sqlstate::UNDEFINED_COLUMN,
                format!("column \"{}\" does not exist", field.name),
            ),
            SchemaError::AmbiguousReference { field } => SqlError::new(
                sqlstate::AMBIGUOUS_COLUMN,
                format!("column reference \"{}\" is ambiguous", field.name),
            ),
            SchemaError::DuplicateQualifiedField { .. }
            | SchemaError::DuplicateUnqualifiedField { .. } => {
                SqlError::new(sqlstate::DUPLICATE_COLUMN, s.to_string())
            }
        },
        DataFusionError::NotImplemented(m) if m.contains("Unsupported SQL type") => SqlError::new(
            sqlstate::UNDEFINED_OBJECT,
            format!("type does not exist: {m}"),
        ),
        DataFusionError::NotImplemented(m) => SqlError::unsupported(m),
        DataFusionError::Plan(m) => classify_plan_message(m),
        DataFusionError::Execution(m) => classify_execution_message(m),
        DataFusionError::External(inner) => {
            if let Some(p) = inner.downcast_ref::<PlanError>() {
                return match p {
                    PlanError::DataFusion(d) => classify_datafusion(d),
                    PlanError::Syntax(m) => SqlError::new(sqlstate::SYNTAX_ERROR, m.clone()),
                    PlanError::Unsupported(m) => SqlError::unsupported(m),
                    PlanError::OutOfRange(m) => {
                        SqlError::new(sqlstate::NUMERIC_VALUE_OUT_OF_RANGE, m.clone())
                    }
                    PlanError::UndefinedColumn(m) => {
                        SqlError::new(sqlstate::UNDEFINED_COLUMN, m.clone())
                    }
                    PlanError::WrongType(m) => {
                        SqlError::new(sqlstate::DATATYPE_MISMATCH, m.clone())
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
                sqlstate::UNDEFINED_TABLE,
                format!("relation \"{short}\" does not exist"),
            );
        }
    }
    if lower.contains("table function") && lower.contains("not found") {
        return SqlError::new(sqlstate::UNDEFINED_FUNCTION, m.to_string());
    }
    if lower.contains("invalid function") || lower.contains("no function matches") {
        return SqlError::new(sqlstate::UNDEFINED_FUNCTION, m.to_string());
    }
    if lower.contains("group by") && (lower.contains("must") || lower.contains("aggregate")) {
        return SqlError::new(sqlstate::GROUPING_ERROR, m.to_string());
    }
    if lower.contains("needs a timestamp column")
        || lower.contains("needs an interval")
        || lower.contains("needs constant intervals")
    {
        return SqlError::new(sqlstate::DATATYPE_MISMATCH, m.to_string());
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
        return SqlError::new(sqlstate::DATATYPE_MISMATCH, m.to_string());
    }
    if lower.contains("division by zero") || lower.contains("divide by zero") {
        return SqlError::new(sqlstate::DIVISION_BY_ZERO, "division by zero");
    }
    if lower.contains("projections require unique expression names") {
        return SqlError::new(sqlstate::DUPLICATE_COLUMN, m.to_string());
    }
    // Some other mistake in the statement: PostgreSQL's class 42 catch-all.
    SqlError::new(
        sqlstate::SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION,
        m.to_string(),
    )
}

fn classify_execution_message(m: &str) -> SqlError {
    let lower = m.to_ascii_lowercase();
    if lower.contains("divide by zero") || lower.contains("division by zero") {
        SqlError::new(sqlstate::DIVISION_BY_ZERO, "division by zero")
    } else if lower.contains("overflow") {
        SqlError::new(sqlstate::NUMERIC_VALUE_OUT_OF_RANGE, m.to_string())
    } else if lower.contains("cast") || lower.contains("parse") {
        SqlError::new(sqlstate::INVALID_TEXT_REPRESENTATION, m.to_string())
    } else {
        SqlError::new(sqlstate::INVALID_PARAMETER_VALUE, m.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_not_found_maps_to_undefined_table() {
        let e = SqlError::from(DataFusionError::Plan(
            "table 'millrace.public.nope' not found".into(),
        ));
        assert_eq!(e.code, sqlstate::UNDEFINED_TABLE);
        assert_eq!(e.message, "relation \"nope\" does not exist");
    }

    #[test]
    fn divide_by_zero_maps_to_22012() {
        let e = SqlError::from(DataFusionError::ArrowError(
            Box::new(arrow::error::ArrowError::DivideByZero),
            None,
        ));
        assert_eq!(e.code, sqlstate::DIVISION_BY_ZERO);
    }
}
