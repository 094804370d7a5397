//! Protobuf records (`prost-reflect`), decoded into and encoded from the job's serde types.
//!
//! A message is decoded straight from its bytes into the job's type ([`de`]), as its
//! canonical JSON mapping would give it: the `.proto` field names, 64-bit integers as numbers
//! and default values present (a proto3 zero is a field like any other). Encoding goes through
//! the JSON mapping and a `DynamicMessage`. Descriptors come from a descriptor set file
//! (`protoc --descriptor_set_out`, `buf build -o`) and `schema.message`, or, with a registry,
//! from each record's writer schema id and message indexes: `.proto` text (compiled with
//! `protox`) or a base64 `FileDescriptorProto`, as Confluent's clients register them.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, FileDescriptor, MessageDescriptor,
    SerializeOptions,
};
use rustc_hash::FxHashMap;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tributary_runtime::ConfigError;

use super::registry::{Part, RegisteredSchema, Registry};
use super::{wire, DecodeError, SchemaConfig};
use de::Plan;

mod de;

/// The registry's name of Protobuf schemas.
const PROTOBUF: &str = "PROTOBUF";

/// How messages are handed to serde: `.proto` names, numbers as numbers, every field.
const TO_SERDE: SerializeOptions = SerializeOptions::new()
    .stringify_64_bit_integers(false)
    .use_proto_field_name(true)
    .skip_default_fields(false);

/// The message `name` of a descriptor set file (key `schema.file`).
fn from_descriptor_set(config: &SchemaConfig) -> Result<Option<MessageDescriptor>, ConfigError> {
    let Some(path) = &config.file else { return Ok(None) };
    let bytes = std::fs::read(path)
        .map_err(|e| ConfigError::new("schema.file", format!("`{}`: {e}", path.display())))?;
    let pool = DescriptorPool::decode(bytes.as_slice()).map_err(|e| {
        ConfigError::new(
            "schema.file",
            format!("`{}` is not a descriptor set: {e}", path.display()),
        )
    })?;
    let name = config.message.as_deref().ok_or_else(|| {
        ConfigError::new(
            "schema.message",
            "name the message of the descriptor set, e.g. `pkg.Reading`",
        )
    })?;
    pool.get_message_by_name(name).map(Some).ok_or_else(|| {
        ConfigError::new("schema.message", format!("`{name}` is not in `{}`", path.display()))
    })
}

/// The file of a registered Protobuf schema: a base64 `FileDescriptorProto` or `.proto` text.
fn file_of(schema: &RegisteredSchema) -> Result<FileDescriptor, String> {
    if schema.schema_type != PROTOBUF {
        return Err(format!(
            "schema id {} is a {} schema, not Protobuf",
            schema.id, schema.schema_type
        ));
    }
    let mut pool = DescriptorPool::new();
    let text = schema.schema.trim();
    let proto = match base64::engine::general_purpose::STANDARD.decode(text) {
        Ok(bytes) => prost_types::FileDescriptorProto::decode(bytes.as_slice())
            .map_err(|e| format!("schema id {}: not a file descriptor: {e}", schema.id))?,
        Err(_) => {
            let name = format!("schema-{}.proto", schema.id);
            let file = protox::file::File::from_source(&name, text)
                .map_err(|e| format!("schema id {}: {e}", schema.id))?;
            let mut resolver = protox::file::ChainFileResolver::new();
            resolver.add(OneFile(name.clone(), file));
            resolver.add(protox::file::GoogleFileResolver::new());
            let mut compiler = protox::Compiler::with_file_resolver(resolver);
            compiler.include_imports(true);
            compiler.open_file(&name).map_err(|e| format!("schema id {}: {e}", schema.id))?;
            let set = compiler.file_descriptor_set();
            pool.add_file_descriptor_protos(set.file.into_iter().filter(|f| f.name() != name))
                .map_err(|e| format!("schema id {}: {e}", schema.id))?;
            let compiled = compiler.descriptor_pool();
            let file = compiled.get_file_by_name(&name).ok_or("compiled file missing")?;
            file.file_descriptor_proto().clone()
        }
    };
    let name = proto.name().to_owned();
    pool.add_file_descriptor_proto(proto).map_err(|e| format!("schema id {}: {e}", schema.id))?;
    pool.get_file_by_name(&name).ok_or_else(|| "the file just added".to_owned())
}

