//! SQL functions PostgreSQL clients call that neither DataFusion nor
//! datafusion-pg-catalog provide (or provide with an answer clients
//! misread): `version()` must look like PostgreSQL's, or drivers and BI
//! tools that parse it refuse the server.

use std::sync::Arc;

use datafusion::arrow::array::Array;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use datafusion::prelude::SessionContext;
use datafusion_pg_catalog::pg_catalog::quote_ident_udf::quote_ident;
use datafusion_pg_catalog::pg_catalog::RelationOids;
use millrace_planner::statement::Statement;
use sqlparser::ast::Statement as SqlStatement;

use millrace_engine::catalog::{Catalog, Kind};
use millrace_engine::error::{ErrorKind, SqlError};

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
    ctx.register_udf(ScalarUDF::from(LikeEscape::default()));
    ctx.register_udf(ScalarUDF::from(ToRegtype::default()));
    ctx.register_udf(ScalarUDF::from(Format::default()));
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
/// `public.name` or `"Quoted"` (which may hold dots), as PostgreSQL reads a
/// relation name: unquoted parts folded to lowercase, quoted ones kept with
/// `""` read as `"`. None for a name in another schema or one that does not
/// parse.
fn relation_name(text: &str) -> Option<String> {
    let mut parts = Vec::new();
    let mut chars = text.trim().chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    '"' => break,
                    c => part.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != '.') {
                part.push(c);
            }
            part = part.trim().to_lowercase();
        }
        if part.is_empty() {
            return None;
        }
        parts.push(part);
        match chars.next() {
            None => break,
            Some('.') => {}
            Some(_) => return None,
        }
    }
    match parts.as_slice() {
        [name] => Some(name.clone()),
        [schema, name] if schema == "public" => Some(name.clone()),
        _ => None,
    }
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
            return Err(wrong_arguments("pg_get_viewdef needs a view"));
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

/// `like_escape(pattern, escape)`: `pattern` with `escape` as its escape
/// character, rewritten to use backslash, the only escape DataFusion's
/// LIKE knows. As in PostgreSQL, `x LIKE p ESCAPE e` means
/// `x LIKE like_escape(p, e)` (the engine rewrites the one into the other:
/// SQLAlchemy escapes with `/`), and an empty `e` turns escaping off.
#[derive(Debug, PartialEq, Eq, Hash)]
struct LikeEscape {
    signature: Signature,
}

impl Default for LikeEscape {
    fn default() -> Self {
        Self {
            signature: Signature::exact(
                vec![DataType::Utf8, DataType::Utf8],
                Volatility::Immutable,
            ),
        }
    }
}

/// `pattern` with escapes by `escape` (none if `None`) turned into
/// backslash escapes.
pub(crate) fn backslash_escapes(pattern: &str, escape: Option<char>) -> Result<String, SqlError> {
    if escape == Some('\\') {
        return Ok(pattern.to_string());
    }
    let mut out = String::with_capacity(pattern.len() + 2);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if Some(c) == escape {
            let Some(next) = chars.next() else {
                return Err(SqlError::new(
                    ErrorKind::InvalidEscapeSequence,
                    "LIKE pattern must not end with escape character",
                ));
            };
            out.push('\\');
            out.push(next);
        } else if c == '\\' {
            out.push_str("\\\\");
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// The escape character of `ESCAPE 'e'`: one character, or none for `''`.
pub(crate) fn escape_char(text: &str) -> Result<Option<char>, SqlError> {
    let mut chars = text.chars();
    match (chars.next(), chars.next()) {
        (None, _) => Ok(None),
        (Some(c), None) => Ok(Some(c)),
        _ => Err(SqlError::new(
            ErrorKind::InvalidEscapeSequence,
            "invalid escape string: it must be empty or one character",
        )),
    }
}

impl ScalarUDFImpl for LikeEscape {
    fn name(&self) -> &str {
        "like_escape"
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
        // Of length 1 when both arguments are scalars, else one per row.
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let (Some(patterns), Some(escapes)) = (arrays.first(), arrays.get(1)) else {
            return Err(wrong_arguments("like_escape takes a pattern and an escape"));
        };
        let patterns = datafusion::common::cast::as_string_array(patterns)?;
        let escapes = datafusion::common::cast::as_string_array(escapes)?;
        let external = |e: SqlError| datafusion::error::DataFusionError::External(Box::new(e));
        let mut out = datafusion::arrow::array::StringBuilder::new();
        for row in 0..patterns.len().min(escapes.len()) {
            if patterns.is_null(row) || escapes.is_null(row) {
                out.append_null();
                continue;
            }
            let escape = escape_char(escapes.value(row)).map_err(external)?;
            out.append_value(backslash_escapes(patterns.value(row), escape).map_err(external)?);
        }
        let array: datafusion::arrow::array::ArrayRef = Arc::new(out.finish());
        if args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)))
        {
            return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                &array, 0,
            )?));
        }
        Ok(ColumnarValue::Array(array))
    }
}

