//! Record formats shared by the Kafka and file connectors: JSON and CSV text, and Avro and
//! Protobuf with schemas from files or a Confluent-compatible schema registry.
//!
//! A source decodes each record into the job's serde type with a [`ValueDecoder`]; a sink
//! encodes with an [`Encoder`]. Avro records read through a registry carry the Confluent
//! wire format ([`wire`]): a zero byte, the writer schema's id, then the Avro datum, which
//! is resolved against the job's reader schema when the two differ ([`avro`]).

pub mod avro;
pub mod json;
pub mod protobuf;
pub mod registry;
pub mod wire;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tributary_runtime::ConfigError;

pub use avro::{AvroDecoder, AvroEncoder};
pub use json::{JsonSchemaDecoder, JsonSchemaEncoder};
pub use protobuf::{ProstDecoder, ProtobufDecoder, ProtobufEncoder};
pub use registry::{
    Part, RegisteredSchema, Registry, RegistryConfig, RegistryError, SubjectStrategy,
};

/// A record format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One JSON object per line (files) or per record (Kafka). On Kafka with a `schema`
    /// table naming a `registry`: JSON Schema records in the Confluent wire format.
    #[default]
    Json,
    /// Comma-separated values, fields in declaration order (files have a header line).
    Csv,
    /// Avro binary datums (Kafka only), with the schema in the `schema` table: from a file
    /// or inline, or taken from a schema registry (then in the Confluent wire format).
    Avro,
    /// Protobuf messages (Kafka only): of a descriptor set file's `schema.message`, or with
    /// schemas from a registry (the Confluent wire format with message indexes).
    Protobuf,
}

impl Format {
    /// The format a file name suggests: `.csv` is CSV, anything else JSON lines.
    pub fn from_path(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("csv") => Format::Csv,
            _ => Format::Json,
        }
    }

    /// The usual file extension.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Json => "jsonl",
            Format::Csv => "csv",
            Format::Avro => "avro",
            Format::Protobuf => "pb",
        }
    }

    /// Whether records are lines of text (what files hold).
    pub fn is_text(self) -> bool {
        matches!(self, Format::Json | Format::Csv)
    }

    /// Refuses a format files cannot hold, naming the config key.
    pub fn check_text(self, key: &str) -> Result<(), ConfigError> {
        if self.is_text() {
            Ok(())
        } else {
            Err(ConfigError::new(
                key,
                "files hold JSON lines or CSV; Avro and Protobuf are for Kafka records",
            ))
        }
    }
}

/// Where a schema-based format (`format = "avro"` or `"protobuf"`) takes its schemas: the
/// `schema` table of a Kafka source or sink. For Avro:
///
/// - A source with a `registry` reads the Confluent wire format and looks up each record's
///   writer schema by its id; the schema given here (`file` or `inline`), if any, is the
///   reader schema of the job's type, which every writer schema is resolved against. Without
///   one, records decode straight into the job's type by field name (serde defaults fill
///   fields a writer lacks).
/// - A source without a registry reads plain Avro datums written with the given schema.
/// - A sink with a registry writes the Confluent wire format with the id of the given schema
///   under its subject (registered first if `auto_register`), or of the subject's latest
///   schema when none is given; without a registry, plain datums of the given schema.
///
/// For Protobuf (see [`protobuf`]): `file` is a descriptor set and `message` the message's
/// full name; with a `registry`, sources take each record's schema and message from the
/// registry, sinks the latest schema of the subject.
///
/// For JSON, a `schema` table needs a `registry`: sources read JSON Schema records (each
/// writer schema id must be a JSON schema there), sinks write them with the id of the given
/// JSON schema (`file` or `inline`, whose `title` the record-name strategies use) or of the
/// subject's latest.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaConfig {
    /// The schema in a file: Avro JSON (`.avsc`), or for Protobuf a descriptor set
    /// (`protoc --descriptor_set_out`).
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Protobuf: the message's full name, e.g. `tributary.iot.SensorReading` (in the
    /// descriptor set; in a sink's registry schema, the first message when not set).
    #[serde(default)]
    pub message: Option<String>,
    /// The schema itself (Avro JSON).
    #[serde(default)]
    pub inline: Option<String>,
    /// A Confluent-compatible schema registry.
    #[serde(default)]
    pub registry: Option<RegistryConfig>,
    /// Sinks: the subject the schema is registered under; by default from the strategy.
    #[serde(default)]
    pub subject: Option<String>,
    /// Sinks: how the subject is named when `subject` is not set.
    #[serde(default)]
    pub subject_strategy: SubjectStrategy,
    /// Sinks: register the schema under its subject if it is not there yet (off by default,
    /// as in production setups where schemas are registered by a deployment step).
    #[serde(default)]
    pub auto_register: bool,
    /// JSON Schema: check each document against its schema (sources: the record's writer
    /// schema; sinks: the output schema): a source's document that does not match is a dead
    /// letter, a sink's stops the job. Off by default: the job's type checks the shape of
    /// what it reads.
    #[serde(default)]
    pub validate: bool,
}

