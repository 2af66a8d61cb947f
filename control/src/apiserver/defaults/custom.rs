//! Structural-schema defaulting and pruning of custom objects, as the reference apiserver does
//! for CRDs: `default` values fill absent (or null, when not nullable) properties at every level,
//! and fields the schema does not declare are dropped unless
//! `x-kubernetes-preserve-unknown-fields` or `additionalProperties` allows them.

use serde_json::Value;

/// Fields of the root (and of embedded resources) that are never pruned.
const ROOT_FIELDS: &[&str] = &["apiVersion", "kind", "metadata"];

fn flag(schema: &Value, key: &str) -> bool {
    schema.get(key).and_then(Value::as_bool) == Some(true)
}

/// Fills in the defaults a CRD's structural schema declares.
pub fn apply_custom(schema: &Value, obj: &mut Value) {
    match obj {
        Value::Object(map) => {
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (name, sub) in properties {
                    let absent = match map.get(name) {
                        None => true,
                        // A null in a non-nullable field is replaced by the default.
                        Some(Value::Null) => !flag(sub, "nullable"),
                        Some(_) => false,
                    };
                    if absent {
                        if let Some(default) = sub.get("default") {
                            map.insert(name.clone(), default.clone());
                        }
                    }
                    if let Some(child) = map.get_mut(name) {
                        apply_custom(sub, child);
                    }
                }
            }
            if let Some(additional) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                let declared = schema.get("properties").and_then(Value::as_object);
                for (name, child) in map.iter_mut() {
                    if declared.is_none_or(|d| !d.contains_key(name)) {
                        apply_custom(additional, child);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items").filter(|s| s.is_object()) {
                for item in items {
                    apply_custom(item_schema, item);
                }
            }
        }
        _ => {}
    }
}

/// Drops fields the schema does not declare; returns their paths (e.g. `spec.foo`), which the
/// API server reports as unknown fields (`fieldValidation` Warn/Strict).
pub fn prune_custom(schema: &Value, obj: &mut Value) -> Vec<String> {
    let mut pruned = Vec::new();
    prune(schema, obj, "", true, &mut pruned);
    pruned
}

fn prune(schema: &Value, obj: &mut Value, path: &str, root: bool, pruned: &mut Vec<String>) {
    let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
    let embedded = root || flag(schema, "x-kubernetes-embedded-resource");
    match obj {
        Value::Object(map) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let additional_schema = additional.filter(|a| a.is_object());
            let additional_allowed =
                additional.is_some_and(|a| a.is_object() || a == &Value::Bool(true));
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let child_path =
                    if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                if embedded && ROOT_FIELDS.contains(&key.as_str()) {
                    continue;
                }
                let sub = properties.and_then(|p| p.get(&key)).or(additional_schema);
                match sub {
                    Some(sub) => {
                        if let Some(child) = map.get_mut(&key) {
                            prune(sub, child, &child_path, false, pruned);
                        }
                    }
                    None if preserve || additional_allowed => {}
                    None => {
                        map.remove(&key);
                        pruned.push(child_path);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items").filter(|s| s.is_object()) {
                for (i, item) in items.iter_mut().enumerate() {
                    prune(item_schema, item, &format!("{path}[{i}]"), false, pruned);
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

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "default": {}, "properties": {
                "replicas": {"type": "integer", "default": 1},
                "mode": {"type": "string", "default": "fast"},
                "note": {"type": "string", "nullable": true, "default": "n"},
                "ports": {"type": "array", "items": {"type": "object", "properties": {
                    "protocol": {"type": "string", "default": "TCP"},
                    "port": {"type": "integer"}}}},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}}}},
            "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}}}})
    }

    #[test]
    fn defaults_fill_absent_fields_at_every_level() {
        let mut obj = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"},
            "spec": {"mode": null, "note": null, "ports": [{"port": 80}]}});
        apply_custom(&schema(), &mut obj);
        assert_eq!(
            obj["spec"],
            json!({"replicas": 1, "mode": "fast", "note": null,
                   "ports": [{"port": 80, "protocol": "TCP"}]})
        );
        let mut empty = json!({"metadata": {"name": "b"}});
        apply_custom(&schema(), &mut empty);
        assert_eq!(empty["spec"], json!({"replicas": 1, "mode": "fast", "note": "n"}));
        // Wrong shapes are left for validation.
        let mut odd = json!({"spec": "x"});
        apply_custom(&schema(), &mut odd);
        assert_eq!(odd["spec"], "x");
    }

    #[test]
    fn pruning_drops_undeclared_fields_only() {
        let mut obj = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"},
            "spec": {"replicas": 2, "bogus": 1, "ports": [{"port": 80, "junk": true}],
                     "extra": {"anything": {"goes": 1}}, "labels": {"free": "form"}},
            "status": {"ready": true, "phase": "x"}, "top": 1});
        let pruned = prune_custom(&schema(), &mut obj);
        assert_eq!(pruned, ["spec.bogus", "spec.ports[0].junk", "status.phase", "top"]);
        assert_eq!(obj["spec"]["extra"], json!({"anything": {"goes": 1}}));
        assert_eq!(obj["spec"]["labels"], json!({"free": "form"}));
        assert_eq!(obj["metadata"], json!({"name": "a"}));
    }
}
