//! JSON decoding, shared by the Kafka and file sources, and JSON Schema records of a schema
//! registry (the Confluent wire format around a JSON document) for Kafka.

use std::collections::hash_map::Entry;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tributary_runtime::ConfigError;

use super::registry::{Part, Registry};
use super::{wire, DecodeError, SchemaConfig};

/// The registry's name of JSON Schema schemas.
const JSON: &str = "JSON";

/// Decodes one JSON document (a line of a file, a Kafka value) into `D`; the error says what
/// is wrong, for a dead letter.
///
/// The bytes are checked as UTF-8 once, as a whole (`std::str::from_utf8`, vectorised), and
/// then parsed as a `str`. serde_json's `from_slice` accepts the same documents but checks
/// each string on its own, which costs about a fifth of the decode time of an IoT reading
/// (docs/benchmarks.md, "JSON decoding").
///
/// # Examples
/// ```
/// use tributary_connectors::format::json::decode;
///
/// let pair: (u32, String) = decode(br#"[7, "seven"]"#).unwrap();
/// assert_eq!(pair, (7, "seven".to_owned()));
/// assert!(decode::<(u32, String)>(b"[7, \"\xff\"]").unwrap_err().contains("UTF-8"));
/// ```
#[inline]
pub fn decode<D: DeserializeOwned>(bytes: &[u8]) -> Result<D, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    serde_json::from_str(text).map_err(|e| e.to_string())
}

/// A compiled JSON schema, checking documents against it.
#[derive(Clone)]
struct Check(Arc<jsonschema::Validator>);

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Check")
    }
}

impl Check {
    /// Compiles `text`; the error says why it is not a JSON schema.
    fn compile(text: &str) -> Result<Check, String> {
        let schema: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not a JSON schema: {e}"))?;
        let validator = jsonschema::validator_for(&schema)
            .map_err(|e| format!("not a valid JSON schema: {e}"))?;
        Ok(Check(Arc::new(validator)))
    }

    /// Whether `document` matches; the error names the first place that does not.
    fn check(&self, document: &serde_json::Value) -> Result<(), String> {
        self.0.validate(document).map_err(|e| {
            let path = e.instance_path().to_string();
            let at = if path.is_empty() { "the document".to_owned() } else { format!("`{path}`") };
            format!("does not match its JSON schema at {at}: {e}")
        })
    }
}

/// Decodes JSON Schema records of a registry: each record's writer schema id must be a JSON
/// schema in the registry (else it is a dead letter); the document decodes into the job's
/// type as plain JSON does, the type being the check of its shape, and with `validate` is
/// first checked against the writer schema (as Confluent's deserialiser can).
#[derive(Debug, Clone)]
pub struct JsonSchemaDecoder {
    registry: Arc<Registry>,
    validate: bool,
    /// What this clone knows of writer schema ids: their checks (with `validate`), or why
    /// records of one are dead letters.
    known: FxHashMap<u32, Result<Option<Check>, String>>,
}

impl JsonSchemaDecoder {
    /// A decoder of records whose schemas are in `registry`, checking each document against
    /// its schema if `validate`.
    pub fn new(registry: Arc<Registry>, validate: bool) -> Self {
        JsonSchemaDecoder { registry, validate, known: FxHashMap::default() }
    }

    /// Decodes one framed record.
    pub fn decode<D: DeserializeOwned>(&mut self, bytes: &[u8]) -> Result<D, DecodeError> {
        let (id, payload) = wire::split(bytes)?;
        let known = match self.known.entry(id) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(new) => {
                let schema = self.registry.writer_schema(id, JSON)?;
                let check = schema.and_then(|s| match self.validate {
                    true => Check::compile(&s.schema)
                        .map(Some)
                        .map_err(|e| format!("schema id {id} is {e}")),
                    false => Ok(None),
                });
                new.insert(check)
            }
        };
        let in_schema = |e: String| format!("schema id {id}: {e}");
        match known.as_ref().map_err(Clone::clone)? {
            None => Ok(decode(payload).map_err(in_schema)?),
            Some(check) => {
                let document: serde_json::Value = decode(payload).map_err(in_schema)?;
                check.check(&document).map_err(in_schema)?;
                Ok(D::deserialize(document).map_err(|e| in_schema(e.to_string()))?)
            }
        }
    }
}

