//! The `WITH (…)` options of `CREATE SOURCE`, validated into the
//! connector's [`SourceConfig`]: the DDL side of a source, where a bad
//! option is the user's error (22023) or an unsupported one (0A000).

use std::collections::BTreeMap;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use millrace_connectors::config::{SourceConfig, StartupMode};
use millrace_connectors::decode::{self, Encoding};
use millrace_planner::event_time::EventTime;
use millrace_planner::source::{Metadata, SourceDef};

use crate::error::{ErrorKind, SqlError, SqlResult};

/// Option keys of the `WITH (…)` clause other than `properties.*`.
const KNOWN_OPTIONS: &[&str] = &[
    "connector",
    "topic",
    "scan.startup.mode",
    "scan.startup.timestamp.millis",
    "scan.startup.timestamp_millis",
    "connect.timeout.ms",
    "max.message.bytes",
    "epoch.interval.ms",
    "checkpoint.interval.ms",
    "max.batch.rows",
    "dead_letter.topic",
    "watermark.idle.timeout.ms",
];

/// Default of `epoch.interval.ms`: tens of milliseconds keep a view within
/// ~50 ms of its topic at any rate, and still batch thousands of messages
/// per commit when the input is fast.
pub const DEFAULT_EPOCH_MS: u64 = 20;

