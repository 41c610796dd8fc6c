//! Incremental dataflows: a materialized view's query as a tree of operators
//! that turn input changes into output changes.
//!
//! [`Dataflow::plan`] rewrites DataFusion's (analyzed, unoptimized) logical
//! plan node by node: scans become sources, filters and projections stateless
//! maps over changes, `TUMBLE`/`HOP` a stateless window assignment, `GROUP
//! BY` and `DISTINCT` an [`AggregateOperator`]. Anything else is refused with
//! [`PlanError::Unsupported`] naming the construct: a view is never silently
//! recomputed from scratch.

pub mod aggregate;
pub mod session;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Schema, SchemaRef};
use datafusion::catalog::default_table_source::source_as_provider;
use datafusion::common::tree_node::TreeNode;
use datafusion::common::DFSchema;
use datafusion::execution::SessionState;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::ExprSchemable;
use datafusion::logical_expr::{Distinct, Expr, LogicalPlan};
use datafusion::physical_expr::PhysicalExpr;

pub use aggregate::{AggCall, AggKind, AggregateOperator, GroupClosing};
pub use session::SessionOperator;

use crate::delta::Delta;
use crate::error::unsupported;
use crate::window::{
    assign_windows, RelationLookup, SessionRelation, WindowSpec, WindowedRelation,
};
use crate::{PlanError, Result};

/// Where operators report state changes: `(operator, key, new value or
/// None when removed)`.
pub type StateSink<'a> = dyn FnMut(u32, &[u8], Option<Vec<u8>>) + 'a;

/// The changes of one transaction, by relation name.
pub type Changes = HashMap<String, Delta>;

/// The watermarks of relations with event time, by relation name
/// (nanoseconds since the epoch): rows behind them are no longer accepted.
pub type Watermarks = HashMap<String, i64>;

/// What a view's definition says beyond its query.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ViewOptions {
    /// When window rows appear.
    pub emit: EmitMode,
    /// `WITH (retention = …)`: closed windows' rows leave the view this
    /// long after they closed.
    pub retention_ns: Option<i64>,
}

/// How a view's windows reach its rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum EmitMode {
    /// Every change updates the view at once; open windows show partial
    /// results (the default).
    #[default]
    OnUpdate,
    /// `EMIT ON WINDOW CLOSE`: a window's row appears once, final, when the
    /// watermark passes the window's end.
    OnWindowClose,
}

/// How a column relates to a relation's event time: rows whose value in
/// the column is `v` stop arriving once the relation's watermark reaches
/// `v + after_ns`. The event-time column itself has `after_ns = 1` (a row
/// at exactly the watermark is still on time), `window_end` 0,
/// `window_start` the window size, `date_trunc('minute', ts)` one minute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Closing {
    /// The relation whose watermark it follows.
    pub relation: String,
    /// See above.
    pub after_ns: i64,
}
/// One operator of a dataflow.
#[derive(Debug)]
pub enum Node {
    /// The changes of a table or view.
    Source {
        /// Relation name.
        relation: String,
        /// Its schema.
        schema: SchemaRef,
    },
    /// Stateless assignment of `window_start` / `window_end`.
    Window {
        input: Box<Node>,
        spec: WindowSpec,
        schema: SchemaRef,
    },
    /// Keeps the changes whose row satisfies the predicate.
    Filter {
        input: Box<Node>,
        predicate: Arc<dyn PhysicalExpr>,
        display: String,
    },
    /// Computes new columns from each changed row.
    Project {
        input: Box<Node>,
        exprs: Vec<Arc<dyn PhysicalExpr>>,
        display: Vec<String>,
        schema: SchemaRef,
    },
    /// Session assignment, which keeps the rows of open sessions.
    Session {
        input: Box<Node>,
        op: SessionOperator,
    },
    /// Incremental `GROUP BY`.
    Aggregate {
        input: Box<Node>,
        op: AggregateOperator,
    },
    /// `UNION ALL`: the changes of all inputs.
    Union {
        inputs: Vec<Node>,
        schema: SchemaRef,
    },
}

/// A materialized view's incremental plan.
#[derive(Debug)]
pub struct Dataflow {
    root: Node,
    schema: SchemaRef,
    inputs: BTreeSet<String>,
}

struct Builder<'a> {
    state: &'a SessionState,
    lookup: &'a dyn RelationLookup,
    next_op: u32,
    aggregates: u32,
    inputs: BTreeSet<String>,
    options: ViewOptions,
}

