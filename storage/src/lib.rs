//! Everything Millrace keeps on disk: the catalog, the write-ahead log of
//! table rows and source epochs, and the checkpoints of running views.
//!
//! Storage knows nothing of SQL. It stores opaque catalog records, Arrow
//! record batches (as IPC streams) for the rows of tables (and of sources
//! spelled `CREATE TABLE … WITH (connector = …)`), and opaque checkpoint
//! images ([`checkpoint`]).
//!
//! The write-ahead log: every change of a table or source (one `INSERT`,
//! one batch consumed from Kafka) is one [`Commit`], applied atomically and
//! flushed to disk before [`Store::commit`] returns; that is what makes an
//! `INSERT` durable. A `CREATE SOURCE` keeps no rows: its records hold only
//! the offsets each epoch consumed ([`Commit::log_source_span`]), its start
//! position ([`Commit::set_source_start`]) and the rows it turned away as
//! late ([`Commit::log_late_row`]); the rows themselves are read again from
//! the topic when needed. Each such record carries a sequence number, global
//! across relations, so that recovery can replay the records after the last
//! checkpoint in the order they first happened ([`Store::wal_since`]), with
//! the event-time progress each one reached ([`Commit::log_progress`]):
//! replay then closes windows exactly where the first run did.
//!
//! Group commit: the engine gathers the records of concurrent writers into
//! one [`Commit`] ([`Commit::absorb`]), so that they share one sync of each
//! touched row file and one sled flush. [`Store::sync_counts`] says how
//! many of each the store has done.
//!
//! All records live in a single sled tree, partitioned by a one-byte key
//! space tag, because sled applies a batch atomically only within one tree.
//! Row bytes are the exception: they go to an append-only file per relation
//! (see [`segments`]), which keeps memory flat as tables grow, and the tree
//! records where each append lies, in the same commit. Views' operator
//! state and contents never go to sled: they live in memory and reach the
//! disk only in checkpoints.

pub mod checkpoint;
mod error;
mod keys;
mod segments;

use std::path::Path;

use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;

pub use checkpoint::Checkpoints;
pub use error::{Result, StorageError};
use keys::Space;
use segments::{Extent, Segments};

/// A relation's identifier, stable for its lifetime and never reused.
pub type RelationId = u64;

/// The page cache of [`Store::open`]: sled's own default (1 GiB) lets a
/// growing table take a gigabyte of memory before anything is evicted.
pub const DEFAULT_CACHE_BYTES: u64 = 128 * 1024 * 1024;

/// One record of the write-ahead log, as [`Store::wal_since`] returns it.
#[derive(Debug)]
pub struct WalRecord {
    /// Its global sequence number.
    pub seq: u64,
    /// The table or source it changed.
    pub relation: RelationId,
    /// The rows it added (empty when it only moved event time).
    pub batches: Vec<RecordBatch>,
    /// The event-time progress the relation reached with it (an opaque
    /// record of the engine's), for relations that declare event time.
    pub progress: Option<Vec<u8>>,
    /// For a source that keeps no rows: the offsets the epoch consumed,
    /// `(partition, from, to)` with `to` exclusive, to be read again from
    /// the topic.
    pub span: Option<Vec<SpanPart>>,
}

/// One partition's part of a source epoch: `(partition, from, to)`, the
/// offsets `from..to` it consumed.
pub type SpanPart = (i32, i64, i64);

/// The durable store of one Millrace data directory.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    tree: sled::Tree,
    segments: Segments,
    counts: std::sync::Arc<Counters>,
}

/// How many durable commits and fsyncs a store has done since it opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncCounts {
    /// Commits made durable ([`Store::commit`] calls that wrote anything):
    /// each is one sled flush.
    pub commits: u64,
    /// fsyncs: a sled flush per commit plus one `sync_data` per row file a
    /// commit appended to.
    pub fsyncs: u64,
}