/// `to_regtype(name)`: the oid of the built-in type `name`, or NULL when
/// there is none (psycopg's `TypeInfo.fetch`, SQLAlchemy's hstore probe).
/// Takes PostgreSQL's catalog names (`int8`), SQL spellings (`bigint`,
/// `double precision`), a `pg_catalog.` prefix, a length or precision
/// (`varchar(255)`, `numeric(10,2)`) and `[]` for arrays.
///
/// Unlike PostgreSQL's, which returns a `regtype` (printed as the type's
/// name), it returns the type's oid as an `int4`: clients compare it with
/// oids or test it for NULL, and Millrace has no `regtype` type.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ToRegtype {
    signature: Signature,
}

impl Default for ToRegtype {
    fn default() -> Self {
        Self {
            signature: Signature::exact(vec![DataType::Utf8], Volatility::Stable),
        }
    }
}

/// The oid of the type PostgreSQL's `regtype` input would read `name` as.
pub(crate) fn type_oid(name: &str) -> Option<i32> {
    use pgwire::api::Type;
    use std::collections::HashMap;
    use std::sync::OnceLock;
    static BY_NAME: OnceLock<HashMap<String, u32>> = OnceLock::new();
    let by_name = BY_NAME.get_or_init(|| {
        // Every type postgres-types knows, by its pg_type name.
        (0..=u16::MAX as u32)
            .filter_map(|oid| Type::from_oid(oid).map(|t| (t.name().to_string(), oid)))
            .collect()
    });
    // Without type modifiers (`(255)`, `(10,2)`), which name no other type.
    let mut bare = String::with_capacity(name.len());
    let mut depth = 0usize;
    for c in name.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.checked_sub(1)?,
            c if depth == 0 => bare.push(c),
            _ => {}
        }
    }
    if depth != 0 {
        return None;
    }
    let name = bare
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    let name = name.strip_prefix("pg_catalog.").unwrap_or(&name).trim();
    let (base, array) = match name.strip_suffix("[]") {
        Some(base) => (base.trim(), true),
        None => (name, false),
    };
    let base = match base {
        "integer" | "int" => "int4",
        "smallint" => "int2",
        "bigint" => "int8",
        "real" => "float4",
        "double precision" | "float" => "float8",
        "boolean" => "bool",
        "character varying" => "varchar",
        "character" | "char" => "bpchar",
        "decimal" => "numeric",
        "timestamp without time zone" => "timestamp",
        "timestamp with time zone" => "timestamptz",
        "time without time zone" => "time",
        "time with time zone" => "timetz",
        other => other,
    };
    let key = if array {
        format!("_{base}")
    } else {
        base.to_string()
    };
    by_name.get(&key).and_then(|oid| i32::try_from(*oid).ok())
}

