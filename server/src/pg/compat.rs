//! PostgreSQL as the engine's front end: what a PostgreSQL client sees
//! beyond the engine's SQL. pg_catalog and the helper functions psql,
//! drivers and BI tools call on connect (datafusion-pg-catalog), our own
//! functions on top ([`super::functions`]), `information_schema` with
//! PostgreSQL's type names ([`super::information_schema`]), and rewrites of
//! the catalog queries clients send that DataFusion cannot plan.

use std::sync::{Arc, OnceLock, Weak};

use datafusion::catalog::{CatalogProvider, CatalogProviderList};
use datafusion::prelude::SessionContext;
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use millrace_engine::catalog::Catalog;
use millrace_engine::error::{SqlError, SqlResult};
use millrace_engine::FrontEnd;
use sqlparser::ast::Statement as Sql;

use super::functions;
use super::information_schema::CatalogWithInformationSchema;

/// The engine's front end for PostgreSQL clients.
#[derive(Debug, Default)]
pub struct Postgres;

impl FrontEnd for Postgres {
    fn wrap_catalog(
        &self,
        catalog: Arc<dyn CatalogProvider>,
        all: Weak<dyn CatalogProviderList>,
    ) -> Arc<dyn CatalogProvider> {
        Arc::new(CatalogWithInformationSchema::new(catalog, all))
    }

    fn register(&self, ctx: &SessionContext, relations: Arc<Catalog>) -> SqlResult<()> {
        let relation_oids = datafusion_pg_catalog::setup_pg_catalog(
            ctx,
            "millrace",
            datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider,
        )
        .map_err(|e| SqlError::internal(format!("setting up pg_catalog: {e}")))?;
        functions::register(ctx, relations, relation_oids);
        Ok(())
    }

    fn rewrite(&self, sql: Sql) -> SqlResult<Sql> {
        let mut sql = compat().rewrite(sql);
        functions::rewrite_like_escapes(&mut sql)?;
        Ok(sql)
    }
}

/// Rewrites the PostgreSQL-isms of client catalog queries (unqualified
/// `pg_class`, `::regclass`, `ANY(array)` …) into what DataFusion plans.
fn compat() -> &'static PostgresCompatibilityParser {
    static COMPAT: OnceLock<PostgresCompatibilityParser> = OnceLock::new();
    COMPAT.get_or_init(PostgresCompatibilityParser::new)
}

/// Fragments of client catalog queries DataFusion cannot plan, with what
/// they amount to in Millrace, for the queries datafusion-pg-catalog does not
/// cover. psql sends these texts verbatim.
const CLIENT_FRAGMENTS: &[(&str, &str)] = &[
    // psql 15/16 `\d+`: table storage options (and its TOAST table's) by
    // `array(SELECT …)`. Millrace relations have none.
    (
        "pg_catalog.array_to_string(c.reloptions || array(select 'toast.' || x from pg_catalog.unnest(tc.reloptions) x), ', ')",
        "''",
    ),
    // pgJDBC `getTypeInfo()`: a correlated scalar subquery DataFusion
    // cannot decorrelate; in a WHERE clause it is this EXISTS.
    (
        "(SELECT c.relkind = 'c' FROM pg_catalog.pg_class c WHERE c.oid = t.typrelid)",
        "EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = t.typrelid AND c.relkind = 'c')",
    ),
    // pgJDBC's type cache: pg_type.typinput holds the input function's
    // name here, not its oid.
    ("typinput='pg_catalog.array_in'::regproc", "typinput='array_in'"),
];

/// Some catalog queries of psql, pgcli, DBeaver and Grafana need SQL
/// DataFusion cannot plan (`array(SELECT …)`, unnest of a subquery):
/// datafusion-pg-catalog knows equivalents for them. Returns the text
/// with such queries swapped, or `None` when `sql` holds none. Only
/// text that mentions a `pg_` name is scanned (the scan is per token).
pub fn swap_client_queries(sql: &str) -> Option<String> {
    // Checked in place: this runs for every statement a client sends,
    // and a long INSERT must not be copied for it.
    if !sql
        .as_bytes()
        .windows(3)
        .any(|w| w.eq_ignore_ascii_case(b"pg_"))
    {
        return None;
    }
    let mut own = None;
    for (fragment, replacement) in CLIENT_FRAGMENTS {
        if sql.contains(fragment) {
            own = Some(own.as_deref().unwrap_or(sql).replace(fragment, replacement));
        }
    }
    let sql = own.as_deref().unwrap_or(sql);
    let swapped = match compat().maybe_replace_tokens(sql) {
        Ok(t) => t,
        Err(_) => return own,
    };
    let dialect = sqlparser::dialect::PostgreSqlDialect {};
    let original: Vec<sqlparser::tokenizer::Token> =
        sqlparser::tokenizer::Tokenizer::new(&dialect, sql)
            .tokenize()
            .ok()?
            .into_iter()
            .filter(|t| !matches!(t, sqlparser::tokenizer::Token::Whitespace(_)))
            .collect();
    if swapped == original {
        return own;
    }
    Some(
        swapped
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(" "),
    )
}
