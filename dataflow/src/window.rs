//! Window assignment: the columns `TUMBLE`, `HOP` and `SESSION` add to a
//! relation, computed over batches.
//!
//! A tumbling or hopping window is a stateless assignment
//! ([`assign_windows`]: a row gets one `window_start` / `window_end` per
//! window containing it). A session depends on the rows around it, so the
//! runtime keeps sessions in [`crate::operator::session::SessionOperator`];
//! [`assign_sessions`] assigns them over all rows of a relation at once, as
//! an ad-hoc `SELECT` needs. The table functions that produce these specs
//! from SQL live in the planner.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, UInt32Array};
use arrow::compute::{cast, take};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;

use crate::{DataflowError, Result};

/// Which window function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowKind {
    /// Fixed, non-overlapping windows.
    Tumble,
    /// Fixed windows of `size` starting every `slide`.
    Hop,
}

/// At most this many hopping windows contain one row: a bound on the work
/// and memory one input row can cause (RisingWave has the same kind of limit).
pub const MAX_WINDOWS_PER_ROW: i64 = 1024;

/// The parameters of a window assignment, in nanoseconds.
#[derive(Clone, Debug)]
pub struct WindowSpec {
    /// Tumble or hop.
    pub kind: WindowKind,
    /// Index of the event-time column in the input.
    pub time_column: usize,
    /// Name of the event-time column.
    pub time_column_name: String,
    /// Distance between window starts (equals `size` for tumbling windows).
    pub slide_ns: i64,
    /// Window length.
    pub size_ns: i64,
    /// Shift of window boundaries from the epoch.
    pub offset_ns: i64,
}

impl std::fmt::Display for WindowSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            WindowKind::Tumble => write!(
                f,
                "TUMBLE(time={}, size={})",
                self.time_column_name,
                fmt_ns(self.size_ns)
            )?,
            WindowKind::Hop => write!(
                f,
                "HOP(time={}, slide={}, size={})",
                self.time_column_name,
                fmt_ns(self.slide_ns),
                fmt_ns(self.size_ns)
            )?,
        }
        if self.offset_ns != 0 {
            write!(f, " offset={}", fmt_ns(self.offset_ns))?;
        }
        Ok(())
    }
}

pub fn fmt_ns(ns: i64) -> String {
    if ns % 1_000_000_000 == 0 {
        format!("{}s", ns / 1_000_000_000)
    } else if ns % 1_000_000 == 0 {
        format!("{}ms", ns / 1_000_000)
    } else {
        format!("{ns}ns")
    }
}

/// The input schema plus `window_start` and `window_end`.
pub fn windowed_schema(input: &Schema, time_column: usize) -> SchemaRef {
    let time_type = input.field(time_column).data_type().clone();
    let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("window_start", time_type.clone(), true));
    fields.push(Field::new("window_end", time_type, true));
    Arc::new(Schema::new(fields))
}

