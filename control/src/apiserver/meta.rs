//! Object metadata the server owns: uid, creationTimestamp, generation, resourceVersion,
//! generateName; plus the encoding of objects to and from their stored form.
//!
//! Objects are stored as JSON without `metadata.resourceVersion`: the store's mod revision is the
//! resourceVersion, and it is put back on every read (as the reference apiserver does).

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

use crate::store::{KeyValue, Revision};

/// `metadata` of an object, created when missing; `None` when the object is not a JSON object.
pub fn metadata_mut(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    let map = obj.as_object_mut()?;
    let meta = map.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut()
}

/// A string field of `metadata`.
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

/// Sets `metadata.<field>` (creating `metadata`).
pub fn set_meta(obj: &mut Value, field: &str, value: Value) {
    if let Some(meta) = metadata_mut(obj) {
        meta.insert(field.to_string(), value);
    }
}

/// Removes `metadata.<field>`.
pub fn remove_meta(obj: &mut Value, field: &str) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove(field);
    }
}

/// The object's finalizers.
pub fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(String::from).collect())
        .unwrap_or_default()
}

/// The current time as RFC 3339 in UTC, to the second (`metav1.Time`).
pub fn now_rfc3339() -> String {
    rfc3339(std::time::SystemTime::now())
}

/// A time as RFC 3339 in UTC, to the second.
pub fn rfc3339(at: std::time::SystemTime) -> String {
    let secs = at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    super::table::format::format_time(secs)
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // The OS RNG does not fail on Linux; zeros would still be a well-formed (if poor) value.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    bytes
}

/// A random UUID (v4), for `metadata.uid`.
pub fn new_uid() -> String {
    let mut b: [u8; 16] = random_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The reference's `generateName` suffix: 5 characters without vowels or look-alikes.
pub fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    random_bytes::<5>().iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect()
}

/// Encodes an object for the store (without its resourceVersion), serialising it in place: a
/// copy of the whole object just to drop one field cost a deep clone per write.
pub fn encode(obj: &Value) -> Vec<u8> {
    serde_json::to_vec(&Stored(obj)).unwrap_or_default()
}

/// An object as stored: `metadata.resourceVersion` left out.
struct Stored<'a>(&'a Value);

impl Serialize for Stored<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Some(map) = self.0.as_object() else { return self.0.serialize(serializer) };
        let mut out = serializer.serialize_map(Some(map.len()))?;
        for (key, value) in map {
            match value.as_object() {
                Some(meta) if key == "metadata" => {
                    out.serialize_entry(key, &WithoutVersion(meta))?
                }
                _ => out.serialize_entry(key, value)?,
            }
        }
        out.end()
    }
}

/// A `metadata` map without `resourceVersion`.
struct WithoutVersion<'a>(&'a Map<String, Value>);

impl Serialize for WithoutVersion<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fields = self.0.iter().filter(|(key, _)| key.as_str() != "resourceVersion");
        serializer.collect_map(fields)
    }
}

/// Decodes a stored object and sets its resourceVersion to the key's mod revision.
pub fn decode(kv: &KeyValue) -> Option<Value> {
    let mut obj: Value = serde_json::from_slice(&kv.value).ok()?;
    set_resource_version(&mut obj, kv.mod_revision);
    Some(obj)
}

/// Sets `metadata.resourceVersion`.
pub fn set_resource_version(obj: &mut Value, rev: Revision) {
    set_meta(obj, "resourceVersion", Value::String(rev.to_string()));
}

/// Parses a resourceVersion; empty = `None`, malformed = `Err`.
pub fn parse_resource_version(rv: Option<&str>) -> Result<Option<Revision>, String> {
    match rv {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse::<Revision>()
            .ok()
            .filter(|r| *r >= 0)
            .map(Some)
            .ok_or_else(|| format!("invalid resource version: {s:?}")),
    }
}

/// The object without metadata and status: what `generation` counts changes of.
pub fn spec_part(obj: &Value) -> Value {
    let mut copy = obj.clone();
    if let Some(map) = copy.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    copy
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_and_ids() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_709_251_199);
        assert_eq!(rfc3339(t), "2024-02-29T23:59:59Z");
        assert_eq!(rfc3339(std::time::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let uid = new_uid();
        assert_eq!(uid.len(), 36);
        assert_eq!(&uid[14..15], "4");
        assert_ne!(uid, new_uid());
        assert_eq!(name_suffix().len(), 5);
        assert_eq!(parse_resource_version(Some("12")), Ok(Some(12)));
        assert!(parse_resource_version(Some("abc")).is_err());
    }

    #[test]
    fn encode_leaves_out_the_resource_version_only() {
        let obj = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "resourceVersion": "12", "labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "resourceVersion": "kept"}]}});
        let stored: Value = serde_json::from_slice(&encode(&obj)).expect("JSON");
        let mut expected = obj.clone();
        remove_meta(&mut expected, "resourceVersion");
        assert_eq!(stored, expected);
        assert_eq!(encode(&serde_json::json!([1])), b"[1]");
        let no_meta = serde_json::json!({"metadata": "odd", "x": 1});
        assert_eq!(serde_json::from_slice::<Value>(&encode(&no_meta)).expect("JSON"), no_meta);
    }
}
