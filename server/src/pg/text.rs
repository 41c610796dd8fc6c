//! PostgreSQL's text output for the types whose Arrow rendering differs:
//! timestamps print without trailing fractional zeros (`2026-01-01
//! 00:00:01`), timestamptz with its offset (`…+00`), floats in the shortest
//! exact form PostgreSQL 12+ uses (`110`, `0.1`, `1e+20`).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use arrow::datatypes::{DataType, Field, Float32Type, Float64Type, Schema, TimeUnit};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use chrono::DateTime;
use pgwire::api::results::{FieldFormat, FieldInfo};

/// Replaces the text-format columns of `batch` that need PostgreSQL's
/// rendering by pre-rendered strings (the wire type stays as described).
pub(crate) fn render(batch: RecordBatch, fields: &[FieldInfo]) -> RecordBatch {
    let mut changed = false;
    let mut columns = Vec::with_capacity(batch.num_columns());
    let mut schema_fields = Vec::with_capacity(batch.num_columns());
    for (i, column) in batch.columns().iter().enumerate() {
        let field = batch.schema().field(i).clone();
        let text = fields
            .get(i)
            .map(|f| f.format() == FieldFormat::Text)
            .unwrap_or(true);
        match text.then(|| render_column(column)).flatten() {
            Some(rendered) => {
                changed = true;
                schema_fields.push(Field::new(field.name(), DataType::Utf8, true));
                columns.push(rendered);
            }
            None => {
                schema_fields.push(field);
                columns.push(column.clone());
            }
        }
    }
    if !changed {
        return batch;
    }
    RecordBatch::try_new(Arc::new(Schema::new(schema_fields)), columns).unwrap_or(batch)
}

fn render_column(column: &ArrayRef) -> Option<ArrayRef> {
    let mut out = StringBuilder::with_capacity(column.len(), column.len() * 20);
    match column.data_type() {
        DataType::Timestamp(unit, tz) => {
            let raw = arrow::compute::cast(column, &DataType::Int64).ok()?;
            let raw = raw.as_primitive::<arrow::datatypes::Int64Type>();
            let per_sec: i64 = match unit {
                TimeUnit::Second => 1,
                TimeUnit::Millisecond => 1_000,
                TimeUnit::Microsecond => 1_000_000,
                TimeUnit::Nanosecond => 1_000_000_000,
            };
            for i in 0..raw.len() {
                if raw.is_null(i) {
                    out.append_null();
                    continue;
                }
                out.append_value(timestamp_text(raw.value(i), per_sec, tz.is_some()));
            }
        }
        DataType::Float64 => {
            let a = column.as_primitive::<Float64Type>();
            append_floats(&mut out, a.iter(), false);
        }
        DataType::Float32 => {
            let a = column.as_primitive::<Float32Type>();
            append_floats(&mut out, a.iter().map(|v| v.map(f64::from)), true);
        }
        _ => return None,
    }
    Some(Arc::new(out.finish()))
}

/// `column`'s values as PostgreSQL's text output prints them (NULL stays
/// NULL): timestamps and floats as the wire layer renders them, booleans
/// as `t`/`f`, binary as `\x` and hex, lists as array literals
/// (`{1,2}`), everything else as Arrow's cast to text. What `format()`
/// receives for a non-text argument.
pub(crate) fn text_array(column: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    if let Some(rendered) = render_column(column) {
        return Ok(rendered);
    }
    let mut out = StringBuilder::with_capacity(column.len(), column.len() * 8);
    match column.data_type() {
        DataType::Boolean => {
            for v in column.as_boolean().iter() {
                out.append_option(v.map(|b| if b { "t" } else { "f" }));
            }
        }
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => {
            let binary = arrow::compute::cast(column, &DataType::LargeBinary)?;
            for v in binary.as_binary::<i64>().iter() {
                out.append_option(v.map(|bytes| {
                    let mut s = String::with_capacity(2 + 2 * bytes.len());
                    s.push_str("\\x");
                    for b in bytes {
                        s.push_str(&format!("{b:02x}"));
                    }
                    s
                }));
            }
        }
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(_, _) => {
            let list = arrow::compute::cast(
                column,
                &DataType::LargeList(Arc::new(Field::new_list_field(
                    list_element_type(column.data_type()),
                    true,
                ))),
            )?;
            let list = list.as_list::<i64>();
            let nested = matches!(
                list.value_type(),
                DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(_, _)
            );
            for i in 0..list.len() {
                if list.is_null(i) {
                    out.append_null();
                    continue;
                }
                let elements = text_array(&list.value(i))?;
                let elements = elements.as_string::<i32>();
                let mut s = String::from("{");
                for (j, e) in elements.iter().enumerate() {
                    if j > 0 {
                        s.push(',');
                    }
                    match e {
                        None => s.push_str("NULL"),
                        Some(e) if nested => s.push_str(e),
                        Some(e) => push_array_element(&mut s, e),
                    }
                }
                s.push('}');
                out.append_value(s);
            }
        }
        DataType::Utf8 => return Ok(column.clone()),
        _ => return arrow::compute::cast(column, &DataType::Utf8),
    }
    Ok(Arc::new(out.finish()))
}

