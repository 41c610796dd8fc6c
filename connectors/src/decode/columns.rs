//! The decoded values of one column, in plain buffers that can take back
//! the values of a row that turns out not to decode.
//!
//! The JSON reader writes each value into its column as soon as it has read
//! it, before it knows whether the rest of the message decodes; a message
//! decodes completely or not at all, so a refused message's values must go
//! again. Arrow's builders cannot drop values once appended; these buffers
//! can ([`Column::truncate`]) and become Arrow arrays without a copy.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float32Array, Float64Array,
    Int16Array, Int32Array, Int64Array, StringArray, TimestampMicrosecondArray,
    TimestampMillisecondArray, TimestampNanosecondArray, TimestampSecondArray,
};
use arrow::array::{BooleanBufferBuilder, NullBufferBuilder};
use arrow::buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, TimeUnit};

use super::json_scan::TextOut;
use super::{Cell, DecodeError, Pending, ValueError};

/// One column's values and which of them are NULL. Every row has one
/// entry, NULL or not, so that all columns of a decoder have one length.
pub(super) struct Column {
    values: Values,
    nulls: NullBufferBuilder,
}

/// The values of a column, by type; a NULL row holds a placeholder.
enum Values {
    Int16(Vec<i16>),
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Float32(Vec<f32>),
    Float64(Vec<f64>),
    Boolean(BooleanBufferBuilder),
    /// Text: only UTF-8 is ever appended (a `&str`, or through [`Text`]),
    /// and only whole values are dropped, so the bytes are UTF-8 at all
    /// times and every offset falls between two characters.
    Utf8(Bytes),
    Binary(Bytes),
    /// Days since the epoch.
    Date32(Vec<i32>),
    Decimal(Vec<i128>, u8, i8),
    /// In the column's unit, since the epoch.
    Timestamp(Vec<i64>, TimeUnit, Option<Arc<str>>),
    /// A type messages cannot hold (refused at CREATE SOURCE already); only
    /// the rows are counted.
    Unsupported(DataType),
}

/// Variable-length values back to back, as Arrow lays them out: value `i`
/// is `data[offsets[i]..offsets[i + 1]]`, and `offsets` starts with 0.
struct Bytes {
    offsets: Vec<i32>,
    data: Vec<u8>,
}

impl Bytes {
    fn new() -> Self {
        Bytes {
            offsets: vec![0],
            data: Vec::new(),
        }
    }

    /// Ends the value whose bytes were appended to `data` since the last
    /// one ended. Arrow's 32-bit offsets bound a batch's bytes: past them
    /// the value is refused (Arrow's own builders panic there).
    fn end_value(&mut self) -> Result<(), DecodeError> {
        let end = i32::try_from(self.data.len()).map_err(|_| {
            DecodeError::Internal("more than 2 GiB of text in one batch of a column".into())
        })?;
        self.offsets.push(end);
        Ok(())
    }

    fn push(&mut self, value: &[u8]) -> Result<(), DecodeError> {
        self.data.extend_from_slice(value);
        self.end_value()
    }

    /// Keeps the first `rows` values, and drops bytes appended after the
    /// last of them (a value that was being read when its message failed).
    fn truncate(&mut self, rows: usize) {
        self.offsets.truncate(rows + 1);
        let end = self.offsets.last().copied().unwrap_or(0);
        self.data.truncate(usize::try_from(end).unwrap_or(0));
    }

    fn reserve(&mut self, rows: usize, bytes: usize) {
        self.offsets.reserve(rows);
        self.data.reserve(bytes);
    }
}

/// How many rows, and bytes of variable-length values, to make room for
/// at the start of the next batch: as many as the last batch held, so that
/// the buffers grow once instead of doubling (and copying) their way up.
#[derive(Clone, Copy, Default)]
pub(super) struct Room {
    rows: usize,
    bytes: usize,
}

