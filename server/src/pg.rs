//! The PostgreSQL wire protocol front end (pgwire): simple and extended
//! query protocol, session commands, result encoding and error reporting.

pub mod compat;
mod cursor;
pub mod functions;
mod information_schema;
mod limits;
mod login;
mod params;
pub(crate) mod protocol;
mod session;
pub(crate) mod text;
mod threads;

use std::fmt::Debug;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use async_trait::async_trait;
use datafusion::common::ParamValues;
use futures::{stream, FutureExt, Sink, SinkExt};
use millrace_planner::statement::{self, Statement};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;

use millrace_engine::error::{ErrorKind, SqlError, SqlResult};
use millrace_engine::{Engine, Outcome};

/// The most `$n` parameters a statement may have (the protocol's limit).
const MAX_PARAMETERS: usize = 65_535;

/// The stack of a statement thread. Parsing, checking, planning and
/// dropping a statement recurse once per level of its expressions, and
/// sqlparser nests `1 + 1 + …` one level per term whatever its length: a
/// 400-term sum overflowed the async workers' 2 MiB. This stack holds a
/// refused sum of millions of terms (a text of several MB); it is reserved
/// address space, used only as deep as a statement needs.
pub(crate) const STATEMENT_STACK: usize = 256 << 20;

/// The most statements parsed, planned or executed at once; more wait for
/// one of them to end (waiting holds no thread).
const MAX_RUNNING_STATEMENTS: usize = 64;

/// Permits for [`MAX_RUNNING_STATEMENTS`].
static RUNNING_STATEMENTS: std::sync::LazyLock<Arc<tokio::sync::Semaphore>> =
    std::sync::LazyLock::new(|| Arc::new(tokio::sync::Semaphore::new(MAX_RUNNING_STATEMENTS)));

/// Runs `work` (parsing, planning or executing a statement) on a thread of
/// its own (one kept from an earlier statement, see [`threads`]), never on the async workers that serve every connection: planning
/// is CPU-bound and does not yield, so on a worker one heavy statement
/// stalled every session that worker served (a `select 0, 1, …, 65534` held
/// one for 250 s). The thread drives `work` with the server's runtime, so
/// whatever `work` spawns, its timers and its I/O go on as before.
///
/// When the caller stops waiting (a CancelRequest drops the statement's
/// future, statement_timeout returns), `work` is dropped at its next await:
/// execution stops between batches, while planning, which never awaits,
/// runs to its end first (bounded by [`limits`]) and its plan is thrown
/// away. A panic in `work` becomes an internal error.
async fn off_workers<T, F, Fut>(what: &'static str, work: F) -> SqlResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = SqlResult<T>>,
{
    let permit = RUNNING_STATEMENTS
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| SqlError::internal(format!("no statement slot: {e}")))?;
    let runtime = tokio::runtime::Handle::current();
    let (tx, rx) = tokio::sync::oneshot::channel();
    threads::run(
        Box::new(move || {
            let _permit = permit;
            let mut tx = tx;
            let out = runtime.block_on(async {
                let work = AssertUnwindSafe(async move { work().await }).catch_unwind();
                tokio::select! {
                    biased;
                    _ = tx.closed() => None,
                    out = work => Some(out),
                }
            });
            if let Some(out) = out {
                let _ = tx.send(out);
            }
        }),
        STATEMENT_STACK,
    )
    .map_err(|e| SqlError::internal(format!("cannot start a statement thread: {e}")))?;
    match rx.await {
        Ok(Ok(out)) => out,
        Ok(Err(panic)) => {
            let message = millrace_engine::panic_message(&*panic);
            tracing::error!("{what} panicked: {message}");
            Err(SqlError::internal(format!(
                "the {what} failed unexpectedly: {message}"
            )))
        }
        Err(_) => Err(SqlError::internal(format!(
            "the {what} ended without an answer"
        ))),
    }
}

/// Serves one connection (see [`Frontend::connection`]).
pub struct Frontend {
    engine: Arc<Engine>,
    parser: Arc<Parser>,
    /// The connection's cursors.
    cursors: Arc<cursor::Cursors>,
}