/// Appends `window_start` / `window_end` to every row of `batch`; a hopping
/// window repeats a row once per window containing it. Rows with a NULL
/// event time belong to no window and are dropped. `weights`, when given,
/// are repeated alongside.
pub fn assign_windows(
    batch: &RecordBatch,
    weights: Option<&Int64Array>,
    spec: &WindowSpec,
    out_schema: &SchemaRef,
) -> Result<(RecordBatch, Option<Int64Array>)> {
    let time = batch.column(spec.time_column);
    let time_type = time.data_type().clone();
    let per_ns = crate::time::unit_ns(&time_type).ok_or_else(|| {
        DataflowError::Internal(format!("window time column has type {time_type}"))
    })?;
    if spec.size_ns % per_ns != 0 || spec.slide_ns % per_ns != 0 || spec.offset_ns % per_ns != 0 {
        return Err(DataflowError::Unsupported(format!(
            "window sizes and offsets finer than the precision of column \"{}\"",
            spec.time_column_name
        )));
    }
    let (size, slide, offset) = (
        spec.size_ns / per_ns,
        spec.slide_ns / per_ns,
        spec.offset_ns / per_ns,
    );
    if size <= 0 || slide <= 0 {
        return Err(DataflowError::Unsupported(format!(
            "window sizes below the precision of column \"{}\"",
            spec.time_column_name
        )));
    }
    let raw = cast(time, &DataType::Int64)?;
    let raw = raw
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| DataflowError::Internal("timestamp cast".into()))?;
    let out_of_range = || {
        DataflowError::OutOfRange(format!(
            "window of column \"{}\" out of the timestamp range",
            spec.time_column_name
        ))
    };
    let mut indices: Vec<u32> = Vec::with_capacity(batch.num_rows());
    let mut starts: Vec<i64> = Vec::with_capacity(batch.num_rows());
    let mut ends: Vec<i64> = Vec::with_capacity(batch.num_rows());
    for i in 0..raw.len() {
        if raw.is_null(i) {
            continue;
        }
        let ts = raw.value(i);
        // The latest window start at or before ts, then every earlier start
        // whose window still contains ts: starts last - j*slide with
        // j*slide + d < size (none when a hop's slide leaves gaps).
        let d = (ts as i128 - offset as i128).rem_euclid(slide as i128) as i64;
        let last = ts.checked_sub(d).ok_or_else(out_of_range)?;
        let count = if size > d {
            ((size as i128 - d as i128 + slide as i128 - 1) / slide as i128) as i64
        } else {
            0
        };
        for j in (0..count).rev() {
            let start = j
                .checked_mul(slide)
                .and_then(|back| last.checked_sub(back))
                .ok_or_else(out_of_range)?;
            let end = start.checked_add(size).ok_or_else(out_of_range)?;
            indices.push(i as u32);
            starts.push(start);
            ends.push(end);
        }
    }
    // Every row in exactly one window, in order (a TUMBLE without NULL
    // times): the input columns pass on as they are, uncopied.
    let identity =
        indices.len() == raw.len() && indices.iter().enumerate().all(|(i, &r)| r as usize == i);
    let idx = UInt32Array::from(indices);
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns() + 2);
    for c in batch.columns() {
        if identity {
            columns.push(c.clone());
        } else {
            columns.push(take(c.as_ref(), &idx, None)?);
        }
    }
    columns.push(cast(&Int64Array::from(starts), &time_type)?);
    columns.push(cast(&Int64Array::from(ends), &time_type)?);
    let out = RecordBatch::try_new(out_schema.clone(), columns)?;
    let weights = match weights {
        Some(w) if identity => Some(w.clone()),
        Some(w) => {
            let taken = take(w, &idx, None)?;
            Some(
                taken
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .cloned()
                    .ok_or_else(|| DataflowError::Internal("weights".into()))?,
            )
        }
        None => None,
    };
    Ok((out, weights))
}

/// The parameters of a `SESSION` assignment.
#[derive(Clone, Debug)]
pub struct SessionSpec {
    /// Index of the event-time column in the input.
    pub time_column: usize,
    /// Name of the event-time column.
    pub time_column_name: String,
    /// A session ends when no row follows within this long (nanoseconds).
    pub gap_ns: i64,
    /// Indices of the key columns: each key has its own sessions.
    pub key_columns: Vec<usize>,
    /// Names of the key columns.
    pub key_names: Vec<String>,
}

impl std::fmt::Display for SessionSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SESSION(time={}, gap={}",
            self.time_column_name,
            fmt_ns(self.gap_ns)
        )?;
        if !self.key_names.is_empty() {
            write!(f, ", key=[{}]", self.key_names.join(", "))?;
        }
        write!(f, ")")
    }
}

