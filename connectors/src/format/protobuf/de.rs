//! Protobuf wire bytes straight into the job's serde type, without a `DynamicMessage`.
//!
//! A [`Plan`] is made once per message descriptor: its fields by number, each with its name,
//! value kind, default and shape (single, repeated, map). [`MessageDe`] is a serde
//! `Deserializer` over one message's bytes that hands the fields to the type's visitor as a
//! map, in field-number order, reading values where they lie (strings are borrowed).
//!
//! What the type sees is the same as through the canonical JSON mapping the decoder used
//! before (and still uses where this path does not apply): `.proto` field names, 64-bit
//! integers as numbers, enums by name (by number when unknown), `bytes` as bytes (or base64
//! when a string is asked for), absent scalars as their defaults, absent messages and oneof
//! members left out. A message whose fields turn out, while it is read, not to be in canonical
//! order (field numbers ascending, a single field at most once), that is not well formed or
//! that holds groups is decoded again through `DynamicMessage` and its JSON mapping (which
//! also words the error of a malformed one), and so are fields of well-known types
//! (`google.protobuf.*`, which the JSON mapping renders specially) and of a message containing
//! itself: the results are the same, only slower.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use prost::encoding::{decode_key, decode_varint, WireType};
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, Value};
use rustc_hash::FxHashMap;
use serde::de::value::{BorrowedStrDeserializer, SeqDeserializer, StrDeserializer};
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor,
};
use serde::forward_to_deserialize_any;

use super::TO_SERDE;

/// Why a message did not decode into the job's type.
#[derive(Debug)]
pub(super) enum Error {
    /// The bytes are not a well-formed message in canonical order: [`decode`] starts again
    /// through `DynamicMessage`, which reads any order and says what is wrong.
    Irregular,
    /// What is wrong, for a dead letter. Boxed so that the error is one pointer and every
    /// per-field `Result` stays small (worth about 10 % of the decode rate here).
    #[allow(clippy::box_collection)]
    Message(Box<String>),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Irregular => f.write_str("not a message in canonical field order"),
            Error::Message(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error::Message(Box::new(msg.to_string()))
    }
}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Error::Message(Box::new(message))
    }
}

/// Decodes a message of `plan` into a `D`: straight from the bytes, or through `DynamicMessage`
/// and the JSON mapping if they are not in canonical order (see the [module](self)).
pub(super) fn decode<D: DeserializeOwned>(plan: &Plan, bytes: &[u8]) -> Result<D, String> {
    match D::deserialize(MessageDe { plan, bytes }) {
        Ok(record) => Ok(record),
        Err(Error::Message(m)) => Err(*m),
        Err(Error::Irregular) => {
            let value = through_json(&plan.descriptor, bytes).map_err(|e| e.to_string())?;
            D::deserialize(value).map_err(|e| e.to_string())
        }
    }
}

/// How the messages of one descriptor decode (see the [module](self)).
pub(super) struct Plan {
    descriptor: MessageDescriptor,
    /// By field number, ascending.
    fields: Vec<Field>,
    /// Field number → position in `fields` + 1 (0: not a field), for small numbers.
    dense: Vec<u16>,
    /// The positions of the numbers past `dense`.
    sparse: FxHashMap<u32, u16>,
    /// The message has groups: always through `DynamicMessage`.
    groups: bool,
}

/// One field of a [`Plan`].
struct Field {
    name: Box<str>,
    kind: ValueKind,
    shape: Shape,
    /// Left out of the map when absent (oneof members and messages).
    optional: bool,
    /// The value an absent single field has.
    default: Default,
}

/// Single, repeated or a map.
enum Shape {
    Single,
    List,
    /// A map field; `kind` of the field is the value's, this the key's.
    Map(ValueKind),
}

/// The kind of a value, as it lies on the wire.
enum ValueKind {
    Double,
    Float,
    Int32,
    Int64,
    Uint32,
    Uint64,
    Sint32,
    Sint64,
    Fixed32,
    Fixed64,
    Sfixed32,
    Sfixed64,
    Bool,
    String,
    Bytes,
    /// Value names by number, ascending.
    Enum(Vec<(i32, Box<str>)>),
    Message(Arc<Plan>),
    /// Through `DynamicMessage` and the JSON mapping (well-known types, recursion).
    Json(MessageDescriptor),
}

/// The default of a single field, in its wire form.
#[derive(Default)]
struct Default {
    bits: u64,
    bytes: Box<[u8]>,
}

/// A value as it lies on the wire.
#[derive(Clone, Copy)]
enum Raw<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Len(&'a [u8]),
}