impl Frontend {
    /// A front end for `engine`.
    pub fn new(engine: Arc<Engine>) -> Arc<Self> {
        let cursors = Arc::new(cursor::Cursors::default());
        Arc::new(Self {
            parser: Arc::new(Parser {
                engine: engine.clone(),
                cursors: cursors.clone(),
            }),
            engine,
            cursors,
        })
    }

    /// A front end for a new connection: same engine, its own cursors.
    pub fn connection(&self) -> Arc<Self> {
        Self::new(self.engine.clone())
    }

    /// Runs one statement, turning panics into internal errors so that no
    /// input can take the server down.
    async fn run<C: ClientInfo + Send>(
        &self,
        client: &mut C,
        stmt: &Arc<Statement>,
        params: Option<&ParamValues>,
    ) -> SqlResult<SessionOutcome> {
        login::refuse_dropping_self(client, stmt)?;
        if let Some(out) = session::handle(client, stmt)? {
            if matches!(out, SessionOutcome::TransactionEnd(_)) {
                self.cursors.end_transaction();
            }
            return Ok(out);
        }
        if let Statement::Sql(sql) = stmt.as_ref() {
            if let Some(command) = cursor::CursorCommand::of(sql)? {
                return self.cursor(client, command, params).await;
            }
        }
        // (An Arc, so that handing it to its thread copies no tree.)
        let stmt = match session::inline_settings(client, stmt)? {
            std::borrow::Cow::Borrowed(_) => stmt.clone(),
            std::borrow::Cow::Owned(inlined) => Arc::new(inlined),
        };
        // statement_timeout bounds queries; a write always runs to its
        // commit (stopping one halfway would leave nothing to gain).
        let limit = if is_query(&stmt) {
            session::statement_timeout(client)
        } else {
            None
        };
        let engine = self.engine.clone();
        let params = params.cloned();
        let logged = stmt.clone();
        let fut = off_workers("statement", move || async move {
            engine.execute(&stmt, params.as_ref()).await
        });
        // (A CancelRequest is handled by pgwire: it drops the running
        // statement's future, see `register_for_cancel`, and with it the
        // statement's work, see `off_workers`.)
        let deadline = async move {
            match limit {
                Some(limit) => tokio::time::sleep(limit).await,
                None => std::future::pending::<()>().await,
            }
        };
        let result = tokio::select! {
            r = fut => r,
            _ = deadline => {
                return Err(SqlError::new(
                    ErrorKind::QueryCanceled,
                    "canceling statement due to statement timeout",
                ))
            }
        };
        if let Err(e) = &result {
            if e.kind == ErrorKind::InternalError {
                tracing::error!(statement = %logged, "statement failed: {}", e.message);
            }
        }
        result.map(SessionOutcome::Engine)
    }
}

impl Frontend {
    async fn cursor<C: ClientInfo + Send>(
        &self,
        client: &mut C,
        command: cursor::CursorCommand<'_>,
        params: Option<&ParamValues>,
    ) -> SqlResult<SessionOutcome> {
        use pgwire::messages::response::TransactionStatus;
        match command {
            cursor::CursorCommand::Declare { name, hold, query } => {
                if !hold && client.transaction_status() == TransactionStatus::Idle {
                    return Err(SqlError::new(
                        ErrorKind::NoActiveSqlTransactionForBranch,
                        "DECLARE CURSOR can only be used in transaction blocks",
                    )
                    .with_hint("BEGIN first, or declare the cursor WITH HOLD"));
                }
                let select = Statement::Sql(Box::new(sqlparser::ast::Statement::Query(Box::new(
                    query.clone(),
                ))));
                let select = session::inline_settings(client, &select)?.into_owned();
                let engine = self.engine.clone();
                let params = params.cloned();
                let result = off_workers("cursor's query", move || async move {
                    engine.execute(&select, params.as_ref()).await
                })
                .await?;
                self.cursors.declare(name, hold, result)?;
                Ok(command_outcome("DECLARE CURSOR"))
            }
            cursor::CursorCommand::Fetch { name, count } => {
                Ok(SessionOutcome::Fetched(self.cursors.fetch(&name, count)?))
            }
            cursor::CursorCommand::Close(name) => {
                self.cursors.close(name.as_deref())?;
                Ok(command_outcome("CLOSE CURSOR"))
            }
        }
    }
}

