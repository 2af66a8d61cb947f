//! Protobuf watch streams (`application/vnd.kubernetes.protobuf;stream=watch`), framed as the
//! reference apiserver frames them: each event is a 4-byte big-endian length followed by a
//! `meta.v1.WatchEvent` written by the *raw* protobuf serializer (no `k8s\0` prefix, no
//! `runtime.Unknown` around it: apimachinery's `LengthDelimitedFramer` with
//! `NewRawSerializer`). The event's `object` is a `runtime.RawExtension` whose bytes are the
//! object's ordinary protobuf body, envelope and all, so a client decodes it like any response.

use serde_json::Value;

use super::wire::{self, Wire};
use super::{decode, encode, CONTENT_TYPE};
use crate::apiserver::status::ApiError;

/// The content type of a protobuf watch stream.
pub const WATCH_CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf;stream=watch";

/// One framed watch event: `kind` (ADDED, MODIFIED, DELETED, BOOKMARK, ERROR) and `object`.
/// `Err` when the object has no protobuf form or does not fit its message.
pub fn watch_frame(kind: &str, object: &Value) -> Result<Vec<u8>, String> {
    let embedded = encode(object).ok_or_else(|| {
        let gvk = |k: &str| object.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        format!("{} {} has no protobuf form", gvk("apiVersion"), gvk("kind"))
    })?;
    watch_frame_of(kind, &embedded)
}

/// One framed watch event around an object's protobuf body already encoded ([`encode`]): the
/// watch cache encodes an object once and every protobuf watcher frames that same body.
pub fn watch_frame_of(kind: &str, embedded: &[u8]) -> Result<Vec<u8>, String> {
    let mut raw_extension = Vec::with_capacity(embedded.len() + 8);
    wire::put_bytes_field(&mut raw_extension, 1, embedded);
    let mut event = Vec::with_capacity(raw_extension.len() + kind.len() + 12);
    wire::put_bytes_field(&mut event, 1, kind.as_bytes());
    wire::put_bytes_field(&mut event, 2, &raw_extension);
    let len = u32::try_from(event.len()).map_err(|_| "a watch event over 4 GiB".to_string())?;
    let mut frame = Vec::with_capacity(event.len() + 4);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&event);
    Ok(frame)
}

/// Splits a protobuf watch stream into its events, each decoded to (type, JSON object), as a
/// client reads it. A truncated last frame or a malformed event is an error.
pub fn decode_watch_stream(mut stream: &[u8]) -> Result<Vec<(String, Value)>, ApiError> {
    let malformed = |e: String| ApiError::bad_request(format!("malformed watch stream: {e}"));
    let mut events = Vec::new();
    while !stream.is_empty() {
        let (head, rest) = stream
            .split_first_chunk::<4>()
            .ok_or_else(|| malformed("a truncated frame length".into()))?;
        let len = u32::from_be_bytes(*head) as usize;
        if rest.len() < len {
            return Err(malformed(format!("a frame of {len} bytes with {} left", rest.len())));
        }
        let (event, rest) = rest.split_at(len);
        stream = rest;
        let (mut kind, mut object) = (String::new(), None);
        for (number, value) in wire::fields(event).map_err(malformed)? {
            match (number, value) {
                (1, Wire::Bytes(b)) => {
                    kind = String::from_utf8(b.to_vec())
                        .map_err(|_| malformed("the event type is not UTF-8".into()))?
                }
                (2, Wire::Bytes(raw_extension)) => {
                    for (n, v) in wire::fields(raw_extension).map_err(malformed)? {
                        if let (1, Wire::Bytes(raw)) = (n, v) {
                            object = Some(decode(raw)?);
                        }
                    }
                }
                _ => {}
            }
        }
        let object = object.ok_or_else(|| malformed(format!("a {kind} event without object")))?;
        events.push((kind, object));
    }
    Ok(events)
}

/// Whether `content_type` is a protobuf watch stream (for clients of [`decode_watch_stream`]).
pub fn is_watch_stream(content_type: &str) -> bool {
    let mut parts = content_type.split(';').map(str::trim);
    parts.next().is_some_and(|base| base.eq_ignore_ascii_case(CONTENT_TYPE))
        && parts.any(|p| p.replace(' ', "") == "stream=watch")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn frames_are_a_big_endian_length_and_a_raw_watch_event() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
                         "metadata": {"name": "web", "resourceVersion": "12"}});
        let frame = watch_frame("ADDED", &pod).unwrap();
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4);
        // The event itself has no envelope: field 1 (tag 0x0a) is the type, straight away.
        assert_eq!(&frame[4..6], b"\x0a\x05");
        assert_eq!(&frame[6..11], b"ADDED");
        // Field 2 is the RawExtension, whose field 1 holds the pod's enveloped body.
        let fields = wire::fields(&frame[4..]).unwrap();
        let Some((2, Wire::Bytes(raw_extension))) = fields.get(1).copied() else {
            panic!("{fields:?}")
        };
        let Some((1, Wire::Bytes(embedded))) =
            wire::fields(raw_extension).unwrap().first().copied()
        else {
            panic!("no raw bytes")
        };
        assert_eq!(embedded, encode(&pod).unwrap().as_slice());
        assert!(embedded.starts_with(b"k8s\0"));
    }

    #[test]
    fn a_stream_of_events_decodes_back_including_bookmarks_and_errors() {
        let pod = |rv: &str| {
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "web", "namespace": "default", "resourceVersion": rv},
                   "spec": {"containers": [{"name": "c", "image": "nginx"}]}})
        };
        let bookmark = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {
            "resourceVersion": "9", "annotations": {"k8s.io/initial-events-end": "true"}}});
        let status = ApiError::gone("too old resource version: 1 (5)").to_status();
        let events = [
            ("ADDED", pod("5")),
            ("MODIFIED", pod("6")),
            ("DELETED", pod("7")),
            ("BOOKMARK", bookmark),
            ("ERROR", status.clone()),
        ];
        let mut stream = Vec::new();
        for (kind, object) in &events {
            stream.extend(watch_frame(kind, object).unwrap());
        }
        let decoded = decode_watch_stream(&stream).unwrap();
        let expected: Vec<(String, Value)> =
            events.iter().map(|(k, o)| (k.to_string(), o.clone())).collect();
        assert_eq!(decoded, expected);
        // The ERROR event's object is a meta.v1 Status with its code and reason.
        assert_eq!(decoded[4].1["code"], 410);
        assert_eq!(decoded[4].1["reason"], "Expired");
        // A stream cut inside a frame is an error, not a silently shorter list.
        assert!(decode_watch_stream(&stream[..stream.len() - 1]).is_err());
        assert!(decode_watch_stream(&stream[..2]).is_err());
    }

    #[test]
    fn custom_resources_have_no_frame() {
        let cr = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {}});
        assert!(watch_frame("ADDED", &cr).unwrap_err().contains("no protobuf form"));
        assert!(is_watch_stream("application/vnd.kubernetes.protobuf;stream=watch"));
        assert!(is_watch_stream("application/vnd.kubernetes.protobuf; stream=watch"));
        assert!(!is_watch_stream("application/vnd.kubernetes.protobuf"));
        assert!(!is_watch_stream("application/json;stream=watch"));
    }
}