#[derive(Default)]
struct Counters {
    commits: std::sync::atomic::AtomicU64,
    fsyncs: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl Store {
    /// Opens (creating if needed) the store in `dir`, with the default
    /// page cache ([`DEFAULT_CACHE_BYTES`]).
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with_cache(dir, DEFAULT_CACHE_BYTES)
    }

    /// Opens (creating if needed) the store in `dir`; sled keeps at most
    /// about `cache_bytes` of pages in memory (the rest is read from disk).
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::Io {
            context: format!("creating data directory {}", dir.display()),
            source: e,
        })?;
        let db = sled::Config::new()
            .path(dir.join("sled"))
            .mode(sled::Mode::LowSpace)
            .cache_capacity(cache_bytes)
            .open()
            .map_err(|e| StorageError::from_sled(e, "opening the data directory"))?;
        let tree = db
            .open_tree("millrace")
            .map_err(|e| StorageError::from_sled(e, "opening the main tree"))?;
        let segments = Segments::open(dir)?;
        Ok(Self {
            db,
            tree,
            segments,
            counts: Default::default(),
        })
    }

    /// Returns a fresh relation id; the allocation becomes durable with the
    /// commit that first uses it (ids are only ever taken above the largest
    /// id in the catalog, see [`Store::next_relation_id`]).
    pub fn next_relation_id(&self) -> Result<RelationId> {
        let key = keys::meta("next_relation_id");
        let current = match self.get(&key)? {
            Some(v) => keys::decode_u64(&v)?,
            None => 1,
        };
        Ok(current)
    }

    /// All catalog records, in no particular order: `(name, record)`.
    pub fn catalog_records(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix([Space::Catalog as u8]) {
            let (k, v) = item.map_err(|e| StorageError::from_sled(e, "reading the catalog"))?;
            let name = String::from_utf8(k[1..].to_vec())
                .map_err(|_| StorageError::Corrupt("catalog key is not UTF-8".into()))?;
            out.push((name, v.to_vec()));
        }
        Ok(out)
    }

    /// The stored credentials of user `name` (see [`Commit::put_user`]).
    pub fn user(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .tree
            .get(keys::user(name))
            .map_err(|e| StorageError::from_sled(e, "reading a user"))?
            .map(|v| v.to_vec()))
    }

    /// The names of all users.
    pub fn user_names(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix([Space::Users as u8]) {
            let (k, _) = item.map_err(|e| StorageError::from_sled(e, "reading users"))?;
            out.push(
                String::from_utf8(k[1..].to_vec())
                    .map_err(|_| StorageError::Corrupt("user name is not UTF-8".into()))?,
            );
        }
        Ok(out)
    }

    /// Every batch ever appended to table `id`, in insertion order.
    pub fn table_batches(&self, id: RelationId) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        let mut file = None;
        for item in self.tree.scan_prefix(keys::prefix(Space::TableRows, id)) {
            let (_, v) = item.map_err(|e| StorageError::from_sled(e, "reading table rows"))?;
            match Extent::decode(&v) {
                Some(extent) => {
                    let f = match &mut file {
                        Some(f) => f,
                        None => file.insert(self.segments.reader(id)?),
                    };
                    out.extend(decode_batches(&self.segments.read(f, extent)?)?);
                }
                None => out.extend(decode_batches(&v)?),
            }
        }
        Ok(out)
    }

    /// Where the next append to table `id`'s row file starts: the end of
    /// the last committed one.
    fn rows_end(&self, id: RelationId) -> Result<u64> {
        let last = self
            .tree
            .scan_prefix(keys::prefix(Space::TableRows, id))
            .next_back()
            .transpose()
            .map_err(|e| StorageError::from_sled(e, "reading table rows"))?;
        Ok(last
            .and_then(|(_, v)| Extent::decode(&v))
            .map_or(0, Extent::end))
    }

    /// The committed position of every partition of source `id`: the offset
    /// of the next message to consume, by partition.
    pub fn source_offsets(&self, id: RelationId) -> Result<Vec<(i32, i64)>> {
        let mut out = Vec::new();
        for item in self
            .tree
            .scan_prefix(keys::prefix(Space::SourceOffsets, id))
        {
            let (k, v) = item.map_err(|e| StorageError::from_sled(e, "reading source offsets"))?;
            out.push((keys::decode_i32(&k[9..13])?, keys::decode_i64(&v)?));
        }
        Ok(out)
    }

    /// Where each partition of source `id` starts (a source that keeps no
    /// rows): the first offset a backfill reads.
    pub fn source_start(&self, id: RelationId) -> Result<std::collections::BTreeMap<i32, i64>> {
        let mut out = std::collections::BTreeMap::new();
        for item in self.tree.scan_prefix(keys::prefix(Space::SourceStart, id)) {
            let (k, v) = item.map_err(|e| StorageError::from_sled(e, "reading source starts"))?;
            out.insert(keys::decode_i32(&k[9..13])?, keys::decode_i64(&v)?);
        }
        Ok(out)
    }

    /// The rows `(partition, offset)` source `id` turned away as late.
    pub fn late_rows(&self, id: RelationId) -> Result<std::collections::HashSet<(i32, i64)>> {
        let mut out = std::collections::HashSet::new();
        for item in self.tree.scan_prefix(keys::prefix(Space::LateRows, id)) {
            let (k, _) = item.map_err(|e| StorageError::from_sled(e, "reading late rows"))?;
            out.insert((
                keys::decode_i32(k.get(9..13).unwrap_or_default())?,
                keys::decode_i64(k.get(13..21).unwrap_or_default())?,
            ));
        }
        Ok(out)
    }

    /// The largest sequence number any write-ahead log record has used
    /// (`None` for an empty log).
    pub fn last_seq(&self) -> Result<Option<u64>> {
        let mut last: Option<u64> = None;
        for space in [Space::TableRows, Space::Progress, Space::SourceSpans] {
            for item in self.tree.scan_prefix([space as u8]) {
                let (k, _) = item.map_err(|e| StorageError::from_sled(e, "reading the log"))?;
                let seq = keys::decode_u64(k.get(9..17).unwrap_or_default())?;
                last = Some(last.map_or(seq, |l| l.max(seq)));
            }
        }
        Ok(last)
    }

    /// Every write-ahead log record with a sequence number of `from` or
    /// more, in sequence order: what recovery replays after a checkpoint.
    pub fn wal_since(&self, from: u64) -> Result<Vec<WalRecord>> {
        let mut records: std::collections::BTreeMap<u64, WalRecord> = Default::default();
        let mut files: std::collections::HashMap<RelationId, std::fs::File> = Default::default();
        for item in self.tree.scan_prefix([Space::TableRows as u8]) {
            let (k, v) = item.map_err(|e| StorageError::from_sled(e, "reading the log"))?;
            let id = keys::decode_u64(k.get(1..9).unwrap_or_default())?;
            let seq = keys::decode_u64(k.get(9..17).unwrap_or_default())?;
            if seq < from {
                continue;
            }
            let batches = match Extent::decode(&v) {
                Some(extent) => {
                    let f = match files.get_mut(&id) {
                        Some(f) => f,
                        None => files.entry(id).or_insert(self.segments.reader(id)?),
                    };
                    decode_batches(&self.segments.read(f, extent)?)?
                }
                None => decode_batches(&v)?,
            };
            records.insert(
                seq,
                WalRecord {
                    seq,
                    relation: id,
                    batches,
                    progress: None,
                    span: None,
                },
            );
        }
        // Spans and progress attach to the record of their sequence number
        // (a source epoch that keeps no rows has nothing else).
        for space in [Space::SourceSpans, Space::Progress] {
            for item in self.tree.scan_prefix([space as u8]) {
                let (k, v) = item.map_err(|e| StorageError::from_sled(e, "reading the log"))?;
                let id = keys::decode_u64(k.get(1..9).unwrap_or_default())?;
                let seq = keys::decode_u64(k.get(9..17).unwrap_or_default())?;
                if seq < from {
                    continue;
                }
                let record = records.entry(seq).or_insert_with(|| WalRecord {
                    seq,
                    relation: id,
                    batches: Vec::new(),
                    progress: None,
                    span: None,
                });
                match space {
                    Space::SourceSpans => record.span = Some(decode_span(&v)?),
                    _ => record.progress = Some(v.to_vec()),
                }
            }
        }
        Ok(records.into_values().collect())
    }

    /// Forgets the event-time progress and the source spans logged before
    /// sequence number `below` (a checkpoint covers them). Row records
    /// stay: they are the tables' contents.
    pub fn prune_progress(&self, below: u64) -> Result<()> {
        let mut batch = sled::Batch::default();
        let mut any = false;
        for space in [Space::Progress, Space::SourceSpans] {
            for item in self.tree.scan_prefix([space as u8]) {
                let (k, _) = item.map_err(|e| StorageError::from_sled(e, "pruning the log"))?;
                let seq = keys::decode_u64(k.get(9..17).unwrap_or_default())?;
                if seq < below {
                    batch.remove(k);
                    any = true;
                }
            }
        }
        if any {
            self.tree
                .apply_batch(batch)
                .map_err(|e| StorageError::from_sled(e, "pruning the log"))?;
        }
        Ok(())
    }

    /// Applies `commit` atomically and waits until it is on disk.
    ///
    /// Rows are appended per table, all of a table's appends in one write
    /// and one `sync_data`, then sled records where they lie and is
    /// flushed once: a commit holding the records of many `INSERT`s (a
    /// group commit) costs as many fsyncs as one holding a single record.
    pub fn commit(&self, mut commit: Commit) -> Result<()> {
        use std::sync::atomic::Ordering::Relaxed;
        if commit.is_empty() {
            return Ok(());
        }
        // Rows first, synced; sled then records where they are. A crash in
        // between leaves bytes no record points to, cut off next time.
        let mut by_table: std::collections::BTreeMap<RelationId, (Vec<u64>, Vec<Vec<u8>>)> =
            Default::default();
        for (id, seq, bytes) in std::mem::take(&mut commit.rows) {
            let (seqs, parts) = by_table.entry(id).or_default();
            seqs.push(seq);
            parts.push(bytes);
        }
        for (id, (seqs, parts)) in by_table {
            let at = self.rows_end(id)?;
            let extents = self.segments.append(id, at, &parts)?;
            self.counts.fsyncs.fetch_add(1, Relaxed);
            for (seq, extent) in seqs.into_iter().zip(extents) {
                commit.put(keys::table_rows(id, seq), extent.encode());
            }
        }
        let mut batch = sled::Batch::default();
        for (key, value) in commit.writes {
            match value {
                Some(v) => batch.insert(key, v),
                None => batch.remove(key),
            }
        }
        self.tree
            .apply_batch(batch)
            .map_err(|e| StorageError::from_sled(e, "applying a commit"))?;
        self.db
            .flush()
            .map_err(|e| StorageError::from_sled(e, "flushing a commit to disk"))?;
        self.counts.commits.fetch_add(1, Relaxed);
        self.counts.fsyncs.fetch_add(1, Relaxed);
        for id in commit.dropped {
            self.segments.remove(id);
        }
        Ok(())
    }

    /// How many durable commits and fsyncs this store has done.
    pub fn sync_counts(&self) -> SyncCounts {
        use std::sync::atomic::Ordering::Relaxed;
        SyncCounts {
            commits: self.counts.commits.load(Relaxed),
            fsyncs: self.counts.fsyncs.load(Relaxed),
        }
    }

    /// Adds to `commit` the removal of what source `id` logged from log
    /// record `seq` on (spans, progress), and of its late rows at or after
    /// offset `from[p]` of each partition `p`: the source goes back to
    /// `from` and consumes that part again, deciding it anew.
    pub fn forget_source_since(
        &self,
        commit: &mut Commit,
        id: RelationId,
        seq: u64,
        from: &std::collections::BTreeMap<i32, i64>,
    ) -> Result<()> {
        for space in [Space::Progress, Space::SourceSpans] {
            for item in self.tree.scan_prefix(keys::prefix(space, id)) {
                let (k, _) = item.map_err(|e| StorageError::from_sled(e, "rewinding a source"))?;
                if keys::decode_u64(k.get(9..17).unwrap_or_default())? >= seq {
                    commit.remove(k.to_vec());
                }
            }
        }
        for item in self.tree.scan_prefix(keys::prefix(Space::LateRows, id)) {
            let (k, _) = item.map_err(|e| StorageError::from_sled(e, "rewinding a source"))?;
            let p = keys::decode_i32(k.get(9..13).unwrap_or_default())?;
            let o = keys::decode_i64(k.get(13..21).unwrap_or_default())?;
            if from.get(&p).is_some_and(|f| o >= *f) {
                commit.remove(k.to_vec());
            }
        }
        for (p, o) in from {
            commit.set_source_offset(id, *p, *o);
        }
        Ok(())
    }

    /// Starts a commit that removes every record of relation `id` (its rows,
    /// operator state and view contents) and its catalog record `name`.
    pub fn drop_relation(&self, commit: &mut Commit, id: RelationId, name: &str) -> Result<()> {
        for space in [
            Space::TableRows,
            Space::SourceOffsets,
            Space::Progress,
            Space::SourceStart,
            Space::SourceSpans,
            Space::LateRows,
        ] {
            for item in self.tree.scan_prefix(keys::prefix(space, id)) {
                let (k, _) = item.map_err(|e| StorageError::from_sled(e, "dropping a relation"))?;
                commit.remove(k.to_vec());
            }
        }
        commit.delete_catalog(name);
        commit.dropped.push(id);
        Ok(())
    }

    fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>> {
        self.tree
            .get(key)
            .map_err(|e| StorageError::from_sled(e, "reading a record"))
    }
}