fn command_outcome(tag: &str) -> SessionOutcome {
    SessionOutcome::Engine(Outcome::Command {
        tag: tag.to_string(),
        rows: None,
        oid: false,
    })
}

/// Parses what a client sent, after swapping the catalog queries of known
/// clients that DataFusion cannot plan (see [`compat::swap_client_queries`]).
fn parse_client_sql(sql: &str) -> Result<Vec<Statement>, millrace_planner::PlanError> {
    match compat::swap_client_queries(sql) {
        Some(swapped) => statement::parse(&swapped),
        None => statement::parse(sql),
    }
}

/// Parses `sql` and checks each statement against [`limits`], on a
/// statement thread (a long text takes a while to parse, a deep one needs
/// the stack). The statements in order, up to and including the first one
/// refused, which is there as its error: like PostgreSQL, the ones before
/// it run and the rest are skipped. A syntax error anywhere refuses all.
/// (A refused statement is dropped on that thread too: dropping a tree
/// recurses as deep as the tree.)
async fn parse_checked(sql: &str) -> SqlResult<Vec<SqlResult<Arc<Statement>>>> {
    let sql = sql.to_owned();
    off_workers("parse", move || async move {
        let mut out = Vec::new();
        for stmt in parse_client_sql(&sql)? {
            match limits::check(&stmt) {
                Ok(()) => out.push(Ok(Arc::new(stmt))),
                Err(e) => {
                    out.push(Err(e));
                    break;
                }
            }
        }
        Ok(out)
    })
    .await
}

/// True for a read: what statement_timeout and cancelling may stop.
fn is_query(stmt: &Statement) -> bool {
    matches!(stmt, Statement::Sql(sql) if matches!(sql.as_ref(), sqlparser::ast::Statement::Query(_)))
}

/// Session metadata key counting the writes made inside `BEGIN … `.
const TX_WRITES: &str = "millrace.transaction_writes";

/// Every statement commits when it returns, even inside `BEGIN`. Counts
/// the writes made in a transaction block so that `ROLLBACK` can say, with
/// a WARNING, that it did not undo them (rather than silently pretend).
fn track_transaction<C: ClientInfo>(client: &mut C, stmt: &Statement) -> Option<ErrorInfo> {
    use pgwire::messages::response::TransactionStatus;
    use sqlparser::ast::Statement as Sql;
    let Statement::Sql(sql) = stmt else {
        return None;
    };
    match sql.as_ref() {
        Sql::Commit { .. } | Sql::Rollback { .. } => {
            let n: usize = client
                .metadata_mut()
                .remove(TX_WRITES)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            (n > 0 && matches!(sql.as_ref(), Sql::Rollback { .. })).then(|| {
                let mut w = ErrorInfo::new(
                    "WARNING".to_owned(),
                    "25000".to_owned(),
                    format!("ROLLBACK did not undo {n} statement(s) of this transaction block"),
                );
                w.detail = Some(
                    "Millrace commits every statement when it returns; multi-statement transactions are not supported yet."
                        .to_owned(),
                );
                w
            })
        }
        Sql::Insert(_) | Sql::CreateTable(_) | Sql::CreateView(_) | Sql::Drop { .. }
            if client.transaction_status() != TransactionStatus::Idle =>
        {
            let n: usize = client
                .metadata()
                .get(TX_WRITES)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            client
                .metadata_mut()
                .insert(TX_WRITES.to_owned(), (n + 1).to_string());
            None
        }
        _ => None,
    }
}

