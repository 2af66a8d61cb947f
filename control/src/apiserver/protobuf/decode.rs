//! Protobuf → JSON: one message's bytes into the JSON form the Go types marshal to, driven by
//! the descriptor registry. Go writes every non-pointer field even when zero, so zero scalars
//! of non-pointer fields are dropped (Go treats them as unset, and so do Skerry's defaulting and
//! validation); a zero in a pointer field (`replicas: 0`, `enableServiceLinks: false`) is kept.

use base64::Engine;
use serde_json::{Map, Number, Value};

use super::descriptors::{Field, Kind, Message, Registry, Scalar};
use super::mapping::{self, Special};
use super::wire::{self, Wire};

/// Nesting deeper than this is refused (JSONSchemaProps nest, but not this deep).
const MAX_DEPTH: usize = 100;

/// Decodes `bytes` as message `message` into its JSON value (`Null` for an unset special
/// value such as a zero time).
pub(super) fn message(
    registry: &Registry,
    message: &Message,
    bytes: &[u8],
) -> Result<Value, String> {
    Decoder { registry }.message(message, bytes, 0)
}

struct Decoder<'r> {
    registry: &'r Registry,
}

impl<'r> Decoder<'r> {
    fn lookup(&self, name: &str) -> Result<&'r Message, String> {
        self.registry.message(name).ok_or_else(|| format!("unknown message {name}"))
    }

    fn message(&self, message: &Message, bytes: &[u8], depth: usize) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err("message nesting too deep".into());
        }
        let wire = wire::fields(bytes)?;
        if let Some(special) = message.special {
            return self.special(special, message, &wire, depth);
        }
        let mut obj = Map::new();
        for (number, value) in wire {
            // Unknown field numbers (newer clients) are skipped, as Go's decoder does.
            let Some(field) = message.field(number) else { continue };
            self.field(field, value, &mut obj, depth)
                .map_err(|e| format!("{}: {e}", field.json))?;
        }
        Ok(Value::Object(obj))
    }

    /// Decodes one wire value of `field` into `obj`.
    fn field(
        &self,
        field: &Field,
        value: Wire<'_>,
        obj: &mut Map<String, Value>,
        depth: usize,
    ) -> Result<(), String> {
        match &field.kind {
            Kind::Map(_, value_kind) => {
                let Wire::Bytes(entry) = value else {
                    return Err("map entry is not length-delimited".into());
                };
                let (mut key, mut val) = (String::new(), None);
                for (n, v) in wire::fields(entry)? {
                    match (n, v) {
                        (1, Wire::Bytes(k)) => key = text(k)?,
                        (2, v) => val = Some(self.element(value_kind, v, depth)?),
                        _ => {}
                    }
                }
                let val = match val {
                    Some(v) => v,
                    None => zero_of(value_kind),
                };
                let map =
                    obj.entry(field.json.clone()).or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(map) = map {
                    map.insert(key, val);
                }
            }
            kind if field.repeated => {
                let items =
                    obj.entry(field.json.clone()).or_insert_with(|| Value::Array(Vec::new()));
                let Value::Array(items) = items else { return Ok(()) };
                match (kind, value) {
                    // Packed repeated numbers (proto2 senders do not pack, but accept it).
                    (Kind::Scalar(s), Wire::Bytes(packed))
                        if *s != Scalar::String && *s != Scalar::Bytes =>
                    {
                        for v in wire::packed_varints(packed)? {
                            items.push(self.element(kind, Wire::Varint(v), depth)?);
                        }
                    }
                    _ => items.push(self.element(kind, value, depth)?),
                }
            }
            Kind::Message(name) if field.inline => {
                let Wire::Bytes(bytes) = value else { return Err("expected a message".into()) };
                if let Value::Object(inner) = self.message(self.lookup(name)?, bytes, depth + 1)? {
                    obj.extend(inner);
                }
            }
            kind => {
                let v = self.element(kind, value, depth)?;
                if v.is_null() || (!field.pointer && is_zero(kind, &v)) {
                    obj.remove(&field.json);
                } else {
                    obj.insert(field.json.clone(), v);
                }
            }
        }
        Ok(())
    }

    /// One value of kind `kind`.
    fn element(&self, kind: &Kind, value: Wire<'_>, depth: usize) -> Result<Value, String> {
        match (kind, value) {
            (Kind::Scalar(s), v) => scalar(*s, v),
            (Kind::Message(name), Wire::Bytes(bytes)) => {
                self.message(self.lookup(name)?, bytes, depth + 1)
            }
            (Kind::Map(..), _) => Err("nested map".into()),
            (Kind::Message(name), _) => Err(format!("expected a {name} message")),
        }
    }

    fn special(
        &self,
        special: Special,
        message: &Message,
        wire: &[(u32, Wire<'_>)],
        depth: usize,
    ) -> Result<Value, String> {
        let varint = |n: u32| {
            wire.iter().rev().find_map(|(num, v)| match (num, v) {
                (num, Wire::Varint(x)) if *num == n => Some(*x),
                _ => None,
            })
        };
        let bytes = |n: u32| {
            wire.iter().rev().find_map(|(num, v)| match (num, v) {
                (num, Wire::Bytes(b)) if *num == n => Some(*b),
                _ => None,
            })
        };
        let all_bytes = |n: u32| {
            wire.iter().filter_map(move |(num, v)| match v {
                Wire::Bytes(b) if *num == n => Some(*b),
                _ => None,
            })
        };
        let schema = |n: u32| -> Result<Option<Value>, String> {
            let Some(b) = bytes(n) else { return Ok(None) };
            let props = self.lookup(&format!("{}.JSONSchemaProps", package(&message.name)))?;
            self.message(props, b, depth + 1).map(Some)
        };
        Ok(match special {
            Special::Time | Special::MicroTime => {
                let (seconds, nanos) =
                    (varint(1).unwrap_or(0) as i64, varint(2).unwrap_or(0) as i32);
                if wire.is_empty() {
                    // Go's zero time (an empty message) is JSON null.
                    return Ok(Value::Null);
                }
                let text = mapping::format_time(seconds, nanos, special == Special::MicroTime)
                    .ok_or_else(|| format!("time out of range: {seconds}s"))?;
                Value::String(text)
            }
            Special::Duration => {
                Value::String(mapping::format_duration(varint(1).unwrap_or(0) as i64))
            }
            Special::Quantity => Value::String(text(bytes(1).unwrap_or_default())?),
            Special::IntOrString => match varint(1).unwrap_or(0) {
                1 => Value::String(text(bytes(3).unwrap_or_default())?),
                _ => Value::from(varint(2).unwrap_or(0) as i32),
            },
            Special::RawJson => match bytes(1) {
                None => Value::Null,
                Some(raw) => {
                    serde_json::from_slice(raw).map_err(|e| format!("embedded JSON: {e}"))?
                }
            },
            Special::StringList => Value::Array(
                all_bytes(1).map(|b| text(b).map(Value::String)).collect::<Result<_, _>>()?,
            ),
            Special::SchemaOrArray => {
                let props = self.lookup(&format!("{}.JSONSchemaProps", package(&message.name)))?;
                let items: Vec<&[u8]> = all_bytes(2).collect();
                if items.is_empty() {
                    schema(1)?.unwrap_or(Value::Null)
                } else {
                    Value::Array(
                        items
                            .into_iter()
                            .map(|b| self.message(props, b, depth + 1))
                            .collect::<Result<_, _>>()?,
                    )
                }
            }
            Special::SchemaOrBool => match schema(2)? {
                Some(schema) => schema,
                None => Value::Bool(varint(1).unwrap_or(0) != 0),
            },
            Special::SchemaOrStringArray => {
                let items: Vec<&[u8]> = all_bytes(2).collect();
                if items.is_empty() {
                    schema(1)?.unwrap_or(Value::Null)
                } else {
                    Value::Array(
                        items
                            .into_iter()
                            .map(|b| text(b).map(Value::String))
                            .collect::<Result<_, _>>()?,
                    )
                }
            }
        })
    }
}

fn package(name: &str) -> &str {
    name.rsplit_once('.').map_or("", |(p, _)| p)
}

fn text(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| "string is not UTF-8".into())
}

