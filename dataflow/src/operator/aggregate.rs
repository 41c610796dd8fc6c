//! Incremental `GROUP BY`: per-group accumulators that absorb inserts and
//! retractions, and emit, for every group a change touched, a retraction of
//! its old row and an insertion of its new one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};
use datafusion::common::ScalarValue;
use datafusion::physical_expr::PhysicalExpr;
use serde::{Deserialize, Serialize};

use crate::delta::Delta;
use crate::state::{ChangedKeys, FastMap};
use crate::{DataflowError, Result};

/// Which aggregate function an accumulator computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggKind {
    /// `count(x)` / `count(*)`: rows with a non-NULL argument.
    Count,
    /// `count(DISTINCT x)`.
    CountDistinct,
    /// `sum(x)`.
    Sum,
    /// `avg(x)`.
    Avg,
    /// `min(x)`.
    Min,
    /// `max(x)`.
    Max,
}

/// How an argument's values are summed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SumDomain {
    /// Integers and decimals, summed exactly as i128 (decimals unscaled).
    Exact,
    /// Floating point.
    Float,
}

/// One aggregate call of a `GROUP BY`.
#[derive(Debug)]
pub struct AggCall {
    /// The function.
    pub kind: AggKind,
    /// The argument; `None` for `count(*)`.
    pub arg: Option<Arc<dyn PhysicalExpr>>,
    /// The `FILTER (WHERE …)` clause.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    /// The argument's type.
    pub input_type: DataType,
    /// The result's type.
    pub output_type: DataType,
    /// The call as written, for EXPLAIN.
    pub display: String,
    /// Encodes argument values as order-preserving bytes (min/max/distinct).
    values: Option<RowConverter>,
    domain: SumDomain,
}

impl AggCall {
    /// Prepares an aggregate call; fails for argument types it cannot sum.
    pub fn new(
        kind: AggKind,
        arg: Option<Arc<dyn PhysicalExpr>>,
        filter: Option<Arc<dyn PhysicalExpr>>,
        input_type: DataType,
        output_type: DataType,
        display: String,
    ) -> Result<Self> {
        let values = match kind {
            AggKind::Min | AggKind::Max | AggKind::CountDistinct => {
                Some(RowConverter::new(vec![SortField::new(input_type.clone())])?)
            }
            _ => None,
        };
        let domain = match kind {
            AggKind::Sum | AggKind::Avg => match &input_type {
                t if t.is_integer() => SumDomain::Exact,
                DataType::Decimal128(_, _) => SumDomain::Exact,
                DataType::Float16 | DataType::Float32 | DataType::Float64 => SumDomain::Float,
                DataType::Null => SumDomain::Exact,
                other => {
                    return Err(DataflowError::Unsupported(format!(
                        "{display} over values of type {other} in a materialized view"
                    )))
                }
            },
            _ => SumDomain::Exact,
        };
        Ok(Self {
            kind,
            arg,
            filter,
            input_type,
            output_type,
            display,
            values,
            domain,
        })
    }

    /// The same call again (for another worker's copy of the operator;
    /// its value encoder is not `Clone`).
    pub fn try_clone(&self) -> Result<Self> {
        Self::new(
            self.kind,
            self.arg.clone(),
            self.filter.clone(),
            self.input_type.clone(),
            self.output_type.clone(),
            self.display.clone(),
        )
    }

    fn empty(&self, append_only: bool) -> Acc {
        match self.kind {
            AggKind::Count => Acc::Count(0),
            AggKind::Sum | AggKind::Avg => match self.domain {
                SumDomain::Exact => Acc::SumExact { sum: 0, n: 0 },
                SumDomain::Float => Acc::SumFloat { sum: 0.0, n: 0 },
            },
            AggKind::Min | AggKind::Max if append_only => Acc::Extreme(None),
            AggKind::Min | AggKind::Max | AggKind::CountDistinct => Acc::Values(BTreeMap::new()),
        }
    }

    /// The aggregate's current result for `acc`.
    fn output(&self, acc: &Acc) -> Result<ScalarValue> {
        let null = || ScalarValue::try_from(&self.output_type).map_err(DataflowError::from);
        let value = match (self.kind, acc) {
            (AggKind::Count, Acc::Count(n)) => ScalarValue::Int64(Some(*n)),
            (AggKind::CountDistinct, Acc::Values(v)) => ScalarValue::Int64(Some(v.len() as i64)),
            (AggKind::Sum, Acc::SumExact { n: 0, .. } | Acc::SumFloat { n: 0, .. }) => null()?,
            (AggKind::Avg, Acc::SumExact { n: 0, .. } | Acc::SumFloat { n: 0, .. }) => null()?,
            (AggKind::Sum, Acc::SumExact { sum, .. }) => match &self.input_type {
                DataType::Decimal128(_, s) => ScalarValue::Decimal128(Some(*sum), 38, *s),
                _ => ScalarValue::Int64(Some(i64::try_from(*sum).map_err(|_| {
                    DataflowError::OutOfRange(format!(
                        "{} is out of range for bigint",
                        self.display
                    ))
                })?)),
            },
            (AggKind::Sum, Acc::SumFloat { sum, .. }) => ScalarValue::Float64(Some(*sum)),
            (AggKind::Avg, Acc::SumExact { sum, n }) => match (&self.input_type, &self.output_type)
            {
                (DataType::Decimal128(_, s_in), DataType::Decimal128(_, s_out)) => {
                    let shift = (*s_out as i32 - *s_in as i32).max(0) as u32;
                    let scaled = sum.checked_mul(10i128.pow(shift)).ok_or_else(|| {
                        DataflowError::OutOfRange(format!("{} overflows", self.display))
                    })?;
                    let n = *n as i128;
                    let q = scaled / n;
                    let r = scaled % n;
                    let rounded = if 2 * r.abs() >= n.abs() {
                        q + scaled.signum() * n.signum()
                    } else {
                        q
                    };
                    ScalarValue::Decimal128(Some(rounded), 38, *s_out)
                }
                (DataType::Decimal128(_, s), _) => {
                    ScalarValue::Float64(Some(*sum as f64 / 10f64.powi(*s as i32) / *n as f64))
                }
                _ => ScalarValue::Float64(Some(*sum as f64 / *n as f64)),
            },
            (AggKind::Avg, Acc::SumFloat { sum, n }) => ScalarValue::Float64(Some(sum / *n as f64)),
            (AggKind::Min, Acc::Values(v)) => self.decode(v.keys().next())?,
            (AggKind::Max, Acc::Values(v)) => self.decode(v.keys().next_back())?,
            (AggKind::Min | AggKind::Max, Acc::Extreme(v)) => self.decode(v.as_ref())?,
            (kind, acc) => {
                return Err(DataflowError::Internal(format!(
                    "accumulator {acc:?} does not belong to {kind:?}"
                )))
            }
        };
        if value.is_null() {
            return Ok(value);
        }
        if value.data_type() == self.output_type {
            Ok(value)
        } else {
            Ok(value.cast_to(&self.output_type)?)
        }
    }

