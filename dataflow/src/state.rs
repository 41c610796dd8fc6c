//! What stateful operators share: fast hash maps, and the keys changed
//! since the last checkpoint.
//!
//! An operator's state lives in memory. Within an epoch it keeps its own
//! pre-images, so that a failed log write can roll the epoch back; when the
//! epoch commits, the keys it touched join [`ChangedKeys`], and only at the
//! next checkpoint are their current values encoded, once per key however
//! many epochs touched it. Encoding per epoch instead cost a checkpoint's
//! worth of serialization fifty times a second on hot groups.

use std::collections::{HashMap, HashSet};

/// Hash maps of operator state hash with foldhash: SipHash cost a fifth of
/// the tumble profile.
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
/// A set hashing with foldhash, as [`FastMap`].
pub type FastSet<K> = HashSet<K, foldhash::fast::RandomState>;

/// The state keys of one operator changed by committed epochs since the
/// last checkpoint.
#[derive(Debug, Default)]
pub struct ChangedKeys {
    keys: FastSet<Vec<u8>>,
}

impl ChangedKeys {
    /// Notes that `key` changed.
    pub fn insert(&mut self, key: Vec<u8>) {
        self.keys.insert(key);
    }

    /// Notes that every key of `keys` changed.
    pub fn extend(&mut self, keys: impl IntoIterator<Item = Vec<u8>>) {
        self.keys.extend(keys);
    }

    /// The keys changed since the last call; from now on none counts as
    /// changed.
    pub fn take(&mut self) -> FastSet<Vec<u8>> {
        std::mem::take(&mut self.keys)
    }
}
