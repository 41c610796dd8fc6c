//! Checkpoint files and the manifest that says which of them count.
//!
//! A checkpoint is an opaque image (the engine decides what it holds: the
//! operator state and view contents that changed since the previous one,
//! source positions, watermarks). Images form a *chain*: a full image
//! followed by incremental ones, each applied on top of the ones before.
//! Writing a full image starts a new chain and lets the old files go.
//!
//! Atomicity: an image goes to its own file, which is synced; then the
//! manifest listing the chain (with each file's length and CRC-32) is
//! written to a temporary file, synced, and renamed over the old manifest,
//! and the directory is synced. A crash at any point leaves either the old
//! manifest or the new one, and every file a manifest lists is complete: a
//! torn checkpoint is never loaded. Files no manifest lists are leftovers
//! of such a crash and are removed when the directory is opened.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::io;
use crate::{Result, StorageError};

const MANIFEST: &str = "MANIFEST";
const MANIFEST_TMP: &str = "MANIFEST.tmp";

/// One file of the chain, as the manifest records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    file: String,
    len: u64,
    crc: u32,
}

/// The durable list of the current chain, base first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Manifest {
    /// Number of the last checkpoint written (file names derive from it).
    last: u64,
    chain: Vec<Entry>,
}

/// The checkpoint directory of one data directory.
#[derive(Debug)]
pub struct Checkpoints {
    dir: PathBuf,
    manifest: Manifest,
}

/// Writes `bytes` to `path` (replacing it) and syncs the file.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let context = || format!("writing {}", path.display());
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
        .map_err(io(context()))?;
    f.write_all(bytes).map_err(io(context()))?;
    f.sync_all().map_err(io(context()))
}

impl Checkpoints {
    /// Opens (creating if needed) `data_dir/checkpoints`, reading its
    /// manifest and removing files it does not list.
    pub fn open(data_dir: &Path) -> Result<Self> {
        let dir = data_dir.join("checkpoints");
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let manifest = match std::fs::read(dir.join(MANIFEST)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                StorageError::Corrupt(format!("checkpoint manifest does not decode: {e}"))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Manifest::default(),
            Err(e) => return Err(io(format!("reading {}/{MANIFEST}", dir.display()))(e)),
        };
        let me = Self { dir, manifest };
        me.remove_unlisted();
        Ok(me)
    }

    /// Number of files in the current chain (0: no checkpoint yet).
    pub fn chain_len(&self) -> usize {
        self.manifest.chain.len()
    }

    /// Total bytes of the current chain's files.
    pub fn chain_bytes(&self) -> u64 {
        self.manifest.chain.iter().map(|e| e.len).sum()
    }

    /// Bytes of the chain's base (its first, full image).
    pub fn base_bytes(&self) -> u64 {
        self.manifest.chain.first().map_or(0, |e| e.len)
    }

    /// The images of the current chain, base first, each checked against
    /// the length and checksum the manifest recorded.
    pub fn load(&self) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::with_capacity(self.manifest.chain.len());
        for e in &self.manifest.chain {
            let path = self.dir.join(&e.file);
            let mut bytes = Vec::with_capacity(e.len as usize);
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(io(format!("reading checkpoint {}", path.display())))?;
            if bytes.len() as u64 != e.len || crc32fast::hash(&bytes) != e.crc {
                return Err(StorageError::Corrupt(format!(
                    "checkpoint file {} does not match its manifest entry",
                    e.file
                )));
            }
            out.push(bytes);
        }
        Ok(out)
    }

    /// Durably adds `image` to the chain; with `full`, it replaces the
    /// chain (the older files are removed once the new manifest is down).
    pub fn write(&mut self, image: &[u8], full: bool) -> Result<()> {
        let number = self.manifest.last + 1;
        let file = format!("ckpt-{number:010}");
        write_synced(&self.dir.join(&file), image)?;

        let mut next = self.manifest.clone();
        next.last = number;
        if full {
            next.chain.clear();
        }
        next.chain.push(Entry {
            file,
            len: image.len() as u64,
            crc: crc32fast::hash(image),
        });
        let encoded = serde_json::to_vec(&next)
            .map_err(|e| StorageError::Encode(format!("checkpoint manifest: {e}")))?;
        let tmp = self.dir.join(MANIFEST_TMP);
        write_synced(&tmp, &encoded)?;
        std::fs::rename(&tmp, self.dir.join(MANIFEST))
            .map_err(io(format!("installing {}/{MANIFEST}", self.dir.display())))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(format!("syncing {}", self.dir.display())))?;
        self.manifest = next;
        if full {
            self.remove_unlisted();
        }
        Ok(())
    }

    /// Removes checkpoint files the manifest does not list (a crash's or a
    /// superseded chain's). Failures only leave garbage behind.
    fn remove_unlisted(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == MANIFEST {
                continue;
            }
            if !self.manifest.chain.iter().any(|e| e.file == name) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("millrace-ckpt-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn chains_grow_and_full_images_restart_them() {
        let dir = scratch("chain");
        let mut c = Checkpoints::open(&dir).unwrap();
        assert!(c.load().unwrap().is_empty());
        c.write(b"base", true).unwrap();
        c.write(b"inc1", false).unwrap();
        c.write(b"inc2", false).unwrap();
        let c = Checkpoints::open(&dir).unwrap();
        assert_eq!(
            c.load().unwrap(),
            vec![b"base".to_vec(), b"inc1".to_vec(), b"inc2".to_vec()]
        );
        let mut c = c;
        c.write(b"full", true).unwrap();
        assert_eq!(c.chain_len(), 1);
        let files = std::fs::read_dir(dir.join("checkpoints")).unwrap().count();
        assert_eq!(files, 2, "the new base and the manifest");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_torn_checkpoint_is_never_loaded() {
        let dir = scratch("torn");
        let mut c = Checkpoints::open(&dir).unwrap();
        c.write(b"base", true).unwrap();
        // A crash after the next image was (partly) written but before its
        // manifest: the file is there, unlisted, and a stale MANIFEST.tmp.
        std::fs::write(dir.join("checkpoints/ckpt-0000000002"), b"half").unwrap();
        std::fs::write(dir.join("checkpoints/MANIFEST.tmp"), b"{\"last\":").unwrap();
        let mut c = Checkpoints::open(&dir).unwrap();
        assert_eq!(c.load().unwrap(), vec![b"base".to_vec()]);
        assert!(!dir.join("checkpoints/ckpt-0000000002").exists());
        c.write(b"inc", false).unwrap();
        assert_eq!(c.load().unwrap(), vec![b"base".to_vec(), b"inc".to_vec()]);
        // A listed file that was damaged afterwards is refused, not loaded.
        std::fs::write(dir.join("checkpoints/ckpt-0000000002"), b"INC").unwrap();
        assert!(Checkpoints::open(&dir).unwrap().load().is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
