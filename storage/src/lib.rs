//! Everything Millrace keeps on disk: the catalog, table rows, the operator
//! state of running views and the contents of materialized views.
//!
//! Storage knows nothing of SQL. It stores opaque catalog records, Arrow
//! record batches (as IPC streams) for table rows, and byte-keyed records for
//! operator state and view rows. Every change made by one statement goes into
//! one [`Commit`], applied atomically and flushed to disk before
//! [`Store::commit`] returns: that is what makes an `INSERT` durable and a
//! view's state consistent with the rows it was computed from, even after a
//! `kill -9`.
//!
//! All records live in a single sled tree, partitioned by a one-byte key
//! space tag, because sled applies a batch atomically only within one tree.

mod error;
mod keys;

use std::path::Path;

use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;

pub use error::{Result, StorageError};
use keys::Space;

/// A relation's identifier, stable for its lifetime and never reused.
pub type RelationId = u64;

/// The durable store of one Millrace data directory.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    tree: sled::Tree,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl Store {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::Io {
            context: format!("creating data directory {}", dir.display()),
            source: e,
        })?;
        let db = sled::Config::new()
            .path(dir.join("sled"))
            .mode(sled::Mode::LowSpace)
            .open()
            .map_err(|e| StorageError::from_sled(e, "opening the data directory"))?;
        let tree = db
            .open_tree("millrace")
            .map_err(|e| StorageError::from_sled(e, "opening the main tree"))?;
        Ok(Self { db, tree })
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

    /// Every batch ever appended to table `id`, in insertion order.
    pub fn table_batches(&self, id: RelationId) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(keys::prefix(Space::TableRows, id)) {
            let (_, v) = item.map_err(|e| StorageError::from_sled(e, "reading table rows"))?;
            out.extend(decode_batches(&v)?);
        }
        Ok(out)
    }

    /// The sequence number the next batch appended to table `id` must use.
    pub fn next_table_seq(&self, id: RelationId) -> Result<u64> {
        let last = self
            .tree
            .scan_prefix(keys::prefix(Space::TableRows, id))
            .next_back()
            .transpose()
            .map_err(|e| StorageError::from_sled(e, "reading table rows"))?;
        match last {
            Some((k, _)) => Ok(keys::decode_u64(&k[9..17])? + 1),
            None => Ok(0),
        }
    }

    /// All operator state records of view `id`: `(operator, key, value)`.
    pub fn operator_states(&self, id: RelationId) -> Result<Vec<(u32, Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(keys::prefix(Space::OperatorState, id)) {
            let (k, v) = item.map_err(|e| StorageError::from_sled(e, "reading operator state"))?;
            let op = keys::decode_u32(&k[9..13])?;
            out.push((op, k[13..].to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// The rows of view `id` with their multiplicities, in key order.
    pub fn view_rows(&self, id: RelationId) -> Result<Vec<(Vec<u8>, i64)>> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(keys::prefix(Space::ViewRows, id)) {
            let (k, v) = item.map_err(|e| StorageError::from_sled(e, "reading view rows"))?;
            out.push((k[9..].to_vec(), keys::decode_i64(&v)?));
        }
        Ok(out)
    }

    /// The committed position of every partition of source `id`: the offset
    /// of the next message to consume, by partition.
    pub fn source_offsets(&self, id: RelationId) -> Result<Vec<(i32, i64)>> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(keys::prefix(Space::SourceOffsets, id)) {
            let (k, v) = item.map_err(|e| StorageError::from_sled(e, "reading source offsets"))?;
            out.push((keys::decode_i32(&k[9..13])?, keys::decode_i64(&v)?));
        }
        Ok(out)
    }

    /// The event-time progress record of relation `id` (its watermark and
    /// what it derives from), as last committed.
    pub fn event_time(&self, id: RelationId) -> Result<Option<Vec<u8>>> {
        Ok(self
            .get(&keys::prefix(Space::EventTime, id))?
            .map(|v| v.to_vec()))
    }

    /// The multiplicity of one row of view `id` (0 when absent).
    pub fn view_row_count(&self, id: RelationId, row: &[u8]) -> Result<i64> {
        match self.get(&keys::view_row(id, row))? {
            Some(v) => keys::decode_i64(&v),
            None => Ok(0),
        }
    }

    /// Applies `commit` atomically and waits until it is on disk.
    pub fn commit(&self, commit: Commit) -> Result<()> {
        if commit.is_empty() {
            return Ok(());
        }
        self.tree
            .apply_batch(commit.batch)
            .map_err(|e| StorageError::from_sled(e, "applying a commit"))?;
        self.db
            .flush()
            .map_err(|e| StorageError::from_sled(e, "flushing a commit to disk"))?;
        Ok(())
    }

    /// Starts a commit that removes every record of relation `id` (its rows,
    /// operator state and view contents) and its catalog record `name`.
    pub fn drop_relation(&self, commit: &mut Commit, id: RelationId, name: &str) -> Result<()> {
        for space in [
            Space::TableRows,
            Space::OperatorState,
            Space::ViewRows,
            Space::SourceOffsets,
            Space::EventTime,
        ] {
            for item in self.tree.scan_prefix(keys::prefix(space, id)) {
                let (k, _) = item.map_err(|e| StorageError::from_sled(e, "dropping a relation"))?;
                commit.batch.remove(k);
                commit.ops += 1;
            }
        }
        commit.delete_catalog(name);
        Ok(())
    }

    fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>> {
        self.tree
            .get(key)
            .map_err(|e| StorageError::from_sled(e, "reading a record"))
    }
}

/// A set of changes applied all together or not at all by [`Store::commit`].
#[derive(Default)]
pub struct Commit {
    batch: sled::Batch,
    ops: usize,
}

impl Commit {
    /// An empty commit.
    pub fn new() -> Self {
        Self::default()
    }

    /// True when nothing has been added.
    pub fn is_empty(&self) -> bool {
        self.ops == 0
    }

    /// Records that ids up to `id` are taken.
    pub fn reserve_relation_id(&mut self, id: RelationId) {
        self.put(keys::meta("next_relation_id"), (id + 1).to_be_bytes().to_vec());
    }

    /// Writes (or replaces) catalog record `name`.
    pub fn put_catalog(&mut self, name: &str, record: Vec<u8>) {
        self.put(keys::catalog(name), record);
    }

    /// Removes catalog record `name`.
    pub fn delete_catalog(&mut self, name: &str) {
        self.batch.remove(keys::catalog(name));
        self.ops += 1;
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
                writer.write(b).map_err(|e| StorageError::Encode(e.to_string()))?;
            }
            writer.finish().map_err(|e| StorageError::Encode(e.to_string()))?;
        }
        self.put(keys::table_rows(id, seq), buf);
        Ok(())
    }

    /// Writes the state of one group (`key`) of operator `op` of view `id`.
    pub fn put_operator_state(&mut self, id: RelationId, op: u32, key: &[u8], value: Vec<u8>) {
        self.put(keys::operator_state(id, op, key), value);
    }

    /// Removes the state of one group of operator `op` of view `id`.
    pub fn delete_operator_state(&mut self, id: RelationId, op: u32, key: &[u8]) {
        self.batch.remove(keys::operator_state(id, op, key));
        self.ops += 1;
    }

    /// Sets the multiplicity of `row` in view `id`; 0 removes it.
    pub fn set_view_row(&mut self, id: RelationId, row: &[u8], count: i64) {
        let key = keys::view_row(id, row);
        if count == 0 {
            self.batch.remove(key);
            self.ops += 1;
        } else {
            self.put(key, count.to_be_bytes().to_vec());
        }
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

    /// Records the event-time progress of relation `id` (an opaque record
    /// of the server's). Committed with the rows it let through, it makes
    /// window closing replay exactly after a crash.
    pub fn set_event_time(&mut self, id: RelationId, record: Vec<u8>) {
        self.put(keys::prefix(Space::EventTime, id), record);
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.batch.insert(key, value);
        self.ops += 1;
    }
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

    fn batch(values: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values.to_vec()))]).unwrap()
    }

    #[test]
    fn commits_survive_reopen() {
        let dir = std::env::temp_dir().join(format!("millrace-storage-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let store = Store::open(&dir).unwrap();
            let mut c = Commit::new();
            c.put_catalog("t", b"record".to_vec());
            c.append_table_rows(7, 0, &[batch(&[1, 2])]).unwrap();
            c.append_table_rows(7, 1, &[batch(&[3])]).unwrap();
            c.put_operator_state(8, 2, b"k", b"v".to_vec());
            c.set_view_row(8, b"row", 3);
            store.commit(c).unwrap();
        }
        let store = Store::open(&dir).unwrap();
        assert_eq!(store.catalog_records().unwrap(), vec![("t".into(), b"record".to_vec())]);
        let rows: usize = store.table_batches(7).unwrap().iter().map(|b| b.num_rows()).sum();
        assert_eq!(rows, 3);
        assert_eq!(store.next_table_seq(7).unwrap(), 2);
        assert_eq!(store.next_table_seq(9).unwrap(), 0);
        assert_eq!(store.operator_states(8).unwrap(), vec![(2, b"k".to_vec(), b"v".to_vec())]);
        assert_eq!(store.view_row_count(8, b"row").unwrap(), 3);

        let mut c = Commit::new();
        store.drop_relation(&mut c, 8, "t").unwrap();
        store.drop_relation(&mut c, 7, "t").unwrap();
        store.commit(c).unwrap();
        assert!(store.catalog_records().unwrap().is_empty());
        assert!(store.table_batches(7).unwrap().is_empty());
        assert!(store.view_rows(8).unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