/// Encodes records as JSON documents framed with the id of their JSON schema in a registry,
/// with `validate` checking each against the schema first.
#[derive(Debug)]
pub struct JsonSchemaEncoder {
    id: u32,
    check: Option<Check>,
}

impl JsonSchemaEncoder {
    /// The encoder of the part (key or value) of records for a topic: the schema `config`
    /// gives (`file` or `inline`, looked up under its subject and registered if
    /// `auto_register`; its `title` is the record name of the record-name strategies), or the
    /// subject's latest JSON schema.
    pub fn new(
        config: &SchemaConfig,
        registry: &Registry,
        target: (&str, Part),
    ) -> Result<Self, ConfigError> {
        let key = if config.file.is_some() { "schema.file" } else { "schema.inline" };
        let schema = match config.text()? {
            Some(text) => {
                let schema: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| ConfigError::new(key, format!("not a JSON schema: {e}")))?;
                let title = schema.get("title").and_then(|t| t.as_str()).unwrap_or_default();
                if title.is_empty() && config.subject.is_none() {
                    if let super::SubjectStrategy::RecordName
                    | super::SubjectStrategy::TopicRecordName = config.subject_strategy
                    {
                        return Err(ConfigError::new(
                            key,
                            "the record-name strategies name the subject after the schema's \
                             `title`: give it one, or set schema.subject",
                        ));
                    }
                }
                config.output_schema(registry, target, JSON, Some((&text, title)), key)?
            }
            None => config.output_schema(registry, target, JSON, None, key)?,
        };
        let check = config
            .validate
            .then(|| Check::compile(&schema.schema))
            .transpose()
            .map_err(|e| ConfigError::new(key, e))?;
        Ok(JsonSchemaEncoder { id: schema.id, check })
    }

    /// Appends `record`, framed and encoded, to `buf`.
    pub fn encode<T: Serialize>(&self, record: &T, buf: &mut Vec<u8>) -> Result<(), String> {
        wire::frame(self.id, buf);
        match &self.check {
            None => serde_json::to_writer(&mut *buf, record).map_err(|e| e.to_string()),
            Some(check) => {
                let document = serde_json::to_value(record).map_err(|e| e.to_string())?;
                check.check(&document)?;
                serde_json::to_writer(&mut *buf, &document).map_err(|e| e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_checked_against_their_schema() {
        let schema = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../jobs/schemas/sensor-reading.schema.json"
        ))
        .unwrap();
        let check = Check::compile(&schema).unwrap();
        let reading = serde_json::json!({
            "device": 7, "site": 1, "sensor": "humidity", "value": 0.5, "ts": 1000
        });
        assert_eq!(check.check(&reading), Ok(()));
        let mut extra = reading.clone();
        extra["unit"] = "%".into();
        let error = check.check(&extra).unwrap_err();
        assert!(error.starts_with("does not match its JSON schema at the document"), "{error}");
        let mut wrong = reading;
        wrong["sensor"] = "noise".into();
        let error = check.check(&wrong).unwrap_err();
        assert!(error.contains("at `/sensor`"), "{error}");
        assert!(Check::compile("{").unwrap_err().starts_with("not a JSON schema"));
        let error = Check::compile(r#"{"type": 12}"#).unwrap_err();
        assert!(error.starts_with("not a valid JSON schema"), "{error}");
    }

    #[test]
    fn errors_name_the_place_like_serde_json() {
        let error = decode::<(u32, u32)>(b"[1, x]").unwrap_err();
        assert_eq!(error, serde_json::from_slice::<(u32, u32)>(b"[1, x]").unwrap_err().to_string());
        let error = decode::<u32>(b"1\xc3").unwrap_err();
        assert_eq!(error, "not UTF-8: incomplete utf-8 byte sequence from index 1");
    }
}
