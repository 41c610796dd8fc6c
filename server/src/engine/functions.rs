//! SQL functions PostgreSQL clients call that neither DataFusion nor
//! datafusion-pg-catalog provide (or provide with an answer clients
//! misread): `version()` must look like PostgreSQL's, or drivers and BI
//! tools that parse it refuse the server.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use datafusion::prelude::SessionContext;
use datafusion_pg_catalog::pg_catalog::RelationOids;
use millrace_planner::statement::Statement;
use sqlparser::ast::Statement as SqlStatement;

use crate::catalog::{Catalog, Kind};

/// What `version()` answers: PostgreSQL's shape (drivers parse the number
/// after "PostgreSQL"), naming Millrace.
pub fn version_string() -> String {
    format!(
        "PostgreSQL 15.0 (Millrace {}) on {}-unknown-linux-gnu, compiled by rustc, 64-bit",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH
    )
}

/// Registers the functions of this module in `ctx` (replacing DataFusion's
/// own `version()`). `catalog` and `oids` let `pg_get_viewdef` find a view
/// by name or by its `pg_class.oid`.
pub fn register(ctx: &SessionContext, catalog: Arc<Catalog>, oids: RelationOids) {
    ctx.register_udf(ScalarUDF::from(Constant::new(
        "version",
        vec![],
        ScalarValue::Utf8(Some(version_string())),
    )));
    ctx.register_udf(ScalarUDF::from(JsonBuildObject::default()));
    ctx.register_udf(ScalarUDF::from(ViewDefinition::new(catalog, oids)));
    // Every type and function is visible on the search path: there is
    // one schema of user objects.
    for name in [
        "pg_type_is_visible",
        "pg_function_is_visible",
        "pg_collation_is_visible",
    ] {
        ctx.register_udf(ScalarUDF::from(Constant::new(
            name,
            vec![1],
            ScalarValue::Boolean(Some(true)),
        )));
    }
    // NULL where PostgreSQL answers NULL for objects without one: views,
    // tables and columns carry no comments (COMMENT ON is not supported),
    // no column owns a sequence, no relation has rules.
    for (name, args) in [
        ("obj_description", vec![1, 2]),
        ("col_description", vec![2]),
        ("shobj_description", vec![2]),
        ("pg_get_serial_sequence", vec![2]),
        ("pg_get_ruledef", vec![1, 2]),
        // There are no user-defined functions to describe.
        ("pg_get_function_result", vec![1]),
        ("pg_get_function_arguments", vec![1]),
        ("pg_get_function_identity_arguments", vec![1]),
    ] {
        ctx.register_udf(ScalarUDF::from(Constant::new(
            name,
            args,
            ScalarValue::Utf8(None),
        )));
    }
}

/// A function that answers one value whatever its arguments.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Constant {
    name: &'static str,
    value: ScalarValue,
    signature: Signature,
}

impl Constant {
    /// `name` taking any of `arities` arguments of any type.
    fn new(name: &'static str, arities: Vec<usize>, value: ScalarValue) -> Self {
        let signature = if arities.is_empty() {
            Signature::exact(vec![], Volatility::Stable)
        } else {
            Signature::one_of(
                arities.into_iter().map(TypeSignature::Any).collect(),
                Volatility::Stable,
            )
        };
        Self {
            name,
            value,
            signature,
        }
    }
}

impl ScalarUDFImpl for Constant {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(self.value.data_type())
    }

    fn invoke_with_args(
        &self,
        _args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(self.value.clone()))
    }
}

/// `pg_get_viewdef(view [, pretty])`: the query of a materialized view,
/// given its `pg_class.oid` or its name (psql's `\d+` "View definition",
/// pgAdmin's and DBeaver's view DDL). NULL for anything but a view, as in
/// PostgreSQL. `EMIT ON WINDOW CLOSE` follows the query for views that
/// have it, so the text says what the view computes.
#[derive(Debug)]
struct ViewDefinition {
    catalog: Arc<Catalog>,
    oids: RelationOids,
    signature: Signature,
}

impl ViewDefinition {
    fn new(catalog: Arc<Catalog>, oids: RelationOids) -> Self {
        Self {
            catalog,
            oids,
            signature: Signature::one_of(
                vec![TypeSignature::Any(1), TypeSignature::Any(2)],
                Volatility::Stable,
            ),
        }
    }

    /// The definition of the view `arg` (an oid or a name) names.
    fn definition(&self, arg: &ScalarValue) -> Option<String> {
        let name = match arg {
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)) => relation_name(s)?,
            other => {
                let oid = match other {
                    ScalarValue::Int32(Some(i)) => u32::try_from(*i).ok()?,
                    ScalarValue::Int64(Some(i)) => u32::try_from(*i).ok()?,
                    ScalarValue::UInt32(Some(i)) => *i,
                    ScalarValue::UInt64(Some(i)) => u32::try_from(*i).ok()?,
                    _ => return None,
                };
                let rel = self.oids.get(oid)?;
                if rel.schema != "public" {
                    return None;
                }
                rel.name
            }
        };
        let rel = self.catalog.get(&name)?;
        if rel.kind != Kind::MaterializedView {
            return None;
        }
        view_query(&rel.sql)
    }
}

