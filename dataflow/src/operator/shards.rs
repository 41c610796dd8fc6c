//! One keyed operator split by key over workers: each shard is a whole
//! operator of its own kind holding the keys that hash to it, and an epoch
//! runs the shards at once, one per thread.
//!
//! This is how one heavy `GROUP BY` uses more than one core: the groups
//! are independent, so partitioning the input rows by group key gives each
//! shard exactly the changes of its groups, and the union of the shards'
//! outputs is the operator's output. Nothing else changes: the shards'
//! state records carry the operator's id and keys as one operator's would,
//! so a checkpoint reads the same whatever the number of workers, and a
//! restart with another number routes each record to the shard its key
//! hashes to now.
//!
//! Threads are scoped to the epoch (no pool to keep): an epoch of at least
//! [`PARALLEL_ROWS`] changed rows is worth the few tens of microseconds a
//! thread costs to start, a smaller one runs its shards in turn.

use std::hash::BuildHasher;

use arrow::array::UInt32Array;
use arrow::compute::take_record_batch;
use arrow::datatypes::SchemaRef;

use super::{Operator, Stateful};
use crate::delta::Delta;
use crate::{Closing, DataflowError, Result, StateSink, Watermarks};

/// Epochs with fewer changed rows run their shards on one thread.
pub const PARALLEL_ROWS: usize = 4096;

/// An operator whose state is keyed, so that it can be split by key.
pub trait Keyed: Operator + Stateful {
    /// The key of each row of `delta` (the bytes the operator keys its
    /// state by), hashed into `out`.
    fn row_keys(
        &self,
        delta: &Delta,
        hash: &dyn Fn(&[u8]) -> u64,
        out: &mut Vec<u64>,
    ) -> Result<()>;
    /// The key a state record stored under `op` and `key` belongs to.
    fn record_key<'k>(&self, op: u32, key: &'k [u8]) -> Result<&'k [u8]>;
}

/// `shards` operators of one kind, each holding the keys that hash to it.
#[derive(Debug)]
pub struct Shards<O: Keyed> {
    shards: Vec<O>,
    hasher: foldhash::fast::FixedState,
}

impl<O: Keyed> Shards<O> {
    /// Splits one operator's work over `shards` (at least two), built
    /// alike: they must differ in nothing but the keys they will hold.
    pub fn new(shards: Vec<O>) -> Result<Self> {
        if shards.len() < 2 {
            return Err(DataflowError::Internal(
                "an operator split over fewer than two workers".into(),
            ));
        }
        Ok(Self {
            shards,
            hasher: foldhash::fast::FixedState::with_seed(0x6d69_6c6c_7261_6365),
        })
    }

    fn shard_of(&self, hash: u64) -> usize {
        // The high bits: the low ones also pick the bucket in each
        // shard's own hash map.
        ((hash >> 32) % self.shards.len() as u64) as usize
    }

    /// `delta`'s rows, one change per shard (`None` where it gets none).
    fn partition(&self, delta: &Delta) -> Result<Vec<Option<Delta>>> {
        let mut hashes = Vec::with_capacity(delta.len());
        let hasher = &self.hasher;
        self.shards[0].row_keys(delta, &|k| hasher.hash_one(k), &mut hashes)?;
        let mut rows: Vec<Vec<u32>> = vec![Vec::new(); self.shards.len()];
        for (i, h) in hashes.iter().enumerate() {
            rows[self.shard_of(*h)].push(i as u32);
        }
        rows.into_iter()
            .map(|r| {
                if r.is_empty() {
                    return Ok(None);
                }
                if r.len() == delta.len() {
                    return Ok(Some(delta.clone()));
                }
                let indices = UInt32Array::from(r);
                let batch = take_record_batch(&delta.batch, &indices)?;
                let weights = arrow::compute::take(&delta.weights, &indices, None)?;
                let weights = weights
                    .as_any()
                    .downcast_ref::<arrow::array::Int64Array>()
                    .cloned()
                    .ok_or_else(|| DataflowError::Internal("weights are not Int64".into()))?;
                Ok(Some(Delta { batch, weights }))
            })
            .collect()
    }