/// The element type of the list type `t`.
fn list_element_type(t: &DataType) -> DataType {
    match t {
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            f.data_type().clone()
        }
        other => other.clone(),
    }
}

/// `e` as an element of an array literal: double-quoted (with `"` and `\`
/// backslash-escaped) when empty, `NULL`, or holding a character that
/// would end or split it, as PostgreSQL's array output does.
fn push_array_element(out: &mut String, e: &str) {
    let quote = e.is_empty()
        || e.eq_ignore_ascii_case("null")
        || e.chars()
            .any(|c| matches!(c, '{' | '}' | ',' | '"' | '\\') || c.is_ascii_whitespace());
    if !quote {
        out.push_str(e);
        return;
    }
    out.push('"');
    for c in e.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

fn append_floats(out: &mut StringBuilder, values: impl Iterator<Item = Option<f64>>, single: bool) {
    for v in values {
        match v {
            Some(v) => out.append_value(float_text(v, single)),
            None => out.append_null(),
        }
    }
}

/// `2026-01-01 00:00:01[.5][+00]`, in UTC.
pub(crate) fn timestamp_text(value: i64, per_sec: i64, with_zone: bool) -> String {
    let secs = value.div_euclid(per_sec);
    let frac = value.rem_euclid(per_sec);
    let micros = (frac as i128 * 1_000_000 / per_sec as i128) as u32;
    let Some(t) = DateTime::from_timestamp(secs, micros * 1000) else {
        return value.to_string();
    };
    let mut s = t.format("%Y-%m-%d %H:%M:%S").to_string();
    if micros != 0 {
        let f = format!("{micros:06}");
        s.push('.');
        s.push_str(f.trim_end_matches('0'));
    }
    if with_zone {
        s.push_str("+00");
    }
    s
}

/// PostgreSQL's float output (extra_float_digits = 1): shortest exact
/// digits, exponent form outside 1e-4 ..= 1e15 (1e6 for real).
pub(crate) fn float_text(v: f64, single: bool) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    let limit = if single { 1e6 } else { 1e15 };
    let a = v.abs();
    if a != 0.0 && !(1e-4..limit).contains(&a) {
        let e = if single {
            format!("{:e}", v as f32)
        } else {
            format!("{v:e}")
        };
        // Rust prints 1e20 / 1.5e-5; PostgreSQL 1e+20 / 1.5e-05.
        if let Some((mantissa, exp)) = e.split_once('e') {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            return format!("{mantissa}e{sign}{digits:0>2}");
        }
        return e;
    }
    if single {
        format!("{}", v as f32)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_like_postgres() {
        assert_eq!(
            timestamp_text(1_767_225_601, 1, false),
            "2026-01-01 00:00:01"
        );
        assert_eq!(
            timestamp_text(1_767_225_601_500_000_000, 1_000_000_000, false),
            "2026-01-01 00:00:01.5"
        );
        assert_eq!(
            timestamp_text(1_767_225_601_000, 1_000, true),
            "2026-01-01 00:00:01+00"
        );
    }

    #[test]
    fn values_as_postgres_text_output() {
        use arrow::array::{
            BinaryArray, BooleanArray, Int64Array, ListArray, StringArray, TimestampNanosecondArray,
        };
        use arrow::datatypes::Int64Type;
        let text = |a: ArrayRef| -> Vec<Option<String>> {
            let t = text_array(&a).unwrap();
            t.as_string::<i32>()
                .iter()
                .map(|v| v.map(str::to_string))
                .collect()
        };
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            text(Arc::new(TimestampNanosecondArray::from(vec![
                Some(1_767_225_600_000_000_000),
                None
            ]))),
            [s("2026-01-01 00:00:00"), None]
        );
        assert_eq!(text(Arc::new(Int64Array::from(vec![-7]))), [s("-7")]);
        assert_eq!(
            text(Arc::new(BooleanArray::from(vec![true, false]))),
            [s("t"), s("f")]
        );
        assert_eq!(
            text(Arc::new(BinaryArray::from(vec![
                &[0xde_u8, 0xad, 0x01][..]
            ]))),
            [s("\\xdead01")]
        );
        assert_eq!(
            text(Arc::new(ListArray::from_iter_primitive::<Int64Type, _, _>(
                vec![Some(vec![Some(1), Some(2), None]), None, Some(vec![])]
            ))),
            [s("{1,2,NULL}"), None, s("{}")]
        );
        let words = ListArray::new(
            Arc::new(Field::new_list_field(DataType::Utf8, true)),
            arrow::buffer::OffsetBuffer::from_lengths([4]),
            Arc::new(StringArray::from(vec!["a b", "", "x\"y", "null"])),
            None,
        );
        assert_eq!(text(Arc::new(words)), [s(r#"{"a b","","x\"y","null"}"#)]);
    }

    #[test]
    fn floats_like_postgres() {
        assert_eq!(float_text(110.0, false), "110");
        assert_eq!(float_text(103.33333333333333, false), "103.33333333333333");
        assert_eq!(float_text(0.1, false), "0.1");
        assert_eq!(float_text(1e20, false), "1e+20");
        assert_eq!(float_text(1.5e-5, false), "1.5e-05");
        assert_eq!(float_text(-0.0, false), "-0");
        assert_eq!(float_text(f64::NAN, false), "NaN");
    }
}