/// A resolver serving one in-memory `.proto` file.
struct OneFile(String, protox::file::File);

impl protox::file::FileResolver for OneFile {
    fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
        if name == self.0 {
            Ok(self.1.clone())
        } else {
            Err(protox::Error::file_not_found(name))
        }
    }
}

/// The message at `indexes` (a path from the file's top-level messages).
fn message_at(file: &FileDescriptor, indexes: &[usize]) -> Option<MessageDescriptor> {
    let (&first, rest) = indexes.split_first()?;
    let mut message = file.messages().nth(first)?;
    for &i in rest {
        let child = message.child_messages().nth(i)?;
        message = child;
    }
    Some(message)
}

/// The message indexes of `message` in its file.
fn indexes_of(message: &MessageDescriptor) -> Vec<usize> {
    let mut path = Vec::new();
    let mut current = message.clone();
    loop {
        let name = current.full_name().to_owned();
        let parent = current.parent_message();
        let position = match &parent {
            Some(p) => p.child_messages().position(|m| m.full_name() == name),
            None => current.parent_file().messages().position(|m| m.full_name() == name),
        };
        path.push(position.unwrap_or_default());
        match parent {
            Some(p) => current = p,
            None => break,
        }
    }
    path.reverse();
    path
}

/// What the clones of one decoder share: the registry and the writer schemas' files.
struct Shared {
    registry: Arc<Registry>,
    files: Mutex<HashMap<u32, Result<FileDescriptor, String>>>,
}

impl Shared {
    fn file(&self, id: u32) -> Result<Result<FileDescriptor, String>, DecodeError> {
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(file) = files.get(&id) {
            return Ok(file.clone());
        }
        let file = match self.registry.writer_schema(id, PROTOBUF)? {
            Ok(schema) => file_of(&schema).inspect_err(|reason| {
                tracing::warn!(registry = %self.registry.url(), id, reason, "records of a \
                    writer schema will be dead letters");
            }),
            Err(reason) => Err(reason),
        };
        files.insert(id, file.clone());
        Ok(file)
    }
}

/// Decodes Protobuf messages into the job's type (see the [module](self)).
#[derive(Clone)]
pub struct ProtobufDecoder {
    /// Without a registry: the message of the descriptor set, for bare messages.
    plain: Option<Arc<Plan>>,
    shared: Option<Arc<Shared>>,
    /// This clone's writer schemas, by id (no lock per record).
    local: FxHashMap<u32, Result<Writer, String>>,
}

/// A writer schema's file and the plans of its messages read so far, by message indexes.
#[derive(Clone)]
struct Writer {
    file: FileDescriptor,
    plans: Vec<(Vec<usize>, Arc<Plan>)>,
}

impl std::fmt::Debug for ProtobufDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProtobufDecoder").finish_non_exhaustive()
    }
}

impl ProtobufDecoder {
    /// A decoder of bare messages of the descriptor set's `schema.message`, or with a
    /// registry of the Confluent wire format (keys relative to the connector's table).
    pub fn new(config: &SchemaConfig) -> Result<Self, ConfigError> {
        let registry = config.registry()?;
        let plain = from_descriptor_set(config)?;
        if registry.is_none() && plain.is_none() {
            return Err(ConfigError::new(
                "schema",
                "Protobuf needs a descriptor set `file` and `message`, or a `registry`",
            ));
        }
        let shared =
            registry.map(|registry| Arc::new(Shared { registry, files: Mutex::default() }));
        Ok(ProtobufDecoder {
            plain: plain.filter(|_| shared.is_none()).map(|m| Plan::new(&m)),
            shared,
            local: FxHashMap::default(),
        })
    }