    fn decode(&self, bytes: Option<&Vec<u8>>) -> Result<ScalarValue> {
        let (Some(bytes), Some(conv)) = (bytes, &self.values) else {
            return Ok(ScalarValue::try_from(&self.input_type)?);
        };
        let parser = conv.parser();
        let row = parser.parse(bytes);
        let arrays = conv.convert_rows([row])?;
        Ok(ScalarValue::try_from_array(&arrays[0], 0)?)
    }
}

/// The persisted state of one aggregate call for one group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Acc {
    Count(i64),
    SumExact {
        sum: i128,
        n: i64,
    },
    SumFloat {
        sum: f64,
        n: i64,
    },
    /// Multiset of encoded values (retractable min/max, count distinct).
    /// Not stored with the group: each value is its own state record, so
    /// that a change costs the values it touches, not the group's history.
    Values(#[serde(skip)] BTreeMap<Vec<u8>, i64>),
    /// The extreme so far, for min/max over inputs that never retract.
    Extreme(Option<Vec<u8>>),
}

/// The persisted state of one group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct GroupState {
    /// Sum of the weights of the group's input rows: the group exists while
    /// this is positive.
    rows: i64,
    accs: Vec<Acc>,
    /// When the group is final (see [`Closing`]); derived from the key, so
    /// not stored.
    #[serde(skip)]
    close_at: Option<i64>,
}

impl GroupState {
    /// The group without its value multisets: what an undo entry keeps.
    fn without_values(&self) -> GroupState {
        GroupState {
            rows: self.rows,
            close_at: self.close_at,
            accs: self
                .accs
                .iter()
                .map(|a| match a {
                    Acc::Values(_) => Acc::Values(BTreeMap::new()),
                    other => other.clone(),
                })
                .collect(),
        }
    }

    /// Moves the value multisets of `from` into `self`.
    fn take_values(&mut self, from: &mut GroupState) {
        for (to, from) in self.accs.iter_mut().zip(from.accs.iter_mut()) {
            if let (Acc::Values(to), Acc::Values(from)) = (to, from) {
                std::mem::swap(to, from);
            }
        }
    }
}

/// Operator ids with this bit set key the value records of an operator.
pub const VALUES_BIT: u32 = 0x8000_0000;

/// The state key of one value of aggregate call `call` in group `group`.
fn value_key(group: &[u8], call: usize, value: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(6 + group.len() + value.len());
    k.extend_from_slice(&(group.len() as u32).to_be_bytes());
    k.extend_from_slice(group);
    k.extend_from_slice(&(call as u16).to_be_bytes());
    k.extend_from_slice(value);
    k
}

fn split_value_key(k: &[u8]) -> Option<(&[u8], usize, &[u8])> {
    let len = u32::from_be_bytes(k.get(..4)?.try_into().ok()?) as usize;
    let group = k.get(4..4 + len)?;
    let call = u16::from_be_bytes(k.get(4 + len..6 + len)?.try_into().ok()?) as usize;
    Some((group, call, k.get(6 + len..)?))
}

/// A change to one value multiset, kept to undo it and to persist it.
#[derive(Debug)]
struct ValueChange {
    group: Vec<u8>,
    call: usize,
    value: Vec<u8>,
    weight: i64,
}

/// When the groups of an aggregate are final: its group column `column`
/// derives from event time, and a group whose value there is `v` can no
/// longer change once the watermark reaches `v + after_ns` (see
/// [`crate::Closing`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupClosing {
    /// Index of the group expression.
    pub column: usize,
    /// The relation whose watermark closes groups.
    pub relation: String,
    /// Distance from the column's value to the watermark that closes it.
    pub after_ns: i64,
}

/// The arguments of one aggregate call, evaluated over an input batch.
struct Evaluated {
    values: Option<ArrayRef>,
    encoded: Option<arrow::row::Rows>,
    filter: Option<BooleanArray>,
}

/// A group a batch touches, out of the operator's map while the batch is
/// absorbed.
struct Touched<'k> {
    /// Its key, borrowed from the batch's encoded rows.
    key: &'k [u8],
    /// Its key as the map holds it (taken back out, or new).
    owned: Vec<u8>,
    /// Its output before the batch, if it existed (and updates are
    /// emitted).
    old: Option<Vec<ScalarValue>>,
    state: GroupState,
}

/// The incremental `GROUP BY` operator.
#[derive(Debug)]
pub struct AggregateOperator {
    /// Operator id, unique within the view: the key space of its state.
    pub id: u32,
    group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    /// Group expressions as written, for EXPLAIN.
    pub group_display: Vec<String>,
    /// The aggregate calls.
    pub calls: Vec<AggCall>,
    keys: RowConverter,
    schema: SchemaRef,
    /// True when the input never retracts, so min/max keep one value.
    pub append_only: bool,
    groups: FastMap<Vec<u8>, GroupState>,
    /// Pre-images (without value multisets) of the groups changed since the
    /// last commit or rollback.
    undo: FastMap<Vec<u8>, Option<GroupState>>,
    /// Value multiset changes since the last commit or rollback, in order.
    value_log: Vec<ValueChange>,
    /// Groups changed by committed epochs since the last checkpoint.
    changed_groups: ChangedKeys,
    /// Value records (see [`value_key`]) changed by committed epochs since
    /// the last checkpoint.
    changed_values: ChangedKeys,
    /// How groups close, when the group key holds a window or time bucket.
    pub closing: Option<GroupClosing>,
    /// `EMIT ON WINDOW CLOSE`: a group's row is emitted once, when it
    /// closes, instead of being updated on every change.
    pub emit_on_close: bool,
    /// How long after closing a group's row stays in the view (`WITH
    /// (retention = …)`); its state is kept that long, then the row is
    /// retracted. `None`: rows stay forever and state is freed at close.
    pub retention_ns: Option<i64>,
    /// Index entries popped since the last commit: a rollback puts them
    /// back (entries of groups that no longer exist are skipped anyway).
    popped_log: Vec<(i64, Vec<u8>)>,
    /// Open groups by closing time (may hold stale entries of groups that
    /// were removed; they are skipped).
    close_index: BTreeSet<(i64, Vec<u8>)>,
    /// The watermark groups have been closed up to.
    watermark: Option<i64>,
    /// Groups closed since the last commit or rollback, whole, and the
    /// watermark before: what a rollback reopens.
    closed_log: Vec<(Vec<u8>, GroupState)>,
    watermark_before: Option<Option<i64>>,
    /// Rows dropped because their group had already closed.
    late_rows: u64,
}

