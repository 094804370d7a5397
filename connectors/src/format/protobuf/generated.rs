//! Protobuf records decoded by the job's own generated code: a type made by `prost-build` (or
//! derived with `prost::Message`) that names its message with `prost::Name`.
//!
//! Where [`ProtobufDecoder`](super::ProtobufDecoder) decodes into any serde type, guided by a
//! descriptor, this decoder hands the message bytes to `M`'s own `prost` decoding: the speed
//! of a bare `prost` loop. The schema only says which message a record is: with a registry,
//! each record's writer schema id and message indexes must name `M`'s message (checked once
//! per schema id and message path); from a descriptor set, `schema.message` must be `M`'s
//! message; without either, records are bare `M` messages. Fields evolve by Protobuf's own
//! rules: unknown field numbers are skipped and missing ones take their defaults.

use std::collections::hash_map::Entry;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use prost::{Message, Name};
use prost_reflect::FileDescriptor;
use rustc_hash::FxHashMap;
use tributary_runtime::ConfigError;

use super::{from_descriptor_set, message_at, Shared};
use crate::format::{wire, DecodeError, SchemaConfig};

/// Decodes Protobuf messages into the generated type `M` (see the [module](self)).
///
/// # Examples
/// ```
/// use prost::Message as _;
/// use tributary_connectors::format::ProstDecoder;
///
/// #[derive(Clone, PartialEq, prost::Message)]
/// struct Reading {
///     #[prost(uint32, tag = "1")]
///     device: u32,
///     #[prost(uint64, tag = "2")]
///     ts: u64,
/// }
///
/// impl prost::Name for Reading {
///     const NAME: &'static str = "Reading";
///     const PACKAGE: &'static str = "iot";
/// }
///
/// let mut decoder = ProstDecoder::<Reading>::new(None).unwrap();
/// let bytes = Reading { device: 7, ts: 1_000 }.encode_to_vec();
/// assert_eq!(decoder.decode(&bytes), Ok(Reading { device: 7, ts: 1_000 }));
/// assert!(decoder.decode(&[0xff]).unwrap_err().to_string().contains("not a iot.Reading"));
/// ```
pub struct ProstDecoder<M> {
    /// The registry, if records carry the Confluent wire format.
    shared: Option<Arc<Shared>>,
    /// This clone's writer schemas, by id: whether each message path read so far is `M`'s.
    local: FxHashMap<u32, Result<Paths, String>>,
    _message: PhantomData<fn() -> M>,
}

/// A writer schema's file and the verdicts on the message paths of its records read so far.
#[derive(Clone)]
struct Paths {
    file: FileDescriptor,
    checked: Vec<(Vec<usize>, Result<(), String>)>,
}

impl<M> Clone for ProstDecoder<M> {
    fn clone(&self) -> Self {
        ProstDecoder {
            shared: self.shared.clone(),
            local: self.local.clone(),
            _message: PhantomData,
        }
    }
}

impl<M> std::fmt::Debug for ProstDecoder<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProstDecoder").field("registry", &self.shared.is_some()).finish()
    }
}

impl<M: Message + Name + Default> ProstDecoder<M> {
    /// A decoder of records of `M` as `schema` describes them (keys relative to the
    /// connector's table): with a `registry`, in the Confluent wire format; with a descriptor
    /// set `file`, bare messages of `schema.message`, which must be `M`'s message; with no
    /// schema, bare messages.
    pub fn new(schema: Option<&SchemaConfig>) -> Result<Self, ConfigError> {
        let Some(schema) = schema else {
            return Ok(ProstDecoder {
                shared: None,
                local: FxHashMap::default(),
                _message: PhantomData,
            });
        };
        let registry = schema.registry()?;
        if registry.is_none() {
            if let Some(descriptor) = from_descriptor_set(schema)? {
                let name = M::full_name();
                if descriptor.full_name() != name {
                    return Err(ConfigError::new(
                        "schema.message",
                        format!(
                            "`{}` is not the job's message: its records decode as `{name}`",
                            descriptor.full_name()
                        ),
                    ));
                }
            }
        }
        let shared =
            registry.map(|registry| Arc::new(Shared { registry, files: Mutex::default() }));
        Ok(ProstDecoder { shared, local: FxHashMap::default(), _message: PhantomData })
    }

    /// Decodes one record; the error says why it is not an `M` (see [`DecodeError`]).
    #[inline]
    pub fn decode(&mut self, bytes: &[u8]) -> Result<M, DecodeError> {
        let message = match &self.shared {
            None => bytes,
            Some(shared) => {
                let (id, payload) = wire::split(bytes)?;
                let (indexes, message) = wire::split_indexes(payload)?;
                let paths = match self.local.entry(id) {
                    Entry::Occupied(known) => known.into_mut(),
                    Entry::Vacant(new) => {
                        new.insert(shared.file(id)?.map(|file| Paths { file, checked: Vec::new() }))
                    }
                };
                let paths = paths.as_mut().map_err(|e| e.clone())?;
                match paths.checked.iter().find(|(path, _)| **path == *indexes) {
                    Some((_, verdict)) => verdict.clone()?,
                    None => {
                        let verdict = check::<M>(&paths.file, id, &indexes);
                        paths.checked.push((indexes.into_owned(), verdict.clone()));
                        verdict?;
                    }
                }
                message
            }
        };
        M::decode(message).map_err(|e| format!("not a {} message: {e}", M::full_name()).into())
    }
}

