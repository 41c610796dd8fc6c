//! `information_schema` as PostgreSQL clients read it.
//!
//! DataFusion's own `information_schema.columns` names column types the
//! Arrow way (`Int64`, `Timestamp(ns, "UTC")`) and lacks PostgreSQL's
//! `udt_name` / `is_identity` columns, so Grafana's column picker,
//! node-postgres and pgx programs and Metabase's field sync see types no
//! PostgreSQL has. DataFusion answers `information_schema.*` itself before
//! asking the catalog when its `information_schema` option is on, so the
//! engine turns that option off and serves the schema from the catalog
//! instead, through [`CatalogWithInformationSchema`]: `columns` is ours,
//! every other table is DataFusion's.

use std::sync::{Arc, Weak};

use arrow::array::{ArrayRef, Int32Builder, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::information_schema::{InformationSchemaProvider, INFORMATION_SCHEMA};
use datafusion::catalog::{CatalogProvider, CatalogProviderList, SchemaProvider, Session};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use pgwire::api::Type;

/// A catalog that also answers `information_schema` (without listing it
/// among its schemas, so pg_catalog's listings stay as they were).
#[derive(Debug)]
pub struct CatalogWithInformationSchema {
    inner: Arc<dyn CatalogProvider>,
    /// The session's catalog list, which holds this catalog: weak, or the
    /// two would keep each other alive.
    catalogs: Weak<dyn CatalogProviderList>,
}

impl CatalogWithInformationSchema {
    /// `inner`'s schemas plus `information_schema` over every catalog of
    /// `catalogs`.
    pub fn new(inner: Arc<dyn CatalogProvider>, catalogs: Weak<dyn CatalogProviderList>) -> Self {
        Self { inner, catalogs }
    }
}

impl CatalogProvider for CatalogWithInformationSchema {
    fn schema_names(&self) -> Vec<String> {
        self.inner.schema_names()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if name.eq_ignore_ascii_case(INFORMATION_SCHEMA) {
            let catalogs = self.catalogs.upgrade()?;
            return Some(Arc::new(PgInformationSchema { catalogs }));
        }
        self.inner.schema(name)
    }

    fn register_schema(
        &self,
        name: &str,
        schema: Arc<dyn SchemaProvider>,
    ) -> DfResult<Option<Arc<dyn SchemaProvider>>> {
        self.inner.register_schema(name, schema)
    }

    fn deregister_schema(
        &self,
        name: &str,
        cascade: bool,
    ) -> DfResult<Option<Arc<dyn SchemaProvider>>> {
        self.inner.deregister_schema(name, cascade)
    }
}

/// `information_schema`: DataFusion's tables, with `columns` replaced.
#[derive(Debug)]
struct PgInformationSchema {
    catalogs: Arc<dyn CatalogProviderList>,
}

#[async_trait]
impl SchemaProvider for PgInformationSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.datafusion().table_names();
        names.extend(CONSTRAINT_TABLES.iter().map(|(name, _)| name.to_string()));
        names
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let name = name.to_ascii_lowercase();
        if name == "columns" {
            return Ok(Some(Arc::new(Columns {
                catalogs: self.catalogs.clone(),
            })));
        }
        if let Some(schema) = constraint_table(&name) {
            return Ok(Some(Arc::new(
                datafusion::datasource::empty::EmptyTable::new(schema),
            )));
        }
        self.datafusion().table(&name).await
    }

    fn table_exist(&self, name: &str) -> bool {
        constraint_table(&name.to_ascii_lowercase()).is_some()
            || self.datafusion().table_exist(name)
    }
}

/// The constraint views of `information_schema`, with their columns (the
/// `int` ones are PostgreSQL's `cardinal_number`). Millrace has no primary,
/// unique, foreign-key or check constraints, so they are empty, but tools
/// join them to find primary keys (Metabase's field sync) and must find
/// them.
const CONSTRAINT_TABLES: &[(&str, &[&str])] = &[
    (
        "table_constraints",
        &[
            "constraint_catalog",
            "constraint_schema",
            "constraint_name",
            "table_catalog",
            "table_schema",
            "table_name",
            "constraint_type",
            "is_deferrable",
            "initially_deferred",
            "enforced",
            "nulls_distinct",
        ],
    ),
    (
        "key_column_usage",
        &[
            "constraint_catalog",
            "constraint_schema",
            "constraint_name",
            "table_catalog",
            "table_schema",
            "table_name",
            "column_name",
            "ordinal_position int",
            "position_in_unique_constraint int",
        ],
    ),
    (
        "constraint_column_usage",
        &[
            "table_catalog",
            "table_schema",
            "table_name",
            "column_name",
            "constraint_catalog",
            "constraint_schema",
            "constraint_name",
        ],
    ),
    (
        "referential_constraints",
        &[
            "constraint_catalog",
            "constraint_schema",
            "constraint_name",
            "unique_constraint_catalog",
            "unique_constraint_schema",
            "unique_constraint_name",
            "match_option",
            "update_rule",
            "delete_rule",
        ],
    ),
    (
        "check_constraints",
        &[
            "constraint_catalog",
            "constraint_schema",
            "constraint_name",
            "check_clause",
        ],
    ),
];

