//! How columns relate to event time.
//!
//! A column "closes" with a relation's watermark when rows with a given
//! value in it stop arriving once the watermark has passed that value (plus
//! a fixed distance). The event-time column itself closes; so do window
//! bounds and `date_trunc` / `date_bin` of it. A `GROUP BY` on such a
//! column can free its groups (and emit them, under `EMIT ON WINDOW
//! CLOSE`) when the watermark passes them.

use std::sync::Arc;

use datafusion::physical_expr::PhysicalExpr;

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

/// How the value of `e` relates to event time, given its input columns'.
pub fn expr_closing(e: &Arc<dyn PhysicalExpr>, inputs: &[Option<Closing>]) -> Option<Closing> {
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
                "day" | "days" => crate::time::DAY_NS,
                "week" | "weeks" => 7 * crate::time::DAY_NS,
                _ => return None,
            };
            (1, ns)
        }
        "date_bin" => {
            let stride = crate::time::fixed_interval_ns(&literal(0)?)?;
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