impl Column {
    pub(super) fn new(t: &DataType) -> Column {
        let values = match t {
            DataType::Int16 => Values::Int16(Vec::new()),
            DataType::Int32 => Values::Int32(Vec::new()),
            DataType::Int64 => Values::Int64(Vec::new()),
            DataType::Float32 => Values::Float32(Vec::new()),
            DataType::Float64 => Values::Float64(Vec::new()),
            DataType::Boolean => Values::Boolean(BooleanBufferBuilder::new(0)),
            DataType::Utf8 => Values::Utf8(Bytes::new()),
            DataType::Binary => Values::Binary(Bytes::new()),
            DataType::Date32 => Values::Date32(Vec::new()),
            DataType::Decimal128(p, s) => {
                // The precision and scale Arrow accepts; others are refused
                // at CREATE SOURCE, and here at the first row.
                if Decimal128Array::from(Vec::<i128>::new())
                    .with_precision_and_scale(*p, *s)
                    .is_ok()
                {
                    Values::Decimal(Vec::new(), *p, *s)
                } else {
                    Values::Unsupported(t.clone())
                }
            }
            DataType::Timestamp(unit, tz) => Values::Timestamp(Vec::new(), *unit, tz.clone()),
            other => Values::Unsupported(other.clone()),
        };
        Column {
            values,
            nulls: NullBufferBuilder::new(0),
        }
    }

    /// Rows held.
    pub(super) fn len(&self) -> usize {
        self.nulls.len()
    }

    /// Keeps the first `rows` rows (no effect if there are not more).
    pub(super) fn truncate(&mut self, rows: usize) {
        if rows >= self.len() {
            if let Values::Utf8(b) | Values::Binary(b) = &mut self.values {
                // Bytes of a value whose reading stopped halfway.
                b.truncate(rows);
            }
            return;
        }
        self.nulls.truncate(rows);
        match &mut self.values {
            Values::Int16(v) => v.truncate(rows),
            Values::Int32(v) | Values::Date32(v) => v.truncate(rows),
            Values::Int64(v) | Values::Timestamp(v, _, _) => v.truncate(rows),
            Values::Float32(v) => v.truncate(rows),
            Values::Float64(v) => v.truncate(rows),
            Values::Boolean(v) => v.truncate(rows),
            Values::Utf8(b) | Values::Binary(b) => b.truncate(rows),
            Values::Decimal(v, _, _) => v.truncate(rows),
            Values::Unsupported(_) => {}
        }
    }

    /// Makes room for a batch like the last one.
    pub(super) fn reserve(&mut self, room: Room) {
        match &mut self.values {
            Values::Int16(v) => v.reserve(room.rows),
            Values::Int32(v) | Values::Date32(v) => v.reserve(room.rows),
            Values::Int64(v) | Values::Timestamp(v, _, _) => v.reserve(room.rows),
            Values::Float32(v) => v.reserve(room.rows),
            Values::Float64(v) => v.reserve(room.rows),
            Values::Boolean(v) => v.reserve(room.rows),
            Values::Utf8(b) | Values::Binary(b) => b.reserve(room.rows, room.bytes),
            Values::Decimal(v, _, _) => v.reserve(room.rows),
            Values::Unsupported(_) => {}
        }
    }

    pub(super) fn push_null(&mut self) {
        match &mut self.values {
            Values::Int16(v) => v.push(0),
            Values::Int32(v) | Values::Date32(v) => v.push(0),
            Values::Int64(v) | Values::Timestamp(v, _, _) => v.push(0),
            Values::Float32(v) => v.push(0.0),
            Values::Float64(v) => v.push(0.0),
            Values::Boolean(v) => v.append(false),
            Values::Utf8(b) | Values::Binary(b) => {
                // An empty value: the offset repeats, which cannot overflow.
                let end = b.offsets.last().copied().unwrap_or(0);
                b.offsets.push(end);
            }
            Values::Decimal(v, _, _) => v.push(0),
            Values::Unsupported(_) => {}
        }
        self.nulls.append_null();
    }

