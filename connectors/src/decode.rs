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

mod json_scan;

use json_scan::{Scanned, Scanner, Str, Unsure};

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

pub use crate::error::{DecodeError, ValueError};

/// Decodes payloads of one source into batches of its payload columns.
pub struct Decoder {
    encoding: Encoding,
    fields: Vec<Arc<Field>>,
    /// Which columns are JSONB: they take any JSON value, as its text.
    json: Vec<bool>,
    /// The decoded values, in one Arrow builder per column.
    columns: Vec<Column>,
    rows: usize,
    /// Whether no two columns have the same name (then a key that names
    /// the column after the last one matched is looked up there first).
    distinct_names: bool,
    /// Reused from message to message: the row being read (always empty
    /// between messages), decoded escapes, brackets of skipped values.
    slots: Vec<Slot<'static>>,
    scratch: Vec<u8>,
    stack: Vec<u8>,
}

/// One column's value in the row being read: the value (or why it does not
/// fit the column) and whether its key matched the column's name exactly.
type Slot<'p> = Option<(Result<Pending<'p>, ValueError>, bool)>;

/// Empties `slots` and gives its allocation to a row of another message.
fn recycle<'a, 'b>(mut slots: Vec<Slot<'a>>) -> Vec<Slot<'b>> {
    slots.clear();
    // An empty vector collected into one of the same layout keeps its
    // allocation (the standard library collects such iterators in place).
    slots.into_iter().filter_map(|_| None).collect()
}

/// Nesting deeper than this in a column's value is left to serde_json,
/// which refuses values nested 128 deep.
const FAST_DEPTH: usize = 100;

impl Decoder {
    /// A decoder for the payload columns `fields`; `json` marks the JSONB
    /// ones (missing entries count as not JSONB).
    pub fn new(encoding: Encoding, fields: Vec<Arc<Field>>, mut json: Vec<bool>) -> Self {
        let columns = fields.iter().map(|f| Column::new(f.data_type())).collect();
        json.resize(fields.len(), false);
        let distinct_names = fields
            .iter()
            .enumerate()
            .all(|(i, f)| fields[..i].iter().all(|g| g.name() != f.name()));
        Self {
            encoding,
            fields,
            json,
            columns,
            rows: 0,
            distinct_names,
            slots: Vec::new(),
            scratch: Vec::new(),
            stack: Vec::new(),
        }
    }

    /// Rows decoded since the last [`Decoder::finish`].
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Decodes one payload and keeps its row, or keeps nothing and says why.
    pub fn push(&mut self, payload: &[u8]) -> Result<(), DecodeError> {
        if payload.is_empty() {
            return Err(DecodeError::Empty);
        }
        let row = match &self.encoding {
            Encoding::Json => return self.push_json(payload),
            Encoding::Csv { delimiter } => self
                .csv_row(payload, *delimiter)?
                .into_iter()
                .map(Pending::Cell)
                .collect(),
            Encoding::Bytes => vec![Pending::Cell(Cell::Bytes(payload.to_vec()))],
        };
        self.append_row(row)
    }

    /// Appends a row whose every value converted, one value per column.
    fn append_row<'p>(
        &mut self,
        row: impl IntoIterator<Item = Pending<'p>>,
    ) -> Result<(), DecodeError> {
        let mut mismatch = None;
        for (column, value) in self.columns.iter_mut().zip(row) {
            if let Err(e) = column.append(value) {
                mismatch.get_or_insert(e);
            }
        }
        self.rows += 1;
        mismatch.map_or(Ok(()), Err)
    }

    /// A JSON message: read in one pass by [`scan_row`] when it can vouch
    /// for the message, else by serde_json ([`Decoder::json_row`]), which
    /// then also explains why a message is not JSON.
    fn push_json(&mut self, payload: &[u8]) -> Result<(), DecodeError> {
        let mut slots = recycle(std::mem::take(&mut self.slots));
        slots.resize_with(self.fields.len(), || None);
        let scanned = scan_row(
            Row {
                fields: &self.fields,
                json: &self.json,
                distinct_names: self.distinct_names,
            },
            payload,
            &mut slots,
            &mut self.scratch,
            &mut self.stack,
        );
        let pushed = match scanned {
            Ok(()) => self.push_slots(&mut slots),
            Err(Unsure) => self.json_row(payload).and_then(|row| self.append_row(row)),
        };
        self.slots = recycle(slots);
        pushed
    }

    /// Appends the row read by [`scan_row`] if its every value converted;
    /// else says which field did not (the first in column order).
    fn push_slots(&mut self, slots: &mut Vec<Slot<'_>>) -> Result<(), DecodeError> {
        let refused = self
            .fields
            .iter()
            .zip(slots.iter())
            .find_map(|(field, slot)| match slot {
                Some((Err(e), _)) => Some(DecodeError::Field {
                    field: field.name().clone(),
                    error: e.clone(),
                }),
                _ => None,
            });
        if let Some(e) = refused {
            return Err(e);
        }
        self.append_row(slots.drain(..).map(|slot| match slot {
            Some((Ok(value), _)) => value,
            // None: a missing field. Errors were refused above.
            None | Some((Err(_), _)) => Pending::Cell(Cell::Null),
        }))
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
        let mut slots: Vec<Slot<'p>> = vec![None; self.fields.len()];
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
        read.map_err(|e| DecodeError::InvalidJson(e.to_string()))?;
        slots
            .into_iter()
            .zip(&self.fields)
            .map(|(slot, field)| match slot {
                None => Ok(Pending::Cell(Cell::Null)),
                Some((cell, _)) => cell.map_err(|error| DecodeError::Field {
                    field: field.name().clone(),
                    error,
                }),
            })
            .collect()
    }

    /// The whole payload as a JSON value: only for payloads that do not
    /// start with `{`, to say why they are not a row.
    fn json_value_row<'p>(&self, payload: &'p [u8]) -> Result<Vec<Pending<'p>>, DecodeError> {
        let value: Value =
            serde_json::from_slice(payload).map_err(|e| DecodeError::InvalidJson(e.to_string()))?;
        match value {
            Value::Object(_) => Err(DecodeError::Internal(
                "a JSON object not read as one".into(),
            )),
            _ => Err(DecodeError::NotAnObject),
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
            Ok(false) => return Err(DecodeError::EmptyCsv),
            Err(e) => return Err(DecodeError::InvalidCsv(e.to_string())),
        }
        if record.len() != self.fields.len() {
            return Err(DecodeError::CsvFieldCount {
                found: record.len(),
                expected: self.fields.len(),
            });
        }
        let mut row = Vec::with_capacity(self.fields.len());
        for (field, text) in self.fields.iter().zip(record.iter()) {
            let cell = if text.is_empty() {
                Cell::Null
            } else {
                from_text(text, field.data_type()).map_err(|error| DecodeError::Field {
                    field: field.name().clone(),
                    error,
                })?
            };
            row.push(cell);
        }
        Ok(row)
    }
}