impl ScalarUDFImpl for ToRegtype {
    fn name(&self) -> &str {
        "to_regtype"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Int32)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let Some(name) = args.args.first() else {
            return Err(wrong_arguments("to_regtype takes a type name"));
        };
        let oid = |v: &ScalarValue| match v {
            ScalarValue::Utf8(Some(s)) => type_oid(s),
            _ => None,
        };
        match name {
            ColumnarValue::Scalar(v) => Ok(ColumnarValue::Scalar(ScalarValue::Int32(oid(v)))),
            ColumnarValue::Array(a) => {
                let mut out = datafusion::arrow::array::Int32Builder::new();
                for row in 0..a.len() {
                    out.append_option(oid(&ScalarValue::try_from_array(a, row)?));
                }
                Ok(ColumnarValue::Array(Arc::new(out.finish())))
            }
        }
    }
}

/// `format(formatstr, arg, …)`: PostgreSQL's `%s` (text, NULL as
/// nothing), `%I` (quoted identifier), `%L` (quoted literal, NULL as
/// `NULL`) and `%%`, with arguments in order (Metabase builds type and
/// relation names with it).
#[derive(Debug, PartialEq, Eq, Hash)]
struct Format {
    signature: Signature,
}

impl Default for Format {
    fn default() -> Self {
        Self {
            signature: Signature::variadic_any(Volatility::Stable),
        }
    }
}

/// `text` as PostgreSQL's `quote_literal` writes it: in single quotes with
/// `'` doubled, and as an `E'…'` string with `\` doubled when it holds a
/// backslash.
fn quote_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 3);
    if text.contains('\\') {
        out.push('E');
    }
    out.push('\'');
    for c in text.chars() {
        if c == '\'' || c == '\\' {
            out.push(c);
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// `format`'s result for one row.
pub(crate) fn format_row(fmt: &str, args: &[Option<&str>]) -> Result<String, SqlError> {
    let mut out = String::with_capacity(fmt.len());
    let mut next = args.iter();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let spec = chars.next();
        if spec == Some('%') {
            out.push('%');
            continue;
        }
        let arg = match spec {
            Some('s' | 'I' | 'L') => next.next().ok_or_else(|| {
                SqlError::new(
                    ErrorKind::InvalidParameterValue,
                    "too few arguments for format()",
                )
            })?,
            // An argument position, flags or a width: PostgreSQL's, not ours.
            Some(c) if c.is_ascii_digit() || c == '-' || c == '*' => {
                return Err(SqlError::unsupported(format!(
                    "format() with a position, flag or width (\"%{c}…\"; only %s, %I, %L and %% are)"
                )))
            }
            Some(c) => {
                return Err(SqlError::new(
                    ErrorKind::InvalidParameterValue,
                    format!("unrecognized format() type specifier \"{c}\""),
                ))
            }
            None => {
                return Err(SqlError::new(
                    ErrorKind::InvalidParameterValue,
                    "unterminated format() type specifier",
                ))
            }
        };
        match (spec, arg) {
            (Some('s'), Some(a)) => out.push_str(a),
            (Some('s'), None) => {}
            (Some('I'), Some(a)) => out.push_str(&quote_ident(a)),
            (Some('I'), None) => {
                return Err(SqlError::new(
                    ErrorKind::NullValueNotAllowed,
                    "null values cannot be formatted as an SQL identifier",
                ))
            }
            (_, Some(a)) => out.push_str(&quote_literal(a)),
            (_, None) => out.push_str("NULL"),
        }
    }
    Ok(out)
}

impl ScalarUDFImpl for Format {
    fn name(&self) -> &str {
        "format"
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
        let scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        // Every argument as PostgreSQL's text output of it; all of length 1
        // when every argument is a scalar.
        let arrays = ColumnarValue::values_to_arrays(&args.args)?
            .iter()
            .map(crate::pg::text::text_array)
            .collect::<Result<Vec<_>, _>>()?;
        let Some(rows) = arrays.first().map(|a| a.len()) else {
            return Err(wrong_arguments("format needs a format string"));
        };
        let texts = arrays
            .iter()
            .map(|a| datafusion::common::cast::as_string_array(a))
            .collect::<Result<Vec<_>, _>>()?;
        let external = |e: SqlError| datafusion::error::DataFusionError::External(Box::new(e));
        let mut out = datafusion::arrow::array::StringBuilder::new();
        let mut values = Vec::with_capacity(texts.len());
        for row in 0..rows {
            values.clear();
            values.extend(
                texts
                    .iter()
                    .map(|t| (!t.is_null(row)).then(|| t.value(row))),
            );
            match values.split_first() {
                Some((Some(fmt), rest)) => {
                    out.append_value(format_row(fmt, rest).map_err(external)?)
                }
                _ => out.append_null(),
            }
        }
        let array: datafusion::arrow::array::ArrayRef = Arc::new(out.finish());
        if scalar {
            return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                &array, 0,
            )?));
        }
        Ok(ColumnarValue::Array(array))
    }
}

