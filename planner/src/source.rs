//! `CREATE SOURCE`: the statement that declares a Kafka topic as a relation.
//!
//! sqlparser knows neither `CREATE SOURCE` nor the dotted option keys
//! (`properties.bootstrap.server`) nor `FORMAT … ENCODE …`, so this module
//! parses the statement itself on sqlparser's tokens, reusing its column
//! definition and expression parsers for the parts PostgreSQL shares.
//! `CREATE TABLE … WITH (connector = …)` is the same statement spelled the
//! RisingWave way, and parses to the same [`SourceDef`].

use std::collections::BTreeMap;

use sqlparser::ast::{ColumnDef, Expr, Ident, ObjectName};
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::Token;

/// Kafka metadata a source can expose as extra columns (`INCLUDE …`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metadata {
    /// The partition number (integer).
    Partition,
    /// The message's offset in its partition (bigint).
    Offset,
    /// The message's timestamp (timestamptz).
    Timestamp,
    /// The message key (bytea).
    Key,
}

impl Metadata {
    /// The column name used when `INCLUDE x` has no `AS name`.
    pub fn default_column(self) -> &'static str {
        match self {
            Metadata::Partition => "_kafka_partition",
            Metadata::Offset => "_kafka_offset",
            Metadata::Timestamp => "_kafka_timestamp",
            Metadata::Key => "_kafka_key",
        }
    }
}

/// `INCLUDE kind [AS column]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Include {
    /// What to expose.
    pub metadata: Metadata,
    /// The column that holds it.
    pub column: String,
}

/// `WATERMARK FOR column AS expr`.
#[derive(Clone, Debug)]
pub struct WatermarkDef {
    /// The event-time column.
    pub column: String,
    /// The watermark expression over that column.
    pub expr: Expr,
}

impl std::fmt::Display for WatermarkDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WATERMARK FOR {} AS {}",
            quote_ident(&self.column),
            self.expr
        )
    }
}

/// A parsed `CREATE SOURCE` (or `CREATE TABLE … WITH (connector = …)`).
#[derive(Clone, Debug)]
pub struct SourceDef {
    /// The relation name, folded as PostgreSQL folds identifiers.
    pub name: String,
    /// `IF NOT EXISTS`.
    pub if_not_exists: bool,
    /// The declared payload columns.
    pub columns: Vec<ColumnDef>,
    /// The declared event-time watermark, if any.
    pub watermark: Option<WatermarkDef>,
    /// Kafka metadata columns, after the payload columns.
    pub includes: Vec<Include>,
    /// The `WITH (…)` options, keys lower-cased.
    pub options: BTreeMap<String, String>,
    /// `FORMAT x` (upper-cased; `PLAIN` when omitted).
    pub format: String,
    /// `ENCODE x` (upper-cased; `JSON` when omitted).
    pub encode: String,
    /// Options of the encoding: `ENCODE CSV (delimiter = ';')`.
    pub encode_options: BTreeMap<String, String>,
    /// Whether it was spelled `CREATE TABLE`.
    pub spelled_as_table: bool,
}

impl std::fmt::Display for SourceDef {
    /// The statement in canonical form: what the catalog stores and
    /// replays at startup.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CREATE SOURCE {} (", quote_ident(&self.name))?;
        let mut items: Vec<String> = self.columns.iter().map(|c| c.to_string()).collect();
        if let Some(w) = &self.watermark {
            items.push(w.to_string());
        }
        write!(f, "{})", items.join(", "))?;
        for i in &self.includes {
            let kind = match i.metadata {
                Metadata::Partition => "PARTITION",
                Metadata::Offset => "OFFSET",
                Metadata::Timestamp => "TIMESTAMP",
                Metadata::Key => "KEY",
            };
            write!(f, " INCLUDE {kind} AS {}", quote_ident(&i.column))?;
        }
        write!(f, " WITH ({})", options_text(&self.options))?;
        write!(f, " FORMAT {} ENCODE {}", self.format, self.encode)?;
        if !self.encode_options.is_empty() {
            write!(f, " ({})", options_text(&self.encode_options))?;
        }
        Ok(())
    }
}

