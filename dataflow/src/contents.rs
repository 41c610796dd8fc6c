//! The contents of a materialized view: the running sum of its output
//! changes, kept in memory.
//!
//! Two shapes, chosen by the view's dataflow:
//! - **Appended**: a view whose changes are insertions only (a projection
//!   or filter over an append-only input, an `EMIT ON WINDOW CLOSE`
//!   aggregate) keeps the output batches as they came, columnar; nothing
//!   is encoded per row, and a scan hands the batches out as they are.
//! - **Keyed**: any other view keeps each distinct row (in the
//!   order-preserving row encoding) with its multiplicity, so that a
//!   retraction finds the row it takes back.
//!
//! A change is applied in two steps: [`ViewContents::prepare`] checks it
//! (a row may never be held a negative number of times) without changing
//! anything, and [`ViewContents::apply`] adds it once the write it belongs
//! to is durable. What changed since the last checkpoint is tracked and
//! handed out by [`ViewContents::take_image`].
//!
//! A point query (`WHERE column = constant`) on a keyed view is answered
//! from an index of the rows by that column ([`ViewContents::lookup`]),
//! built by the first such query and kept up to date by every change after
//! it, so that it costs the rows it returns, not the view's size.

use std::sync::{Arc, Mutex};

use arrow::array::{ArrayRef, Int64Array, UInt32Array};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use arrow::row::{RowConverter, SortField};

use crate::delta::Delta;
use crate::{DataflowError, Result};

/// Rows per batch when keyed rows are turned back into columns.
const BATCH_ROWS: usize = 8192;

use crate::state::{FastMap, FastSet};

/// A view's rows.
pub struct ViewContents {
    schema: SchemaRef,
    shape: Shape,
}

enum Shape {
    Keyed {
        converter: RowConverter,
        rows: FastMap<Box<[u8]>, i64>,
        /// Rows whose multiplicity changed since the last checkpoint image.
        dirty: FastSet<Box<[u8]>>,
        /// The rows as batches, built by the first scan after a change.
        decoded: Mutex<Option<Arc<Vec<RecordBatch>>>>,
        /// Indexes by column number, built by the first point query on it.
        indexes: Mutex<FastMap<usize, ColumnIndex>>,
    },
    Appended {
        batches: Vec<RecordBatch>,
        rows: usize,
        /// Batches before this index are in a checkpoint image already.
        checkpointed: usize,
    },
}

/// A keyed view's rows by the value of one column.
struct ColumnIndex {
    /// Encodes the column's values.
    converter: RowConverter,
    /// Encoded value → the encoded rows holding it.
    rows: FastMap<Box<[u8]>, Vec<Box<[u8]>>>,
}

impl ColumnIndex {
    /// An index of `column` over `rows` (encoded by `converter`).
    fn build<'a>(
        schema: &SchemaRef,
        converter: &RowConverter,
        column: usize,
        rows: impl Iterator<Item = &'a [u8]>,
    ) -> Result<ColumnIndex> {
        let mut index = ColumnIndex {
            converter: RowConverter::new(vec![SortField::new(
                schema.field(column).data_type().clone(),
            )])?,
            rows: FastMap::default(),
        };
        let all: Vec<&[u8]> = rows.collect();
        for chunk in all.chunks(BATCH_ROWS) {
            index.add(converter, column, chunk, true)?;
        }
        Ok(index)
    }

    /// Adds (`insert`) or removes encoded rows.
    fn add(
        &mut self,
        converter: &RowConverter,
        column: usize,
        rows: &[&[u8]],
        insert: bool,
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let parser = converter.parser();
        let columns = converter.convert_rows(rows.iter().map(|r| parser.parse(r)))?;
        let values = self.converter.convert_columns(&columns[column..=column])?;
        for (i, row) in rows.iter().enumerate() {
            let value = values.row(i);
            if insert {
                self.rows
                    .entry(Box::from(value.data()))
                    .or_default()
                    .push(Box::from(*row));
            } else if let Some(held) = self.rows.get_mut(value.data()) {
                held.retain(|r| &**r != *row);
                if held.is_empty() {
                    self.rows.remove(value.data());
                }
            }
        }
        Ok(())
    }
}