impl AggregateOperator {
    /// A `GROUP BY` over `group_exprs` (none: a global aggregate, which
    /// always has exactly one row) producing `schema`.
    pub fn new(
        id: u32,
        group_exprs: Vec<Arc<dyn PhysicalExpr>>,
        group_display: Vec<String>,
        group_types: Vec<DataType>,
        calls: Vec<AggCall>,
        schema: SchemaRef,
        append_only: bool,
    ) -> Result<Self> {
        let keys = RowConverter::new(group_types.into_iter().map(SortField::new).collect())?;
        Ok(Self {
            id,
            group_exprs,
            group_display,
            calls,
            keys,
            schema,
            append_only,
            groups: FastMap::default(),
            undo: FastMap::default(),
            changed_groups: ChangedKeys::default(),
            changed_values: ChangedKeys::default(),
            value_log: Vec::new(),
            closing: None,
            emit_on_close: false,
            retention_ns: None,
            popped_log: Vec::new(),
            close_index: BTreeSet::new(),
            watermark: None,
            closed_log: Vec::new(),
            watermark_before: None,
            late_rows: 0,
        })
    }

    /// The group expressions, evaluated over input rows.
    pub fn group_exprs(&self) -> &[Arc<dyn PhysicalExpr>] {
        &self.group_exprs
    }

    /// The group expressions evaluated over `batch`, one array each.
    fn group_arrays(&self, batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
        let n = batch.num_rows();
        Ok(self
            .group_exprs
            .iter()
            .map(|e| e.evaluate(batch).and_then(|v| v.into_array(n)))
            .collect::<std::result::Result<Vec<_>, _>>()?)
    }

    /// The watermark groups are closed up to.
    pub fn watermark(&self) -> Option<i64> {
        self.watermark
    }

    /// Sets the watermark groups were closed up to before a restart (call
    /// before loading state).
    pub fn restore_watermark(&mut self, wm: i64) {
        self.watermark = Some(wm);
    }

    /// Rows dropped since startup because their group had already closed.
    pub fn late_rows(&self) -> u64 {
        self.late_rows
    }

    /// Closing times of the group values in `column` (group column
    /// `closing.column`).
    fn close_times(&self, column: &ArrayRef, closing: &GroupClosing) -> Result<Int64Array> {
        let times = crate::time::timestamps_ns(column)?;
        Ok(times.unary(|t| t.saturating_add(closing.after_ns)))
    }

    /// The closing time of the group stored under `key`.
    fn close_time_of_key(&self, key: &[u8]) -> Result<Option<i64>> {
        let Some(closing) = &self.closing else {
            return Ok(None);
        };
        let parser = self.keys.parser();
        let columns = self.keys.convert_rows([parser.parse(key)])?;
        let times = self.close_times(&columns[closing.column], closing)?;
        Ok((!times.is_null(0)).then(|| times.value(0)))
    }

    /// Closes every group whose closing time the watermark `wm` reached:
    /// its state is freed (and, with [`Self::emit_on_close`], its final row
    /// emitted). Returns the output change.
    pub fn close(&mut self, wm: i64) -> Result<Delta> {
        if self.closing.is_none() || self.watermark.is_some_and(|w| w >= wm) {
            return Ok(Delta::empty(self.schema.clone()));
        }
        if self.watermark_before.is_none() {
            self.watermark_before = Some(self.watermark);
        }
        self.watermark = Some(wm);
        let mut out_keys = Vec::new();
        let mut out_values = Vec::new();
        let mut out_weights = Vec::new();
        let retention = self.retention_ns.filter(|r| *r > 0);
        while let Some((t, key)) = self.close_index.first().cloned() {
            if t > wm {
                break;
            }
            self.close_index.pop_first();
            self.popped_log.push((t, key.clone()));
            let Some(at) = self.groups.get(&key).and_then(|g| g.close_at) else {
                continue;
            };
            let expiry = retention.map(|r| at.saturating_add(r));
            let (closing, expiring) = match expiry {
                None => (t == at, t == at),
                Some(e) => (t == at, t == e),
            };
            if closing {
                if let Some(state) = self.groups.get(&key) {
                    if self.emit_on_close && state.rows > 0 {
                        out_values.push(self.outputs(state)?);
                        out_keys.push(key.clone());
                        out_weights.push(1);
                    }
                }
            }
            if let (true, Some(e)) = (closing, expiry) {
                // The row stays for the retention period, then goes.
                self.close_index.insert((e, key.clone()));
                continue;
            }
            if !expiring {
                continue;
            }
            let Some(state) = self.groups.remove(&key) else {
                continue;
            };
            self.undo
                .entry(key.clone())
                .or_insert_with(|| Some(state.without_values()));
            if retention.is_some() && state.rows > 0 {
                out_values.push(self.outputs(&state)?);
                out_keys.push(key.clone());
                out_weights.push(-1);
            }
            self.closed_log.push((key, state));
        }
        self.build_output(out_keys, out_values, out_weights)
    }

