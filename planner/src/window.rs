//! Time windows: the `TUMBLE`, `HOP` and `SESSION` table functions.
//!
//! `TUMBLE(rel, col, size [, offset])` and `HOP(rel, col, slide, size
//! [, offset])` (RisingWave's spelling, slide before size) are DataFusion
//! table functions returning a [`WindowedRelation`]: the input relation's
//! columns plus `window_start` and `window_end`. An ad-hoc `SELECT` scans it
//! directly; the incremental planner recognises it and turns it into a
//! stateless window-assignment operator (see
//! [`millrace_dataflow::window::assign_windows`]).
//!
//! `SESSION(rel, col, gap [, key …])` groups the rows of each key (all rows
//! when no key is given) into sessions: runs of event times in which
//! consecutive times are less than `gap` apart. A session's `window_start`
//! is its first event time and its `window_end` its last plus `gap`, so it
//! closes when the watermark passes `window_end`. Flink's
//! `TABLE(SESSION(TABLE rel PARTITION BY key, DESCRIPTOR(col), gap))` is the
//! same. Sessions are stateful: a new row can extend or merge sessions and so
//! move rows already assigned; the planner maintains them with
//! [`millrace_dataflow::operator::session::SessionOperator`].

use std::fmt::Debug;
use std::sync::Arc;

use arrow::datatypes::{DataType, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl};
use datafusion::common::{not_impl_err, ScalarValue};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::{collect, ExecutionPlan};
use millrace_dataflow::window::{
    assign_sessions, assign_windows, windowed_schema, SessionSpec, WindowKind, WindowSpec,
    MAX_WINDOWS_PER_ROW,
};

use crate::PlanError;

/// How the planner finds the relations a window function reads.
pub trait RelationLookup: Debug + Send + Sync {
    /// The provider of relation `name`, if it exists.
    fn relation(&self, name: &str) -> Option<Arc<dyn TableProvider>>;
    /// True when the relation only ever grows (a table), false when its rows
    /// can be retracted (a view).
    fn is_append_only(&self, name: &str) -> bool;
    /// The event time declared on relation `name` (`WATERMARK FOR`), if any.
    fn event_time(&self, name: &str) -> Option<crate::event_time::EventTime>;
}

/// The `TUMBLE` / `HOP` table function.
#[derive(Debug)]
pub struct WindowFunction {
    kind: WindowKind,
    lookup: Arc<dyn RelationLookup>,
}

impl WindowFunction {
    /// A window function resolving its input relation through `lookup`.
    pub fn new(kind: WindowKind, lookup: Arc<dyn RelationLookup>) -> Self {
        Self { kind, lookup }
    }
}

impl TableFunctionImpl for WindowFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        let fname = match self.kind {
            WindowKind::Tumble => "TUMBLE",
            WindowKind::Hop => "HOP",
        };
        let durations = match self.kind {
            WindowKind::Tumble => 1,
            WindowKind::Hop => 2,
        };
        if exprs.len() < 2 + durations || exprs.len() > 3 + durations {
            let usage = match self.kind {
                WindowKind::Tumble => "TUMBLE(relation, time_column, size [, offset])",
                WindowKind::Hop => "HOP(relation, time_column, slide, size [, offset])",
            };
            return refuse(PlanError::Invalid(format!(
                "wrong number of arguments to {fname}: expected {usage}"
            )));
        }
        let (relation, input, time_column, time_column_name) =
            window_input(self.lookup.as_ref(), fname, exprs)?;
        let mut durations_ns = Vec::new();
        for e in &exprs[2..] {
            durations_ns.push(interval_ns(fname, e)?);
        }
        let (slide_ns, size_ns) = match self.kind {
            WindowKind::Tumble => (durations_ns[0], durations_ns[0]),
            WindowKind::Hop => (durations_ns[0], durations_ns[1]),
        };
        if slide_ns <= 0 || size_ns <= 0 {
            return refuse(PlanError::InvalidValue(format!(
                "{fname} window sizes must be positive intervals"
            )));
        }
        if size_ns / slide_ns > MAX_WINDOWS_PER_ROW {
            return not_impl_err!(
                "HOP windows whose size is more than {MAX_WINDOWS_PER_ROW} times their slide"
            );
        }
        let offset_ns = durations_ns.get(durations).copied().unwrap_or(0);
        let spec = WindowSpec {
            kind: self.kind,
            time_column,
            time_column_name,
            slide_ns,
            size_ns,
            offset_ns,
        };
        Ok(Arc::new(WindowedRelation::new(relation, input, spec)))
    }
}