/// Whether equality on a column of this type is equality of its row
/// encoding, so that an index answers `=` exactly as SQL does (floats are
/// not: `-0.0 = 0.0` and every NaN is equal in PostgreSQL).
fn indexable(t: &arrow::datatypes::DataType) -> bool {
    use arrow::datatypes::DataType as T;
    t.is_integer()
        || matches!(
            t,
            T::Boolean
                | T::Utf8
                | T::LargeUtf8
                | T::Binary
                | T::LargeBinary
                | T::Date32
                | T::Date64
                | T::Time32(_)
                | T::Time64(_)
                | T::Timestamp(_, _)
                | T::Decimal128(_, _)
                | T::Decimal256(_, _)
        )
}

impl std::fmt::Debug for ViewContents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ViewContents({} rows)", self.row_count())
    }
}

/// A checked change, ready for [`ViewContents::apply`].
#[derive(Debug)]
pub enum Prepared {
    /// Net multiplicity changes of encoded rows.
    Keyed(Vec<(Box<[u8]>, i64)>),
    /// Rows to add.
    Appended(Vec<RecordBatch>),
}

/// What a checkpoint keeps of a view's contents: for keyed views the new
/// multiplicity of each row that changed (0: gone), for appended views the
/// batches added.
#[derive(Debug, Default)]
pub struct ContentsImage {
    /// `(encoded row, multiplicity)`.
    pub rows: Vec<(Vec<u8>, i64)>,
    /// Appended batches, in order.
    pub batches: Vec<RecordBatch>,
}

impl ViewContents {
    /// Empty contents for rows of `schema`; `append_only` when the view's
    /// changes are insertions only.
    pub fn new(schema: SchemaRef, append_only: bool) -> Result<Self> {
        let shape = if append_only {
            Shape::Appended {
                batches: Vec::new(),
                rows: 0,
                checkpointed: 0,
            }
        } else {
            Shape::Keyed {
                converter: RowConverter::new(
                    schema
                        .fields()
                        .iter()
                        .map(|f| SortField::new(f.data_type().clone()))
                        .collect(),
                )?,
                rows: FastMap::default(),
                dirty: FastSet::default(),
                decoded: Mutex::new(None),
                indexes: Mutex::new(FastMap::default()),
            }
        };
        Ok(Self { schema, shape })
    }

    /// The rows' schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Number of rows (counting multiplicities).
    pub fn row_count(&self) -> usize {
        match &self.shape {
            Shape::Keyed { rows, .. } => rows.values().map(|n| *n as usize).sum(),
            Shape::Appended { rows, .. } => *rows,
        }
    }

    /// Checks `delta` against the current rows; nothing changes yet.
    pub fn prepare(&self, delta: &Delta) -> Result<Prepared> {
        match &self.shape {
            Shape::Appended { .. } => {
                if delta.weights.values().iter().all(|w| *w == 1) {
                    return Ok(Prepared::Appended(vec![delta.batch.clone()]));
                }
                // Insertions with a multiplicity: repeat the rows.
                let mut indices = Vec::with_capacity(delta.len());
                for (i, w) in delta.weights.values().iter().enumerate() {
                    if *w < 0 {
                        return Err(DataflowError::Internal(
                            "an append-only view received a retraction".into(),
                        ));
                    }
                    indices.extend(std::iter::repeat_n(i as u32, *w as usize));
                }
                let indices = UInt32Array::from(indices);
                let columns = delta
                    .batch
                    .columns()
                    .iter()
                    .map(|c| arrow::compute::take(c, &indices, None))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                let batch = RecordBatch::try_new_with_options(
                    delta.batch.schema(),
                    columns,
                    &RecordBatchOptions::new().with_row_count(Some(indices.len())),
                )?;
                Ok(Prepared::Appended(vec![batch]))
            }
            Shape::Keyed {
                converter, rows, ..
            } => {
                let encoded = converter.convert_columns(delta.batch.columns())?;
                let mut sums: FastMap<&[u8], i64> = FastMap::default();
                for (i, w) in delta.weights.values().iter().enumerate() {
                    *sums.entry(encoded.row(i).data()).or_insert(0) += *w;
                }
                let mut out = Vec::with_capacity(sums.len());
                for (key, w) in sums {
                    if w == 0 {
                        continue;
                    }
                    if rows.get(key).copied().unwrap_or(0) + w < 0 {
                        return Err(DataflowError::Internal(
                            "the view would hold a row a negative number of times".into(),
                        ));
                    }
                    out.push((Box::from(key), w));
                }
                Ok(Prepared::Keyed(out))
            }
        }
    }