impl ValueKind {
    fn of(kind: Kind, stack: &mut Vec<String>) -> ValueKind {
        match kind {
            Kind::Double => ValueKind::Double,
            Kind::Float => ValueKind::Float,
            Kind::Int32 => ValueKind::Int32,
            Kind::Int64 => ValueKind::Int64,
            Kind::Uint32 => ValueKind::Uint32,
            Kind::Uint64 => ValueKind::Uint64,
            Kind::Sint32 => ValueKind::Sint32,
            Kind::Sint64 => ValueKind::Sint64,
            Kind::Fixed32 => ValueKind::Fixed32,
            Kind::Fixed64 => ValueKind::Fixed64,
            Kind::Sfixed32 => ValueKind::Sfixed32,
            Kind::Sfixed64 => ValueKind::Sfixed64,
            Kind::Bool => ValueKind::Bool,
            Kind::String => ValueKind::String,
            Kind::Bytes => ValueKind::Bytes,
            Kind::Enum(e) => {
                let mut names: Vec<(i32, Box<str>)> =
                    e.values().map(|v| (v.number(), v.name().into())).collect();
                // Aliases: the first name of a number, as the JSON mapping writes it.
                names.sort_by_key(|(n, _)| *n);
                names.dedup_by_key(|(n, _)| *n);
                ValueKind::Enum(names)
            }
            Kind::Message(m) => {
                let name = m.full_name();
                if name.starts_with("google.protobuf.") || stack.iter().any(|s| s == name) {
                    ValueKind::Json(m)
                } else {
                    ValueKind::Message(Arc::new(Plan::build(&m, stack)))
                }
            }
        }
    }

    /// The wire type of one value of this kind.
    fn wire_type(&self) -> WireType {
        match self {
            ValueKind::Double | ValueKind::Fixed64 | ValueKind::Sfixed64 => WireType::SixtyFourBit,
            ValueKind::Float | ValueKind::Fixed32 | ValueKind::Sfixed32 => WireType::ThirtyTwoBit,
            ValueKind::String | ValueKind::Bytes | ValueKind::Message(_) | ValueKind::Json(_) => {
                WireType::LengthDelimited
            }
            _ => WireType::Varint,
        }
    }

    /// The zero value (proto3 defaults, map entries without a key or value).
    fn zero(&self) -> Raw<'static> {
        match self.wire_type() {
            WireType::SixtyFourBit => Raw::Fixed64(0),
            WireType::ThirtyTwoBit => Raw::Fixed32(0),
            WireType::LengthDelimited => Raw::Len(&[]),
            _ => Raw::Varint(0),
        }
    }
}

impl Plan {
    /// The plan of `descriptor`'s messages.
    pub(super) fn new(descriptor: &MessageDescriptor) -> Arc<Plan> {
        Arc::new(Plan::build(descriptor, &mut Vec::new()))
    }

    fn build(descriptor: &MessageDescriptor, stack: &mut Vec<String>) -> Plan {
        stack.push(descriptor.full_name().to_owned());
        let mut fields: Vec<(u32, Field)> =
            descriptor.fields().map(|f| (f.number(), Field::build(&f, stack))).collect();
        stack.pop();
        fields.sort_by_key(|(n, _)| *n);
        let mut dense = Vec::new();
        let mut sparse = FxHashMap::default();
        for (position, (number, _)) in fields.iter().enumerate() {
            let position = u16::try_from(position + 1).unwrap_or(u16::MAX);
            if *number < 256 {
                let n = *number as usize;
                if dense.len() <= n {
                    dense.resize(n + 1, 0);
                }
                dense[n] = position;
            } else {
                sparse.insert(*number, position);
            }
        }
        Plan {
            descriptor: descriptor.clone(),
            groups: descriptor.fields().any(|f| f.is_group()),
            fields: fields.into_iter().map(|(_, f)| f).collect(),
            dense,
            sparse,
        }
    }

    /// The position of field `number`.
    #[inline]
    fn position(&self, number: u32) -> Option<usize> {
        let p = match self.dense.get(number as usize) {
            Some(&p) => p,
            None if self.sparse.is_empty() => 0,
            None => self.sparse.get(&number).copied().unwrap_or(0),
        };
        (p != 0).then(|| p as usize - 1)
    }
}

impl Field {
    fn build(field: &FieldDescriptor, stack: &mut Vec<String>) -> Field {
        let (kind, shape) = match field.kind() {
            Kind::Message(entry) if field.is_map() => (
                ValueKind::of(entry.map_entry_value_field().kind(), stack),
                Shape::Map(ValueKind::of(entry.map_entry_key_field().kind(), stack)),
            ),
            kind => {
                let shape = if field.is_list() { Shape::List } else { Shape::Single };
                (ValueKind::of(kind, stack), shape)
            }
        };
        let message = matches!(kind, ValueKind::Message(_) | ValueKind::Json(_));
        let optional =
            field.containing_oneof().is_some() || (matches!(shape, Shape::Single) && message);
        let default = if matches!(shape, Shape::Single) && !optional {
            default_of(&kind, &field.default_value())
        } else {
            Default::default()
        };
        Field { name: field.name().into(), kind, shape, optional, default }
    }
}