/// What a statement produced, including session-level commands.
pub(crate) enum SessionOutcome {
    Engine(Outcome),
    /// Rows out of a cursor (tagged `FETCH n`).
    Fetched(Outcome),
    TransactionStart(&'static str),
    TransactionEnd(&'static str),
}

/// Converts an error for the wire.
pub(crate) fn error_info(e: &SqlError) -> ErrorInfo {
    let mut info = ErrorInfo::new(
        "ERROR".to_owned(),
        crate::sqlstate::of(e.kind).to_owned(),
        e.message.clone(),
    );
    info.detail = e.detail.clone();
    info.hint = e.hint.clone();
    info
}

fn user_error(e: SqlError) -> PgWireError {
    PgWireError::UserError(Box::new(error_info(&e)))
}

/// A refused frontend message for the wire: an ERROR, so the session goes
/// on (after the next Sync, for an extended-protocol message).
fn protocol_error(e: protocol::ProtocolError) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_owned(),
        crate::sqlstate::of_protocol(&e).to_owned(),
        e.to_string(),
    )))
}

fn fields_for(schema: &SchemaRef, format: &Format) -> PgWireResult<Vec<FieldInfo>> {
    arrow_pg::datatypes::arrow_schema_to_pg_fields(schema, format, None)
}

fn into_response(out: SessionOutcome, format: &Format) -> PgWireResult<Response> {
    match out {
        SessionOutcome::TransactionStart(tag) => Ok(Response::TransactionStart(Tag::new(tag))),
        SessionOutcome::TransactionEnd(tag) => Ok(Response::TransactionEnd(Tag::new(tag))),
        SessionOutcome::Engine(Outcome::Command { tag, rows, oid }) => {
            let mut t = Tag::new(&tag);
            if oid {
                t = t.with_oid(0);
            }
            if let Some(n) = rows {
                t = t.with_rows(n);
            }
            Ok(Response::Execution(t))
        }
        SessionOutcome::Fetched(out) => {
            let mut response = into_response(SessionOutcome::Engine(out), format)?;
            if let Response::Query(q) = &mut response {
                q.set_command_tag("FETCH");
            }
            Ok(response)
        }
        SessionOutcome::Engine(Outcome::Rows { schema, batches }) => {
            let fields = Arc::new(fields_for(&schema, format)?);
            let rows: Vec<_> = batches
                .into_iter()
                .flat_map(|b| {
                    arrow_pg::encode_recordbatch(fields.clone(), text::render(b, &fields))
                })
                .collect();
            Ok(Response::Query(QueryResponse::new(
                fields,
                stream::iter(rows),
            )))
        }
    }
}

#[async_trait]
impl SimpleQueryHandler for Frontend {
    /// Refuses a query that is not valid UTF-8 (pgwire decoded it with
    /// U+FFFD in place of the bad bytes) before anything runs.
    async fn on_query<C>(
        &self,
        client: &mut C,
        query: pgwire::messages::simplequery::Query,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        protocol::check_utf8(query.invalid_utf8.as_ref()).map_err(protocol_error)?;
        self._on_query(client, query).await
    }

    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        login::check_session(client)?;
        let stmts = match parse_checked(query).await {
            Ok(s) => s,
            Err(e) => return Ok(vec![Response::Error(Box::new(error_info(&e)))]),
        };
        if stmts.is_empty() {
            // Only comments or blanks (pgx's "-- ping").
            return Ok(vec![Response::EmptyQuery]);
        }
        let mut responses = Vec::with_capacity(stmts.len());
        for stmt in &stmts {
            let stmt = match stmt {
                Ok(stmt) => stmt,
                Err(e) => {
                    responses.push(Response::Error(Box::new(error_info(e))));
                    break;
                }
            };
            match self.run(client, stmt, None).await {
                Ok(out) => {
                    if let Some(warning) = track_transaction(client, stmt) {
                        client
                            .send(PgWireBackendMessage::NoticeResponse(warning.into()))
                            .await?;
                    }
                    responses.push(into_response(out, &Format::UnifiedText)?)
                }
                Err(e) => {
                    // Like PostgreSQL: the rest of a multi-statement query is skipped.
                    responses.push(Response::Error(Box::new(error_info(&e))));
                    break;
                }
            }
        }
        Ok(responses)
    }
}

