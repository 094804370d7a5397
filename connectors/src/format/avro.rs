//! Avro records (the `apache-avro` crate), decoded into and encoded from the job's serde
//! types.
//!
//! Decoding picks a plan per writer schema, once: a record whose writer schema is the
//! reader schema (same Parsing Canonical Form), or any record when no reader schema is
//! configured, deserialises straight from its bytes into the job's type with no
//! intermediate value, if the type allows (see [`AvroDecoder`]). A record of another writer
//! schema is resolved against the reader schema first (added fields take their defaults,
//! removed fields are skipped, `int` widens to `long`, ...) through an
//! `apache_avro::types::Value`, then deserialised. A writer schema that cannot be resolved,
//! is unknown to the registry or is not Avro makes each of its records a dead letter with
//! that reason.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use rustc_hash::FxHashMap;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tributary_runtime::ConfigError;

use super::registry::{Part, Registry};
use super::{wire, DecodeError, SchemaConfig, SubjectStrategy};

/// The registry's name of Avro schemas.
const AVRO: &str = "AVRO";

/// Keeps a schema for the rest of the process, so that readers and writers built on it can
/// be kept too (`apache-avro` borrows schemas). Schemas are kept once per writer schema id a
/// source meets, or per sink: a few kilobytes each.
fn keep(schema: Schema) -> &'static Schema {
    Box::leak(Box::new(schema))
}

fn parse(text: &str, key: &str) -> Result<Schema, ConfigError> {
    Schema::parse_str(text).map_err(|e| ConfigError::new(key, format!("not an Avro schema: {e}")))
}

/// How the records of one writer schema decode.
#[allow(clippy::large_enum_variant)] // A few per source, each behind an `Arc`.
enum Plan {
    /// Readable, with a reader schema or without.
    Read {
        /// Reads the records straight into the job's type, when the writer schema is the
        /// reader schema (or there is none).
        direct: Option<GenericDatumReader<'static>>,
        /// Reads them into a value, resolved against the reader schema if there is one.
        values: GenericDatumReader<'static>,
    },
    /// Not at all: every record is a dead letter with this reason.
    Unreadable(String),
}

impl Plan {
    /// The plan for records written with `writer`, read as `reader`.
    fn new(writer: Schema, reader: Option<&'static Schema>) -> Result<Plan, String> {
        let same = reader.is_none_or(|r| r.canonical_form() == writer.canonical_form());
        if let Some(reader) = reader.filter(|_| !same) {
            if let Err(e) = SchemaCompatibility::can_read(&writer, reader) {
                return Ok(Plan::Unreadable(format!(
                    "the writer schema does not resolve to the reader schema: {e}"
                )));
            }
        }
        let writer = keep(writer);
        let built = || -> Result<Plan, apache_avro::Error> {
            Ok(Plan::Read {
                direct: if same {
                    Some(GenericDatumReader::builder(writer).build()?)
                } else {
                    None
                },
                values: GenericDatumReader::builder(writer)
                    .maybe_reader_schema(reader.filter(|_| !same))
                    .build()?,
            })
        };
        built().map_err(|e| e.to_string())
    }

    /// Decodes one record; `direct` says whether to try the direct path first, and is
    /// cleared when the direct path fails on a record the value path reads (see
    /// [`AvroDecoder`]).
    fn read<D: DeserializeOwned>(&self, bytes: &[u8], direct: &mut bool) -> Result<D, String> {
        let (direct_reader, values) = match self {
            Plan::Read { direct, values } => (direct.as_ref(), values),
            Plan::Unreadable(reason) => return Err(reason.clone()),
        };
        if let Some(reader) = direct_reader.filter(|_| *direct) {
            let mut rest = bytes;
            if let Ok(record) = reader.read_deser(&mut rest) {
                return whole(rest).map(|()| record);
            }
        }
        let mut rest = bytes;
        let value = values.read_value(&mut rest).map_err(|e| e.to_string())?;
        whole(rest)?;
        let record = apache_avro::from_value(&value).map_err(|e| e.to_string())?;
        if *direct && direct_reader.is_some() {
            tracing::debug!(
                "the job's type does not deserialise straight from Avro (its name \
                differs from the record's, or it has u64 fields): decoding through values"
            );
            *direct = false;
        }
        Ok(record)
    }
}

