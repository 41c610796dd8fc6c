//! Message payloads to typed rows: `ENCODE JSON`, `CSV` and `BYTES`.
//!
//! A message decodes completely or not at all: it is first turned into one
//! [`Cell`] per column, and only a message whose every column converted is
//! appended to the column builders. A message that does not decode is the
//! producer's fault; the caller counts and skips it.

use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder,
    Float32Builder, Float64Builder, Int16Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder, TimestampMillisecondBuilder, TimestampNanosecondBuilder,
    TimestampSecondBuilder,
};
use arrow::datatypes::{DataType, Field, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use rust_decimal::Decimal;
use serde::de;
use serde_json::Value;

/// How payloads are encoded (`ENCODE …`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// One JSON object per message; fields map to columns by name.
    Json,
    /// One CSV record per message; fields map to columns by position.
    Csv { delimiter: u8 },
    /// The payload as is, in the one `bytea` column.
    Bytes,
}

/// One decoded value, before it is appended to its column.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Float(f64),
    Decimal(i128),
    Bool(bool),
    Text(String),
    /// Nanoseconds since the epoch.
    Timestamp(i64),
    /// Days since the epoch.
    Date(i32),
    Bytes(Vec<u8>),
}

/// Why one message could not be decoded (shown in `last_error`).
pub type DecodeError = String;

/// Decodes payloads of one source into batches of its payload columns.
pub struct Decoder {
    encoding: Encoding,
    fields: Vec<Arc<Field>>,
    /// Which columns are JSONB: they take any JSON value, as its text.
    json: Vec<bool>,
    /// The decoded values, in one Arrow builder per column.
    columns: Vec<Column>,
    rows: usize,
}

impl Decoder {
    /// A decoder for the payload columns `fields`; `json` marks the JSONB
    /// ones (missing entries count as not JSONB).
    pub fn new(encoding: Encoding, fields: Vec<Arc<Field>>, mut json: Vec<bool>) -> Self {
        let columns = fields.iter().map(|f| Column::new(f.data_type())).collect();
        json.resize(fields.len(), false);
        Self {
            encoding,
            fields,
            json,
            columns,
            rows: 0,
        }
    }

    /// Rows decoded since the last [`Decoder::finish`].
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Decodes one payload and keeps its row, or keeps nothing and says why.
    pub fn push(&mut self, payload: &[u8]) -> Result<(), DecodeError> {
        if payload.is_empty() {
            return Err("empty message".into());
        }
        let row = match &self.encoding {
            Encoding::Json => self.json_row(payload)?,
            Encoding::Csv { delimiter } => self
                .csv_row(payload, *delimiter)?
                .into_iter()
                .map(Pending::Cell)
                .collect(),
            Encoding::Bytes => vec![Pending::Cell(Cell::Bytes(payload.to_vec()))],
        };
        // Every value converted: the row is whole, append it everywhere.
        let mut mismatch = None;
        for (column, value) in self.columns.iter_mut().zip(row) {
            if let Err(e) = column.append(value) {
                mismatch.get_or_insert(e);
            }
        }
        self.rows += 1;
        mismatch.map_or(Ok(()), Err)
    }

    /// The decoded rows as arrays, one per payload column; starts afresh.
    pub fn finish(&mut self) -> Result<Vec<ArrayRef>, DecodeError> {
        self.rows = 0;
        self.fields
            .iter()
            .zip(self.columns.iter_mut())
            .map(|(field, column)| {
                std::mem::replace(column, Column::new(field.data_type())).finish()
            })
            .collect()
    }

