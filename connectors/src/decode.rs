//! Message payloads to typed rows: `ENCODE JSON`, `CSV` and `BYTES`.
//!
//! A message decodes completely or not at all. A JSON message is read in
//! one pass straight into the column buffers ([`columns`]), which take its
//! values back if a later field does not convert; a message the one-pass
//! reader does not vouch for, and CSV and bytes, are first turned into one
//! [`Cell`] per column, appended once every column converted. A message
//! that does not decode is the producer's fault; the caller counts and
//! skips it.

use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::datatypes::{DataType, Field, SchemaRef};
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use rust_decimal::Decimal;
use serde::de;
use serde_json::Value;

mod columns;
mod json_scan;

use columns::{Column, Room};
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
    /// The decoded values, one buffer per column, `rows` long between
    /// messages.
    columns: Vec<Column>,
    rows: usize,
    /// Per column, how much its last batch held: made room for when the
    /// next batch starts.
    room: Vec<Room>,
    /// Whether no two columns have the same name (then a key that names
    /// the column after the last one matched is looked up there first).
    distinct_names: bool,
    /// Per column, its name as a JSON key with its quotes (`"price"`), to
    /// be recognised by comparing bytes; `None` when names are not distinct
    /// or a name would be escaped in JSON (its key is then read and looked
    /// up).
    quoted: Vec<Option<Box<[u8]>>>,
    /// Reused from message to message: what the row being read holds per
    /// column, why values of it were refused (by column), decoded escapes,
    /// brackets of skipped values.
    seen: Vec<Seen>,
    refusals: Vec<(usize, DecodeError)>,
    scratch: Vec<u8>,
    stack: Vec<u8>,
}

