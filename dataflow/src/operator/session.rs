//! The incremental `SESSION` operator.
//!
//! Unlike `TUMBLE` and `HOP`, a session's bounds depend on other rows: a row
//! can extend a session, or bridge two sessions into one, and so change the
//! `window_start` / `window_end` of rows assigned long before. The operator
//! therefore keeps the rows of every open session, per key, ordered by event
//! time. A change only looks at the *region* it can affect: the sessions
//! within `gap` of the changed times. It recomputes the sessions there, and
//! emits, for a session whose bounds stayed the same, only the changed rows;
//! for one whose bounds moved, the retraction of its old rows and the
//! insertion of its new ones. The work per change is thus the size of the
//! sessions it touches, never the whole key.
//!
//! A session closes when the watermark reaches its `window_end` (last event
//! plus gap): no on-time row can reach it any more, so its rows leave the
//! state. Under `EMIT ON WINDOW CLOSE` the operator holds rows back and
//! emits each session once, final, when it closes; its output is then
//! insert-only.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use arrow::array::{Array, ArrayRef, Int64Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};

use crate::delta::Delta;
use crate::state::ChangedKeys;
use crate::window::{key_rows, session_runs, session_unit_ns, SessionSpec};
use crate::{DataflowError, Result};

/// Rows of one key's open sessions: `(event time ns, encoded row)` → count.
type Rows = BTreeMap<(i64, Vec<u8>), i64>;

/// One key's changes: (event time ns, encoded row, weight).
type KeyChanges = HashMap<Vec<u8>, Vec<(i64, Vec<u8>, i64)>>;

/// One output row: encoded input row, session bounds (ns), weight.
type OutRow = (Vec<u8>, i64, i64, i64);

/// The incremental session-assignment operator.
#[derive(Debug)]
pub struct SessionOperator {
    /// Operator id, unique within the view: the key space of its state.
    pub id: u32,
    /// The assignment.
    pub spec: SessionSpec,
    /// The relation whose watermark closes sessions, when the time column
    /// has a `WATERMARK`.
    pub closing: Option<String>,
    /// `EMIT ON WINDOW CLOSE`: rows are held until their session closes.
    pub emit_on_close: bool,
    rows: RowConverter,
    schema: SchemaRef,
    time_type: DataType,
    per_ns: i64,
    open: HashMap<Vec<u8>, Rows>,
    /// Pre-images of the keys changed since the last commit or rollback.
    /// State is stored per key, one record holding all its open rows: one
    /// storage write per touched key and batch instead of one per row.
    undo: HashMap<Vec<u8>, Option<Rows>>,
    /// Keys changed by committed epochs since the last checkpoint.
    changed: ChangedKeys,
    /// Keys by the end of their sessions (may hold stale entries).
    close_index: BTreeSet<(i64, Vec<u8>)>,
    /// The index must be rebuilt from `open` (after a load or a rollback).
    index_stale: bool,
    watermark: Option<i64>,
    watermark_before: Option<Option<i64>>,
    late_rows: u64,
}

impl SessionOperator {
    /// Sessions of `spec` over input rows with `input_types`, producing
    /// `schema` (the input columns, `window_start`, `window_end`).
    pub fn new(
        id: u32,
        spec: SessionSpec,
        input_types: Vec<DataType>,
        schema: SchemaRef,
    ) -> Result<Self> {
        let time_type = input_types
            .get(spec.time_column)
            .cloned()
            .ok_or_else(|| DataflowError::Internal("session time column out of range".into()))?;
        let per_ns = session_unit_ns(&time_type, &spec)?;
        let rows = RowConverter::new(input_types.into_iter().map(SortField::new).collect())?;
        Ok(Self {
            id,
            spec,
            closing: None,
            emit_on_close: false,
            rows,
            schema,
            time_type,
            per_ns,
            open: HashMap::new(),
            undo: HashMap::new(),
            changed: ChangedKeys::default(),
            close_index: BTreeSet::new(),
            index_stale: false,
            watermark: None,
            watermark_before: None,
            late_rows: 0,
        })
    }