/// What [`scan_row`] needs to know of the columns.
#[derive(Clone, Copy)]
struct Row<'a> {
    fields: &'a [Arc<Field>],
    json: &'a [bool],
    distinct_names: bool,
}

impl Row<'_> {
    /// The column a key names, if any: `(index, exact)`. An exact match
    /// first (the first column of that name), else one that differs only
    /// in ASCII case. `hint` is the column most likely named.
    fn column_of(&self, key: &[u8], hint: usize) -> Option<(usize, bool)> {
        if self.distinct_names {
            if let Some(f) = self.fields.get(hint) {
                if f.name().as_bytes() == key {
                    return Some((hint, true));
                }
            }
        }
        if let Some(i) = self.fields.iter().position(|f| f.name().as_bytes() == key) {
            return Some((i, true));
        }
        self.fields
            .iter()
            .position(|f| f.name().as_bytes().eq_ignore_ascii_case(key))
            .map(|i| (i, false))
    }
}

/// Reads one JSON object in one pass over its bytes into `slots`, one per
/// column, by the rules of [`ObjectRow`]: fields that are not columns are
/// skipped unbuilt, values are converted as they are read, text without
/// escapes stays borrowed from the message. [`Unsure`] when the message is
/// not JSON or not an object, or holds what this reader leaves to serde_json
/// (values nested deep); the slots are then to be ignored.
fn scan_row<'p>(
    row: Row<'_>,
    payload: &'p [u8],
    slots: &mut [Slot<'p>],
    scratch: &mut Vec<u8>,
    stack: &mut Vec<u8>,
) -> Scanned<()> {
    let mut s = Scanner::new(payload);
    s.skip_ws();
    s.eat(b'{')?;
    s.skip_ws();
    if s.peek() == Some(b'}') {
        s.eat(b'}')?;
    } else {
        let mut hint = 0;
        loop {
            let column = match s.string(scratch)? {
                Str::Borrowed(key) => row.column_of(key.as_bytes(), hint),
                Str::Unescaped(key) => row.column_of(key.as_bytes(), hint),
            };
            s.skip_ws();
            s.eat(b':')?;
            s.skip_ws();
            match column {
                None => {
                    s.skip_value(stack)?;
                }
                Some((i, exact)) => {
                    hint = i + 1;
                    let field = row.fields.get(i).ok_or(Unsure)?;
                    let json = row.json.get(i).copied().unwrap_or(false);
                    let value = scan_value(&mut s, field.data_type(), json, scratch, stack)?;
                    let slot = slots.get_mut(i).ok_or(Unsure)?;
                    // An exact match replaces what came before; one that
                    // differs in case only fills an empty slot.
                    if exact || slot.is_none() {
                        *slot = Some((value, exact));
                    }
                }
            }
            s.skip_ws();
            match s.next_byte() {
                Some(b',') => s.skip_ws(),
                Some(b'}') => break,
                _ => return Err(Unsure),
            }
        }
    }
    s.skip_ws();
    if s.at_end() {
        Ok(())
    } else {
        Err(Unsure)
    }
}