/// Rewrites `x [NOT] [I]LIKE p ESCAPE 'e'` (e not backslash) in `stmt` to
/// `x [NOT] [I]LIKE like_escape(p, 'e')`, which DataFusion plans (the
/// pattern may be a parameter, so it is converted when the query runs).
pub(crate) fn rewrite_like_escapes(stmt: &mut SqlStatement) -> Result<(), SqlError> {
    use sqlparser::ast::{
        Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentList, FunctionArguments,
        Ident, ObjectName, Value,
    };
    use std::ops::ControlFlow;
    let mut error = None;
    let _ = sqlparser::ast::visit_expressions_mut(stmt, |e| {
        let (Expr::Like {
            pattern,
            escape_char: escape,
            ..
        }
        | Expr::ILike {
            pattern,
            escape_char: escape,
            ..
        }) = e
        else {
            return ControlFlow::Continue(());
        };
        if escape.is_none() {
            return ControlFlow::Continue(());
        }
        let Some(escape) = escape.take() else {
            return ControlFlow::Continue(());
        };
        let text = match &escape.value {
            Value::SingleQuotedString(t)
            | Value::EscapedStringLiteral(t)
            | Value::DollarQuotedString(sqlparser::ast::DollarQuotedString { value: t, .. }) => {
                Some(t.clone())
            }
            // ESCAPE NULL: like_escape(p, NULL) is NULL, so is the LIKE.
            Value::Null => None,
            other => {
                error = Some(SqlError::unsupported(format!(
                    "ESCAPE {other} (only a string literal or NULL is)"
                )));
                return ControlFlow::Break(());
            }
        };
        if let Some(text) = &text {
            if let Err(e) = escape_char(text) {
                error = Some(e);
                return ControlFlow::Break(());
            }
            if text == "\\" {
                return ControlFlow::Continue(());
            }
        }
        let arg = |e: Expr| FunctionArg::Unnamed(FunctionArgExpr::Expr(e));
        let original = std::mem::replace(pattern.as_mut(), Expr::Value(Value::Null.into()));
        **pattern = Expr::Function(Function {
            name: ObjectName::from(vec![Ident::new("like_escape")]),
            uses_odbc_syntax: false,
            parameters: FunctionArguments::None,
            args: FunctionArguments::List(FunctionArgumentList {
                duplicate_treatment: None,
                args: vec![arg(original), arg(Expr::Value(escape))],
                clauses: vec![],
            }),
            filter: None,
            null_treatment: None,
            over: None,
            within_group: vec![],
        });
        ControlFlow::Continue(())
    });
    match error {
        Some(e) => Err(e),
        None => Ok(()),
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
            return Err(odd_json_arguments());
        }
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        // Of length 1 when every argument is a scalar, else one per row.
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let rows = match arrays.first() {
            Some(a) => a.len(),
            None => 1, // json_build_object(): one empty object
        };
        let mut out = datafusion::arrow::array::StringBuilder::new();
        for row in 0..rows {
            let mut object = serde_json::Map::new();
            for pair in arrays.chunks(2) {
                let (Some(key), Some(value)) = (pair.first(), pair.get(1)) else {
                    return Err(odd_json_arguments());
                };
                let key = ScalarValue::try_from_array(key, row)?;
                if key.is_null() {
                    return Err(datafusion::error::DataFusionError::External(Box::new(
                        SqlError::new(
                            ErrorKind::NullValueNotAllowed,
                            "null value not allowed for object key",
                        ),
                    )));
                }
                let key = match key {
                    ScalarValue::Utf8(Some(k))
                    | ScalarValue::LargeUtf8(Some(k))
                    | ScalarValue::Utf8View(Some(k)) => k,
                    other => other.to_string(),
                };
                let value = ScalarValue::try_from_array(value, row)?;
                object.insert(key, json_value(value));
            }
            out.append_value(serde_json::Value::Object(object).to_string());
        }
        let array: datafusion::arrow::array::ArrayRef = Arc::new(out.finish());
        if scalar {
            return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                &array, 0,
            )?));
        }
        Ok(ColumnarValue::Array(array))
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

