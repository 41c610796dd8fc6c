//! What a PostgreSQL client sees: the `millrace` server.
//!
//! The server owns the PostgreSQL wire front end ([`pg`]: sessions, auth,
//! text and binary encoding, error reporting) and everything
//! PostgreSQL-specific the engine plans with: pg_catalog, our pg functions,
//! `information_schema` and client-query rewrites ([`pg::compat`], the
//! engine's [`millrace_engine::FrontEnd`]). What runs is `millrace-engine`.

pub mod config;
pub mod pg;
pub mod server;
pub mod sqlstate;

use std::sync::Arc;

use millrace_engine::EngineOptions;

/// The engine's default settings with PostgreSQL as its front end: what
/// the `millrace` binary serves, for tools that run the engine in process.
pub fn engine_options() -> EngineOptions {
    EngineOptions {
        front_end: Arc::new(pg::compat::Postgres),
        ..EngineOptions::default()
    }
}
