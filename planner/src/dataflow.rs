//! The incremental planner: a materialized view's query as a graph of
//! dataflow operators.
//!
//! [`plan`] rewrites DataFusion's (analyzed, unoptimized) logical plan node
//! by node into a [`Graph`] of `millrace_dataflow` operators: scans become
//! [`Input`]s, filters and projections stateless [`Filter`]s and
//! [`Project`]s, `TUMBLE`/`HOP` a stateless [`WindowAssign`], `SESSION` a
//! [`SessionOperator`], `GROUP BY` and `DISTINCT` an [`AggregateOperator`],
//! `UNION ALL` a [`Union`]. Anything else is refused with
//! [`PlanError::Unsupported`] naming the construct: a view is never silently
//! recomputed from scratch.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use datafusion::catalog::default_table_source::source_as_provider;
use datafusion::common::tree_node::TreeNode;
use datafusion::common::DFSchema;
use datafusion::execution::SessionState;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::ExprSchemable;
use datafusion::logical_expr::{Aggregate, Distinct, Expr, LogicalPlan};
use datafusion::physical_expr::PhysicalExpr;
use millrace_dataflow::closing::expr_closing;
use millrace_dataflow::graph::{Graph, NodeId};
use millrace_dataflow::operator::aggregate::{AggCall, AggKind, AggregateOperator, GroupClosing};
use millrace_dataflow::operator::filter::Filter;
use millrace_dataflow::operator::input::Input;
use millrace_dataflow::operator::project::Project;
use millrace_dataflow::operator::session::SessionOperator;
use millrace_dataflow::operator::shards::Shards;
use millrace_dataflow::operator::union::Union;
use millrace_dataflow::operator::window_assign::WindowAssign;
use millrace_dataflow::{Dataflow, EmitMode, Operator, ViewOptions};

use crate::error::unsupported;
use crate::window::{RelationLookup, SessionRelation, WindowedRelation};
use crate::{PlanError, Result};