    /// The output schema: group columns, then one column per call.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn is_global(&self) -> bool {
        self.group_exprs.is_empty()
    }

    fn empty_group(&self) -> GroupState {
        GroupState {
            rows: 0,
            accs: self
                .calls
                .iter()
                .map(|c| c.empty(self.append_only))
                .collect(),
            close_at: None,
        }
    }

    /// Restores one value of a group's multiset from storage (stored under
    /// `id | VALUES_BIT`, after the group records).
    pub fn load_value(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let corrupt = || DataflowError::Internal("corrupt aggregate value state".into());
        let (group, call, v) = split_value_key(key).ok_or_else(corrupt)?;
        let count = i64::from_be_bytes(value.try_into().map_err(|_| corrupt())?);
        match self
            .groups
            .get_mut(group)
            .and_then(|g| g.accs.get_mut(call))
        {
            Some(Acc::Values(map)) => {
                map.insert(v.to_vec(), count);
                Ok(())
            }
            _ => Err(corrupt()),
        }
    }

    /// Restores one group's state from storage.
    pub fn load_state(&mut self, key: Vec<u8>, value: &[u8]) -> Result<()> {
        let mut state: GroupState = bincode::deserialize(value)
            .map_err(|e| DataflowError::Internal(format!("corrupt aggregate state: {e}")))?;
        state.close_at = self.close_time_of_key(&key)?;
        if let Some(at) = state.close_at {
            // A group kept for its retention period is past closing.
            let closed = self.watermark.is_some_and(|w| at <= w);
            match self.retention_ns.filter(|r| *r > 0) {
                Some(r) if closed => self
                    .close_index
                    .insert((at.saturating_add(r), key.to_vec())),
                _ => self.close_index.insert((at, key.to_vec())),
            };
        }
        if state.accs.len() != self.calls.len() {
            return Err(DataflowError::Internal(
                "stored aggregate state does not match the view definition".into(),
            ));
        }
        self.groups.insert(key, state);
        Ok(())
    }

    /// Number of groups held.
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// Absorbs `delta` and returns the change of the operator's output.
    pub fn push(&mut self, delta: &Delta) -> Result<Delta> {
        let batch = &delta.batch;
        let n = batch.num_rows();
        let group_arrays = self.group_arrays(batch)?;
        // A global aggregate has one group, keyed by the empty byte string.
        let key_rows = if group_arrays.is_empty() {
            None
        } else {
            Some(self.keys.convert_columns(&group_arrays)?)
        };
        let close_times = match &self.closing {
            Some(c) => Some(self.close_times(&group_arrays[c.column], c)?),
            None => None,
        };
        let mut evaluated = Vec::with_capacity(self.calls.len());
        for call in &self.calls {
            let values = match &call.arg {
                Some(e) => Some(e.evaluate(batch)?.into_array(n)?),
                None => None,
            };
            let encoded = match (&call.values, &values) {
                (Some(conv), Some(v)) => Some(conv.convert_columns(std::slice::from_ref(v))?),
                _ => None,
            };
            let filter = match &call.filter {
                Some(f) => {
                    let mask = f.evaluate(batch)?.into_array(n)?;
                    Some(mask.as_boolean_opt().cloned().ok_or_else(|| {
                        DataflowError::Internal("FILTER clause is not boolean".into())
                    })?)
                }
                None => None,
            };
            evaluated.push(Evaluated {
                values,
                encoded,
                filter,
            });
        }

        // The groups this change touches, in first-touch order, taken out
        // of the map while the batch is absorbed: each row then costs one
        // lookup in a map of the batch's groups (keys borrowed from the
        // batch's encoded rows) instead of four in the map of every group.
        let mut touched: Vec<Touched<'_>> = Vec::new();
        let absorbed = self.absorb(
            delta,
            key_rows.as_ref(),
            close_times.as_ref(),
            &evaluated,
            &mut touched,
        );
        let global = self.is_global();
        // A global aggregate exists from the start: emit its first row even
        // when nothing was touched (creation over an empty relation).
        if absorbed.is_ok() && global && n == 0 && !self.groups.contains_key(&[][..]) {
            self.undo.entry(vec![]).or_insert(None);
            touched.push(Touched {
                key: &[],
                owned: Vec::new(),
                old: None,
                state: self.empty_group(),
            });
        }

        // Every touched group goes back into the map, on failure too (a
        // rollback then rewinds it from its undo entry), unless it has no
        // rows left.
        let mut failed = absorbed.err();
        let mut out_keys: Vec<&[u8]> = Vec::new();
        let mut out_values: Vec<Vec<ScalarValue>> = Vec::new();
        let mut out_weights: Vec<i64> = Vec::new();
        for t in touched {
            let state = t.state;
            if failed.is_none() && state.rows < 0 {
                failed = Some(DataflowError::Internal(format!(
                    "group of aggregate {} has a negative row count",
                    self.id
                )));
            }
            let keep = state.rows > 0 || global;
            if failed.is_none() {
                // Computed under EMIT ON WINDOW CLOSE too: a result out of
                // range fails this change, not the one that closes it.
                let new = if keep {
                    Some(self.outputs(&state))
                } else {
                    None
                };
                match new.transpose() {
                    Err(e) => failed = Some(e),
                    Ok(new) if !self.emit_on_close && new != t.old => {
                        if let Some(old) = t.old {
                            out_keys.push(t.key);
                            out_values.push(old);
                            out_weights.push(-1);
                        }
                        if let Some(new) = new {
                            out_keys.push(t.key);
                            out_values.push(new);
                            out_weights.push(1);
                        }
                    }
                    Ok(_) => {}
                }
            }
            if keep || failed.is_some() {
                self.groups.insert(t.owned, state);
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        self.build_output(out_keys, out_values, out_weights)
    }

    /// Applies every row of `delta` to its group, taking each group out
    /// of the map into `touched` on its first row (with its output before
    /// the change, and its undo entry if it has none yet).
    fn absorb<'k>(
        &mut self,
        delta: &Delta,
        key_rows: Option<&'k arrow::row::Rows>,
        close_times: Option<&Int64Array>,
        evaluated: &[Evaluated],
        touched: &mut Vec<Touched<'k>>,
    ) -> Result<()> {
        let mut slots: FastMap<&'k [u8], usize> = FastMap::default();
        for i in 0..delta.len() {
            let w = delta.weights.value(i);
            let key: &'k [u8] = match key_rows {
                Some(rows) => rows.row(i).data(),
                None => &[],
            };
            let close_at = close_times.and_then(|t| (!t.is_null(i)).then(|| t.value(i)));
            if let (Some(at), Some(wm)) = (close_at, self.watermark) {
                if at <= wm {
                    // The group closed already: its result is final.
                    self.late_rows += 1;
                    continue;
                }
            }
            let slot = match slots.entry(key) {
                std::collections::hash_map::Entry::Occupied(e) => *e.get(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let (owned, state, existed) = match self.groups.remove_entry(key) {
                        Some((owned, state)) => {
                            if !self.undo.contains_key(key) {
                                self.undo.insert(key.to_vec(), Some(state.without_values()));
                            }
                            (owned, state, true)
                        }
                        None => {
                            if !self.undo.contains_key(key) {
                                self.undo.insert(key.to_vec(), None);
                            }
                            if let Some(at) = close_at {
                                self.close_index.insert((at, key.to_vec()));
                            }
                            let mut empty = self.empty_group();
                            empty.close_at = close_at;
                            (key.to_vec(), empty, false)
                        }
                    };
                    // Into `touched` before anything can fail, so that the
                    // group goes back into the map whatever happens.
                    touched.push(Touched {
                        key,
                        owned,
                        old: None,
                        state,
                    });
                    let slot = touched.len() - 1;
                    // Under EMIT ON WINDOW CLOSE no update is emitted.
                    if existed && !self.emit_on_close {
                        touched[slot].old = Some(self.outputs(&touched[slot].state)?);
                    }
                    *e.insert(slot)
                }
            };
            let state = &mut touched[slot].state;
            state.rows += w;
            for (j, call) in self.calls.iter().enumerate() {
                let ev = &evaluated[j];
                if let Some(f) = &ev.filter {
                    if !f.is_valid(i) || !f.value(i) {
                        continue;
                    }
                }
                if let Some(value) = update(call, &mut state.accs[j], ev, i, w)? {
                    self.value_log.push(ValueChange {
                        group: key.to_vec(),
                        call: j,
                        value,
                        weight: w,
                    });
                }
            }
        }
        Ok(())
    }

    fn outputs(&self, state: &GroupState) -> Result<Vec<ScalarValue>> {
        self.calls
            .iter()
            .zip(&state.accs)
            .map(|(c, a)| c.output(a))
            .collect()
    }

    fn build_output<K: AsRef<[u8]>>(
        &self,
        keys: Vec<K>,
        values: Vec<Vec<ScalarValue>>,
        weights: Vec<i64>,
    ) -> Result<Delta> {
        let n = weights.len();
        if n == 0 {
            return Ok(Delta::empty(self.schema.clone()));
        }
        let parser = self.keys.parser();
        let mut columns: Vec<ArrayRef> = if self.group_exprs.is_empty() {
            vec![]
        } else {
            self.keys
                .convert_rows(keys.iter().map(|k| parser.parse(k.as_ref())))?
        };
        for (j, call) in self.calls.iter().enumerate() {
            let col = ScalarValue::iter_to_array(values.iter().map(|v| v[j].clone()))?;
            let col = if col.data_type() == &call.output_type {
                col
            } else {
                cast(&col, &call.output_type)?
            };
            columns.push(col);
        }
        let mut fixed = Vec::with_capacity(columns.len());
        for (c, f) in columns.into_iter().zip(self.schema.fields()) {
            if c.data_type() == f.data_type() {
                fixed.push(c);
            } else {
                fixed.push(cast(&c, f.data_type())?);
            }
        }
        let batch = RecordBatch::try_new_with_options(
            self.schema.clone(),
            fixed,
            &arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(n)),
        )?;
        Ok(Delta {
            batch,
            weights: Int64Array::from(weights),
        })
    }

    /// Hands `persist` the state records changed since the last
    /// checkpoint (with `full`: every group and every value of its
    /// multisets), and starts counting changes afresh.
    pub fn checkpoint(&mut self, full: bool, persist: &mut crate::StateSink<'_>) -> Result<()> {
        let groups = self.changed_groups.take();
        let values = self.changed_values.take();
        if full {
            return self.snapshot(persist);
        }
        for key in &groups {
            match self.groups.get(key) {
                Some(state) => persist(self.id, key, Some(encode_group(state)?)),
                None => persist(self.id, key, None),
            }
        }
        for key in &values {
            let count = split_value_key(key).and_then(|(group, call, value)| {
                match self.groups.get(group).and_then(|g| g.accs.get(call)) {
                    Some(Acc::Values(map)) => map.get(value).copied(),
                    _ => None,
                }
            });
            let count = count.filter(|n| *n != 0);
            persist(
                self.id | VALUES_BIT,
                key,
                count.map(|n| n.to_be_bytes().to_vec()),
            );
        }
        Ok(())
    }

    /// Hands every group and every value of its multisets to `persist`:
    /// the operator's whole state, for a full checkpoint image.
    fn snapshot(&self, persist: &mut crate::StateSink<'_>) -> Result<()> {
        for (key, state) in &self.groups {
            persist(self.id, key, Some(encode_group(state)?));
            for (call, acc) in state.accs.iter().enumerate() {
                if let Acc::Values(map) = acc {
                    for (v, count) in map {
                        let k = value_key(key, call, v.as_slice());
                        persist(self.id | VALUES_BIT, &k, Some(count.to_be_bytes().to_vec()));
                    }
                }
            }
        }
        Ok(())
    }

    /// The pending changes are durable: forget their pre-images, and note
    /// what they changed for the next checkpoint.
    pub fn committed(&mut self) {
        self.changed_groups
            .extend(self.undo.drain().map(|(k, _)| k));
        for c in self.value_log.drain(..) {
            self.changed_values
                .insert(value_key(&c.group, c.call, &c.value));
        }
        // A closed group's values are gone with it.
        for (group, state) in self.closed_log.drain(..) {
            for (call, acc) in state.accs.iter().enumerate() {
                if let Acc::Values(map) = acc {
                    for v in map.keys() {
                        self.changed_values.insert(value_key(&group, call, v));
                    }
                }
            }
        }
        self.popped_log.clear();
        self.watermark_before = None;
    }

    /// Restores the groups changed since the last commit.
    pub fn rollback(&mut self) {
        // Reopen the groups closed since the commit, values and all; the
        // undo entries below then rewind them like any touched group.
        for (key, state) in self.closed_log.drain(..) {
            if let Some(at) = state.close_at {
                self.close_index.insert((at, key.clone()));
            }
            self.groups.insert(key, state);
        }
        if let Some(w) = self.watermark_before.take() {
            self.watermark = w;
        }
        self.close_index.extend(self.popped_log.drain(..));
        let mut vanished = Vec::new();
        for (key, pre) in self.undo.drain() {
            let mut current = self.groups.remove(&key);
            let mut restored = match pre {
                Some(state) => state,
                None => {
                    vanished.push(key.clone());
                    GroupState {
                        rows: 0,
                        accs: self
                            .calls
                            .iter()
                            .map(|c| c.empty(self.append_only))
                            .collect(),
                        close_at: None,
                    }
                }
            };
            if let Some(current) = current.as_mut() {
                restored.take_values(current);
            }
            if let Some(at) = restored.close_at {
                self.close_index.insert((at, key.clone()));
            }
            self.groups.insert(key, restored);
        }
        for c in self.value_log.drain(..).rev() {
            if let Some(Acc::Values(map)) = self
                .groups
                .get_mut(&c.group)
                .and_then(|g| g.accs.get_mut(c.call))
            {
                let n = map.entry(c.value.clone()).or_insert(0);
                *n -= c.weight;
                if *n == 0 {
                    map.remove(&c.value);
                }
            }
        }
        for key in vanished {
            self.groups.remove(&key);
        }
    }
}