/// The relation and event-time column named by the first two arguments of
/// window function `fname`.
fn window_input(
    lookup: &dyn RelationLookup,
    fname: &str,
    exprs: &[Expr],
) -> DfResult<(String, Arc<dyn TableProvider>, usize, String)> {
    let relation = match &exprs[0] {
        Expr::Column(c) => c.name.clone(),
        other => {
            return refuse(PlanError::Invalid(format!(
                "the first argument of {fname} must be a table or view name, not {other}"
            )))
        }
    };
    let input = lookup
        .relation(&relation)
        .ok_or_else(|| PlanError::UndefinedTable(relation.clone()).into_datafusion())?;
    let time_column_name = column_argument(fname, "second", &exprs[1])?;
    let input_schema = input.schema();
    let time_column = column_index(&input_schema, &time_column_name)?;
    let time_type = input_schema.field(time_column).data_type().clone();
    if !matches!(time_type, DataType::Timestamp(_, _)) {
        return refuse(PlanError::WrongType(format!(
            "cannot assign windows over column \"{time_column_name}\" of type {time_type}: {fname} needs a timestamp column"
        )));
    }
    Ok((relation, input, time_column, time_column_name))
}

fn column_argument(fname: &str, which: &str, e: &Expr) -> DfResult<String> {
    match e {
        Expr::Column(c) => Ok(c.name.clone()),
        other => refuse(PlanError::Invalid(format!(
            "the {which} argument of {fname} must be a column name, not {other}"
        ))),
    }
}

fn column_index(schema: &Schema, name: &str) -> DfResult<usize> {
    schema.index_of(name).map_err(|_| {
        datafusion::error::DataFusionError::SchemaError(
            Box::new(datafusion::common::SchemaError::FieldNotFound {
                field: Box::new(datafusion::common::Column::from_name(name)),
                valid_fields: vec![],
            }),
            Box::new(None),
        )
    })
}

fn interval_ns(fname: &str, e: &Expr) -> DfResult<i64> {
    let not_constant = || {
        refuse(PlanError::WrongType(format!(
            "{fname} needs constant intervals, got {e}"
        )))
    };
    let value = match e {
        Expr::Literal(v, _) => v.clone(),
        Expr::Cast(c) => match c.expr.as_ref() {
            Expr::Literal(v, _) => v.cast_to(c.field.data_type())?,
            _ => return not_constant(),
        },
        _ => return not_constant(),
    };
    match &value {
        ScalarValue::IntervalYearMonth(Some(_)) => {
            not_impl_err!("{fname} windows measured in months or years")
        }
        ScalarValue::IntervalMonthDayNano(Some(v)) if v.months != 0 => {
            not_impl_err!("{fname} windows measured in months or years")
        }
        ScalarValue::IntervalMonthDayNano(Some(_)) | ScalarValue::IntervalDayTime(Some(_)) => {
            millrace_dataflow::time::fixed_interval_ns(&value).ok_or_else(|| {
                PlanError::OutOfRange(format!("{fname} interval out of range")).into_datafusion()
            })
        }
        other => refuse(PlanError::WrongType(format!(
            "{fname} needs an INTERVAL, got {other}"
        ))),
    }
}

/// A relation with window columns assigned: the result of `TUMBLE`/`HOP`.
#[derive(Debug)]
pub struct WindowedRelation {
    /// Name of the input relation.
    pub input_name: String,
    input: Arc<dyn TableProvider>,
    /// The assignment.
    pub spec: WindowSpec,
    schema: SchemaRef,
}