/// A field's default in its wire form.
fn default_of(kind: &ValueKind, value: &Value) -> Default {
    let bits = match (kind, value) {
        (ValueKind::Sint32, Value::I32(v)) => ((*v << 1) ^ (*v >> 31)) as u32 as u64,
        (ValueKind::Sint64, Value::I64(v)) => ((*v << 1) ^ (*v >> 63)) as u64,
        (ValueKind::Sfixed32, Value::I32(v)) => *v as u32 as u64,
        (_, Value::I32(v)) => *v as i64 as u64,
        (_, Value::I64(v)) => *v as u64,
        (_, Value::U32(v)) => u64::from(*v),
        (_, Value::U64(v)) => *v,
        (_, Value::Bool(v)) => u64::from(*v),
        (_, Value::F32(v)) => u64::from(v.to_bits()),
        (_, Value::F64(v)) => v.to_bits(),
        (_, Value::EnumNumber(v)) => *v as i64 as u64,
        (_, Value::String(s)) => return Default { bits: 0, bytes: s.as_bytes().into() },
        (_, Value::Bytes(b)) => return Default { bits: 0, bytes: b.to_vec().into() },
        _ => 0,
    };
    Default { bits, bytes: Box::default() }
}

/// Reads the value of `wire_type` at the front of `bytes`.
///
/// Malformed bytes are [`Error::Irregular`]: the `DynamicMessage` path says what is wrong.
#[inline(always)]
fn raw<'a>(bytes: &mut &'a [u8], wire_type: WireType) -> Result<Raw<'a>, Error> {
    let short = || Error::Irregular;
    match wire_type {
        WireType::Varint => decode_varint(bytes).map(Raw::Varint).map_err(|_| Error::Irregular),
        WireType::SixtyFourBit => {
            let (value, rest) = bytes.split_first_chunk::<8>().ok_or_else(short)?;
            *bytes = rest;
            Ok(Raw::Fixed64(u64::from_le_bytes(*value)))
        }
        WireType::ThirtyTwoBit => {
            let (value, rest) = bytes.split_first_chunk::<4>().ok_or_else(short)?;
            *bytes = rest;
            Ok(Raw::Fixed32(u32::from_le_bytes(*value)))
        }
        WireType::LengthDelimited => {
            let len = decode_varint(bytes).map_err(|_| Error::Irregular)?;
            let len = usize::try_from(len).ok().filter(|&l| l <= bytes.len()).ok_or_else(short)?;
            let (value, rest) = bytes.split_at(len);
            *bytes = rest;
            Ok(Raw::Len(value))
        }
        WireType::StartGroup | WireType::EndGroup => Err(Error::Irregular),
    }
}

/// A message of `descriptor` through `DynamicMessage` and its JSON mapping.
pub(super) fn through_json(
    descriptor: &MessageDescriptor,
    bytes: &[u8],
) -> Result<serde_json::Value, Error> {
    let message = DynamicMessage::decode(descriptor.clone(), bytes)
        .map_err(|e| Error::from(format!("not a {} message: {e}", descriptor.full_name())))?;
    message
        .serialize_with_options(serde_json::value::Serializer, &TO_SERDE)
        .map_err(|e| Error::from(e.to_string()))
}

fn json_error(e: serde_json::Error) -> Error {
    Error::from(e.to_string())
}

/// One message's bytes as a serde `Deserializer` (see the [module](self)).
pub(super) struct MessageDe<'de, 'p> {
    pub(super) plan: &'p Plan,
    pub(super) bytes: &'de [u8],
}

impl<'de> Deserializer<'de> for MessageDe<'de, '_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.plan.groups {
            return Err(Error::Irregular);
        }
        let mut fields = Fields { plan: self.plan, rest: self.bytes, next: 0, peeked: None };
        fields.peek()?;
        visitor.visit_map(fields)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        through_json(&self.plan.descriptor, self.bytes)?
            .deserialize_enum(name, variants, visitor)
            .map_err(json_error)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