    /// Adds a change checked by [`ViewContents::prepare`].
    pub fn apply(&mut self, change: Prepared) {
        match (&mut self.shape, change) {
            (
                Shape::Keyed {
                    converter,
                    rows,
                    dirty,
                    decoded,
                    indexes,
                },
                Prepared::Keyed(changes),
            ) => {
                if changes.is_empty() {
                    return;
                }
                let indexes = indexes.get_mut().unwrap_or_else(|p| p.into_inner());
                let mut added: Vec<Box<[u8]>> = Vec::new();
                let mut removed: Vec<Box<[u8]>> = Vec::new();
                for (key, w) in changes {
                    match rows.get_mut(&key) {
                        Some(n) => {
                            *n += w;
                            if *n <= 0 {
                                rows.remove(&key);
                                if !indexes.is_empty() {
                                    removed.push(key.clone());
                                }
                            }
                        }
                        None if w > 0 => {
                            rows.insert(key.clone(), w);
                            if !indexes.is_empty() {
                                added.push(key.clone());
                            }
                        }
                        None => {}
                    }
                    dirty.insert(key);
                }
                *decoded.get_mut().unwrap_or_else(|p| p.into_inner()) = None;
                let added: Vec<&[u8]> = added.iter().map(|r| &**r).collect();
                let removed: Vec<&[u8]> = removed.iter().map(|r| &**r).collect();
                // An index that cannot follow (a row that does not decode)
                // is dropped; the next point query rebuilds it.
                indexes.retain(|column, index| {
                    index.add(converter, *column, &removed, false).is_ok()
                        && index.add(converter, *column, &added, true).is_ok()
                });
            }
            (Shape::Appended { batches, rows, .. }, Prepared::Appended(new)) => {
                for b in new {
                    if b.num_rows() > 0 {
                        *rows += b.num_rows();
                        batches.push(b);
                    }
                }
            }
            // prepare() of the same contents made it, so shapes match.
            (Shape::Keyed { .. }, Prepared::Appended(_))
            | (Shape::Appended { .. }, Prepared::Keyed(_)) => {}
        }
    }

    /// The rows as batches, each row repeated by its multiplicity: what a
    /// scan of the view returns.
    pub fn batches(&self) -> Result<Arc<Vec<RecordBatch>>> {
        match &self.shape {
            Shape::Appended { batches, .. } => Ok(Arc::new(batches.clone())),
            Shape::Keyed {
                converter,
                rows,
                decoded,
                ..
            } => {
                let mut cache = decoded.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(b) = cache.as_ref() {
                    return Ok(b.clone());
                }
                let entries: Vec<(&[u8], i64)> = rows.iter().map(|(k, n)| (&**k, *n)).collect();
                let built = Arc::new(decode(&self.schema, converter, &entries, true)?.0);
                *cache = Some(built.clone());
                Ok(built)
            }
        }
    }

    /// Whether [`ViewContents::lookup`] can answer equality on `column`.
    pub fn can_look_up(&self, column: usize) -> bool {
        matches!(self.shape, Shape::Keyed { .. })
            && self
                .schema
                .fields()
                .get(column)
                .is_some_and(|f| indexable(f.data_type()))
    }

