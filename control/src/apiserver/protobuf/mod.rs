//! Kubernetes protobuf bodies (`application/vnd.kubernetes.protobuf`) for every built-in kind,
//! transcoded to and from the JSON form the rest of the API server works on.
//!
//! A body is the magic `k8s\0` followed by a `runtime.Unknown`: the TypeMeta (apiVersion, kind)
//! and the object's own protobuf bytes. The message of an apiVersion/kind, its field numbers and
//! types come from the vendored v1.33 `generated.proto` descriptors ([`descriptors`]); the JSON
//! names, inlined structs and non-object JSON forms (times, quantities, int-or-strings, ...) from
//! [`mapping`]. Watches are length-delimited frames of raw `WatchEvent`s ([`stream`]), and
//! error `Status`es are protobuf too when the client prefers it. Custom resources have no
//! protobuf form: request bodies get the reference's 400 decoding error, responses answer the
//! client's next choice (JSON, which kubectl always offers second) or 406, as the reference's
//! CRD handler does. Watch events share one encoding per object across watchers
//! ([`watch_frame_of`], the watch cache's `CachedObject::protobuf`).

mod decode;
mod descriptors;
mod encode;
mod mapping;
mod stream;
#[cfg(test)]
mod tests;
mod wire;

pub use stream::{
    decode_watch_stream, is_watch_stream, watch_frame, watch_frame_of, WATCH_CONTENT_TYPE,
};

use serde_json::Value;

use super::status::ApiError;
use wire::Wire;

/// The protobuf content type.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The prefix of every protobuf body.
pub(crate) const MAGIC: &[u8] = b"k8s\0";

/// Whether objects of `apiVersion`/`kind` have a protobuf form (built-in kinds do; custom
/// resources do not).
pub fn supports(api_version: &str, kind: &str) -> bool {
    descriptors::registry().for_kind(api_version, kind).is_some()
}

/// Decodes a protobuf request body into the JSON form of the object (with `apiVersion` and
/// `kind` from the envelope). Malformed bodies and kinds without a message are 400.
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let malformed =
        |e: String| ApiError::bad_request(format!("the protobuf body is malformed: {e}"));
    let envelope =
        body.strip_prefix(MAGIC).ok_or_else(|| malformed("missing the k8s\\0 prefix".into()))?;
    let (api_version, kind, raw) = unwrap_envelope(envelope).map_err(malformed)?;
    let registry = descriptors::registry();
    let Some(message) = registry.for_kind(&api_version, &kind) else {
        return Err(no_protobuf_form(&api_version, &kind));
    };
    let mut obj = decode::message(registry, message, raw)
        .map_err(|e| malformed(format!("{api_version} {kind}: {e}")))?;
    let Some(map) = obj.as_object_mut() else {
        return Err(malformed(format!("{api_version} {kind} is not an object")));
    };
    map.insert("apiVersion".into(), Value::String(api_version));
    map.insert("kind".into(), Value::String(kind));
    Ok(obj)
}

/// The error for a well-formed body of a kind without a protobuf message (a custom resource).
///
/// The reference accepts the protobuf media type on custom resource endpoints too (its CRD
/// handler lists the protobuf serializer, for the Tables and PartialObjectMetadata it serves),
/// so such a body is not a 415: it gets as far as decoding, where the unstructured object it
/// would fill has no kind yet, and `transformDecodeError` makes that a 400 BadRequest
/// (apiserver `handlers/rest.go`, apiextensions-apiserver `crdserverscheme`). That is what
/// the reference answers with `fieldValidation=Ignore`; with the default (`Warn`) or `Strict`
/// the reference 1.33 panics instead (its CRD protobuf serializer has no strict variant) and
/// answers a plain-text 500, which is not worth copying.
fn no_protobuf_form(api_version: &str, kind: &str) -> ApiError {
    if kind.is_empty() {
        return ApiError::bad_request(format!(
            "the object provided is unrecognized: the protobuf envelope names no kind \
             (apiVersion {api_version:?})"
        ));
    }
    // The version part of a group/version, as Go's `schema.ParseGroupVersion` splits it.
    let version = api_version.rsplit_once('/').map_or(api_version, |(_, v)| v);
    ApiError::bad_request(format!(
        "{kind} in version {version:?} cannot be handled as a {kind}: \
         Object 'Kind' is missing in 'object has no kind field '"
    ))
}

/// The (apiVersion, kind, raw) of a `runtime.Unknown`.
fn unwrap_envelope(envelope: &[u8]) -> Result<(String, String, &[u8]), String> {
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (number, value) in wire::fields(envelope)? {
        match (number, value) {
            (1, Wire::Bytes(type_meta)) => {
                for (n, v) in wire::fields(type_meta)? {
                    let text = |b: &[u8]| {
                        String::from_utf8(b.to_vec()).map_err(|_| "TypeMeta is not UTF-8")
                    };
                    match (n, v) {
                        (1, Wire::Bytes(b)) => api_version = text(b)?,
                        (2, Wire::Bytes(b)) => kind = text(b)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(b)) => raw = b,
            // contentEncoding / contentType: always empty from Kubernetes clients.
            _ => {}
        }
    }
    Ok((api_version, kind, raw))
}

#[cfg(test)]
thread_local! {
    /// How many times this thread called [`encode`]: tests prove that watchers share one encoding.
    pub(crate) static ENCODED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Encodes a JSON object of a built-in kind as a protobuf body; `None` when its
/// `apiVersion`/`kind` has no protobuf message (custom resources, Tables) or the object does not
/// fit it, so the caller answers JSON instead.
pub fn encode(value: &Value) -> Option<Vec<u8>> {
    #[cfg(test)]
    ENCODED.with(|n| n.set(n.get() + 1));
    let api_version = value.get("apiVersion")?.as_str()?;
    let kind = value.get("kind")?.as_str()?;
    let registry = descriptors::registry();
    let message = registry.for_kind(api_version, kind)?;
    let raw = match encode::message(registry, message, value) {
        Ok(raw) => raw,
        Err(err) => {
            tracing::warn!("encoding {api_version} {kind} as protobuf: {err}; answering JSON");
            return None;
        }
    };
    let mut type_meta = Vec::new();
    wire::put_bytes_field(&mut type_meta, 1, api_version.as_bytes());
    wire::put_bytes_field(&mut type_meta, 2, kind.as_bytes());
    let mut out = MAGIC.to_vec();
    wire::put_bytes_field(&mut out, 1, &type_meta);
    wire::put_bytes_field(&mut out, 2, &raw);
    // Go writes the (empty) contentEncoding and contentType too.
    wire::put_bytes_field(&mut out, 3, b"");
    wire::put_bytes_field(&mut out, 4, b"");
    Some(out)
}
