//! Event time: which column of a table or source carries it and how far
//! the watermark trails it (`WATERMARK FOR`). How far columns derived from
//! it are behind it is `millrace_dataflow::closing`; the runtime's time
//! helpers are `millrace_dataflow::time`.
//!
//! A relation's watermark is a time `w` with the promise that rows whose
//! event time is below `w` will not be accepted any more: they are late and
//! dropped before any view sees them. All times here are nanoseconds since
//! the Unix epoch (UTC), whatever the column's precision.

use arrow::array::Int64Array;
use arrow::datatypes::{DataType, Schema};
use arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use millrace_dataflow::time::{fixed_interval_ns, timestamps_ns};
use sqlparser::ast::{BinaryOperator, Expr as SqlExpr};

use crate::source::WatermarkDef;
use crate::{PlanError, Result};

/// The resolved `WATERMARK FOR column AS column - INTERVAL '…'` of a relation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventTime {
    /// The event-time column.
    pub column: String,
    /// Its index in the relation's schema.
    pub index: usize,
    /// How far the watermark trails the largest event time seen.
    pub delay_ns: i64,
}

impl EventTime {
    /// Checks `def` against the relation's columns: the column must exist
    /// and be a timestamp, and the expression must be the column itself or
    /// the column minus a constant interval of fixed length.
    pub fn resolve(def: &WatermarkDef, schema: &Schema) -> Result<Self> {
        let (index, field) = schema.column_with_name(&def.column).ok_or_else(|| {
            PlanError::UndefinedColumn(format!(
                "column \"{}\" named in WATERMARK FOR does not exist",
                def.column
            ))
        })?;
        if !matches!(field.data_type(), DataType::Timestamp(_, _)) {
            return Err(PlanError::WrongType(format!(
                "WATERMARK FOR column \"{}\" is of type {}, but event time must be timestamp or timestamptz",
                def.column,
                field.data_type()
            )));
        }
        let shape = || {
            PlanError::Unsupported(format!(
                "WATERMARK expression {} (supported: {col} or {col} - INTERVAL '…')",
                def.expr,
                col = def.column
            ))
        };
        let is_column = |e: &SqlExpr| match e {
            SqlExpr::Identifier(i) => fold(&i.value, i.quote_style.is_some()) == def.column,
            SqlExpr::CompoundIdentifier(parts) => parts
                .last()
                .is_some_and(|i| fold(&i.value, i.quote_style.is_some()) == def.column),
            _ => false,
        };
        let delay_ns = match &def.expr {
            e if is_column(e) => 0,
            SqlExpr::BinaryOp {
                left,
                op: BinaryOperator::Minus,
                right,
            } if is_column(left) => interval_literal_ns(right).ok_or_else(shape)?,
            SqlExpr::Nested(inner) if is_column(inner) => 0,
            _ => return Err(shape()),
        };
        if delay_ns < 0 {
            return Err(PlanError::Unsupported(
                "a WATERMARK ahead of its event time (negative delay)".into(),
            ));
        }
        Ok(Self {
            column: def.column.clone(),
            index,
            delay_ns,
        })
    }

    /// The event times of `batch`'s rows (a relation batch), NULL where the
    /// column is NULL.
    pub fn times(&self, batch: &RecordBatch) -> Result<Int64Array> {
        Ok(timestamps_ns(batch.column(self.index))?)
    }

    /// The watermark that the largest event time `max_ns` allows.
    pub fn watermark_for(&self, max_ns: i64) -> i64 {
        max_ns.saturating_sub(self.delay_ns)
    }
}

fn fold(value: &str, quoted: bool) -> String {
    if quoted {
        value.to_string()
    } else {
        value.to_lowercase()
    }
}

/// `INTERVAL '5 seconds'`, `INTERVAL '5' SECOND` or `'5 seconds'::interval`
/// in nanoseconds; `None` for anything else or for months and years, which
/// have no fixed length.
fn interval_literal_ns(e: &SqlExpr) -> Option<i64> {
    let text = match e {
        SqlExpr::Interval(i) => {
            let value = match i.value.as_ref() {
                SqlExpr::Value(v) => v.value.clone().into_string()?,
                _ => return None,
            };
            match &i.leading_field {
                Some(field) => format!("{value} {field}"),
                None => value,
            }
        }
        SqlExpr::Cast {
            expr, data_type, ..
        } if data_type.to_string().eq_ignore_ascii_case("interval") => match expr.as_ref() {
            SqlExpr::Value(v) => v.value.clone().into_string()?,
            _ => return None,
        },
        SqlExpr::Nested(inner) => return interval_literal_ns(inner),
        _ => return None,
    };
    parse_fixed_interval(&text)
}

/// An interval written as text (`'1 day'`, `'90 minutes'`) in nanoseconds;
/// `None` when it does not parse or counts months or years.
pub fn parse_fixed_interval(text: &str) -> Option<i64> {
    let v = arrow::compute::kernels::cast_utils::parse_interval_month_day_nano(text).ok()?;
    fixed_interval_ns(&ScalarValue::IntervalMonthDayNano(Some(v)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, TimeUnit};
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    fn def(sql: &str) -> WatermarkDef {
        let mut p = Parser::new(&PostgreSqlDialect {})
            .try_with_sql(sql)
            .unwrap();
        crate::source::parse_watermark(&mut p).unwrap()
    }

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        ])
    }

    #[test]
    fn resolves_the_declared_delay() {
        let e = EventTime::resolve(
            &def("WATERMARK FOR ts AS ts - INTERVAL '5 seconds'"),
            &schema(),
        )
        .unwrap();
        assert_eq!((e.index, e.delay_ns), (1, 5_000_000_000));
        let e = EventTime::resolve(
            &def("WATERMARK FOR ts AS ts - INTERVAL '2' MINUTE"),
            &schema(),
        )
        .unwrap();
        assert_eq!(e.delay_ns, 120_000_000_000);
        let e = EventTime::resolve(&def("WATERMARK FOR ts AS ts"), &schema()).unwrap();
        assert_eq!(e.delay_ns, 0);
    }

    #[test]
    fn refuses_what_has_no_fixed_delay() {
        let s = schema();
        assert!(matches!(
            EventTime::resolve(&def("WATERMARK FOR ts AS ts - INTERVAL '1 month'"), &s),
            Err(PlanError::Unsupported(_))
        ));
        assert!(matches!(
            EventTime::resolve(&def("WATERMARK FOR a AS a"), &s),
            Err(PlanError::WrongType(_))
        ));
        assert!(matches!(
            EventTime::resolve(&def("WATERMARK FOR nope AS nope"), &s),
            Err(PlanError::UndefinedColumn(_))
        ));
        assert!(matches!(
            EventTime::resolve(&def("WATERMARK FOR ts AS a"), &s),
            Err(PlanError::Unsupported(_))
        ));
    }
}