    /// The rows whose `column` equals `value` (one value of the column's
    /// type), each row repeated by its multiplicity; `None` when the
    /// column cannot be looked up ([`ViewContents::can_look_up`]) and the
    /// view must be scanned. The first lookup on a column builds its index.
    pub fn lookup(&self, column: usize, value: &ArrayRef) -> Result<Option<Vec<RecordBatch>>> {
        if !self.can_look_up(column) || value.len() != 1 {
            return Ok(None);
        }
        let Shape::Keyed {
            converter,
            rows,
            indexes,
            ..
        } = &self.shape
        else {
            return Ok(None);
        };
        if value.data_type() != self.schema.field(column).data_type() {
            return Ok(None);
        }
        if value.is_null(0) {
            // `column = NULL` is never true.
            return Ok(Some(Vec::new()));
        }
        let mut indexes = indexes.lock().unwrap_or_else(|p| p.into_inner());
        let index = match indexes.entry(column) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(ColumnIndex::build(
                &self.schema,
                converter,
                column,
                rows.keys().map(|k| &**k),
            )?),
        };
        let encoded = index
            .converter
            .convert_columns(std::slice::from_ref(value))?;
        let entries: Vec<(&[u8], i64)> = index
            .rows
            .get(encoded.row(0).data())
            .map(|held| {
                held.iter()
                    .filter_map(|r| rows.get(r).map(|n| (&**r, *n)))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Some(decode(&self.schema, converter, &entries, true)?.0))
    }

    /// The rows as one change inserting them (each row once, weighted by
    /// its multiplicity): how a view over this one starts.
    pub fn as_delta(&self) -> Result<Delta> {
        let parts: Vec<Delta> = match &self.shape {
            Shape::Appended { batches, .. } => {
                batches.iter().cloned().map(Delta::inserts).collect()
            }
            Shape::Keyed {
                converter, rows, ..
            } => {
                let entries: Vec<(&[u8], i64)> = rows.iter().map(|(k, n)| (&**k, *n)).collect();
                let (batches, weights) = decode(&self.schema, converter, &entries, false)?;
                batches
                    .into_iter()
                    .zip(weights)
                    .map(|(batch, weights)| Delta { batch, weights })
                    .collect()
            }
        };
        if parts.is_empty() {
            return Ok(Delta::empty(self.schema.clone()));
        }
        Delta::concat(&self.schema, &parts)
    }

    /// What changed since the last image (`full`: everything), and from now
    /// on nothing counts as changed.
    pub fn take_image(&mut self, full: bool) -> ContentsImage {
        match &mut self.shape {
            Shape::Keyed { rows, dirty, .. } => {
                let image_rows = if full {
                    rows.iter().map(|(k, n)| (k.to_vec(), *n)).collect()
                } else {
                    dirty
                        .iter()
                        .map(|k| (k.to_vec(), rows.get(k).copied().unwrap_or(0)))
                        .collect()
                };
                dirty.clear();
                ContentsImage {
                    rows: image_rows,
                    batches: Vec::new(),
                }
            }
            Shape::Appended {
                batches,
                checkpointed,
                ..
            } => {
                let from = if full { 0 } else { *checkpointed };
                *checkpointed = batches.len();
                ContentsImage {
                    rows: Vec::new(),
                    batches: batches[from..].to_vec(),
                }
            }
        }
    }

