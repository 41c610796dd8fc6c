//! The one place errors get their SQLSTATE: every [`ErrorKind`] of the
//! engine's errors, and every frontend message the wire protocol refuses
//! ([`ProtocolError`]), maps to PostgreSQL's code for it (appendix A).

use millrace_engine::error::{ErrorKind, SqlError};

use crate::pg::protocol::ProtocolError;

/// SQLSTATE codes Millrace reports.
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
pub const TOO_MANY_COLUMNS: &str = "54011";
pub const NO_ACTIVE_SQL_TRANSACTION_FOR_BRANCH: &str = "25P01";
pub const CHARACTER_NOT_IN_REPERTOIRE: &str = "22021";
pub const OBJECT_IN_USE: &str = "55006";
pub const OBJECT_NOT_IN_PREREQUISITE_STATE: &str = "55000";
/// A failed password login (wrong password or unknown user alike).
pub const INVALID_PASSWORD: &str = "28P01";
/// A session whose role no longer exists.
pub const INVALID_AUTHORIZATION_SPECIFICATION: &str = "28000";

/// The SQLSTATE of a refused frontend message, as PostgreSQL's
/// `exec_bind_message` and encoding checks report it: wrong counts are a
/// protocol violation, a format code other than text or binary an invalid
/// parameter value, bytes that are not UTF-8 a character not in repertoire.
pub(crate) fn of_protocol(e: &ProtocolError) -> &'static str {
    match e {
        ProtocolError::ParameterFormatCount { .. }
        | ProtocolError::ParameterCount { .. }
        | ProtocolError::ResultFormatCount { .. } => PROTOCOL_VIOLATION,
        ProtocolError::FormatCode(_) => INVALID_PARAMETER_VALUE,
        ProtocolError::InvalidUtf8(_) => CHARACTER_NOT_IN_REPERTOIRE,
    }
}

/// The SQLSTATE of `kind`.
pub fn of(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::SyntaxError => SYNTAX_ERROR,
        ErrorKind::SyntaxErrorOrAccessRuleViolation => SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION,
        ErrorKind::UndefinedTable => UNDEFINED_TABLE,
        ErrorKind::UndefinedColumn => UNDEFINED_COLUMN,
        ErrorKind::UndefinedFunction => UNDEFINED_FUNCTION,
        ErrorKind::AmbiguousColumn => AMBIGUOUS_COLUMN,
        ErrorKind::DuplicateTable => DUPLICATE_TABLE,
        ErrorKind::DuplicateColumn => DUPLICATE_COLUMN,
        ErrorKind::DatatypeMismatch => DATATYPE_MISMATCH,
        ErrorKind::WrongObjectType => WRONG_OBJECT_TYPE,
        ErrorKind::DependentObjectsStillExist => DEPENDENT_OBJECTS_STILL_EXIST,
        ErrorKind::DivisionByZero => DIVISION_BY_ZERO,
        ErrorKind::InvalidTextRepresentation => INVALID_TEXT_REPRESENTATION,
        ErrorKind::NumericValueOutOfRange => NUMERIC_VALUE_OUT_OF_RANGE,
        ErrorKind::InvalidParameterValue => INVALID_PARAMETER_VALUE,
        ErrorKind::InvalidEscapeSequence => INVALID_ESCAPE_SEQUENCE,
        ErrorKind::NullValueNotAllowed => NULL_VALUE_NOT_ALLOWED,
        ErrorKind::NotNullViolation => NOT_NULL_VIOLATION,
        ErrorKind::FeatureNotSupported => FEATURE_NOT_SUPPORTED,
        ErrorKind::ProtocolViolation => PROTOCOL_VIOLATION,
        ErrorKind::UndefinedParameter => UNDEFINED_PARAMETER,
        ErrorKind::GroupingError => GROUPING_ERROR,
        ErrorKind::DatetimeFieldOverflow => DATETIME_FIELD_OVERFLOW,
        ErrorKind::UndefinedObject => UNDEFINED_OBJECT,
        ErrorKind::InternalError => INTERNAL_ERROR,
        ErrorKind::IoError => IO_ERROR,
        ErrorKind::ConnectionFailure => CONNECTION_FAILURE,
        ErrorKind::UnableToConnect => UNABLE_TO_CONNECT,
        ErrorKind::QueryCanceled => QUERY_CANCELED,
        ErrorKind::InvalidCursorName => INVALID_CURSOR_NAME,
        ErrorKind::DuplicateObject => DUPLICATE_OBJECT,
        ErrorKind::DuplicateCursor => DUPLICATE_CURSOR,
        ErrorKind::InvalidCursorDefinition => INVALID_CURSOR_DEFINITION,
        ErrorKind::ProgramLimitExceeded => PROGRAM_LIMIT_EXCEEDED,
        ErrorKind::TooManyColumns => TOO_MANY_COLUMNS,
        ErrorKind::NoActiveSqlTransactionForBranch => NO_ACTIVE_SQL_TRANSACTION_FOR_BRANCH,
        ErrorKind::ObjectInUse => OBJECT_IN_USE,
        ErrorKind::ObjectNotInPrerequisiteState => OBJECT_NOT_IN_PREREQUISITE_STATE,
    }
}

/// `e` for a log line or a startup failure: its message and SQLSTATE.
pub fn describe(e: &SqlError) -> String {
    format!("{} ({})", e.message, of(e.kind))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::error::DataFusionError;

    #[test]
    fn table_not_found_maps_to_undefined_table() {
        let e = SqlError::from(DataFusionError::Plan(
            "table 'millrace.public.nope' not found".into(),
        ));
        assert_eq!(of(e.kind), UNDEFINED_TABLE);
        assert_eq!(e.message, "relation \"nope\" does not exist");
    }

    #[test]
    fn divide_by_zero_maps_to_22012() {
        let e = SqlError::from(DataFusionError::ArrowError(
            Box::new(arrow::error::ArrowError::DivideByZero),
            None,
        ));
        assert_eq!(of(e.kind), DIVISION_BY_ZERO);
    }
}
