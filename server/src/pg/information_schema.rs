//! `information_schema` as PostgreSQL clients read it.
//!
//! DataFusion's own `information_schema.columns` names column types the
//! Arrow way (`Int64`, `Timestamp(ns, "UTC")`) and lacks PostgreSQL's
//! `udt_name` / `is_identity` columns, so Grafana's column picker,
//! node-postgres and pgx programs and Metabase's field sync see types no
//! PostgreSQL has; and it has no constraint views, which tools join to
//! find primary keys. DataFusion answers `information_schema.*` itself
//! before asking the catalog when its `information_schema` option is on,
//! so the engine turns that option off and serves the schema from the
//! catalog instead, through [`CatalogWithInformationSchema`]: `columns`
//! and the (empty) constraint views are ours, every other table is
//! DataFusion's.
//!
//! Unlike PostgreSQL, which leaves materialized views out of
//! `information_schema`, `tables` lists them (as `VIEW`) and `columns`
//! lists their columns: they are what Millrace users query, and tools
//! that browse `information_schema` would otherwise show nothing to pick.

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

/// A column of `information_schema.columns`: text (PostgreSQL's
/// `sql_identifier`, `character_data`, `yes_or_no`) or a number
/// (`cardinal_number`).
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Text,
    Number,
}

/// The columns of PostgreSQL 15's `information_schema.columns`, in its
/// order, with their kind and whether they may be NULL. Those about
/// collations, character sets, domains, reference scopes and identity
/// sequences are NULL for every Millrace column, as in PostgreSQL for a
/// column without them; tools select them by name.
const COLUMNS: &[(&str, Kind, bool)] = &[
    ("table_catalog", Kind::Text, false),
    ("table_schema", Kind::Text, false),
    ("table_name", Kind::Text, false),
    ("column_name", Kind::Text, false),
    ("ordinal_position", Kind::Number, false),
    ("column_default", Kind::Text, true),
    ("is_nullable", Kind::Text, false),
    ("data_type", Kind::Text, false),
    ("character_maximum_length", Kind::Number, true),
    ("character_octet_length", Kind::Number, true),
    ("numeric_precision", Kind::Number, true),
    ("numeric_precision_radix", Kind::Number, true),
    ("numeric_scale", Kind::Number, true),
    ("datetime_precision", Kind::Number, true),
    ("interval_type", Kind::Text, true),
    ("interval_precision", Kind::Number, true),
    ("character_set_catalog", Kind::Text, true),
    ("character_set_schema", Kind::Text, true),
    ("character_set_name", Kind::Text, true),
    ("collation_catalog", Kind::Text, true),
    ("collation_schema", Kind::Text, true),
    ("collation_name", Kind::Text, true),
    ("domain_catalog", Kind::Text, true),
    ("domain_schema", Kind::Text, true),
    ("domain_name", Kind::Text, true),
    ("udt_catalog", Kind::Text, false),
    ("udt_schema", Kind::Text, false),
    ("udt_name", Kind::Text, false),
    ("scope_catalog", Kind::Text, true),
    ("scope_schema", Kind::Text, true),
    ("scope_name", Kind::Text, true),
    ("maximum_cardinality", Kind::Number, true),
    ("dtd_identifier", Kind::Text, false),
    ("is_self_referencing", Kind::Text, false),
    ("is_identity", Kind::Text, false),
    ("identity_generation", Kind::Text, true),
    ("identity_start", Kind::Text, true),
    ("identity_increment", Kind::Text, true),
    ("identity_maximum", Kind::Text, true),
    ("identity_minimum", Kind::Text, true),
    ("identity_cycle", Kind::Text, false),
    ("is_generated", Kind::Text, false),
    ("generation_expression", Kind::Text, true),
    ("is_updatable", Kind::Text, false),
];

