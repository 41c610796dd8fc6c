//! Checks of frontend messages that PostgreSQL makes before it looks at any
//! SQL, and which pgwire leaves to the server: a `Bind` whose counts do not
//! match its statement or whose format codes are neither text nor binary,
//! and a `Query` or `Parse` that is not valid UTF-8.
//!
//! Each is refused as PostgreSQL 15 refuses it (same SQLSTATE, same
//! message), and the session goes on. Without them a mismatched `Bind` was
//! accepted (format codes other than binary read as text, a result format
//! list shorter than the columns indexed out of bounds), and invalid UTF-8
//! was silently replaced with U+FFFD: a statement the client never sent.

use pgwire::api::stmt::StoredStatement;
use pgwire::messages::data::{FORMAT_CODE_BINARY, FORMAT_CODE_TEXT};
use pgwire::messages::extendedquery::Bind;
use pgwire::messages::InvalidUtf8;

use super::Prepared;

/// A frontend message refused before its statement runs.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProtocolError {
    /// More than one parameter format code, but not one per parameter.
    #[error("bind message has {formats} parameter formats but {parameters} parameters")]
    ParameterFormatCount {
        /// Format codes sent.
        formats: usize,
        /// Parameters sent.
        parameters: usize,
    },
    /// Not as many parameters as the statement has.
    #[error(
        "bind message supplies {given} parameters, but prepared statement \"{statement}\" requires {required}"
    )]
    ParameterCount {
        /// Parameters sent.
        given: usize,
        /// The statement's name ("" for the unnamed one).
        statement: String,
        /// The statement's parameters.
        required: usize,
    },
    /// More than one result format code, but not one per column.
    #[error("bind message has {formats} result formats but query has {columns} columns")]
    ResultFormatCount {
        /// Format codes sent.
        formats: usize,
        /// The statement's result columns.
        columns: usize,
    },
    /// A format code other than 0 (text) and 1 (binary).
    #[error("unsupported format code: {0}")]
    FormatCode(i16),
    /// A string that is not valid UTF-8 (the only encoding spoken).
    #[error("invalid byte sequence for encoding \"UTF8\": {}", hex(.0))]
    InvalidUtf8(Vec<u8>),
}

/// `0xe2 0x28 0xa1`, as PostgreSQL shows bytes it cannot decode.
fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("0x{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Refuses a message that held invalid UTF-8.
pub(crate) fn check_utf8(invalid: Option<&InvalidUtf8>) -> Result<(), ProtocolError> {
    match invalid {
        Some(bad) => Err(ProtocolError::InvalidUtf8(bad.bytes.clone())),
        None => Ok(()),
    }
}

/// Checks `bind` against the statement it binds, in the order PostgreSQL's
/// `exec_bind_message` does. The statement's parameters are those its
/// `Parse` declared types for or its text uses, whichever are more (as
/// PostgreSQL counts them); its columns are those `Describe` reports.
pub(crate) fn check_bind(
    bind: &Bind,
    statement: &StoredStatement<Prepared>,
) -> Result<(), ProtocolError> {
    let formats = bind.parameter_format_codes.len();
    let given = bind.parameters.len();
    if formats > 1 && formats != given {
        return Err(ProtocolError::ParameterFormatCount {
            formats,
            parameters: given,
        });
    }
    let required = statement
        .parameter_types
        .len()
        .max(statement.statement.param_types.len());
    if given != required {
        return Err(ProtocolError::ParameterCount {
            given,
            statement: bind.statement_name.clone().unwrap_or_default(),
            required,
        });
    }
    // PostgreSQL checks a code when it decodes a parameter with it: codes
    // for no parameter are never looked at.
    if given > 0 {
        check_codes(&bind.parameter_format_codes)?;
    }
    let results = bind.result_column_format_codes.len();
    let columns = statement
        .statement
        .result
        .as_ref()
        .map_or(0, |s| s.fields().len());
    if results > 1 && results != columns {
        return Err(ProtocolError::ResultFormatCount {
            formats: results,
            columns,
        });
    }
    if columns > 0 {
        check_codes(&bind.result_column_format_codes)?;
    }
    Ok(())
}

fn check_codes(codes: &[i16]) -> Result<(), ProtocolError> {
    match codes
        .iter()
        .find(|c| **c != FORMAT_CODE_TEXT && **c != FORMAT_CODE_BINARY)
    {
        Some(c) => Err(ProtocolError::FormatCode(*c)),
        None => Ok(()),
    }
}