fn scalar(s: Scalar, value: Wire<'_>) -> Result<Value, String> {
    Ok(match (s, value) {
        (Scalar::String, Wire::Bytes(b)) => Value::String(text(b)?),
        (Scalar::Bytes, Wire::Bytes(b)) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        (Scalar::Bool, Wire::Varint(v)) => Value::Bool(v != 0),
        // Two's complement on the wire: int32/int64 negatives are 10-byte varints.
        (Scalar::Int64, Wire::Varint(v)) => Value::from(v as i64),
        (Scalar::Int64, Wire::Fixed64(v)) => Value::from(v as i64),
        (Scalar::Int32, Wire::Varint(v)) => Value::from(v as i64 as i32),
        (Scalar::Int32, Wire::Fixed32(v)) => Value::from(v as i32),
        (Scalar::Uint64, Wire::Varint(v)) => Value::from(v),
        (Scalar::Uint32, Wire::Varint(v)) => Value::from(v as u32),
        (Scalar::Double, Wire::Fixed64(v)) => float(f64::from_bits(v))?,
        (Scalar::Float, Wire::Fixed32(v)) => float(f64::from(f32::from_bits(v)))?,
        (s, _) => return Err(format!("wrong wire type for a {s:?}")),
    })
}

fn float(v: f64) -> Result<Value, String> {
    // JSON has no NaN or infinities; Go's encoder refuses them too.
    Number::from_f64(v)
        .map(Value::Number)
        .ok_or_else(|| format!("{v} is not representable in JSON"))
}

/// The JSON of an absent map value (Go's zero value).
fn zero_of(kind: &Kind) -> Value {
    match kind {
        Kind::Scalar(Scalar::String | Scalar::Bytes) => Value::String(String::new()),
        Kind::Scalar(Scalar::Bool) => Value::Bool(false),
        Kind::Scalar(_) => Value::from(0),
        _ => Value::Object(Map::new()),
    }
}

/// Whether a decoded singular value is its type's zero value (dropped for non-pointer fields).
fn is_zero(kind: &Kind, value: &Value) -> bool {
    match (kind, value) {
        (Kind::Scalar(_) | Kind::Message(_), Value::String(s)) => s.is_empty(),
        (Kind::Scalar(_), Value::Bool(b)) => !b,
        (Kind::Scalar(_) | Kind::Message(_), Value::Number(n)) => n.as_f64() == Some(0.0),
        _ => false,
    }
}