/// Checks that a record used all of its bytes.
fn whole(rest: &[u8]) -> Result<(), String> {
    match rest.len() {
        0 => Ok(()),
        n => Err(format!("{n} bytes left after the record")),
    }
}

/// What the clones of one decoder share.
struct Shared {
    reader: Option<&'static Schema>,
    registry: Option<Arc<Registry>>,
    /// Plans by writer schema id, for every clone.
    plans: Mutex<HashMap<u32, Arc<Plan>>>,
}

impl Shared {
    /// The plan of writer schema `id`, from the registry the first time.
    fn plan(&self, id: u32) -> Result<Arc<Plan>, DecodeError> {
        let mut plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(plan) = plans.get(&id) {
            return Ok(Arc::clone(plan));
        }
        let registry = self.registry.as_ref().ok_or("no registry")?;
        let plan = match registry.writer_schema(id, AVRO)? {
            Ok(s) => match Schema::parse_str(&s.schema) {
                Ok(writer) => {
                    Plan::new(writer, self.reader).map_err(|e| format!("schema id {id}: {e}"))?
                }
                Err(e) => {
                    let reason = format!("schema id {id} is not a valid Avro schema: {e}");
                    tracing::warn!(registry = %registry.url(), id, reason, "records of a writer \
                        schema will be dead letters");
                    Plan::Unreadable(reason)
                }
            },
            Err(reason) => Plan::Unreadable(reason),
        };
        let plan = Arc::new(plan);
        plans.insert(id, Arc::clone(&plan));
        Ok(plan)
    }
}

/// Decodes Avro records into the job's type (see the [module](self) for how).
///
/// Clones share the plans; each also keeps its own map of them, so that a reader's
/// per-record path takes no lock. With each plan it keeps whether the direct path works for
/// the job's type: `apache-avro`'s direct deserialiser wants a struct named like the Avro
/// record and maps `u64` to an 8-byte `fixed`, not to `long`; a type that differs (most
/// types with event times) decodes through values, which convert.
#[derive(Clone)]
pub struct AvroDecoder {
    shared: Arc<Shared>,
    local: FxHashMap<u32, (Arc<Plan>, bool)>,
    /// Without a registry: the plan of the one schema, for plain datums.
    plain: Option<(Arc<Plan>, bool)>,
}

impl std::fmt::Debug for AvroDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvroDecoder")
            .field("registry", &self.shared.registry)
            .finish_non_exhaustive()
    }
}

impl AvroDecoder {
    /// A decoder with the schemas `config` names (keys relative to the connector's table);
    /// checks that the registry, if any, answers.
    pub fn new(config: &SchemaConfig) -> Result<Self, ConfigError> {
        let key = if config.file.is_some() { "schema.file" } else { "schema.inline" };
        let schema = config.text()?.map(|text| parse(&text, key)).transpose()?;
        let registry = config.registry()?;
        let (plain, reader) = match (&registry, schema) {
            (Some(_), reader) => (None, reader.map(keep)),
            (None, Some(schema)) => {
                let plan = Plan::new(schema, None).map_err(|e| ConfigError::new(key, e))?;
                (Some((Arc::new(plan), true)), None)
            }
            (None, None) => {
                return Err(ConfigError::new(
                    "schema",
                    "Avro needs a schema: `file`, `inline` or a `registry`",
                ))
            }
        };
        let shared = Shared { reader, registry, plans: Mutex::new(HashMap::new()) };
        Ok(AvroDecoder { shared: Arc::new(shared), local: FxHashMap::default(), plain })
    }

    /// Decodes one record: a plain datum, or with a registry the Confluent wire format.
    pub fn decode<D: DeserializeOwned>(&mut self, bytes: &[u8]) -> Result<D, DecodeError> {
        if let Some((plan, direct)) = &mut self.plain {
            return Ok(plan.read(bytes, direct)?);
        }
        let (id, payload) = wire::split(bytes)?;
        let (plan, direct) = match self.local.entry(id) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(new) => new.insert((self.shared.plan(id)?, true)),
        };
        Ok(plan.read(payload, direct).map_err(|e| format!("schema id {id}: {e}"))?)
    }
}

