//! SQL cursors: `DECLARE … CURSOR [WITH HOLD] FOR query`, `FETCH` and
//! `CLOSE`, as psqlODBC and other drivers use them to read large results
//! in pieces.
//!
//! A cursor runs its query when declared and keeps the result; `FETCH`
//! hands out the next rows. Cursors belong to one connection and go with
//! it. Without `WITH HOLD` a cursor lives until its transaction block ends,
//! as in PostgreSQL; only forward fetching is supported.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use sqlparser::ast::{CloseCursor, FetchDirection, Statement as Sql, Value};

use millrace_engine::error::{ErrorKind, SqlError, SqlResult};
use millrace_engine::Outcome;

/// At most this many cursors per connection: each holds its whole result.
const MAX_CURSORS: usize = 256;

/// One declared cursor.
struct Cursor {
    schema: SchemaRef,
    rows: VecDeque<RecordBatch>,
    hold: bool,
}

/// The cursors of one connection.
#[derive(Default)]
pub(crate) struct Cursors {
    open: Mutex<HashMap<String, Cursor>>,
}

/// What a cursor statement asks for.
pub(crate) enum CursorCommand<'a> {
    /// `DECLARE name CURSOR … FOR query`: run `query` (a `SELECT`).
    Declare {
        name: String,
        hold: bool,
        query: &'a sqlparser::ast::Query,
    },
    /// `FETCH`: `None` is ALL.
    Fetch { name: String, count: Option<usize> },
    /// `CLOSE name` or `CLOSE ALL`.
    Close(Option<String>),
}

impl<'a> CursorCommand<'a> {
    /// The cursor command `sql` is, if any.
    pub(crate) fn of(sql: &'a Sql) -> SqlResult<Option<Self>> {
        Ok(Some(match sql {
            Sql::Declare { stmts } => {
                let [d] = stmts.as_slice() else {
                    return Err(SqlError::unsupported("several cursors in one DECLARE"));
                };
                let (Some(query), [name]) = (&d.for_query, d.names.as_slice()) else {
                    return Ok(None);
                };
                if d.scroll == Some(true) {
                    return Err(SqlError::unsupported(
                        "SCROLL cursors (only forward fetching)",
                    ));
                }
                CursorCommand::Declare {
                    name: name.value.clone(),
                    hold: d.hold == Some(true),
                    query,
                }
            }
            Sql::Fetch {
                name, direction, ..
            } => {
                let count = match direction {
                    FetchDirection::Next | FetchDirection::Forward { limit: None } => Some(1),
                    FetchDirection::Count { limit }
                    | FetchDirection::Forward { limit: Some(limit) } => Some(count(&limit.value)?),
                    FetchDirection::All | FetchDirection::ForwardAll => None,
                    _ => {
                        return Err(SqlError::unsupported(
                            "FETCH directions other than NEXT, FORWARD, ALL or a count (cursors only move forward)",
                        ))
                    }
                };
                CursorCommand::Fetch {
                    name: name.value.clone(),
                    count,
                }
            }
            Sql::Close { cursor } => CursorCommand::Close(match cursor {
                CloseCursor::All => None,
                CloseCursor::Specific { name } => Some(name.value.clone()),
            }),
            _ => return Ok(None),
        }))
    }
}

fn count(v: &Value) -> SqlResult<usize> {
    match v {
        Value::Number(n, _) => n.parse().map_err(|_| {
            SqlError::new(
                ErrorKind::InvalidParameterValue,
                format!("FETCH count {n} is not a row count"),
            )
        }),
        other => Err(SqlError::new(
            ErrorKind::SyntaxError,
            format!("FETCH count {other} is not a number"),
        )),
    }
}

fn no_such(name: &str) -> SqlError {
    SqlError::new(
        ErrorKind::InvalidCursorName,
        format!("cursor \"{name}\" does not exist"),
    )
}

impl Cursors {
    /// Keeps the result of a declared cursor.
    pub(crate) fn declare(&self, name: String, hold: bool, result: Outcome) -> SqlResult<()> {
        let Outcome::Rows { schema, batches } = result else {
            return Err(SqlError::new(
                ErrorKind::InvalidCursorDefinition,
                "a cursor needs a query that returns rows",
            ));
        };
        let mut open = self.lock();
        if open.contains_key(&name) {
            return Err(SqlError::new(
                ErrorKind::DuplicateCursor,
                format!("cursor \"{name}\" already exists"),
            ));
        }
        if open.len() >= MAX_CURSORS {
            return Err(SqlError::new(
                ErrorKind::ProgramLimitExceeded,
                format!("a connection can have at most {MAX_CURSORS} open cursors"),
            )
            .with_hint("CLOSE the cursors you no longer read"));
        }
        open.insert(
            name,
            Cursor {
                schema,
                rows: batches.into_iter().filter(|b| b.num_rows() > 0).collect(),
                hold,
            },
        );
        Ok(())
    }

    /// The next `count` rows (all with `None`) of cursor `name`.
    pub(crate) fn fetch(&self, name: &str, count: Option<usize>) -> SqlResult<Outcome> {
        let mut open = self.lock();
        let cursor = open.get_mut(name).ok_or_else(|| no_such(name))?;
        let mut want = count.unwrap_or(usize::MAX);
        let mut batches = Vec::new();
        while want > 0 {
            let Some(batch) = cursor.rows.pop_front() else {
                break;
            };
            if batch.num_rows() <= want {
                want -= batch.num_rows();
                batches.push(batch);
            } else {
                batches.push(batch.slice(0, want));
                cursor
                    .rows
                    .push_front(batch.slice(want, batch.num_rows() - want));
                want = 0;
            }
        }
        Ok(Outcome::Rows {
            schema: cursor.schema.clone(),
            batches,
        })
    }

    /// The columns cursor `name` returns.
    pub(crate) fn schema(&self, name: &str) -> SqlResult<SchemaRef> {
        self.lock()
            .get(name)
            .map(|c| c.schema.clone())
            .ok_or_else(|| no_such(name))
    }

    /// Closes cursor `name`, or all with `None`.
    pub(crate) fn close(&self, name: Option<&str>) -> SqlResult<()> {
        let mut open = self.lock();
        match name {
            Some(n) => open.remove(n).map(|_| ()).ok_or_else(|| no_such(n)),
            None => {
                open.clear();
                Ok(())
            }
        }
    }

    /// The transaction block ended: cursors without `WITH HOLD` close.
    pub(crate) fn end_transaction(&self) {
        self.lock().retain(|_, c| c.hold);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cursor>> {
        // A panic while holding the lock leaves plain data behind: use it.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}