/// Reads the value of a column's field, converted to the column's type `t`
/// (or, for a JSONB column, to its JSON text), as [`ObjectRow`] converts it.
fn scan_value<'p>(
    s: &mut Scanner<'p>,
    t: &DataType,
    json: bool,
    scratch: &mut Vec<u8>,
    stack: &mut Vec<u8>,
) -> Scanned<Result<Pending<'p>, ValueError>> {
    let start = s.pos();
    let value = match s.peek() {
        Some(b'"') => {
            let text = s.string(scratch)?;
            if json {
                return Ok(json_cell(
                    &Value::String(text.as_str().to_string()),
                    t,
                    true,
                ));
            }
            match text {
                Str::Borrowed(text) if *t == DataType::Utf8 => Ok(Pending::Str(text)),
                Str::Unescaped(text) if *t == DataType::Utf8 => {
                    Ok(Pending::Cell(Cell::Text(text.to_string())))
                }
                text => from_text(text.as_str(), t).map(Pending::Cell),
            }
        }
        Some(b'n') => {
            s.literal(b"null")?;
            Ok(Pending::Cell(Cell::Null))
        }
        Some(b't') => {
            s.literal(b"true")?;
            json_cell(&Value::Bool(true), t, json)
        }
        Some(b'f') => {
            s.literal(b"false")?;
            json_cell(&Value::Bool(false), t, json)
        }
        Some(b'-' | b'0'..=b'9') => match s.number()? {
            Some(n) if !json && is_integer(t) => {
                check_int_range(Cell::Int(n), t).map(Pending::Cell)
            }
            Some(n) => json_cell(&Value::from(n), t, json),
            // Fractions, exponents, long integers: serde_json's own reading.
            None => json_cell(&span_value(s.since(start))?, t, json),
        },
        Some(b'[' | b'{') => {
            if s.skip_value(stack)? > FAST_DEPTH {
                return Err(Unsure);
            }
            json_cell(&span_value(s.since(start))?, t, json)
        }
        _ => return Err(Unsure),
    };
    Ok(value)
}

