//! SQL functions PostgreSQL clients call that neither DataFusion nor
//! datafusion-pg-catalog provide (or provide with an answer clients
//! misread): `version()` must look like PostgreSQL's, or drivers and BI
//! tools that parse it refuse the server.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use datafusion::prelude::SessionContext;

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
/// own `version()`).
pub fn register(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::from(Constant::new(
        "version",
        vec![],
        ScalarValue::Utf8(Some(version_string())),
    )));
    ctx.register_udf(ScalarUDF::from(JsonBuildObject::default()));
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
    // no column owns a sequence, no relation has rules. View definitions
    // are not reconstructed yet.
    for (name, args) in [
        ("obj_description", vec![1, 2]),
        ("col_description", vec![2]),
        ("shobj_description", vec![2]),
        ("pg_get_serial_sequence", vec![2]),
        ("pg_get_ruledef", vec![1, 2]),
        ("pg_get_viewdef", vec![1, 2]),
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
        Ok(ColumnarValue::Array(std::sync::Arc::new(out.finish())))
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
    fn version_reads_like_postgres() {
        let v = super::version_string();
        assert!(v.starts_with("PostgreSQL 15.0 (Millrace "), "{v}");
    }
}