impl SchemaConfig {
    /// The schema text given in `file` or `inline` (keys `schema.file`, `schema.inline`).
    pub fn text(&self) -> Result<Option<String>, ConfigError> {
        match (&self.file, &self.inline) {
            (Some(_), Some(_)) => {
                Err(ConfigError::new("schema", "set one of `file` and `inline`, not both"))
            }
            (Some(path), None) => std::fs::read_to_string(path)
                .map(Some)
                .map_err(|e| ConfigError::new("schema.file", format!("`{}`: {e}", path.display()))),
            (None, inline) => Ok(inline.clone()),
        }
    }

    /// The registered schema a sink writes the `part` of its records with: `given` (its text
    /// and the record name the record-name strategies use), looked up under its subject and
    /// registered there first if `auto_register`; or, without one, the latest schema of
    /// `subject` (by default `<topic>-value` or `<topic>-key`). `key` names where the given
    /// schema came from.
    pub(crate) fn output_schema(
        &self,
        registry: &Registry,
        (topic, part): (&str, Part),
        schema_type: &str,
        given: Option<(&str, &str)>,
        key: &str,
    ) -> Result<RegisteredSchema, ConfigError> {
        let failed = |e: RegistryError| ConfigError::new("schema.registry", e.to_string());
        let Some((text, record)) = given else {
            let subject = match (&self.subject, self.subject_strategy) {
                (Some(subject), _) => subject.clone(),
                (None, SubjectStrategy::TopicName) => format!("{topic}-{}", part.name()),
                (None, _) => {
                    return Err(ConfigError::new(
                        "schema.subject",
                        "name the subject to take the latest schema of, or give the schema \
                         (`file` or `inline`)",
                    ))
                }
            };
            let latest = registry.latest(&subject).map_err(failed)?;
            if latest.schema_type != schema_type {
                return Err(ConfigError::new(
                    "schema.subject",
                    format!("`{subject}` holds {} schemas, not {schema_type}", latest.schema_type),
                ));
            }
            return Ok(latest);
        };
        let subject = self
            .subject
            .clone()
            .unwrap_or_else(|| self.subject_strategy.subject(topic, record, part));
        let id = match registry.lookup(&subject, text, schema_type).map_err(failed)? {
            Some(id) => id,
            None if self.auto_register => {
                let id = registry.register(&subject, text, schema_type).map_err(failed)?;
                tracing::info!(registry = %registry.url(), subject, id, "output schema registered");
                id
            }
            None => {
                return Err(ConfigError::new(
                    key,
                    format!(
                        "the schema is not registered under subject `{subject}` at {}: register \
                         it, or set schema.auto_register = true",
                        registry.url()
                    ),
                ))
            }
        };
        Ok(RegisteredSchema { id, schema_type: schema_type.to_owned(), schema: text.to_owned() })
    }

    /// The registry client, if a registry is configured; checks that it answers.
    pub fn registry(&self) -> Result<Option<Arc<Registry>>, ConfigError> {
        self.registry.as_ref().map(|c| Registry::connect(c).map(Arc::new)).transpose()
    }
}