impl super::Operator for AggregateOperator {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn explain(&self) -> String {
        let calls: Vec<&str> = self.calls.iter().map(|c| c.display.as_str()).collect();
        let closing = match &self.closing {
            Some(c) => format!(
                ", closes when the watermark of {} passes {} + {}{}",
                c.relation,
                self.group_display
                    .get(c.column)
                    .map(String::as_str)
                    .unwrap_or("?"),
                crate::window::fmt_ns(c.after_ns),
                if self.emit_on_close {
                    ", emits on close"
                } else {
                    ""
                }
            ),
            None => String::new(),
        };
        format!(
            "Aggregate #{}: group=[{}] aggs=[{}] (state per group{}{closing})",
            self.id,
            self.group_display.join(", "),
            calls.join(", "),
            if self.append_only {
                ", append-only input"
            } else {
                ", retractable input"
            }
        )
    }

    /// Group columns close as the expressions they are computed from;
    /// aggregate results never do.
    fn closings(&self, inputs: &[Vec<Option<crate::Closing>>]) -> Vec<Option<crate::Closing>> {
        let inner = inputs.first().cloned().unwrap_or_default();
        let mut out: Vec<_> = self
            .group_exprs
            .iter()
            .map(|e| crate::closing::expr_closing(e, &inner))
            .collect();
        out.extend(self.calls.iter().map(|_| None));
        out
    }