/// The schema of `information_schema.columns`, from [`COLUMNS`].
fn columns_schema() -> SchemaRef {
    Arc::new(Schema::new(
        COLUMNS
            .iter()
            .map(|(name, kind, nullable)| {
                let t = match kind {
                    Kind::Text => DataType::Utf8,
                    Kind::Number => DataType::Int32,
                };
                Field::new(*name, t, *nullable)
            })
            .collect::<Vec<_>>(),
    ))
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

/// One value of a row of `information_schema.columns`.
enum Cell {
    Text(Option<String>),
    Number(Option<i32>),
}

/// One row of `information_schema.columns`: a value per entry of
/// [`COLUMNS`], in its order, named by [`column_row`].
type ColumnRow = Vec<Cell>;

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
    let mut values = std::collections::HashMap::from([
        ("table_catalog", Cell::Text(Some(catalog.to_string()))),
        ("table_schema", Cell::Text(Some(schema.to_string()))),
        ("table_name", Cell::Text(Some(table.to_string()))),
        ("column_name", Cell::Text(Some(field.name().to_string()))),
        ("ordinal_position", Cell::Number(Some(ordinal))),
        (
            "is_nullable",
            Cell::Text(Some(if field.is_nullable() { "YES" } else { "NO" }.into())),
        ),
        ("data_type", Cell::Text(Some(data_type_name(&pg)))),
        ("character_octet_length", Cell::Number(octets)),
        ("numeric_precision", Cell::Number(precision)),
        ("numeric_precision_radix", Cell::Number(radix)),
        ("numeric_scale", Cell::Number(scale)),
        ("datetime_precision", Cell::Number(datetime)),
        ("udt_catalog", Cell::Text(Some(catalog.to_string()))),
        ("udt_schema", Cell::Text(Some(udt_schema.to_string()))),
        ("udt_name", Cell::Text(Some(pg.name().to_string()))),
        ("dtd_identifier", Cell::Text(Some(ordinal.to_string()))),
        ("is_self_referencing", Cell::Text(Some("NO".into()))),
        ("is_identity", Cell::Text(Some("NO".into()))),
        ("identity_cycle", Cell::Text(Some("NO".into()))),
        ("is_generated", Cell::Text(Some("NEVER".into()))),
        // Millrace has no UPDATE or DELETE.
        ("is_updatable", Cell::Text(Some("NO".into()))),
    ]);
    // Every other column is NULL: no column has a default, an interval
    // field restriction, a collation, a domain, a scope or an identity.
    COLUMNS
        .iter()
        .map(|(name, kind, _)| {
            values.remove(name).unwrap_or(match kind {
                Kind::Text => Cell::Text(None),
                Kind::Number => Cell::Number(None),
            })
        })
        .collect()
}

/// The arrays of `information_schema.columns` for `rows`, one per entry of
/// [`COLUMNS`].
fn columns_arrays(rows: &[ColumnRow]) -> Vec<ArrayRef> {
    COLUMNS
        .iter()
        .enumerate()
        .map(|(i, (_, kind, _))| -> ArrayRef {
            match kind {
                Kind::Text => {
                    let mut b = StringBuilder::new();
                    for r in rows {
                        match r.get(i) {
                            Some(Cell::Text(v)) => b.append_option(v.as_deref()),
                            _ => b.append_null(),
                        }
                    }
                    Arc::new(b.finish())
                }
                Kind::Number => {
                    let mut b = Int32Builder::new();
                    for r in rows {
                        match r.get(i) {
                            Some(Cell::Number(v)) => b.append_option(*v),
                            _ => b.append_null(),
                        }
                    }
                    Arc::new(b.finish())
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_column_row_fills_every_column_with_its_kind() {
        let field = Arc::new(Field::new("n", DataType::Int64, false));
        let row = column_row("millrace", "public", "t", 0, &field);
        assert_eq!(row.len(), COLUMNS.len());
        for (cell, (name, kind, nullable)) in row.iter().zip(COLUMNS) {
            match (cell, kind) {
                (Cell::Text(v), Kind::Text) => assert!(*nullable || v.is_some(), "{name}"),
                (Cell::Number(v), Kind::Number) => assert!(*nullable || v.is_some(), "{name}"),
                _ => panic!("{name} has the wrong kind"),
            }
        }
        let batch = RecordBatch::try_new(columns_schema(), columns_arrays(&[row]));
        assert!(batch.is_ok(), "{batch:?}");
    }
}