/// Splits event times, sorted ascending, into sessions: the index ranges
/// of runs whose consecutive times are less than `gap` apart.
pub fn session_runs(times: &[i64], gap: i64) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let mut start = 0;
    for i in 1..times.len() {
        if times[i].saturating_sub(times[i - 1]) >= gap {
            runs.push(start..i);
            start = i;
        }
    }
    if start < times.len() {
        runs.push(start..times.len());
    }
    runs
}

/// Assigns every row of `batch` (all rows of a relation) its session's
/// `window_start` and `window_end`. Rows with a NULL event time belong to
/// no session and are dropped.
pub fn assign_sessions(
    batch: &RecordBatch,
    spec: &SessionSpec,
    out_schema: &SchemaRef,
) -> Result<RecordBatch> {
    let time = batch.column(spec.time_column);
    let time_type = time.data_type().clone();
    let per_ns = session_unit_ns(&time_type, spec)?;
    let times = crate::time::timestamps_ns(time)?;
    let keys = key_rows(batch, &spec.key_columns)?;
    let mut order: Vec<usize> = (0..batch.num_rows())
        .filter(|&i| !times.is_null(i))
        .collect();
    let key_of = |i: usize| keys.as_ref().map(|k| k.row(i));
    order.sort_by(|&a, &b| {
        key_of(a)
            .cmp(&key_of(b))
            .then(times.value(a).cmp(&times.value(b)))
    });
    let mut starts = vec![0i64; order.len()];
    let mut ends = vec![0i64; order.len()];
    let mut from = 0;
    while from < order.len() {
        let key = key_of(order[from]);
        let mut to = from + 1;
        while to < order.len() && key_of(order[to]) == key {
            to += 1;
        }
        let ts: Vec<i64> = order[from..to].iter().map(|&i| times.value(i)).collect();
        for run in session_runs(&ts, spec.gap_ns) {
            let start = ts[run.start];
            let end = ts[run.end - 1].saturating_add(spec.gap_ns);
            for k in run {
                starts[from + k] = start / per_ns;
                ends[from + k] = end / per_ns;
            }
        }
        from = to;
    }
    let idx = UInt32Array::from(order.iter().map(|&i| i as u32).collect::<Vec<_>>());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns() + 2);
    for c in batch.columns() {
        columns.push(take(c.as_ref(), &idx, None)?);
    }
    columns.push(cast(&Int64Array::from(starts), &time_type)?);
    columns.push(cast(&Int64Array::from(ends), &time_type)?);
    Ok(RecordBatch::try_new(out_schema.clone(), columns)?)
}

/// Nanoseconds per unit of the session's time column, checking that the gap
/// is a whole number of units.
pub fn session_unit_ns(time_type: &DataType, spec: &SessionSpec) -> Result<i64> {
    let per_ns = crate::time::unit_ns(time_type).ok_or_else(|| {
        DataflowError::Internal(format!("session time column has type {time_type}"))
    })?;
    if spec.gap_ns % per_ns != 0 {
        return Err(DataflowError::Unsupported(format!(
            "a SESSION gap finer than the precision of column \"{}\"",
            spec.time_column_name
        )));
    }
    Ok(per_ns)
}