/// Encodes records as Avro datums of one schema, framed with its registry id if it has one.
///
/// Records are serialised straight into Avro while that works for the job's type (named like
/// the record, no `u64`s), and else through a value whose `u64`s (which `apache-avro` makes
/// 8-byte `fixed`s) become the `long`s the schema has.
pub struct AvroEncoder {
    schema: &'static Schema,
    writer: GenericDatumWriter<'static>,
    id: Option<u32>,
    direct: AtomicBool,
}

impl std::fmt::Debug for AvroEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvroEncoder").field("id", &self.id).finish_non_exhaustive()
    }
}

impl AvroEncoder {
    /// The encoder of records for `topic` with the schema `config` names (keys relative to
    /// the sink's table). With a registry: the given schema's id under its subject (which
    /// `auto_register` registers if needed), or the subject's latest schema.
    pub fn new(config: &SchemaConfig, topic: &str) -> Result<Self, ConfigError> {
        AvroEncoder::for_part(config, (topic, Part::Value))
    }

    /// [`AvroEncoder::new`] for the `part` (key or value) of the records of a topic.
    pub fn for_part(config: &SchemaConfig, target: (&str, Part)) -> Result<Self, ConfigError> {
        let key = if config.file.is_some() { "schema.file" } else { "schema.inline" };
        let text = config.text()?;
        let given = text.as_deref().map(|t| parse(t, key)).transpose()?;
        let registry = config.registry()?;
        let (schema, id) = match (registry, given) {
            (None, Some(schema)) => (schema, None),
            (None, None) => {
                return Err(ConfigError::new(
                    "schema",
                    "Avro needs a schema: `file`, `inline` or a `registry` to take it from",
                ))
            }
            (Some(registry), Some(schema)) => {
                let canonical = schema.canonical_form();
                let name = full_name(&schema, config, key)?;
                let given = (canonical.as_str(), name.as_str());
                let id = config.output_schema(&registry, target, AVRO, Some(given), key)?.id;
                (schema, Some(id))
            }
            (Some(registry), None) => {
                let latest = config.output_schema(&registry, target, AVRO, None, key)?;
                (parse(&latest.schema, "schema.subject")?, Some(latest.id))
            }
        };
        let schema = keep(schema);
        let writer = GenericDatumWriter::builder(schema)
            .build()
            .map_err(|e| ConfigError::new(key, e.to_string()))?;
        Ok(AvroEncoder { schema, writer, id, direct: AtomicBool::new(true) })
    }

    /// Appends `record`, encoded, to `buf`; the error says what in the record does not fit
    /// the schema.
    pub fn encode<T: Serialize>(&self, record: &T, buf: &mut Vec<u8>) -> Result<(), String> {
        if let Some(id) = self.id {
            wire::frame(id, buf);
        }
        let start = buf.len();
        if self.direct.load(Ordering::Relaxed) {
            if self.writer.write_ser(buf, record).is_ok() {
                return Ok(());
            }
            buf.truncate(start);
        }
        let fail = |e: apache_avro::Error| format!("Avro: {e}");
        let mut value = apache_avro::to_value(record).map_err(fail)?;
        unsigned_to_long(&mut value, self.schema);
        let value = value.resolve(self.schema).map_err(fail)?;
        self.writer.write_value_ref(buf, &value).map_err(fail)?;
        if self.direct.swap(false, Ordering::Relaxed) {
            tracing::debug!(
                "the job's type does not serialise straight into Avro (its name \
                differs from the record's, or it has u64 fields): encoding through values"
            );
        }
        Ok(())
    }
}

/// Turns the 8-byte `fixed`s `apache_avro::to_value` makes of `u64`s into the `long`s (or
/// `int`s) the schema has.
fn unsigned_to_long(value: &mut Value, schema: &Schema) {
    match (value, schema) {
        (value @ Value::Fixed(8, _), Schema::Int) => {
            if let Value::Fixed(_, bytes) = &*value {
                let n = bytes.as_slice().try_into().map(u64::from_le_bytes).ok();
                if let Some(n) = n.and_then(|n| i32::try_from(n).ok()) {
                    *value = Value::Int(n);
                }
            }
        }
        (
            value @ Value::Fixed(8, _),
            Schema::Long
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos
            | Schema::TimeMicros,
        ) => {
            if let Value::Fixed(_, bytes) = &*value {
                let n = bytes.as_slice().try_into().map(u64::from_le_bytes).ok();
                if let Some(n) = n.and_then(|n| i64::try_from(n).ok()) {
                    *value = Value::Long(n);
                }
            }
        }
        (Value::Record(fields), Schema::Record(record)) => {
            for (name, field) in fields {
                if let Some(&i) = record.lookup.get(name.as_str()) {
                    unsigned_to_long(field, &record.fields[i].schema);
                }
            }
        }
        (Value::Array(items), Schema::Array(array)) => {
            items.iter_mut().for_each(|item| unsigned_to_long(item, &array.items));
        }
        (Value::Map(entries), Schema::Map(map)) => {
            entries.values_mut().for_each(|entry| unsigned_to_long(entry, &map.types));
        }
        (Value::Union(_, inner), Schema::Union(union)) => {
            if let Some(variant) = union.variants().iter().find(|v| **v != Schema::Null) {
                unsigned_to_long(inner, variant);
            }
        }
        _ => {}
    }
}