/// A function called with arguments its signature should have ruled out
/// (class 42, as PostgreSQL reports a call that matches no function).
fn wrong_arguments(message: &str) -> datafusion::error::DataFusionError {
    datafusion::error::DataFusionError::External(Box::new(SqlError::new(
        ErrorKind::SyntaxErrorOrAccessRuleViolation,
        message,
    )))
}

/// `json_build_object` with an odd number of arguments (22023, as in
/// PostgreSQL).
fn odd_json_arguments() -> datafusion::error::DataFusionError {
    datafusion::error::DataFusionError::External(Box::new(SqlError::new(
        ErrorKind::InvalidParameterValue,
        "argument list of json_build_object must consist of alternating keys and values",
    )))
}

#[cfg(test)]
mod tests {
    #[test]
    fn type_names_read_like_regtype_input() {
        use super::type_oid;
        assert_eq!(type_oid("int8"), Some(20));
        assert_eq!(type_oid("bigint"), Some(20));
        assert_eq!(type_oid("pg_catalog.text"), Some(25));
        assert_eq!(type_oid("double precision"), Some(701));
        assert_eq!(type_oid("integer[]"), Some(1007));
        assert_eq!(type_oid("timestamp with time zone"), Some(1184));
        assert_eq!(type_oid("hstore"), None);
        assert_eq!(type_oid("varchar(255)"), Some(1043));
        assert_eq!(type_oid("numeric(10,2)"), Some(1700));
        assert_eq!(type_oid("character varying(10)[]"), Some(1015));
        assert_eq!(type_oid("timestamp(3) with time zone"), Some(1184));
        assert_eq!(type_oid("numeric(10"), None);
    }

    #[test]
    fn format_quotes_like_postgres() {
        use super::format_row;
        assert_eq!(
            format_row("%I.%I", &[Some("public"), Some("My T")]).unwrap(),
            "public.\"My T\""
        );
        assert_eq!(
            format_row("%I %I %I", &[Some("order"), Some("Foo"), Some("foo_1")]).unwrap(),
            "\"order\" \"Foo\" foo_1"
        );
        assert_eq!(
            format_row("%s=%L", &[Some("a"), Some("it's")]).unwrap(),
            "a='it''s'"
        );
        assert_eq!(format_row("%L", &[Some("a\\b")]).unwrap(), "E'a\\\\b'");
        assert_eq!(
            format_row("%L|%s|100%%", &[None, None]).unwrap(),
            "NULL||100%"
        );
        assert!(format_row("%s %s", &[Some("a")]).is_err());
    }

    #[test]
    fn format_errors_carry_postgres_sqlstates() {
        use super::format_row;
        let code = |f: &str, args: &[Option<&str>]| {
            crate::sqlstate::of(format_row(f, args).unwrap_err().kind)
        };
        assert_eq!(code("%d", &[Some("1")]), "22023");
        let e = format_row("%d", &[Some("1")]).unwrap_err();
        assert_eq!(e.message, "unrecognized format() type specifier \"d\"");
        let e = format_row("abc%", &[]).unwrap_err();
        assert_eq!(
            (crate::sqlstate::of(e.kind), e.message.as_str()),
            ("22023", "unterminated format() type specifier")
        );
        assert_eq!(code("%I", &[None]), "22004");
        assert_eq!(code("%s %s", &[Some("a")]), "22023");
        for accepted_by_postgres in ["%1$s", "%-10s", "%*s", "%10s"] {
            assert_eq!(code(accepted_by_postgres, &[Some("a")]), "0A000");
        }
    }

