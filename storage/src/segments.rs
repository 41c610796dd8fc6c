//! Table rows live in one append-only file per relation, outside sled.
//!
//! sled keeps much of what it stores in memory whatever its cache setting,
//! so an endless stream of rows stored in sled grows the process without
//! bound. Rows therefore go to `rows/<relation id>` as length-delimited
//! Arrow IPC streams, and sled only records, per append, where in the file
//! it lies: `(offset, length)`, in the same atomic commit as everything the
//! rows caused. A commit writes and syncs the file first; bytes past the
//! last offset sled knows are a torn append and are cut off by the next one.
//! A group commit writes the appends of all its `INSERT`s to a file and
//! syncs it once.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::io;
use crate::{RelationId, Result};

/// Where one append lies in its relation's file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Extent {
    pub offset: u64,
    pub len: u64,
}

impl Extent {
    /// The 16-byte form sled stores.
    pub fn encode(self) -> Vec<u8> {
        let mut v = Vec::with_capacity(16);
        v.extend_from_slice(&self.offset.to_be_bytes());
        v.extend_from_slice(&self.len.to_be_bytes());
        v
    }

    /// Reads the form [`Extent::encode`] writes; `None` for anything else
    /// (rows stored inline by earlier versions).
    pub fn decode(v: &[u8]) -> Option<Self> {
        if v.len() != 16 {
            return None;
        }
        let offset = u64::from_be_bytes(v[..8].try_into().ok()?);
        let len = u64::from_be_bytes(v[8..].try_into().ok()?);
        Some(Self { offset, len })
    }

    /// Where the next append starts.
    pub fn end(self) -> u64 {
        self.offset + self.len
    }
}

/// The directory of row files.
#[derive(Clone, Debug)]
pub(crate) struct Segments {
    dir: PathBuf,
}

impl Segments {
    pub fn open(data_dir: &Path) -> Result<Self> {
        let dir = data_dir.join("rows");
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        Ok(Self { dir })
    }

    fn path(&self, id: RelationId) -> PathBuf {
        self.dir.join(id.to_string())
    }

    /// Writes `parts` one after the other from `at` (cutting off anything
    /// after it) and syncs the file once: a group commit's appends to one
    /// table cost one `sync_data`, however many `INSERT`s it holds.
    /// Returns where each part lies.
    pub fn append(&self, id: RelationId, at: u64, parts: &[Vec<u8>]) -> Result<Vec<Extent>> {
        let path = self.path(id);
        let context = || format!("appending rows to {}", path.display());
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(context()))?;
        f.set_len(at).map_err(io(context()))?;
        f.seek(SeekFrom::Start(at)).map_err(io(context()))?;
        let mut extents = Vec::with_capacity(parts.len());
        let mut offset = at;
        for bytes in parts {
            f.write_all(bytes).map_err(io(context()))?;
            extents.push(Extent {
                offset,
                len: bytes.len() as u64,
            });
            offset += bytes.len() as u64;
        }
        f.sync_data().map_err(io(context()))?;
        Ok(extents)
    }

    /// Opens relation `id`'s file for reading.
    pub fn reader(&self, id: RelationId) -> Result<File> {
        let path = self.path(id);
        File::open(&path).map_err(io(format!("opening {}", path.display())))
    }

    /// Reads one extent.
    pub fn read(&self, f: &mut File, e: Extent) -> Result<Vec<u8>> {
        let context = || format!("reading rows at offset {}", e.offset);
        f.seek(SeekFrom::Start(e.offset)).map_err(io(context()))?;
        let mut buf = vec![0; e.len as usize];
        f.read_exact(&mut buf).map_err(io(context()))?;
        Ok(buf)
    }

    /// Removes relation `id`'s file (after its drop committed).
    pub fn remove(&self, id: RelationId) {
        let _ = std::fs::remove_file(self.path(id));
    }
}