/// Whether the message at `indexes` of schema `id`'s file is `M`'s.
fn check<M: Name>(file: &FileDescriptor, id: u32, indexes: &[usize]) -> Result<(), String> {
    let descriptor = message_at(file, indexes)
        .ok_or_else(|| format!("schema id {id} has no message at indexes {indexes:?}"))?;
    let name = M::full_name();
    if descriptor.full_name() == name {
        Ok(())
    } else {
        Err(format!(
            "schema id {id} is message `{}`, not the job's `{name}`",
            descriptor.full_name()
        ))
    }
}

#[cfg(test)]
mod tests {
    use prost_types::field_descriptor_proto::{Label, Type};
    use prost_types::{
        DescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet,
    };

    use super::*;

    #[derive(Clone, PartialEq, prost::Message)]
    struct Reading {
        #[prost(uint32, tag = "1")]
        device: u32,
        #[prost(string, tag = "2")]
        sensor: String,
        #[prost(uint64, tag = "4")]
        ts: u64,
    }

    impl Name for Reading {
        const NAME: &'static str = "Reading";
        const PACKAGE: &'static str = "t";
    }

    /// A descriptor set file holding the messages `t.<name>` for each of `names`.
    fn descriptor_set(names: &[&str]) -> tempfile::NamedTempFile {
        let field = FieldDescriptorProto {
            name: Some("device".into()),
            number: Some(1),
            label: Some(Label::Optional as i32),
            r#type: Some(Type::Uint32 as i32),
            ..FieldDescriptorProto::default()
        };
        let messages = names
            .iter()
            .map(|n| DescriptorProto {
                name: Some((*n).into()),
                field: vec![field.clone()],
                ..DescriptorProto::default()
            })
            .collect();
        let file = FileDescriptorProto {
            name: Some("t.proto".into()),
            package: Some("t".into()),
            syntax: Some("proto3".into()),
            message_type: messages,
            ..FileDescriptorProto::default()
        };
        let out = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(out.path(), FileDescriptorSet { file: vec![file] }.encode_to_vec()).unwrap();
        out
    }

    fn config(file: &tempfile::NamedTempFile, message: &str) -> SchemaConfig {
        SchemaConfig {
            file: Some(file.path().to_owned()),
            message: Some(message.into()),
            ..SchemaConfig::default()
        }
    }

    #[test]
    fn the_descriptor_sets_message_must_be_the_jobs() {
        let file = descriptor_set(&["Other", "Reading"]);
        let mut decoder = ProstDecoder::<Reading>::new(Some(&config(&file, "t.Reading"))).unwrap();
        let reading = Reading { device: 3, sensor: "humidity".into(), ts: u64::MAX };
        assert_eq!(decoder.decode(&reading.encode_to_vec()), Ok(reading));
        let error = ProstDecoder::<Reading>::new(Some(&config(&file, "t.Other"))).unwrap_err();
        assert_eq!(error.key, "schema.message");
        assert!(error.to_string().contains("decode as `t.Reading`"), "{error}");
    }

    #[test]
    fn a_schemas_message_paths_are_checked_by_name() {
        let set = descriptor_set(&["Other", "Reading"]);
        let descriptor = from_descriptor_set(&config(&set, "t.Reading")).unwrap().unwrap();
        let file = descriptor.parent_file();
        assert_eq!(check::<Reading>(&file, 9, &[1]), Ok(()));
        let error = check::<Reading>(&file, 9, &[0]).unwrap_err();
        assert_eq!(error, "schema id 9 is message `t.Other`, not the job's `t.Reading`");
        let error = check::<Reading>(&file, 9, &[2]).unwrap_err();
        assert_eq!(error, "schema id 9 has no message at indexes [2]");
    }

    #[test]
    fn truncated_and_garbage_messages_are_errors() {
        let mut decoder = ProstDecoder::<Reading>::new(None).unwrap();
        let bytes = Reading { device: 1, sensor: "s".repeat(40), ts: 5 }.encode_to_vec();
        for cut in 0..bytes.len() {
            // Every prefix either decodes (a message may end between fields) or is an error.
            let _ = decoder.decode(&bytes[..cut]);
        }
        let error = decoder.decode(&bytes[..bytes.len() - 1]).unwrap_err().to_string();
        assert!(error.starts_with("not a t.Reading message: "), "{error}");
        assert!(decoder.decode(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
