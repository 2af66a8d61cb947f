//! Decoding the Kubernetes protobuf envelope (`application/vnd.kubernetes.protobuf`) for the few
//! kinds kubectl's `create` generators send that way: Namespace, ConfigMap, Secret and
//! ServiceAccount (`kubectl create ns|configmap|secret|serviceaccount`). The body is the magic
//! `k8s\0` followed by a `runtime.Unknown` holding the type and the object's own protobuf.
//!
//! This is a stop-gap until full protobuf support (all kinds, and protobuf responses) arrives
//! with `k8s-pb`; other kinds get 415 Unsupported Media Type.

use base64::Engine;
use serde_json::{json, Map, Value};

use super::status::ApiError;

/// The protobuf content type.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

pub(crate) const MAGIC: &[u8] = b"k8s\0";

/// One protobuf field: (number, value).
pub(crate) enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        value |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(value);
        }
    }
    None
}

/// The fields of a message, in order; `None` on malformed input.
pub(crate) fn fields(mut buf: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        let (number, wire) = (key >> 3, key & 7);
        match wire {
            0 => out.push((number, Field::Varint(varint(&mut buf)?))),
            1 => buf = buf.get(8..)?,
            2 => {
                let len = usize::try_from(varint(&mut buf)?).ok()?;
                let (data, rest) = (buf.get(..len)?, buf.get(len..)?);
                buf = rest;
                out.push((number, Field::Bytes(data)));
            }
            5 => buf = buf.get(4..)?,
            _ => return None,
        }
    }
    Some(out)
}

pub(crate) fn text(data: &[u8]) -> Option<String> {
    String::from_utf8(data.to_vec()).ok()
}

/// A `map<string, string>` (or bytes values, base64-encoded as JSON does) entry into `map`.
fn map_entry(data: &[u8], map: &mut Map<String, Value>, bytes_values: bool) -> Option<()> {
    let mut key = String::new();
    let mut value = Value::String(String::new());
    for (n, f) in fields(data)? {
        match (n, f) {
            (1, Field::Bytes(b)) => key = text(b)?,
            (2, Field::Bytes(b)) if bytes_values => {
                value = json!(base64::engine::general_purpose::STANDARD.encode(b))
            }
            (2, Field::Bytes(b)) => value = json!(text(b)?),
            _ => {}
        }
    }
    map.insert(key, value);
    Some(())
}

pub(crate) fn object_meta(data: &[u8]) -> Option<Value> {
    let mut meta = Map::new();
    let mut labels = Map::new();
    let mut annotations = Map::new();
    let mut finalizers = Vec::new();
    for (n, f) in fields(data)? {
        match (n, f) {
            (1, Field::Bytes(b)) => _ = meta.insert("name".into(), json!(text(b)?)),
            (2, Field::Bytes(b)) => _ = meta.insert("generateName".into(), json!(text(b)?)),
            (3, Field::Bytes(b)) => _ = meta.insert("namespace".into(), json!(text(b)?)),
            (6, Field::Bytes(b)) => _ = meta.insert("resourceVersion".into(), json!(text(b)?)),
            (11, Field::Bytes(b)) => map_entry(b, &mut labels, false)?,
            (12, Field::Bytes(b)) => map_entry(b, &mut annotations, false)?,
            (14, Field::Bytes(b)) => finalizers.push(json!(text(b)?)),
            _ => {}
        }
    }
    if !labels.is_empty() {
        meta.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        meta.insert("annotations".into(), Value::Object(annotations));
    }
    if !finalizers.is_empty() {
        meta.insert("finalizers".into(), Value::Array(finalizers));
    }
    Some(Value::Object(meta))
}