    /// The bytes of a text column, for a reader to append one value's text
    /// to, then [`Column::end_text`]. `None` for a column of another type.
    pub(super) fn text(&mut self) -> Option<Text<'_>> {
        match &mut self.values {
            Values::Utf8(b) => Some(Text(&mut b.data)),
            _ => None,
        }
    }

    /// Ends the text value appended through [`Column::text`].
    pub(super) fn end_text(&mut self) -> Result<(), DecodeError> {
        match &mut self.values {
            Values::Utf8(b) => b.end_value()?,
            _ => {
                return Err(DecodeError::Internal(
                    "text for a column of another type".into(),
                ))
            }
        }
        self.nulls.append_non_null();
        Ok(())
    }

    /// A JSON integer (one that serde_json reads as an `i64`) for a column
    /// of an integer or timestamp type, as [`super::from_json`] converts it:
    /// range-checked, or epoch milliseconds. `None` for a column of another
    /// type, which the caller converts the general way.
    pub(super) fn push_json_int(&mut self, n: i64, t: &DataType) -> Option<Result<(), ValueError>> {
        let pushed = match &mut self.values {
            Values::Int64(v) => {
                v.push(n);
                Ok(())
            }
            Values::Int32(v) => i32::try_from(n).map(|n| v.push(n)),
            Values::Int16(v) => i16::try_from(n).map(|n| v.push(n)),
            Values::Timestamp(v, unit, _) => {
                // As nanoseconds first, so that a value refused by a
                // nanosecond column is refused by the others too.
                let Some(nanos) = n.checked_mul(1_000_000) else {
                    return Some(Err(ValueError::TimestampOutOfRange(n.into())));
                };
                v.push(in_unit(nanos, *unit));
                self.nulls.append_non_null();
                return Some(Ok(()));
            }
            _ => return None,
        };
        Some(match pushed {
            Ok(()) => {
                self.nulls.append_non_null();
                Ok(())
            }
            Err(_) => Err(ValueError::OutOfRange {
                value: n,
                type_name: millrace_planner::naming::pg_type_name(t),
            }),
        })
    }

    /// Appends a value read by the general path, borrowed or not.
    pub(super) fn push_pending(&mut self, value: Pending<'_>) -> Result<(), DecodeError> {
        match value {
            Pending::Cell(cell) => self.push_cell(cell),
            Pending::Str(s) => match &mut self.values {
                Values::Utf8(b) => {
                    b.push(s.as_bytes())?;
                    self.nulls.append_non_null();
                    Ok(())
                }
                _ => {
                    self.push_null();
                    Err(DecodeError::Internal(format!(
                        "text {s:?} for a column of another type"
                    )))
                }
            },
        }
    }

    /// Appends one value. A value of another type than the column's is a
    /// bug of this module: the column gets a NULL (rows stay aligned) and
    /// the caller an internal error.
    pub(super) fn push_cell(&mut self, cell: Cell) -> Result<(), DecodeError> {
        match (&mut self.values, cell) {
            (_, Cell::Null) => {
                self.push_null();
                return Ok(());
            }
            (Values::Int16(v), Cell::Int(n)) => v.push(n as i16),
            (Values::Int32(v), Cell::Int(n)) => v.push(n as i32),
            (Values::Int64(v), Cell::Int(n)) => v.push(n),
            (Values::Float32(v), Cell::Float(x)) => v.push(x as f32),
            (Values::Float64(v), Cell::Float(x)) => v.push(x),
            (Values::Boolean(v), Cell::Bool(b)) => v.append(b),
            (Values::Utf8(b), Cell::Text(s)) => b.push(s.as_bytes())?,
            (Values::Binary(b), Cell::Bytes(v)) => b.push(&v)?,
            (Values::Date32(v), Cell::Date(d)) => v.push(d),
            (Values::Decimal(v, _, _), Cell::Decimal(d)) => v.push(d),
            (Values::Timestamp(v, unit, _), Cell::Timestamp(nanos)) => {
                v.push(in_unit(nanos, *unit))
            }
            (Values::Unsupported(_), _) => {}
            (_, other) => {
                self.push_null();
                return Err(DecodeError::Internal(format!(
                    "{other:?} in a column of another type"
                )));
            }
        }
        self.nulls.append_non_null();
        Ok(())
    }

    /// The column's rows as an array; the column starts afresh, empty, and
    /// says how much room its next batch will likely need.
    pub(super) fn finish(&mut self) -> (Result<ArrayRef, DecodeError>, Room) {
        let rows = self.len();
        let nulls = std::mem::replace(&mut self.nulls, NullBufferBuilder::new(0)).build();
        let mut room = Room { rows, bytes: 0 };
        let arrow = |e: arrow::error::ArrowError| DecodeError::Internal(e.to_string());
        let array: Result<ArrayRef, DecodeError> = match &mut self.values {
            Values::Int16(v) => Ok(Arc::new(Int16Array::new(take(v), nulls))),
            Values::Int32(v) => Ok(Arc::new(Int32Array::new(take(v), nulls))),
            Values::Int64(v) => Ok(Arc::new(Int64Array::new(take(v), nulls))),
            Values::Float32(v) => Ok(Arc::new(Float32Array::new(take(v), nulls))),
            Values::Float64(v) => Ok(Arc::new(Float64Array::new(take(v), nulls))),
            Values::Date32(v) => Ok(Arc::new(Date32Array::new(take(v), nulls))),
            Values::Boolean(v) => Ok(Arc::new(BooleanArray::new(v.finish(), nulls))),
            Values::Decimal(v, p, s) => Decimal128Array::new(take(v), nulls)
                .with_precision_and_scale(*p, *s)
                .map(|a| Arc::new(a) as ArrayRef)
                .map_err(arrow),
            Values::Timestamp(v, unit, tz) => {
                let values = take(v);
                let tz = tz.clone();
                Ok(match unit {
                    TimeUnit::Second => {
                        Arc::new(TimestampSecondArray::new(values, nulls).with_timezone_opt(tz))
                    }
                    TimeUnit::Millisecond => Arc::new(
                        TimestampMillisecondArray::new(values, nulls).with_timezone_opt(tz),
                    ),
                    TimeUnit::Microsecond => Arc::new(
                        TimestampMicrosecondArray::new(values, nulls).with_timezone_opt(tz),
                    ),
                    TimeUnit::Nanosecond => {
                        Arc::new(TimestampNanosecondArray::new(values, nulls).with_timezone_opt(tz))
                    }
                })
            }
            Values::Utf8(b) => {
                room.bytes = b.data.len();
                let (offsets, data) = take_bytes(b);
                text_array(offsets, data, nulls)
            }
            Values::Binary(b) => {
                room.bytes = b.data.len();
                let (offsets, data) = take_bytes(b);
                BinaryArray::try_new(offsets, data.into(), nulls)
                    .map(|a| Arc::new(a) as ArrayRef)
                    .map_err(arrow)
            }
            Values::Unsupported(t) if rows == 0 => Ok(arrow::array::new_empty_array(t)),
            Values::Unsupported(t) => Err(DecodeError::UndecodableType(
                millrace_planner::naming::pg_type_name(t),
            )),
        };
        (array, room)
    }
}

