//! Millrace's SQL dialect: PostgreSQL as parsed by sqlparser, plus the
//! streaming statements sqlparser does not know.
//!
//! Following DataFusion's `DFParser`, statements of our own are recognised
//! by their leading keywords and everything else is delegated to sqlparser's
//! PostgreSQL dialect.

use std::collections::HashMap;

use sqlparser::ast::Statement as SqlStatement;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, TokenWithSpan};

use crate::source::{
    fold_name, parse_create_source, parse_drop_source, parse_watermark, peek_word, DropSource,
    SourceDef, WatermarkDef,
};
use crate::{PlanError, Result};

/// Which kind of relation a `SHOW` lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelationKind {
    /// Plain tables (`CREATE TABLE`).
    Table,
    /// Materialized views.
    MaterializedView,
    /// Sources (`CREATE SOURCE`).
    Source,
}

/// One statement of the Millrace dialect.
#[derive(Clone, Debug)]
pub enum Statement {
    /// A PostgreSQL statement.
    Sql(Box<SqlStatement>),
    /// `FLUSH [source, …]`: wait until every view reflects everything the
    /// named sources (all sources when none is named) held when FLUSH was
    /// called.
    Flush {
        /// The sources to wait for, folded; empty for all.
        sources: Vec<String>,
    },
    /// `SHOW TABLES` / `SHOW MATERIALIZED VIEWS` / `SHOW SOURCES`.
    ShowRelations(RelationKind),
    /// `CREATE SOURCE` (or `CREATE TABLE … WITH (connector = …)`).
    CreateSource(Box<SourceDef>),
    /// `DROP SOURCE`.
    DropSource(DropSource),
    /// `CREATE TABLE (…, WATERMARK FOR col AS expr)`: a table with event
    /// time (without a watermark a table is a plain [`Statement::Sql`]).
    CreateTable {
        /// The statement without its `WATERMARK` clause.
        table: Box<SqlStatement>,
        /// The clause.
        watermark: Box<WatermarkDef>,
    },
    /// `CREATE MATERIALIZED VIEW … EMIT ON WINDOW CLOSE`.
    CreateViewOnWindowClose(Box<SqlStatement>),
    /// `EXPLAIN CREATE MATERIALIZED VIEW … EMIT ON WINDOW CLOSE` (holds the
    /// `CREATE MATERIALIZED VIEW`).
    ExplainViewOnWindowClose(Box<SqlStatement>),
}

impl std::fmt::Display for Statement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Statement::Sql(s) => write!(f, "{s}"),
            Statement::Flush { sources } if sources.is_empty() => write!(f, "FLUSH"),
            Statement::Flush { sources } => write!(f, "FLUSH {}", sources.join(", ")),
            Statement::ShowRelations(RelationKind::Table) => write!(f, "SHOW TABLES"),
            Statement::ShowRelations(RelationKind::MaterializedView) => {
                write!(f, "SHOW MATERIALIZED VIEWS")
            }
            Statement::ShowRelations(RelationKind::Source) => write!(f, "SHOW SOURCES"),
            Statement::CreateSource(def) => write!(f, "CREATE SOURCE {}", def.name),
            Statement::DropSource(d) => write!(f, "DROP SOURCE {}", d.names.join(", ")),
            Statement::CreateTable { table, watermark } => {
                // sqlparser prints a plain table as `CREATE TABLE t (…)`:
                // the clause goes back in before the closing parenthesis.
                let text = table.to_string();
                match text.strip_suffix(')') {
                    Some(head) if !head.trim_end().ends_with('(') => {
                        write!(f, "{head}, {watermark})")
                    }
                    _ => write!(f, "{text} /* {watermark} */"),
                }
            }
            Statement::CreateViewOnWindowClose(view) => write!(f, "{view} EMIT ON WINDOW CLOSE"),
            Statement::ExplainViewOnWindowClose(view) => {
                write!(f, "EXPLAIN {view} EMIT ON WINDOW CLOSE")
            }
        }
    }
}