    /// Under `EMIT ON WINDOW CLOSE` a group's row is emitted once, final,
    /// when it closes (unless retention takes it back later).
    fn append_only(&self, _inputs: &[bool]) -> bool {
        self.emit_on_close && self.retention_ns.is_none()
    }

    fn on_change(&mut self, _input: usize, delta: Delta) -> Result<Option<Delta>> {
        Ok(Some(self.push(&delta)?))
    }

    fn on_watermarks(&mut self, watermarks: &crate::Watermarks) -> Result<Option<Delta>> {
        let wm = self
            .closing
            .as_ref()
            .and_then(|c| watermarks.get(&c.relation))
            .copied();
        match wm {
            Some(wm) => Ok(Some(self.close(wm)?)),
            None => Ok(None),
        }
    }

    fn stateful(&self) -> Option<&dyn super::Stateful> {
        Some(self)
    }

    fn stateful_mut(&mut self) -> Option<&mut dyn super::Stateful> {
        Some(self)
    }
}

/// Groups are independent, so the operator can be split by group key
/// ([`super::shards`]); a value record belongs to its group.
impl super::shards::Keyed for AggregateOperator {
    fn row_keys(
        &self,
        delta: &Delta,
        hash: &dyn Fn(&[u8]) -> u64,
        out: &mut Vec<u64>,
    ) -> Result<()> {
        let n = delta.len();
        let group_arrays = self.group_arrays(&delta.batch)?;
        if group_arrays.is_empty() {
            out.extend(std::iter::repeat_n(hash(&[]), n));
            return Ok(());
        }
        let rows = self.keys.convert_columns(&group_arrays)?;
        out.extend(rows.iter().map(|r| hash(r.data())));
        Ok(())
    }

    fn record_key<'k>(&self, op: u32, key: &'k [u8]) -> Result<&'k [u8]> {
        if op & VALUES_BIT == 0 {
            return Ok(key);
        }
        split_value_key(key)
            .map(|(group, _, _)| group)
            .ok_or_else(|| DataflowError::Internal("corrupt aggregate value state".into()))
    }
}

impl super::Stateful for AggregateOperator {
    fn owns(&self, op: u32) -> bool {
        op & !VALUES_BIT == self.id
    }
    fn load(&mut self, op: u32, key: Vec<u8>, value: &[u8]) -> Result<()> {
        if op & VALUES_BIT != 0 {
            self.load_value(&key, value)
        } else {
            self.load_state(key, value)
        }
    }
    fn reserve(&mut self, op: u32, additional: usize) {
        if op & VALUES_BIT == 0 {
            self.groups.reserve(additional);
        }
    }
    fn closes_on(&self) -> Option<&str> {
        self.closing.as_ref().map(|c| c.relation.as_str())
    }
    fn watermark(&self) -> Option<i64> {
        AggregateOperator::watermark(self)
    }
    fn restore_watermark(&mut self, wm: i64) {
        AggregateOperator::restore_watermark(self, wm)
    }
    fn late_rows(&self) -> u64 {
        AggregateOperator::late_rows(self)
    }
    fn held(&self) -> usize {
        self.group_count()
    }
    fn checkpoint(&mut self, full: bool, persist: &mut crate::StateSink<'_>) -> Result<()> {
        AggregateOperator::checkpoint(self, full, persist)
    }
    fn committed(&mut self) {
        AggregateOperator::committed(self)
    }
    fn rollback(&mut self) {
        AggregateOperator::rollback(self)
    }
}