    /// Applies a checkpoint image's keyed rows `(encoded row,
    /// multiplicity; 0: gone)`, in order, on top of the current rows: the
    /// chain's full image first, then its increments in order.
    pub fn restore_rows<'r>(&mut self, image: impl Iterator<Item = (&'r [u8], i64)>) -> Result<()> {
        let mut image = image.peekable();
        if image.peek().is_none() {
            return Ok(());
        }
        let Shape::Keyed {
            rows,
            decoded,
            indexes,
            ..
        } = &mut self.shape
        else {
            return Err(DataflowError::Internal(
                "checkpointed keyed rows for an append-only view".into(),
            ));
        };
        indexes.get_mut().unwrap_or_else(|p| p.into_inner()).clear();
        *decoded.get_mut().unwrap_or_else(|p| p.into_inner()) = None;
        rows.reserve(image.size_hint().0);
        for (k, n) in image {
            if n <= 0 {
                rows.remove(k);
            } else {
                rows.insert(Box::from(k), n);
            }
        }
        Ok(())
    }

    /// Appends a checkpoint image's batches, in order.
    pub fn restore_batches(&mut self, image: Vec<RecordBatch>) -> Result<()> {
        if image.is_empty() {
            return Ok(());
        }
        let Shape::Appended {
            batches,
            rows,
            checkpointed,
        } = &mut self.shape
        else {
            return Err(DataflowError::Internal(
                "checkpointed batches for a keyed view".into(),
            ));
        };
        for b in image {
            if b.schema().fields().len() != self.schema.fields().len() {
                return Err(DataflowError::Internal(
                    "checkpointed batch does not match the view's columns".into(),
                ));
            }
            *rows += b.num_rows();
            batches.push(b);
        }
        *checkpointed = batches.len();
        Ok(())
    }
}

