//! User-visible errors: every failure a client sees carries an
//! [`ErrorKind`], chosen here from the error's type: the variant of a
//! planner, dataflow, storage or connector error, and the variant of
//! DataFusion's and Arrow's errors. Only where DataFusion or Arrow put the
//! kind in nothing but the text (a few of their planning, execution and
//! cast errors) is the text looked at, each such pattern documented where
//! it is matched. The server maps kinds to SQLSTATEs
//! (`server/src/sqlstate.rs`).

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
    /// `too_many_columns`: a target list longer than PostgreSQL allows.
    TooManyColumns,
    /// `no_active_sql_transaction_for_branch`.
    NoActiveSqlTransactionForBranch,
    /// `object_in_use`.
    ObjectInUse,
    /// `object_not_in_prerequisite_state`: what the statement needs is not
    /// there any more (a source's rows deleted from its topic).
    ObjectNotInPrerequisiteState,
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
            PlanError::DataFusion(e) => e.into(),
            other => classify_plan_error(&other),
        }
    }
}

/// The kind of a planner error, from its variant.
fn classify_plan_error(e: &PlanError) -> SqlError {
    match e {
        PlanError::Syntax(m) => SqlError::new(ErrorKind::SyntaxError, m.clone()),
        PlanError::Unsupported(m) => SqlError::unsupported(m),
        PlanError::OutOfRange(m) => SqlError::new(ErrorKind::NumericValueOutOfRange, m.clone()),
        PlanError::UndefinedColumn(m) => SqlError::new(ErrorKind::UndefinedColumn, m.clone()),
        PlanError::UndefinedTable(_) => SqlError::new(ErrorKind::UndefinedTable, e.to_string()),
        PlanError::WrongType(m) => SqlError::new(ErrorKind::DatatypeMismatch, m.clone()),
        PlanError::InvalidValue(m) => SqlError::new(ErrorKind::InvalidParameterValue, m.clone()),
        PlanError::InvalidText(m) => SqlError::new(ErrorKind::InvalidTextRepresentation, m.clone()),
        PlanError::Invalid(m) => {
            SqlError::new(ErrorKind::SyntaxErrorOrAccessRuleViolation, m.clone())
        }
        PlanError::DataFusion(d) => classify_datafusion(d),
        PlanError::Internal(m) => SqlError::internal(m),
    }
}

impl From<DataflowError> for SqlError {
    fn from(e: DataflowError) -> Self {
        match e {
            DataflowError::DataFusion(e) => e.into(),
            other => classify_dataflow_error(&other),
        }
    }
}

/// The kind of a dataflow error, from its variant.
fn classify_dataflow_error(e: &DataflowError) -> SqlError {
    match e {
        DataflowError::Unsupported(m) => SqlError::unsupported(m),
        DataflowError::OutOfRange(m) => SqlError::new(ErrorKind::NumericValueOutOfRange, m.clone()),
        DataflowError::DataFusion(d) => classify_datafusion(d),
        DataflowError::Internal(m) => SqlError::internal(m),
    }
}

