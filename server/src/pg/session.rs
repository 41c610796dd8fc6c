//! Session-level commands answered by the front end itself: `SET`, `SHOW`
//! of a setting, and transaction control.
//!
//! Every statement is its own transaction today (each `INSERT` commits and
//! is durable when it returns), so `BEGIN`/`COMMIT`/`ROLLBACK` only track the
//! protocol's transaction status for drivers that wrap work in them.

use std::sync::Arc;

use arrow::array::StringArray;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use millrace_planner::statement::Statement;
use pgwire::api::ClientInfo;
use sqlparser::ast::{Expr, Ident, Set, Statement as Sql, Value};

use super::SessionOutcome;
use millrace_engine::error::{ErrorKind, SqlError, SqlResult};
use millrace_engine::Outcome;

/// Settings every session starts with, as PostgreSQL 15 reports them.
const DEFAULTS: &[(&str, &str)] = &[
    ("application_name", ""),
    ("client_encoding", "UTF8"),
    ("datestyle", "ISO, MDY"),
    ("default_transaction_isolation", "read committed"),
    ("extra_float_digits", "1"),
    ("integer_datetimes", "on"),
    ("intervalstyle", "postgres"),
    ("is_superuser", "on"),
    ("max_identifier_length", "63"),
    ("search_path", "\"$user\", public"),
    ("server_encoding", "UTF8"),
    ("server_version", "15.0"),
    ("server_version_num", "150000"),
    ("standard_conforming_strings", "on"),
    ("statement_timeout", "0"),
    ("timezone", "UTC"),
    ("transaction_isolation", "read committed"),
    ("transaction_read_only", "off"),
];

const SETTING_PREFIX: &str = "millrace.setting.";

/// Handles `stmt` if it is a session command; `None` passes it on.
pub(crate) fn handle<C: ClientInfo>(
    client: &mut C,
    stmt: &Statement,
) -> SqlResult<Option<SessionOutcome>> {
    let Statement::Sql(sql) = stmt else {
        return Ok(None);
    };
    Ok(Some(match sql.as_ref() {
        Sql::StartTransaction { .. } => SessionOutcome::TransactionStart("BEGIN"),
        Sql::Commit { .. } => SessionOutcome::TransactionEnd("COMMIT"),
        // Every statement commits on its own: a savepoint has nothing to
        // undo, like the ROLLBACK of a block (see `track_transaction`).
        Sql::Savepoint { .. } => command("SAVEPOINT"),
        Sql::ReleaseSavepoint { .. } => command("RELEASE"),
        Sql::Rollback {
            savepoint: Some(_), ..
        } => command("ROLLBACK"),
        Sql::Rollback { .. } => SessionOutcome::TransactionEnd("ROLLBACK"),
        // SQL-level prepared statements are not kept (protocol-level ones
        // are, by the driver's Close message): nothing to free.
        Sql::Deallocate { .. } => command("DEALLOCATE"),
        Sql::Discard { object_type } => command(&format!("DISCARD {object_type}")),
        Sql::Set(Set::SingleAssignment {
            variable, values, ..
        }) => {
            let name = variable.to_string().to_lowercase();
            let value = values
                .iter()
                .map(setting_text)
                .collect::<Vec<_>>()
                .join(", ");
            if name == "statement_timeout"
                && !value.eq_ignore_ascii_case("default")
                && timeout_ms(&value).is_none()
            {
                return Err(SqlError::new(
                    ErrorKind::InvalidParameterValue,
                    format!("invalid value for parameter \"statement_timeout\": \"{value}\""),
                )
                .with_hint("Give milliseconds, or a number with ms, s, min, h or d."));
            }
            set(client, &name, value);
            command("SET")
        }
        Sql::Set(Set::SetTimeZone { value, .. }) => {
            set(client, "timezone", setting_text(value));
            command("SET")
        }
        Sql::Set(Set::SetNames { charset_name, .. }) => {
            set(client, "client_encoding", charset_name.to_string());
            command("SET")
        }
        Sql::Set(_) => command("SET"),
        Sql::ShowVariable { variable } => show(client, variable)?,
        _ => return Ok(None),
    }))
}

fn command(tag: &str) -> SessionOutcome {
    SessionOutcome::Engine(Outcome::Command {
        tag: tag.to_string(),
        rows: None,
        oid: false,
    })
}

fn setting_text(e: &Expr) -> String {
    match e {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            other => other.to_string(),
        },
        Expr::Identifier(i) => i.value.clone(),
        other => other.to_string(),
    }
}

fn set<C: ClientInfo>(client: &mut C, name: &str, value: String) {
    let value = if value.eq_ignore_ascii_case("default") {
        default_of(name).unwrap_or_default().to_string()
    } else {
        value
    };
    client
        .metadata_mut()
        .insert(format!("{SETTING_PREFIX}{name}"), value);
}

fn default_of(name: &str) -> Option<&'static str> {
    DEFAULTS.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
}

/// The column name `SHOW x` reports.
pub(crate) fn show_column(variable: &[Ident]) -> String {
    variable
        .iter()
        .map(|i| i.value.to_lowercase())
        .collect::<Vec<_>>()
        .join(" ")
}