    /// The output schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The watermark sessions have been closed up to.
    pub fn watermark(&self) -> Option<i64> {
        self.watermark
    }

    /// Sets the watermark sessions were closed up to before a restart.
    pub fn restore_watermark(&mut self, wm: i64) {
        self.watermark = Some(wm);
    }

    /// Rows dropped since startup because they were behind the watermark.
    pub fn late_rows(&self) -> u64 {
        self.late_rows
    }

    /// Number of rows held in open sessions.
    pub fn row_count(&self) -> usize {
        self.open.values().map(|r| r.len()).sum()
    }

    /// Absorbs `delta` and returns the change of the operator's output.
    pub fn push(&mut self, delta: &Delta) -> Result<Delta> {
        let batch = &delta.batch;
        let times = crate::time::timestamps_ns(batch.column(self.spec.time_column))?;
        let encoded = self.rows.convert_columns(batch.columns())?;
        let keys = key_rows(batch, &self.spec.key_columns)?;
        let mut by_key: KeyChanges = HashMap::new();
        for i in 0..batch.num_rows() {
            if times.is_null(i) {
                continue;
            }
            let t = times.value(i);
            if self.watermark.is_some_and(|wm| t < wm) {
                self.late_rows += 1;
                continue;
            }
            let key = keys.as_ref().map(|k| k.row(i).data().to_vec());
            by_key.entry(key.unwrap_or_default()).or_default().push((
                t,
                encoded.row(i).data().to_vec(),
                delta.weights.value(i),
            ));
        }
        let mut out = Vec::new();
        for (key, changes) in by_key {
            self.apply(key, changes, &mut out)?;
        }
        self.build_output(out)
    }

    /// Applies one key's changes and reports the output rows they change.
    fn apply(
        &mut self,
        key: Vec<u8>,
        changes: Vec<(i64, Vec<u8>, i64)>,
        out: &mut Vec<OutRow>,
    ) -> Result<()> {
        let gap = self.spec.gap_ns;
        let lo = changes.iter().map(|c| c.0).min().unwrap_or(0);
        let hi = changes.iter().map(|c| c.0).max().unwrap_or(0);
        self.touch(&key);
        let rows = self.open.entry(key.clone()).or_default();
        // The region the changes can affect: every old session within `gap`
        // of them. Sessions outside it neither merge with nor split from it.
        let mut from = lo;
        while let Some(((t, _), _)) = rows.range(..(from, Vec::new())).next_back() {
            if from.saturating_sub(*t) >= gap {
                break;
            }
            from = *t;
        }
        let mut to = hi;
        while let Some(((t, _), _)) = rows.range((to.saturating_add(1), Vec::new())..).next() {
            if t.saturating_sub(to) >= gap {
                break;
            }
            to = *t;
        }
        let old = region(rows, from, to);
        for (t, row, w) in &changes {
            let count = rows.get(&(*t, row.clone())).copied().unwrap_or(0);
            let now = count + w;
            if now > 0 {
                rows.insert((*t, row.clone()), now);
            } else {
                rows.remove(&(*t, row.clone()));
            }
        }
        let new = region(rows, from, to);
        if rows.is_empty() {
            self.open.remove(&key);
        }
        let old_sessions = sessions(&old, gap);
        let new_sessions = sessions(&new, gap);
        if self.closing.is_some() {
            for s in &new_sessions {
                self.close_index.insert((s.1, key.clone()));
            }
        }
        if self.emit_on_close {
            return Ok(());
        }
        let bounds = |ss: &[(i64, i64, std::ops::Range<usize>)]| -> BTreeSet<(i64, i64)> {
            ss.iter().map(|s| (s.0, s.1)).collect()
        };
        let (old_bounds, new_bounds) = (bounds(&old_sessions), bounds(&new_sessions));
        for (start, end, run) in &old_sessions {
            if !new_bounds.contains(&(*start, *end)) {
                for (_, row, n) in &old[run.clone()] {
                    out.push((row.clone(), *start, *end, -n));
                }
            }
        }
        for (start, end, run) in &new_sessions {
            if old_bounds.contains(&(*start, *end)) {
                // Same session, same bounds: only the changed rows change.
                for (t, row, w) in &changes {
                    if *t >= *start && *t < *end - gap + 1 {
                        out.push((row.clone(), *start, *end, *w));
                    }
                }
            } else {
                for (_, row, n) in &new[run.clone()] {
                    out.push((row.clone(), *start, *end, *n));
                }
            }
        }
        Ok(())
    }

