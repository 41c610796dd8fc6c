//! Where bytes come from: the Kafka connector and the message formats.
//!
//! A source reads every partition of its topic on one ingest thread
//! ([`kafka`]), decodes messages into Arrow rows ([`decode`]: JSON, CSV,
//! bytes) and pushes each batch, with the partitions' next offsets, through
//! the narrow [`sink::BatchSink`] trait. The receiver's committed offsets
//! are where a restart resumes, which is what makes views exactly-once.
//! What each partition is doing is kept in [`status::SourceStatus`].
//! What goes wrong is typed ([`error`]): a [`ConnectorError`] for what stops
//! a consuming session or refuses a statement, a [`DecodeError`] for a
//! message that is skipped.
//!
//! This crate never sees the engine: the engine implements
//! [`sink::BatchSink`], validates `CREATE SOURCE` options into a
//! [`config::SourceConfig`] and shows the status in its system tables.

pub mod config;
pub mod decode;
pub mod error;
pub mod kafka;
pub mod sink;
pub mod status;

pub use error::{ConnectorError, DecodeError};