/// The JSON text of one value, as serde_json reads it; [`Unsure`] when
/// serde_json refuses it (a string in it that is not UTF-8, say).
fn span_value(text: &[u8]) -> Scanned<Value> {
    serde_json::from_slice(text).map_err(|_| Unsure)
}

/// A value other than a string without escapes, for a column of type `t`
/// or a JSONB column.
fn json_cell<'p>(v: &Value, t: &DataType, json: bool) -> Result<Pending<'p>, ValueError> {
    match v {
        Value::Null => Ok(Pending::Cell(Cell::Null)),
        v if json => Ok(Pending::Cell(Cell::Text(v.to_string()))),
        v => from_json(v, t).map(Pending::Cell),
    }
}

/// The fields of one JSON object, read into one slot per column. A slot
/// holds the value (or why it does not fit the column) and whether its key
/// matched the column's name exactly: an exact match wins over one that
/// differs only in case, and among exact matches the last one wins.
struct ObjectRow<'a, 'de> {
    fields: &'a [Arc<Field>],
    json: &'a [bool],
    slots: &'a mut [Slot<'de>],
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

fn from_json(v: &Value, t: &DataType) -> Result<Cell, ValueError> {
    match (v, t) {
        (Value::String(s), DataType::Utf8) => Ok(Cell::Text(s.clone())),
        // Nested values land in a text column as their JSON text.
        (v, DataType::Utf8) => Ok(Cell::Text(v.to_string())),
        (Value::Bool(b), DataType::Boolean) => Ok(Cell::Bool(*b)),
        (Value::Number(n), t) if is_integer(t) => n
            .as_i64()
            .map(Cell::Int)
            .ok_or_else(|| ValueError::NotAnInteger(n.clone()))
            .and_then(|c| check_int_range(c, t)),
        (Value::Number(n), DataType::Float32 | DataType::Float64) => n
            .as_f64()
            .map(Cell::Float)
            .ok_or_else(|| ValueError::NotANumber(n.clone())),
        (Value::Number(n), DataType::Decimal128(_, _)) => from_text(&n.to_string(), t),
        // Epoch milliseconds.
        (Value::Number(n), DataType::Timestamp(_, _)) => {
            let ms = n
                .as_i64()
                .ok_or_else(|| ValueError::NotEpochMillis(n.clone()))?;
            ms.checked_mul(1_000_000)
                .map(Cell::Timestamp)
                .ok_or_else(|| ValueError::TimestampOutOfRange(n.clone()))
        }
        (Value::String(s), t) => from_text(s, t),
        (v, t) => Err(ValueError::WrongKind {
            kind: json_kind(v),
            type_name: millrace_planner::naming::pg_type_name(t),
        }),
    }
}

