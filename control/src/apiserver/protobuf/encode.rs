//! JSON → protobuf: a JSON value into the bytes of a message, driven by the descriptor
//! registry. Keys the message does not have (`apiVersion`/`kind` of nested objects, fields newer
//! than the v1.33 protos) are skipped, as Go's protobuf encoder never sees them; values of the
//! wrong JSON type are errors. Fields are written in field-number order, like Go's encoder.

use base64::Engine;
use serde_json::{Map, Value};

use super::descriptors::{Field, Kind, Message, Registry, Scalar};
use super::mapping::{self, Special};
use super::wire;

const MAX_DEPTH: usize = 100;

/// Encodes `value` as message `message`.
pub(super) fn message(
    registry: &Registry,
    message: &Message,
    value: &Value,
) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    Encoder { registry }.message(message, value, &mut out, 0)?;
    Ok(out)
}

struct Encoder<'r> {
    registry: &'r Registry,
}

impl<'r> Encoder<'r> {
    fn lookup(&self, name: &str) -> Result<&'r Message, String> {
        self.registry.message(name).ok_or_else(|| format!("unknown message {name}"))
    }

    fn message(
        &self,
        message: &Message,
        value: &Value,
        out: &mut Vec<u8>,
        depth: usize,
    ) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err("object nesting too deep".into());
        }
        if let Some(special) = message.special {
            return self.special(special, message, value, out, depth);
        }
        let Value::Object(obj) = value else {
            return Err(format!("expected an object, got {}", type_name(value)));
        };
        for field in &message.fields {
            self.field(field, obj, out, depth).map_err(|e| format!("{}: {e}", field.json))?;
        }
        Ok(())
    }

    fn field(
        &self,
        field: &Field,
        obj: &Map<String, Value>,
        out: &mut Vec<u8>,
        depth: usize,
    ) -> Result<(), String> {
        if field.inline {
            // The embedded struct's fields are the parent's own keys.
            let Kind::Message(name) = &field.kind else { return Ok(()) };
            let mut inner = Vec::new();
            self.message(self.lookup(name)?, &Value::Object(obj.clone()), &mut inner, depth + 1)?;
            if !inner.is_empty() {
                wire::put_bytes_field(out, field.number, &inner);
            }
            return Ok(());
        }
        let Some(value) = obj.get(&field.json).filter(|v| !v.is_null()) else { return Ok(()) };
        match &field.kind {
            Kind::Map(_, value_kind) => {
                let Value::Object(map) = value else {
                    return Err(format!("expected an object, got {}", type_name(value)));
                };
                for (key, item) in map {
                    let mut entry = Vec::new();
                    wire::put_bytes_field(&mut entry, 1, key.as_bytes());
                    self.element(value_kind, 2, item, &mut entry, depth)
                        .map_err(|e| format!("{key}: {e}"))?;
                    wire::put_bytes_field(out, field.number, &entry);
                }
            }
            kind if field.repeated => {
                let Value::Array(items) = value else {
                    return Err(format!("expected an array, got {}", type_name(value)));
                };
                for (i, item) in items.iter().enumerate() {
                    self.element(kind, field.number, item, out, depth)
                        .map_err(|e| format!("[{i}]: {e}"))?;
                }
            }
            kind => self.element(kind, field.number, value, out, depth)?,
        }
        Ok(())
    }

    /// Writes one value of kind `kind` as field `number`.
    fn element(
        &self,
        kind: &Kind,
        number: u32,
        value: &Value,
        out: &mut Vec<u8>,
        depth: usize,
    ) -> Result<(), String> {
        match kind {
            Kind::Scalar(s) => scalar(*s, number, value, out),
            Kind::Message(name) => {
                let mut inner = Vec::new();
                self.message(self.lookup(name)?, value, &mut inner, depth + 1)?;
                wire::put_bytes_field(out, number, &inner);
                Ok(())
            }
            Kind::Map(..) => Err("nested map".into()),
        }
    }

    fn special(
        &self,
        special: Special,
        message: &Message,
        value: &Value,
        out: &mut Vec<u8>,
        depth: usize,
    ) -> Result<(), String> {
        let schema = |value: &Value, number: u32, out: &mut Vec<u8>| -> Result<(), String> {
            let props = self.lookup(&format!("{}.JSONSchemaProps", package(&message.name)))?;
            let mut inner = Vec::new();
            self.message(props, value, &mut inner, depth + 1)?;
            wire::put_bytes_field(out, number, &inner);
            Ok(())
        };
        match (special, value) {
            (Special::Time | Special::MicroTime, Value::String(text)) => {
                let (seconds, nanos) = mapping::parse_time(text, special == Special::MicroTime)?;
                wire::put_varint_field(out, 1, seconds as u64);
                wire::put_varint_field(out, 2, nanos as i64 as u64);
            }
            (Special::Duration, Value::String(text)) => {
                wire::put_varint_field(out, 1, mapping::parse_duration(text)? as u64)
            }
            (Special::Quantity, Value::String(text)) => {
                wire::put_bytes_field(out, 1, text.as_bytes())
            }
            (Special::Quantity, Value::Number(n)) => {
                wire::put_bytes_field(out, 1, n.to_string().as_bytes())
            }
            // Go writes all three fields of an IntOrString.
            (Special::IntOrString, Value::Number(n)) => {
                let int = n
                    .as_i64()
                    .and_then(|v| i32::try_from(v).ok())
                    .ok_or_else(|| format!("{n} is not an int32"))?;
                wire::put_varint_field(out, 1, 0);
                wire::put_varint_field(out, 2, int as i64 as u64);
                wire::put_bytes_field(out, 3, b"");
            }
            (Special::IntOrString, Value::String(text)) => {
                wire::put_varint_field(out, 1, 1);
                wire::put_varint_field(out, 2, 0);
                wire::put_bytes_field(out, 3, text.as_bytes());
            }
            (Special::RawJson, value) => {
                let raw = serde_json::to_vec(value).map_err(|e| e.to_string())?;
                wire::put_bytes_field(out, 1, &raw);
            }
            (Special::StringList, Value::Array(items)) => {
                for item in items {
                    scalar(Scalar::String, 1, item, out)?;
                }
            }
            (Special::SchemaOrArray, Value::Array(items)) => {
                for item in items {
                    schema(item, 2, out)?;
                }
            }
            (Special::SchemaOrArray | Special::SchemaOrStringArray, Value::Object(_)) => {
                schema(value, 1, out)?
            }
            (Special::SchemaOrBool, Value::Bool(allows)) => {
                wire::put_varint_field(out, 1, u64::from(*allows))
            }
            (Special::SchemaOrBool, Value::Object(_)) => {
                wire::put_varint_field(out, 1, 1);
                schema(value, 2, out)?;
            }
            (Special::SchemaOrStringArray, Value::Array(items)) => {
                for item in items {
                    scalar(Scalar::String, 2, item, out)?;
                }
            }
            (special, value) => {
                return Err(format!("unexpected {} for {special:?}", type_name(value)))
            }
        }
        Ok(())
    }
}