/// Parses `sql` into its statements (an empty text yields none).
pub fn parse(sql: &str) -> Result<Vec<Statement>> {
    let dialect = PostgreSqlDialect {};
    let tokens = sqlparser::tokenizer::Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| PlanError::Syntax(format!("syntax error: {e}")))?;
    let tokens = user_as_role(flink_windows(tokens));
    let mut parser = Parser::new(&dialect).with_tokens_with_locations(tokens);
    let mut out = Vec::new();
    loop {
        while parser.consume_token(&Token::SemiColon) {}
        if parser.peek_token().token == Token::EOF {
            break;
        }
        let statement = if parser.parse_keyword(Keyword::FLUSH) {
            let sources = parse_flush_sources(&mut parser)
                .map_err(|e| PlanError::Syntax(syntax_message(e)))?;
            Statement::Flush { sources }
        } else if parser.parse_keywords(&[Keyword::SHOW, Keyword::TABLES]) {
            Statement::ShowRelations(RelationKind::Table)
        } else if parser.parse_keywords(&[Keyword::SHOW, Keyword::MATERIALIZED, Keyword::VIEWS]) {
            Statement::ShowRelations(RelationKind::MaterializedView)
        } else if parser.peek_keyword(Keyword::SHOW) && peek_word(&parser, 1, "SOURCES") {
            parser.next_token();
            parser.next_token();
            Statement::ShowRelations(RelationKind::Source)
        } else if parser.peek_keyword(Keyword::CREATE) && peek_word(&parser, 1, "SOURCE") {
            let def = parse_create_source(&mut parser)
                .map_err(|e| PlanError::Syntax(syntax_message(e)))?;
            Statement::CreateSource(Box::new(def))
        } else if parser.peek_keyword(Keyword::DROP) && peek_word(&parser, 1, "SOURCE") {
            let d =
                parse_drop_source(&mut parser).map_err(|e| PlanError::Syntax(syntax_message(e)))?;
            Statement::DropSource(d)
        } else if let Some(def) = table_with_connector(&mut parser)? {
            Statement::CreateSource(Box::new(def))
        } else if let Some(stmt) = with_streaming_clauses(&mut parser)? {
            stmt
        } else {
            let mut stmt = parser
                .parse_statement()
                .map_err(|e| PlanError::Syntax(syntax_message(e)))?;
            normalize_relation_names(&mut stmt);
            Statement::Sql(Box::new(stmt))
        };
        out.push(statement);
        let next = parser.peek_token();
        if next.token != Token::EOF && next.token != Token::SemiColon {
            return Err(PlanError::Syntax(format!(
                "syntax error at or near \"{}\"",
                next.token
            )));
        }
    }
    Ok(out)
}

/// The source names after `FLUSH`, if any: `FLUSH a, b`.
fn parse_flush_sources(
    parser: &mut Parser,
) -> std::result::Result<Vec<String>, sqlparser::parser::ParserError> {
    let mut sources = Vec::new();
    if matches!(parser.peek_token().token, Token::EOF | Token::SemiColon) {
        return Ok(sources);
    }
    loop {
        sources.push(fold_name(&parser.parse_object_name(false)?));
        if !parser.consume_token(&Token::Comma) {
            return Ok(sources);
        }
    }
}

/// `CREATE TABLE … WITH (connector = …)`: a source spelled as a table.
fn table_with_connector(parser: &mut Parser) -> Result<Option<SourceDef>> {
    if !(parser.peek_keyword(Keyword::CREATE) && peek_word(parser, 1, "TABLE")) {
        return Ok(None);
    }
    parser
        .maybe_parse(parse_create_source)
        .map_err(|e| PlanError::Syntax(syntax_message(e)))
}