/// Decodes keyed rows into batches. With `repeat`, a row of multiplicity n
/// appears n times and the weights are empty; otherwise once, weighted.
fn decode(
    schema: &SchemaRef,
    converter: &RowConverter,
    entries: &[(&[u8], i64)],
    repeat: bool,
) -> Result<(Vec<RecordBatch>, Vec<Int64Array>)> {
    let parser = converter.parser();
    let mut batches = Vec::new();
    let mut weights = Vec::new();
    for chunk in entries.chunks(BATCH_ROWS) {
        let mut parsed = Vec::with_capacity(chunk.len());
        let mut w = Vec::with_capacity(chunk.len());
        for (key, count) in chunk {
            if repeat {
                for _ in 0..*count {
                    parsed.push(parser.parse(key));
                }
            } else {
                parsed.push(parser.parse(key));
                w.push(*count);
            }
        }
        let n = parsed.len();
        let columns: Vec<ArrayRef> = converter.convert_rows(parsed)?;
        batches.push(RecordBatch::try_new_with_options(
            schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(n)),
        )?);
        if !repeat {
            weights.push(Int64Array::from(w));
        }
    }
    Ok((batches, weights))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;
    use arrow::datatypes::{DataType, Field, Schema};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]))
    }

    fn delta(rows: &[(i64, i64)]) -> Delta {
        let batch = RecordBatch::try_new(
            schema(),
            vec![Arc::new(Int64Array::from(
                rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            ))],
        )
        .unwrap();
        Delta {
            batch,
            weights: Int64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>()),
        }
    }

    fn values(c: &ViewContents) -> Vec<i64> {
        let mut out: Vec<i64> = c
            .batches()
            .unwrap()
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_primitive::<arrow::datatypes::Int64Type>()
                    .values()
                    .to_vec()
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn keyed_rows_take_retractions_and_checkpoint_what_changed() {
        let mut c = ViewContents::new(schema(), false).unwrap();
        let p = c.prepare(&delta(&[(1, 1), (2, 2), (1, 1)])).unwrap();
        c.apply(p);
        assert_eq!(values(&c), vec![1, 1, 2, 2]);
        let base = c.take_image(true);
        assert_eq!(base.rows.len(), 2);
        // A retraction of a row never held is refused before anything changes.
        assert!(c.prepare(&delta(&[(3, -1)])).is_err());
        let p = c.prepare(&delta(&[(2, -2), (4, 1)])).unwrap();
        c.apply(p);
        assert_eq!(values(&c), vec![1, 1, 4]);
        let inc = c.take_image(false);
        let mut changed: Vec<i64> = inc.rows.iter().map(|r| r.1).collect();
        changed.sort();
        assert_eq!(changed, vec![0, 1], "2 is gone, 4 is new");
        // Base then increment gives the same rows back.
        let mut restored = ViewContents::new(schema(), false).unwrap();
        for image in [base, inc] {
            restored
                .restore_rows(image.rows.iter().map(|(k, n)| (k.as_slice(), *n)))
                .unwrap();
        }
        assert_eq!(values(&restored), vec![1, 1, 4]);
        let d = restored.as_delta().unwrap();
        assert_eq!(d.weights.values().iter().sum::<i64>(), 3);
    }

    #[test]
    fn appended_rows_stay_columnar_and_checkpoint_only_new_batches() {
        let mut c = ViewContents::new(schema(), true).unwrap();
        let p = c.prepare(&delta(&[(1, 1), (2, 1)])).unwrap();
        c.apply(p);
        assert_eq!(c.take_image(false).batches.len(), 1);
        let p = c.prepare(&delta(&[(3, 2)])).unwrap();
        c.apply(p);
        let inc = c.take_image(false);
        assert_eq!(inc.batches.len(), 1);
        assert_eq!(
            inc.batches[0].num_rows(),
            2,
            "multiplicity 2 repeats the row"
        );
        assert_eq!(values(&c), vec![1, 2, 3, 3]);
        assert!(c.prepare(&delta(&[(1, -1)])).is_err());
        assert_eq!(c.take_image(true).batches.len(), 2);
    }

    #[test]
    fn point_lookups_follow_every_change_after_the_index_is_built() {
        use arrow::array::{Float64Array, StringArray};
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("v", DataType::Utf8, true),
            Field::new("f", DataType::Float64, true),
        ]));
        let change = |rows: &[(i64, &str, i64)]| Delta {
            batch: RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from(
                        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                    )),
                    Arc::new(StringArray::from(
                        rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                    )),
                    Arc::new(Float64Array::from(vec![0.0; rows.len()])),
                ],
            )
            .unwrap(),
            weights: Int64Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>()),
        };
        let look = |c: &ViewContents, k: Option<i64>| -> Vec<String> {
            let value: ArrayRef = Arc::new(Int64Array::from(vec![k]));
            let mut out: Vec<String> = c
                .lookup(0, &value)
                .unwrap()
                .expect("k can be looked up")
                .iter()
                .flat_map(|b| {
                    b.column(1)
                        .as_string::<i32>()
                        .iter()
                        .map(|v| v.unwrap_or("").to_string())
                        .collect::<Vec<_>>()
                })
                .collect();
            out.sort();
            out
        };
        let mut c = ViewContents::new(schema.clone(), false).unwrap();
        c.apply(
            c.prepare(&change(&[(1, "a", 1), (2, "b", 1), (1, "c", 2)]))
                .unwrap(),
        );
        assert_eq!(
            look(&c, Some(1)),
            vec!["a", "c", "c"],
            "built from the rows"
        );
        // An update of group 1 and a new group 3, after the index exists.
        c.apply(
            c.prepare(&change(&[(1, "a", -1), (1, "d", 1), (3, "e", 1)]))
                .unwrap(),
        );
        assert_eq!(look(&c, Some(1)), vec!["c", "c", "d"]);
        assert_eq!(look(&c, Some(3)), vec!["e"]);
        c.apply(c.prepare(&change(&[(2, "b", -1)])).unwrap());
        assert!(look(&c, Some(2)).is_empty(), "a retracted row is gone");
        assert!(look(&c, None).is_empty(), "k = NULL matches nothing");
        let float: ArrayRef = Arc::new(Float64Array::from(vec![0.0]));
        assert!(!c.can_look_up(2), "float equality is not byte equality");
        assert!(c.lookup(2, &float).unwrap().is_none());
        let wrong_type: ArrayRef = Arc::new(arrow::array::Int32Array::from(vec![1]));
        assert!(c.lookup(0, &wrong_type).unwrap().is_none());
        assert!(!ViewContents::new(schema, true).unwrap().can_look_up(0));
    }
}