impl WindowedRelation {
    fn new(input_name: String, input: Arc<dyn TableProvider>, spec: WindowSpec) -> Self {
        let schema = windowed_schema(&input.schema(), spec.time_column);
        Self {
            input_name,
            input,
            spec,
            schema,
        }
    }
}

#[async_trait]
impl TableProvider for WindowedRelation {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let input = self.input.scan(state, None, &[], None).await?;
        let batches = collect(input, state.task_ctx()).await?;
        let mut out = Vec::with_capacity(batches.len());
        for b in batches {
            let (windowed, _) =
                assign_windows(&b, None, &self.spec, &self.schema).map_err(external)?;
            out.push(windowed);
        }
        let exec: Arc<dyn ExecutionPlan> =
            MemorySourceConfig::try_new_exec(&[out], self.schema.clone(), projection.cloned())?;
        Ok(exec)
    }
}

/// The `SESSION` table function.
#[derive(Debug)]
pub struct SessionFunction {
    lookup: Arc<dyn RelationLookup>,
}

impl SessionFunction {
    /// A session function resolving its input relation through `lookup`.
    pub fn new(lookup: Arc<dyn RelationLookup>) -> Self {
        Self { lookup }
    }
}

impl TableFunctionImpl for SessionFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        if exprs.len() < 3 {
            return refuse(PlanError::Invalid(
                "wrong number of arguments to SESSION: expected SESSION(relation, time_column, gap [, key_column …])".into(),
            ));
        }
        let (relation, input, time_column, time_column_name) =
            window_input(self.lookup.as_ref(), "SESSION", exprs)?;
        let gap_ns = interval_ns("SESSION", &exprs[2])?;
        if gap_ns <= 0 {
            return refuse(PlanError::InvalidValue(
                "the SESSION gap must be a positive interval".into(),
            ));
        }
        let schema = input.schema();
        let mut key_columns = Vec::new();
        let mut key_names = Vec::new();
        for e in &exprs[3..] {
            let name = column_argument("SESSION", "key", e)?;
            key_columns.push(column_index(&schema, &name)?);
            key_names.push(name);
        }
        let spec = SessionSpec {
            time_column,
            time_column_name,
            gap_ns,
            key_columns,
            key_names,
        };
        let schema = windowed_schema(&schema, spec.time_column);
        Ok(Arc::new(SessionRelation {
            input_name: relation,
            input,
            spec,
            schema,
        }))
    }
}

/// A relation with sessions assigned: the result of `SESSION`.
#[derive(Debug)]
pub struct SessionRelation {
    /// Name of the input relation.
    pub input_name: String,
    input: Arc<dyn TableProvider>,
    /// The assignment.
    pub spec: SessionSpec,
    schema: SchemaRef,
}

#[async_trait]
impl TableProvider for SessionRelation {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let input = self.input.scan(state, None, &[], None).await?;
        let batches = collect(input, state.task_ctx()).await?;
        let all = arrow::compute::concat_batches(&self.input.schema(), &batches)?;
        let sessions = assign_sessions(&all, &self.spec, &self.schema).map_err(external)?;
        let exec: Arc<dyn ExecutionPlan> = MemorySourceConfig::try_new_exec(
            &[vec![sessions]],
            self.schema.clone(),
            projection.cloned(),
        )?;
        Ok(exec)
    }
}

/// A runtime error inside a DataFusion scan, as the planner's error (which
/// keeps its kind through DataFusion).
fn external(e: millrace_dataflow::DataflowError) -> datafusion::error::DataFusionError {
    PlanError::from(e).into_datafusion()
}

/// `Err` of a planner error, as DataFusion's error type (what table
/// functions return); the engine takes the planner's error back out.
fn refuse<T>(e: PlanError) -> DfResult<T> {
    Err(e.into_datafusion())
}