/// Why a record did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The record is not one of the job's records (a dead letter).
    #[error("{0}")]
    Invalid(String),
    /// The record cannot be decoded now: its writer schema could not be had from the
    /// registry after retries. The job stops rather than dead-letter good records.
    #[error("{0}")]
    Unavailable(String),
}

impl From<String> for DecodeError {
    fn from(reason: String) -> Self {
        DecodeError::Invalid(reason)
    }
}

impl From<&str> for DecodeError {
    fn from(reason: &str) -> Self {
        DecodeError::Invalid(reason.to_owned())
    }
}

/// Decodes one record's bytes (a Kafka value) into the job's type, in any [`Format`].
#[derive(Clone)]
pub enum ValueDecoder {
    /// JSON or CSV.
    Text(Format),
    /// JSON Schema records of a registry.
    JsonSchema(JsonSchemaDecoder),
    /// Avro.
    Avro(AvroDecoder),
    /// Protobuf.
    Protobuf(ProtobufDecoder),
}

impl ValueDecoder {
    /// The decoder of `format` (with `schema` for Avro and Protobuf); keys are relative to the
    /// table.
    pub fn new(format: Format, schema: Option<&SchemaConfig>) -> Result<Self, ConfigError> {
        match format {
            Format::Json => match json_registry(schema)? {
                Some((schema, registry)) => {
                    Ok(ValueDecoder::JsonSchema(JsonSchemaDecoder::new(registry, schema.validate)))
                }
                None => Ok(ValueDecoder::Text(format)),
            },
            Format::Csv => Ok(ValueDecoder::Text(format)),
            Format::Avro => Ok(ValueDecoder::Avro(AvroDecoder::new(required(schema)?)?)),
            Format::Protobuf => {
                Ok(ValueDecoder::Protobuf(ProtobufDecoder::new(required(schema)?)?))
            }
        }
    }

    /// Decodes `bytes` into a `D`.
    #[inline]
    pub fn decode<D: DeserializeOwned>(&mut self, bytes: &[u8]) -> Result<D, DecodeError> {
        match self {
            ValueDecoder::Text(Format::Json) => Ok(json::decode(bytes)?),
            ValueDecoder::Text(_) => Ok(decode_csv_record(bytes)?),
            ValueDecoder::JsonSchema(json) => json.decode(bytes),
            ValueDecoder::Avro(avro) => avro.decode(bytes),
            ValueDecoder::Protobuf(protobuf) => protobuf.decode(bytes),
        }
    }
}

/// The `schema` table of JSON Schema records and its registry, if the JSON format has one
/// (which then needs a registry).
fn json_registry(
    schema: Option<&SchemaConfig>,
) -> Result<Option<(&SchemaConfig, Arc<Registry>)>, ConfigError> {
    let Some(schema) = schema else { return Ok(None) };
    let registry = match schema.registry() {
        Ok(Some(registry)) if schema.message.is_none() => registry,
        Err(e) => return Err(e),
        _ => {
            return Err(ConfigError::new(
                "schema",
                "JSON takes a `schema` table only for JSON Schema records of a `registry`",
            ))
        }
    };
    Ok(Some((schema, registry)))
}

/// A key format's error: the value format's keys (`format`, `schema…`) are the key's
/// (`key_format`, `key_schema…`).
pub(crate) fn for_keys(mut error: ConfigError) -> ConfigError {
    error.key = format!("key_{}", error.key);
    error
}

/// The `schema` table Avro and Protobuf need (without `validate`: decoding checks them).
fn required(schema: Option<&SchemaConfig>) -> Result<&SchemaConfig, ConfigError> {
    let schema =
        schema.ok_or_else(|| ConfigError::new("schema", "this format needs a `schema` table"))?;
    if schema.validate {
        return Err(ConfigError::new(
            "schema.validate",
            "is for JSON Schema records; Avro and Protobuf records are checked by decoding",
        ));
    }
    Ok(schema)
}