/// The fields of a message, as a serde map: [`Error::Irregular`] as soon as they turn out not
/// to be in canonical order (field numbers ascending, a single field at most once) or not
/// well formed.
struct Fields<'de, 'p> {
    plan: &'p Plan,
    /// The bytes after `peeked`.
    rest: &'de [u8],
    /// The position of the next field to hand over.
    next: usize,
    /// The next occurrence of a known field: its position and value.
    peeked: Option<(usize, Raw<'de>)>,
}

impl<'de> Fields<'de, '_> {
    /// Reads the next occurrence of a known field into `peeked`, skipping unknown ones.
    #[inline(always)]
    fn peek(&mut self) -> Result<(), Error> {
        while !self.rest.is_empty() {
            let (number, wire_type) = decode_key(&mut self.rest).map_err(|_| Error::Irregular)?;
            let value = raw(&mut self.rest, wire_type)?;
            if let Some(position) = self.plan.position(number) {
                let field = &self.plan.fields[position];
                let fits = match field.shape {
                    Shape::Single => wire_type == field.kind.wire_type(),
                    Shape::List => {
                        wire_type == field.kind.wire_type()
                            || wire_type == WireType::LengthDelimited
                    }
                    Shape::Map(_) => wire_type == WireType::LengthDelimited,
                };
                if !fits || position < self.next {
                    return Err(Error::Irregular);
                }
                self.peeked = Some((position, value));
                return Ok(());
            }
        }
        self.peeked = None;
        Ok(())
    }

    /// Takes the next occurrence if it is of the field at `position`.
    #[inline(always)]
    fn take(&mut self, position: usize) -> Result<Option<Raw<'de>>, Error> {
        match self.peeked {
            Some((p, value)) if p == position => {
                self.peek()?;
                Ok(Some(value))
            }
            _ => Ok(None),
        }
    }
}

impl<'de> MapAccess<'de> for Fields<'de, '_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        while let Some(field) = self.plan.fields.get(self.next) {
            let present = match self.peeked {
                Some((p, _)) if p < self.next => return Err(Error::Irregular),
                Some((p, _)) => p == self.next,
                None => false,
            };
            if present || !field.optional {
                return seed.deserialize(StrDeserializer::new(&field.name)).map(Some);
            }
            self.next += 1;
        }
        match self.peeked {
            Some(_) => Err(Error::Irregular),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        // `next` moves on once the value is read: until then, occurrences of this field are
        // in order.
        let position = self.next;
        let plan = self.plan;
        let field = &plan.fields[position];
        let value = match &field.shape {
            Shape::Single => match self.take(position)? {
                Some(raw) => seed.deserialize(ValueDe { kind: &field.kind, raw, owned: None }),
                None => {
                    let raw = match field.kind.wire_type() {
                        WireType::SixtyFourBit => Raw::Fixed64(field.default.bits),
                        WireType::ThirtyTwoBit => Raw::Fixed32(field.default.bits as u32),
                        WireType::LengthDelimited => Raw::Len(&[]),
                        _ => Raw::Varint(field.default.bits),
                    };
                    let owned = matches!(raw, Raw::Len(_)).then_some(&*field.default.bytes);
                    seed.deserialize(ValueDe { kind: &field.kind, raw, owned })
                }
            },
            Shape::List => seed.deserialize(Run { fields: self, position, packed: &[] }),
            Shape::Map(key) => {
                seed.deserialize(MapRun { fields: self, position, key, value: None })
            }
        };
        self.next += 1;
        value.map_err(|e| match e {
            Error::Message(m) => format!("field `{}`: {m}", field.name).into(),
            irregular => irregular,
        })
    }
}

/// The occurrences of a repeated field (packed or not): a seq, or a map for map fields.
struct Run<'a, 'de, 'p> {
    fields: &'a mut Fields<'de, 'p>,
    position: usize,
    /// What is left of a packed occurrence.
    packed: &'de [u8],
}

/// A field's occurrences as a `Deserializer` that hands itself to the visitor (`visit`):
/// whatever the type asks for, a seq for lists and a map for map fields.
macro_rules! occurrences_deserializer {
    ($type:ident, $visit:ident) => {
        impl<'de> Deserializer<'de> for $type<'_, 'de, '_> {
            type Error = Error;

            fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
                visitor.$visit(self)
            }

            fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
                visitor.visit_some(self)
            }

            forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
                byte_buf unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
                identifier ignored_any
            }
        }
    };
}

occurrences_deserializer!(Run, visit_seq);
occurrences_deserializer!(MapRun, visit_map);

impl<'de> SeqAccess<'de> for Run<'_, 'de, '_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        let kind = &self.fields.plan.fields[self.position].kind;
        loop {
            if !self.packed.is_empty() {
                let raw = raw(&mut self.packed, kind.wire_type())?;
                return seed.deserialize(ValueDe { kind, raw, owned: None }).map(Some);
            }
            match self.fields.take(self.position)? {
                None => return Ok(None),
                Some(Raw::Len(bytes)) if kind.wire_type() != WireType::LengthDelimited => {
                    self.packed = bytes;
                }
                Some(raw) => return seed.deserialize(ValueDe { kind, raw, owned: None }).map(Some),
            }
        }
    }
}

/// The entries of a map field.
struct MapRun<'a, 'de, 'p> {
    fields: &'a mut Fields<'de, 'p>,
    position: usize,
    key: &'p ValueKind,
    /// The value of the entry whose key was handed over.
    value: Option<Raw<'de>>,
}

