//! Checkpoints: what survives a crash of the views, and how they come back.
//!
//! Views keep their operator state and contents in memory; an `INSERT` or a
//! consumed Kafka batch only writes the write-ahead log (its rows, the
//! source offsets, the event-time progress). A checkpoint, taken every
//! `checkpoint_interval` (and on `FLUSH`, `CREATE MATERIALIZED VIEW` and
//! clean shutdown), writes one image holding, for every view, the state
//! records and rows that changed since the previous image, every
//! relation's event-time progress, and the log position it covers (the
//! *cut*: the first sequence number not in it). Images chain (see
//! [`millrace_storage::checkpoint`]); now and then a full image starts a new
//! chain, so that recovery reads a bounded amount.
//!
//! The image is captured under the pipelines' write lock, so it is one
//! consistent point of every view; encoding and the disk writes happen
//! after the lock is released, so ingestion waits only for the capture,
//! and a capture costs the state that changed since the last one. The chain
//! is compacted from its files ([`compact`]), never by capturing the views'
//! whole state: a full capture of a million groups stopped ingestion for
//! the length of its serialization.
//!
//! Recovery ([`Image::merge`], then the engine's replay) loads the chain,
//! then replays the log records from the cut on, in their original order
//! and with the progress each one logged, through the views: the result is
//! the views as they were when the last log record was written.

use std::collections::BTreeMap;

use millrace_dataflow::state::FastMap;

use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use millrace_dataflow::contents::ContentsImage;
use millrace_storage::RelationId;
use serde::{Deserialize, Serialize};

use super::event_time::Progress;
use crate::error::{SqlError, SqlResult};

/// One operator state record: `(operator, key, value or None when gone)`.
///
/// The byte strings are (de)serialized as byte strings, not as sequences
/// of `u8`: bincode lays both out the same (a length, then the bytes), so
/// files written either way read the same, but a sequence is decoded one
/// byte at a time, which made reading a checkpoint of ten million groups
/// take seconds by itself.
#[derive(Debug, Serialize, Deserialize)]
pub struct StateRecord(
    pub u32,
    #[serde(with = "serde_bytes")] pub Vec<u8>,
    #[serde(with = "serde_bytes")] pub Option<Vec<u8>>,
);