/// Applies row `i` with weight `w` to `acc`; returns the encoded value when
/// it changed a value multiset.
fn update(
    call: &AggCall,
    acc: &mut Acc,
    ev: &Evaluated,
    i: usize,
    w: i64,
) -> Result<Option<Vec<u8>>> {
    if let Some(v) = &ev.values {
        if v.is_null(i) {
            return Ok(None);
        }
    }
    match acc {
        Acc::Count(n) => *n += w,
        Acc::SumExact { sum, n } => {
            let v = ev.values.as_ref().ok_or_else(|| missing(call))?;
            let x = exact_value(v, i)?;
            *sum = sum
                .checked_add(x.checked_mul(w as i128).ok_or_else(|| overflow(call))?)
                .ok_or_else(|| overflow(call))?;
            *n += w;
        }
        Acc::SumFloat { sum, n } => {
            let v = ev.values.as_ref().ok_or_else(|| missing(call))?;
            *sum += float_value(v, i)? * w as f64;
            *n += w;
        }
        Acc::Values(map) => {
            let rows = ev.encoded.as_ref().ok_or_else(|| missing(call))?;
            let key = rows.row(i).as_ref().to_vec();
            let c = map.entry(key.clone()).or_insert(0);
            *c += w;
            if *c == 0 {
                map.remove(&key);
            }
            return Ok(Some(key));
        }
        Acc::Extreme(current) => {
            if w < 0 {
                return Err(DataflowError::Internal(format!(
                    "{} received a retraction from an append-only input",
                    call.display
                )));
            }
            let rows = ev.encoded.as_ref().ok_or_else(|| missing(call))?;
            let candidate = rows.row(i);
            let replace = match current {
                None => true,
                Some(cur) => match call.kind {
                    AggKind::Min => candidate.as_ref() < cur.as_slice(),
                    _ => candidate.as_ref() > cur.as_slice(),
                },
            };
            if replace {
                *current = Some(candidate.as_ref().to_vec());
            }
        }
    }
    Ok(None)
}

/// A group's state record.
fn encode_group(state: &GroupState) -> Result<Vec<u8>> {
    bincode::serialize(state).map_err(|e| DataflowError::Internal(format!("encoding state: {e}")))
}

fn missing(call: &AggCall) -> DataflowError {
    DataflowError::Internal(format!("{} has no argument values", call.display))
}

fn overflow(call: &AggCall) -> DataflowError {
    DataflowError::OutOfRange(format!("{} is out of range", call.display))
}

fn exact_value(v: &ArrayRef, i: usize) -> Result<i128> {
    use arrow::datatypes::*;
    Ok(match v.data_type() {
        DataType::Int8 => v.as_primitive::<Int8Type>().value(i) as i128,
        DataType::Int16 => v.as_primitive::<Int16Type>().value(i) as i128,
        DataType::Int32 => v.as_primitive::<Int32Type>().value(i) as i128,
        DataType::Int64 => v.as_primitive::<Int64Type>().value(i) as i128,
        DataType::UInt8 => v.as_primitive::<UInt8Type>().value(i) as i128,
        DataType::UInt16 => v.as_primitive::<UInt16Type>().value(i) as i128,
        DataType::UInt32 => v.as_primitive::<UInt32Type>().value(i) as i128,
        DataType::UInt64 => v.as_primitive::<UInt64Type>().value(i) as i128,
        DataType::Decimal128(_, _) => v.as_primitive::<Decimal128Type>().value(i),
        other => {
            return Err(DataflowError::Internal(format!(
                "exact sum over values of type {other}"
            )))
        }
    })
}

