//! When and how things run: the `millrace` server.
//!
//! The server owns the PostgreSQL wire front end ([`pg`]), the engine that
//! executes statements and keeps materialized views up to date
//! ([`engine`]), the catalog of relations ([`catalog`]), the DataFusion
//! providers that read stored relations ([`providers`]) and the mapping of
//! every error to a SQLSTATE ([`error`]). What to compute comes from
//! `millrace-planner`, how changes flow through a view from
//! `millrace-dataflow`, what sources read from `millrace-connectors` (the
//! engine is their batch sink), and where it lives from `millrace-storage`.

pub mod catalog;
pub mod config;
pub mod engine;
pub mod error;
pub mod pg;
pub mod providers;
pub mod server;
pub mod users;
