//! JSON decoding, shared by the Kafka and file sources, and JSON Schema records of a schema
//! registry (the Confluent wire format around a JSON document) for Kafka.

use std::collections::hash_map::Entry;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tributary_runtime::ConfigError;

use super::registry::Registry;
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

/// Decodes JSON Schema records of a registry: each record's writer schema id must be a JSON
/// schema in the registry (else it is a dead letter); the document decodes into the job's
/// type as plain JSON does, the type being the check of its shape.
// todo(#25): validating documents against their writer schema (Confluent's deserialiser can).
#[derive(Debug, Clone)]
pub struct JsonSchemaDecoder {
    registry: Arc<Registry>,
    /// What this clone knows of writer schema ids: `Err` why records of one are dead letters.
    known: FxHashMap<u32, Result<(), String>>,
}

impl JsonSchemaDecoder {
    /// A decoder of records whose schemas are in `registry`.
    pub fn new(registry: Arc<Registry>) -> Self {
        JsonSchemaDecoder { registry, known: FxHashMap::default() }
    }

    /// Decodes one framed record.
    pub fn decode<D: DeserializeOwned>(&mut self, bytes: &[u8]) -> Result<D, DecodeError> {
        let (id, payload) = wire::split(bytes)?;
        let known = match self.known.entry(id) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(new) => new.insert(self.registry.writer_schema(id, JSON)?.map(drop)),
        };
        known.clone()?;
        Ok(decode(payload).map_err(|e| format!("schema id {id}: {e}"))?)
    }
}

/// Encodes records as JSON documents framed with the id of their JSON schema in a registry.
#[derive(Debug)]
pub struct JsonSchemaEncoder {
    id: u32,
}

impl JsonSchemaEncoder {
    /// The encoder of records for `topic`: the schema `config` gives (`file` or `inline`,
    /// looked up under its subject and registered if `auto_register`; its `title` is the
    /// record name of the record-name strategies), or the subject's latest JSON schema.
    pub fn new(
        config: &SchemaConfig,
        registry: &Registry,
        topic: &str,
    ) -> Result<Self, ConfigError> {
        let key = if config.file.is_some() { "schema.file" } else { "schema.inline" };
        let id = match config.text()? {
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
                config.output_schema(registry, topic, JSON, Some((&text, title)), key)?.id
            }
            None => config.output_schema(registry, topic, JSON, None, key)?.id,
        };
        Ok(JsonSchemaEncoder { id })
    }

    /// Appends `record`, framed and encoded, to `buf`.
    pub fn encode<T: Serialize>(&self, record: &T, buf: &mut Vec<u8>) -> Result<(), String> {
        wire::frame(self.id, buf);
        serde_json::to_writer(&mut *buf, record).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_place_like_serde_json() {
        let error = decode::<(u32, u32)>(b"[1, x]").unwrap_err();
        assert_eq!(error, serde_json::from_slice::<(u32, u32)>(b"[1, x]").unwrap_err().to_string());
        let error = decode::<u32>(b"1\xc3").unwrap_err();
        assert_eq!(error, "not UTF-8: incomplete utf-8 byte sequence from index 1");
    }
}