impl<'de> MapAccess<'de> for MapRun<'_, 'de, '_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some(Raw::Len(mut entry)) = self.fields.take(self.position)? else { return Ok(None) };
        let value_kind = &self.fields.plan.fields[self.position].kind;
        let (mut key, mut value) = (self.key.zero(), value_kind.zero());
        while !entry.is_empty() {
            let (number, wire_type) = decode_key(&mut entry).map_err(|_| Error::Irregular)?;
            let raw = raw(&mut entry, wire_type)?;
            let expected = match number {
                1 => Some((&mut key, self.key)),
                2 => Some((&mut value, value_kind)),
                _ => None,
            };
            if let Some((slot, kind)) = expected {
                if wire_type != kind.wire_type() {
                    return Err(Error::Irregular);
                }
                *slot = raw;
            }
        }
        self.value = Some(value);
        seed.deserialize(KeyDe(ValueDe { kind: self.key, raw: key, owned: None })).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let kind = &self.fields.plan.fields[self.position].kind;
        let raw = self
            .value
            .take()
            .ok_or_else(|| Error::from("a map value without its key".to_owned()))?;
        seed.deserialize(ValueDe { kind, raw, owned: None })
    }
}

/// One value of a field.
struct ValueDe<'de, 'p> {
    kind: &'p ValueKind,
    raw: Raw<'de>,
    /// A default's bytes (in the plan, not the message), for strings and bytes.
    owned: Option<&'p [u8]>,
}

impl<'de, 'p> ValueDe<'de, 'p> {
    fn bits(&self) -> u64 {
        match self.raw {
            Raw::Varint(v) | Raw::Fixed64(v) => v,
            Raw::Fixed32(v) => u64::from(v),
            Raw::Len(_) => 0,
        }
    }

    fn bytes(&self) -> &'de [u8] {
        match self.raw {
            Raw::Len(bytes) => bytes,
            _ => &[],
        }
    }

    /// The text of a string value, or the name of an enum value (`Err`: its number).
    fn text(&self) -> Result<Result<&str, i32>, Error> {
        let bytes = self.owned.unwrap_or(self.bytes());
        match self.kind {
            ValueKind::Enum(names) => {
                let number = self.bits() as i32;
                Ok(names
                    .binary_search_by_key(&number, |(n, _)| *n)
                    .map(|i| &*names[i].1)
                    .map_err(|_| number))
            }
            _ => std::str::from_utf8(bytes)
                .map(Ok)
                .map_err(|e| Error::from(format!("not UTF-8: {e}"))),
        }
    }
}