    /// Closes every session whose end the watermark `wm` reached: its rows
    /// leave the state (and, with [`Self::emit_on_close`], are emitted with
    /// their final bounds). Returns the output change.
    pub fn close(&mut self, wm: i64) -> Result<Delta> {
        if self.closing.is_none() || self.watermark.is_some_and(|w| w >= wm) {
            return Ok(Delta::empty(self.schema.clone()));
        }
        if self.watermark_before.is_none() {
            self.watermark_before = Some(self.watermark);
        }
        self.watermark = Some(wm);
        if self.index_stale {
            self.rebuild_index();
        }
        let gap = self.spec.gap_ns;
        let mut keys = BTreeSet::new();
        while let Some((end, key)) = self.close_index.first().cloned() {
            if end > wm {
                break;
            }
            self.close_index.pop_first();
            keys.insert(key);
        }
        let mut out = Vec::new();
        for key in keys {
            if !self.open.contains_key(&key) {
                continue;
            }
            self.touch(&key);
            let Some(rows) = self.open.get_mut(&key) else {
                continue;
            };
            // Sessions are ordered in time, so the closed ones come first.
            let all: Vec<(i64, Vec<u8>, i64)> =
                rows.iter().map(|((t, r), n)| (*t, r.clone(), *n)).collect();
            for (start, end, run) in sessions(&all, gap) {
                if end > wm {
                    break;
                }
                for (t, row, n) in &all[run] {
                    if self.emit_on_close {
                        out.push((row.clone(), start, end, *n));
                    }
                    rows.remove(&(*t, row.clone()));
                }
            }
            if rows.is_empty() {
                self.open.remove(&key);
            }
        }
        self.build_output(out)
    }

    /// Records the pre-image of `key` before its first change since the
    /// last commit.
    fn touch(&mut self, key: &[u8]) {
        if !self.undo.contains_key(key) {
            self.undo.insert(key.to_vec(), self.open.get(key).cloned());
        }
    }

    fn rebuild_index(&mut self) {
        self.close_index.clear();
        for (key, rows) in &self.open {
            let all: Vec<(i64, Vec<u8>, i64)> =
                rows.iter().map(|((t, r), n)| (*t, r.clone(), *n)).collect();
            for (_, end, _) in sessions(&all, self.spec.gap_ns) {
                self.close_index.insert((end, key.clone()));
            }
        }
        self.index_stale = false;
    }

    fn build_output(&self, out: Vec<OutRow>) -> Result<Delta> {
        if out.is_empty() {
            return Ok(Delta::empty(self.schema.clone()));
        }
        let parser = self.rows.parser();
        let mut columns: Vec<ArrayRef> = self
            .rows
            .convert_rows(out.iter().map(|(r, ..)| parser.parse(r)))?;
        let starts: Int64Array = out.iter().map(|o| Some(o.1 / self.per_ns)).collect();
        let ends: Int64Array = out.iter().map(|o| Some(o.2 / self.per_ns)).collect();
        columns.push(cast(&starts, &self.time_type)?);
        columns.push(cast(&ends, &self.time_type)?);
        let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
        let weights: Int64Array = out.iter().map(|o| Some(o.3)).collect();
        Ok(Delta { batch, weights })
    }