impl From<millrace_connectors::ConnectorError> for SqlError {
    fn from(e: millrace_connectors::ConnectorError) -> Self {
        use millrace_connectors::ConnectorError as C;
        let kind = match &e {
            C::UnknownTopic { .. } => ErrorKind::UndefinedObject,
            C::ClientSettings(_) => ErrorKind::InvalidParameterValue,
            C::Retention { .. } => ErrorKind::ObjectNotInPrerequisiteState,
            C::Unreachable { .. } | C::ReadStalled { .. } => ErrorKind::ConnectionFailure,
            C::Internal(_) => ErrorKind::InternalError,
            _ => ErrorKind::IoError,
        };
        SqlError::new(kind, e.to_string())
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

/// The kind of an Arrow error, from its variant. Arrow has one variant for
/// every failed cast and one for every failed computation, so two of them
/// are told apart by their text (see [`cast_overflowed`] and
/// [`compute_overflowed`]).
fn classify_arrow(e: &arrow::error::ArrowError) -> SqlError {
    use arrow::error::ArrowError as A;
    match e {
        A::DivideByZero => SqlError::new(ErrorKind::DivisionByZero, "division by zero"),
        A::CastError(m) if cast_overflowed(m) => {
            SqlError::new(ErrorKind::NumericValueOutOfRange, clean(m))
        }
        A::CastError(m) | A::ParseError(m) => {
            SqlError::new(ErrorKind::InvalidTextRepresentation, clean(m))
        }
        A::ArithmeticOverflow(m) => SqlError::new(ErrorKind::NumericValueOutOfRange, clean(m)),
        A::ComputeError(m) if compute_overflowed(m) => {
            SqlError::new(ErrorKind::NumericValueOutOfRange, clean(m))
        }
        A::InvalidArgumentError(m) | A::ComputeError(m) => {
            SqlError::new(ErrorKind::InvalidParameterValue, clean(m))
        }
        A::NotYetImplemented(m) => SqlError::unsupported(m),
        // An error raised inside a kernel by a function of ours or
        // DataFusion's, carried through Arrow.
        A::ExternalError(inner) => classify_external(inner.as_ref()),
        other => SqlError::internal(other),
    }
}

/// Whether an Arrow cast failed because the value does not fit the target
/// type (22003) rather than because the text does not parse (22P02). Arrow
/// reports both as `CastError`; only the text differs: arrow-cast's
/// numeric casts say "Can't cast value 100000 to type Int16", its decimal
/// and temporal casts say "... overflow ...".
fn cast_overflowed(m: &str) -> bool {
    m.contains("Can't cast value") || m.contains("overflow")
}

/// Whether an Arrow computation failed by overflowing (22003). Arrow
/// reports it as `ComputeError` from some kernels ("Overflow while rounding
/// decimal", "... overflow ..."), with nothing but the text to tell.
fn compute_overflowed(m: &str) -> bool {
    m.contains("Overflow") || m.contains("overflow")
}

fn clean(m: &str) -> String {
    m.trim().to_string()
}

impl From<DataFusionError> for SqlError {
    fn from(e: DataFusionError) -> Self {
        classify_datafusion(&e)
    }
}

/// The kind of a DataFusion error: from its variant, from the Millrace
/// error it carries (`External`), and only for DataFusion's own `Plan`,
/// `Execution` and `NotImplemented` errors, which have no finer variant,
/// from their text.
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
        DataFusionError::NotImplemented(m) if unknown_sql_type(m) => SqlError::new(
            ErrorKind::UndefinedObject,
            format!("type does not exist: {m}"),
        ),
        DataFusionError::NotImplemented(m) => SqlError::unsupported(m),
        DataFusionError::Plan(m) => classify_datafusion_plan(m),
        DataFusionError::Execution(m) => classify_datafusion_execution(m),
        DataFusionError::External(inner) => classify_external(inner.as_ref()),
        other => SqlError::internal(other),
    }
}