/// A statement prepared with the extended protocol.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// (An Arc: each execution hands it to a statement thread.)
    stmt: Arc<Statement>,
    /// Arrow types inferred for `$1…$n` (None where nothing constrains one).
    param_types: Vec<Option<DataType>>,
    /// Result columns, empty for commands.
    result: Option<SchemaRef>,
}

/// Parses and plans statements for the extended protocol.
pub struct Parser {
    engine: Arc<Engine>,
    /// The connection's cursors (a `FETCH` returns a cursor's columns).
    cursors: Arc<cursor::Cursors>,
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        login::check_session(client)?;
        let mut stmts = parse_checked(sql).await.map_err(user_error)?;
        if stmts.len() > 1 {
            return Err(user_error(SqlError::new(
                ErrorKind::SyntaxError,
                "cannot insert multiple commands into a prepared statement",
            )));
        }
        let Some(stmt) = stmts.pop() else {
            return Ok(None);
        };
        let stmt = stmt.map_err(user_error)?;
        // Described with this session's settings; executed with the
        // settings current at execution.
        let described = match session::inline_settings(client, &stmt).map_err(user_error)? {
            std::borrow::Cow::Borrowed(_) => stmt.clone(),
            std::borrow::Cow::Owned(inlined) => Arc::new(inlined),
        };
        let (param_types, result) = self.describe(described).await.map_err(user_error)?;
        Ok(Some(Prepared {
            stmt,
            param_types,
            result,
        }))
    }

    fn get_parameter_types(&self, stmt: &Prepared) -> PgWireResult<Vec<Type>> {
        stmt.param_types
            .iter()
            .map(|t| match t {
                Some(t) => arrow_pg::datatypes::into_pg_type(t),
                None => Ok(Type::TEXT),
            })
            .collect()
    }

    fn get_result_schema(
        &self,
        stmt: &Prepared,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        match &stmt.result {
            Some(schema) => fields_for(schema, column_format.unwrap_or(&Format::UnifiedText)),
            None => Ok(vec![]),
        }
    }
}

impl Parser {
    /// Parameter types and result schema of `stmt`, without running it
    /// (planned on a statement thread, see [`off_workers`]).
    async fn describe(
        &self,
        stmt: Arc<Statement>,
    ) -> SqlResult<(Vec<Option<DataType>>, Option<SchemaRef>)> {
        use sqlparser::ast::Statement as Sql;
        match stmt.as_ref() {
            Statement::ShowRelations(_) => Ok((vec![], Some(session::name_column_schema("Name")))),
            Statement::Flush { .. }
            | Statement::CreateSource(_)
            | Statement::DropSource(_)
            | Statement::CreateTable { .. }
            | Statement::CreateViewOnWindowClose(_) => Ok((vec![], None)),
            Statement::ExplainViewOnWindowClose(_) => {
                Ok((vec![], Some(session::name_column_schema("QUERY PLAN"))))
            }
            Statement::Sql(sql) => match sql.as_ref() {
                Sql::Query(_) | Sql::Insert(_) => {
                    let engine = self.engine.clone();
                    off_workers("description", move || async move {
                        describe_planned(&engine, &stmt).await
                    })
                    .await
                }
                Sql::Explain { statement, .. } if matches!(statement.as_ref(), Sql::CreateView(cv) if cv.materialized) => {
                    Ok((vec![], Some(session::name_column_schema("QUERY PLAN"))))
                }
                Sql::Explain { .. } => {
                    let engine = self.engine.clone();
                    off_workers("description", move || async move {
                        let Statement::Sql(sql) = stmt.as_ref() else {
                            return Err(SqlError::internal("EXPLAIN is no longer SQL"));
                        };
                        let plan = engine.plan_sql(sql, None).await?;
                        Ok((vec![], Some(Arc::new(plan.schema().as_arrow().clone()))))
                    })
                    .await
                }
                Sql::ShowVariable { variable } => Ok((
                    vec![],
                    Some(session::name_column_schema(&session::show_column(variable))),
                )),
                Sql::Fetch { name, .. } => Ok((vec![], Some(self.cursors.schema(&name.value)?))),
                _ => Ok((vec![], None)),
            },
        }
    }
}