    /// Hands `persist` every key changed since the last checkpoint (with
    /// `full`: every key), with all its open rows (`None` when it has none
    /// left), and starts counting changes afresh.
    pub fn checkpoint(&mut self, full: bool, persist: &mut crate::StateSink<'_>) -> Result<()> {
        let changed = self.changed.take();
        if full {
            for (key, rows) in &self.open {
                persist(self.id, key, Some(encode_rows(rows)?));
            }
            return Ok(());
        }
        for key in &changed {
            let value = match self.open.get(key) {
                Some(rows) => Some(encode_rows(rows)?),
                None => None,
            };
            persist(self.id, key, value);
        }
        Ok(())
    }

    /// The pending changes are durable: forget their pre-images, and note
    /// their keys for the next checkpoint.
    pub fn committed(&mut self) {
        self.changed.extend(self.undo.drain().map(|(k, _)| k));
        self.watermark_before = None;
    }

    /// Restores the keys changed since the last commit.
    pub fn rollback(&mut self) {
        for (key, pre) in self.undo.drain() {
            match pre {
                Some(rows) => self.open.insert(key, rows),
                None => self.open.remove(&key),
            };
        }
        if let Some(w) = self.watermark_before.take() {
            self.watermark = w;
        }
        self.index_stale = true;
    }

    /// Restores one key's open rows read back from storage.
    pub fn load_state(&mut self, key: Vec<u8>, value: &[u8]) -> Result<()> {
        let rows: Vec<((i64, Vec<u8>), i64)> = bincode::deserialize(value)
            .map_err(|e| DataflowError::Internal(format!("corrupt session state record: {e}")))?;
        self.open.insert(key, rows.into_iter().collect());
        self.index_stale = true;
        Ok(())
    }
}

impl crate::Operator for SessionOperator {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn explain(&self) -> String {
        let closing = match &self.closing {
            Some(r) => format!(
                ", closes when the watermark of {r} passes window_end{}",
                if self.emit_on_close {
                    ", emits on close"
                } else {
                    ""
                }
            ),
            None => String::new(),
        };
        format!(
            "SessionAssign #{}: {} (rows of open sessions kept{closing})",
            self.id, self.spec
        )
    }

    /// The input's columns, then `window_start` (which moves as sessions
    /// grow, so it closes with nothing) and `window_end`, which closes
    /// with the watermark.
    fn closings(&self, inputs: &[Vec<Option<crate::Closing>>]) -> Vec<Option<crate::Closing>> {
        let mut out = inputs.first().cloned().unwrap_or_default();
        out.push(None);
        out.push(self.closing.as_ref().map(|r| crate::Closing {
            relation: r.clone(),
            after_ns: 0,
        }));
        out
    }

    /// Held sessions are emitted once, final; otherwise rows move.
    fn append_only(&self, inputs: &[bool]) -> bool {
        self.emit_on_close && inputs.iter().all(|a| *a)
    }

    fn on_change(&mut self, _input: usize, delta: Delta) -> Result<Option<Delta>> {
        Ok(Some(self.push(&delta)?))
    }

    fn on_watermarks(&mut self, watermarks: &crate::Watermarks) -> Result<Option<Delta>> {
        match self
            .closing
            .as_ref()
            .and_then(|r| watermarks.get(r))
            .copied()
        {
            Some(wm) => Ok(Some(self.close(wm)?)),
            None => Ok(None),
        }
    }

    fn stateful(&self) -> Option<&dyn crate::Stateful> {
        Some(self)
    }

    fn stateful_mut(&mut self) -> Option<&mut dyn crate::Stateful> {
        Some(self)
    }
}