/// The columns of the constraint view `name`, if it is one.
fn constraint_table(name: &str) -> Option<SchemaRef> {
    let (_, columns) = CONSTRAINT_TABLES.iter().find(|(n, _)| *n == name)?;
    let fields: Vec<Field> = columns
        .iter()
        .map(|c| match c.strip_suffix(" int") {
            Some(c) => Field::new(c, DataType::Int32, true),
            None => Field::new(*c, DataType::Utf8, true),
        })
        .collect();
    Some(Arc::new(Schema::new(fields)))
}

impl PgInformationSchema {
    fn datafusion(&self) -> InformationSchemaProvider {
        InformationSchemaProvider::new(self.catalogs.clone())
    }
}

/// `information_schema.columns` with PostgreSQL's type names.
#[derive(Debug)]
struct Columns {
    catalogs: Arc<dyn CatalogProviderList>,
}

/// The columns of `information_schema.columns` clients read (PostgreSQL 15
/// has more, about domains, collations and identity sequences; none apply).
fn columns_schema() -> SchemaRef {
    let text = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    let number = |name: &str| Field::new(name, DataType::Int32, true);
    Arc::new(Schema::new(vec![
        text("table_catalog", false),
        text("table_schema", false),
        text("table_name", false),
        text("column_name", false),
        Field::new("ordinal_position", DataType::Int32, false),
        text("column_default", true),
        text("is_nullable", false),
        text("data_type", false),
        number("character_maximum_length"),
        number("character_octet_length"),
        number("numeric_precision"),
        number("numeric_precision_radix"),
        number("numeric_scale"),
        number("datetime_precision"),
        text("interval_type", true),
        text("udt_catalog", false),
        text("udt_schema", false),
        text("udt_name", false),
        text("dtd_identifier", false),
        text("is_self_referencing", false),
        text("is_identity", false),
        text("identity_generation", true),
        text("is_generated", false),
        text("generation_expression", true),
        text("is_updatable", false),
    ]))
}

/// PostgreSQL's `data_type` for `t`: the SQL-standard spelling for built-in
/// types, `ARRAY` for arrays (the element type is in `udt_name`).
fn data_type_name(t: &Type) -> String {
    let name = match *t {
        Type::BOOL => "boolean",
        Type::INT2 => "smallint",
        Type::INT4 => "integer",
        Type::INT8 => "bigint",
        Type::FLOAT4 => "real",
        Type::FLOAT8 => "double precision",
        Type::NUMERIC => "numeric",
        Type::TEXT => "text",
        Type::VARCHAR => "character varying",
        Type::BPCHAR => "character",
        Type::CHAR => "\"char\"",
        Type::NAME => "name",
        Type::BYTEA => "bytea",
        Type::DATE => "date",
        Type::TIME => "time without time zone",
        Type::TIMETZ => "time with time zone",
        Type::TIMESTAMP => "timestamp without time zone",
        Type::TIMESTAMPTZ => "timestamp with time zone",
        Type::INTERVAL => "interval",
        Type::JSON => "json",
        Type::JSONB => "jsonb",
        Type::UUID => "uuid",
        Type::OID => "oid",
        // array types are named for their element with a leading `_`
        _ if t.name().starts_with('_') => "ARRAY",
        _ => return t.name().to_string(),
    };
    name.to_string()
}

/// `numeric_precision`, `numeric_precision_radix`, `numeric_scale` and
/// `datetime_precision` as PostgreSQL reports them for `t`.
fn precision(t: &Type, arrow: &DataType) -> [Option<i32>; 4] {
    match *t {
        Type::INT2 => [Some(16), Some(2), Some(0), None],
        Type::INT4 => [Some(32), Some(2), Some(0), None],
        Type::INT8 => [Some(64), Some(2), Some(0), None],
        Type::FLOAT4 => [Some(24), Some(2), None, None],
        Type::FLOAT8 => [Some(53), Some(2), None, None],
        Type::NUMERIC => match arrow {
            DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => {
                [Some(i32::from(*p)), Some(10), Some(i32::from(*s)), None]
            }
            _ => [None, Some(10), None, None],
        },
        Type::DATE => [None, None, None, Some(0)],
        Type::TIME | Type::TIMETZ | Type::TIMESTAMP | Type::TIMESTAMPTZ | Type::INTERVAL => {
            [None, None, None, Some(6)]
        }
        _ => [None; 4],
    }
}

