//! Custom objects against their CRD's structural schema (an OpenAPI v3 subset): types
//! (with `nullable`, `x-kubernetes-int-or-string`, `x-kubernetes-preserve-unknown-fields`),
//! `required`, `enum`, numeric bounds, string lengths, item and property counts, and set/map
//! list uniqueness, with the reference's messages (`spec.replicas in body must be of type
//! integer`). `pattern` and `format` are not checked (no regex engine in the control plane).
//! Also the structural checks on a CRD's own schema.

use serde_json::{json, Value};

use super::errors::Errors;

/// Fields every object has that the schema need not declare.
const ROOT_FIELDS: &[&str] = &["apiVersion", "kind", "metadata"];

/// Validates a custom object against its `openAPIV3Schema`.
pub fn validate(schema: &Value, obj: &Value, errs: &mut Errors) {
    let Some(map) = obj.as_object() else {
        errs.type_invalid("", &json!(type_name(obj)), "must be of type object");
        return;
    };
    let properties = schema.get("properties").and_then(Value::as_object);
    for name in required(schema) {
        if !ROOT_FIELDS.contains(&name) && map.get(name).is_none_or(Value::is_null) {
            errs.required(name, "");
        }
    }
    for (key, value) in map {
        if ROOT_FIELDS.contains(&key.as_str()) {
            continue;
        }
        if let Some(sub) = properties.and_then(|p| p.get(key)) {
            check(sub, value, key, errs);
        }
    }
}

fn required(schema: &Value) -> Vec<&str> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn flag(schema: &Value, key: &str) -> bool {
    schema.get(key).and_then(Value::as_bool) == Some(true)
}

/// Checks `value` at `path` against `schema`.
fn check(schema: &Value, value: &Value, path: &str, errs: &mut Errors) {
    if value.is_null() {
        if !flag(schema, "nullable") {
            errs.type_invalid(
                path,
                &json!("null"),
                &format!(
                    "{path} in body must be of type {}: \"null\"",
                    schema.get("type").and_then(Value::as_str).unwrap_or("object")
                ),
            );
        }
        return;
    }
    let actual = type_name(value);
    let int_or_string = flag(schema, "x-kubernetes-int-or-string");
    let wanted = schema.get("type").and_then(Value::as_str).unwrap_or("");
    let type_ok = if int_or_string {
        matches!(actual, "integer" | "string")
    } else {
        match wanted {
            "" => true,
            // An integral float (e.g. 2.0 after a YAML round trip) is an integer.
            "integer" => actual == "integer" || value.as_f64().is_some_and(|f| f.fract() == 0.0),
            "number" => matches!(actual, "integer" | "number"),
            other => actual == other,
        }
    };
    if !type_ok {
        let wanted = if int_or_string { "integer-or-string" } else { wanted };
        let message = format!("{path} in body must be of type {wanted}: \"{actual}\"");
        errs.type_invalid(path, &json!(actual), &message);
        return;
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        if !options.contains(value) {
            let shown: Vec<String> = options
                .iter()
                .map(|o| o.as_str().map(str::to_string).unwrap_or_else(|| o.to_string()))
                .collect();
            let refs: Vec<&str> = shown.iter().map(String::as_str).collect();
            errs.not_supported(path, value, &refs);
        }
    }
    match value {
        Value::Number(_) => check_number(schema, value, path, errs),
        Value::String(s) => check_string(schema, s, path, errs),
        Value::Array(items) => check_array(schema, items, path, errs),
        Value::Object(_) => check_object(schema, value, path, errs),
        _ => {}
    }
}

fn check_number(schema: &Value, value: &Value, path: &str, errs: &mut Errors) {
    let Some(n) = value.as_f64() else { return };
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
        let exclusive = flag(schema, "exclusiveMaximum");
        if n > max || (exclusive && n == max) {
            let relation = if exclusive { "less than" } else { "less than or equal to" };
            errs.invalid(path, value, &format!("{path} in body should be {relation} {}", num(max)));
        }
    }
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
        let exclusive = flag(schema, "exclusiveMinimum");
        if n < min || (exclusive && n == min) {
            let relation = if exclusive { "greater than" } else { "greater than or equal to" };
            errs.invalid(path, value, &format!("{path} in body should be {relation} {}", num(min)));
        }
    }
    if let Some(m) = schema.get("multipleOf").and_then(Value::as_f64).filter(|m| *m > 0.0) {
        if (n / m).fract().abs() > 1e-9 {
            errs.invalid(
                path,
                value,
                &format!("{path} in body should be a multiple of {}", num(m)),
            );
        }
    }
}

