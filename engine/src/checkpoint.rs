//! Checkpoints: what survives a crash of the views, and how they come back.
//!
//! Views keep their operator state and contents in memory; an `INSERT` or a
//! consumed Kafka batch only writes the write-ahead log (an `INSERT`'s
//! rows; a source epoch's offsets, never its rows; the event-time
//! progress). A checkpoint, taken every
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
//! Recovery reads the chain's files in place ([`Chain::read`]): records
//! are slices of the file bytes, a later file's record of a key hides the
//! earlier ones ([`ViewState`]), and each live record is handed to its
//! operator once. Decoding every record into owned byte strings and
//! merging them into maps first made a restart with ten million groups
//! allocate sixty million times and take 44 s. Then the engine replays
//! the log records from the cut on, in their original order and with the
//! progress each one logged, through the views (a source epoch's rows read
//! again from its topic, see `source_rows`): the result is the views as
//! they were when the last log record was written.
//!
//! The file layout is bincode's (little-endian fixed-width integers, a
//! `u64` length before every sequence and byte string, a `u8` before an
//! `Option`), written by [`encode`] through serde and read back by
//! [`Reader`] without it; a unit test holds the two together.

use std::borrow::Cow;
use std::collections::BTreeMap;

use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use millrace_dataflow::contents::ContentsImage;
use millrace_dataflow::state::FastMap;
use millrace_storage::RelationId;
use serde::Serialize;

use super::event_time::Progress;
use crate::error::{SqlError, SqlResult};

/// A state record read in place: operator id, key, value (`None`: the key
/// was removed).
type RecordRef<'a> = (u32, &'a [u8], Option<&'a [u8]>);

/// One operator state record: `(operator, key, value or None when gone)`.
///
/// The byte strings are serialized as byte strings (a length, then the
/// bytes), borrowed when a compaction copies them from an older file.
#[derive(Debug, Serialize)]
pub struct StateRecord<'a>(
    pub u32,
    #[serde(with = "serde_bytes")] pub Cow<'a, [u8]>,
    #[serde(with = "serde_bytes")] pub Option<Cow<'a, [u8]>>,
);

/// One row of a keyed view's contents and its multiplicity (as
/// [`StateRecord`], its bytes are a byte string).
#[derive(Serialize)]
struct EncodedRow<'a>(#[serde(with = "serde_bytes")] Cow<'a, [u8]>, i64);

/// What one view contributes to an image, before encoding.
pub struct CapturedView {
    pub id: RelationId,
    pub state: Vec<StateRecord<'static>>,
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

#[derive(Serialize)]
struct EncodedView<'a> {
    id: RelationId,
    state: Vec<StateRecord<'a>>,
    rows: Vec<EncodedRow<'a>>,
    /// The appended batches as one Arrow IPC stream (empty when none).
    #[serde(with = "serde_bytes")]
    batches: Vec<u8>,
}

#[derive(Serialize)]
struct EncodedImage<'a> {
    full: bool,
    cut: u64,
    event_times: Vec<(RelationId, Progress)>,
    views: Vec<EncodedView<'a>>,
}

fn internal(what: &str, e: impl std::fmt::Display) -> SqlError {
    SqlError::internal(format!("{what}: {e}"))
}

fn corrupt(what: &str) -> SqlError {
    SqlError::internal(format!("a checkpoint file does not decode: {what}"))
}

/// Appended batches as one Arrow IPC stream (empty when there are none).
fn ipc_stream(batches: &[RecordBatch]) -> SqlResult<Vec<u8>> {
    let mut out = Vec::new();
    if let Some(first) = batches.first() {
        let mut w = StreamWriter::try_new(&mut out, first.schema_ref())
            .map_err(|e| internal("encoding a checkpoint", e))?;
        for b in batches {
            w.write(b)
                .map_err(|e| internal("encoding a checkpoint", e))?;
        }
        w.finish()
            .map_err(|e| internal("encoding a checkpoint", e))?;
    }
    Ok(out)
}

/// Encodes a captured image for the checkpoint file.
pub fn encode(image: Captured) -> SqlResult<Vec<u8>> {
    let mut views = Vec::with_capacity(image.views.len());
    for v in image.views {
        views.push(EncodedView {
            id: v.id,
            state: v.state,
            rows: v
                .contents
                .rows
                .into_iter()
                .map(|(k, n)| EncodedRow(Cow::Owned(k), n))
                .collect(),
            batches: ipc_stream(&v.contents.batches)?,
        });
    }
    write_image(&EncodedImage {
        full: image.full,
        cut: image.cut,
        event_times: image.event_times,
        views,
    })
}

fn write_image(image: &EncodedImage<'_>) -> SqlResult<Vec<u8>> {
    bincode::serialize(image).map_err(|e| internal("encoding a checkpoint", e))
}