/// Builds the dataflow of `plan`, a view query's analyzed logical plan.
pub fn plan(
    plan: &LogicalPlan,
    state: &SessionState,
    lookup: &dyn RelationLookup,
    options: ViewOptions,
) -> Result<Dataflow> {
    let mut b = Builder {
        graph: Graph::default(),
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
    Ok(Dataflow::new(b.graph, root, schema, b.inputs))
}

struct Builder<'a> {
    graph: Graph,
    state: &'a SessionState,
    lookup: &'a dyn RelationLookup,
    next_op: u32,
    aggregates: u32,
    inputs: BTreeSet<String>,
    options: ViewOptions,
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
    /// Adds `op` fed by `inputs` to the graph.
    fn add(&mut self, op: Box<dyn Operator>, inputs: Vec<NodeId>) -> Result<NodeId> {
        Ok(self.graph.add(op, inputs)?)
    }

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

    fn build(&mut self, plan: &LogicalPlan) -> Result<NodeId> {
        match plan {
            LogicalPlan::TableScan(scan) => {
                let provider = source_as_provider(&scan.source)?;
                let node = if let Some(w) = provider.downcast_ref::<SessionRelation>() {
                    self.session(w)?
                } else if let Some(w) = provider.downcast_ref::<WindowedRelation>() {
                    self.inputs.insert(w.input_name.clone());
                    let input = self.source(&w.input_name)?;
                    self.add(
                        Box::new(WindowAssign::new(
                            w.spec.clone(),
                            datafusion::datasource::TableProvider::schema(w),
                        )),
                        vec![input],
                    )?
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
                        let input_schema = self.graph.schema(node);
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
                        self.add(
                            Box::new(Project::new(
                                exprs,
                                display,
                                node_schema(&scan.projected_schema),
                            )),
                            vec![node],
                        )
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
                let display = p.expr.iter().map(|e| e.to_string()).collect();
                self.add(
                    Box::new(Project::new(exprs, display, node_schema(&p.schema))),
                    vec![input],
                )
            }
            LogicalPlan::Filter(f) => {
                let input = self.build(&f.input)?;
                let predicate = self.physical(&f.predicate, f.input.schema())?;
                let schema = self.graph.schema(input);
                self.add(
                    Box::new(Filter::new(predicate, f.predicate.to_string(), schema)),
                    vec![input],
                )
            }
            LogicalPlan::SubqueryAlias(a) => self.build(&a.input),
            LogicalPlan::Sort(s) if s.fetch.is_none() => self.build(&s.input),
            LogicalPlan::Aggregate(a) => {
                let (input, in_schema) = self.aggregate_input(a)?;
                let in_schema = in_schema.as_ref();
                let append_only = self.graph.append_only(input);
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
                let display: Vec<String> = a.group_expr.iter().map(|g| g.to_string()).collect();
                self.add_aggregate(input, || {
                    AggregateOperator::new(
                        id,
                        group_exprs.clone(),
                        display.clone(),
                        group_types.clone(),
                        calls
                            .iter()
                            .map(AggCall::try_clone)
                            .collect::<millrace_dataflow::Result<Vec<_>>>()?,
                        out_schema.clone(),
                        append_only,
                    )
                })
            }
            LogicalPlan::Distinct(Distinct::All(inner)) => {
                let input = self.build(inner)?;
                let append_only = self.graph.append_only(input);
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
                let out_schema = node_schema(schema);
                self.add_aggregate(input, || {
                    AggregateOperator::new(
                        id,
                        group_exprs.clone(),
                        display.clone(),
                        group_types.clone(),
                        vec![],
                        out_schema.clone(),
                        append_only,
                    )
                })
            }
            LogicalPlan::Union(u) => {
                let inputs = u
                    .inputs
                    .iter()
                    .map(|i| self.build(i))
                    .collect::<Result<Vec<_>>>()?;
                self.add(Box::new(Union::new(node_schema(&u.schema))), inputs)
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

    /// The input of aggregate `a`, and the schema its expressions are
    /// planned against. Straight over a `TUMBLE` / `HOP`, the window
    /// assignment passes on only the columns the aggregate reads (and the
    /// time column): a `HOP` repeats each row once per window, and copying
    /// the columns nobody reads (the bids' long strings) was a tenth of
    /// q5's time.
    fn aggregate_input(&mut self, a: &Aggregate) -> Result<(NodeId, Arc<DFSchema>)> {
        let whole = |b: &mut Self| Ok((b.build(&a.input)?, a.input.schema().clone()));
        let mut below = a.input.as_ref();
        while let LogicalPlan::SubqueryAlias(alias) = below {
            below = alias.input.as_ref();
        }
        let LogicalPlan::TableScan(scan) = below else {
            return whole(self);
        };
        if scan.projection.is_some() || !scan.filters.is_empty() || scan.fetch.is_some() {
            return whole(self);
        }
        let provider = source_as_provider(&scan.source)?;
        let Some(w) = provider.downcast_ref::<WindowedRelation>() else {
            return whole(self);
        };
        let schema = a.input.schema();
        // The input's columns, then window_start and window_end.
        let Some(width) = schema.fields().len().checked_sub(2) else {
            return whole(self);
        };
        let mut keep = BTreeSet::from([w.spec.time_column]);
        for e in a.group_expr.iter().chain(&a.aggr_expr) {
            for c in e.column_refs() {
                let i = schema.index_of_column(c)?;
                if i < width {
                    keep.insert(i);
                }
            }
        }
        if keep.len() >= width {
            return whole(self);
        }
        let keep: Vec<usize> = keep.into_iter().collect();
        self.inputs.insert(w.input_name.clone());
        let input = self.source(&w.input_name)?;
        let assign =
            WindowAssign::narrowed(w.spec.clone(), &self.graph.schema(input), keep.clone())?;
        let node = self.add(Box::new(assign), vec![input])?;
        let fields = keep
            .iter()
            .copied()
            .chain([width, width + 1])
            .map(|i| {
                let (q, f) = schema.qualified_field(i);
                (q.cloned(), f.clone())
            })
            .collect();
        let narrowed = DFSchema::new_with_metadata(fields, schema.metadata().clone())?;
        Ok((node, Arc::new(narrowed)))
    }

    /// Adds the aggregate `make` builds, fed by `input`: split by group
    /// key over the view's workers when there are several and it has
    /// groups (a global aggregate has one), else as one operator.
    fn add_aggregate(
        &mut self,
        input: NodeId,
        make: impl Fn() -> millrace_dataflow::Result<AggregateOperator>,
    ) -> Result<NodeId> {
        let mut op = make()?;
        self.set_closing(&mut op, input)?;
        if self.options.workers <= 1 || op.group_exprs().is_empty() {
            return self.add(Box::new(op), vec![input]);
        }
        let mut shards = vec![op];
        for _ in 1..self.options.workers {
            let mut op = make()?;
            self.set_closing(&mut op, input)?;
            shards.push(op);
        }
        self.add(Box::new(Shards::new(shards)?), vec![input])
    }

    /// Lets `op` close its groups when a group column derives from event
    /// time, and applies the view's emit mode.
    fn set_closing(&self, op: &mut AggregateOperator, input: NodeId) -> Result<()> {
        let inner = self.graph.closings(input);
        op.closing = op.group_exprs().iter().enumerate().find_map(|(i, e)| {
            expr_closing(e, inner).map(|c| GroupClosing {
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
    fn session(&mut self, w: &SessionRelation) -> Result<NodeId> {
        let input = self.source(&w.input_name)?;
        let input_schema = self.graph.schema(input);
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
        op.closing = self
            .graph
            .closings(input)
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
        self.add(Box::new(op), vec![input])
    }

    fn source(&mut self, name: &str) -> Result<NodeId> {
        let provider = self
            .lookup
            .relation(name)
            .ok_or_else(|| PlanError::UndefinedTable(name.to_string()))?;
        self.inputs.insert(name.to_string());
        let event_time = self.lookup.event_time(name).map(|e| e.index);
        let input = Input::new(
            name.to_string(),
            provider.schema(),
            event_time,
            self.lookup.is_append_only(name),
        );
        self.add(Box::new(input), vec![])
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
        Ok(AggCall::new(
            kind,
            arg,
            filter,
            input_type,
            output_type,
            display,
        )?)
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