/// Default of `watermark.idle.timeout.ms`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Validates `def`; `schema` holds the columns as planned (payload
/// columns, then the metadata columns).
pub fn source_config(
    def: &SourceDef,
    schema: SchemaRef,
    json_columns: Vec<bool>,
) -> SqlResult<SourceConfig> {
    let opts = &def.options;
    let connector = opts.get("connector").map(String::as_str).unwrap_or("");
    if !connector.eq_ignore_ascii_case("kafka") {
        return Err(invalid(format!(
            "connector \"{connector}\" is not supported; the only connector is 'kafka'"
        )));
    }
    for key in opts.keys() {
        if !key.starts_with("properties.") && !KNOWN_OPTIONS.contains(&key.as_str()) {
            return Err(
                invalid(format!("unknown source option \"{key}\"")).with_hint(format!(
                    "Known options: {}, and properties.* for the Kafka client.",
                    KNOWN_OPTIONS.join(", ")
                )),
            );
        }
    }
    let topic = opts
        .get("topic")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| invalid("a Kafka source needs the option topic = '…'"))?
        .clone();
    let mut kafka = BTreeMap::new();
    for (key, value) in opts {
        if let Some(property) = key.strip_prefix("properties.") {
            let property = match property {
                "bootstrap.server" => "bootstrap.servers",
                p => p,
            };
            kafka.insert(property.to_string(), value.clone());
        }
    }
    // librdkafka needs a group to assign partitions; Millrace never
    // commits to it, so it only names the consumer in broker tools.
    kafka
        .entry("group.id".to_string())
        .or_insert_with(|| format!("millrace-{}", def.name));
    if !kafka.contains_key("bootstrap.servers") {
        return Err(invalid(
            "a Kafka source needs the option properties.bootstrap.server = 'host:port'",
        ));
    }
    let startup = match opts
        .get("scan.startup.mode")
        .map(|m| m.to_ascii_lowercase())
        .as_deref()
    {
        None | Some("earliest") => StartupMode::Earliest,
        Some("latest") => StartupMode::Latest,
        Some("timestamp") => {
            let millis = opts
                .get("scan.startup.timestamp.millis")
                .or_else(|| opts.get("scan.startup.timestamp_millis"))
                .ok_or_else(|| {
                    invalid("scan.startup.mode = 'timestamp' needs scan.startup.timestamp.millis")
                })?;
            StartupMode::Timestamp(parse_number(millis, "scan.startup.timestamp.millis")?)
        }
        Some(other) => {
            return Err(invalid(format!(
                "scan.startup.mode must be 'earliest', 'latest' or 'timestamp', not '{other}'"
            )))
        }
    };
    if def.format != "PLAIN" {
        return Err(SqlError::unsupported(format!(
            "FORMAT {} (only FORMAT PLAIN)",
            def.format
        )));
    }
    let payload = schema.fields().len() - def.includes.len();
    let encoding = match def.encode.as_str() {
        "JSON" => Encoding::Json,
        "CSV" => {
            let delimiter = match def.encode_options.get("delimiter").map(String::as_bytes) {
                None => b',',
                Some([d]) => *d,
                Some(_) => return Err(invalid("the CSV delimiter must be one character")),
            };
            Encoding::Csv { delimiter }
        }
        "BYTES" => {
            let ok =
                payload == 1 && schema.field(0).data_type() == &arrow::datatypes::DataType::Binary;
            if !ok {
                return Err(invalid(
                    "ENCODE BYTES needs exactly one payload column, of type BYTEA",
                ));
            }
            Encoding::Bytes
        }
        other => {
            return Err(SqlError::unsupported(format!(
                "ENCODE {other} (supported: JSON, CSV, BYTES)"
            )))
        }
    };
    for f in schema.fields().iter().take(payload) {
        if !decode::decodable(f.data_type()) {
            return Err(SqlError::unsupported(format!(
                "source column \"{}\" of type {}",
                f.name(),
                millrace_planner::naming::pg_type_name(f.data_type())
            )));
        }
    }
    let millis = |key: &str, default: u64| -> SqlResult<Duration> {
        match opts.get(key) {
            Some(v) => Ok(Duration::from_millis(parse_number::<u64>(v, key)?.max(1))),
            None => Ok(Duration::from_millis(default)),
        }
    };
    let max_message_bytes = match opts.get("max.message.bytes") {
        Some(v) => parse_number(v, "max.message.bytes")?,
        None => 1 << 20,
    };
    let max_batch_rows = match opts.get("max.batch.rows") {
        Some(v) => parse_number::<usize>(v, "max.batch.rows")?.max(1),
        None => 100_000,
    };
    Ok(SourceConfig {
        topic,
        kafka,
        startup,
        encoding,
        metadata: def.includes.iter().map(|i| i.metadata).collect(),
        json_columns,
        schema: schema.clone(),
        connect_timeout: millis("connect.timeout.ms", 10_000)?,
        max_message_bytes,
        // `checkpoint.interval.ms` is the option's name before epochs and
        // checkpoints were told apart; it still means the epoch.
        epoch_interval: if opts.contains_key("epoch.interval.ms") {
            millis("epoch.interval.ms", DEFAULT_EPOCH_MS)?
        } else {
            millis("checkpoint.interval.ms", DEFAULT_EPOCH_MS)?
        },
        max_batch_rows,
        dead_letter_topic: opts
            .get("dead_letter.topic")
            .filter(|t| !t.is_empty())
            .cloned(),
        event_time: match &def.watermark {
            Some(w) => Some(EventTime::resolve(w, &schema)?),
            None => None,
        },
        idle_timeout: match opts.get("watermark.idle.timeout.ms") {
            Some(v) => match parse_number::<u64>(v, "watermark.idle.timeout.ms")? {
                0 => None,
                ms => Some(Duration::from_millis(ms)),
            },
            None => Some(DEFAULT_IDLE_TIMEOUT),
        },
    })
}

/// The SQL type of a metadata column.
pub fn metadata_sql_type(m: Metadata) -> &'static str {
    match m {
        Metadata::Partition => "INTEGER",
        Metadata::Offset => "BIGINT",
        Metadata::Timestamp => "TIMESTAMPTZ",
        Metadata::Key => "BYTEA",
    }
}

fn parse_number<T: std::str::FromStr>(v: &str, key: &str) -> SqlResult<T> {
    v.trim().parse().map_err(|_| {
        invalid(format!(
            "option {key} must be a non-negative whole number, not '{v}'"
        ))
    })
}

fn invalid(message: impl Into<String>) -> SqlError {
    SqlError::new(ErrorKind::InvalidParameterValue, message)
}
