//! JSON values inside rows: PostgreSQL's `->`, `->>`,
//! `jsonb_extract_path` and `jsonb_extract_path_text` over JSON text.
//!
//! DataFusion has no JSON type; a `JSONB` column of a source holds the
//! value's JSON text, and these functions reach into it, so nested message
//! fields are usable in views like any other expression (they are pure
//! scalar functions, maintained incrementally as such).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, StringArray, StringBuilder};
use arrow::datatypes::DataType;
use datafusion::common::{DFSchema, Result};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use serde_json::Value;
use sqlparser::ast::BinaryOperator;

use crate::PlanError;

/// `jsonb_extract_path(json, VARIADIC path)` (JSON text out) or, with
/// `as_text`, `jsonb_extract_path_text` (strings unquoted).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ExtractPath {
    as_text: bool,
    signature: Signature,
}

impl ExtractPath {
    /// The function; `as_text` picks the `_text` flavour.
    pub fn udf(as_text: bool) -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::new_from_impl(Self {
            as_text,
            signature: Signature::variadic_any(Volatility::Immutable),
        }))
    }
}

impl ScalarUDFImpl for ExtractPath {
    fn name(&self) -> &str {
        if self.as_text {
            "jsonb_extract_path_text"
        } else {
            "jsonb_extract_path"
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let texts: Vec<ArrayRef> = arrays
            .iter()
            .map(|a| arrow::compute::cast(a, &DataType::Utf8))
            .collect::<std::result::Result<_, _>>()?;
        let texts: Vec<&StringArray> = texts
            .iter()
            .map(|a| {
                a.as_any().downcast_ref::<StringArray>().ok_or_else(|| {
                    datafusion::error::DataFusionError::Internal("cast to text failed".into())
                })
            })
            .collect::<Result<_>>()?;
        let Some((doc, path)) = texts.split_first() else {
            return Err(
                PlanError::Invalid(format!("{} needs a JSON value", self.name())).into_datafusion(),
            );
        };
        let mut out = StringBuilder::with_capacity(args.number_rows, args.number_rows * 8);
        for row in 0..args.number_rows {
            if doc.is_null(row) || path.iter().any(|p| p.is_null(row)) {
                out.append_null();
                continue;
            }
            let Ok(mut value) = serde_json::from_str::<Value>(doc.value(row)) else {
                return Err(PlanError::InvalidText(format!(
                    "invalid input syntax for type json: \"{}\"",
                    doc.value(row)
                ))
                .into_datafusion());
            };
            let mut found = true;
            for key in path {
                let key = key.value(row);
                let next = match &mut value {
                    Value::Object(map) => map.remove(key),
                    Value::Array(items) => key.parse::<i64>().ok().and_then(|i| {
                        let i = if i < 0 { items.len() as i64 + i } else { i };
                        usize::try_from(i)
                            .ok()
                            .filter(|i| *i < items.len())
                            .map(|i| items.swap_remove(i))
                    }),
                    _ => None,
                };
                match next {
                    Some(v) => value = v,
                    None => {
                        found = false;
                        break;
                    }
                }
            }
            match (found, &value) {
                (false, _) => out.append_null(),
                (true, Value::Null) if self.as_text => out.append_null(),
                (true, Value::String(s)) if self.as_text => out.append_value(s),
                (true, v) => out.append_value(v.to_string()),
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// Plans `a -> k` as `jsonb_extract_path(a, k)` and `a ->> k` as
/// `jsonb_extract_path_text(a, k)`; chains nest.
#[derive(Debug)]
pub struct JsonOperators;

impl ExprPlanner for JsonOperators {
    fn plan_binary_op(
        &self,
        expr: RawBinaryExpr,
        _schema: &DFSchema,
    ) -> Result<PlannerResult<RawBinaryExpr>> {
        let as_text = match expr.op {
            BinaryOperator::Arrow => false,
            BinaryOperator::LongArrow => true,
            _ => return Ok(PlannerResult::Original(expr)),
        };
        Ok(PlannerResult::Planned(Expr::ScalarFunction(
            ScalarFunction::new_udf(ExtractPath::udf(as_text), vec![expr.left, expr.right]),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::Field;

    fn call(as_text: bool, doc: &str, path: &[&str]) -> Option<String> {
        let mut args = vec![ColumnarValue::Array(Arc::new(StringArray::from(vec![doc])))];
        for p in path {
            args.push(ColumnarValue::Array(Arc::new(StringArray::from(vec![*p]))));
        }
        let udf = ExtractPath::udf(as_text);
        let out = udf
            .invoke_with_args(ScalarFunctionArgs {
                arg_fields: args
                    .iter()
                    .map(|_| Arc::new(Field::new("a", DataType::Utf8, true)))
                    .collect(),
                args,
                number_rows: 1,
                return_field: Arc::new(Field::new("r", DataType::Utf8, true)),
                config_options: Arc::default(),
            })
            .unwrap();
        let ColumnarValue::Array(a) = out else {
            panic!()
        };
        let a = a.as_any().downcast_ref::<StringArray>().unwrap();
        (!a.is_null(0)).then(|| a.value(0).to_string())
    }

    #[test]
    fn extracts_like_postgres() {
        let doc = r#"{"a": {"b": "x", "n": 2, "l": [10, 20]}}"#;
        assert_eq!(call(true, doc, &["a", "b"]).as_deref(), Some("x"));
        assert_eq!(call(false, doc, &["a", "b"]).as_deref(), Some("\"x\""));
        assert_eq!(call(false, doc, &["a", "l"]).as_deref(), Some("[10,20]"));
        assert_eq!(call(true, doc, &["a", "l", "-1"]).as_deref(), Some("20"));
        assert_eq!(call(true, doc, &["a", "zz"]), None);
        assert_eq!(call(true, doc, &["a", "b", "c"]), None);
    }
}