/// Reads bincode's layout in place (see the module's doc): byte strings
/// come back as slices of the file, nothing is allocated.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    fn take(&mut self, n: usize) -> SqlResult<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| corrupt("it ends early"))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> SqlResult<[u8; N]> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn flag(&mut self) -> SqlResult<bool> {
        match self.take(1)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(corrupt("a flag is neither 0 nor 1")),
        }
    }

    fn u32(&mut self) -> SqlResult<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> SqlResult<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn i64(&mut self) -> SqlResult<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    fn len(&mut self) -> SqlResult<usize> {
        usize::try_from(self.u64()?).map_err(|_| corrupt("a length is out of range"))
    }

    fn bytes(&mut self) -> SqlResult<&'a [u8]> {
        let n = self.len()?;
        self.take(n)
    }

    fn record(&mut self) -> SqlResult<RecordRef<'a>> {
        let op = self.u32()?;
        let key = self.bytes()?;
        let value = if self.flag()? {
            Some(self.bytes()?)
        } else {
            None
        };
        Ok((op, key, value))
    }

    fn row(&mut self) -> SqlResult<(&'a [u8], i64)> {
        Ok((self.bytes()?, self.i64()?))
    }

    /// Values decoded with serde (the small, structured parts).
    fn serde<T: serde::de::DeserializeOwned>(&mut self) -> SqlResult<T> {
        let mut rest = &self.bytes[self.pos..];
        let value = bincode::deserialize_from(&mut rest)
            .map_err(|e| internal("a checkpoint file does not decode", e))?;
        self.pos = self.bytes.len() - rest.len();
        Ok(value)
    }
}

/// `count` items read by `item` from bytes already checked to hold them
/// (see [`ViewPart::parse`]).
struct Items<'a, T> {
    reader: Reader<'a>,
    left: usize,
    item: fn(&mut Reader<'a>) -> SqlResult<T>,
}

impl<T> Iterator for Items<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // The bytes were walked once when the file was read, so this
        // cannot fail; if it did, the items simply end.
        let item = (self.item)(&mut self.reader).ok();
        if item.is_none() {
            self.left = 0;
        }
        item
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

/// One view's part of one checkpoint file, read in place.
pub struct ViewPart<'a> {
    pub id: RelationId,
    state: &'a [u8],
    records: usize,
    /// Records per operator id.
    ops: BTreeMap<u32, usize>,
    rows: &'a [u8],
    row_count: usize,
    batches: &'a [u8],
}

impl<'a> ViewPart<'a> {
    /// Reads one view's part at `r`, checking that every record and row
    /// is whole (so that iterating them later cannot fail).
    fn parse(r: &mut Reader<'a>) -> SqlResult<Self> {
        let id = r.u64()?;
        let records = r.len()?;
        let start = r.pos;
        let mut ops = BTreeMap::new();
        for _ in 0..records {
            let (op, _, _) = r.record()?;
            *ops.entry(op).or_default() += 1;
        }
        let state = &r.bytes[start..r.pos];
        let row_count = r.len()?;
        let start = r.pos;
        for _ in 0..row_count {
            r.row()?;
        }
        let rows = &r.bytes[start..r.pos];
        let batches = r.bytes()?;
        Ok(Self {
            id,
            state,
            records,
            ops,
            rows,
            row_count,
            batches,
        })
    }

    /// Its state records, in file order.
    fn records(&self) -> Items<'a, RecordRef<'a>> {
        Items {
            reader: Reader::new(self.state),
            left: self.records,
            item: Reader::record,
        }
    }

    /// Its keyed rows and their multiplicities (0: gone), in file order.
    pub fn rows(&self) -> impl Iterator<Item = (&'a [u8], i64)> + 'a {
        Items {
            reader: Reader::new(self.rows),
            left: self.row_count,
            item: Reader::row,
        }
    }

    /// Its appended batches, in order.
    pub fn batches(&self) -> SqlResult<Vec<RecordBatch>> {
        let mut out = Vec::new();
        if !self.batches.is_empty() {
            let reader = StreamReader::try_new(self.batches, None)
                .map_err(|e| internal("a checkpoint's view rows do not decode", e))?;
            for b in reader {
                out.push(b.map_err(|e| internal("a checkpoint's view rows do not decode", e))?);
            }
        }
        Ok(out)
    }
}

/// The chain's files, read in place: what recovery starts from.
#[derive(Default)]
pub struct Chain<'a> {
    /// The first log sequence number the chain does not cover.
    pub cut: u64,
    pub event_times: BTreeMap<RelationId, Progress>,
    /// Each view's parts since the chain's last full image, in file order.
    pub views: BTreeMap<RelationId, Vec<ViewPart<'a>>>,
}