/// A text column's bytes, open for one value to be appended: only UTF-8
/// goes in (runs of a message are checked, characters are whole), which is
/// what lets [`text_array`] skip Arrow's check of the whole batch (a third
/// of the decoding time, as the bytes are no longer in the cache by then).
pub(super) struct Text<'a>(&'a mut Vec<u8>);

impl TextOut for Text<'_> {
    #[inline]
    fn push_run(&mut self, run: &[u8]) -> bool {
        let utf8 = run.is_ascii() || std::str::from_utf8(run).is_ok();
        if utf8 {
            self.0.extend_from_slice(run);
        }
        utf8
    }

    fn push_char(&mut self, c: char) {
        self.0
            .extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
    }
}

/// A text array of a text column's bytes and offsets.
fn text_array(
    offsets: OffsetBuffer<i32>,
    data: Vec<u8>,
    nulls: Option<NullBuffer>,
) -> Result<ArrayRef, DecodeError> {
    let values = offsets.len() - 1;
    let whole = nulls.as_ref().is_none_or(|n| n.len() == values)
        && offsets
            .last()
            .is_some_and(|&end| end as usize <= data.len());
    if !whole {
        return Err(DecodeError::Internal(
            "a text column's offsets do not match its values".into(),
        ));
    }
    debug_assert!(std::str::from_utf8(&data).is_ok());
    // SAFETY: `try_new` would accept these parts: the offsets start at 0,
    // never decrease (`OffsetBuffer::new` checked) and end within the data;
    // there is one null bit per value (checked above); and the data is
    // UTF-8 with every offset between two characters, because only `&str`s
    // and `Text`'s checked runs and whole characters are appended to it
    // and only whole values are dropped (see `Values::Utf8`).
    let array = unsafe { StringArray::new_unchecked(offsets, data.into(), nulls) };
    Ok(Arc::new(array))
}

/// A timestamp in nanoseconds, in `unit` (rounded down, as Arrow's casts
/// round).
fn in_unit(nanos: i64, unit: TimeUnit) -> i64 {
    match unit {
        TimeUnit::Second => nanos.div_euclid(1_000_000_000),
        TimeUnit::Millisecond => nanos.div_euclid(1_000_000),
        TimeUnit::Microsecond => nanos.div_euclid(1_000),
        TimeUnit::Nanosecond => nanos,
    }
}

fn take<T: arrow::datatypes::ArrowNativeType>(v: &mut Vec<T>) -> ScalarBuffer<T> {
    ScalarBuffer::from(std::mem::take(v))
}

fn take_bytes(b: &mut Bytes) -> (OffsetBuffer<i32>, Vec<u8>) {
    let Bytes { offsets, data } = std::mem::replace(b, Bytes::new());
    // Offsets start at 0 and never decrease: each is the length of `data`
    // when a value ended, and `truncate` only drops whole values.
    (OffsetBuffer::new(ScalarBuffer::from(offsets)), data)
}