/// A bound as Go prints it: no trailing `.0` for integral values.
fn num(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        f.to_string()
    }
}

fn check_string(schema: &Value, s: &str, path: &str, errs: &mut Errors) {
    let chars = s.chars().count();
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
        if chars as u64 > max {
            errs.too_long(path, max as usize);
        }
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
        if (chars as u64) < min {
            errs.invalid_str(
                path,
                s,
                &format!("{path} in body should be at least {min} chars long"),
            );
        }
    }
}

fn check_array(schema: &Value, items: &[Value], path: &str, errs: &mut Errors) {
    if let Some(max) = schema.get("maxItems").and_then(Value::as_u64) {
        if items.len() as u64 > max {
            errs.too_many(path, items.len(), max as usize);
        }
    }
    if let Some(min) = schema.get("minItems").and_then(Value::as_u64) {
        if (items.len() as u64) < min {
            errs.invalid(
                path,
                &json!(items.len()),
                &format!("{path} in body should have at least {min} items"),
            );
        }
    }
    let list_type = schema.get("x-kubernetes-list-type").and_then(Value::as_str);
    if flag(schema, "uniqueItems") || list_type == Some("set") {
        for (i, item) in items.iter().enumerate() {
            if items[..i].contains(item) {
                errs.duplicate(&format!("{path}[{i}]"), item);
            }
        }
    }
    if list_type == Some("map") {
        let keys: Vec<&str> = schema
            .get("x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
            .map(|k| k.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let key_of = |item: &Value| keys.iter().map(|k| item.get(*k).cloned()).collect::<Vec<_>>();
        for (i, item) in items.iter().enumerate() {
            let key = key_of(item);
            if items[..i].iter().any(|earlier| key_of(earlier) == key) {
                let shown: serde_json::Map<String, Value> = keys
                    .iter()
                    .zip(&key)
                    .filter_map(|(k, v)| v.clone().map(|v| (k.to_string(), v)))
                    .collect();
                errs.duplicate(&format!("{path}[{i}]"), &Value::Object(shown));
            }
        }
    }
    if let Some(item_schema) = schema.get("items").filter(|s| s.is_object()) {
        for (i, item) in items.iter().enumerate() {
            check(item_schema, item, &format!("{path}[{i}]"), errs);
        }
    }
}

fn check_object(schema: &Value, value: &Value, path: &str, errs: &mut Errors) {
    let Some(map) = value.as_object() else { return };
    for name in required(schema) {
        if map.get(name).is_none_or(Value::is_null) {
            errs.required(&format!("{path}.{name}"), "");
        }
    }
    if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64) {
        if map.len() as u64 > max {
            errs.too_many(path, map.len(), max as usize);
        }
    }
    if let Some(min) = schema.get("minProperties").and_then(Value::as_u64) {
        if (map.len() as u64) < min {
            errs.invalid(
                path,
                &json!(map.len()),
                &format!("{path} in body should have at least {min} properties"),
            );
        }
    }
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    for (key, child) in map {
        let child_path = format!("{path}.{key}");
        match properties.and_then(|p| p.get(key)) {
            Some(sub) => check(sub, child, &child_path, errs),
            None => {
                if let Some(sub) = additional {
                    check(sub, child, &child_path, errs);
                }
            }
        }
    }
}

/// Structural checks on a CRD version's schema: the root is an object, and every declared
/// property has a type (unless int-or-string or preserving unknown fields).
pub fn validate_structural(schema: &Value, path: &str, errs: &mut Errors) {
    match schema.get("type").and_then(Value::as_str) {
        None | Some("") => errs.required(&format!("{path}.type"), "must not be empty at the root"),
        Some("object") => {}
        Some(other) => {
            errs.invalid_str(&format!("{path}.type"), other, "must be object at the root")
        }
    }
    check_property_types(schema, path, errs);
}

fn check_property_types(schema: &Value, path: &str, errs: &mut Errors) {
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (name, sub) in properties {
            let sub_path = format!("{path}.properties[{name}]");
            let typed = sub.get("type").and_then(Value::as_str).is_some_and(|t| !t.is_empty());
            let exempt = flag(sub, "x-kubernetes-int-or-string")
                || flag(sub, "x-kubernetes-preserve-unknown-fields");
            if !typed && !exempt {
                errs.required(
                    &format!("{sub_path}.type"),
                    "must not be empty for specified object fields",
                );
            }
            check_property_types(sub, &sub_path, errs);
        }
    }
    if let Some(items) = schema.get("items").filter(|i| i.is_object()) {
        let items_path = format!("{path}.items");
        let typed = items.get("type").and_then(Value::as_str).is_some_and(|t| !t.is_empty());
        let exempt = flag(items, "x-kubernetes-int-or-string")
            || flag(items, "x-kubernetes-preserve-unknown-fields");
        if !typed && !exempt {
            errs.required(
                &format!("{items_path}.type"),
                "must not be empty for specified array items",
            );
        }
        check_property_types(items, &items_path, errs);
    }
    if let Some(additional) = schema.get("additionalProperties").filter(|a| a.is_object()) {
        check_property_types(additional, &format!("{path}.additionalProperties"), errs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Value {
        json!({"type": "object", "required": ["spec"], "properties": {
            "spec": {"type": "object", "required": ["cronSpec"], "properties": {
                "cronSpec": {"type": "string", "minLength": 1, "maxLength": 20},
                "replicas": {"type": "integer", "minimum": 1, "maximum": 10},
                "mode": {"type": "string", "enum": ["fast", "slow"]},
                "port": {"x-kubernetes-int-or-string": true},
                "tags": {"type": "array", "maxItems": 2, "x-kubernetes-list-type": "set",
                         "items": {"type": "string"}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "note": {"type": "string", "nullable": true}}}}})
    }

    fn causes(obj: Value) -> Vec<(String, String, String)> {
        let mut errs = Errors::default();
        validate(&schema(), &obj, &mut errs);
        errs.triples()
    }

    #[test]
    fn valid_object_passes() {
        let obj = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"},
            "spec": {"cronSpec": "* * * * */5", "replicas": 3, "mode": "fast", "port": "http",
                     "tags": ["a", "b"], "labels": {"k": "v"}, "note": null}});
        assert!(causes(obj).is_empty());
    }

    #[test]
    fn reference_messages_for_schema_violations() {
        assert_eq!(
            causes(json!({"metadata": {}})),
            [("FieldValueRequired".into(), "spec".into(), "Required value".into())]
        );
        let errs = causes(json!({"spec": {"replicas": "three", "mode": "medium", "port": 1.5,
            "tags": ["a", "a", "b"], "labels": {"k": 1}}}));
        let summary: Vec<(&str, &str)> =
            errs.iter().map(|(r, f, _)| (r.as_str(), f.as_str())).collect();
        assert_eq!(
            summary,
            [
                ("FieldValueRequired", "spec.cronSpec"),
                ("FieldValueTypeInvalid", "spec.labels.k"),
                ("FieldValueNotSupported", "spec.mode"),
                ("FieldValueTypeInvalid", "spec.port"),
                ("FieldValueTypeInvalid", "spec.replicas"),
                ("FieldValueTooMany", "spec.tags"),
                ("FieldValueDuplicate", "spec.tags[1]"),
            ]
        );
        assert_eq!(
            errs[4].2,
            "Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\""
        );
        let errs = causes(json!({"spec": {"cronSpec": "", "replicas": 11}}));
        assert_eq!(
            errs[0].2,
            "Invalid value: \"\": spec.cronSpec in body should be at least 1 chars long"
        );
        assert_eq!(
            errs[1].2,
            "Invalid value: 11: spec.replicas in body should be less than or equal to 10"
        );
    }

    #[test]
    fn crd_schemas_must_be_structural() {
        let mut errs = Errors::default();
        validate_structural(
            &json!({"type": "object", "properties": {"spec": {"properties": {
            "a": {"type": "string"}, "b": {"x-kubernetes-int-or-string": true}}}}}),
            "s",
            &mut errs,
        );
        let causes = errs.into_result().unwrap_err();
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "s.properties[spec].type");
        let mut errs = Errors::default();
        validate_structural(&json!({"type": "string"}), "s", &mut errs);
        assert_eq!(
            errs.into_result().unwrap_err()[0].message,
            "Invalid value: \"string\": must be object at the root"
        );
    }
}