/// A set of changes applied all together or not at all by [`Store::commit`].
///
/// The changes are kept as a list (applied in order, a later write of a
/// key winning) rather than as a `sled::Batch`, which cannot be merged:
/// a group commit absorbs the commits of many writers into one.
#[derive(Default)]
pub struct Commit {
    /// Key writes in order: `Some(value)` to set, `None` to remove.
    writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Row appends `(table, sequence, encoded batches)`, written to the
    /// row files at commit.
    rows: Vec<(RelationId, u64, Vec<u8>)>,
    /// Relations whose row files go once the commit is durable.
    dropped: Vec<RelationId>,
}

impl Commit {
    /// An empty commit.
    pub fn new() -> Self {
        Self::default()
    }

    /// True when nothing has been added.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.rows.is_empty() && self.dropped.is_empty()
    }

    /// Adds everything `other` holds after what this commit holds, as if
    /// its changes had been made here: both are then applied by one
    /// [`Store::commit`] (a group commit), `other`'s writes of a key
    /// winning over earlier ones.
    pub fn absorb(&mut self, other: Commit) {
        self.writes.extend(other.writes);
        self.rows.extend(other.rows);
        self.dropped.extend(other.dropped);
    }

    /// Records that ids up to `id` are taken.
    pub fn reserve_relation_id(&mut self, id: RelationId) {
        self.put(
            keys::meta("next_relation_id"),
            (id + 1).to_be_bytes().to_vec(),
        );
    }

    /// Writes (or replaces) catalog record `name`.
    pub fn put_catalog(&mut self, name: &str, record: Vec<u8>) {
        self.put(keys::catalog(name), record);
    }

    /// Writes (or replaces) the credentials of user `name`: an opaque
    /// record (the server stores a SCRAM verifier, never the password).
    pub fn put_user(&mut self, name: &str, record: Vec<u8>) {
        self.put(keys::user(name), record);
    }

    /// Removes user `name`.
    pub fn delete_user(&mut self, name: &str) {
        self.remove(keys::user(name));
    }

    /// Removes catalog record `name`.
    pub fn delete_catalog(&mut self, name: &str) {
        self.remove(keys::catalog(name));
    }

    /// Appends `batches` to table `id` as one record with sequence number `seq`.
    pub fn append_table_rows(
        &mut self,
        id: RelationId,
        seq: u64,
        batches: &[RecordBatch],
    ) -> Result<()> {
        let Some(first) = batches.first() else {
            return Ok(());
        };
        let mut buf = Vec::new();
        {
            let mut writer = StreamWriter::try_new(&mut buf, first.schema_ref())
                .map_err(|e| StorageError::Encode(e.to_string()))?;
            for b in batches {
                writer
                    .write(b)
                    .map_err(|e| StorageError::Encode(e.to_string()))?;
            }
            writer
                .finish()
                .map_err(|e| StorageError::Encode(e.to_string()))?;
        }
        self.rows.push((id, seq, buf));
        Ok(())
    }

    /// Records that source `id` has consumed `partition` up to (not
    /// including) `next_offset`. Committed with the rows and view changes
    /// those messages caused, this is what makes source views exactly-once.
    pub fn set_source_offset(&mut self, id: RelationId, partition: i32, next_offset: i64) {
        self.put(
            keys::source_offset(id, partition),
            next_offset.to_be_bytes().to_vec(),
        );
    }

    /// Records where `partition` of source `id` (one that keeps no rows)
    /// starts: the first offset a view backfilling from the topic reads.
    pub fn set_source_start(&mut self, id: RelationId, partition: i32, offset: i64) {
        self.put(
            keys::source_start(id, partition),
            offset.to_be_bytes().to_vec(),
        );
    }

    /// Logs the offsets epoch `seq` of source `id` (one that keeps no rows)
    /// consumed, `(partition, from, to)`: recovery reads them again from
    /// the topic instead of from a copy of the rows.
    pub fn log_source_span(&mut self, id: RelationId, seq: u64, span: &[SpanPart]) {
        let mut v = Vec::with_capacity(span.len() * 20);
        for (p, from, to) in span {
            v.extend_from_slice(&p.to_be_bytes());
            v.extend_from_slice(&from.to_be_bytes());
            v.extend_from_slice(&to.to_be_bytes());
        }
        self.put(keys::source_span(id, seq), v);
    }

    /// Records that source `id` turned away the row at `offset` of
    /// `partition` as late.
    pub fn log_late_row(&mut self, id: RelationId, partition: i32, offset: i64) {
        self.put(keys::late_row(id, partition, offset), Vec::new());
    }

    /// Logs the event-time progress (an opaque record of the engine's)
    /// relation `id` reached with write-ahead log record `seq`. Committed
    /// with the rows it let through, it makes window closing replay exactly
    /// after a crash.
    pub fn log_progress(&mut self, id: RelationId, seq: u64, record: Vec<u8>) {
        self.put(keys::progress(id, seq), record);
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.push((key, Some(value)));
    }

    fn remove(&mut self, key: Vec<u8>) {
        self.writes.push((key, None));
    }
}