    /// Decodes one record.
    pub fn decode<D: DeserializeOwned>(&mut self, bytes: &[u8]) -> Result<D, DecodeError> {
        if let Some(plan) = &self.plain {
            return Ok(de::decode(plan, bytes)?);
        }
        let shared = self.shared.as_ref().ok_or("no descriptor")?;
        let (id, payload) = wire::split(bytes)?;
        let writer = match self.local.entry(id) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(new) => {
                new.insert(shared.file(id)?.map(|file| Writer { file, plans: Vec::new() }))
            }
        };
        let writer = writer.as_mut().map_err(|e| e.clone())?;
        let (indexes, message) = wire::split_indexes(payload)?;
        let known = writer.plans.iter().position(|(i, _)| **i == *indexes);
        let position = match known {
            Some(position) => position,
            None => {
                let descriptor = message_at(&writer.file, &indexes).ok_or_else(|| {
                    format!("schema id {id} has no message at indexes {indexes:?}")
                })?;
                writer.plans.push((indexes.into_owned(), Plan::new(&descriptor)));
                writer.plans.len() - 1
            }
        };
        let plan = &writer.plans[position].1;
        Ok(de::decode(plan, message).map_err(|e| format!("schema id {id}: {e}"))?)
    }
}

/// Encodes records as Protobuf messages of one descriptor, framed with the registry id and
/// message indexes if the schema is in a registry.
pub struct ProtobufEncoder {
    descriptor: MessageDescriptor,
    /// The header: magic byte, id, message indexes.
    header: Vec<u8>,
}

impl std::fmt::Debug for ProtobufEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProtobufEncoder").field("message", &self.descriptor.full_name()).finish()
    }
}

impl ProtobufEncoder {
    /// The encoder of records for `topic`: bare messages of the descriptor set's
    /// `schema.message`, or with a registry the latest schema of the subject (`schema.subject`,
    /// by default `<topic>-value`) and its message `schema.message` (by default the first).
    pub fn new(config: &SchemaConfig, topic: &str) -> Result<Self, ConfigError> {
        let Some(registry) = config.registry()? else {
            let descriptor = from_descriptor_set(config)?.ok_or_else(|| {
                ConfigError::new(
                    "schema",
                    "Protobuf needs a descriptor set `file` and `message`, or a `registry`",
                )
            })?;
            return Ok(ProtobufEncoder { descriptor, header: Vec::new() });
        };
        if config.file.is_some() || config.inline.is_some() {
            return Err(ConfigError::new(
                "schema.file",
                "a Protobuf sink with a registry writes the subject's latest schema: register \
                 it there and leave out `file`",
            ));
        }
        let latest =
            config.output_schema(&registry, (topic, Part::Value), PROTOBUF, None, "schema")?;
        let subject = config.subject.clone().unwrap_or_else(|| format!("{topic}-value"));
        let file = file_of(&latest).map_err(|e| ConfigError::new("schema.subject", e))?;
        let descriptor = match &config.message {
            Some(name) => file.messages().find(|m| m.full_name() == name).ok_or_else(|| {
                ConfigError::new(
                    "schema.message",
                    format!("`{name}` is not a top-level message of `{subject}`"),
                )
            })?,
            None => file.messages().next().ok_or_else(|| {
                ConfigError::new("schema.subject", format!("`{subject}` has no message"))
            })?,
        };
        let mut header = Vec::new();
        wire::frame(latest.id, &mut header);
        wire::write_indexes(&indexes_of(&descriptor), &mut header);
        Ok(ProtobufEncoder { descriptor, header })
    }