fn options_text(options: &BTreeMap<String, String>) -> String {
    options
        .iter()
        .map(|(k, v)| format!("{k} = '{}'", v.replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `name` as a quoted identifier (always quoted, so case and odd
/// characters survive a re-parse).
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The parsed `DROP SOURCE`.
#[derive(Clone, Debug)]
pub struct DropSource {
    /// The sources to drop.
    pub names: Vec<String>,
    /// `IF EXISTS`.
    pub if_exists: bool,
    /// `CASCADE`: also drop the views that read them.
    pub cascade: bool,
}

/// True when the next tokens are `word` (case-insensitive, unquoted),
/// consuming it.
pub(crate) fn parse_word(parser: &mut Parser, word: &str) -> bool {
    match &parser.peek_token().token {
        Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word) => {
            parser.next_token();
            true
        }
        _ => false,
    }
}

/// True when the token `n` ahead is the unquoted `word`.
pub(crate) fn peek_word(parser: &Parser, n: usize, word: &str) -> bool {
    matches!(&parser.peek_nth_token(n).token,
        Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

/// Parses `CREATE SOURCE …` or `CREATE TABLE … WITH (connector = …) …`,
/// the parser standing at `CREATE`. A `CREATE TABLE` without a connector
/// is an error here; callers try this with `maybe_parse`.
pub fn parse_create_source(parser: &mut Parser) -> Result<SourceDef, ParserError> {
    parser.expect_keyword(Keyword::CREATE)?;
    let spelled_as_table = if parser.parse_keyword(Keyword::TABLE) {
        true
    } else if parse_word(parser, "SOURCE") {
        false
    } else {
        return parser.expected("SOURCE or TABLE", parser.peek_token());
    };
    let if_not_exists = parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = fold_name(&parser.parse_object_name(false)?);
    let mut columns = Vec::new();
    let mut watermark = None;
    if parser.consume_token(&Token::LParen) && !parser.consume_token(&Token::RParen) {
        loop {
            if peek_word(parser, 0, "WATERMARK") {
                let w = parse_watermark(parser)?;
                if watermark.is_some() {
                    return Err(ParserError::ParserError(
                        "a source declares at most one WATERMARK".into(),
                    ));
                }
                watermark = Some(w);
            } else {
                columns.push(parser.parse_column_def()?);
            }
            if parser.consume_token(&Token::RParen) {
                break;
            }
            parser.expect_token(&Token::Comma)?;
        }
    }
    let mut includes = Vec::new();
    while parser.parse_keyword(Keyword::INCLUDE) {
        let metadata = if parse_word(parser, "PARTITION") {
            Metadata::Partition
        } else if parse_word(parser, "OFFSET") {
            Metadata::Offset
        } else if parse_word(parser, "TIMESTAMP") {
            Metadata::Timestamp
        } else if parse_word(parser, "KEY") {
            Metadata::Key
        } else {
            return parser.expected("PARTITION, OFFSET, TIMESTAMP or KEY", parser.peek_token());
        };
        let column = if parser.parse_keyword(Keyword::AS) {
            fold_ident(&parser.parse_identifier()?)
        } else {
            metadata.default_column().to_string()
        };
        includes.push(Include { metadata, column });
    }
    parser.expect_keyword(Keyword::WITH)?;
    let options = parse_options(parser)?;
    if !options.contains_key("connector") {
        return Err(ParserError::ParserError(
            "a source needs WITH (connector = 'kafka', …)".into(),
        ));
    }
    let (mut format, mut encode, mut encode_options) =
        ("PLAIN".to_string(), "JSON".to_string(), BTreeMap::new());
    if parser.parse_keyword(Keyword::FORMAT) {
        format = parser.parse_identifier()?.value.to_uppercase();
        if !parse_word(parser, "ENCODE") {
            return parser.expected("ENCODE", parser.peek_token());
        }
        encode = parser.parse_identifier()?.value.to_uppercase();
        if parser.peek_token().token == Token::LParen {
            encode_options = parse_options(parser)?;
        }
    }
    Ok(SourceDef {
        name,
        if_not_exists,
        columns,
        watermark,
        includes,
        options,
        format,
        encode,
        encode_options,
        spelled_as_table,
    })
}

/// Parses `WATERMARK FOR column AS expr`, the parser standing at `WATERMARK`.
pub fn parse_watermark(parser: &mut Parser) -> Result<WatermarkDef, ParserError> {
    if !parse_word(parser, "WATERMARK") {
        return parser.expected("WATERMARK", parser.peek_token());
    }
    parser.expect_keyword(Keyword::FOR)?;
    let column = fold_ident(&parser.parse_identifier()?);
    parser.expect_keyword(Keyword::AS)?;
    let expr = parser.parse_expr()?;
    Ok(WatermarkDef { column, expr })
}

/// Parses `DROP SOURCE [IF EXISTS] a, b [CASCADE | RESTRICT]`, the parser
/// standing at `DROP`.
pub fn parse_drop_source(parser: &mut Parser) -> Result<DropSource, ParserError> {
    parser.expect_keyword(Keyword::DROP)?;
    if !parse_word(parser, "SOURCE") {
        return parser.expected("SOURCE", parser.peek_token());
    }
    let if_exists = parser.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
    let mut names = vec![fold_name(&parser.parse_object_name(false)?)];
    while parser.consume_token(&Token::Comma) {
        names.push(fold_name(&parser.parse_object_name(false)?));
    }
    let cascade = parser.parse_keyword(Keyword::CASCADE);
    if !cascade {
        let _ = parser.parse_keyword(Keyword::RESTRICT);
    }
    Ok(DropSource {
        names,
        if_exists,
        cascade,
    })
}

/// `( key = value, … )` where a key may be dotted (`properties.client.id`)
/// and a value is a string, number, boolean or bare word.
fn parse_options(parser: &mut Parser) -> Result<BTreeMap<String, String>, ParserError> {
    parser.expect_token(&Token::LParen)?;
    let mut options = BTreeMap::new();
    if parser.consume_token(&Token::RParen) {
        return Ok(options);
    }
    loop {
        let mut key = parser.parse_identifier()?.value;
        while parser.consume_token(&Token::Period) {
            key.push('.');
            key.push_str(&parser.parse_identifier()?.value);
        }
        parser.expect_token(&Token::Eq)?;
        let token = parser.next_token();
        let value = match token.token {
            Token::SingleQuotedString(s) => s,
            Token::Number(n, _) => n,
            Token::Minus => {
                let next = parser.next_token();
                match next.token {
                    Token::Number(n, _) => format!("-{n}"),
                    _ => return parser.expected("a number", next),
                }
            }
            Token::Word(w) => w.value,
            _ => return parser.expected("an option value", token),
        };
        let key = key.to_lowercase();
        if options.insert(key.clone(), value).is_some() {
            return Err(ParserError::ParserError(format!(
                "option \"{key}\" is given more than once"
            )));
        }
        if parser.consume_token(&Token::RParen) {
            return Ok(options);
        }
        parser.expect_token(&Token::Comma)?;
    }
}

fn fold_ident(i: &Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_lowercase()
    }
}

pub(crate) fn fold_name(n: &ObjectName) -> String {
    n.0.last()
        .and_then(|p| p.as_ident())
        .map(fold_ident)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::PostgreSqlDialect;

    fn parse(sql: &str) -> Result<SourceDef, ParserError> {
        let dialect = PostgreSqlDialect {};
        let mut p = Parser::new(&dialect).try_with_sql(sql)?;
        parse_create_source(&mut p)
    }

    #[test]
    fn parses_the_design_example() {
        let def = parse(
            "CREATE SOURCE Bids (auction BIGINT, date_time TIMESTAMP,
               WATERMARK FOR date_time AS date_time - INTERVAL '5 seconds')
             INCLUDE partition INCLUDE offset AS off
             WITH (connector = 'kafka', topic = 'bids',
                   properties.bootstrap.server = '127.0.0.1:9092',
                   scan.startup.mode = 'earliest', max.rows = 10)
             FORMAT PLAIN ENCODE JSON",
        )
        .unwrap();
        assert_eq!(def.name, "bids");
        assert_eq!(def.columns.len(), 2);
        assert_eq!(def.watermark.as_ref().unwrap().column, "date_time");
        assert_eq!(def.includes[0].column, "_kafka_partition");
        assert_eq!(def.includes[1].column, "off");
        assert_eq!(def.options["properties.bootstrap.server"], "127.0.0.1:9092");
        assert_eq!(def.options["max.rows"], "10");
        assert_eq!(
            (def.format.as_str(), def.encode.as_str()),
            ("PLAIN", "JSON")
        );
        assert!(!def.spelled_as_table);
        let again = parse(&def.to_string()).unwrap();
        assert_eq!(again.to_string(), def.to_string());
        assert_eq!(again.options, def.options);
    }

    #[test]
    fn table_spelling_and_encode_options() {
        let def = parse(
            "CREATE TABLE IF NOT EXISTS t (a INT) WITH (connector = 'kafka', topic = 't')
             FORMAT PLAIN ENCODE CSV (delimiter = ';')",
        )
        .unwrap();
        assert!(def.spelled_as_table && def.if_not_exists);
        assert_eq!(def.encode, "CSV");
        assert_eq!(def.encode_options["delimiter"], ";");
        assert!(parse("CREATE TABLE t (a INT) WITH (topic = 't')").is_err());
        assert!(parse("CREATE SOURCE s (a INT) WITH (connector = 'kafka', a = 1, a = 2)").is_err());
    }
}