/// `CREATE USER` and `ALTER USER` are PostgreSQL's `CREATE ROLE … LOGIN`
/// and `ALTER ROLE`; sqlparser reads `CREATE USER` in Snowflake's syntax, so
/// the statements are parsed as their ROLE forms.
fn user_as_role(mut tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let significant: Vec<usize> = (0..tokens.len())
        .filter(|i| !matches!(tokens[*i].token, Token::Whitespace(_)))
        .collect();
    let mut statement_start = true;
    for (k, &i) in significant.iter().enumerate() {
        let starts = statement_start;
        statement_start = tokens[i].token == Token::SemiColon;
        if !starts || !(is_word(&tokens[i], "CREATE") || is_word(&tokens[i], "ALTER")) {
            continue;
        }
        if let Some(&next) = significant.get(k + 1) {
            if is_word(&tokens[next], "USER") {
                tokens[next].token = Token::make_keyword("ROLE");
            }
        }
    }
    tokens
}

/// Rewrites Flink's window spelling `TABLE(TUMBLE(TABLE rel,
/// DESCRIPTOR(col), …))` (and `HOP`) into Millrace's `TUMBLE(rel, col, …)`,
/// and `TABLE(SESSION(TABLE rel PARTITION BY k…, DESCRIPTOR(col), gap))`
/// into `SESSION(rel, col, gap, k…)`.
fn flink_windows(tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let significant = |t: &TokenWithSpan| !matches!(t.token, Token::Whitespace(_));
    let words: Vec<usize> = (0..tokens.len())
        .filter(|i| significant(&tokens[*i]))
        .collect();
    let at = |k: usize| words.get(k).map(|i| &tokens[*i]);
    let is = |k: usize, w: &str| at(k).is_some_and(|t| is_word(t, w));
    let tok = |k: usize, t: &Token| at(k).is_some_and(|x| x.token == *t);
    let mut drop = vec![false; tokens.len()];
    // Tokens to insert before the token at an index (the moved key list).
    let mut insert: HashMap<usize, Vec<TokenWithSpan>> = HashMap::new();
    let mut k = 0;
    while k < words.len() {
        // TABLE ( TUMBLE|HOP ( TABLE rel , DESCRIPTOR ( col ) ,
        let shape = is(k, "TABLE")
            && tok(k + 1, &Token::LParen)
            && (is(k + 2, "TUMBLE") || is(k + 2, "HOP") || is(k + 2, "SESSION"))
            && tok(k + 3, &Token::LParen)
            && is(k + 4, "TABLE");
        if !shape {
            k += 1;
            continue;
        }
        // The relation name may be qualified: skip to the comma, or to
        // SESSION's `PARTITION BY`.
        let mut j = k + 5;
        while at(j).is_some_and(|t| t.token != Token::Comma && !is_word(t, "PARTITION")) {
            j += 1;
        }
        let mut keys = None;
        if is(j, "PARTITION") && is(j + 1, "BY") && is(k + 2, "SESSION") {
            let from = j;
            while at(j).is_some_and(|t| !is_word(t, "DESCRIPTOR")) {
                j += 1;
            }
            // j - 1 is the comma before DESCRIPTOR.
            j -= 1;
            keys = Some((from, j));
        }
        let descriptor =
            is(j + 1, "DESCRIPTOR") && tok(j + 2, &Token::LParen) && tok(j + 4, &Token::RParen);
        if !descriptor {
            k += 1;
            continue;
        }
        // Find the `)` closing `TABLE (`.
        let mut depth = 0;
        let mut close = None;
        for m in k + 1..words.len() {
            match at(m).map(|t| &t.token) {
                Some(Token::LParen) => depth += 1,
                Some(Token::RParen) => {
                    depth -= 1;
                    if depth == 0 {
                        close = Some(m);
                        break;
                    }
                }
                _ => {}
            }
        }
        let Some(close) = close else { break };
        for m in [k, k + 1, k + 4, j + 1, j + 2, j + 4, close] {
            drop[words[m]] = true;
        }
        if let Some((from, to)) = keys {
            // `, k1, k2` goes before SESSION's closing parenthesis.
            let mut moved = vec![TokenWithSpan::wrap(Token::Comma)];
            moved.extend((from + 2..to).map(|m| tokens[words[m]].clone()));
            for m in from..to {
                drop[words[m]] = true;
            }
            insert.insert(words[close - 1], moved);
        }
        k += 5;
    }
    let mut out = Vec::with_capacity(tokens.len());
    for (i, (t, d)) in tokens.into_iter().zip(drop).enumerate() {
        if let Some(before) = insert.remove(&i) {
            out.extend(before);
        }
        if !d {
            out.push(t);
        }
    }
    out
}