/// Parameter types and result schema of a query or `INSERT`, from its plan.
async fn describe_planned(
    engine: &Engine,
    stmt: &Statement,
) -> SqlResult<(Vec<Option<DataType>>, Option<SchemaRef>)> {
    use sqlparser::ast::Statement as Sql;
    let Statement::Sql(sql) = stmt else {
        return Err(SqlError::internal("described a statement that is not SQL"));
    };
    let plan = engine
        .plan_sql(&millrace_engine::aliased(sql), None)
        .await?;
    let mut types = plan.get_parameter_types()?;
    infer_from_casts(&plan, &mut types);
    let mut ordered: Vec<(usize, Option<DataType>)> = types
        .into_iter()
        .filter_map(|(k, v)| {
            k.trim_start_matches('$')
                .parse::<usize>()
                .ok()
                .map(|i| (i, v))
        })
        .collect();
    ordered.sort_by_key(|(i, _)| *i);
    let n = ordered.last().map(|(i, _)| *i).unwrap_or(0);
    if n > MAX_PARAMETERS {
        return Err(SqlError::new(
            ErrorKind::ProtocolViolation,
            format!("statement uses ${n}: at most {MAX_PARAMETERS} parameters are allowed"),
        ));
    }
    if ordered.iter().any(|(i, _)| *i == 0) {
        return Err(SqlError::new(
            ErrorKind::UndefinedParameter,
            "there is no parameter $0",
        ));
    }
    let mut params = vec![None; n];
    for (i, t) in ordered {
        params[i - 1] = t;
    }
    let result = match sql.as_ref() {
        Sql::Query(_) => Some(millrace_engine::result_schema(sql, &plan)),
        _ => None,
    };
    Ok((params, result))
}

