//! Time in the runtime: every event time is nanoseconds since the Unix
//! epoch (UTC) as an `i64`, whatever the precision of its column.

use arrow::array::{Array, ArrayRef, Int64Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::ScalarValue;

use crate::{DataflowError, Result};

/// Nanoseconds in a day.
pub const DAY_NS: i64 = 86_400_000_000_000;

/// The length of a constant interval in nanoseconds; `None` when it is not
/// an interval or counts months or years.
pub fn fixed_interval_ns(value: &ScalarValue) -> Option<i64> {
    match value {
        ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 => (v.days as i64)
            .checked_mul(DAY_NS)
            .and_then(|d| d.checked_add(v.nanoseconds)),
        ScalarValue::IntervalDayTime(Some(v)) => (v.days as i64)
            .checked_mul(DAY_NS)
            .and_then(|d| d.checked_add(v.milliseconds as i64 * 1_000_000)),
        _ => None,
    }
}

/// Nanoseconds per unit of a timestamp type; `None` for other types.
pub fn unit_ns(data_type: &DataType) -> Option<i64> {
    match data_type {
        DataType::Timestamp(TimeUnit::Second, _) => Some(1_000_000_000),
        DataType::Timestamp(TimeUnit::Millisecond, _) => Some(1_000_000),
        DataType::Timestamp(TimeUnit::Microsecond, _) => Some(1_000),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => Some(1),
        _ => None,
    }
}

/// A timestamp column of any precision as nanoseconds since the epoch.
/// Values beyond the nanosecond range (years before 1677 or after 2262)
/// saturate.
pub fn timestamps_ns(array: &ArrayRef) -> Result<Int64Array> {
    let per_ns = unit_ns(array.data_type()).ok_or_else(|| {
        DataflowError::Internal(format!(
            "event time of type {}, expected a timestamp",
            array.data_type()
        ))
    })?;
    let raw = cast(array, &DataType::Int64)?;
    let raw = raw
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| DataflowError::Internal("timestamp did not cast to int64".into()))?;
    if per_ns == 1 {
        return Ok(raw.clone());
    }
    Ok(raw.unary(|v| v.saturating_mul(per_ns)))
}

/// The largest non-NULL value of `times`.
pub fn max_time(times: &Int64Array) -> Option<i64> {
    arrow::compute::max(times)
}