/// An error of ours (or DataFusion's) that travelled through DataFusion or
/// Arrow boxed: its kind comes from its type.
fn classify_external(inner: &(dyn std::error::Error + Send + Sync + 'static)) -> SqlError {
    if let Some(p) = inner.downcast_ref::<PlanError>() {
        return classify_plan_error(p);
    }
    if let Some(d) = inner.downcast_ref::<DataflowError>() {
        return classify_dataflow_error(d);
    }
    if let Some(e) = inner.downcast_ref::<SqlError>() {
        return e.clone();
    }
    if let Some(d) = inner.downcast_ref::<DataFusionError>() {
        return classify_datafusion(d);
    }
    if let Some(a) = inner.downcast_ref::<arrow::error::ArrowError>() {
        return classify_arrow(a);
    }
    SqlError::internal(inner)
}

/// Whether DataFusion refused a type name it does not know (42704).
/// DataFusion's SQL planner reports it as `NotImplemented("Unsupported SQL
/// type …")` (datafusion-sql `planner.rs`), like any feature it lacks.
fn unknown_sql_type(m: &str) -> bool {
    m.contains("Unsupported SQL type")
}

/// DataFusion's planning errors (`DataFusionError::Plan`) that name a kind
/// only in their text. Every error Millrace's own code raises carries its
/// kind in its type ([`PlanError`], [`DataflowError`], [`SqlError`]) and
/// never comes here; each pattern below is a message of DataFusion 55 (the
/// file it comes from is named), so an upgrade that rewords one degrades
/// that error to the class-42 catch-all, never to a wrong class.
fn classify_datafusion_plan(m: &str) -> SqlError {
    let lower = m.to_ascii_lowercase();
    // "table 'catalog.schema.name' not found" (datafusion
    // `execution/session_state.rs`, resolving a relation).
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
    // "table function 'name' not found" (datafusion
    // `execution/session_state.rs`), "Invalid function 'name'" (datafusion-sql
    // `expr/function.rs`), "No function matches the given name and argument
    // types …" (datafusion-expr `utils.rs`).
    if (lower.contains("table function") && lower.contains("not found"))
        || lower.contains("invalid function")
        || lower.contains("no function matches")
    {
        return SqlError::new(ErrorKind::UndefinedFunction, m.to_string());
    }
    // "Column in SELECT must be in GROUP BY or an aggregate function",
    // "'expr' must appear in GROUP BY clause because it's not an aggregate
    // expression", "HAVING clause references: … must appear in the GROUP BY
    // clause …" (datafusion-sql `utils.rs`, `select.rs`).
    if lower.contains("group by") && (lower.contains("must") || lower.contains("aggregate")) {
        return SqlError::new(ErrorKind::GroupingError, m.to_string());
    }
    // Type coercion failures (datafusion-expr-common
    // `type_coercion/binary.rs`: "Cannot coerce arithmetic expression …",
    // "Cannot infer common argument type for …"; datafusion-expr
    // `type_coercion/functions.rs` and datafusion-optimizer
    // `analyzer/type_coercion.rs`: "Failed to coerce …"; datafusion-expr
    // `logical_plan/plan.rs`: "Cannot create filter with non-boolean
    // predicate …"; DataFusion's functions: "… does not support type …").
    if lower.contains("cannot coerce")
        || lower.contains("cannot infer common")
        || lower.contains("failed to coerce")
        || lower.contains("non-boolean")
        || lower.contains("does not support")
    {
        return SqlError::new(ErrorKind::DatatypeMismatch, m.to_string());
    }
    // "Projections require unique expression names but the expression … at
    // position … have the same name" (datafusion-expr
    // `logical_plan/builder.rs`).
    if lower.contains("require unique expression names") {
        return SqlError::new(ErrorKind::DuplicateColumn, m.to_string());
    }
    // Some other mistake in the statement: PostgreSQL's class 42 catch-all.
    SqlError::new(ErrorKind::SyntaxErrorOrAccessRuleViolation, m.to_string())
}

/// DataFusion's execution errors (`DataFusionError::Execution`): a value
/// its functions refused, which DataFusion raises as text only (for
/// example "Arithmetic overflow in avg …" in datafusion-functions-aggregate,
/// "start position overflow" in `substr`, "Error parsing timestamp from
/// '…'" and "Unable to cast …" in the datetime functions). Millrace's own
/// functions raise typed errors and never come here.
fn classify_datafusion_execution(m: &str) -> SqlError {
    let lower = m.to_ascii_lowercase();
    if lower.contains("overflow") {
        SqlError::new(ErrorKind::NumericValueOutOfRange, m.to_string())
    } else if lower.contains("cast") || lower.contains("parse") {
        SqlError::new(ErrorKind::InvalidTextRepresentation, m.to_string())
    } else {
        SqlError::new(ErrorKind::InvalidParameterValue, m.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn through_datafusion(e: PlanError) -> SqlError {
        // As a table function's error reaches the engine: boxed by
        // `into_datafusion`, with context added on the way.
        SqlError::from(DataFusionError::Context(
            "while planning".into(),
            Box::new(e.into_datafusion()),
        ))
    }

    #[test]
    fn planner_errors_keep_their_kind_through_datafusion() {
        let e = through_datafusion(PlanError::WrongType(
            "TUMBLE needs a timestamp column".into(),
        ));
        assert_eq!(e.kind, ErrorKind::DatatypeMismatch);
        assert_eq!(e.message, "TUMBLE needs a timestamp column");
        let e = through_datafusion(PlanError::UndefinedTable("nope".into()));
        assert_eq!(e.kind, ErrorKind::UndefinedTable);
        assert_eq!(e.message, "relation \"nope\" does not exist");
        let e = through_datafusion(PlanError::InvalidText("invalid input".into()));
        assert_eq!(e.kind, ErrorKind::InvalidTextRepresentation);
        // The kind comes from the variant, not the words.
        let e = through_datafusion(PlanError::Invalid("division by zero".into()));
        assert_eq!(e.kind, ErrorKind::SyntaxErrorOrAccessRuleViolation);
    }

    #[test]
    fn errors_boxed_by_arrow_keep_their_kind() {
        let boxed = arrow::error::ArrowError::ExternalError(Box::new(PlanError::OutOfRange(
            "too big".into(),
        )));
        assert_eq!(
            SqlError::from(boxed).kind,
            ErrorKind::NumericValueOutOfRange
        );
        let dataflow = DataFusionError::External(Box::new(DataflowError::Unsupported(
            "windows finer than the column".into(),
        )));
        assert_eq!(
            SqlError::from(dataflow).kind,
            ErrorKind::FeatureNotSupported
        );
    }

    #[test]
    fn datafusion_messages_without_a_variant_are_classified_by_their_text() {
        let plan = |m: &str| SqlError::from(DataFusionError::Plan(m.into())).kind;
        assert_eq!(
            plan("Column in SELECT must be in GROUP BY or an aggregate function"),
            ErrorKind::GroupingError
        );
        assert_eq!(
            plan("Invalid function 'nope'.\nDid you mean 'now'?"),
            ErrorKind::UndefinedFunction
        );
        assert_eq!(
            plan("Cannot infer common argument type for comparison operation Int64 = Boolean"),
            ErrorKind::DatatypeMismatch
        );
        assert_eq!(
            plan("something else"),
            ErrorKind::SyntaxErrorOrAccessRuleViolation
        );
        let cast =
            arrow::error::ArrowError::CastError("Can't cast value 100000 to type Int16".into());
        assert_eq!(SqlError::from(cast).kind, ErrorKind::NumericValueOutOfRange);
        let cast = arrow::error::ArrowError::CastError("Cannot cast string 'x'".into());
        assert_eq!(
            SqlError::from(cast).kind,
            ErrorKind::InvalidTextRepresentation
        );
    }
}