/// The full name of a named schema (a record, enum or fixed), for subject strategies. An
/// unnamed schema (the `"string"` of keys, say) has none, which only the record-name
/// strategies (without a `subject`) refuse.
fn full_name(schema: &Schema, config: &SchemaConfig, key: &str) -> Result<String, ConfigError> {
    let named = match schema {
        Schema::Record(r) => Some(&r.name),
        Schema::Enum(e) => Some(&e.name),
        Schema::Fixed(f) => Some(&f.name),
        _ => None,
    };
    match named {
        Some(name) => Ok(name.fullname(None)),
        None if config.subject.is_some()
            || config.subject_strategy == SubjectStrategy::TopicName =>
        {
            Ok(String::new())
        }
        None => Err(ConfigError::new(
            key,
            "the record-name strategies need a named schema (a record, enum or fixed)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde::Deserialize;

    use super::*;

    const V1: &str = r#"{"type": "record", "name": "Reading", "namespace": "t", "fields": [
        {"name": "device", "type": "long"},
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["Temp", "Hum"]}},
        {"name": "value", "type": "double"},
        {"name": "ts", "type": "long"}]}"#;
    /// V1 with `unit` added, with a default.
    const V2: &str = r#"{"type": "record", "name": "Reading", "namespace": "t", "fields": [
        {"name": "device", "type": "long"},
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["Temp", "Hum"]}},
        {"name": "value", "type": "double"},
        {"name": "unit", "type": "string", "default": "C"},
        {"name": "ts", "type": "long"}]}"#;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Kind {
        Temp,
        Hum,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct V1Reading {
        device: u32,
        kind: Kind,
        value: f64,
        ts: u64,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct V2Reading {
        device: u32,
        kind: Kind,
        value: f64,
        unit: String,
        ts: u64,
    }

    fn plain(schema: &str) -> SchemaConfig {
        SchemaConfig { inline: Some(schema.to_owned()), ..SchemaConfig::default() }
    }

    fn v1() -> V1Reading {
        V1Reading { device: 7, kind: Kind::Hum, value: 0.5, ts: 1_700 }
    }

    #[test]
    fn plain_datums_round_trip() {
        let encoder = AvroEncoder::new(&plain(V1), "t").unwrap();
        let mut buf = Vec::new();
        encoder.encode(&v1(), &mut buf).unwrap();
        let mut decoder = AvroDecoder::new(&plain(V1)).unwrap();
        assert_eq!(decoder.decode::<V1Reading>(&buf), Ok(v1()));
        buf.push(0);
        let error = decoder.decode::<V1Reading>(&buf).unwrap_err().to_string();
        assert!(error.contains("1 bytes left after the record"), "{error}");
        let error = decoder.decode::<V1Reading>(&buf[..3]).unwrap_err().to_string();
        assert!(!error.is_empty());
    }

    #[test]
    fn writer_schemas_resolve_to_the_reader_schema() {
        let v2 = V2Reading { device: 7, kind: Kind::Hum, value: 0.5, unit: "F".into(), ts: 1_700 };
        let mut written = Vec::new();
        AvroEncoder::new(&plain(V2), "t").unwrap().encode(&v2, &mut written).unwrap();
        // A v1 reader of v2 records: `unit` skipped.
        let v1_reader = keep(parse(V1, "s").unwrap());
        let plan = Plan::new(parse(V2, "s").unwrap(), Some(v1_reader)).unwrap();
        assert!(matches!(plan, Plan::Read { direct: None, .. }));
        assert_eq!(plan.read::<V1Reading>(&written, &mut true), Ok(v1()));
        // A v2 reader of v1 records: `unit` takes its default, `ts` widens.
        let mut written = Vec::new();
        AvroEncoder::new(&plain(V1), "t").unwrap().encode(&v1(), &mut written).unwrap();
        let v2_reader = keep(parse(V2, "s").unwrap());
        let plan = Plan::new(parse(V1, "s").unwrap(), Some(v2_reader)).unwrap();
        assert_eq!(
            plan.read::<V2Reading>(&written, &mut true),
            Ok(V2Reading { unit: "C".into(), ..v2 })
        );
        // An `int` writer field widens to the reader's `long`.
        let narrow = V1.replace(r#""device", "type": "long""#, r#""device", "type": "int""#);
        let mut written = Vec::new();
        AvroEncoder::new(&plain(&narrow), "t").unwrap().encode(&v1(), &mut written).unwrap();
        let plan = Plan::new(parse(&narrow, "s").unwrap(), Some(v1_reader)).unwrap();
        assert_eq!(plan.read::<V1Reading>(&written, &mut true), Ok(v1()));
        // The same schema, spelt differently, is read directly.
        let spaced = V1.replace(": ", ":  ");
        let plan = Plan::new(parse(&spaced, "s").unwrap(), Some(v1_reader));
        assert!(matches!(plan, Ok(Plan::Read { direct: Some(_), .. })));
        // A reader field without a default the writer lacks does not resolve.
        let strict = V2.replace(r#", "default": "C""#, "");
        let plan = Plan::new(parse(V1, "s").unwrap(), Some(keep(parse(&strict, "s").unwrap())));
        let Ok(Plan::Unreadable(reason)) = plan else { panic!("resolved") };
        assert!(reason.contains("does not resolve"), "{reason}");
    }

    #[test]
    fn without_a_reader_schema_records_decode_by_field_name() {
        let v2 = V2Reading { device: 7, kind: Kind::Hum, value: 0.5, unit: "F".into(), ts: 1_700 };
        let mut written = Vec::new();
        AvroEncoder::new(&plain(V2), "t").unwrap().encode(&v2, &mut written).unwrap();
        let plan = Plan::new(parse(V2, "s").unwrap(), None).unwrap();
        let mut direct = true;
        assert_eq!(plan.read::<V1Reading>(&written, &mut direct), Ok(v1()), "fields skipped");
        assert!(!direct, "u64 does not deserialise straight from a long");
        assert!(plan.read::<(u32, u32)>(&written, &mut true).is_err());
        // A type without u64s, named as the schema's record, does.
        #[derive(Debug, PartialEq, Deserialize)]
        struct Reading {
            device: i64,
            kind: Kind,
            value: f64,
            unit: String,
            ts: i64,
        }
        let mut direct = true;
        let signed =
            Reading { device: 7, kind: Kind::Hum, value: 0.5, unit: "F".into(), ts: 1_700 };
        assert_eq!(plan.read(&written, &mut direct), Ok(signed));
        assert!(direct);
    }

    #[test]
    fn a_record_that_does_not_fit_the_schema_is_an_encoding_error() {
        let encoder = AvroEncoder::new(&plain(V1), "t").unwrap();
        let error = encoder.encode(&(1, 2), &mut Vec::new()).unwrap_err();
        assert!(error.starts_with("Avro: "), "{error}");
        let error = AvroEncoder::new(&plain("{\"type\": \"recor\"}"), "t").unwrap_err();
        assert!(error.to_string().contains("schema.inline"), "{error}");
        let error = AvroDecoder::new(&SchemaConfig::default()).unwrap_err();
        assert!(error.to_string().contains("Avro needs a schema"), "{error}");
    }

    proptest! {
        /// Garbage never panics the decoder: every outcome is a record or an error.
        #[test]
        fn garbage_is_an_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut decoder = AvroDecoder::new(&plain(V2)).unwrap();
            let _ = decoder.decode::<V2Reading>(&bytes);
            let resolve = Plan::new(parse(V1, "s").unwrap(), Some(keep(parse(V2, "s").unwrap())));
            let _ = resolve.unwrap().read::<V2Reading>(&bytes, &mut true);
        }
    }
}
