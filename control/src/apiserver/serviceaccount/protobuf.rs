//! Protobuf bodies of the `authentication.k8s.io/v1` kinds kubectl sends that way: TokenRequest
//! (`kubectl create token`), TokenReview and SelfSubjectReview (`kubectl auth whoami`). Decoded
//! into their JSON form by field number (k8s.io/api `authentication/v1/generated.proto`), on top
//! of the envelope reader in `apiserver::protobuf`.

use serde_json::{json, Map, Value};

use crate::apiserver::protobuf::{fields, object_meta, text, Field};

const GROUP_VERSION: &str = "authentication.k8s.io/v1";

/// The JSON form of an authentication object: `None` when the kind is not one of them,
/// `Some(None)` when its bytes are malformed.
pub(crate) fn decode(api_version: &str, kind: &str, raw: &[u8]) -> Option<Option<Value>> {
    if api_version != GROUP_VERSION {
        return None;
    }
    let spec: fn(&[u8]) -> Option<Value> = match kind {
        "TokenRequest" => token_request_spec,
        "TokenReview" => token_review_spec,
        // No spec: metadata only.
        "SelfSubjectReview" => |_| Some(json!({})),
        _ => return None,
    };
    Some(object(raw, spec).map(|mut obj| {
        obj["apiVersion"] = json!(api_version);
        obj["kind"] = json!(kind);
        obj
    }))
}

/// `metadata` (1) and `spec` (2); the status is the server's to fill in.
fn object(raw: &[u8], spec: fn(&[u8]) -> Option<Value>) -> Option<Value> {
    let mut obj = Map::new();
    for (n, f) in fields(raw)? {
        match (n, f) {
            (1, Field::Bytes(b)) => _ = obj.insert("metadata".into(), object_meta(b)?),
            (2, Field::Bytes(b)) => _ = obj.insert("spec".into(), spec(b)?),
            _ => {}
        }
    }
    Some(Value::Object(obj))
}

/// TokenRequestSpec: audiences (1), boundObjectRef (3), expirationSeconds (4).
fn token_request_spec(data: &[u8]) -> Option<Value> {
    let mut spec = Map::new();
    let mut audiences = Vec::new();
    for (n, f) in fields(data)? {
        match (n, f) {
            (1, Field::Bytes(b)) => audiences.push(json!(text(b)?)),
            (3, Field::Bytes(b)) => _ = spec.insert("boundObjectRef".into(), bound_ref(b)?),
            // int64: two's complement in a varint.
            (4, Field::Varint(v)) => _ = spec.insert("expirationSeconds".into(), json!(v as i64)),
            _ => {}
        }
    }
    if !audiences.is_empty() {
        spec.insert("audiences".into(), Value::Array(audiences));
    }
    Some(Value::Object(spec))
}

/// BoundObjectReference: kind (1), apiVersion (2), name (3), uid (4).
fn bound_ref(data: &[u8]) -> Option<Value> {
    let mut reference = Map::new();
    for (n, f) in fields(data)? {
        let key = match n {
            1 => "kind",
            2 => "apiVersion",
            3 => "name",
            4 => "uid",
            _ => continue,
        };
        if let Field::Bytes(b) = f {
            reference.insert(key.into(), json!(text(b)?));
        }
    }
    Some(Value::Object(reference))
}

/// TokenReviewSpec: token (1), audiences (2).
fn token_review_spec(data: &[u8]) -> Option<Value> {
    let mut spec = Map::new();
    let mut audiences = Vec::new();
    for (n, f) in fields(data)? {
        match (n, f) {
            (1, Field::Bytes(b)) => _ = spec.insert("token".into(), json!(text(b)?)),
            (2, Field::Bytes(b)) => audiences.push(json!(text(b)?)),
            _ => {}
        }
    }
    if !audiences.is_empty() {
        spec.insert("audiences".into(), Value::Array(audiences));
    }
    Some(Value::Object(spec))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::apiserver::protobuf::test_field as field;

    #[test]
    fn token_request_from_kubectl_create_token() {
        let reference =
            [field(1, b"Pod"), field(2, b"v1"), field(3, b"p"), field(4, b"u1")].concat();
        // expirationSeconds 3600 = varint 0x90 0x1c.
        let spec = [field(1, b"api"), field(3, &reference), vec![4 << 3, 0x90, 0x1c]].concat();
        let raw = [field(1, &field(1, b"default")), field(2, &spec)].concat();
        let obj = decode(GROUP_VERSION, "TokenRequest", &raw).unwrap().unwrap();
        assert_eq!(
            obj,
            json!({"apiVersion": GROUP_VERSION, "kind": "TokenRequest", "metadata": {"name": "default"},
                   "spec": {"audiences": ["api"], "expirationSeconds": 3600,
                            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p", "uid": "u1"}}})
        );
        assert_eq!(decode(GROUP_VERSION, "TokenRequest", b"\x12\xff"), Some(None));
        assert_eq!(decode("v1", "TokenRequest", &raw), None);
        let review = decode(GROUP_VERSION, "TokenReview", &field(2, &field(1, b"t"))).unwrap();
        assert_eq!(review.unwrap()["spec"], json!({"token": "t"}));
    }
}