/// What the row being read holds for one column so far (one byte, as it
/// is reset for every message).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Seen {
    /// No field named it yet: NULL if none does.
    Empty,
    /// Its value, already in the column's buffer.
    Value,
    /// A value that does not fit the column (nothing in the buffer; why is
    /// in `Decoder::refusals`): the message is refused unless a later exact
    /// match replaces it.
    Refused,
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
        let quoted = fields
            .iter()
            .map(|f| {
                let name = f.name().as_bytes();
                // A name with a quote, a backslash or a control character
                // is escaped in JSON: its raw bytes are not its key's.
                let plain = !name.iter().any(|&b| b == b'"' || b == b'\\' || b < 0x20);
                (distinct_names && plain).then(|| [b"\"", name, b"\""].concat().into())
            })
            .collect();
        Self {
            encoding,
            room: vec![Room::default(); fields.len()],
            fields,
            json,
            columns,
            rows: 0,
            distinct_names,
            quoted,
            seen: Vec::new(),
            refusals: Vec::new(),
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
        if self.rows == 0 {
            for (column, room) in self.columns.iter_mut().zip(&self.room) {
                column.reserve(*room);
            }
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
            if let Err(e) = column.push_pending(value) {
                mismatch.get_or_insert(e);
            }
        }
        self.rows += 1;
        mismatch.map_or(Ok(()), Err)
    }

    /// A JSON message: read in one pass by [`Decoder::scan_row`] when it
    /// can vouch for the message, else by serde_json
    /// ([`Decoder::json_row`]), which then also explains why a message is
    /// not JSON.
    fn push_json(&mut self, payload: &[u8]) -> Result<(), DecodeError> {
        match self.scan_row(payload) {
            Ok(pushed) => pushed,
            Err(Unsure) => {
                self.truncate_rows();
                self.json_row(payload).and_then(|row| self.append_row(row))
            }
        }
    }

    /// Drops what the message being read left in the columns.
    fn truncate_rows(&mut self) {
        for column in &mut self.columns {
            column.truncate(self.rows);
        }
    }

    /// Reads one JSON object in one pass over its bytes, each value written
    /// into its column as it is read, by the rules of [`ObjectRow`]: fields
    /// that are not columns are skipped unbuilt; an exact match of a
    /// column's name replaces what came before, one that differs in case
    /// only fills a column no field named yet; a field that does not
    /// convert refuses the message (the first such column in column order
    /// is named), unless a later exact match replaces it. A refused message
    /// leaves nothing in the columns. [`Unsure`] when the message is not
    /// JSON or not an object, or holds what this reader leaves to
    /// serde_json (values nested deep); the columns then hold part of the
    /// message, for the caller to drop.
    fn scan_row(&mut self, payload: &[u8]) -> Scanned<Result<(), DecodeError>> {
        let Decoder {
            fields,
            json,
            columns,
            rows: row_count,
            distinct_names,
            quoted,
            seen,
            refusals,
            scratch,
            stack,
            ..
        } = self;
        let rows = *row_count;
        let row = Row {
            fields,
            distinct_names: *distinct_names,
        };
        seen.clear();
        seen.resize(fields.len(), Seen::Empty);
        refusals.clear();
        let mut s = Scanner::new(payload);
        s.skip_ws();
        s.eat(b'{')?;
        s.skip_ws();
        if s.peek() == Some(b'}') {
            s.eat(b'}')?;
        } else {
            let mut hint = 0;
            loop {
                // Fields mostly come in column order: the next column's key
                // is tried first, by its bytes.
                let column = match quoted.get(hint) {
                    Some(Some(key)) if s.eat_bytes(key) => Some((hint, true)),
                    _ => match s.string(scratch)? {
                        Str::Borrowed(key) => row.column_of(key.as_bytes(), hint),
                        Str::Unescaped(key) => row.column_of(key.as_bytes(), hint),
                    },
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
                        let field = fields.get(i).ok_or(Unsure)?;
                        let is_json = json.get(i).copied().unwrap_or(false);
                        let state = seen.get_mut(i).ok_or(Unsure)?;
                        if exact || *state == Seen::Empty {
                            let column = columns.get_mut(i).ok_or(Unsure)?;
                            // A value named before goes: this one replaces it.
                            column.truncate(rows);
                            match scan_into(&mut s, column, field, is_json, scratch, stack)? {
                                Ok(()) => *state = Seen::Value,
                                Err(e) => {
                                    column.truncate(rows);
                                    refusals.push((i, e));
                                    *state = Seen::Refused;
                                }
                            }
                        } else {
                            // Read (and checked) all the same, then dropped,
                            // even if it does not fit the column.
                            let _dropped =
                                scan_value(&mut s, field.data_type(), is_json, scratch, stack)?;
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
        if !s.at_end() {
            return Err(Unsure);
        }
        if let Some(i) = seen.iter().position(|state| *state == Seen::Refused) {
            for column in columns.iter_mut() {
                column.truncate(rows);
            }
            // The column's last refusal: the value it holds.
            let why = refusals.iter().rposition(|(column, _)| *column == i);
            return Ok(Err(match why {
                Some(at) => refusals.swap_remove(at).1,
                None => DecodeError::Internal("a refused value without its error".into()),
            }));
        }
        for (column, state) in columns.iter_mut().zip(seen.iter()) {
            if *state == Seen::Empty {
                column.push_null();
            }
        }
        *row_count += 1;
        Ok(Ok(()))
    }

    /// The decoded rows as arrays, one per payload column; starts afresh.
    pub fn finish(&mut self) -> Result<Vec<ArrayRef>, DecodeError> {
        self.rows = 0;
        let mut arrays = Vec::with_capacity(self.columns.len());
        let mut failed = None;
        for (column, room) in self.columns.iter_mut().zip(self.room.iter_mut()) {
            // Every column is emptied, even after one fails.
            let (array, next) = column.finish();
            *room = next;
            match array {
                Ok(array) => arrays.push(array),
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        failed.map_or(Ok(arrays), Err)
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

/// What [`Decoder::scan_row`] needs to know of the columns.
#[derive(Clone, Copy)]
struct Row<'a> {
    fields: &'a [Arc<Field>],
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

/// Reads the value of a column's field into the column, converted to its
/// type (or, for a JSONB column, to its JSON text) as [`ObjectRow`]
/// converts it: the common cases (text without a JSON column, integers for
/// integer and timestamp columns, NULL) straight from the bytes, the others
/// through [`scan_value`]. A value that does not fit leaves nothing in the
/// column and says why, naming the field.
fn scan_into(
    s: &mut Scanner<'_>,
    column: &mut Column,
    field: &Field,
    json: bool,
    scratch: &mut Vec<u8>,
    stack: &mut Vec<u8>,
) -> Scanned<Result<(), DecodeError>> {
    let refused = |error| DecodeError::Field {
        field: field.name().clone(),
        error,
    };
    let t = field.data_type();
    match s.peek() {
        Some(b'"') if !json => {
            if let Some(mut text) = column.text() {
                s.string_into(&mut text)?;
                return Ok(column.end_text());
            }
        }
        Some(b'n') => {
            s.literal(b"null")?;
            column.push_null();
            return Ok(Ok(()));
        }
        Some(b'-' | b'0'..=b'9') if !json => {
            let start = s.pos();
            let value = match s.number()? {
                Some(n) => {
                    if let Some(pushed) = column.push_json_int(n, t) {
                        return Ok(pushed.map_err(refused));
                    }
                    json_cell(&Value::from(n), t, false)
                }
                // Fractions, exponents, long integers: serde_json's own reading.
                None => json_cell(&span_value(s.since(start))?, t, false),
            };
            return Ok(value.map_err(refused).and_then(|v| column.push_pending(v)));
        }
        _ => {}
    }
    Ok(match scan_value(s, t, json, scratch, stack)? {
        Ok(value) => column.push_pending(value),
        Err(error) => Err(refused(error)),
    })
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

/// One column's value in a row read by serde_json: the value (or why it
/// does not fit the column) and whether its key matched the column's name
/// exactly.
type Slot<'p> = Option<(Result<Pending<'p>, ValueError>, bool)>;

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
    use arrow::datatypes::{Int64Type, TimeUnit, TimestampNanosecondType};

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

    /// An empty decoder of the same columns as `d`.
    fn like(d: &Decoder) -> Decoder {
        Decoder::new(d.encoding.clone(), d.fields.clone(), d.json.clone())
    }

    impl Decoder {
        /// [`Decoder::push`] by serde_json alone: the oracle of the
        /// one-pass reader.
        fn push_slow(&mut self, payload: &[u8]) -> Result<(), DecodeError> {
            if payload.is_empty() {
                return Err(DecodeError::Empty);
            }
            self.json_row(payload).and_then(|row| self.append_row(row))
        }
    }

    /// Reads `payload` with the one-pass reader and with serde_json, and
    /// checks that they agree (same arrays, or same error and no row)
    /// whenever the one-pass reader vouches for the message. Returns
    /// whether it did, and serde_json's outcome.
    fn agrees(d: &Decoder, payload: &[u8]) -> (bool, Result<Vec<Cell>, DecodeError>) {
        let slow = d
            .json_row(payload)
            .map(|row| row.into_iter().map(shown).collect::<Vec<_>>());
        let mut fast = like(d);
        let Ok(pushed) = fast.scan_row(payload) else {
            return (false, slow);
        };
        let mut oracle = like(d);
        let expected = oracle.push_slow(payload);
        let message = String::from_utf8_lossy(payload);
        assert_eq!(pushed, expected, "{message}");
        assert_eq!(fast.rows(), oracle.rows(), "{message}");
        assert_eq!(fast.finish(), oracle.finish(), "{message}");
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
        let capacity = d.seen.capacity();
        assert!(capacity >= d.fields.len());
        let whole = |d: &Decoder| d.columns.iter().all(|c| c.len() == d.rows());
        assert!(whole(&d));
        // Refused after its id was written (a value that does not fit; text
        // that is not UTF-8, left to serde_json): nothing of them stays.
        assert!(d.push(br#"{"id": 2, "small": 99999}"#).is_err());
        assert!(whole(&d));
        assert!(d.push(br#"{"id": 3, "name": "ab\ud800"}"#).is_err());
        assert!(whole(&d));
        d.push(br#"{"name": "c", "id": 4}"#).unwrap();
        assert_eq!(d.seen.capacity(), capacity);
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

    /// A small deterministic generator (xorshift), for the random tests.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }

        fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
            from[self.below(from.len())]
        }
    }

    /// JSON whitespace, mostly none.
    fn ws(rng: &mut Rng) -> &'static str {
        rng.pick(&["", "", "", " ", "\n\t", "\r "])
    }

    /// A random JSON value: scalars of every kind (integers at and past the
    /// bounds of the columns' types, numbers with fractions and exponents,
    /// strings with escapes, surrogate pairs and raw UTF-8, text for
    /// timestamps, dates and decimals), and arrays and objects of them.
    fn random_value(rng: &mut Rng, depth: usize) -> String {
        let kinds = if depth > 2 { 9 } else { 11 };
        match rng.below(kinds) {
            0 => "null".into(),
            1 => rng.pick(&["true", "false"]).into(),
            2 | 3 => {
                let n = rng.pick(&[
                    "0",
                    "-0",
                    "1",
                    "-1",
                    "32767",
                    "32768",
                    "-32768",
                    "-32769",
                    "2147483648",
                    "9223372036854775807",
                    "-9223372036854775808",
                    "9223372036854775808",
                    "-9223372036854775809",
                    "999999999999999999",
                    "-999999999999999999",
                    "1000000000000000000",
                    "1767225600000",
                    "9223372036854",
                    "9223372036855",
                    "",
                ]);
                if n.is_empty() {
                    (rng.0 as i64 >> rng.below(64)).to_string()
                } else {
                    n.into()
                }
            }
            4 => rng
                .pick(&[
                    "1.5",
                    "-0.0",
                    "1e3",
                    "2.5E-2",
                    "1.005",
                    "0.1",
                    "12.345",
                    "1E400",
                    "-1e-400",
                    "3.0",
                    "1e+2",
                    "123456789.123456789",
                ])
                .into(),
            5 | 6 => {
                let mut s = String::from("\"");
                for _ in 0..rng.below(5) {
                    s.push_str(rng.pick(&[
                        "a",
                        "Z",
                        " ",
                        "é",
                        "中",
                        "😀",
                        "\\n",
                        "\\\"",
                        "\\\\",
                        "\\/",
                        "\\u00e9",
                        "\\u4E2D",
                        "\\ud83d\\ude00",
                        "\\t",
                        "\\u0000",
                        "2026-01-01 00:00:01",
                        "2026-01-02",
                        "12.345",
                        "true",
                        "1767225600000",
                        "  7 ",
                    ]));
                }
                s.push('"');
                s
            }
            7 => rng
                .pick(&[
                    r#""2026-01-01T00:00:00Z""#,
                    r#""2026-01-01 00:00:01.5""#,
                    r#""2026-01-01T00:00:00+02:00""#,
                    r#""2026-13-01""#,
                    r#""2026-01-02""#,
                    r#""-12.5""#,
                ])
                .into(),
            8 => {
                // Plain text of every length, for the eight-byte scan.
                let len = rng.below(40);
                let text: String = (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect();
                format!("\"{text}\"")
            }
            9 => {
                let items: Vec<String> = (0..rng.below(4))
                    .map(|_| format!("{}{}{}", ws(rng), random_value(rng, depth + 1), ws(rng)))
                    .collect();
                format!("[{}]", items.join(","))
            }
            _ => random_object(rng, &["a", "b", "id"], depth + 1),
        }
    }

    /// A random JSON object of keys from `keys`, repeats allowed.
    fn random_object(rng: &mut Rng, keys: &[&str], depth: usize) -> String {
        let fields: Vec<String> = (0..rng.below(9))
            .map(|_| {
                let key = rng.pick(keys);
                let (a, b, c, d) = (ws(rng), ws(rng), ws(rng), ws(rng));
                format!("{a}\"{key}\"{b}:{c}{}{d}", random_value(rng, depth))
            })
            .collect();
        format!("{}{{{}}}{}", ws(rng), fields.join(","), ws(rng))
    }

    /// Random objects (of the columns' names, names that differ in case,
    /// escaped names, unknown names, in any order and repeated, some
    /// messages mangled), pushed one after the other into one batch: the
    /// one-pass reader, which writes values as it reads them and takes them
    /// back when a message is refused, gives every message the outcome
    /// serde_json's path gives it, and the batch the same arrays.
    #[test]
    fn json_one_pass_reader_matches_serde_json_on_random_objects() {
        let keys = [
            "id",
            "name",
            "ts",
            "price",
            "small",
            "f",
            "ok",
            "day",
            "doc",
            "Doc2",
            "ID",
            "Name",
            "NAME",
            "doc2",
            "DOC2",
            "x",
            "extra",
            "\\u0069d",
            "na\\u006de",
            "",
        ];
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let (mut vouched, mut accepted, mut tried) = (0, 0, 0);
        for _ in 0..40 {
            let mut fast = all_kinds();
            let mut slow = all_kinds();
            for _ in 0..250 {
                let mut m = random_object(&mut rng, &keys, 0).into_bytes();
                if rng.below(6) == 0 {
                    let at = rng.below(m.len() + 1);
                    match rng.below(3) {
                        0 => m.truncate(at),
                        1 if at < m.len() => {
                            m.remove(at);
                        }
                        _ => m.insert(at, b"{}[]\":,\\ u0e.-\xff\xc3\x01"[rng.below(17)]),
                    }
                }
                tried += 1;
                vouched += usize::from(like(&fast).scan_row(&m).is_ok());
                let outcome = fast.push(&m);
                accepted += usize::from(outcome.is_ok());
                let message = String::from_utf8_lossy(&m);
                assert_eq!(outcome, slow.push_slow(&m), "{message}");
                assert_eq!(fast.rows(), slow.rows(), "{message}");
            }
            assert_eq!(fast.finish(), slow.finish());
        }
        // Enough messages of each fate: read by the one-pass reader, left
        // to serde_json, decoded, refused.
        assert!(vouched > tried / 2, "{vouched} of {tried}");
        assert!(vouched < tried * 19 / 20, "{vouched} of {tried}");
        assert!(
            accepted > tried / 10 && accepted < tried * 9 / 10,
            "{accepted} of {tried}"
        );
    }
}