/// `$1::bigint` tells the parameter's type as PostgreSQL infers it;
/// DataFusion leaves such placeholders untyped.
fn infer_from_casts(
    plan: &datafusion::logical_expr::LogicalPlan,
    types: &mut std::collections::HashMap<String, Option<DataType>>,
) {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::Expr;
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|e| {
                if let Expr::Cast(c) = e {
                    if let Expr::Placeholder(p) = c.expr.as_ref() {
                        if let Some(slot @ None) = types.get_mut(&p.id) {
                            *slot = Some(c.field.data_type().clone());
                        }
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
}

#[async_trait]
impl ExtendedQueryHandler for Frontend {
    type Statement = Prepared;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        self.parser.clone()
    }

    /// Refuses a statement name or text that is not valid UTF-8.
    async fn on_parse<C>(
        &self,
        client: &mut C,
        message: pgwire::messages::extendedquery::Parse,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        protocol::check_utf8(message.invalid_utf8.as_ref()).map_err(protocol_error)?;
        self._on_parse(client, message).await
    }

    /// Refuses a Bind whose parameter or format counts do not match its
    /// statement, or whose format codes are neither text nor binary, as
    /// PostgreSQL does; pgwire would bind it anyway. (pgwire itself refuses
    /// a Bind of an unknown statement, and parameters for an empty one.)
    async fn on_bind<C>(
        &self,
        client: &mut C,
        message: pgwire::messages::extendedquery::Bind,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message
            .statement_name
            .as_deref()
            .unwrap_or(pgwire::api::DEFAULT_NAME);
        if let Some(pgwire::api::store::Entry::Value(statement)) =
            client.portal_store().get_statement(name)
        {
            protocol::check_bind(&message, &statement).map_err(protocol_error)?;
        }
        self._on_bind(client, message).await
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Prepared>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        login::check_session(client)?;
        let prepared = &portal.statement.statement;
        let params = params::decode(portal, &prepared.param_types).map_err(user_error)?;
        let params = (!prepared.param_types.is_empty()).then_some(params);
        match self.run(client, &prepared.stmt, params.as_ref()).await {
            Ok(out) => {
                if let Some(warning) = track_transaction(client, &prepared.stmt) {
                    client
                        .send(PgWireBackendMessage::NoticeResponse(warning.into()))
                        .await?;
                }
                into_response(out, &portal.result_column_format)
            }
            Err(e) => Err(user_error(e)),
        }
    }
}

/// The running connections by process id and cancel key: a CancelRequest
/// (sent on a new connection) finds its target here.
static CONNECTIONS: std::sync::LazyLock<Arc<pgwire::api::ConnectionManager>> =
    std::sync::LazyLock::new(Default::default);

/// Registers the connection with [`CONNECTIONS`] for the rest of its life:
/// pgwire then runs each statement against the connection's cancel signal
/// and answers a CancelRequest for it with 57014.
fn register_for_cancel<C: ClientInfo>(client: &C) {
    let (pid, key) = client.pid_and_secret_key();
    let (handle, guard) = CONNECTIONS.register(pid, key);
    client
        .session_extensions()
        .insert::<Arc<pgwire::api::ConnectionHandle>>(handle);
    client.session_extensions().insert(guard);
}

/// Backend process ids and cancel keys, unique across connections.
static PIDS: std::sync::LazyLock<Arc<pgwire::api::RandomPidSecretKeyGenerator>> =
    std::sync::LazyLock::new(Default::default);

/// The parameters reported at connection start: PostgreSQL 15's, as
/// `SHOW` and `version()` report them (drivers parse `server_version`).
fn server_parameters() -> pgwire::api::auth::DefaultServerParameterProvider {
    let mut p = pgwire::api::auth::DefaultServerParameterProvider::default();
    p.server_version = "15.0".to_owned();
    p.date_style = "ISO, MDY".to_owned();
    p.time_zone = "UTC".to_owned();
    p.search_path = "\"$user\", public".to_owned();
    p
}

#[async_trait]
impl pgwire::api::auth::StartupHandler for Frontend {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: pgwire::messages::PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        use pgwire::api::PidSecretKeyGenerator;
        if let pgwire::messages::PgWireFrontendMessage::Startup(ref startup) = message {
            pgwire::api::auth::protocol_negotiation(client, startup).await?;
            pgwire::api::auth::save_startup_parameters_to_metadata(client, startup);
            let (pid, key) = PIDS.generate(client);
            client.set_pid_and_secret_key(pid, key);
            register_for_cancel(client);
            pgwire::api::auth::finish_authentication(client, &server_parameters()).await?;
        }
        Ok(())
    }
}

/// How a connection logs in.
pub enum Startup {
    /// No password: whoever connects is in.
    Trust(Arc<Frontend>),
    /// SCRAM-SHA-256 against the stored users; a wrong password or an
    /// unknown user is refused alike with 28P01 (see [`login`]).
    Password(Box<login::PasswordLogin>),
}

impl Startup {
    /// Password authentication against `users` (one handler per
    /// connection: it holds the exchange's state).
    pub fn password(users: Arc<millrace_engine::users::Users>) -> Self {
        use pgwire::api::auth::sasl::{scram::ScramAuth, SASLAuthStartupHandler};
        let handler = SASLAuthStartupHandler::new(Arc::new(server_parameters()))
            .with_scram(ScramAuth::new(users.clone()))
            .with_pid_secret_key_generator(PIDS.clone())
            .with_connection_manager(CONNECTIONS.clone());
        Startup::Password(Box::new(login::PasswordLogin::new(handler, users)))
    }
}

#[async_trait]
impl pgwire::api::auth::StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: pgwire::messages::PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match self {
            Startup::Trust(frontend) => frontend.on_startup(client, message).await,
            Startup::Password(handler) => handler.on_startup(client, message).await,
        }
    }
}

/// Connects pgwire's handler slots to one connection's front end.
pub struct Handlers {
    /// Queries.
    pub frontend: Arc<Frontend>,
    /// Login.
    pub startup: Arc<Startup>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.frontend.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.frontend.clone()
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        self.startup.clone()
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        Arc::new(pgwire::api::cancel::DefaultCancelHandler::new(
            CONNECTIONS.clone(),
        ))
    }
}
