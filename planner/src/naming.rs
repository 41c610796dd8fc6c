//! PostgreSQL's names for unaliased result columns, and for types in
//! messages ([`pg_type_name`]).
//!
//! DataFusion names `SELECT count(*), 1 + 1` as `count(*)` and
//! `Int64(1) + Int64(1)`; PostgreSQL (and so every client and BI tool) as
//! `count` and `?column?`. This follows PostgreSQL's `FigureColname`.

use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use sqlparser::ast::{DataType, Expr, Query, SelectItem, SetExpr, Value};

/// The PostgreSQL names of `query`'s select list, one per item; `None` for
/// a wildcard (whose columns DataFusion already names right). `None` as a
/// whole when the query is not a plain `SELECT`.
pub fn column_names(query: &Query) -> Option<Vec<Option<String>>> {
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    Some(
        select
            .projection
            .iter()
            .map(|item| match item {
                SelectItem::UnnamedExpr(e) => {
                    Some(expr_name(e).unwrap_or_else(|| "?column?".into()))
                }
                SelectItem::ExprWithAlias { alias, .. } => Some(ident(alias)),
                _ => None,
            })
            .collect(),
    )
}

/// `query` with every unaliased, non-column item of its select list given
/// a unique internal alias: PostgreSQL allows `SELECT 1::int, 1::bigint`,
/// DataFusion refuses two items with the same derived name. The result's
/// columns are renamed with [`column_names`] of the original query.
pub fn with_unique_aliases(query: &Query) -> Query {
    let mut q = query.clone();
    if let SetExpr::Select(select) = q.body.as_mut() {
        for (i, item) in select.projection.iter_mut().enumerate() {
            if let SelectItem::UnnamedExpr(e) = item {
                if !matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_)) {
                    *item = SelectItem::ExprWithAlias {
                        expr: e.clone(),
                        alias: sqlparser::ast::Ident::with_quote('"', format!("?column?{i}")),
                    };
                }
            }
        }
    }
    q
}

/// `schema` with its columns renamed to `names` (see [`column_names`]). A
/// single wildcard may stand for any number of columns; with more than one,
/// or counts that do not fit, the schema is left as it is.
pub fn rename(schema: &SchemaRef, names: Option<Vec<Option<String>>>) -> SchemaRef {
    let Some(names) = names else {
        return schema.clone();
    };
    let n = schema.fields().len();
    let slots: Vec<Option<String>> = match names.iter().position(|x| x.is_none()) {
        None if names.len() == n => names,
        Some(w) if names.iter().filter(|x| x.is_none()).count() == 1 && names.len() - 1 <= n => {
            let after = names.len() - 1 - w;
            let mut slots = names[..w].to_vec();
            slots.extend(std::iter::repeat_n(None, n - w - after));
            slots.extend(names[w + 1..].iter().cloned());
            slots
        }
        _ => return schema.clone(),
    };
    Arc::new(Schema::new_with_metadata(
        schema
            .fields()
            .iter()
            .zip(slots)
            .map(|(f, name)| match name {
                Some(name) => f.as_ref().clone().with_name(name),
                None => f.as_ref().clone(),
            })
            .collect::<Vec<_>>(),
        schema.metadata().clone(),
    ))
}

fn ident(i: &sqlparser::ast::Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_lowercase()
    }
}

fn expr_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Identifier(i) => Some(ident(i)),
        Expr::CompoundIdentifier(parts) => parts.last().map(ident),
        Expr::Function(f) => f.name.0.last().and_then(|p| p.as_ident()).map(ident),
        Expr::Cast {
            expr, data_type, ..
        } => expr_name(expr).or_else(|| Some(type_name(data_type))),
        Expr::Nested(inner) => expr_name(inner),
        Expr::Case { .. } => Some("case".into()),
        Expr::Exists { .. } => Some("exists".into()),
        Expr::Array(_) => Some("array".into()),
        Expr::Extract { .. } => Some("extract".into()),
        Expr::Ceil { .. } => Some("ceil".into()),
        Expr::Floor { .. } => Some("floor".into()),
        Expr::Substring { .. } => Some("substring".into()),
        Expr::Position { .. } => Some("position".into()),
        Expr::Interval(_) => Some("interval".into()),
        Expr::TypedString(t) => Some(type_name(&t.data_type)),
        Expr::Value(v) => match &v.value {
            Value::Boolean(_) => Some("bool".into()),
            _ => None,
        },
        _ => None,
    }
}

/// PostgreSQL's internal type name, which it uses for a cast's column.
fn type_name(t: &DataType) -> String {
    let s = t.to_string().to_lowercase();
    let base = s.split('(').next().unwrap_or(&s).trim().to_string();
    match base.as_str() {
        "bigint" | "int8" => "int8",
        "int" | "integer" | "int4" => "int4",
        "smallint" | "int2" => "int2",
        "real" | "float4" => "float4",
        "double precision" | "float8" | "double" => "float8",
        "boolean" | "bool" => "bool",
        "decimal" | "numeric" => "numeric",
        "varchar" | "character varying" => "varchar",
        "char" | "character" => "bpchar",
        "timestamp" | "timestamp without time zone" => "timestamp",
        "timestamptz" | "timestamp with time zone" => "timestamptz",
        other => return other.to_string(),
    }
    .to_string()
}

/// PostgreSQL's name for an Arrow type, for messages.
pub fn pg_type_name(t: &arrow::datatypes::DataType) -> String {
    match t {
        arrow::datatypes::DataType::Int8 | arrow::datatypes::DataType::Int16 => "smallint".into(),
        arrow::datatypes::DataType::Int32 => "integer".into(),
        arrow::datatypes::DataType::Int64 => "bigint".into(),
        arrow::datatypes::DataType::Float32 => "real".into(),
        arrow::datatypes::DataType::Float64 => "double precision".into(),
        arrow::datatypes::DataType::Decimal128(_, _) => "numeric".into(),
        arrow::datatypes::DataType::Utf8
        | arrow::datatypes::DataType::LargeUtf8
        | arrow::datatypes::DataType::Utf8View => "text".into(),
        arrow::datatypes::DataType::Boolean => "boolean".into(),
        arrow::datatypes::DataType::Timestamp(_, None) => "timestamp without time zone".into(),
        arrow::datatypes::DataType::Timestamp(_, Some(_)) => "timestamp with time zone".into(),
        arrow::datatypes::DataType::Date32 | arrow::datatypes::DataType::Date64 => "date".into(),
        arrow::datatypes::DataType::Interval(_) => "interval".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statement::{parse, Statement};

    fn names(sql: &str) -> Option<Vec<Option<String>>> {
        let Statement::Sql(s) = parse(sql).unwrap().remove(0) else {
            panic!()
        };
        let sqlparser::ast::Statement::Query(q) = *s else {
            panic!()
        };
        column_names(&q)
    }

    #[test]
    fn follows_postgres() {
        let got: Vec<String> =
            names("SELECT a, t.b, count(*), 1 + 1, 1::bigint, true, x AS \"Y\", upper(c) FROM t")
                .unwrap()
                .into_iter()
                .flatten()
                .collect();
        assert_eq!(
            got,
            vec!["a", "b", "count", "?column?", "int8", "bool", "Y", "upper"]
        );
        assert_eq!(
            names("SELECT *, 1 + 1 FROM t"),
            Some(vec![None, Some("?column?".into())])
        );
    }
}
