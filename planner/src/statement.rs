//! Millrace's SQL dialect: PostgreSQL as parsed by sqlparser, plus the
//! streaming statements sqlparser does not know.
//!
//! Following DataFusion's `DFParser`, statements of our own are recognised
//! by their leading keywords and everything else is delegated to sqlparser's
//! PostgreSQL dialect.

use sqlparser::ast::Statement as SqlStatement;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Token;

use crate::source::{parse_create_source, parse_drop_source, peek_word, DropSource, SourceDef};
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
    /// `FLUSH`: wait until every view reflects everything ingested so far.
    Flush,
    /// `SHOW TABLES` / `SHOW MATERIALIZED VIEWS` / `SHOW SOURCES`.
    ShowRelations(RelationKind),
    /// `CREATE SOURCE` (or `CREATE TABLE … WITH (connector = …)`).
    CreateSource(Box<SourceDef>),
    /// `DROP SOURCE`.
    DropSource(DropSource),
}

impl std::fmt::Display for Statement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Statement::Sql(s) => write!(f, "{s}"),
            Statement::Flush => write!(f, "FLUSH"),
            Statement::ShowRelations(RelationKind::Table) => write!(f, "SHOW TABLES"),
            Statement::ShowRelations(RelationKind::MaterializedView) => {
                write!(f, "SHOW MATERIALIZED VIEWS")
            }
            Statement::ShowRelations(RelationKind::Source) => write!(f, "SHOW SOURCES"),
            Statement::CreateSource(def) => write!(f, "CREATE SOURCE {}", def.name),
            Statement::DropSource(d) => write!(f, "DROP SOURCE {}", d.names.join(", ")),
        }
    }
}

/// Parses `sql` into its statements (an empty text yields none).
pub fn parse(sql: &str) -> Result<Vec<Statement>> {
    let dialect = PostgreSqlDialect {};
    let mut parser = Parser::new(&dialect)
        .try_with_sql(sql)
        .map_err(|e| PlanError::Syntax(syntax_message(e)))?;
    let mut out = Vec::new();
    loop {
        while parser.consume_token(&Token::SemiColon) {}
        if parser.peek_token().token == Token::EOF {
            break;
        }
        let statement = if parser.parse_keyword(Keyword::FLUSH) {
            Statement::Flush
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
            let d = parse_drop_source(&mut parser).map_err(|e| PlanError::Syntax(syntax_message(e)))?;
            Statement::DropSource(d)
        } else if let Some(def) = table_with_connector(&mut parser)? {
            Statement::CreateSource(Box::new(def))
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

/// `CREATE TABLE … WITH (connector = …)`: a source spelled as a table.
fn table_with_connector(parser: &mut Parser) -> Result<Option<SourceDef>> {
    if !(parser.peek_keyword(Keyword::CREATE) && peek_word(parser, 1, "TABLE")) {
        return Ok(None);
    }
    parser
        .maybe_parse(parse_create_source)
        .map_err(|e| PlanError::Syntax(syntax_message(e)))
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
    fn parses_dialect_and_postgres_statements() {
        let stmts = parse("FLUSH; SHOW TABLES; show materialized views; SELECT 1;;").unwrap();
        assert_eq!(stmts.len(), 4);
        assert!(matches!(stmts[0], Statement::Flush));
        assert!(matches!(stmts[1], Statement::ShowRelations(RelationKind::Table)));
        assert!(matches!(
            stmts[2],
            Statement::ShowRelations(RelationKind::MaterializedView)
        ));
        assert!(matches!(stmts[3], Statement::Sql(_)));
        assert!(parse("   ").unwrap().is_empty());
    }

    #[test]
    fn reports_syntax_errors() {
        assert!(matches!(parse("SELEC 1"), Err(PlanError::Syntax(_))));
        assert!(matches!(parse("FLUSH now"), Err(PlanError::Syntax(_))));
    }
}