    /// Reads one JSON object field by field, straight into its columns'
    /// cells: the object as a whole is never built, and fields that are not
    /// columns are skipped unparsed. A payload that is not an object is
    /// left to [`Decoder::json_value_row`] for its error.
    fn json_row<'p>(&self, payload: &'p [u8]) -> Result<Vec<Pending<'p>>, DecodeError> {
        let starts_object = payload
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| *b == b'{');
        if !starts_object {
            return self.json_value_row(payload);
        }
        let mut slots: Vec<Option<(Result<Pending<'p>, String>, bool)>> =
            vec![None; self.fields.len()];
        let mut de = serde_json::Deserializer::from_slice(payload);
        let read = de::DeserializeSeed::deserialize(
            ObjectRow {
                fields: &self.fields,
                json: &self.json,
                slots: &mut slots,
            },
            &mut de,
        )
        .and_then(|()| de.end());
        // A syntax error wins over a field that did not convert: the
        // message is not JSON at all.
        read.map_err(|e| format!("invalid JSON: {e}"))?;
        slots
            .into_iter()
            .zip(&self.fields)
            .map(|(slot, field)| match slot {
                None => Ok(Pending::Cell(Cell::Null)),
                Some((cell, _)) => cell.map_err(|e| format!("field \"{}\": {e}", field.name())),
            })
            .collect()
    }

    /// The whole payload as a JSON value: only for payloads that do not
    /// start with `{`, to say why they are not a row.
    fn json_value_row<'p>(&self, payload: &'p [u8]) -> Result<Vec<Pending<'p>>, DecodeError> {
        let value: Value =
            serde_json::from_slice(payload).map_err(|e| format!("invalid JSON: {e}"))?;
        match value {
            Value::Object(_) => Err("internal: a JSON object not read as one".into()),
            _ => Err("the JSON message is not an object".into()),
        }
    }

    fn csv_row(&self, payload: &[u8], delimiter: u8) -> Result<Vec<Cell>, DecodeError> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .delimiter(delimiter)
            .from_reader(payload);
        let mut record = csv::StringRecord::new();
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => return Err("empty CSV record".into()),
            Err(e) => return Err(format!("invalid CSV: {e}")),
        }
        if record.len() != self.fields.len() {
            return Err(format!(
                "the CSV record has {} fields, the source has {} columns",
                record.len(),
                self.fields.len()
            ));
        }
        let mut row = Vec::with_capacity(self.fields.len());
        for (field, text) in self.fields.iter().zip(record.iter()) {
            let cell = if text.is_empty() {
                Cell::Null
            } else {
                from_text(text, field.data_type())
                    .map_err(|e| format!("field \"{}\": {e}", field.name()))?
            };
            row.push(cell);
        }
        Ok(row)
    }
}

/// The fields of one JSON object, read into one slot per column. A slot
/// holds the value (or why it does not fit the column) and whether its key
/// matched the column's name exactly: an exact match wins over one that
/// differs only in case, and among exact matches the last one wins.
struct ObjectRow<'a, 'de> {
    fields: &'a [Arc<Field>],
    json: &'a [bool],
    slots: &'a mut [Option<(Result<Pending<'de>, String>, bool)>],
}

impl<'de> de::DeserializeSeed<'de> for ObjectRow<'_, 'de> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> de::Visitor<'de> for ObjectRow<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(column) = map.next_key_seed(ColumnOf(self.fields))? {
            let Some((i, exact)) = column else {
                map.next_value::<de::IgnoredAny>()?;
                continue;
            };
            let value = if self.json[i] {
                // JSONB keeps any value, as its JSON text.
                match map.next_value::<Value>()? {
                    Value::Null => Ok(Pending::Cell(Cell::Null)),
                    v => Ok(Pending::Cell(Cell::Text(v.to_string()))),
                }
            } else {
                let field = &self.fields[i];
                match map.next_value::<Json<'de>>()? {
                    Json::Null => Ok(Pending::Cell(Cell::Null)),
                    Json::Str(s) if *field.data_type() == DataType::Utf8 => Ok(Pending::Str(s)),
                    Json::Value(v) => from_json(&v, field.data_type()).map(Pending::Cell),
                    // Text for another type parses in place (what from_json
                    // does with a string), without copying it into a Value.
                    Json::Str(s) => from_text(s, field.data_type()).map(Pending::Cell),
                }
            };
            if !exact && self.slots[i].is_some() {
                continue;
            }
            self.slots[i] = Some((value, exact));
        }
        Ok(())
    }
}

/// A decoded value waiting to be appended to its column: a cell, or text
/// still borrowed from the message (no copy until it lands in the column).
#[derive(Clone, Debug)]
enum Pending<'p> {
    Cell(Cell),
    Str(&'p str),
}

/// One JSON field's value: text without escapes stays borrowed from the
/// message, everything else is a [`Value`].
enum Json<'de> {
    Null,
    Str(&'de str),
    Value(Value),
}

