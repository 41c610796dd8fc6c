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
    // Views, tables and columns carry no comments (COMMENT ON is not
    // supported): PostgreSQL answers NULL for an object without one.
    for (name, args) in [
        ("obj_description", vec![1, 2]),
        ("col_description", vec![2]),
        ("shobj_description", vec![2]),
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

#[cfg(test)]
mod tests {
    #[test]
    fn version_reads_like_postgres() {
        let v = super::version_string();
        assert!(v.starts_with("PostgreSQL 15.0 (Millrace "), "{v}");
    }
}