    /// Invokes `udf` as DataFusion does for `rows` rows whose arguments
    /// are all constants.
    fn invoke_scalars(
        udf: &dyn datafusion::logical_expr::ScalarUDFImpl,
        args: Vec<datafusion::common::ScalarValue>,
        rows: usize,
    ) -> datafusion::common::ScalarValue {
        use datafusion::arrow::datatypes::Field;
        use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs};
        use std::sync::Arc;
        let arg_fields = args
            .iter()
            .map(|a| Arc::new(Field::new("a", a.data_type(), true)))
            .collect();
        let out = udf
            .invoke_with_args(ScalarFunctionArgs {
                args: args.into_iter().map(ColumnarValue::Scalar).collect(),
                arg_fields,
                number_rows: rows,
                return_field: Arc::new(Field::new("r", udf.return_type(&[]).unwrap(), true)),
                config_options: Arc::new(Default::default()),
            })
            .unwrap();
        match out {
            ColumnarValue::Scalar(s) => s,
            ColumnarValue::Array(a) => {
                assert_eq!(a.len(), rows, "an array must have one value per row");
                datafusion::common::ScalarValue::try_from_array(&a, 0).unwrap()
            }
        }
    }

    #[test]
    fn constant_arguments_over_many_rows() {
        use datafusion::common::ScalarValue as S;
        let text = |s: &str| S::Utf8(Some(s.to_string()));
        assert_eq!(
            invoke_scalars(
                &super::LikeEscape::default(),
                vec![text("a/_b"), text("/")],
                5
            ),
            text("a\\_b")
        );
        assert_eq!(
            invoke_scalars(
                &super::Format::default(),
                vec![text("%s-%L"), S::Int64(Some(7)), S::Utf8(None)],
                5
            ),
            text("7-NULL")
        );
        assert_eq!(
            invoke_scalars(
                &super::JsonBuildObject::default(),
                vec![text("a"), S::Int64(Some(1))],
                5
            ),
            text("{\"a\":1}")
        );
        assert_eq!(
            invoke_scalars(&super::JsonBuildObject::default(), vec![], 3),
            text("{}")
        );
    }

    #[test]
    fn like_escapes_become_backslashes() {
        use super::backslash_escapes;
        assert_eq!(backslash_escapes("pg/_%", Some('/')).unwrap(), "pg\\_%");
        assert_eq!(backslash_escapes("a//b", Some('/')).unwrap(), "a\\/b");
        assert_eq!(backslash_escapes("a\\b", Some('/')).unwrap(), "a\\\\b");
        assert_eq!(backslash_escapes("a\\_", None).unwrap(), "a\\\\_");
        assert_eq!(backslash_escapes("a\\_", Some('\\')).unwrap(), "a\\_");
        assert!(backslash_escapes("ab/", Some('/')).is_err());
        assert!(super::escape_char("ab").is_err());
    }

    #[test]
    fn view_names_read_like_relation_names() {
        use super::relation_name;
        assert_eq!(relation_name("Per_Minute").as_deref(), Some("per_minute"));
        assert_eq!(relation_name("public.v").as_deref(), Some("v"));
        assert_eq!(relation_name("\"Mixed\"").as_deref(), Some("Mixed"));
        assert_eq!(relation_name("pg_catalog.pg_class"), None);
        assert_eq!(relation_name("PUBLIC.v").as_deref(), Some("v"));
        assert_eq!(relation_name("\"public\".\"V\"").as_deref(), Some("V"));
        assert_eq!(relation_name("\"a.b\"").as_deref(), Some("a.b"));
        assert_eq!(relation_name("public.\"a.b\"").as_deref(), Some("a.b"));
        assert_eq!(relation_name("\"Public\".v"), None);
        assert_eq!(relation_name("\"q\"\"x\"").as_deref(), Some("q\"x"));
        assert_eq!(relation_name("\"open"), None);
        assert_eq!(relation_name("a..b"), None);
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