impl<'de> de::Deserialize<'de> for Json<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> de::Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Json<'de>, E> {
        Ok(Json::Value(Value::Bool(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json<'de>, E> {
        Ok(Json::Value(Value::from(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json<'de>, E> {
        Ok(Json::Value(Value::from(v)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json<'de>, E> {
        Ok(Json::Value(Value::from(v)))
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::Str(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Json<'de>, E> {
        Ok(Json::Value(Value::String(v.to_string())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Json<'de>, E> {
        Ok(Json::Value(Value::String(v)))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Json<'de>, A::Error> {
        de::Deserialize::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(Json::Value)
    }
    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Json<'de>, A::Error> {
        de::Deserialize::deserialize(de::value::MapAccessDeserializer::new(map)).map(Json::Value)
    }
}

/// Reads an object key as the column it names, if any: `(index, exact)`.
struct ColumnOf<'a>(&'a [Arc<Field>]);

impl<'de> de::DeserializeSeed<'de> for ColumnOf<'_> {
    type Value = Option<(usize, bool)>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl de::Visitor<'_> for ColumnOf<'_> {
    type Value = Option<(usize, bool)>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        if let Some(i) = self.0.iter().position(|f| f.name() == key) {
            return Ok(Some((i, true)));
        }
        Ok(self
            .0
            .iter()
            .position(|f| f.name().eq_ignore_ascii_case(key))
            .map(|i| (i, false)))
    }
}

fn from_json(v: &Value, t: &DataType) -> Result<Cell, String> {
    match (v, t) {
        (Value::String(s), DataType::Utf8) => Ok(Cell::Text(s.clone())),
        // Nested values land in a text column as their JSON text.
        (v, DataType::Utf8) => Ok(Cell::Text(v.to_string())),
        (Value::Bool(b), DataType::Boolean) => Ok(Cell::Bool(*b)),
        (Value::Number(n), t) if is_integer(t) => n
            .as_i64()
            .map(Cell::Int)
            .ok_or_else(|| format!("{n} is not an integer"))
            .and_then(|c| check_int_range(c, t)),
        (Value::Number(n), DataType::Float32 | DataType::Float64) => n
            .as_f64()
            .map(Cell::Float)
            .ok_or_else(|| format!("{n} is not a number")),
        (Value::Number(n), DataType::Decimal128(_, _)) => from_text(&n.to_string(), t),
        // Epoch milliseconds.
        (Value::Number(n), DataType::Timestamp(_, _)) => {
            let ms = n
                .as_i64()
                .ok_or_else(|| format!("{n} is not a whole number of epoch milliseconds"))?;
            ms.checked_mul(1_000_000)
                .map(Cell::Timestamp)
                .ok_or_else(|| format!("{n} ms is out of the timestamp range"))
        }
        (Value::String(s), t) => from_text(s, t),
        (v, t) => Err(format!(
            "{} cannot be read as {}",
            json_kind(v),
            crate::engine::pg_type_name(t)
        )),
    }
}

fn from_text(s: &str, t: &DataType) -> Result<Cell, String> {
    let bad = || {
        format!(
            "invalid input syntax for type {}: \"{s}\"",
            crate::engine::pg_type_name(t)
        )
    };
    let s_trim = s.trim();
    match t {
        DataType::Utf8 => Ok(Cell::Text(s.to_string())),
        t if is_integer(t) => s_trim
            .parse::<i64>()
            .map(Cell::Int)
            .map_err(|_| bad())
            .and_then(|c| check_int_range(c, t)),
        DataType::Float32 | DataType::Float64 => {
            s_trim.parse::<f64>().map(Cell::Float).map_err(|_| bad())
        }
        DataType::Decimal128(precision, scale) => {
            let mut d = Decimal::from_str_exact(s_trim)
                .or_else(|_| Decimal::from_scientific(s_trim))
                .map_err(|_| bad())?;
            d = d.round_dp_with_strategy(
                *scale as u32,
                rust_decimal::RoundingStrategy::MidpointAwayFromZero,
            );
            d.rescale(*scale as u32);
            let m = d.mantissa();
            if m.unsigned_abs() >= 10u128.pow(*precision as u32) {
                return Err(format!("numeric field overflow: {s}"));
            }
            Ok(Cell::Decimal(m))
        }
        DataType::Boolean => match s_trim.to_ascii_lowercase().as_str() {
            "t" | "true" | "1" | "yes" | "on" => Ok(Cell::Bool(true)),
            "f" | "false" | "0" | "no" | "off" => Ok(Cell::Bool(false)),
            _ => Err(bad()),
        },
        DataType::Timestamp(_, _) => parse_timestamp(s_trim).map(Cell::Timestamp).ok_or_else(bad),
        DataType::Date32 => NaiveDate::parse_from_str(s_trim, "%Y-%m-%d")
            .map(|d| Cell::Date((d - NaiveDate::default()).num_days() as i32))
            .map_err(|_| bad()),
        DataType::Binary => Ok(Cell::Bytes(s.as_bytes().to_vec())),
        other => Err(format!(
            "columns of type {} cannot be decoded from messages yet",
            crate::engine::pg_type_name(other)
        )),
    }
}

/// ISO-8601 / PostgreSQL timestamp text, with or without a zone, as
/// nanoseconds since the epoch (UTC).
fn parse_timestamp(s: &str) -> Option<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return t.timestamp_nanos_opt();
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z"] {
        if let Ok(t) = DateTime::parse_from_str(s, format) {
            return t.timestamp_nanos_opt();
        }
    }
    for format in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, format) {
            return t.and_utc().timestamp_nanos_opt();
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .and_then(|t| t.and_utc().timestamp_nanos_opt())
}

fn is_integer(t: &DataType) -> bool {
    matches!(t, DataType::Int16 | DataType::Int32 | DataType::Int64)
}

fn check_int_range(c: Cell, t: &DataType) -> Result<Cell, String> {
    let Cell::Int(v) = c else { return Ok(c) };
    let ok = match t {
        DataType::Int16 => i16::try_from(v).is_ok(),
        DataType::Int32 => i32::try_from(v).is_ok(),
        _ => true,
    };
    if ok {
        Ok(c)
    } else {
        Err(format!(
            "value {v} is out of range for type {}",
            crate::engine::pg_type_name(t)
        ))
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Whether a column of type `t` can be decoded from messages.
pub fn decodable(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::Float32
            | DataType::Float64
            | DataType::Boolean
            | DataType::Utf8
            | DataType::Binary
            | DataType::Date32
            | DataType::Decimal128(_, _)
            | DataType::Timestamp(_, _)
    )
}

/// The values of one column being decoded, in its Arrow builder.
enum Column {
    Int16(Int16Builder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Boolean(BooleanBuilder),
    Utf8(StringBuilder),
    Binary(BinaryBuilder),
    Date32(Date32Builder),
    Decimal(Decimal128Builder),
    TimestampSecond(TimestampSecondBuilder),
    TimestampMillisecond(TimestampMillisecondBuilder),
    TimestampMicrosecond(TimestampMicrosecondBuilder),
    TimestampNanosecond(TimestampNanosecondBuilder),
    /// A type messages cannot hold (refused at CREATE SOURCE already).
    Unsupported(DataType, usize),
}

impl Column {
    fn new(t: &DataType) -> Column {
        match t {
            DataType::Int16 => Column::Int16(Int16Builder::new()),
            DataType::Int32 => Column::Int32(Int32Builder::new()),
            DataType::Int64 => Column::Int64(Int64Builder::new()),
            DataType::Float32 => Column::Float32(Float32Builder::new()),
            DataType::Float64 => Column::Float64(Float64Builder::new()),
            DataType::Boolean => Column::Boolean(BooleanBuilder::new()),
            DataType::Utf8 => Column::Utf8(StringBuilder::new()),
            DataType::Binary => Column::Binary(BinaryBuilder::new()),
            DataType::Date32 => Column::Date32(Date32Builder::new()),
            DataType::Decimal128(p, s) => {
                match Decimal128Builder::new().with_precision_and_scale(*p, *s) {
                    Ok(b) => Column::Decimal(b),
                    Err(_) => Column::Unsupported(t.clone(), 0),
                }
            }
            DataType::Timestamp(unit, tz) => {
                let tz = tz.clone();
                match unit {
                    TimeUnit::Second => {
                        Column::TimestampSecond(TimestampSecondBuilder::new().with_timezone_opt(tz))
                    }
                    TimeUnit::Millisecond => Column::TimestampMillisecond(
                        TimestampMillisecondBuilder::new().with_timezone_opt(tz),
                    ),
                    TimeUnit::Microsecond => Column::TimestampMicrosecond(
                        TimestampMicrosecondBuilder::new().with_timezone_opt(tz),
                    ),
                    TimeUnit::Nanosecond => Column::TimestampNanosecond(
                        TimestampNanosecondBuilder::new().with_timezone_opt(tz),
                    ),
                }
            }
            other => Column::Unsupported(other.clone(), 0),
        }
    }

    /// Appends one value. A value of another type than the column's is a
    /// bug of this module: the column gets a NULL (rows stay aligned) and
    /// the caller an internal error.
    fn append(&mut self, value: Pending<'_>) -> Result<(), DecodeError> {
        let cell = match (self, value) {
            (Column::Utf8(b), Pending::Str(s)) => {
                b.append_value(s);
                return Ok(());
            }
            (column, Pending::Str(s)) => {
                column.append_null();
                return Err(format!("internal: text {s:?} for a column of another type"));
            }
            (column, Pending::Cell(cell)) => (column, cell),
        };
        match cell {
            (c, Cell::Null) => c.append_null(),
            (Column::Int16(b), Cell::Int(v)) => b.append_value(v as i16),
            (Column::Int32(b), Cell::Int(v)) => b.append_value(v as i32),
            (Column::Int64(b), Cell::Int(v)) => b.append_value(v),
            (Column::Float32(b), Cell::Float(v)) => b.append_value(v as f32),
            (Column::Float64(b), Cell::Float(v)) => b.append_value(v),
            (Column::Boolean(b), Cell::Bool(v)) => b.append_value(v),
            (Column::Utf8(b), Cell::Text(v)) => b.append_value(v),
            (Column::Binary(b), Cell::Bytes(v)) => b.append_value(v),
            (Column::Date32(b), Cell::Date(v)) => b.append_value(v),
            (Column::Decimal(b), Cell::Decimal(v)) => b.append_value(v),
            (Column::TimestampSecond(b), Cell::Timestamp(v)) => {
                b.append_value(v.div_euclid(1_000_000_000))
            }
            (Column::TimestampMillisecond(b), Cell::Timestamp(v)) => {
                b.append_value(v.div_euclid(1_000_000))
            }
            (Column::TimestampMicrosecond(b), Cell::Timestamp(v)) => {
                b.append_value(v.div_euclid(1_000))
            }
            (Column::TimestampNanosecond(b), Cell::Timestamp(v)) => b.append_value(v),
            (c, other) => {
                c.append_null();
                return Err(format!("internal: {other:?} in a column of another type"));
            }
        }
        Ok(())
    }

    fn append_null(&mut self) {
        match self {
            Column::Int16(b) => b.append_null(),
            Column::Int32(b) => b.append_null(),
            Column::Int64(b) => b.append_null(),
            Column::Float32(b) => b.append_null(),
            Column::Float64(b) => b.append_null(),
            Column::Boolean(b) => b.append_null(),
            Column::Utf8(b) => b.append_null(),
            Column::Binary(b) => b.append_null(),
            Column::Date32(b) => b.append_null(),
            Column::Decimal(b) => b.append_null(),
            Column::TimestampSecond(b) => b.append_null(),
            Column::TimestampMillisecond(b) => b.append_null(),
            Column::TimestampMicrosecond(b) => b.append_null(),
            Column::TimestampNanosecond(b) => b.append_null(),
            Column::Unsupported(_, n) => *n += 1,
        }
    }

    fn finish(self) -> Result<ArrayRef, DecodeError> {
        fn done(mut b: impl ArrayBuilder) -> Result<ArrayRef, DecodeError> {
            Ok(b.finish())
        }
        match self {
            Column::Int16(b) => done(b),
            Column::Int32(b) => done(b),
            Column::Int64(b) => done(b),
            Column::Float32(b) => done(b),
            Column::Float64(b) => done(b),
            Column::Boolean(b) => done(b),
            Column::Utf8(b) => done(b),
            Column::Binary(b) => done(b),
            Column::Date32(b) => done(b),
            Column::Decimal(b) => done(b),
            Column::TimestampSecond(b) => done(b),
            Column::TimestampMillisecond(b) => done(b),
            Column::TimestampMicrosecond(b) => done(b),
            Column::TimestampNanosecond(b) => done(b),
            Column::Unsupported(t, 0) => Ok(arrow::array::new_empty_array(&t)),
            Column::Unsupported(t, _) => Err(format!(
                "columns of type {} cannot be decoded from messages yet",
                crate::engine::pg_type_name(&t)
            )),
        }
    }
}

/// A batch of `schema` from payload columns plus metadata columns.
pub fn batch(
    schema: &SchemaRef,
    mut columns: Vec<ArrayRef>,
    metadata: Vec<ArrayRef>,
) -> Result<RecordBatch, DecodeError> {
    columns.extend(metadata);
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| format!("internal: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Int64Type, TimestampNanosecondType};

    fn fields() -> Vec<Arc<Field>> {
        vec![
            Arc::new(Field::new("id", DataType::Int64, true)),
            Arc::new(Field::new("name", DataType::Utf8, true)),
            Arc::new(Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                true,
            )),
            Arc::new(Field::new("price", DataType::Decimal128(10, 2), true)),
        ]
    }

    #[test]
    fn json_rows_decode_whole_or_not_at_all() {
        let mut d = Decoder::new(Encoding::Json, fields(), vec![]);
        d.push(br#"{"id": 1, "name": "a", "ts": "2026-01-01 00:00:01", "price": 1.5}"#)
            .unwrap();
        d.push(br#"{"id": 2, "ts": 1767225602000, "extra": true}"#)
            .unwrap();
        assert!(d.push(br#"{"id": "x"}"#).is_err());
        assert!(d.push(br#"{"id": 3, "ts": "not a time"}"#).is_err());
        assert!(d.push(b"{not json").is_err());
        assert!(d.push(b"").is_err());
        assert!(d.push(b"[1]").is_err());
        assert_eq!(d.rows(), 2);
        let cols = d.finish().unwrap();
        assert_eq!(cols[0].as_primitive::<Int64Type>().values(), &[1, 2]);
        assert!(cols[1].is_null(1));
        let ts = cols[2].as_primitive::<TimestampNanosecondType>();
        assert_eq!(ts.value(1) - ts.value(0), 1_000_000_000);
        assert_eq!(d.rows(), 0);
    }

    #[test]
    fn json_fields_match_columns_by_name_exact_first() {
        let mut d = Decoder::new(Encoding::Json, fields(), vec![false, true]);
        // Unknown fields, nested or not, are skipped; a JSONB column takes
        // any value as its text; an exact name wins over one that differs in
        // case, wherever it stands; a repeated exact name keeps the last.
        d.push(br#"{"skip": {"a": [1, {"b": 2}]}, "ID": 9, "id": 1, "name": {"k": [1]}}"#)
            .unwrap();
        d.push(br#"{"id": 2, "id": 3, "ID": 4}"#).unwrap();
        d.push(br#"{"Id": 5, "ID": 6}"#).unwrap();
        let cols = d.finish().unwrap();
        assert_eq!(cols[0].as_primitive::<Int64Type>().values(), &[1, 3, 5]);
        assert_eq!(cols[1].as_string::<i32>().value(0), r#"{"k":[1]}"#);
        // Errors name the field; a syntax error wins; trailing bytes refuse
        // the message; a value that converts is not hurt by a bad
        // case-insensitive duplicate it overrides.
        let e = d.push(br#"{"id": 1, "ts": true}"#).unwrap_err();
        assert_eq!(
            e,
            "field \"ts\": a boolean cannot be read as timestamp without time zone"
        );
        let e = d.push(br#"{"id": "x", "name": }"#).unwrap_err();
        assert!(e.starts_with("invalid JSON"), "{e}");
        assert!(d.push(br#"{"id": 1} x"#).is_err());
        assert_eq!(
            d.push(b"  [1]").unwrap_err(),
            "the JSON message is not an object"
        );
        d.push(br#"{"ID": "x", "id": 7}"#).unwrap();
        assert_eq!(d.rows(), 1);
    }

    #[test]
    fn csv_rows_decode_by_position() {
        let mut d = Decoder::new(Encoding::Csv { delimiter: b',' }, fields(), vec![]);
        d.push(b"1,\"a, b\",2026-01-01T00:00:00Z,2.25").unwrap();
        d.push(b"2,,,").unwrap();
        assert!(d.push(b"1,2").is_err());
        assert_eq!(d.rows(), 2);
    }
}