fn from_text(s: &str, t: &DataType) -> Result<Cell, ValueError> {
    let bad = || ValueError::InvalidText {
        type_name: millrace_planner::naming::pg_type_name(t),
        text: s.to_string(),
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
                return Err(ValueError::NumericOverflow(s.to_string()));
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
        other => Err(ValueError::UndecodableType(
            millrace_planner::naming::pg_type_name(other),
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

fn check_int_range(c: Cell, t: &DataType) -> Result<Cell, ValueError> {
    let Cell::Int(v) = c else { return Ok(c) };
    let ok = match t {
        DataType::Int16 => i16::try_from(v).is_ok(),
        DataType::Int32 => i32::try_from(v).is_ok(),
        _ => true,
    };
    if ok {
        Ok(c)
    } else {
        Err(ValueError::OutOfRange {
            value: v,
            type_name: millrace_planner::naming::pg_type_name(t),
        })
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
                return Err(DecodeError::Internal(format!(
                    "text {s:?} for a column of another type"
                )));
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
                return Err(DecodeError::Internal(format!(
                    "{other:?} in a column of another type"
                )));
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
            Column::Unsupported(t, _) => Err(DecodeError::UndecodableType(
                millrace_planner::naming::pg_type_name(&t),
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
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| DecodeError::Internal(e.to_string()))
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
            e.to_string(),
            "field \"ts\": a boolean cannot be read as timestamp without time zone"
        );
        let e = d.push(br#"{"id": "x", "name": }"#).unwrap_err();
        assert!(matches!(e, DecodeError::InvalidJson(_)), "{e}");
        assert!(e.to_string().starts_with("invalid JSON"), "{e}");
        assert!(d.push(br#"{"id": 1} x"#).is_err());
        let e = d.push(b"  [1]").unwrap_err();
        assert_eq!(e, DecodeError::NotAnObject);
        assert_eq!(e.to_string(), "the JSON message is not an object");
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

    /// Columns of every kind, the last two JSONB.
    fn all_kinds() -> Decoder {
        let fields = [
            ("id", DataType::Int64),
            ("name", DataType::Utf8),
            ("ts", DataType::Timestamp(TimeUnit::Nanosecond, None)),
            ("price", DataType::Decimal128(10, 2)),
            ("small", DataType::Int16),
            ("f", DataType::Float64),
            ("ok", DataType::Boolean),
            ("day", DataType::Date32),
            ("doc", DataType::Utf8),
            ("Doc2", DataType::Utf8),
        ]
        .into_iter()
        .map(|(name, t)| Arc::new(Field::new(name, t, true)))
        .collect::<Vec<_>>();
        let mut json = vec![false; fields.len()];
        json[8] = true;
        json[9] = true;
        Decoder::new(Encoding::Json, fields, json)
    }

    fn shown(value: Pending<'_>) -> Cell {
        match value {
            Pending::Cell(c) => c,
            Pending::Str(s) => Cell::Text(s.to_string()),
        }
    }

    /// Reads `payload` with the one-pass reader and with serde_json, and
    /// checks that they agree (same row, or same error) whenever the
    /// one-pass reader vouches for the message. Returns whether it did,
    /// and serde_json's outcome.
    fn agrees(d: &Decoder, payload: &[u8]) -> (bool, Result<Vec<Cell>, DecodeError>) {
        let slow = d
            .json_row(payload)
            .map(|row| row.into_iter().map(shown).collect::<Vec<_>>());
        let mut slots = vec![None; d.fields.len()];
        let row = Row {
            fields: &d.fields,
            json: &d.json,
            distinct_names: d.distinct_names,
        };
        let scanned = scan_row(row, payload, &mut slots, &mut Vec::new(), &mut Vec::new());
        if scanned.is_err() {
            return (false, slow);
        }
        let fast = d
            .fields
            .iter()
            .zip(slots)
            .map(|(field, slot)| match slot {
                None => Ok(Cell::Null),
                Some((value, _)) => value.map(shown).map_err(|error| DecodeError::Field {
                    field: field.name().clone(),
                    error,
                }),
            })
            .collect::<Result<Vec<_>, _>>();
        assert_eq!(fast, slow, "{}", String::from_utf8_lossy(payload));
        (true, slow)
    }

    /// The one-pass reader reads `payload` itself, as serde_json would.
    fn fast(d: &Decoder, payload: &str) -> Result<Vec<Cell>, DecodeError> {
        let (vouched, outcome) = agrees(d, payload.as_bytes());
        assert!(vouched, "left to serde_json: {payload}");
        outcome
    }

    /// `payload` is left to serde_json, which refuses it as not JSON.
    fn not_json(d: &Decoder, payload: &[u8]) {
        let (vouched, outcome) = agrees(d, payload);
        assert!(!vouched, "{}", String::from_utf8_lossy(payload));
        let e = outcome.unwrap_err();
        assert!(matches!(e, DecodeError::InvalidJson(_)), "{e}");
        assert!(e.to_string().starts_with("invalid JSON"), "{e}");
    }

    fn text(s: &str) -> Cell {
        Cell::Text(s.into())
    }

    #[test]
    fn json_escapes_decode_in_keys_and_values() {
        let d = all_kinds();
        let row = fast(
            &d,
            r#"{"\u0069d": 1, "name": "q\" b\\ s\/ \b\f\n\r\t \u00e9\u4E2D\ud83d\ude00", "doc": "a\/b"}"#,
        )
        .unwrap();
        assert_eq!(row[0], Cell::Int(1));
        assert_eq!(row[1], text("q\" b\\ s/ \u{8}\u{c}\n\r\t é中😀"));
        assert_eq!(row[8], text(r#""a/b""#));
        let row = fast(&d, r#"{"small": "\u0031\u0032", "day": "2026-01-0\u0032"}"#).unwrap();
        assert_eq!(row[4], Cell::Int(12));
        assert_eq!(row[7], Cell::Date(20455));
        // Lone surrogates are not text: serde_json refuses them.
        not_json(&d, br#"{"name": "\ud83d"}"#);
        not_json(&d, br#"{"name": "\ude00\ud83d"}"#);
        not_json(&d, br#"{"n\ud83d": 1}"#);
        not_json(&d, br#"{"name": "\u12"}"#);
        not_json(&d, br#"{"name": "\q"}"#);
        not_json(&d, b"{\"name\": \"a\x01\"}");
        // ...but serde_json does not check the strings it skips.
        assert!(fast(&d, r#"{"other": ["\ud83d"], "id": 2}"#).is_ok());
    }

    #[test]
    fn json_numbers_convert_as_serde_json_reads_them() {
        let d = all_kinds();
        let row = fast(
            &d,
            r#"{"id": -42, "ts": 1767225600000, "price": 1.005, "small": 7, "f": 2.5e-1, "doc": 1.50}"#,
        )
        .unwrap();
        assert_eq!(row[0], Cell::Int(-42));
        assert_eq!(row[2], Cell::Timestamp(1_767_225_600_000_000_000));
        assert_eq!(row[3], Cell::Decimal(101));
        assert_eq!(row[4], Cell::Int(7));
        assert_eq!(row[5], Cell::Float(0.25));
        assert_eq!(row[8], text("1.5"));
        assert_eq!(fast(&d, r#"{"f": 3}"#).unwrap()[5], Cell::Float(3.0));
        assert_eq!(fast(&d, r#"{"name": 1e2}"#).unwrap()[1], text("100.0"));
        // Fractions and exponents are not integers, even whole ones.
        for (json, e) in [
            (r#"{"id": 1.0}"#, "field \"id\": 1.0 is not an integer"),
            (r#"{"id": 1e3}"#, "field \"id\": 1000.0 is not an integer"),
            (r#"{"id": -0}"#, "field \"id\": -0.0 is not an integer"),
            (
                r#"{"id": 9223372036854775808}"#,
                "field \"id\": 9223372036854775808 is not an integer",
            ),
            (
                r#"{"small": 40000}"#,
                "field \"small\": value 40000 is out of range for type smallint",
            ),
            (
                r#"{"ts": 1.5}"#,
                "field \"ts\": 1.5 is not a whole number of epoch milliseconds",
            ),
            (
                r#"{"ts": 999999999999999999}"#,
                "field \"ts\": 999999999999999999 ms is out of the timestamp range",
            ),
        ] {
            assert_eq!(fast(&d, json).unwrap_err().to_string(), e);
        }
        assert_eq!(
            fast(&d, r#"{"id": 9223372036854775807}"#).unwrap()[0],
            Cell::Int(i64::MAX)
        );
        assert_eq!(
            fast(&d, r#"{"id": -9223372036854775808}"#).unwrap()[0],
            Cell::Int(i64::MIN)
        );
        for bad in [
            &br#"{"id": 01}"#[..],
            br#"{"id": 1.}"#,
            br#"{"id": -}"#,
            br#"{"id": 1e}"#,
        ] {
            not_json(&d, bad);
        }
    }

    #[test]
    fn json_nested_values_are_skipped_or_kept_as_text() {
        let d = all_kinds();
        let row = fast(
            &d,
            r#"{"x": {"a": [1, {"b": "}"}], "c": {}}, "id": 1, "doc": {"z": [true, null], "a": 1},
                "Doc2": [], "name": [1, "a"]}"#,
        )
        .unwrap();
        assert_eq!(row[0], Cell::Int(1));
        // JSONB keeps serde_json's text of the value, keys in its order.
        assert_eq!(row[8], text(r#"{"a":1,"z":[true,null]}"#));
        assert_eq!(row[9], text("[]"));
        assert_eq!(row[1], text(r#"[1,"a"]"#));
        assert_eq!(
            fast(&d, r#"{"id": {"a": 1}}"#).unwrap_err().to_string(),
            "field \"id\": an object cannot be read as bigint"
        );
        assert_eq!(
            fast(&d, r#"{"ok": [1]}"#).unwrap_err(),
            DecodeError::Field {
                field: "ok".into(),
                error: ValueError::WrongKind {
                    kind: "an array",
                    type_name: "boolean".into(),
                },
            }
        );
        // Skipped values may nest without limit; a column's value is left
        // to serde_json when it nests deep (which refuses 128 levels).
        let deep = |n| format!(r#"{{"x": {}{}, "id": 1}}"#, "[".repeat(n), "]".repeat(n));
        assert!(fast(&d, &deep(1000)).is_ok());
        let deep = |n| format!(r#"{{"doc": {}{}}}"#, "[".repeat(n), "]".repeat(n));
        assert!(fast(&d, &deep(FAST_DEPTH)).is_ok());
        assert!(!agrees(&d, deep(FAST_DEPTH + 1).as_bytes()).0);
        not_json(&d, deep(200).as_bytes());
        not_json(&d, br#"{"x": [1,], "id": 1}"#);
        not_json(&d, br#"{"x": {"a" 1}, "id": 1}"#);
    }

    #[test]
    fn json_whitespace_may_stand_everywhere() {
        let d = all_kinds();
        let row = fast(
            &d,
            " \t\r\n{ \t\r\n\"id\" \t\r\n: \t\r\n5 \t\r\n, \"x\" : [ 1 , { \"a\" : 2 } ] ,\n\"name\"\n:\n\"n\"\n}\n \t\r",
        )
        .unwrap();
        assert_eq!(row[0], Cell::Int(5));
        assert_eq!(row[1], text("n"));
        assert_eq!(fast(&d, " { } ").unwrap()[0], Cell::Null);
        // Only JSON's four whitespace bytes.
        not_json(&d, b"\x0c{\"id\": 1}");
        not_json(&d, b"{\"id\":\x0c1}");
        not_json(&d, b"{\"id\": 1}\x0c");
        not_json(&d, b"{\"id\": 1} x");
        not_json(&d, b"{\"id\": 1,}");
        not_json(&d, b"{\"id\": 1 \"name\": \"a\"}");
        not_json(&d, b"{\"id\": 1");
        not_json(&d, b"{\"id\"}");
        not_json(&d, b"{id: 1}");
    }

    #[test]
    fn json_text_must_be_utf8() {
        let d = all_kinds();
        assert_eq!(fast(&d, "{\"name\": \"é😀\"}").unwrap()[1], text("é😀"));
        not_json(&d, b"{\"name\": \"\xff\"}");
        not_json(&d, b"{\"name\": \"\\n\xc3\"}");
        not_json(&d, b"{\"doc\": [\"\xc3\x28\"]}");
        not_json(&d, b"{\"n\xffme\": 1}");
        not_json(&d, b"{\"id\": 1, \xff}");
        // Skipped strings are not checked, as serde_json does not check them.
        not_json(&d, b"{\"x\": \"\x00\"}");
        let (vouched, outcome) = agrees(&d, b"{\"x\": \"\xff\", \"id\": 3}");
        assert!(vouched);
        assert_eq!(outcome.unwrap()[0], Cell::Int(3));
    }

    #[test]
    fn json_decoding_reuses_its_buffers_and_keeps_whole_rows() {
        let mut d = all_kinds();
        d.push(br#"{"id": 1, "name": "a\nb"}"#).unwrap();
        let capacity = d.slots.capacity();
        assert!(capacity >= d.fields.len());
        assert!(d.slots.is_empty());
        assert!(d.push(br#"{"id": 2, "small": 99999}"#).is_err());
        assert!(d.push(br#"{"id": 3, "name": "\ud800"}"#).is_err());
        d.push(br#"{"name": "c", "id": 4}"#).unwrap();
        assert_eq!(d.slots.capacity(), capacity);
        assert_eq!(d.rows(), 2);
        let cols = d.finish().unwrap();
        assert_eq!(cols[0].as_primitive::<Int64Type>().values(), &[1, 4]);
        assert_eq!(cols[1].as_string::<i32>().value(0), "a\nb");
        assert_eq!(cols[1].as_string::<i32>().value(1), "c");
        assert!(cols[4].is_null(0) && cols[4].is_null(1));
    }

    /// Random edits of valid messages: wherever the one-pass reader
    /// vouches for one, serde_json reads the same row or the same error.
    #[test]
    fn json_one_pass_reader_agrees_with_serde_json_on_mangled_messages() {
        let d = all_kinds();
        let bases: [&[u8]; 5] = [
            br#"{"id": 12, "name": "a\"b\u00e9", "ts": "2026-01-01 00:00:01", "price": 1.5}"#,
            br#"{"ID": -3, "id": 4, "Name": "x", "ts": 1767225602000, "small": 12, "f": -1.5e3}"#,
            br#"{"x": {"a": [1, 2.5, "s", null, true]}, "doc": {"k": [1, {"b": false}]}, "ok": true}"#,
            br#" { "day" : "2026-01-02" , "Doc2" : "\ud83d\ude00" , "price" : "12.345" } "#,
            "{\"name\": \"é中\", \"id\": 0, \"f\": 0.1, \"ok\": false, \"doc\": null}".as_bytes(),
        ];
        let alphabet = b"{}[]\":,\\ u0123456789eE.-+ntfrlasx\x00\x1f\xff\xc3\xa9\t\n";
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let mut vouched = 0;
        let mut tried = 0;
        for base in bases {
            assert!(agrees(&d, base).0, "{}", String::from_utf8_lossy(base));
            for _ in 0..3000 {
                let mut m = base.to_vec();
                for _ in 0..1 + next(3) {
                    let at = next(m.len() + 1);
                    match next(4) {
                        0 if at < m.len() => {
                            m.remove(at);
                        }
                        1 if at < m.len() => m[at] = alphabet[next(alphabet.len())],
                        2 => {
                            let end = (at + next(8)).min(m.len());
                            let copy = m[at..end].to_vec();
                            let to = next(m.len() + 1);
                            m.splice(to..to, copy);
                        }
                        _ => m.insert(at, alphabet[next(alphabet.len())]),
                    }
                }
                tried += 1;
                if agrees(&d, &m).0 {
                    vouched += 1;
                }
            }
        }
        // Most edits break the JSON; enough of them do not.
        assert!(vouched > tried / 20, "{vouched} of {tried}");
    }
}