#[async_trait]
impl TableProvider for Columns {
    fn schema(&self) -> SchemaRef {
        columns_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let mut rows = Vec::new();
        for catalog_name in self.catalogs.catalog_names() {
            let Some(catalog) = self.catalogs.catalog(&catalog_name) else {
                continue;
            };
            for schema_name in catalog.schema_names() {
                if schema_name == INFORMATION_SCHEMA {
                    continue;
                }
                let Some(schema) = catalog.schema(&schema_name) else {
                    continue;
                };
                for table_name in schema.table_names() {
                    let Some(table) = schema.table(&table_name).await? else {
                        continue;
                    };
                    for (i, field) in table.schema().fields().iter().enumerate() {
                        rows.push(column_row(
                            &catalog_name,
                            &schema_name,
                            &table_name,
                            i,
                            field,
                        ));
                    }
                }
            }
        }
        let schema = columns_schema();
        let batch = RecordBatch::try_new(schema.clone(), columns_arrays(&rows))?;
        let exec: Arc<dyn ExecutionPlan> =
            MemorySourceConfig::try_new_exec(&[vec![batch]], schema, projection.cloned())?;
        Ok(exec)
    }
}

/// One row of `information_schema.columns`: the text columns in the order
/// of [`columns_schema`] (with `ordinal_position` and the numbers apart).
struct ColumnRow {
    text: Vec<Option<String>>,
    ordinal: i32,
    /// character_maximum_length, character_octet_length, numeric_precision,
    /// numeric_precision_radix, numeric_scale, datetime_precision.
    numbers: [Option<i32>; 6],
}

/// Text columns before `ordinal_position` (table_catalog … column_name).
const TEXT_BEFORE_ORDINAL: usize = 4;
/// Text columns between `ordinal_position` and the numbers
/// (column_default, is_nullable, data_type).
const TEXT_BEFORE_NUMBERS: usize = 7;
/// All text columns.
const TEXT_COLUMNS: usize = 18;

fn column_row(
    catalog: &str,
    schema: &str,
    table: &str,
    index: usize,
    field: &Arc<Field>,
) -> ColumnRow {
    // Types arrow-pg cannot name go over the wire as text too.
    let pg = arrow_pg::datatypes::field_into_pg_type(field).unwrap_or(Type::TEXT);
    let [precision, radix, scale, datetime] = precision(&pg, field.data_type());
    // PostgreSQL's answer for text without a declared length: 1 GB.
    let octets = matches!(pg, Type::TEXT | Type::VARCHAR | Type::BPCHAR).then_some(1 << 30);
    let ordinal = i32::try_from(index + 1).unwrap_or(i32::MAX);
    let udt_schema = match pg.schema() {
        "" | "public" => "pg_catalog",
        s => s,
    };
    let s = |v: &str| Some(v.to_string());
    ColumnRow {
        text: vec![
            s(catalog),
            s(schema),
            s(table),
            s(field.name()),
            None, // column_default: Millrace columns have none
            s(if field.is_nullable() { "YES" } else { "NO" }),
            Some(data_type_name(&pg)),
            None, // interval_type
            s(catalog),
            s(udt_schema),
            s(pg.name()),
            Some(ordinal.to_string()), // dtd_identifier
            s("NO"),                   // is_self_referencing
            s("NO"),                   // is_identity
            None,                      // identity_generation
            s("NEVER"),                // is_generated
            None,                      // generation_expression
            s("YES"),                  // is_updatable
        ],
        ordinal,
        numbers: [None, octets, precision, radix, scale, datetime],
    }
}

fn columns_arrays(rows: &[ColumnRow]) -> Vec<ArrayRef> {
    let text = |i: usize| -> ArrayRef {
        let mut b = StringBuilder::new();
        for r in rows {
            b.append_option(r.text[i].as_deref());
        }
        Arc::new(b.finish())
    };
    let number = |i: usize| -> ArrayRef {
        let mut b = Int32Builder::new();
        for r in rows {
            b.append_option(r.numbers[i]);
        }
        Arc::new(b.finish())
    };
    let mut arrays: Vec<ArrayRef> = (0..TEXT_BEFORE_ORDINAL).map(text).collect();
    let mut ordinals = Int32Builder::new();
    for r in rows {
        ordinals.append_value(r.ordinal);
    }
    arrays.push(Arc::new(ordinals.finish()));
    arrays.extend((TEXT_BEFORE_ORDINAL..TEXT_BEFORE_NUMBERS).map(text));
    arrays.extend((0..6).map(number));
    arrays.extend((TEXT_BEFORE_NUMBERS..TEXT_COLUMNS).map(text));
    arrays
}