impl<'de> Deserializer<'de> for ValueDe<'de, '_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let bits = self.bits();
        match self.kind {
            ValueKind::Double => visitor.visit_f64(f64::from_bits(bits)),
            ValueKind::Float => visitor.visit_f32(f32::from_bits(bits as u32)),
            ValueKind::Int32 | ValueKind::Sfixed32 => visitor.visit_i32(bits as i32),
            ValueKind::Int64 | ValueKind::Sfixed64 => visitor.visit_i64(bits as i64),
            ValueKind::Uint32 | ValueKind::Fixed32 => visitor.visit_u32(bits as u32),
            ValueKind::Uint64 | ValueKind::Fixed64 => visitor.visit_u64(bits),
            ValueKind::Sint32 => {
                visitor.visit_i32(((bits as u32) >> 1) as i32 ^ -((bits & 1) as i32))
            }
            ValueKind::Sint64 => visitor.visit_i64((bits >> 1) as i64 ^ -((bits & 1) as i64)),
            ValueKind::Bool => visitor.visit_bool(bits != 0),
            ValueKind::String => match (self.owned, self.raw) {
                (None, Raw::Len(bytes)) => match std::str::from_utf8(bytes) {
                    Ok(s) => visitor.visit_borrowed_str(s),
                    Err(e) => Err(Error::from(format!("not UTF-8: {e}"))),
                },
                _ => visitor.visit_str(self.text()?.unwrap_or_default()),
            },
            ValueKind::Bytes => match self.owned {
                Some(bytes) => visitor.visit_bytes(bytes),
                None => visitor.visit_borrowed_bytes(self.bytes()),
            },
            ValueKind::Enum(_) => match self.text()? {
                Ok(name) => visitor.visit_str(name),
                Err(number) => visitor.visit_i32(number),
            },
            ValueKind::Message(plan) => {
                MessageDe { plan, bytes: self.bytes() }.deserialize_any(visitor)
            }
            ValueKind::Json(descriptor) => {
                through_json(descriptor, self.bytes())?.deserialize_any(visitor).map_err(json_error)
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.kind {
            ValueKind::Message(plan) => visitor.visit_some(MessageDe { plan, bytes: self.bytes() }),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.kind {
            ValueKind::String if self.owned.is_none() => {
                let text = std::str::from_utf8(self.bytes())
                    .map_err(|e| Error::from(format!("not UTF-8: {e}")))?;
                visitor.visit_enum(BorrowedStrDeserializer::new(text))
            }
            ValueKind::String | ValueKind::Enum(_) => match self.text()? {
                Ok(text) => visitor.visit_enum(StrDeserializer::<Error>::new(text)),
                Err(number) => Err(Error::from(format!("enum number {number} has no name"))),
            },
            ValueKind::Message(plan) => {
                MessageDe { plan, bytes: self.bytes() }.deserialize_enum(name, variants, visitor)
            }
            ValueKind::Json(descriptor) => through_json(descriptor, self.bytes())?
                .deserialize_enum(name, variants, visitor)
                .map_err(json_error),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.kind {
            ValueKind::Bytes => {
                let bytes = self.owned.unwrap_or(self.bytes());
                visitor.visit_seq(SeqDeserializer::<_, Error>::new(bytes.iter().copied()))
            }
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.kind {
            // As the JSON mapping writes bytes.
            ValueKind::Bytes => visitor.visit_string(
                base64::engine::general_purpose::STANDARD
                    .encode(self.owned.unwrap_or(self.bytes())),
            ),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf
        unit unit_struct tuple tuple_struct map struct identifier
    }
}

/// A map key: as its value, or as text when text is asked for (JSON object keys are text).
struct KeyDe<'de, 'p>(ValueDe<'de, 'p>);

impl<'de> Deserializer<'de> for KeyDe<'de, '_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.0.deserialize_any(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let bits = self.0.bits();
        let text = match self.0.kind {
            ValueKind::String => return self.0.deserialize_any(visitor),
            ValueKind::Bool => (bits != 0).to_string(),
            ValueKind::Int32 | ValueKind::Sfixed32 => (bits as i32).to_string(),
            ValueKind::Int64 | ValueKind::Sfixed64 => (bits as i64).to_string(),
            ValueKind::Sint32 => (((bits as u32) >> 1) as i32 ^ -((bits & 1) as i32)).to_string(),
            ValueKind::Sint64 => ((bits >> 1) as i64 ^ -((bits & 1) as i64)).to_string(),
            _ => bits.to_string(),
        };
        visitor.visit_string(text)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf option
        unit unit_struct seq tuple tuple_struct map struct enum ignored_any
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use prost::Message as _;
    use prost_reflect::{FileDescriptor, MapKey};
    use serde::de::DeserializeOwned;
    use serde::Deserialize;

    use super::super::{file_of, RegisteredSchema};
    use super::*;

    const PROTO: &str = r#"
        syntax = "proto3";
        package t;
        import "google/protobuf/timestamp.proto";
        enum Level { LOW = 0; MID = 1; HIGH = 2; }
        message Inner { string tag = 1; repeated uint32 xs = 2; }
        message Rich {
          int32 a_int32 = 1; int64 a_int64 = 2; uint32 a_uint32 = 3; uint64 a_uint64 = 4;
          sint32 a_sint32 = 5; sint64 a_sint64 = 6; fixed32 a_fixed32 = 7; fixed64 a_fixed64 = 8;
          sfixed32 a_sfixed32 = 9; sfixed64 a_sfixed64 = 10; bool flag = 11; float ratio = 12;
          double value = 13; string name = 14; bytes blob = 15; Level level = 16;
          Inner inner = 17; repeated sint64 packed = 18; repeated string names = 19;
          repeated Inner inners = 20; map<string, int64> counts = 21;
          map<int32, string> labels = 22;
          oneof choice { string text = 23; int64 number = 24; }
          optional uint32 maybe = 25; google.protobuf.Timestamp at = 26;
          Rich child = 300;
        }
    "#;

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(rename_all = "UPPERCASE")]
    enum Level {
        Low,
        Mid,
        High,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Inner {
        tag: String,
        xs: Vec<u32>,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Rich {
        a_int32: i32,
        a_int64: i64,
        a_uint32: u32,
        a_uint64: u64,
        a_sint32: i32,
        a_sint64: i64,
        a_fixed32: u32,
        a_fixed64: u64,
        a_sfixed32: i32,
        a_sfixed64: i64,
        flag: bool,
        ratio: f32,
        value: f64,
        name: String,
        blob: String,
        level: Level,
        inner: Option<Inner>,
        packed: Vec<i64>,
        names: Vec<String>,
        inners: Vec<Inner>,
        counts: BTreeMap<String, i64>,
        labels: BTreeMap<i32, String>,
        text: Option<String>,
        number: Option<i64>,
        maybe: Option<u32>,
        at: Option<String>,
        child: Option<Box<Rich>>,
    }

    fn file() -> FileDescriptor {
        let schema =
            RegisteredSchema { id: 1, schema_type: "PROTOBUF".into(), schema: PROTO.into() };
        file_of(&schema).expect("the test schema compiles")
    }

    /// The oracle: `DynamicMessage`, its JSON mapping, then serde.
    fn oracle<D: DeserializeOwned>(plan: &Plan, bytes: &[u8]) -> Result<D, String> {
        let value = through_json(&plan.descriptor, bytes).map_err(|e| e.to_string())?;
        D::deserialize(value).map_err(|e| e.to_string())
    }

    fn direct<D: DeserializeOwned>(plan: &Plan, bytes: &[u8]) -> Result<D, String> {
        decode(plan, bytes)
    }

    /// A message's top-level fields, each its key and value bytes.
    fn chunks(mut bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let start = bytes;
            let (_, wire_type) = decode_key(&mut bytes).unwrap();
            raw(&mut bytes, wire_type).unwrap();
            out.push(start[..start.len() - bytes.len()].to_vec());
        }
        out
    }

    type Scalars = (i32, i64, u32, u64, i32, i64, u32, u64, i32, i64, bool, f32);
    type Others = (f64, String, Vec<u8>, i32, Option<(String, Vec<u32>)>, Vec<i64>, Vec<String>);
    type Rest = (
        Vec<(String, Vec<u32>)>,
        BTreeMap<String, i64>,
        BTreeMap<i32, String>,
        u8,
        Option<u32>,
        Option<(i64, i32)>,
    );

    fn message(
        file: &FileDescriptor,
        s: &Scalars,
        o: &Others,
        r: &Rest,
        depth: u8,
    ) -> DynamicMessage {
        let rich = file.messages().find(|m| m.name() == "Rich").unwrap();
        let inner_of = |(tag, xs): &(String, Vec<u32>)| {
            let mut m = DynamicMessage::new(file.messages().find(|m| m.name() == "Inner").unwrap());
            m.set_field_by_name("tag", Value::String(tag.clone()));
            m.set_field_by_name("xs", Value::List(xs.iter().map(|&x| Value::U32(x)).collect()));
            Value::Message(m)
        };
        let mut m = DynamicMessage::new(rich);
        let mut set = |name: &str, v: Value| m.set_field_by_name(name, v);
        set("a_int32", Value::I32(s.0));
        set("a_int64", Value::I64(s.1));
        set("a_uint32", Value::U32(s.2));
        set("a_uint64", Value::U64(s.3));
        set("a_sint32", Value::I32(s.4));
        set("a_sint64", Value::I64(s.5));
        set("a_fixed32", Value::U32(s.6));
        set("a_fixed64", Value::U64(s.7));
        set("a_sfixed32", Value::I32(s.8));
        set("a_sfixed64", Value::I64(s.9));
        set("flag", Value::Bool(s.10));
        set("ratio", Value::F32(s.11));
        set("value", Value::F64(o.0));
        set("name", Value::String(o.1.clone()));
        set("blob", Value::Bytes(o.2.clone().into()));
        set("level", Value::EnumNumber(o.3));
        if let Some(inner) = &o.4 {
            set("inner", inner_of(inner));
        }
        set("packed", Value::List(o.5.iter().map(|&x| Value::I64(x)).collect()));
        set("names", Value::List(o.6.iter().cloned().map(Value::String).collect()));
        set("inners", Value::List(r.0.iter().map(inner_of).collect()));
        let counts = r.1.iter().map(|(k, v)| (MapKey::String(k.clone()), Value::I64(*v)));
        set("counts", Value::Map(counts.collect()));
        let labels = r.2.iter().map(|(k, v)| (MapKey::I32(*k), Value::String(v.clone())));
        set("labels", Value::Map(labels.collect()));
        match r.3 % 3 {
            0 => set("text", Value::String(o.1.clone())),
            1 => set("number", Value::I64(s.1)),
            _ => {}
        }
        if let Some(maybe) = r.4 {
            set("maybe", Value::U32(maybe));
        }
        if let Some((seconds, nanos)) = r.5 {
            let mut at = DynamicMessage::new(
                file.parent_pool().get_message_by_name("google.protobuf.Timestamp").unwrap(),
            );
            at.set_field_by_name("seconds", Value::I64(seconds));
            at.set_field_by_name("nanos", Value::I32(nanos));
            set("at", Value::Message(at));
        }
        if depth > 0 {
            let child = message(file, s, o, r, depth - 1);
            set("child", Value::Message(child));
        }
        m
    }

    fn scalars() -> impl Strategy<Value = Scalars> {
        (
            any::<i32>(),
            any::<i64>(),
            any::<u32>(),
            any::<u64>(),
            any::<i32>(),
            any::<i64>(),
            any::<u32>(),
            any::<u64>(),
            any::<i32>(),
            any::<i64>(),
            any::<bool>(),
            -1e30f32..1e30,
        )
    }

    fn others() -> impl Strategy<Value = Others> {
        let inner = ("\\PC{0,6}", prop::collection::vec(any::<u32>(), 0..4));
        (
            -1e300f64..1e300,
            "\\PC{0,8}",
            prop::collection::vec(any::<u8>(), 0..8),
            0..3i32,
            prop::option::of(inner),
            prop::collection::vec(any::<i64>(), 0..5),
            prop::collection::vec("[a-z]{0,3}", 0..4),
        )
    }

    fn rest() -> impl Strategy<Value = Rest> {
        let inner = ("[a-z]{0,3}", prop::collection::vec(any::<u32>(), 0..3));
        (
            prop::collection::vec(inner, 0..3),
            prop::collection::btree_map("[a-z]{0,3}", any::<i64>(), 0..3),
            prop::collection::btree_map(any::<i32>(), "[a-z]{0,3}", 0..3),
            any::<u8>(),
            prop::option::of(any::<u32>()),
            prop::option::of((0..4_000_000_000i64, 0..1_000_000_000i32)),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// The direct path gives what the JSON mapping gives, on canonical encodings and on
        /// shuffled ones, with unknown and repeated fields and cut short.
        #[test]
        fn direct_decoding_agrees_with_the_json_mapping(
            s in scalars(), o in others(), r in rest(), depth in 0..2u8,
            shuffle in any::<u64>(), unknown in any::<bool>(), repeat in any::<bool>(), cut in any::<u16>(),
        ) {
            let file = file();
            let plan = Plan::new(&file.messages().find(|m| m.name() == "Rich").unwrap());
            let bytes = message(&file, &s, &o, &r, depth).encode_to_vec();
            let expected = oracle::<Rich>(&plan, &bytes);
            prop_assert!(expected.is_ok(), "{expected:?}");
            prop_assert_eq!(direct::<Rich>(&plan, &bytes), expected);

            // Unknown fields, a single field given twice (the last counts), another order.
            let mut parts = chunks(&bytes);
            if unknown {
                parts.insert(parts.len() / 2, vec![99 << 3, 0x96, 0x01]);
                parts.push(vec![(98 << 3) | 2, 2, b'h', b'i']);
                parts.insert(0, vec![(97 << 3) | 5, 1, 2, 3, 4]);
            }
            if repeat && !parts.is_empty() {
                parts.insert(0, vec![(1 << 3), 0x2a]);
            }
            let mut state = shuffle | 1;
            for i in (1..parts.len()).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                if shuffle % 2 == 0 {
                    parts.swap(i, (state % (i as u64 + 1)) as usize);
                }
            }
            let mutated = parts.concat();
            prop_assert_eq!(direct::<Rich>(&plan, &mutated), oracle::<Rich>(&plan, &mutated));

            // Cut short: both fail.
            if !mutated.is_empty() {
                let short = &mutated[..cut as usize % mutated.len()];
                prop_assert_eq!(direct::<Rich>(&plan, short).is_ok(), oracle::<Rich>(&plan, short).is_ok());
            }
        }

        /// Garbage never panics, and is an error wherever the JSON mapping finds one.
        #[test]
        fn garbage_fails_as_through_the_json_mapping(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let file = file();
            let plan = Plan::new(&file.messages().find(|m| m.name() == "Rich").unwrap());
            let ours = direct::<Rich>(&plan, &bytes);
            let theirs = oracle::<Rich>(&plan, &bytes);
            prop_assert_eq!(ours.is_ok(), theirs.is_ok(), "{:?} vs {:?}", ours, theirs);
        }
    }

    #[test]
    fn defaults_enums_and_bytes_follow_the_json_mapping() {
        let file = file();
        let plan = Plan::new(&file.messages().find(|m| m.name() == "Rich").unwrap());
        let empty: Rich = direct(&plan, &[]).unwrap();
        assert_eq!(
            (empty.level, empty.inner, empty.maybe, empty.at),
            (Level::Low, None, None, None)
        );
        assert_eq!(oracle::<Rich>(&plan, &[]).unwrap().name, empty.name);
        // An enum number without a name is a number, as in the JSON mapping.
        #[derive(Debug, Deserialize)]
        struct Levels {
            level: i32,
            blob: Vec<u8>,
        }
        let bytes = [(15 << 3) | 2, 2, 0xff, 0x00, 0x80, 0x01, 9]; // blob, level = 9
        let levels: Levels = direct(&plan, &bytes).unwrap();
        assert_eq!((levels.level, levels.blob), (9, vec![0xff, 0x00]));
        let error = direct::<Rich>(&plan, &bytes).unwrap_err();
        assert!(error.contains("field `level`"), "{error}");
        // Invalid UTF-8 names its field.
        let error = direct::<Rich>(&plan, &[(14 << 3) | 2, 1, 0xff]).unwrap_err();
        assert!(error.contains("field `name`: not UTF-8"), "{error}");
    }
}
