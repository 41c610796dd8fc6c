//! The key layout of the single sled tree: a one-byte space tag, then the
//! relation id (big-endian, so a relation's records are contiguous), then
//! what identifies the record within the relation.

use crate::{RelationId, Result, StorageError};

/// The key spaces. The tag values are part of the on-disk format.
#[derive(Clone, Copy)]
#[repr(u8)]
pub(crate) enum Space {
    Meta = 0,
    Catalog = 1,
    TableRows = 2,
    // 3 and 4 held operator state and view rows before checkpoints; 6 the
    // latest event-time progress. Not reused.
    SourceOffsets = 5,
    Users = 7,
    /// Event-time progress per write-ahead log record.
    Progress = 8,
    /// Where each partition of a source that keeps no rows starts: the
    /// first offset a view backfilling from the topic reads.
    SourceStart = 9,
    /// The offsets each epoch of a source that keeps no rows consumed, per
    /// write-ahead log record: what recovery reads again from the topic.
    SourceSpans = 10,
    /// The rows (partition, offset) a source that keeps no rows turned away
    /// as late: left out again when its rows are read from the topic.
    LateRows = 11,
}

pub(crate) fn meta(name: &str) -> Vec<u8> {
    let mut k = vec![Space::Meta as u8];
    k.extend_from_slice(name.as_bytes());
    k
}

pub(crate) fn user(name: &str) -> Vec<u8> {
    let mut k = vec![Space::Users as u8];
    k.extend_from_slice(name.as_bytes());
    k
}

pub(crate) fn catalog(name: &str) -> Vec<u8> {
    let mut k = vec![Space::Catalog as u8];
    k.extend_from_slice(name.as_bytes());
    k
}

pub(crate) fn prefix(space: Space, id: RelationId) -> Vec<u8> {
    let mut k = Vec::with_capacity(32);
    k.push(space as u8);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

pub(crate) fn table_rows(id: RelationId, seq: u64) -> Vec<u8> {
    let mut k = prefix(Space::TableRows, id);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

pub(crate) fn progress(id: RelationId, seq: u64) -> Vec<u8> {
    let mut k = prefix(Space::Progress, id);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

pub(crate) fn source_start(id: RelationId, partition: i32) -> Vec<u8> {
    let mut k = prefix(Space::SourceStart, id);
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

pub(crate) fn source_span(id: RelationId, seq: u64) -> Vec<u8> {
    let mut k = prefix(Space::SourceSpans, id);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

pub(crate) fn late_row(id: RelationId, partition: i32, offset: i64) -> Vec<u8> {
    let mut k = prefix(Space::LateRows, id);
    k.extend_from_slice(&partition.to_be_bytes());
    k.extend_from_slice(&offset.to_be_bytes());
    k
}

pub(crate) fn source_offset(id: RelationId, partition: i32) -> Vec<u8> {
    let mut k = prefix(Space::SourceOffsets, id);
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

pub(crate) fn decode_i32(b: &[u8]) -> Result<i32> {
    b.try_into()
        .map(i32::from_be_bytes)
        .map_err(|_| StorageError::Corrupt("expected a 4-byte integer".into()))
}

pub(crate) fn decode_u64(b: &[u8]) -> Result<u64> {
    b.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| StorageError::Corrupt("expected an 8-byte integer".into()))
}

pub(crate) fn decode_i64(b: &[u8]) -> Result<i64> {
    b.try_into()
        .map(i64::from_be_bytes)
        .map_err(|_| StorageError::Corrupt("expected an 8-byte integer".into()))
}