fn decode_span(v: &[u8]) -> Result<Vec<SpanPart>> {
    if v.len() % 20 != 0 {
        return Err(StorageError::Corrupt("a source span record".into()));
    }
    v.chunks_exact(20)
        .map(|c| {
            Ok((
                keys::decode_i32(&c[0..4])?,
                keys::decode_i64(&c[4..12])?,
                keys::decode_i64(&c[12..20])?,
            ))
        })
        .collect()
}

fn decode_batches(bytes: &[u8]) -> Result<Vec<RecordBatch>> {
    let reader = StreamReader::try_new(bytes, None)
        .map_err(|e| StorageError::Corrupt(format!("table rows: {e}")))?;
    reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| StorageError::Corrupt(format!("table rows: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    /// A fresh directory for test `name`.
    fn scratch(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("millrace-storage-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn batch(values: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values.to_vec()))]).unwrap()
    }

    /// The first column of every stored batch of table `id`, in order.
    fn table_values(store: &Store, id: RelationId) -> Vec<i64> {
        store
            .table_batches(id)
            .unwrap()
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect()
    }

    #[test]
    fn commits_survive_reopen_and_replay_in_sequence_order() {
        let dir = scratch("reopen");
        {
            let store = Store::open(&dir).unwrap();
            let mut c = Commit::new();
            c.put_catalog("t", b"record".to_vec());
            c.append_table_rows(7, 0, &[batch(&[1, 2])]).unwrap();
            c.append_table_rows(8, 1, &[batch(&[5])]).unwrap();
            c.log_progress(8, 1, b"p1".to_vec());
            store.commit(c).unwrap();
            let mut c = Commit::new();
            c.log_progress(8, 2, b"p2".to_vec());
            c.append_table_rows(7, 3, &[batch(&[3])]).unwrap();
            store.commit(c).unwrap();
        }
        let store = Store::open(&dir).unwrap();
        assert_eq!(
            store.catalog_records().unwrap(),
            vec![("t".into(), b"record".to_vec())]
        );
        let rows: usize = store
            .table_batches(7)
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .sum();
        assert_eq!(rows, 3);
        assert_eq!(store.last_seq().unwrap(), Some(3));
        let log = store.wal_since(1).unwrap();
        let seen: Vec<(u64, RelationId, usize, Option<Vec<u8>>)> = log
            .iter()
            .map(|r| {
                let n = r.batches.iter().map(|b| b.num_rows()).sum();
                (r.seq, r.relation, n, r.progress.clone())
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                (1, 8, 1, Some(b"p1".to_vec())),
                (2, 8, 0, Some(b"p2".to_vec())),
                (3, 7, 1, None),
            ]
        );
        store.prune_progress(2).unwrap();
        assert_eq!(store.wal_since(0).unwrap().len(), 4);
        assert_eq!(store.wal_since(0).unwrap()[1].progress, None);

        let mut c = Commit::new();
        store.drop_relation(&mut c, 8, "t").unwrap();
        store.drop_relation(&mut c, 7, "t").unwrap();
        store.commit(c).unwrap();
        assert!(store.catalog_records().unwrap().is_empty());
        assert!(store.table_batches(7).unwrap().is_empty());
        assert!(store.wal_since(0).unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_torn_row_append_is_cut_off() {
        let dir = scratch("torn");
        {
            let store = Store::open(&dir).unwrap();
            let mut c = Commit::new();
            c.append_table_rows(3, 0, &[batch(&[1, 2])]).unwrap();
            store.commit(c).unwrap();
        }
        // A crash after the row file was written but before sled committed.
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join("rows").join("3"))
            .unwrap();
        f.write_all(b"garbage of an append that never committed")
            .unwrap();
        drop(f);
        let store = Store::open(&dir).unwrap();
        let mut c = Commit::new();
        c.append_table_rows(3, store.last_seq().unwrap().unwrap() + 1, &[batch(&[3])])
            .unwrap();
        store.commit(c).unwrap();
        assert_eq!(table_values(&store, 3), vec![1, 2, 3]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn absorbed_commits_share_one_sync_per_file_and_one_flush() {
        let dir = scratch("group");
        let store = Store::open(&dir).unwrap();
        let before = store.sync_counts();
        // Three writers' records, two of them appending to table 4, one to
        // table 5, and two setting the same offset: the later one wins.
        let mut group = Commit::new();
        for (seq, (table, values, offset)) in
            [(4, vec![1, 2], 10), (5, vec![7], 11), (4, vec![3], 12)]
                .into_iter()
                .enumerate()
        {
            let mut c = Commit::new();
            c.append_table_rows(table, seq as u64, &[batch(&values)])
                .unwrap();
            c.set_source_offset(9, 0, offset);
            group.absorb(c);
        }
        store.commit(group).unwrap();
        let after = store.sync_counts();
        assert_eq!(after.commits - before.commits, 1);
        // One sync_data per row file (tables 4 and 5) and one sled flush.
        assert_eq!(after.fsyncs - before.fsyncs, 3);
        drop(store);
        let store = Store::open(&dir).unwrap();
        let values = |id| table_values(&store, id);
        assert_eq!(values(4), vec![1, 2, 3]);
        assert_eq!(values(5), vec![7]);
        assert_eq!(store.source_offsets(9).unwrap(), vec![(0, 12)]);
        let seqs: Vec<u64> = store.wal_since(0).unwrap().iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![0, 1, 2]);
        // The next group appends after the last one's bytes.
        let mut c = Commit::new();
        c.append_table_rows(4, 3, &[batch(&[4])]).unwrap();
        store.commit(c).unwrap();
        assert_eq!(values(4), vec![1, 2, 3, 4]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_empty_commit_syncs_nothing() {
        let dir = scratch("empty");
        let store = Store::open(&dir).unwrap();
        let mut group = Commit::new();
        group.absorb(Commit::new());
        assert!(group.is_empty());
        store.commit(group).unwrap();
        assert_eq!(store.sync_counts(), SyncCounts::default());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_source_that_keeps_no_rows_logs_spans_starts_and_late_rows() {
        let dir = scratch("spans");
        // One store throughout: a reopen right after a drop can race sled's
        // flusher thread for the directory lock (reopening is pinned by
        // `commits_survive_reopen_and_replay_in_sequence_order`).
        let store = Store::open(&dir).unwrap();
        {
            let mut c = Commit::new();
            c.set_source_start(9, 0, 10);
            c.set_source_start(9, 1, 0);
            c.set_source_offset(9, 0, 10);
            c.set_source_offset(9, 1, 0);
            store.commit(c).unwrap();
            let mut c = Commit::new();
            c.log_source_span(9, 0, &[(0, 10, 15), (1, 0, 3)]);
            c.set_source_offset(9, 0, 15);
            c.set_source_offset(9, 1, 3);
            c.log_late_row(9, 0, 12);
            c.log_progress(9, 0, b"p0".to_vec());
            store.commit(c).unwrap();
            let mut c = Commit::new();
            c.log_source_span(9, 1, &[(0, 15, 20), (2, -1, 4)]);
            c.log_late_row(9, 0, 17);
            store.commit(c).unwrap();
        }
        assert_eq!(store.last_seq().unwrap(), Some(1));
        assert_eq!(
            store.source_start(9).unwrap(),
            BTreeMapOf::from([(0, 10), (1, 0)])
        );
        let late = store.late_rows(9).unwrap();
        assert!(late.contains(&(0, 12)) && late.contains(&(0, 17)) && late.len() == 2);
        let log = store.wal_since(0).unwrap();
        let spans: Vec<(u64, Option<Vec<SpanPart>>, bool)> = log
            .iter()
            .map(|r| (r.seq, r.span.clone(), r.progress.is_some()))
            .collect();
        assert_eq!(
            spans,
            vec![
                (0, Some(vec![(0, 10, 15), (1, 0, 3)]), true),
                (1, Some(vec![(0, 15, 20), (2, -1, 4)]), false),
            ]
        );
        // Going back to the second epoch: its log and its late row go.
        let mut c = Commit::new();
        store
            .forget_source_since(&mut c, 9, 1, &BTreeMapOf::from([(0, 15)]))
            .unwrap();
        store.commit(c).unwrap();
        assert_eq!(store.wal_since(0).unwrap().len(), 1);
        assert_eq!(
            store.late_rows(9).unwrap().into_iter().collect::<Vec<_>>(),
            vec![(0, 12)]
        );
        assert_eq!(store.source_offsets(9).unwrap(), vec![(0, 15), (1, 3)]);
        // A checkpoint covers the first epoch: its span is pruned.
        store.prune_progress(1).unwrap();
        assert!(store.wal_since(0).unwrap().is_empty());
        let mut c = Commit::new();
        store.drop_relation(&mut c, 9, "s").unwrap();
        store.commit(c).unwrap();
        assert!(store.source_start(9).unwrap().is_empty());
        assert!(store.late_rows(9).unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    type BTreeMapOf = std::collections::BTreeMap<i32, i64>;
}