fn show<C: ClientInfo>(client: &C, variable: &[Ident]) -> SqlResult<SessionOutcome> {
    let name = show_column(variable);
    let lookup = |n: &str| -> Option<String> {
        client
            .metadata()
            .get(&format!("{SETTING_PREFIX}{n}"))
            .cloned()
            .or_else(|| default_of(n).map(str::to_string))
    };
    if name == "all" {
        let mut names: Vec<&str> = DEFAULTS.iter().map(|(k, _)| *k).collect();
        names.sort();
        let values: Vec<String> = names
            .iter()
            .map(|n| lookup(n).unwrap_or_default())
            .collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("setting", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(names)),
                Arc::new(StringArray::from(values)),
            ],
        )?;
        return Ok(SessionOutcome::Engine(Outcome::Rows {
            schema,
            batches: vec![batch],
        }));
    }
    let key = match name.as_str() {
        "transaction isolation level" => "transaction_isolation",
        "time zone" => "timezone",
        other => other,
    };
    let value = lookup(key).ok_or_else(|| {
        SqlError::new(
            ErrorKind::UndefinedObject,
            format!("unrecognized configuration parameter \"{name}\""),
        )
    })?;
    let schema = name_column_schema(&name);
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(StringArray::from(vec![value]))],
    )?;
    Ok(SessionOutcome::Engine(Outcome::Rows {
        schema,
        batches: vec![batch],
    }))
}

/// `current_setting('name' [, missing_ok])` answered with this session's
/// value (the engine plans statements for all sessions alike, so the value
/// goes into the statement as a literal). Unknown names are an error unless
/// `missing_ok`, as in PostgreSQL.
pub(crate) fn inline_settings<'a, C: ClientInfo>(
    client: &C,
    stmt: &'a Statement,
) -> SqlResult<std::borrow::Cow<'a, Statement>> {
    use std::ops::ControlFlow;
    let Statement::Sql(sql) = stmt else {
        return Ok(std::borrow::Cow::Borrowed(stmt));
    };
    let mentions = sqlparser::ast::visit_expressions(sql.as_ref(), |e| match e {
        Expr::Function(f) if is_current_setting(f) => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    });
    if mentions.is_continue() {
        return Ok(std::borrow::Cow::Borrowed(stmt));
    }
    let mut sql = sql.as_ref().clone();
    let mut error = None;
    let _ = sqlparser::ast::visit_expressions_mut(&mut sql, |e| {
        if let Expr::Function(f) = e {
            if is_current_setting(f) {
                match setting_call(client, f) {
                    Ok(value) => *e = value,
                    Err(err) => {
                        error = Some(err);
                        return ControlFlow::Break(());
                    }
                }
            }
        }
        ControlFlow::Continue(())
    });
    match error {
        Some(e) => Err(e),
        None => Ok(std::borrow::Cow::Owned(Statement::Sql(Box::new(sql)))),
    }
}

fn is_current_setting(f: &sqlparser::ast::Function) -> bool {
    f.name
        .0
        .last()
        .and_then(|p| p.as_ident())
        .is_some_and(|i| i.value.eq_ignore_ascii_case("current_setting"))
}

/// The literal a `current_setting(…)` call stands for.
fn setting_call<C: ClientInfo>(client: &C, f: &sqlparser::ast::Function) -> SqlResult<Expr> {
    use sqlparser::ast::{FunctionArg, FunctionArgExpr, FunctionArguments};
    let args: Vec<&Expr> = match &f.args {
        FunctionArguments::List(list) => list
            .args
            .iter()
            .filter_map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
                _ => None,
            })
            .collect(),
        _ => vec![],
    };
    let text = |e: &Expr| match e {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => Some(s.clone()),
            Value::Boolean(b) => Some(b.to_string()),
            _ => None,
        },
        _ => None,
    };
    let (Some(name), missing_ok) = (
        args.first().and_then(|e| text(e)),
        args.get(1).and_then(|e| text(e)),
    ) else {
        return Err(SqlError::unsupported(
            "current_setting() of something other than a constant name",
        ));
    };
    let missing_ok = missing_ok.is_some_and(|m| m == "true");
    let name = name.to_lowercase();
    let value = client
        .metadata()
        .get(&format!("{SETTING_PREFIX}{name}"))
        .cloned()
        .or_else(|| default_of(&name).map(str::to_string));
    match value {
        Some(v) => Ok(Expr::Value(Value::SingleQuotedString(v).into())),
        None if missing_ok => Ok(Expr::Value(Value::Null.into())),
        None => Err(SqlError::new(
            ErrorKind::UndefinedObject,
            format!("unrecognized configuration parameter \"{name}\""),
        )),
    }
}

/// The session's `statement_timeout`, if any: a number of milliseconds, or
/// a number with a unit (`ms`, `s`, `min`, `h`, `d`) as PostgreSQL takes it;
/// 0 (the default) means none.
pub(crate) fn statement_timeout<C: ClientInfo>(client: &C) -> Option<std::time::Duration> {
    let ms = timeout_ms(
        client
            .metadata()
            .get(&format!("{SETTING_PREFIX}statement_timeout"))?,
    )?;
    (ms >= 1.0).then(|| std::time::Duration::from_millis(ms as u64))
}

/// A timeout setting in milliseconds; `None` when it does not parse.
fn timeout_ms(text: &str) -> Option<f64> {
    let text = text.trim().to_lowercase();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let ms = number
        * match unit.trim() {
            "" | "ms" => 1.0,
            "s" => 1_000.0,
            "min" => 60_000.0,
            "h" => 3_600_000.0,
            "d" => 86_400_000.0,
            _ => return None,
        };
    Some(ms)
}

/// A single text column called `name`.
pub(crate) fn name_column_schema(name: &str) -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(name, DataType::Utf8, false)]))
}