/// The key columns of `batch` in row format; `None` without key columns
/// (every row has the same, empty key).
pub fn key_rows(batch: &RecordBatch, key_columns: &[usize]) -> Result<Option<arrow::row::Rows>> {
    if key_columns.is_empty() {
        return Ok(None);
    }
    let columns: Vec<ArrayRef> = key_columns
        .iter()
        .map(|&i| batch.column(i).clone())
        .collect();
    let converter = arrow::row::RowConverter::new(
        columns
            .iter()
            .map(|c| arrow::row::SortField::new(c.data_type().clone()))
            .collect(),
    )?;
    Ok(Some(converter.convert_columns(&columns)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::TimestampNanosecondArray;
    use arrow::datatypes::TimeUnit;

    fn spec(kind: WindowKind, slide_s: i64, size_s: i64) -> WindowSpec {
        WindowSpec {
            kind,
            time_column: 0,
            time_column_name: "ts".into(),
            slide_ns: slide_s * 1_000_000_000,
            size_ns: size_s * 1_000_000_000,
            offset_ns: 0,
        }
    }

    fn run(spec: &WindowSpec, ts_s: &[Option<i64>]) -> Vec<(i64, i64)> {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            true,
        )]));
        let arr = TimestampNanosecondArray::from(
            ts_s.iter()
                .map(|t| t.map(|s| s * 1_000_000_000))
                .collect::<Vec<_>>(),
        );
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(arr)]).unwrap();
        let out_schema = windowed_schema(&schema, spec.time_column);
        let (out, _) = assign_windows(&batch, None, spec, &out_schema).unwrap();
        let starts = cast(out.column(1), &DataType::Int64).unwrap();
        let starts = starts.as_any().downcast_ref::<Int64Array>().unwrap();
        let ts = cast(out.column(0), &DataType::Int64).unwrap();
        let ts = ts.as_any().downcast_ref::<Int64Array>().unwrap();
        (0..out.num_rows())
            .map(|i| (ts.value(i) / 1_000_000_000, starts.value(i) / 1_000_000_000))
            .collect()
    }

    #[test]
    fn tumble_floors_to_the_window_including_negative_times() {
        let s = spec(WindowKind::Tumble, 10, 10);
        assert_eq!(
            run(&s, &[Some(1), Some(10), Some(19), Some(-1), None]),
            vec![(1, 0), (10, 10), (19, 10), (-1, -10)]
        );
    }

    #[test]
    fn tumble_without_null_times_passes_the_columns_on_uncopied() {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            true,
        )]));
        let arr = TimestampNanosecondArray::from(vec![1_000_000_000, 12_000_000_000]);
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(arr)]).unwrap();
        let weights = Int64Array::from(vec![1, -1]);
        let s = spec(WindowKind::Tumble, 10, 10);
        let out_schema = windowed_schema(&schema, 0);
        let (out, w) = assign_windows(&batch, Some(&weights), &s, &out_schema).unwrap();
        assert_eq!(
            out.column(0).to_data().buffers()[0].as_ptr(),
            batch.column(0).to_data().buffers()[0].as_ptr()
        );
        assert_eq!(w.unwrap(), weights);
        let starts = cast(out.column(1), &DataType::Int64).unwrap();
        assert_eq!(
            starts.as_any().downcast_ref::<Int64Array>().unwrap(),
            &Int64Array::from(vec![0, 10_000_000_000])
        );
    }

    #[test]
    fn hop_repeats_rows_for_every_containing_window() {
        let s = spec(WindowKind::Hop, 2, 10);
        let out = run(&s, &[Some(5)]);
        assert_eq!(out, vec![(5, -4), (5, -2), (5, 0), (5, 2), (5, 4)]);
        let s = spec(WindowKind::Hop, 3, 10);
        // windows starting at multiples of 3 that contain 5: -3, 0, 3
        assert_eq!(run(&s, &[Some(5)]), vec![(5, -3), (5, 0), (5, 3)]);
        // A slide larger than the size leaves gaps: 5 is in no window of [10k, 10k+2).
        let s = spec(WindowKind::Hop, 10, 2);
        assert_eq!(run(&s, &[Some(5), Some(11)]), vec![(11, 10)]);
    }

    #[test]
    fn session_runs_split_where_the_gap_is_reached() {
        assert_eq!(session_runs(&[], 5), Vec::<std::ops::Range<usize>>::new());
        assert_eq!(
            session_runs(&[1, 3, 7, 12, 12, 30], 5),
            vec![0..3, 3..5, 5..6]
        );
        // A gap of exactly `gap` separates: the first session ended at 7 + 5.
        assert_eq!(session_runs(&[7, 12], 5), vec![0..1, 1..2]);
    }
}