/// One CSV record (no header), fields in declaration order.
fn decode_csv_record<D: DeserializeOwned>(bytes: &[u8]) -> Result<D, String> {
    let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(bytes);
    let mut row = csv::ByteRecord::new();
    match reader.read_byte_record(&mut row) {
        Ok(true) => row.deserialize(None).map_err(|e| e.to_string()),
        Ok(false) => Err("empty CSV record".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Encodes records for a Kafka value, in any [`Format`].
#[derive(Clone)]
pub enum Encoder {
    /// JSON or CSV.
    Text(Format),
    /// JSON Schema records of a registry.
    JsonSchema(Arc<JsonSchemaEncoder>),
    /// Avro.
    Avro(Arc<AvroEncoder>),
    /// Protobuf.
    Protobuf(Arc<ProtobufEncoder>),
}

impl Encoder {
    /// The encoder of `format` for the values of records of `topic` (with `schema` for Avro
    /// and Protobuf); keys are relative to the table.
    pub fn new(
        format: Format,
        schema: Option<&SchemaConfig>,
        topic: &str,
    ) -> Result<Self, ConfigError> {
        Encoder::for_part(format, schema, (topic, Part::Value))
    }

    /// The encoder of `format` for the `part` (key or value) of records of `topic`: with a
    /// registry, schemas are under `<topic>-key` or `<topic>-value` by default. Protobuf keys
    /// are refused (not supported yet).
    pub fn for_part(
        format: Format,
        schema: Option<&SchemaConfig>,
        (topic, part): (&str, Part),
    ) -> Result<Self, ConfigError> {
        match format {
            Format::Json => match json_registry(schema)? {
                Some((schema, registry)) => {
                    let encoder = JsonSchemaEncoder::new(schema, &registry, (topic, part))?;
                    Ok(Encoder::JsonSchema(Arc::new(encoder)))
                }
                None => Ok(Encoder::Text(format)),
            },
            Format::Csv => Ok(Encoder::Text(format)),
            Format::Avro => {
                let encoder = AvroEncoder::for_part(required(schema)?, (topic, part))?;
                Ok(Encoder::Avro(Arc::new(encoder)))
            }
            Format::Protobuf if part == Part::Key => Err(ConfigError::new(
                "format",
                "Protobuf keys are not supported yet (todo(#25)): use avro, json or text keys",
            )),
            Format::Protobuf => {
                Ok(Encoder::Protobuf(Arc::new(ProtobufEncoder::new(required(schema)?, topic)?)))
            }
        }
    }

    /// Appends `record`, encoded, to `buf`.
    pub fn encode<T: Serialize>(&self, record: &T, buf: &mut Vec<u8>) -> Result<(), String> {
        match self {
            Encoder::Text(Format::Csv) => {
                let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(&mut *buf);
                w.serialize(record)
                    .and_then(|()| w.flush().map_err(Into::into))
                    .map_err(|e| e.to_string())?;
                drop(w);
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                }
                Ok(())
            }
            Encoder::Text(_) => serde_json::to_writer(&mut *buf, record).map_err(|e| e.to_string()),
            Encoder::JsonSchema(json) => json.encode(record, buf),
            Encoder::Avro(avro) => avro.encode(record, buf),
            Encoder::Protobuf(protobuf) => protobuf.encode(record, buf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_json_values_decode_and_encode() {
        let mut json = ValueDecoder::Text(Format::Json);
        let mut csv = ValueDecoder::Text(Format::Csv);
        assert_eq!(json.decode::<(u32, String)>(br#"[1,"a"]"#), Ok((1, "a".to_owned())));
        assert_eq!(csv.decode::<(u32, String)>(b"1,a"), Ok((1, "a".to_owned())));
        assert!(csv.decode::<(u32, String)>(b"x,a").is_err());
        assert_eq!(csv.decode::<(u32, String)>(b""), Err("empty CSV record".into()));
        let mut buf = Vec::new();
        Encoder::Text(Format::Csv).encode(&(1, "a,b"), &mut buf).unwrap();
        assert_eq!(buf, b"1,\"a,b\"");
    }

    #[test]
    fn files_refuse_avro() {
        assert!(Format::Csv.check_text("format").is_ok());
        let error = Format::Avro.check_text("format").unwrap_err();
        assert!(error.to_string().contains("Avro and Protobuf are for Kafka"), "{error}");
    }
}