fn float_value(v: &ArrayRef, i: usize) -> Result<f64> {
    use arrow::datatypes::*;
    Ok(match v.data_type() {
        DataType::Float16 => v.as_primitive::<Float16Type>().value(i).to_f64(),
        DataType::Float32 => v.as_primitive::<Float32Type>().value(i) as f64,
        DataType::Float64 => v.as_primitive::<Float64Type>().value(i),
        other => {
            return Err(DataflowError::Internal(format!(
                "float sum over values of type {other}"
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, Schema};
    use datafusion::physical_expr::expressions::Column;

    fn delta(rows: &[(i64, i64, i64)]) -> Delta {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("v", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                )),
            ],
        )
        .unwrap();
        Delta {
            batch,
            weights: Int64Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>()),
        }
    }

    fn rows(d: &Delta) -> Vec<(i64, i64, i64)> {
        let k = d
            .batch
            .column(0)
            .as_primitive::<arrow::datatypes::Int64Type>();
        let c = d
            .batch
            .column(1)
            .as_primitive::<arrow::datatypes::Int64Type>();
        let mut out: Vec<_> = (0..d.len())
            .map(|i| (k.value(i), c.value(i), d.weights.value(i)))
            .collect();
        out.sort();
        out
    }

    /// `SELECT k, <kind>(v) AS <out> … GROUP BY k` over [`delta`]'s rows.
    fn keyed(kind: AggKind, display: &str, out: &str, append_only: bool) -> AggregateOperator {
        let call = AggCall::new(
            kind,
            Some(Arc::new(Column::new("v", 1))),
            None,
            DataType::Int64,
            DataType::Int64,
            display.into(),
        )
        .unwrap();
        let out = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new(out, DataType::Int64, true),
        ]));
        AggregateOperator::new(
            0,
            vec![Arc::new(Column::new("k", 0))],
            vec!["k".into()],
            vec![DataType::Int64],
            vec![call],
            out,
            append_only,
        )
        .unwrap()
    }

    fn distinct_counter() -> AggregateOperator {
        keyed(AggKind::CountDistinct, "count(DISTINCT v)", "c", false)
    }

    /// Every record a checkpoint hands out, sorted.
    fn records(
        op: &mut dyn crate::operator::Stateful,
        full: bool,
    ) -> Vec<(u32, Vec<u8>, Option<Vec<u8>>)> {
        let mut out = Vec::new();
        op.checkpoint(full, &mut |o, k, v| out.push((o, k.to_vec(), v)))
            .unwrap();
        out.sort();
        out
    }

    fn summer() -> AggregateOperator {
        keyed(AggKind::Sum, "sum(v)", "s", true)
    }

    #[test]
    fn a_batch_updates_each_group_once_with_many_rows_per_group() {
        let mut op = summer();
        let out = op
            .push(&delta(&[
                (1, 10, 1),
                (2, 5, 1),
                (1, 20, 1),
                (2, 6, 1),
                (1, 1, 1),
            ]))
            .unwrap();
        assert_eq!(rows(&out), vec![(1, 31, 1), (2, 11, 1)]);
        op.committed();
        let out = op.push(&delta(&[(2, 1, 1), (3, 7, 1), (2, 2, 1)])).unwrap();
        assert_eq!(rows(&out), vec![(2, 11, -1), (2, 14, 1), (3, 7, 1)]);
        // A group whose rows all go is retracted and forgotten.
        let out = op.push(&delta(&[(3, 7, -1)])).unwrap();
        assert_eq!(rows(&out), vec![(3, 7, -1)]);
        assert_eq!(op.group_count(), 2);
    }

    #[test]
    fn a_failed_batch_keeps_every_group_it_touched_for_the_rollback() {
        let mut op = summer();
        op.push(&delta(&[(1, 10, 1), (2, 5, 1)])).unwrap();
        op.committed();
        // Group 1 is fine, group 2's sum leaves bigint: the batch fails
        // after both were taken out of the map.
        let err = op.push(&delta(&[(1, 1, 1), (2, i64::MAX, 1)])).unwrap_err();
        assert!(matches!(err, DataflowError::OutOfRange(_)), "{err:?}");
        op.rollback();
        assert_eq!(op.group_count(), 2);
        let out = op.push(&delta(&[(1, 1, 1), (2, 1, 1)])).unwrap();
        assert_eq!(
            rows(&out),
            vec![(1, 10, -1), (1, 11, 1), (2, 5, -1), (2, 6, 1)]
        );
    }

    #[test]
    fn split_over_workers_gives_the_changes_and_state_of_one_operator() {
        use crate::operator::shards::{Shards, PARALLEL_ROWS};
        use crate::operator::{Operator, Stateful};
        let mut one = distinct_counter();
        let mut split = Shards::new(vec![
            distinct_counter(),
            distinct_counter(),
            distinct_counter(),
        ])
        .unwrap();
        // A fixed pseudo-random stream of inserts and retractions of rows
        // inserted before, in epochs big enough to run on threads.
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % m
        };
        let mut live: Vec<(i64, i64)> = Vec::new();
        let epoch = |live: &mut Vec<(i64, i64)>, next: &mut dyn FnMut(u64) -> u64| {
            let mut rows = Vec::new();
            for _ in 0..PARALLEL_ROWS + 500 {
                if !live.is_empty() && next(4) == 0 {
                    let (k, v) = live.swap_remove(next(live.len() as u64) as usize);
                    rows.push((k, v, -1));
                } else {
                    let (k, v) = (next(300) as i64, next(25) as i64);
                    live.push((k, v));
                    rows.push((k, v, 1));
                }
            }
            delta(&rows)
        };
        for round in 0..12 {
            let d = epoch(&mut live, &mut next);
            let a = one.on_change(0, d.clone()).unwrap().unwrap();
            let b = split.on_change(0, d).unwrap().unwrap();
            assert_eq!(rows(&a), rows(&b), "round {round}: the same output changes");
            Stateful::committed(&mut one);
            split.committed();
            if round % 4 == 3 {
                assert_eq!(
                    records(&mut one, false),
                    records(&mut split, false),
                    "round {round}: the same changed state records"
                );
            }
        }
        assert_eq!(Stateful::held(&one), split.held());
        // A failed epoch rolls back in every shard.
        let d = epoch(&mut live.clone(), &mut next);
        split.on_change(0, d).unwrap();
        split.rollback();
        // A restart with another number of workers routes each record to
        // the shard its key belongs to now.
        let mut again = Shards::new(vec![distinct_counter(), distinct_counter()]).unwrap();
        for (o, k, v) in records(&mut split, true) {
            again.load(o, k, &v.unwrap()).unwrap();
        }
        assert_eq!(records(&mut one, true), records(&mut again, true));
        let d = epoch(&mut live, &mut next);
        let a = one.on_change(0, d.clone()).unwrap().unwrap();
        let b = again.on_change(0, d).unwrap().unwrap();
        assert_eq!(
            rows(&a),
            rows(&b),
            "after the restart, the same output changes"
        );
    }

    #[test]
    fn count_distinct_retracts_and_persists_values_one_by_one() {
        let mut op = distinct_counter();
        let out = op
            .push(&delta(&[(1, 10, 1), (1, 11, 1), (1, 11, 1)]))
            .unwrap();
        assert_eq!(rows(&out), vec![(1, 2, 1)]);
        // What storage holds: the latest record per key.
        let mut disk: std::collections::BTreeMap<(u32, Vec<u8>), Vec<u8>> = Default::default();
        let mut records = Vec::new();
        op.committed();
        op.checkpoint(false, &mut |o, k, v| records.push((o, k.to_vec(), v)))
            .unwrap();
        // One group record and one record per distinct value.
        assert_eq!(records.iter().filter(|r| r.0 == 0).count(), 1);
        assert_eq!(records.iter().filter(|r| r.0 == VALUES_BIT).count(), 2);
        for (o, k, v) in records {
            match v {
                Some(v) => disk.insert((o, k), v),
                None => disk.remove(&(o, k)),
            };
        }

        // A change that is rolled back leaves no trace.
        op.push(&delta(&[(1, 10, -1), (1, 12, 1), (2, 5, 1)]))
            .unwrap();
        op.rollback();
        assert_eq!(op.group_count(), 1);
        let out = op.push(&delta(&[(1, 11, -2)])).unwrap();
        assert_eq!(rows(&out), vec![(1, 1, 1), (1, 2, -1)]);

        // Restoring from the persisted records gives the same state.
        op.committed();
        let mut records = Vec::new();
        op.checkpoint(false, &mut |o, k, v| records.push((o, k.to_vec(), v)))
            .unwrap();
        for (o, k, v) in records {
            match v {
                Some(v) => disk.insert((o, k), v),
                None => disk.remove(&(o, k)),
            };
        }
        let mut restored = distinct_counter();
        for ((o, k), v) in disk {
            if o & VALUES_BIT != 0 {
                restored.load_value(&k, &v).unwrap();
            } else {
                restored.load_state(k, &v).unwrap();
            }
        }
        // 11 is gone: the group holds only 10.
        let out = restored.push(&delta(&[(1, 10, 1)])).unwrap();
        assert_eq!(rows(&out), Vec::<(i64, i64, i64)>::new());
        let out = restored.push(&delta(&[(1, 13, 1)])).unwrap();
        assert_eq!(rows(&out), vec![(1, 1, -1), (1, 2, 1)]);
    }
}