fn package(name: &str) -> &str {
    name.rsplit_once('.').map_or("", |(p, _)| p)
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn scalar(s: Scalar, number: u32, value: &Value, out: &mut Vec<u8>) -> Result<(), String> {
    let wrong = || format!("expected a {s:?}, got {}", type_name(value));
    let int = || -> Result<i64, String> {
        match value {
            Value::Number(n) => n
                .as_i64()
                .or_else(|| {
                    n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18).map(|f| f as i64)
                })
                .ok_or_else(|| format!("{n} is not an integer")),
            _ => Err(wrong()),
        }
    };
    match s {
        Scalar::String => {
            let Value::String(text) = value else { return Err(wrong()) };
            wire::put_bytes_field(out, number, text.as_bytes());
        }
        Scalar::Bytes => {
            let Value::String(text) = value else { return Err(wrong()) };
            let data = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| format!("invalid base64: {e}"))?;
            wire::put_bytes_field(out, number, &data);
        }
        Scalar::Bool => {
            let Value::Bool(b) = value else { return Err(wrong()) };
            wire::put_varint_field(out, number, u64::from(*b));
        }
        Scalar::Int64 => wire::put_varint_field(out, number, int()? as u64),
        Scalar::Int32 => {
            let v =
                i32::try_from(int()?).map_err(|_| format!("{value} is out of the int32 range"))?;
            wire::put_varint_field(out, number, v as i64 as u64);
        }
        Scalar::Uint64 | Scalar::Uint32 => {
            let v = u64::try_from(int()?).map_err(|_| format!("{value} is negative"))?;
            wire::put_varint_field(out, number, v);
        }
        Scalar::Double => {
            let v = value.as_f64().ok_or_else(wrong)?;
            wire::put_fixed64_field(out, number, v.to_bits());
        }
        Scalar::Float => {
            let v = value.as_f64().ok_or_else(wrong)? as f32;
            wire::put_fixed32_field(out, number, v.to_bits());
        }
    }
    Ok(())
}
