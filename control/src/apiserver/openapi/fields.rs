//! Unknown fields of a built-in object, found (and dropped) by walking it against its OpenAPI schema: the
//! server side of `fieldValidation=Strict|Warn` (the reference finds them while decoding into
//! the Go type; the schemas are generated from the same types). Paths are spelled like the
//! reference's strict decoding errors: `spec.template.spec.containers[0].foo`.

use std::cell::RefCell;
use std::collections::HashSet;

use serde_json::{Map, Value};

use super::catalogue::{self, ref_name};

/// Removes the unknown fields of an object of a built-in kind (the reference drops them while
/// decoding into the Go type) and returns their paths; `None` when the kind has no schema.
pub fn prune_unknown(
    group: &str,
    version: &str,
    kind: &str,
    object: &mut Value,
) -> Option<Vec<String>> {
    let catalogue = catalogue::builtin();
    let root = catalogue.kind(group, version, kind).and_then(|n| catalogue.schemas.get(n))?;
    let mut out = Vec::new();
    walk(&catalogue.schemas, root, object, "", &mut out);
    Some(out)
}

/// The fields given more than once in a JSON object body (`spec.replicas` twice), which the
/// reference reports as `duplicate field "spec.replicas"`; empty for malformed JSON (the decoder
/// reports that).
pub fn duplicate_fields(json: &[u8]) -> Vec<String> {
    let found = RefCell::new(Vec::new());
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let finder = DuplicateFinder { path: String::new(), found: &found };
    if serde::de::DeserializeSeed::deserialize(finder, &mut deserializer).is_err() {
        return Vec::new();
    }
    found.into_inner()
}

/// Walks a JSON document with serde, remembering the keys of each object.
struct DuplicateFinder<'a> {
    path: String,
    found: &'a RefCell<Vec<String>>,
}

impl<'de> serde::de::DeserializeSeed<'de> for DuplicateFinder<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for DuplicateFinder<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = join(&self.path, &key);
            if !seen.insert(key) {
                self.found.borrow_mut().push(path.clone());
            }
            map.next_value_seed(DuplicateFinder { path, found: self.found })?;
        }
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        loop {
            let path = format!("{}[{i}]", self.path);
            if seq.next_element_seed(DuplicateFinder { path, found: self.found })?.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

/// Follows references (`$ref`, a single-entry `allOf`) to the schema that describes a value.
fn resolve<'a>(schemas: &'a Map<String, Value>, mut schema: &'a Value) -> &'a Value {
    // Bounded: a reference cycle without structure in between cannot describe a value.
    for _ in 0..16 {
        match ref_name(schema).and_then(|name| schemas.get(name)) {
            Some(next) => schema = next,
            None => break,
        }
    }
    schema
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

fn walk(
    schemas: &Map<String, Value>,
    schema: &Value,
    value: &mut Value,
    path: &str,
    out: &mut Vec<String>,
) {
    let schema = resolve(schemas, schema);
    if schema.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool) == Some(true) {
        return;
    }
    match value {
        Value::Object(fields) => {
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                fields.retain(|name, v| match properties.get(name) {
                    Some(property) => {
                        walk(schemas, property, v, &join(path, name), out);
                        true
                    }
                    None => {
                        out.push(join(path, name));
                        false
                    }
                });
            } else if let Some(values) =
                schema.get("additionalProperties").filter(|s| s.is_object())
            {
                for (name, v) in fields.iter_mut() {
                    walk(schemas, values, v, &join(path, name), out);
                }
            }
        }
        Value::Array(items) => {
            if let Some(element) = schema.get("items").filter(|s| s.is_object()) {
                for (i, v) in items.iter_mut().enumerate() {
                    walk(schemas, element, v, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_unknown_fields_are_reported_with_their_paths() {
        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}, "colour": "red"},
            "spec": {
                "replicas": 1, "foo": true,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                    {"name": "c", "image": "busybox", "resources": {"limits": {"cpu": "1"}},
                     "ports": [{"containerPort": 80, "bogus": 1}]}]}}
            }
        });
        let mut pruned = deployment.clone();
        let mut unknown = prune_unknown("apps", "v1", "Deployment", &mut pruned).unwrap();
        unknown.sort();
        assert_eq!(
            unknown,
            ["metadata.colour", "spec.foo", "spec.template.spec.containers[0].ports[0].bogus"]
        );
        // The unknown fields are dropped; everything else is kept.
        assert!(pruned["spec"].get("foo").is_none());
        assert_eq!(
            pruned["spec"]["template"]["spec"]["containers"][0]["ports"][0],
            json!({"containerPort": 80})
        );
        assert_eq!(
            pruned["spec"]["template"]["spec"]["containers"][0]["resources"],
            deployment["spec"]["template"]["spec"]["containers"][0]["resources"]
        );
    }

    #[test]
    fn duplicate_fields_are_found_at_any_depth() {
        let body = br#"{"spec": {"replicas": 1, "replicas": 2,
            "template": {"spec": {"containers": [{"name": "a", "image": "x", "image": "y"}]}}}}"#;
        assert_eq!(
            duplicate_fields(body),
            ["spec.replicas", "spec.template.spec.containers[0].image"]
        );
        assert!(duplicate_fields(br#"{"a": 1, "b": {"a": 1}}"#).is_empty());
        assert!(duplicate_fields(b"{not json").is_empty());
    }

    #[test]
    fn free_form_fields_and_unknown_kinds_report_nothing() {
        // ConfigMap data is a map of strings; a CRD's openAPIV3Schema is a JSONSchemaProps.
        let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"anything": "x"}});
        assert_eq!(prune_unknown("", "v1", "ConfigMap", &mut cm), Some(vec![]));
        assert_eq!(prune_unknown("example.com", "v1", "Widget", &mut json!({"x": 1})), None);
    }
}