/// The tokens of the statement the parser stands at, up to (without) the
/// `;` or the end that closes it.
fn statement_tokens(parser: &Parser) -> Vec<TokenWithSpan> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    loop {
        let t = parser.peek_nth_token(out.len());
        match t.token {
            Token::EOF => break,
            Token::SemiColon if depth == 0 => break,
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            _ => {}
        }
        out.push(t);
    }
    out
}

fn is_word(t: &TokenWithSpan, word: &str) -> bool {
    matches!(&t.token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

/// Parses `tokens` as one PostgreSQL statement.
fn parse_tokens(tokens: &[TokenWithSpan]) -> Result<SqlStatement> {
    let mut end = tokens
        .last()
        .cloned()
        .unwrap_or_else(|| TokenWithSpan::wrap(Token::EOF));
    end.token = Token::EOF;
    let mut all = tokens.to_vec();
    all.push(end);
    let mut sub = Parser::new(&PostgreSqlDialect {}).with_tokens_with_locations(all);
    let mut stmt = sub
        .parse_statement()
        .map_err(|e| PlanError::Syntax(syntax_message(e)))?;
    let next = sub.peek_token();
    if next.token != Token::EOF {
        return Err(PlanError::Syntax(format!(
            "syntax error at or near \"{}\"",
            next.token
        )));
    }
    normalize_relation_names(&mut stmt);
    Ok(stmt)
}

/// The streaming clauses sqlparser does not know inside otherwise
/// PostgreSQL statements: `CREATE MATERIALIZED VIEW … EMIT ON WINDOW CLOSE`
/// and `WATERMARK FOR …` in a `CREATE TABLE` column list. `None` (with the
/// parser untouched) for any other statement.
fn with_streaming_clauses(parser: &mut Parser) -> Result<Option<Statement>> {
    // Only these statements can hold the clauses; collecting a statement's
    // tokens costs more than its parse (think of a long INSERT).
    let explain = parser.peek_keyword(Keyword::EXPLAIN);
    let at = usize::from(explain);
    let candidate = (explain || parser.peek_keyword(Keyword::CREATE))
        && peek_word(parser, at, "CREATE")
        && (peek_word(parser, at + 1, "TABLE")
            || (peek_word(parser, at + 1, "MATERIALIZED") && peek_word(parser, at + 2, "VIEW")));
    if !candidate {
        return Ok(None);
    }
    let tokens = statement_tokens(parser);
    let starts = |words: &[&str]| {
        words.len() <= tokens.len() && words.iter().zip(&tokens).all(|(w, t)| is_word(t, w))
    };
    let stmt = if explain {
        let n = tokens.len();
        let tail = ["EMIT", "ON", "WINDOW", "CLOSE"];
        if n < 5
            || !starts(&["EXPLAIN", "CREATE", "MATERIALIZED", "VIEW"])
            || !tail
                .iter()
                .zip(&tokens[n - 4..])
                .all(|(w, t)| is_word(t, w))
        {
            return Ok(None);
        }
        Statement::ExplainViewOnWindowClose(Box::new(parse_tokens(&tokens[1..n - 4])?))
    } else if starts(&["CREATE", "MATERIALIZED", "VIEW"]) {
        let n = tokens.len();
        let tail = ["EMIT", "ON", "WINDOW", "CLOSE"];
        if n < 4
            || !tail
                .iter()
                .zip(&tokens[n - 4..])
                .all(|(w, t)| is_word(t, w))
        {
            return Ok(None);
        }
        Statement::CreateViewOnWindowClose(Box::new(parse_tokens(&tokens[..n - 4])?))
    } else if starts(&["CREATE", "TABLE"]) {
        // `WATERMARK FOR` directly inside the column list.
        let mut depth = 0;
        let mut at = None;
        for (i, t) in tokens.iter().enumerate() {
            match t.token {
                Token::LParen => depth += 1,
                Token::RParen => depth -= 1,
                _ if depth == 1
                    && is_word(t, "WATERMARK")
                    && tokens.get(i + 1).is_some_and(|n| is_word(n, "FOR")) =>
                {
                    at = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let Some(start) = at else { return Ok(None) };
        // The clause runs to the next comma or closing parenthesis of the list.
        let mut depth = 0;
        let mut end = tokens.len();
        for (i, t) in tokens.iter().enumerate().skip(start) {
            match t.token {
                Token::LParen => depth += 1,
                Token::RParen if depth == 0 => {
                    end = i;
                    break;
                }
                Token::RParen => depth -= 1,
                Token::Comma if depth == 0 => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        let mut clause = tokens[start..end].to_vec();
        clause.push(TokenWithSpan::wrap(Token::EOF));
        let mut sub = Parser::new(&PostgreSqlDialect {}).with_tokens_with_locations(clause);
        let watermark =
            parse_watermark(&mut sub).map_err(|e| PlanError::Syntax(syntax_message(e)))?;
        if sub.peek_token().token != Token::EOF {
            return Err(PlanError::Syntax(format!(
                "syntax error at or near \"{}\"",
                sub.peek_token().token
            )));
        }
        // Drop the clause and the comma that separates it from a neighbour.
        let mut rest: Vec<TokenWithSpan> = Vec::with_capacity(tokens.len());
        let (cut_from, cut_to) = if tokens.get(end).is_some_and(|t| t.token == Token::Comma) {
            (start, end + 1)
        } else if start > 0 && tokens[start - 1].token == Token::Comma {
            (start - 1, end)
        } else {
            (start, end)
        };
        rest.extend_from_slice(&tokens[..cut_from]);
        rest.extend_from_slice(&tokens[cut_to..]);
        let table = parse_tokens(&rest)?;
        if !matches!(table, SqlStatement::CreateTable(_)) {
            return Err(PlanError::Syntax(
                "WATERMARK FOR outside a column list".into(),
            ));
        }
        Statement::CreateTable {
            table: Box::new(table),
            watermark: Box::new(watermark),
        }
    } else {
        return Ok(None);
    };
    for _ in 0..tokens.len() {
        parser.next_token();
    }
    Ok(Some(stmt))
}

/// Lower-cases unquoted relation names, as PostgreSQL folds identifiers.
/// DataFusion folds column and table names itself, but looks table
/// functions (`TUMBLE`, `HOP`) up by their name as written.
fn normalize_relation_names(stmt: &mut SqlStatement) {
    let _ = sqlparser::ast::visit_relations_mut(stmt, |name| {
        for part in name.0.iter_mut() {
            if let sqlparser::ast::ObjectNamePart::Identifier(ident) = part {
                if ident.quote_style.is_none() {
                    ident.value = ident.value.to_lowercase();
                }
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
}

/// sqlparser prefixes its messages with "sql parser error: "; PostgreSQL
/// users expect "syntax error …".
fn syntax_message(e: sqlparser::parser::ParserError) -> String {
    let text = e.to_string();
    let text = text.strip_prefix("sql parser error: ").unwrap_or(&text);
    format!("syntax error: {text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flush_names_the_sources_it_waits_for() {
        let stmts = parse("FLUSH Bids, \"Mixed\"; FLUSH").unwrap();
        assert!(matches!(&stmts[0], Statement::Flush { sources } if sources == &["bids", "Mixed"]));
        assert!(matches!(&stmts[1], Statement::Flush { sources } if sources.is_empty()));
        assert!(parse("FLUSH a b").is_err());
    }

    #[test]
    fn parses_dialect_and_postgres_statements() {
        let stmts = parse("FLUSH; SHOW TABLES; show materialized views; SELECT 1;;").unwrap();
        assert_eq!(stmts.len(), 4);
        assert!(matches!(&stmts[0], Statement::Flush { sources } if sources.is_empty()));
        assert!(matches!(
            stmts[1],
            Statement::ShowRelations(RelationKind::Table)
        ));
        assert!(matches!(
            stmts[2],
            Statement::ShowRelations(RelationKind::MaterializedView)
        ));
        assert!(matches!(stmts[3], Statement::Sql(_)));
        assert!(parse("   ").unwrap().is_empty());
    }

    #[test]
    fn parses_streaming_clauses_inside_postgres_statements() {
        let stmts = parse(
            "CREATE TABLE t (a BIGINT, WATERMARK FOR ts AS ts - INTERVAL '5 seconds', ts TIMESTAMP); \
             CREATE MATERIALIZED VIEW v AS SELECT count(*) FROM t EMIT ON WINDOW CLOSE; SELECT 1",
        )
        .unwrap();
        assert_eq!(stmts.len(), 3);
        let Statement::CreateTable { table, watermark } = &stmts[0] else {
            panic!("{:?}", stmts[0])
        };
        assert_eq!(watermark.column, "ts");
        assert_eq!(table.to_string(), "CREATE TABLE t (a BIGINT, ts TIMESTAMP)");
        assert_eq!(
            stmts[0].to_string(),
            "CREATE TABLE t (a BIGINT, ts TIMESTAMP, WATERMARK FOR \"ts\" AS ts - INTERVAL '5 seconds')"
        );
        let again = parse(&stmts[0].to_string()).unwrap();
        assert!(matches!(&again[0], Statement::CreateTable { .. }));
        assert!(matches!(stmts[1], Statement::CreateViewOnWindowClose(_)));
        assert_eq!(
            stmts[1].to_string(),
            "CREATE MATERIALIZED VIEW v AS SELECT count(*) FROM t EMIT ON WINDOW CLOSE"
        );
        assert!(matches!(stmts[2], Statement::Sql(_)));
    }

    #[test]
    fn accepts_flink_window_spelling() {
        let stmts = parse(
            "SELECT * FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(date_time), INTERVAL '10' SECOND)); \
             SELECT * FROM TABLE(HOP(TABLE public.bids, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '10' SECOND)) AS h; \
             SELECT * FROM TABLE(SESSION(TABLE bids PARTITION BY bidder, auction, DESCRIPTOR(ts), INTERVAL '5' MINUTES)); \
             SELECT * FROM TABLE(SESSION(TABLE bids, DESCRIPTOR(ts), INTERVAL '5' MINUTES))",
        )
        .unwrap();
        assert_eq!(
            stmts[2].to_string(),
            "SELECT * FROM session(bids, ts, INTERVAL '5' MINUTES, bidder, auction)"
        );
        assert_eq!(
            stmts[3].to_string(),
            "SELECT * FROM session(bids, ts, INTERVAL '5' MINUTES)"
        );
        assert_eq!(
            stmts[0].to_string(),
            "SELECT * FROM tumble(bids, date_time, INTERVAL '10' SECOND)"
        );
        assert_eq!(
            stmts[1].to_string(),
            "SELECT * FROM hop(public.bids, ts, INTERVAL '2' SECOND, INTERVAL '10' SECOND) AS h"
        );
    }

    #[test]
    fn reports_syntax_errors() {
        assert!(matches!(parse("SELEC 1"), Err(PlanError::Syntax(_))));
        assert!(matches!(parse("FLUSH 1"), Err(PlanError::Syntax(_))));
    }
}