impl crate::Stateful for SessionOperator {
    fn owns(&self, op: u32) -> bool {
        op == self.id
    }
    fn load(&mut self, _op: u32, key: Vec<u8>, value: &[u8]) -> Result<()> {
        self.load_state(key, value)
    }
    fn closes_on(&self) -> Option<&str> {
        self.closing.as_deref()
    }
    fn watermark(&self) -> Option<i64> {
        SessionOperator::watermark(self)
    }
    fn restore_watermark(&mut self, wm: i64) {
        SessionOperator::restore_watermark(self, wm)
    }
    fn late_rows(&self) -> u64 {
        SessionOperator::late_rows(self)
    }
    fn held(&self) -> usize {
        self.row_count()
    }
    fn checkpoint(&mut self, full: bool, persist: &mut crate::StateSink<'_>) -> Result<()> {
        SessionOperator::checkpoint(self, full, persist)
    }
    fn committed(&mut self) {
        SessionOperator::committed(self)
    }
    fn rollback(&mut self) {
        SessionOperator::rollback(self)
    }
}

/// The rows of `rows` with event times in `[from, to]`, in order.
/// One key's state record: all its open rows.
fn encode_rows(rows: &Rows) -> Result<Vec<u8>> {
    let rows: Vec<(&(i64, Vec<u8>), &i64)> = rows.iter().collect();
    bincode::serialize(&rows).map_err(|e| DataflowError::Internal(format!("encoding state: {e}")))
}

fn region(rows: &Rows, from: i64, to: i64) -> Vec<(i64, Vec<u8>, i64)> {
    rows.range((from, Vec::new())..)
        .take_while(|((t, _), _)| *t <= to)
        .map(|((t, r), n)| (*t, r.clone(), *n))
        .collect()
}