    /// Runs `f` on every shard with its part, at once when `parallel`;
    /// the outputs in shard order.
    fn each<T: Send>(
        &mut self,
        parts: Vec<T>,
        parallel: bool,
        f: impl Fn(&mut O, T) -> Result<Option<Delta>> + Sync,
    ) -> Result<Vec<Delta>> {
        let results: Vec<Result<Option<Delta>>> = if parallel {
            std::thread::scope(|scope| {
                let mut work = self.shards.iter_mut().zip(parts);
                let first = work.next();
                let handles: Vec<_> = work
                    .map(|(shard, part)| scope.spawn(|| f(shard, part)))
                    .collect();
                let mut out = Vec::with_capacity(handles.len() + 1);
                if let Some((shard, part)) = first {
                    out.push(f(shard, part));
                }
                for h in handles {
                    out.push(h.join().unwrap_or_else(|panic| {
                        Err(DataflowError::Internal(format!(
                            "a worker panicked: {}",
                            panic_text(&*panic)
                        )))
                    }));
                }
                out
            })
        } else {
            self.shards
                .iter_mut()
                .zip(parts)
                .map(|(shard, part)| f(shard, part))
                .collect()
        };
        let mut out = Vec::new();
        for r in results {
            if let Some(d) = r? {
                if !d.is_empty() {
                    out.push(d);
                }
            }
        }
        Ok(out)
    }

    fn union(&self, parts: Vec<Delta>) -> Result<Option<Delta>> {
        Ok(match parts.len() {
            0 => None,
            1 => parts.into_iter().next(),
            _ => Some(Delta::concat(&self.shards[0].schema(), &parts)?),
        })
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown cause".into())
}

impl<O: Keyed> Operator for Shards<O> {
    fn schema(&self) -> SchemaRef {
        self.shards[0].schema()
    }

    fn explain(&self) -> String {
        format!(
            "{} [over {} workers by key]",
            self.shards[0].explain(),
            self.shards.len()
        )
    }

    fn closings(&self, inputs: &[Vec<Option<Closing>>]) -> Vec<Option<Closing>> {
        self.shards[0].closings(inputs)
    }

    fn append_only(&self, inputs: &[bool]) -> bool {
        self.shards[0].append_only(inputs)
    }

    fn on_change(&mut self, input: usize, delta: Delta) -> Result<Option<Delta>> {
        let parallel = delta.len() >= PARALLEL_ROWS;
        let parts = self.partition(&delta)?;
        let out = self.each(parts, parallel, |shard, part| match part {
            Some(d) => shard.on_change(input, d),
            None => Ok(None),
        })?;
        self.union(out)
    }

    fn on_watermarks(&mut self, watermarks: &Watermarks) -> Result<Option<Delta>> {
        // Only a watermark that closes state is worth the threads.
        let parallel = self.shards[0]
            .closes_on()
            .is_some_and(|r| watermarks.contains_key(r));
        let parts = vec![(); self.shards.len()];
        let out = self.each(parts, parallel, |shard, ()| shard.on_watermarks(watermarks))?;
        self.union(out)
    }

    fn stateful(&self) -> Option<&dyn Stateful> {
        Some(self)
    }

    fn stateful_mut(&mut self) -> Option<&mut dyn Stateful> {
        Some(self)
    }

    fn reads(&self) -> Option<&str> {
        self.shards[0].reads()
    }
}

impl<O: Keyed> Stateful for Shards<O> {
    fn owns(&self, op: u32) -> bool {
        self.shards[0].owns(op)
    }

    fn load(&mut self, op: u32, key: Vec<u8>, value: &[u8]) -> Result<()> {
        let hash = self.hasher.hash_one(self.shards[0].record_key(op, &key)?);
        let shard = self.shard_of(hash);
        self.shards[shard].load(op, key, value)
    }

    fn reserve(&mut self, op: u32, additional: usize) {
        // Keys spread evenly; a little more than a share each.
        let share = additional / self.shards.len() + additional / 64 + 16;
        for s in &mut self.shards {
            s.reserve(op, share);
        }
    }

    fn closes_on(&self) -> Option<&str> {
        self.shards[0].closes_on()
    }

    fn watermark(&self) -> Option<i64> {
        // Every shard hears every watermark, so they agree.
        self.shards[0].watermark()
    }

    fn restore_watermark(&mut self, wm: i64) {
        self.shards.iter_mut().for_each(|s| s.restore_watermark(wm));
    }

    fn late_rows(&self) -> u64 {
        self.shards.iter().map(|s| s.late_rows()).sum()
    }

    fn held(&self) -> usize {
        self.shards.iter().map(|s| s.held()).sum()
    }

    fn checkpoint(&mut self, full: bool, persist: &mut StateSink<'_>) -> Result<()> {
        for s in &mut self.shards {
            s.checkpoint(full, persist)?;
        }
        Ok(())
    }

    fn committed(&mut self) {
        self.shards.iter_mut().for_each(|s| s.committed());
    }

    fn rollback(&mut self) {
        self.shards.iter_mut().for_each(|s| s.rollback());
    }
}