fn decode_kind(kind: &str, raw: &[u8]) -> Option<Value> {
    let mut obj = Map::new();
    let mut data = Map::new();
    let mut other = Map::new();
    for (n, f) in fields(raw)? {
        match (kind, n, f) {
            (_, 1, Field::Bytes(b)) => _ = obj.insert("metadata".into(), object_meta(b)?),
            ("Namespace", 2, Field::Bytes(b)) => {
                let finalizers: Option<Vec<Value>> = fields(b)?
                    .into_iter()
                    .filter_map(|(n, f)| match (n, f) {
                        (1, Field::Bytes(s)) => Some(text(s).map(Value::String)),
                        _ => None,
                    })
                    .collect();
                obj.insert("spec".into(), json!({ "finalizers": finalizers? }));
            }
            ("ConfigMap", 2, Field::Bytes(b)) => map_entry(b, &mut data, false)?,
            ("ConfigMap", 3, Field::Bytes(b)) => map_entry(b, &mut other, true)?,
            ("ConfigMap", 4, Field::Varint(v)) => _ = obj.insert("immutable".into(), json!(v != 0)),
            ("Secret", 2, Field::Bytes(b)) => map_entry(b, &mut data, true)?,
            ("Secret", 3, Field::Bytes(b)) => _ = obj.insert("type".into(), json!(text(b)?)),
            ("Secret", 4, Field::Bytes(b)) => map_entry(b, &mut other, false)?,
            ("Secret", 5, Field::Varint(v)) => _ = obj.insert("immutable".into(), json!(v != 0)),
            ("ServiceAccount", 4, Field::Varint(v)) => {
                _ = obj.insert("automountServiceAccountToken".into(), json!(v != 0))
            }
            _ => {}
        }
    }
    if !data.is_empty() {
        obj.insert("data".into(), Value::Object(data));
    }
    if !other.is_empty() {
        let key = if kind == "Secret" { "stringData" } else { "binaryData" };
        obj.insert(key.into(), Value::Object(other));
    }
    Some(Value::Object(obj))
}

/// Decodes a protobuf request body into the JSON form of the object.
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let malformed = || ApiError::bad_request("the protobuf body is malformed");
    let envelope = body.strip_prefix(MAGIC).ok_or_else(malformed)?;
    let mut type_meta = (String::new(), String::new());
    let mut raw: &[u8] = &[];
    for (n, f) in fields(envelope).ok_or_else(malformed)? {
        match (n, f) {
            (1, Field::Bytes(b)) => {
                for (n, f) in fields(b).ok_or_else(malformed)? {
                    match (n, f) {
                        (1, Field::Bytes(s)) => type_meta.0 = text(s).ok_or_else(malformed)?,
                        (2, Field::Bytes(s)) => type_meta.1 = text(s).ok_or_else(malformed)?,
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(b)) => raw = b,
            _ => {}
        }
    }
    let (api_version, kind) = type_meta;
    if let Some(decoded) = super::authz::protobuf::decode(&api_version, &kind, raw) {
        return decoded.ok_or_else(malformed);
    }
    if let Some(decoded) = super::serviceaccount::protobuf::decode(&api_version, &kind, raw) {
        return decoded.ok_or_else(malformed);
    }
    if api_version != "v1"
        || !matches!(kind.as_str(), "Namespace" | "ConfigMap" | "Secret" | "ServiceAccount")
    {
        return Err(ApiError::unsupported_media_type(&format!(
            "{CONTENT_TYPE} (only v1 Namespace, ConfigMap, Secret and ServiceAccount; got {api_version} {kind})"
        )));
    }
    let mut obj = decode_kind(&kind, raw).ok_or_else(malformed)?;
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}

/// A short length-delimited field (data under 128 bytes), for building test bodies.
#[cfg(test)]
pub(crate) fn test_field(n: u64, data: &[u8]) -> Vec<u8> {
    let mut out = vec![(n << 3 | 2) as u8, data.len() as u8];
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::apiserver::protobuf::test_field as field;

    #[test]
    fn configmap_from_kubectl_create() {
        let meta =
            [field(1, b"cm1"), field(11, &[field(1, b"app"), field(2, b"web")].concat())].concat();
        let raw = [field(1, &meta), field(2, &[field(1, b"k"), field(2, b"v")].concat())].concat();
        let type_meta = [field(1, b"v1"), field(2, b"ConfigMap")].concat();
        let body = [MAGIC.to_vec(), field(1, &type_meta), field(2, &raw)].concat();
        let obj = decode(&body).unwrap();
        assert_eq!(
            obj,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "cm1", "labels": {"app": "web"}}, "data": {"k": "v"}})
        );
        assert_eq!(decode(b"k8s\0\x0a\xff").unwrap_err().code, 400);
        let pod =
            [MAGIC.to_vec(), field(1, &[field(1, b"v1"), field(2, b"Pod")].concat())].concat();
        assert_eq!(decode(&pod).unwrap_err().code, 415);
    }
}