    /// Appends `record`, encoded, to `buf`; the error says what does not fit the message.
    pub fn encode<T: Serialize>(&self, record: &T, buf: &mut Vec<u8>) -> Result<(), String> {
        let value = serde_json::to_value(record).map_err(|e| e.to_string())?;
        let message = DynamicMessage::deserialize_with_options(
            self.descriptor.clone(),
            value,
            &DeserializeOptions::new(),
        )
        .map_err(|e| format!("Protobuf {}: {e}", self.descriptor.full_name()))?;
        buf.extend_from_slice(&self.header);
        message.encode(buf).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use prost_types::field_descriptor_proto::{Label, Type};
    use prost_types::{
        DescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet,
    };
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Reading {
        device: u32,
        sensor: String,
        value: f64,
        ts: u64,
    }

    fn field(name: &str, number: i32, kind: Type) -> FieldDescriptorProto {
        FieldDescriptorProto {
            name: Some(name.into()),
            number: Some(number),
            label: Some(Label::Optional as i32),
            r#type: Some(kind as i32),
            ..FieldDescriptorProto::default()
        }
    }

    /// A descriptor set file with `t.Reading` (and `t.Other` before it).
    fn descriptor_set() -> tempfile::NamedTempFile {
        let reading = DescriptorProto {
            name: Some("Reading".into()),
            field: vec![
                field("device", 1, Type::Uint32),
                field("sensor", 2, Type::String),
                field("value", 3, Type::Double),
                field("ts", 4, Type::Uint64),
            ],
            ..DescriptorProto::default()
        };
        let other = DescriptorProto { name: Some("Other".into()), ..DescriptorProto::default() };
        let file = FileDescriptorProto {
            name: Some("t.proto".into()),
            package: Some("t".into()),
            syntax: Some("proto3".into()),
            message_type: vec![other, reading],
            ..FileDescriptorProto::default()
        };
        let set = FileDescriptorSet { file: vec![file] };
        let out = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(out.path(), set.encode_to_vec()).unwrap();
        out
    }

    fn config(file: &tempfile::NamedTempFile) -> SchemaConfig {
        SchemaConfig {
            file: Some(file.path().to_owned()),
            message: Some("t.Reading".into()),
            ..SchemaConfig::default()
        }
    }

    #[test]
    fn messages_round_trip_with_zero_fields_and_large_integers() {
        let file = descriptor_set();
        let encoder = ProtobufEncoder::new(&config(&file), "t").unwrap();
        let mut decoder = ProtobufDecoder::new(&config(&file)).unwrap();
        for reading in [
            Reading { device: 7, sensor: "humidity".into(), value: 0.5, ts: 1_767_225_600_000 },
            Reading { device: 0, sensor: String::new(), value: 0.0, ts: u64::MAX },
        ] {
            let mut buf = Vec::new();
            encoder.encode(&reading, &mut buf).unwrap();
            assert_eq!(decoder.decode::<Reading>(&buf), Ok(reading));
        }
        let error = decoder.decode::<Reading>(&[0xff, 0xff]).unwrap_err().to_string();
        assert!(error.contains("not a t.Reading message"), "{error}");
        let error = encoder.encode(&(1, 2), &mut Vec::new()).unwrap_err();
        assert!(error.contains("Protobuf t.Reading"), "{error}");
    }

    #[test]
    fn message_paths_and_registry_texts_resolve() {
        let file = descriptor_set();
        let descriptor = from_descriptor_set(&config(&file)).unwrap().unwrap();
        assert_eq!(indexes_of(&descriptor), vec![1]);
        let parent = descriptor.parent_file();
        assert_eq!(message_at(&parent, &[1]).unwrap().full_name(), "t.Reading");
        assert!(message_at(&parent, &[2]).is_none());
        // `.proto` text, as Confluent's registry returns it.
        let text = RegisteredSchema {
            id: 3,
            schema_type: PROTOBUF.into(),
            schema: "syntax = \"proto3\"; package t; message A { int64 a = 1; message B { string b = 1; } }"
                .into(),
        };
        let compiled = file_of(&text).unwrap();
        assert_eq!(message_at(&compiled, &[0, 0]).unwrap().full_name(), "t.A.B");
        // A base64 `FileDescriptorProto`, as Confluent's Python client registers it.
        let b64 = base64::engine::general_purpose::STANDARD
            .encode(parent.file_descriptor_proto().encode_to_vec());
        let registered = RegisteredSchema { id: 4, schema_type: PROTOBUF.into(), schema: b64 };
        assert_eq!(
            message_at(&file_of(&registered).unwrap(), &[1]).unwrap().full_name(),
            "t.Reading"
        );
        let broken = RegisteredSchema { schema: "message {".into(), ..text.clone() };
        assert!(file_of(&broken).unwrap_err().starts_with("schema id 3: "));
        let avro = RegisteredSchema { schema_type: "AVRO".into(), ..text };
        assert!(file_of(&avro).unwrap_err().contains("not Protobuf"));
    }

    proptest! {
        /// Garbage never panics the decoder.
        #[test]
        fn garbage_is_an_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let file = descriptor_set();
            let mut decoder = ProtobufDecoder::new(&config(&file)).unwrap();
            let _ = decoder.decode::<Reading>(&bytes);
            let _ = wire::split_indexes(&bytes);
        }
    }
}