impl Dataflow {
    /// Builds the dataflow of `plan`, a view query's analyzed logical plan.
    pub fn plan(
        plan: &LogicalPlan,
        state: &SessionState,
        lookup: &dyn RelationLookup,
        options: ViewOptions,
    ) -> Result<Self> {
        let mut b = Builder {
            state,
            lookup,
            next_op: 0,
            aggregates: 0,
            inputs: BTreeSet::new(),
            options,
        };
        let root = b.build(plan)?;
        if options.retention_ns.is_some() && b.aggregates == 0 {
            return unsupported(
                "retention on a view without GROUP BY (it needs a GROUP BY on a window or time bucket of a column with a WATERMARK)",
            );
        }
        if options.emit == EmitMode::OnWindowClose && b.next_op == 0 {
            return unsupported(
                "EMIT ON WINDOW CLOSE on a view without GROUP BY (it needs a GROUP BY on a window or time bucket of a column with a WATERMARK)",
            );
        }
        let arrow_schema = plan.schema().as_arrow();
        // View columns are nullable: their values come from arbitrary expressions.
        let schema = Arc::new(Schema::new(
            arrow_schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        Ok(Self {
            root,
            schema,
            inputs: b.inputs,
        })
    }

    /// Renames the output columns (PostgreSQL's names for unaliased
    /// expressions, see [`crate::naming`]).
    pub fn rename_columns(&mut self, names: Option<Vec<Option<String>>>) {
        self.schema = crate::naming::rename(&self.schema, names);
    }

    /// The view's output schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Names of the relations the view reads.
    pub fn inputs(&self) -> &BTreeSet<String> {
        &self.inputs
    }

    /// Turns the changes of the view's inputs into the change of the view,
    /// then closes the windows the inputs' `watermarks` have passed. State
    /// changes stay pending until [`Dataflow::committed`] or
    /// [`Dataflow::rollback`].
    pub fn push(&mut self, changes: &Changes, watermarks: &Watermarks) -> Result<Option<Delta>> {
        match push(&mut self.root, changes, watermarks)? {
            Some(d) => Ok(Some(d.with_schema(self.schema.clone())?)),
            None => Ok(None),
        }
    }

    /// Sets the watermarks windows were closed up to before a restart:
    /// call before [`Dataflow::load_state`].
    pub fn restore_watermarks(&mut self, watermarks: &Watermarks) {
        let _ = visit_mut(&mut self.root, &mut |op| {
            if let Some(wm) = op.closes_on().and_then(|r| watermarks.get(r)) {
                op.restore_watermark(*wm);
            }
            Ok(())
        });
    }

    /// True when the view closes windows on the watermark of `relation`.
    pub fn closes_on(&self, relation: &str) -> bool {
        let mut found = false;
        visit(&self.root, &mut |op| {
            if op.closes_on() == Some(relation) {
                found = true;
            }
        });
        found
    }

    /// The lowest watermark the view's operators closed windows up to, and
    /// the rows they dropped because their window had closed.
    pub fn progress(&self) -> (Option<i64>, u64) {
        let mut wm: Option<i64> = None;
        let mut late = 0;
        visit(&self.root, &mut |op| {
            if op.closes_on().is_some() {
                if let Some(w) = op.watermark() {
                    wm = Some(wm.map_or(w, |m| m.min(w)));
                }
            }
            late += op.late_rows();
        });
        (wm, late)
    }

    /// Reports every pending state change to `persist` as
    /// `(operator, group key, new state or None when removed)`.
    pub fn pending(&mut self, persist: &mut crate::dataflow::StateSink<'_>) -> Result<()> {
        visit_mut(&mut self.root, &mut |op| op.pending(persist))
    }

    /// The pending state changes are durable.
    pub fn committed(&mut self) {
        let _ = visit_mut(&mut self.root, &mut |op| {
            op.committed();
            Ok(())
        });
    }

    /// Forgets every pending state change.
    pub fn rollback(&mut self) {
        let _ = visit_mut(&mut self.root, &mut |op| {
            op.rollback();
            Ok(())
        });
    }

    /// Restores state of operator `op` read back from storage.
    pub fn load_state(&mut self, op: u32, key: &[u8], value: &[u8]) -> Result<()> {
        let mut found = false;
        visit_mut(&mut self.root, &mut |s| {
            if s.owns(op) {
                found = true;
                s.load(op, key, value)?;
            }
            Ok(())
        })?;
        if found {
            Ok(())
        } else {
            Err(PlanError::Internal(format!(
                "stored state for operator {op}, which the view does not have"
            )))
        }
    }

    /// Total number of groups (and open sessions' rows) held by the view's
    /// operators.
    pub fn state_size(&self) -> usize {
        let mut size = 0;
        visit(&self.root, &mut |op| size += op.held());
        size
    }

    /// The dataflow as indented lines, root first, for `EXPLAIN`.
    pub fn explain(&self, view: &str) -> Vec<String> {
        let columns: Vec<&str> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        let mut out = vec![format!(
            "Materialize: {view} [{}] (stored by row, updated per change)",
            columns.join(", ")
        )];
        explain(&self.root, 1, &mut out);
        out
    }
}

fn explain(n: &Node, depth: usize, out: &mut Vec<String>) {
    let pad = "  ".repeat(depth);
    match n {
        Node::Source { relation, .. } => out.push(format!("{pad}Source: {relation} (changes)")),
        Node::Window { input, spec, .. } => {
            out.push(format!("{pad}WindowAssign: {spec} (stateless)"));
            explain(input, depth + 1, out);
        }
        Node::Filter { input, display, .. } => {
            out.push(format!("{pad}Filter: {display} (stateless)"));
            explain(input, depth + 1, out);
        }
        Node::Project { input, display, .. } => {
            out.push(format!("{pad}Project: {} (stateless)", display.join(", ")));
            explain(input, depth + 1, out);
        }
        Node::Session { input, op } => {
            let closing = match &op.closing {
                Some(r) => format!(
                    ", closes when the watermark of {r} passes window_end{}",
                    if op.emit_on_close {
                        ", emits on close"
                    } else {
                        ""
                    }
                ),
                None => String::new(),
            };
            out.push(format!(
                "{pad}SessionAssign #{}: {} (rows of open sessions kept{closing})",
                op.id, op.spec
            ));
            explain(input, depth + 1, out);
        }
        Node::Aggregate { input, op } => {
            let calls: Vec<&str> = op.calls.iter().map(|c| c.display.as_str()).collect();
            let closing = match &op.closing {
                Some(c) => format!(
                    ", closes when the watermark of {} passes {} + {}{}",
                    c.relation,
                    op.group_display
                        .get(c.column)
                        .map(String::as_str)
                        .unwrap_or("?"),
                    crate::window::fmt_ns(c.after_ns),
                    if op.emit_on_close {
                        ", emits on close"
                    } else {
                        ""
                    }
                ),
                None => String::new(),
            };
            out.push(format!(
                "{pad}Aggregate #{}: group=[{}] aggs=[{}] (state per group{}{closing})",
                op.id,
                op.group_display.join(", "),
                calls.join(", "),
                if op.append_only {
                    ", append-only input"
                } else {
                    ", retractable input"
                }
            ));
            explain(input, depth + 1, out);
        }
        Node::Union { inputs, .. } => {
            out.push(format!("{pad}Union (stateless)"));
            for i in inputs {
                explain(i, depth + 1, out);
            }
        }
    }
}

/// What the dataflow needs of an operator that keeps state.
trait Stateful {
    /// True when records stored under operator id `op` are this operator's.
    fn owns(&self, op: u32) -> bool;
    /// Restores a record stored under `op`.
    fn load(&mut self, op: u32, key: &[u8], value: &[u8]) -> Result<()>;
    /// The relation whose watermark closes its state.
    fn closes_on(&self) -> Option<&str>;
    fn watermark(&self) -> Option<i64>;
    fn restore_watermark(&mut self, wm: i64);
    fn late_rows(&self) -> u64;
    /// Groups or rows held.
    fn held(&self) -> usize;
    fn pending(&self, persist: &mut crate::dataflow::StateSink<'_>) -> Result<()>;
    fn committed(&mut self);
    fn rollback(&mut self);
}

impl Stateful for AggregateOperator {
    fn owns(&self, op: u32) -> bool {
        op & !aggregate::VALUES_BIT == self.id
    }
    fn load(&mut self, op: u32, key: &[u8], value: &[u8]) -> Result<()> {
        if op & aggregate::VALUES_BIT != 0 {
            self.load_value(key, value)
        } else {
            self.load_state(key, value)
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
    fn pending(&self, persist: &mut crate::dataflow::StateSink<'_>) -> Result<()> {
        AggregateOperator::pending(self, persist)
    }
    fn committed(&mut self) {
        AggregateOperator::committed(self)
    }
    fn rollback(&mut self) {
        AggregateOperator::rollback(self)
    }
}

impl Stateful for SessionOperator {
    fn owns(&self, op: u32) -> bool {
        op == self.id
    }
    fn load(&mut self, _op: u32, key: &[u8], value: &[u8]) -> Result<()> {
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
    fn pending(&self, persist: &mut crate::dataflow::StateSink<'_>) -> Result<()> {
        SessionOperator::pending(self, persist)
    }
    fn committed(&mut self) {
        SessionOperator::committed(self)
    }
    fn rollback(&mut self) {
        SessionOperator::rollback(self)
    }
}

/// The inputs of `n`.
fn children(n: &Node) -> Vec<&Node> {
    match n {
        Node::Source { .. } => vec![],
        Node::Window { input, .. }
        | Node::Filter { input, .. }
        | Node::Project { input, .. }
        | Node::Session { input, .. }
        | Node::Aggregate { input, .. } => vec![input],
        Node::Union { inputs, .. } => inputs.iter().collect(),
    }
}

/// Calls `f` on every stateful operator of `n`.
fn visit(n: &Node, f: &mut dyn FnMut(&dyn Stateful)) {
    match n {
        Node::Aggregate { op, .. } => f(op),
        Node::Session { op, .. } => f(op),
        _ => {}
    }
    for c in children(n) {
        visit(c, f);
    }
}

/// Calls `f` on every stateful operator of `n`, mutably.
fn visit_mut(n: &mut Node, f: &mut dyn FnMut(&mut dyn Stateful) -> Result<()>) -> Result<()> {
    match n {
        Node::Source { .. } => Ok(()),
        Node::Window { input, .. } | Node::Filter { input, .. } | Node::Project { input, .. } => {
            visit_mut(input, f)
        }
        Node::Aggregate { input, op } => {
            f(op)?;
            visit_mut(input, f)
        }
        Node::Session { input, op } => {
            f(op)?;
            visit_mut(input, f)
        }
        Node::Union { inputs, .. } => {
            for i in inputs {
                visit_mut(i, f)?;
            }
            Ok(())
        }
    }
}

/// How each output column of `n` relates to event time (see [`Closing`]).
fn closings(n: &Node, lookup: &dyn RelationLookup) -> Vec<Option<Closing>> {
    match n {
        Node::Source { relation, schema } => {
            let event = lookup.event_time(relation);
            (0..schema.fields().len())
                .map(|i| {
                    event.as_ref().filter(|e| e.index == i).map(|_| Closing {
                        relation: relation.clone(),
                        after_ns: 1,
                    })
                })
                .collect()
        }
        Node::Window { input, spec, .. } => {
            let mut out = closings(input, lookup);
            let time = out.get(spec.time_column).cloned().flatten();
            let time = time.filter(|c| c.after_ns == 1);
            out.push(time.clone().map(|c| Closing {
                relation: c.relation.clone(),
                after_ns: spec.size_ns,
            }));
            out.push(time.map(|c| Closing {
                relation: c.relation,
                after_ns: 0,
            }));
            out
        }
        Node::Session { input, op } => {
            let mut out = closings(input, lookup);
            out.push(None);
            out.push(op.closing.as_ref().map(|r| Closing {
                relation: r.clone(),
                after_ns: 0,
            }));
            out
        }
        Node::Filter { input, .. } => closings(input, lookup),
        Node::Project { input, exprs, .. } => {
            let inner = closings(input, lookup);
            exprs.iter().map(|e| expr_closing(e, &inner)).collect()
        }
        Node::Aggregate { input, op } => {
            let inner = closings(input, lookup);
            let mut out: Vec<Option<Closing>> = op
                .group_exprs()
                .iter()
                .map(|e| expr_closing(e, &inner))
                .collect();
            out.extend(op.calls.iter().map(|_| None));
            out
        }
        Node::Union { schema, .. } => vec![None; schema.fields().len()],
    }
}

/// How the value of `e` relates to event time, given its input columns'.
fn expr_closing(e: &Arc<dyn PhysicalExpr>, inputs: &[Option<Closing>]) -> Option<Closing> {
    use datafusion::physical_expr::expressions::{CastExpr, Column, Literal};
    use datafusion::physical_expr::ScalarFunctionExpr;
    if let Some(c) = e.downcast_ref::<Column>() {
        return inputs.get(c.index()).cloned().flatten();
    }
    if let Some(c) = e.downcast_ref::<CastExpr>() {
        // To nanoseconds keeps the instant (event time is at most that
        // precise); a coarser precision would truncate it.
        let exact = matches!(
            c.cast_type(),
            arrow::datatypes::DataType::Timestamp(arrow::datatypes::TimeUnit::Nanosecond, _)
        );
        return if exact {
            expr_closing(c.expr(), inputs)
        } else {
            None
        };
    }
    let f = e.downcast_ref::<ScalarFunctionExpr>()?;
    let args = f.args();
    let literal = |i: usize| {
        args.get(i)
            .and_then(|a| a.downcast_ref::<Literal>())
            .map(|l| l.value().clone())
    };
    let (time_arg, after_ns) = match f.name() {
        "date_trunc" => {
            let unit = literal(0)?;
            let unit = match &unit {
                datafusion::common::ScalarValue::Utf8(Some(u))
                | datafusion::common::ScalarValue::LargeUtf8(Some(u))
                | datafusion::common::ScalarValue::Utf8View(Some(u)) => u.to_ascii_lowercase(),
                _ => return None,
            };
            let ns = match unit.as_str() {
                "microsecond" | "microseconds" => 1_000,
                "millisecond" | "milliseconds" => 1_000_000,
                "second" | "seconds" => 1_000_000_000,
                "minute" | "minutes" => 60_000_000_000,
                "hour" | "hours" => 3_600_000_000_000,
                "day" | "days" => crate::event_time::DAY_NS,
                "week" | "weeks" => 7 * crate::event_time::DAY_NS,
                _ => return None,
            };
            (1, ns)
        }
        "date_bin" => {
            let stride = crate::event_time::fixed_interval_ns(&literal(0)?)?;
            (1, stride)
        }
        _ => return None,
    };
    let time = expr_closing(args.get(time_arg)?, inputs)?;
    (time.after_ns == 1 && after_ns > 0).then_some(Closing {
        relation: time.relation,
        after_ns,
    })
}

fn push(n: &mut Node, changes: &Changes, watermarks: &Watermarks) -> Result<Option<Delta>> {
    Ok(match n {
        Node::Source { relation, schema } => match changes.get(relation) {
            Some(d) => Some(d.clone().with_schema(schema.clone())?),
            None => None,
        },
        Node::Window {
            input,
            spec,
            schema,
        } => match push(input, changes, watermarks)? {
            Some(d) => {
                let (batch, weights) = assign_windows(&d.batch, Some(&d.weights), spec, schema)?;
                let weights =
                    weights.ok_or_else(|| PlanError::Internal("window weights".into()))?;
                Some(Delta { batch, weights })
            }
            None => None,
        },
        Node::Filter {
            input, predicate, ..
        } => match push(input, changes, watermarks)? {
            Some(d) => {
                let mask = predicate.evaluate(&d.batch)?.into_array(d.len())?;
                let mask = mask
                    .as_boolean_opt()
                    .ok_or_else(|| PlanError::Internal("filter predicate is not boolean".into()))?;
                // NULL counts as false, as in WHERE.
                let mask = if mask.null_count() > 0 {
                    arrow::compute::prep_null_mask_filter(mask)
                } else {
                    mask.clone()
                };
                Some(d.filter(&mask)?)
            }
            None => None,
        },
        Node::Project {
            input,
            exprs,
            schema,
            ..
        } => match push(input, changes, watermarks)? {
            Some(d) => {
                let n = d.len();
                let columns = exprs
                    .iter()
                    .map(|e| e.evaluate(&d.batch).and_then(|v| v.into_array(n)))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                let batch = arrow::record_batch::RecordBatch::try_new_with_options(
                    schema.clone(),
                    columns,
                    &arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(n)),
                )?;
                Some(Delta {
                    batch,
                    weights: d.weights,
                })
            }
            None => None,
        },
        Node::Aggregate { input, op } => {
            let updated = match push(input, changes, watermarks)? {
                Some(d) => Some(op.push(&d)?),
                None => None,
            };
            let wm = op
                .closing
                .as_ref()
                .and_then(|c| watermarks.get(&c.relation));
            let closed = match wm {
                Some(&wm) => Some(op.close(wm)?),
                None => None,
            };
            combine(op.schema(), updated, closed)?
        }
        Node::Session { input, op } => {
            let updated = match push(input, changes, watermarks)? {
                Some(d) => Some(op.push(&d)?),
                None => None,
            };
            let closed = match op.closing.as_ref().and_then(|r| watermarks.get(r)) {
                Some(&wm) => Some(op.close(wm)?),
                None => None,
            };
            combine(op.schema(), updated, closed)?
        }
        Node::Union { inputs, schema } => {
            let mut parts = Vec::new();
            for i in inputs.iter_mut() {
                if let Some(d) = push(i, changes, watermarks)? {
                    parts.push(d.with_schema(schema.clone())?);
                }
            }
            if parts.is_empty() {
                None
            } else {
                Some(Delta::concat(schema, &parts)?)
            }
        }
    })
}

/// An operator's output: the change its input caused, then what closing
/// windows emitted.
fn combine(
    schema: &SchemaRef,
    updated: Option<Delta>,
    closed: Option<Delta>,
) -> Result<Option<Delta>> {
    Ok(match (updated, closed.filter(|c| !c.is_empty())) {
        (Some(u), Some(c)) => Some(Delta::concat(schema, &[u, c])?),
        (u, None) => u,
        (None, c) => c,
    })
}

/// Arrow schema of a logical plan node, all columns nullable (changes may
/// carry NULLs wherever an expression can produce them).
fn node_schema(df: &DFSchema) -> SchemaRef {
    Arc::new(Schema::new(
        df.as_arrow()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ))
}

impl Builder<'_> {
    fn physical(&self, e: &Expr, schema: &DFSchema) -> Result<Arc<dyn PhysicalExpr>> {
        if let Some(what) = unsupported_expr(e) {
            return unsupported(format!("{what} in a materialized view"));
        }
        // DataFusion's physical planner expects simplified expressions
        // (e.g. COALESCE rewritten to CASE), as its optimizer leaves them.
        let context = datafusion::logical_expr::simplify::SimplifyContext::builder()
            .with_config_options(std::sync::Arc::new(
                self.state.config_options().as_ref().clone(),
            ))
            .with_schema(std::sync::Arc::new(schema.clone()))
            .build();
        let simplified = datafusion::optimizer::simplify_expressions::ExprSimplifier::new(context)
            .simplify(e.clone())?;
        Ok(self.state.create_physical_expr(simplified, schema)?)
    }

    fn build(&mut self, plan: &LogicalPlan) -> Result<Node> {
        match plan {
            LogicalPlan::TableScan(scan) => {
                let provider = source_as_provider(&scan.source)?;
                let node = if let Some(w) = provider.downcast_ref::<SessionRelation>() {
                    self.session(w)?
                } else if let Some(w) = provider.downcast_ref::<WindowedRelation>() {
                    self.inputs.insert(w.input_name.clone());
                    let input = self.source(&w.input_name)?;
                    Node::Window {
                        input: Box::new(input),
                        spec: w.spec.clone(),
                        schema: datafusion::datasource::TableProvider::schema(w),
                    }
                } else {
                    if let Some(schema) = scan.table_name.schema() {
                        if schema != "public" {
                            return unsupported(format!(
                                "reading \"{}\" in a materialized view (only tables and materialized views can be maintained incrementally)",
                                scan.table_name
                            ));
                        }
                    }
                    let name = scan.table_name.table().to_string();
                    if self.lookup.relation(&name).is_none() {
                        return unsupported(format!(
                            "reading \"{name}\" in a materialized view (only tables and materialized views can be maintained incrementally)"
                        ));
                    }
                    self.inputs.insert(name.clone());
                    self.source(&name)?
                };
                if !scan.filters.is_empty() || scan.fetch.is_some() {
                    return Err(PlanError::Internal(
                        "scan with pushed-down filters or limit in a view plan".into(),
                    ));
                }
                match &scan.projection {
                    None => Ok(node),
                    Some(indices) => {
                        let input_schema = node_schema_of(&node);
                        let exprs = indices
                            .iter()
                            .map(|&i| {
                                Ok(
                                    Arc::new(datafusion::physical_expr::expressions::Column::new(
                                        input_schema.field(i).name(),
                                        i,
                                    )) as Arc<dyn PhysicalExpr>,
                                )
                            })
                            .collect::<Result<Vec<_>>>()?;
                        let display = indices
                            .iter()
                            .map(|&i| input_schema.field(i).name().clone())
                            .collect();
                        Ok(Node::Project {
                            input: Box::new(node),
                            exprs,
                            display,
                            schema: node_schema(&scan.projected_schema),
                        })
                    }
                }
            }
            LogicalPlan::Projection(p) => {
                let input = self.build(&p.input)?;
                let exprs = p
                    .expr
                    .iter()
                    .map(|e| self.physical(e, p.input.schema()))
                    .collect::<Result<Vec<_>>>()?;
                Ok(Node::Project {
                    input: Box::new(input),
                    exprs,
                    display: p.expr.iter().map(|e| e.to_string()).collect(),
                    schema: node_schema(&p.schema),
                })
            }
            LogicalPlan::Filter(f) => {
                let input = self.build(&f.input)?;
                let predicate = self.physical(&f.predicate, f.input.schema())?;
                Ok(Node::Filter {
                    input: Box::new(input),
                    predicate,
                    display: f.predicate.to_string(),
                })
            }
            LogicalPlan::SubqueryAlias(a) => self.build(&a.input),
            LogicalPlan::Sort(s) if s.fetch.is_none() => self.build(&s.input),
            LogicalPlan::Aggregate(a) => {
                let input = self.build(&a.input)?;
                let append_only = is_append_only(&input, self.lookup);
                let in_schema = a.input.schema();
                let mut group_exprs = Vec::new();
                let mut group_types = Vec::new();
                for g in &a.group_expr {
                    if matches!(g, Expr::GroupingSet(_)) {
                        return unsupported(
                            "GROUPING SETS, CUBE and ROLLUP in a materialized view",
                        );
                    }
                    group_exprs.push(self.physical(g, in_schema)?);
                    group_types.push(g.get_type(in_schema)?);
                }
                let out_schema = node_schema(&a.schema);
                let mut calls = Vec::new();
                for (j, e) in a.aggr_expr.iter().enumerate() {
                    let output_type = out_schema.field(a.group_expr.len() + j).data_type().clone();
                    calls.push(self.agg_call(e, in_schema, output_type)?);
                }
                let id = self.next_op;
                self.next_op += 1;
                self.aggregates += 1;
                let mut op = AggregateOperator::new(
                    id,
                    group_exprs,
                    a.group_expr.iter().map(|g| g.to_string()).collect(),
                    group_types,
                    calls,
                    out_schema,
                    append_only,
                )?;
                self.set_closing(&mut op, &input)?;
                Ok(Node::Aggregate {
                    input: Box::new(input),
                    op,
                })
            }
            LogicalPlan::Distinct(Distinct::All(inner)) => {
                let input = self.build(inner)?;
                let append_only = is_append_only(&input, self.lookup);
                let schema = inner.schema();
                let mut group_exprs: Vec<Arc<dyn PhysicalExpr>> = Vec::new();
                let mut group_types = Vec::new();
                let mut display = Vec::new();
                for (i, f) in schema.fields().iter().enumerate() {
                    group_exprs.push(Arc::new(
                        datafusion::physical_expr::expressions::Column::new(f.name(), i),
                    ));
                    group_types.push(f.data_type().clone());
                    display.push(f.name().clone());
                }
                let id = self.next_op;
                self.next_op += 1;
                self.aggregates += 1;
                let mut op = AggregateOperator::new(
                    id,
                    group_exprs,
                    display,
                    group_types,
                    vec![],
                    node_schema(schema),
                    append_only,
                )?;
                self.set_closing(&mut op, &input)?;
                Ok(Node::Aggregate {
                    input: Box::new(input),
                    op,
                })
            }
            LogicalPlan::Union(u) => {
                let inputs = u
                    .inputs
                    .iter()
                    .map(|i| self.build(i))
                    .collect::<Result<Vec<_>>>()?;
                Ok(Node::Union {
                    inputs,
                    schema: node_schema(&u.schema),
                })
            }
            LogicalPlan::Join(_) => unsupported("JOIN in a materialized view"),
            LogicalPlan::Limit(_) => unsupported("LIMIT / OFFSET in a materialized view"),
            LogicalPlan::Sort(_) => unsupported("ORDER BY with LIMIT in a materialized view"),
            LogicalPlan::Window(_) => unsupported("window functions (OVER) in a materialized view"),
            LogicalPlan::Distinct(Distinct::On(_)) => {
                unsupported("DISTINCT ON in a materialized view")
            }
            LogicalPlan::Values(_) | LogicalPlan::EmptyRelation(_) => unsupported(
                "a materialized view that reads no table or view (it would never change)",
            ),
            LogicalPlan::RecursiveQuery(_) => unsupported("WITH RECURSIVE in a materialized view"),
            LogicalPlan::Unnest(_) => unsupported("UNNEST in a materialized view"),
            LogicalPlan::Subquery(_) => unsupported("subqueries in a materialized view"),
            other => unsupported(format!(
                "{} in a materialized view",
                other
                    .display()
                    .to_string()
                    .split(':')
                    .next()
                    .unwrap_or("this plan node")
            )),
        }
    }

    /// Lets `op` close its groups when a group column derives from event
    /// time, and applies the view's emit mode.
    fn set_closing(&self, op: &mut AggregateOperator, input: &Node) -> Result<()> {
        let inner = closings(input, self.lookup);
        op.closing = op.group_exprs().iter().enumerate().find_map(|(i, e)| {
            expr_closing(e, &inner).map(|c| GroupClosing {
                column: i,
                relation: c.relation,
                after_ns: c.after_ns,
            })
        });
        if self.options.retention_ns.is_some() {
            if op.closing.is_none() {
                return unsupported(format!("retention over {}", no_closing_group(op)));
            }
            op.retention_ns = self.options.retention_ns;
        }
        if self.options.emit == EmitMode::OnWindowClose {
            if op.closing.is_none() {
                return unsupported(format!(
                    "EMIT ON WINDOW CLOSE over {}",
                    no_closing_group(op)
                ));
            }
            op.emit_on_close = true;
        }
        Ok(())
    }

    /// The operator assigning `SESSION` windows.
    fn session(&mut self, w: &SessionRelation) -> Result<Node> {
        let input = self.source(&w.input_name)?;
        let input_schema = node_schema_of(&input);
        let id = self.next_op;
        self.next_op += 1;
        let mut op = SessionOperator::new(
            id,
            w.spec.clone(),
            input_schema
                .fields()
                .iter()
                .map(|f| f.data_type().clone())
                .collect(),
            datafusion::datasource::TableProvider::schema(w),
        )?;
        op.closing = closings(&input, self.lookup)
            .get(w.spec.time_column)
            .cloned()
            .flatten()
            .filter(|c| c.after_ns == 1)
            .map(|c| c.relation);
        if self.options.emit == EmitMode::OnWindowClose {
            if op.closing.is_none() {
                return unsupported(format!(
                    "EMIT ON WINDOW CLOSE over SESSION windows of \"{}\" without a WATERMARK on column \"{}\" (sessions would never close)",
                    w.input_name, w.spec.time_column_name
                ));
            }
            op.emit_on_close = true;
        }
        Ok(Node::Session {
            input: Box::new(input),
            op,
        })
    }

    fn source(&mut self, name: &str) -> Result<Node> {
        let provider = self.lookup.relation(name).ok_or_else(|| {
            PlanError::DataFusion(datafusion::error::DataFusionError::Plan(format!(
                "table '{name}' not found"
            )))
        })?;
        self.inputs.insert(name.to_string());
        Ok(Node::Source {
            relation: name.to_string(),
            schema: provider.schema(),
        })
    }

    fn agg_call(
        &self,
        e: &Expr,
        schema: &DFSchema,
        output_type: arrow::datatypes::DataType,
    ) -> Result<AggCall> {
        let display = e.schema_name().to_string();
        let inner = match e {
            Expr::Alias(a) => a.expr.as_ref(),
            other => other,
        };
        let Expr::AggregateFunction(AggregateFunction { func, params }) = inner else {
            return unsupported(format!("aggregate expression {display}"));
        };
        let name = func.name().to_ascii_lowercase();
        if !params.order_by.is_empty()
            && !matches!(name.as_str(), "min" | "max" | "count" | "sum" | "avg")
        {
            return unsupported(format!("ORDER BY inside {name}()"));
        }
        let kind = match (name.as_str(), params.distinct) {
            ("count", false) => AggKind::Count,
            ("count", true) => AggKind::CountDistinct,
            ("sum", false) => AggKind::Sum,
            ("avg" | "mean", false) => AggKind::Avg,
            ("min", _) => AggKind::Min,
            ("max", _) => AggKind::Max,
            (n, true) => {
                return unsupported(format!(
                    "{n}(DISTINCT …) in a materialized view (count(DISTINCT …) is supported)"
                ))
            }
            (n, false) => {
                return unsupported(format!(
                    "aggregate function {n}() in a materialized view (supported: count, sum, avg, min, max, count(DISTINCT))"
                ))
            }
        };
        if params.args.len() > 1 {
            return unsupported(format!(
                "{name}() with several arguments in a materialized view"
            ));
        }
        let (arg, input_type) = match params.args.first() {
            // count(*) is planned as count(literal): no argument to evaluate.
            Some(Expr::Literal(v, _)) if kind == AggKind::Count && !v.is_null() => {
                (None, arrow::datatypes::DataType::Int64)
            }
            Some(a) => (Some(self.physical(a, schema)?), a.get_type(schema)?),
            None => (None, arrow::datatypes::DataType::Int64),
        };
        let filter = match &params.filter {
            Some(f) => Some(self.physical(f, schema)?),
            None => None,
        };
        AggCall::new(kind, arg, filter, input_type, output_type, display)
    }
}

/// Describes the grouping of `op`, which has no group column that closes.
fn no_closing_group(op: &AggregateOperator) -> String {
    let groups = if op.group_display.is_empty() {
        "a global aggregate".to_string()
    } else {
        format!("GROUP BY {}", op.group_display.join(", "))
    };
    format!(
        "{groups} (no group column closes with a watermark: group by window_start or window_end of TUMBLE or HOP, window_end of SESSION, or by date_trunc or date_bin, over a column declared with WATERMARK FOR)"
    )
}

fn node_schema_of(n: &Node) -> SchemaRef {
    match n {
        Node::Source { schema, .. }
        | Node::Window { schema, .. }
        | Node::Project { schema, .. }
        | Node::Union { schema, .. } => schema.clone(),
        Node::Filter { input, .. } => node_schema_of(input),
        Node::Aggregate { op, .. } => op.schema().clone(),
        Node::Session { op, .. } => op.schema().clone(),
    }
}

/// True when the changes out of `n` are insertions only.
fn is_append_only(n: &Node, lookup: &dyn RelationLookup) -> bool {
    match n {
        Node::Source { relation, .. } => lookup.is_append_only(relation),
        Node::Window { input, .. } | Node::Filter { input, .. } | Node::Project { input, .. } => {
            is_append_only(input, lookup)
        }
        Node::Aggregate { .. } => false,
        // Held sessions are emitted once, final; otherwise rows move.
        Node::Session { input, op } => op.emit_on_close && is_append_only(input, lookup),
        Node::Union { inputs, .. } => inputs.iter().all(|i| is_append_only(i, lookup)),
    }
}

/// Names the first construct in `e` that has no incremental form.
fn unsupported_expr(e: &Expr) -> Option<&'static str> {
    let mut found = None;
    let _ = e.apply(|e| {
        found = match e {
            Expr::ScalarSubquery(_) => Some("scalar subqueries"),
            Expr::Exists(_) => Some("EXISTS subqueries"),
            Expr::InSubquery(_) => Some("IN (subquery)"),
            Expr::OuterReferenceColumn(..) => Some("correlated subqueries"),
            Expr::WindowFunction(_) => Some("window functions (OVER)"),
            Expr::ScalarFunction(f)
                if matches!(
                    f.func.name(),
                    "now"
                        | "current_timestamp"
                        | "current_date"
                        | "current_time"
                        | "random"
                        | "uuid"
                ) =>
            {
                Some("non-deterministic functions such as now() or random()")
            }
            _ => None,
        };
        Ok(if found.is_some() {
            datafusion::common::tree_node::TreeNodeRecursion::Stop
        } else {
            datafusion::common::tree_node::TreeNodeRecursion::Continue
        })
    });
    found
}