/// One row of a keyed view's contents and its multiplicity (as
/// [`StateRecord`], its bytes are a byte string).
#[derive(Serialize, Deserialize)]
struct EncodedRow(#[serde(with = "serde_bytes")] Vec<u8>, i64);

/// What one view contributes to an image, before encoding.
pub struct CapturedView {
    pub id: RelationId,
    pub state: Vec<StateRecord>,
    pub contents: ContentsImage,
}

/// An image as captured under the lock.
pub struct Captured {
    pub full: bool,
    pub cut: u64,
    pub event_times: Vec<(RelationId, Progress)>,
    pub views: Vec<CapturedView>,
}

impl Captured {
    /// True when writing it would change nothing a restart reads.
    pub fn is_noop(&self, last_cut: Option<u64>) -> bool {
        !self.full
            && last_cut == Some(self.cut)
            && self.views.iter().all(|v| {
                v.state.is_empty() && v.contents.rows.is_empty() && v.contents.batches.is_empty()
            })
    }
}

#[derive(Serialize, Deserialize)]
struct EncodedView {
    id: RelationId,
    state: Vec<StateRecord>,
    rows: Vec<EncodedRow>,
    /// The appended batches as one Arrow IPC stream (empty when none).
    #[serde(with = "serde_bytes")]
    batches: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct EncodedImage {
    full: bool,
    cut: u64,
    event_times: Vec<(RelationId, Progress)>,
    views: Vec<EncodedView>,
}

fn internal(what: &str, e: impl std::fmt::Display) -> SqlError {
    SqlError::internal(format!("{what}: {e}"))
}

/// Encodes a captured image for the checkpoint file.
pub fn encode(image: Captured) -> SqlResult<Vec<u8>> {
    let mut views = Vec::with_capacity(image.views.len());
    for v in image.views {
        let mut batches = Vec::new();
        if let Some(first) = v.contents.batches.first() {
            let mut w = StreamWriter::try_new(&mut batches, first.schema_ref())
                .map_err(|e| internal("encoding a checkpoint", e))?;
            for b in &v.contents.batches {
                w.write(b)
                    .map_err(|e| internal("encoding a checkpoint", e))?;
            }
            w.finish()
                .map_err(|e| internal("encoding a checkpoint", e))?;
        }
        views.push(EncodedView {
            id: v.id,
            state: v.state,
            rows: v
                .contents
                .rows
                .into_iter()
                .map(|(k, n)| EncodedRow(k, n))
                .collect(),
            batches,
        });
    }
    bincode::serialize(&EncodedImage {
        full: image.full,
        cut: image.cut,
        event_times: image.event_times,
        views,
    })
    .map_err(|e| internal("encoding a checkpoint", e))
}

/// One view as the whole chain leaves it.
#[derive(Default)]
pub struct RestoredView {
    /// Its state records by operator id, in id order (so an aggregate's
    /// groups come before their values), each operator's in no order.
    pub state: BTreeMap<u32, FastMap<Vec<u8>, Vec<u8>>>,
    /// Its contents, one image per chain file, to apply in order.
    pub contents: Vec<ContentsImage>,
}

/// The chain, merged: what recovery starts from.
#[derive(Default)]
pub struct Image {
    /// The first log sequence number the chain does not cover.
    pub cut: u64,
    pub event_times: BTreeMap<RelationId, Progress>,
    pub views: BTreeMap<RelationId, RestoredView>,
}

impl Image {
    /// Merges the chain's files, base first.
    pub fn merge(files: Vec<Vec<u8>>) -> SqlResult<Self> {
        let mut out = Image::default();
        for bytes in files {
            let image: EncodedImage = bincode::deserialize(&bytes)
                .map_err(|e| internal("a checkpoint file does not decode", e))?;
            if image.full {
                out = Image::default();
            }
            out.cut = image.cut;
            out.event_times = image.event_times.into_iter().collect();
            for v in image.views {
                let view = out.views.entry(v.id).or_default();
                // Room for every record of an operator at once: a map of
                // millions grown by doubling rehashes each record again.
                let mut records: BTreeMap<u32, usize> = BTreeMap::new();
                for r in &v.state {
                    *records.entry(r.0).or_default() += 1;
                }
                for (op, n) in records {
                    view.state.entry(op).or_default().reserve(n);
                }
                for StateRecord(op, key, value) in v.state {
                    let of_op = view.state.entry(op).or_default();
                    match value {
                        Some(value) => of_op.insert(key, value),
                        None => of_op.remove(&key),
                    };
                }
                let mut batches = Vec::new();
                if !v.batches.is_empty() {
                    let reader = StreamReader::try_new(v.batches.as_slice(), None)
                        .map_err(|e| internal("a checkpoint's view rows do not decode", e))?;
                    for b in reader {
                        batches.push(
                            b.map_err(|e| internal("a checkpoint's view rows do not decode", e))?,
                        );
                    }
                }
                view.contents.push(ContentsImage {
                    rows: v.rows.into_iter().map(|EncodedRow(k, n)| (k, n)).collect(),
                    batches,
                });
            }
        }
        Ok(out)
    }
}

/// Merges a chain's files into one full image with the same content, for
/// the views in `live` (a dropped view's records go): what a restart would
/// load, in one file. It reads only the files, so it runs while ingestion
/// goes on.
pub fn compact(
    files: Vec<Vec<u8>>,
    live: &std::collections::BTreeSet<RelationId>,
) -> SqlResult<Vec<u8>> {
    let image = Image::merge(files)?;
    let mut views = Vec::with_capacity(image.views.len());
    for (id, view) in image.views {
        if !live.contains(&id) {
            continue;
        }
        let state = view
            .state
            .into_iter()
            .flat_map(|(op, records)| {
                records
                    .into_iter()
                    .map(move |(key, value)| StateRecord(op, key, Some(value)))
            })
            .collect();
        let mut rows: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
        let mut batches = Vec::new();
        for c in view.contents {
            for (k, n) in c.rows {
                if n <= 0 {
                    rows.remove(&k);
                } else {
                    rows.insert(k, n);
                }
            }
            batches.extend(c.batches);
        }
        views.push(CapturedView {
            id,
            state,
            contents: ContentsImage {
                rows: rows.into_iter().collect(),
                batches,
            },
        });
    }
    encode(Captured {
        full: true,
        cut: image.cut,
        event_times: image.event_times.into_iter().collect(),
        views,
    })
}

/// Appended batches relabelled with the view's schema (an IPC round trip
/// keeps types and names, but the view's schema object is the one scans
/// compare against).
pub fn conform(
    batches: Vec<RecordBatch>,
    schema: &arrow::datatypes::SchemaRef,
) -> SqlResult<Vec<RecordBatch>> {
    batches
        .into_iter()
        .map(|b| {
            RecordBatch::try_new_with_options(
                schema.clone(),
                b.columns().to_vec(),
                &arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(b.num_rows())),
            )
            .map_err(SqlError::from)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn batch(v: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(v.to_vec()))]).unwrap()
    }

    fn captured(
        full: bool,
        cut: u64,
        state: Vec<StateRecord>,
        batches: Vec<RecordBatch>,
    ) -> Captured {
        Captured {
            full,
            cut,
            event_times: vec![],
            views: vec![CapturedView {
                id: 5,
                state,
                contents: ContentsImage {
                    rows: vec![],
                    batches,
                },
            }],
        }
    }

    #[test]
    fn a_chain_merges_later_over_earlier_and_full_images_reset_it() {
        let base = encode(captured(
            true,
            3,
            vec![
                StateRecord(0, b"a".to_vec(), Some(b"1".to_vec())),
                StateRecord(0, b"b".to_vec(), Some(b"2".to_vec())),
            ],
            vec![batch(&[1, 2])],
        ))
        .unwrap();
        let inc = encode(captured(
            false,
            7,
            vec![
                StateRecord(0, b"a".to_vec(), None),
                StateRecord(0, b"c".to_vec(), Some(b"3".to_vec())),
            ],
            vec![batch(&[3])],
        ))
        .unwrap();
        let image = Image::merge(vec![base.clone(), inc.clone()]).unwrap();
        assert_eq!(image.cut, 7);
        let v = &image.views[&5];
        let mut keys: Vec<&[u8]> = v.state[&0].keys().map(|k| k.as_slice()).collect();
        keys.sort();
        assert_eq!(keys, vec![b"b".as_slice(), b"c".as_slice()]);
        let rows: usize = v
            .contents
            .iter()
            .flat_map(|c| &c.batches)
            .map(|b| b.num_rows())
            .sum();
        assert_eq!(rows, 3);
        let again = Image::merge(vec![
            base,
            inc,
            encode(captured(true, 9, vec![], vec![])).unwrap(),
        ])
        .unwrap();
        assert_eq!(again.cut, 9);
        assert!(again.views[&5].state.values().all(|m| m.is_empty()));
        assert!(Image::merge(vec![b"garbage".to_vec()]).is_err());
    }

    #[test]
    fn records_read_as_byte_strings_decode_files_written_as_sequences() {
        // Files written before the records were byte strings held tuples
        // of `Vec<u8>`; bincode lays both out alike.
        let old: Vec<(u32, Vec<u8>, Option<Vec<u8>>)> = vec![
            (3, b"key".to_vec(), Some(b"value".to_vec())),
            (4, vec![], None),
        ];
        let bytes = bincode::serialize(&old).unwrap();
        let new: Vec<StateRecord> = bincode::deserialize(&bytes).unwrap();
        assert_eq!(new.len(), 2);
        assert_eq!(
            (new[0].0, &new[0].1, &new[0].2),
            (3, &b"key".to_vec(), &Some(b"value".to_vec()))
        );
        assert_eq!((new[1].0, new[1].1.len(), &new[1].2), (4, 0, &None));
        assert_eq!(bincode::serialize(&new).unwrap(), bytes);
    }

    #[test]
    fn a_compacted_chain_loads_as_the_chain_did_without_dropped_views() {
        let keyed = |full, cut, rows: Vec<(&[u8], i64)>| {
            let mut c = captured(full, cut, vec![], vec![]);
            c.views[0].contents.rows = rows.into_iter().map(|(k, n)| (k.to_vec(), n)).collect();
            c.views[0].state = vec![StateRecord(1, b"g".to_vec(), Some(vec![cut as u8]))];
            c.views.push(CapturedView {
                id: 6,
                state: vec![StateRecord(1, b"x".to_vec(), Some(vec![1]))],
                contents: ContentsImage::default(),
            });
            encode(c).unwrap()
        };
        let chain = vec![
            keyed(true, 2, vec![(b"a", 1), (b"b", 2)]),
            keyed(false, 4, vec![(b"a", 0), (b"c", 1)]),
            keyed(false, 5, vec![(b"b", 3)]),
        ];
        let live = std::collections::BTreeSet::from([5]);
        let compacted = Image::merge(vec![compact(chain, &live).unwrap()]).unwrap();
        assert_eq!(compacted.cut, 5);
        assert!(!compacted.views.contains_key(&6), "a dropped view goes");
        let v = &compacted.views[&5];
        assert_eq!(v.state[&1][b"g".as_slice()], vec![5]);
        let rows: Vec<(Vec<u8>, i64)> = v.contents.iter().flat_map(|c| c.rows.clone()).collect();
        assert_eq!(
            rows,
            vec![(b"b".to_vec(), 3), (b"c".to_vec(), 1)],
            "the latest count of each row, removed rows gone"
        );
    }
}
