//! Decoding `$n` parameters of the extended protocol into DataFusion values.

use arrow::datatypes::DataType;
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime};
use datafusion::common::{ParamValues, ScalarValue};
use pgwire::api::portal::Portal;
use pgwire::api::Type;
use pgwire::error::PgWireError;

use super::Prepared;
use millrace_engine::error::{ErrorKind, SqlError, SqlResult};

/// Decodes every parameter of `portal`, converting each to the type the
/// planner inferred for it.
pub(crate) fn decode(
    portal: &Portal<Prepared>,
    inferred: &[Option<DataType>],
) -> SqlResult<ParamValues> {
    let declared = &portal.statement.parameter_types;
    let mut values = Vec::with_capacity(portal.parameter_len());
    for i in 0..portal.parameter_len() {
        let target = inferred.get(i).cloned().flatten();
        let ty = declared
            .get(i)
            .cloned()
            .flatten()
            .filter(|t| *t != Type::UNKNOWN)
            .or_else(|| {
                target
                    .as_ref()
                    .and_then(|t| arrow_pg::datatypes::into_pg_type(t).ok())
            })
            .unwrap_or(Type::TEXT);
        let value = decode_one(portal, i, &ty)?;
        let value = match &target {
            Some(t) if !value.is_null() && &value.data_type() != t => {
                value.cast_to(t).map_err(|e| {
                    SqlError::new(
                        ErrorKind::InvalidTextRepresentation,
                        format!("invalid value for parameter ${}: {e}", i + 1),
                    )
                })?
            }
            Some(t) if value.is_null() => ScalarValue::try_from(t).unwrap_or(value),
            _ => value,
        };
        values.push(value);
    }
    Ok(ParamValues::from(values))
}

fn bad(i: usize, e: PgWireError) -> SqlError {
    SqlError::new(
        ErrorKind::InvalidTextRepresentation,
        format!("invalid value for parameter ${}: {e}", i + 1),
    )
}

fn decode_one(portal: &Portal<Prepared>, i: usize, ty: &Type) -> SqlResult<ScalarValue> {
    Ok(match *ty {
        Type::BOOL => ScalarValue::Boolean(portal.parameter::<bool>(i, ty).map_err(|e| bad(i, e))?),
        Type::INT2 => ScalarValue::Int16(portal.parameter::<i16>(i, ty).map_err(|e| bad(i, e))?),
        Type::INT4 => ScalarValue::Int32(portal.parameter::<i32>(i, ty).map_err(|e| bad(i, e))?),
        Type::INT8 => ScalarValue::Int64(portal.parameter::<i64>(i, ty).map_err(|e| bad(i, e))?),
        Type::FLOAT4 => {
            ScalarValue::Float32(portal.parameter::<f32>(i, ty).map_err(|e| bad(i, e))?)
        }
        Type::FLOAT8 => {
            ScalarValue::Float64(portal.parameter::<f64>(i, ty).map_err(|e| bad(i, e))?)
        }
        Type::NUMERIC => {
            match portal
                .parameter::<rust_decimal::Decimal>(i, ty)
                .map_err(|e| bad(i, e))?
            {
                Some(d) => ScalarValue::Decimal128(Some(d.mantissa()), 38, d.scale() as i8),
                None => ScalarValue::Decimal128(None, 38, 10),
            }
        }
        Type::DATE => ScalarValue::Date32(
            portal
                .parameter::<NaiveDate>(i, ty)
                .map_err(|e| bad(i, e))?
                .map(|d| (d - NaiveDate::default()).num_days() as i32),
        ),
        Type::TIMESTAMP => ScalarValue::TimestampMicrosecond(
            portal
                .parameter::<NaiveDateTime>(i, ty)
                .map_err(|e| bad(i, e))?
                .map(|t| t.and_utc().timestamp_micros()),
            None,
        ),
        Type::TIMESTAMPTZ => ScalarValue::TimestampMicrosecond(
            portal
                .parameter::<DateTime<FixedOffset>>(i, ty)
                .map_err(|e| bad(i, e))?
                .map(|t| t.timestamp_micros()),
            Some("+00:00".into()),
        ),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
            ScalarValue::Utf8(portal.parameter::<String>(i, ty).map_err(|e| bad(i, e))?)
        }
        _ => {
            return Err(SqlError::unsupported(format!(
                "parameters of type {}",
                ty.name()
            )))
        }
    })
}