/// The sessions of `rows` (ordered by time): `(start, end, index range)`.
fn sessions(rows: &[(i64, Vec<u8>, i64)], gap: i64) -> Vec<(i64, i64, std::ops::Range<usize>)> {
    let times: Vec<i64> = rows.iter().map(|r| r.0).collect();
    session_runs(&times, gap)
        .into_iter()
        .map(|run| {
            let start = times[run.start];
            let end = times[run.end - 1].saturating_add(gap);
            (start, end, run)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array as I64, TimestampNanosecondArray};
    use arrow::datatypes::{Field, Schema, TimeUnit};
    use std::sync::Arc;

    const S: i64 = 1_000_000_000;

    fn operator(emit_on_close: bool) -> SessionOperator {
        let ts = DataType::Timestamp(TimeUnit::Nanosecond, None);
        let spec = SessionSpec {
            time_column: 1,
            time_column_name: "ts".into(),
            gap_ns: 5 * S,
            key_columns: vec![0],
            key_names: vec!["k".into()],
        };
        let input = Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("ts", ts.clone(), true),
        ]);
        let schema = crate::window::windowed_schema(&input, 1);
        let mut op =
            SessionOperator::new(0, spec, vec![DataType::Int64, ts], schema).expect("operator");
        op.closing = Some("t".into());
        op.emit_on_close = emit_on_close;
        op
    }

    fn delta(rows: &[(i64, i64, i64)]) -> Delta {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
        ]));
        let k = I64::from(rows.iter().map(|r| r.0).collect::<Vec<_>>());
        let t = TimestampNanosecondArray::from(rows.iter().map(|r| r.1 * S).collect::<Vec<_>>());
        let batch = RecordBatch::try_new(schema, vec![Arc::new(k), Arc::new(t)]).expect("batch");
        Delta {
            batch,
            weights: I64::from(rows.iter().map(|r| r.2).collect::<Vec<_>>()),
        }
    }

    /// (key, ts, start, end, weight) in seconds, sorted.
    fn rows(d: &Delta) -> Vec<(i64, i64, i64, i64, i64)> {
        let col = |i: usize| {
            let c = cast(d.batch.column(i), &DataType::Int64).expect("cast");
            c.as_any().downcast_ref::<I64>().expect("i64").clone()
        };
        let (k, t, s, e) = (col(0), col(1), col(2), col(3));
        let mut out: Vec<_> = (0..d.len())
            .map(|i| {
                (
                    k.value(i),
                    t.value(i) / S,
                    s.value(i) / S,
                    e.value(i) / S,
                    d.weights.value(i),
                )
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn a_bridging_row_merges_two_sessions_and_moves_their_rows() {
        let mut op = operator(false);
        let out = op
            .push(&delta(&[(1, 0, 1), (1, 8, 1), (2, 0, 1)]))
            .expect("push");
        assert_eq!(
            rows(&out),
            vec![(1, 0, 0, 5, 1), (1, 8, 8, 13, 1), (2, 0, 0, 5, 1)]
        );
        // 4 is within 5 s of both 0 and 8: one session [0, 13).
        let out = op.push(&delta(&[(1, 4, 1)])).expect("push");
        assert_eq!(
            rows(&out),
            vec![
                (1, 0, 0, 5, -1),
                (1, 0, 0, 13, 1),
                (1, 4, 0, 13, 1),
                (1, 8, 0, 13, 1),
                (1, 8, 8, 13, -1),
            ]
        );
        // A row inside the session that does not move its bounds.
        let out = op.push(&delta(&[(1, 6, 1)])).expect("push");
        assert_eq!(rows(&out), vec![(1, 6, 0, 13, 1)]);
        // Retracting the bridge splits the session again.
        let out = op.push(&delta(&[(1, 4, -1), (1, 6, -1)])).expect("push");
        assert_eq!(
            rows(&out),
            vec![
                (1, 0, 0, 5, 1),
                (1, 0, 0, 13, -1),
                (1, 4, 0, 13, -1),
                (1, 6, 0, 13, -1),
                (1, 8, 0, 13, -1),
                (1, 8, 8, 13, 1),
            ]
        );
    }

    fn persist(op: &mut SessionOperator, store: &mut BTreeMap<Vec<u8>, Vec<u8>>) {
        op.committed();
        op.checkpoint(false, &mut |_, k, v| match v {
            Some(v) => {
                store.insert(k.to_vec(), v);
            }
            None => {
                store.remove(k);
            }
        })
        .expect("checkpoint");
    }

    #[test]
    fn closing_frees_rows_and_emits_held_sessions_once() {
        let mut store = BTreeMap::new();
        let mut op = operator(true);
        assert!(op
            .push(&delta(&[(1, 0, 1), (1, 3, 1), (1, 20, 1)]))
            .expect("push")
            .is_empty());
        persist(&mut op, &mut store);
        assert_eq!(store.len(), 1, "one record per key");
        assert!(op.close(7 * S).expect("close").is_empty());
        let out = op.close(8 * S).expect("close");
        assert_eq!(rows(&out), vec![(1, 0, 0, 8, 1), (1, 3, 0, 8, 1)]);
        assert_eq!(op.row_count(), 1);
        // A rollback reopens the closed session; the retry closes it again.
        op.rollback();
        assert_eq!(op.row_count(), 3);
        assert_eq!(op.watermark(), None);
        let out = op.close(8 * S).expect("close");
        assert_eq!(out.len(), 2);
        op.push(&delta(&[(1, 22, 1)])).expect("push");
        persist(&mut op, &mut store);
        assert_eq!(store.len(), 1);
        // After a restart the open session [20, 27) comes back and closes.
        let mut restored = operator(true);
        restored.restore_watermark(8 * S);
        for (k, v) in &store {
            restored.load_state(k.clone(), v).expect("load");
        }
        let out = restored.close(30 * S).expect("close");
        assert_eq!(rows(&out), vec![(1, 20, 20, 27, 1), (1, 22, 20, 27, 1)]);
        // A row behind the watermark is late.
        assert!(restored
            .push(&delta(&[(1, 29, 1)]))
            .expect("push")
            .is_empty());
        assert_eq!(restored.late_rows(), 1);
    }
}