/// The relation a `pg_get_viewdef(text)` argument names: `name`,
/// `public.name` or `"Quoted"`, as PostgreSQL reads a relation name.
fn relation_name(text: &str) -> Option<String> {
    let text = text.trim();
    let name = match text.split_once('.') {
        Some((schema, name)) if schema.trim_matches('"') == "public" => name,
        Some(_) => return None,
        None => text,
    };
    Some(
        match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
            Some(quoted) => quoted.replace("\"\"", "\""),
            None => name.to_lowercase(),
        },
    )
}

/// The query of a stored `CREATE MATERIALIZED VIEW` statement, ending in
/// `;` like PostgreSQL's.
fn view_query(sql: &str) -> Option<String> {
    let mut stmts = millrace_planner::statement::parse(sql).ok()?;
    let (stmt, emit) = match stmts.pop()? {
        Statement::Sql(s) => (s, ""),
        Statement::CreateViewOnWindowClose(s) => (s, "\nEMIT ON WINDOW CLOSE"),
        _ => return None,
    };
    match *stmt {
        SqlStatement::CreateView(view) => Some(format!("{}{emit};", view.query)),
        _ => None,
    }
}

impl PartialEq for ViewDefinition {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.catalog, &other.catalog)
    }
}

impl Eq for ViewDefinition {}

impl std::hash::Hash for ViewDefinition {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name().hash(state);
    }
}

impl ScalarUDFImpl for ViewDefinition {
    fn name(&self) -> &str {
        "pg_get_viewdef"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let Some(view) = args.args.first() else {
            return datafusion::common::plan_err!("pg_get_viewdef needs a view");
        };
        match view {
            ColumnarValue::Scalar(v) => {
                Ok(ColumnarValue::Scalar(ScalarValue::Utf8(self.definition(v))))
            }
            ColumnarValue::Array(a) => {
                let mut out = datafusion::arrow::array::StringBuilder::new();
                for row in 0..a.len() {
                    out.append_option(self.definition(&ScalarValue::try_from_array(a, row)?));
                }
                Ok(ColumnarValue::Array(Arc::new(out.finish())))
            }
        }
    }
}

/// `json_build_object(key, value, …)`: a JSON object of alternating keys
/// and values (SQLAlchemy's reflection queries build column descriptions
/// with it).
#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonBuildObject {
    signature: Signature,
}

impl Default for JsonBuildObject {
    fn default() -> Self {
        Self {
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for JsonBuildObject {
    fn name(&self) -> &str {
        "json_build_object"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> datafusion::error::Result<DataType> {
        if !args.len().is_multiple_of(2) {
            return datafusion::common::plan_err!(
                "argument list of json_build_object must consist of alternating keys and values"
            );
        }
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let n = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let mut out = datafusion::arrow::array::StringBuilder::new();
        for row in 0..n {
            let mut object = serde_json::Map::new();
            for pair in arrays.chunks(2) {
                let key = ScalarValue::try_from_array(&pair[0], row)?;
                if key.is_null() {
                    return datafusion::common::exec_err!(
                        "json_build_object: a key must not be NULL"
                    );
                }
                let key = match key {
                    ScalarValue::Utf8(Some(k))
                    | ScalarValue::LargeUtf8(Some(k))
                    | ScalarValue::Utf8View(Some(k)) => k,
                    other => other.to_string(),
                };
                let value = ScalarValue::try_from_array(&pair[1], row)?;
                object.insert(key, json_value(value));
            }
            out.append_value(serde_json::Value::Object(object).to_string());
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// A SQL value as JSON: numbers, booleans and NULL as themselves, anything
/// else as its text.
fn json_value(v: ScalarValue) -> serde_json::Value {
    use serde_json::Value as J;
    if v.is_null() {
        return J::Null;
    }
    match v {
        ScalarValue::Boolean(Some(b)) => J::Bool(b),
        ScalarValue::Int8(Some(i)) => J::from(i),
        ScalarValue::Int16(Some(i)) => J::from(i),
        ScalarValue::Int32(Some(i)) => J::from(i),
        ScalarValue::Int64(Some(i)) => J::from(i),
        ScalarValue::UInt8(Some(i)) => J::from(i),
        ScalarValue::UInt16(Some(i)) => J::from(i),
        ScalarValue::UInt32(Some(i)) => J::from(i),
        ScalarValue::UInt64(Some(i)) => J::from(i),
        ScalarValue::Float32(Some(f)) => J::from(f),
        ScalarValue::Float64(Some(f)) => J::from(f),
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => J::String(s),
        other => J::String(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn view_names_read_like_relation_names() {
        use super::relation_name;
        assert_eq!(relation_name("Per_Minute").as_deref(), Some("per_minute"));
        assert_eq!(relation_name("public.v").as_deref(), Some("v"));
        assert_eq!(relation_name("\"Mixed\"").as_deref(), Some("Mixed"));
        assert_eq!(relation_name("pg_catalog.pg_class"), None);
    }

    #[test]
    fn a_view_definition_is_its_query() {
        let q = super::view_query(
            "CREATE MATERIALIZED VIEW v AS SELECT a, count(*) AS n FROM t GROUP BY a",
        );
        assert_eq!(
            q.as_deref(),
            Some("SELECT a, count(*) AS n FROM t GROUP BY a;")
        );
        assert_eq!(super::view_query("CREATE TABLE t (a INT)"), None);
    }

    #[test]
    fn version_reads_like_postgres() {
        let v = super::version_string();
        assert!(v.starts_with("PostgreSQL 15.0 (Millrace "), "{v}");
    }
}