impl<'a> Chain<'a> {
    /// Reads the chain's files, base first.
    pub fn read(files: &'a [Vec<u8>]) -> SqlResult<Self> {
        let mut out = Chain::default();
        for bytes in files {
            let mut r = Reader::new(bytes);
            if r.flag()? {
                out = Chain::default();
            }
            out.cut = r.u64()?;
            let event_times: Vec<(RelationId, Progress)> = r.serde()?;
            out.event_times = event_times.into_iter().collect();
            for _ in 0..r.len()? {
                let part = ViewPart::parse(&mut r)?;
                out.views.entry(part.id).or_default().push(part);
            }
        }
        Ok(out)
    }
}

/// A view's operator state as its parts leave it: the first part's
/// records, except those a later part changed, then the later parts'
/// latest records.
pub struct ViewState<'p, 'a> {
    parts: &'p [ViewPart<'a>],
    /// The latest record of every key the later parts changed.
    later: FastMap<(u32, &'a [u8]), Option<&'a [u8]>>,
}

impl<'p, 'a> ViewState<'p, 'a> {
    pub fn new(parts: &'p [ViewPart<'a>]) -> Self {
        let mut later = FastMap::default();
        for part in parts.iter().skip(1) {
            for (op, key, value) in part.records() {
                later.insert((op, key), value);
            }
        }
        Self { parts, later }
    }

    /// The operator ids that hold records, in id order (an aggregate's
    /// groups before their values), each with about how many.
    pub fn ops(&self) -> BTreeMap<u32, usize> {
        let mut out = self
            .parts
            .first()
            .map(|p| p.ops.clone())
            .unwrap_or_default();
        for ((op, _), value) in &self.later {
            if value.is_some() {
                *out.entry(*op).or_default() += 1;
            }
        }
        out
    }

    /// The live records `(key, value)` of operator `op`, each once.
    pub fn records(&self, op: u32) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + '_ {
        let hidden = !self.later.is_empty();
        let first = self.parts.first().into_iter().flat_map(move |p| {
            p.records().filter_map(move |(o, key, value)| {
                if o != op || (hidden && self.later.contains_key(&(op, key))) {
                    return None;
                }
                value.map(|v| (key, v))
            })
        });
        let later = self
            .later
            .iter()
            .filter(move |((o, _), _)| *o == op)
            .filter_map(|((_, key), value)| value.map(|v| (*key, v)));
        first.chain(later)
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
    let chain = Chain::read(&files)?;
    let mut views = Vec::with_capacity(chain.views.len());
    for (id, parts) in &chain.views {
        if !live.contains(id) {
            continue;
        }
        let state = ViewState::new(parts);
        let mut records = Vec::new();
        for op in state.ops().into_keys() {
            records.extend(
                state
                    .records(op)
                    .map(|(k, v)| StateRecord(op, Cow::Borrowed(k), Some(Cow::Borrowed(v)))),
            );
        }
        let mut rows: BTreeMap<&[u8], i64> = BTreeMap::new();
        let mut batches = Vec::new();
        for part in parts {
            for (k, n) in part.rows() {
                if n <= 0 {
                    rows.remove(k);
                } else {
                    rows.insert(k, n);
                }
            }
            batches.extend(part.batches()?);
        }
        views.push(EncodedView {
            id: *id,
            state: records,
            rows: rows
                .into_iter()
                .map(|(k, n)| EncodedRow(Cow::Borrowed(k), n))
                .collect(),
            batches: ipc_stream(&batches)?,
        });
    }
    write_image(&EncodedImage {
        full: true,
        cut: chain.cut,
        event_times: chain.event_times.into_iter().collect(),
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
    use serde::Serialize;
    use std::sync::Arc;

    fn batch(v: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(v.to_vec()))]).unwrap()
    }

    fn record(op: u32, key: &[u8], value: Option<&[u8]>) -> StateRecord<'static> {
        StateRecord(
            op,
            Cow::Owned(key.to_vec()),
            value.map(|v| Cow::Owned(v.to_vec())),
        )
    }

    fn captured(
        full: bool,
        cut: u64,
        state: Vec<StateRecord<'static>>,
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

    /// The live state of view `id` as `(op, key, value)`, sorted.
    fn state_of(chain: &Chain<'_>, id: RelationId) -> Vec<(u32, Vec<u8>, Vec<u8>)> {
        let state = ViewState::new(&chain.views[&id]);
        let mut out: Vec<_> = state
            .ops()
            .into_keys()
            .flat_map(|op| {
                state
                    .records(op)
                    .map(move |(k, v)| (op, k.to_vec(), v.to_vec()))
                    .collect::<Vec<_>>()
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn a_chain_reads_later_over_earlier_and_full_images_reset_it() {
        let base = encode(captured(
            true,
            3,
            vec![
                record(0, b"a", Some(b"1")),
                record(0, b"b", Some(b"2")),
                record(1, b"x", Some(b"9")),
            ],
            vec![batch(&[1, 2])],
        ))
        .unwrap();
        let inc = encode(captured(
            false,
            7,
            vec![
                record(0, b"a", None),
                record(0, b"c", Some(b"3")),
                record(1, b"x", Some(b"8")),
            ],
            vec![batch(&[3])],
        ))
        .unwrap();
        let files = vec![base.clone(), inc.clone()];
        let chain = Chain::read(&files).unwrap();
        assert_eq!(chain.cut, 7);
        assert_eq!(
            state_of(&chain, 5),
            vec![
                (0, b"b".to_vec(), b"2".to_vec()),
                (0, b"c".to_vec(), b"3".to_vec()),
                (1, b"x".to_vec(), b"8".to_vec()),
            ]
        );
        let rows: usize = chain.views[&5]
            .iter()
            .flat_map(|p| p.batches().unwrap())
            .map(|b| b.num_rows())
            .sum();
        assert_eq!(rows, 3);
        let files = vec![
            base,
            inc,
            encode(captured(true, 9, vec![], vec![])).unwrap(),
        ];
        let again = Chain::read(&files).unwrap();
        assert_eq!(again.cut, 9);
        assert!(state_of(&again, 5).is_empty());
        assert!(Chain::read(&[b"garbage".to_vec()]).is_err());
    }

    #[test]
    fn a_truncated_file_is_refused_not_read_short() {
        let whole = encode(captured(
            true,
            3,
            vec![record(0, b"a", Some(b"1")), record(0, b"b", Some(b"2"))],
            vec![],
        ))
        .unwrap();
        for cut_at in [1, 9, 20, whole.len() - 1] {
            assert!(
                Chain::read(&[whole[..cut_at].to_vec()]).is_err(),
                "{cut_at} of {} bytes",
                whole.len()
            );
        }
    }

    #[test]
    fn files_serde_wrote_with_owned_fields_read_the_same() {
        // Files written before the reader existed came from these shapes
        // (owned byte strings, serde's derive); the layout is bincode's.
        #[derive(Serialize)]
        struct OldView {
            id: RelationId,
            state: Vec<(u32, Vec<u8>, Option<Vec<u8>>)>,
            rows: Vec<(Vec<u8>, i64)>,
            batches: Vec<u8>,
        }
        #[derive(Serialize)]
        struct OldImage {
            full: bool,
            cut: u64,
            event_times: Vec<(RelationId, Progress)>,
            views: Vec<OldView>,
        }
        let progress = Progress {
            watermark: Some(-5),
            max_by_partition: BTreeMap::from([(0, 10), (3, -2)]),
            late_rows: 4,
        };
        let old = bincode::serialize(&OldImage {
            full: true,
            cut: 11,
            event_times: vec![(2, progress.clone())],
            views: vec![OldView {
                id: 5,
                state: vec![
                    (3, b"key".to_vec(), Some(b"value".to_vec())),
                    (4, vec![], None),
                ],
                rows: vec![(b"row".to_vec(), 2)],
                batches: vec![],
            }],
        })
        .unwrap();
        let files = vec![old];
        let chain = Chain::read(&files).unwrap();
        assert_eq!(chain.cut, 11);
        assert_eq!(chain.event_times[&2], progress);
        assert_eq!(
            state_of(&chain, 5),
            vec![(3, b"key".to_vec(), b"value".to_vec())]
        );
        let rows: Vec<_> = chain.views[&5][0].rows().collect();
        assert_eq!(rows, vec![(b"row".as_slice(), 2)]);
    }

    #[test]
    fn a_compacted_chain_loads_as_the_chain_did_without_dropped_views() {
        let keyed = |full, cut, rows: Vec<(&[u8], i64)>| {
            let mut c = captured(full, cut, vec![], vec![]);
            c.views[0].contents.rows = rows.into_iter().map(|(k, n)| (k.to_vec(), n)).collect();
            c.views[0].state = vec![record(1, b"g", Some(&[cut as u8]))];
            c.views.push(CapturedView {
                id: 6,
                state: vec![record(1, b"x", Some(&[1]))],
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
        let files = vec![compact(chain, &live).unwrap()];
        let compacted = Chain::read(&files).unwrap();
        assert_eq!(compacted.cut, 5);
        assert!(!compacted.views.contains_key(&6), "a dropped view goes");
        assert_eq!(state_of(&compacted, 5), vec![(1, b"g".to_vec(), vec![5])]);
        let rows: Vec<(&[u8], i64)> = compacted.views[&5].iter().flat_map(|p| p.rows()).collect();
        assert_eq!(
            rows,
            vec![(b"b".as_slice(), 3), (b"c".as_slice(), 1)],
            "the latest count of each row, removed rows gone"
        );
    }
}
