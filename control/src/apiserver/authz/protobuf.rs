//! Protobuf bodies of the authorization kinds kubectl sends that way: the access reviews
//! (`kubectl auth can-i`, `auth can-i --list`) and the RBAC objects of `kubectl create role`,
//! `clusterrole`, `rolebinding` and `clusterrolebinding`. Decoded into their JSON form by field
//! number (k8s.io/api `generated.proto`), on top of the envelope reader in `apiserver::protobuf`.

use serde_json::{json, Map, Value};

use crate::apiserver::protobuf::{fields, object_meta, text, Field};

/// The JSON form of an authorization or RBAC object: `None` when the kind is not one of them,
/// `Some(None)` when its bytes are malformed.
pub(crate) fn decode(api_version: &str, kind: &str, raw: &[u8]) -> Option<Option<Value>> {
    let body = match (api_version, kind) {
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => review(raw, access_spec),
        ("authorization.k8s.io/v1", "SubjectAccessReview" | "LocalSubjectAccessReview") => {
            review(raw, access_spec)
        }
        ("authorization.k8s.io/v1", "SelfSubjectRulesReview") => review(raw, rules_spec),
        ("rbac.authorization.k8s.io/v1", "Role" | "ClusterRole") => role(raw),
        ("rbac.authorization.k8s.io/v1", "RoleBinding" | "ClusterRoleBinding") => binding(raw),
        _ => return None,
    };
    Some(body.map(|mut obj| {
        obj["apiVersion"] = json!(api_version);
        obj["kind"] = json!(kind);
        obj
    }))
}

/// Puts a non-empty string field.
fn put(map: &mut Map<String, Value>, key: &str, data: &[u8]) -> Option<()> {
    let value = text(data)?;
    if !value.is_empty() {
        map.insert(key.into(), json!(value));
    }
    Some(())
}

/// Appends to a list field.
fn push(map: &mut Map<String, Value>, key: &str, value: Value) {
    if let Some(list) = map.entry(key).or_insert_with(|| json!([])).as_array_mut() {
        list.push(value);
    }
}

/// A message of string fields only, by field number.
fn strings(data: &[u8], names: &[(u64, &str)]) -> Option<Value> {
    let mut map = Map::new();
    for (n, f) in fields(data)? {
        if let (Some((_, name)), Field::Bytes(b)) = (names.iter().find(|(k, _)| *k == n), f) {
            put(&mut map, name, b)?;
        }
    }
    Some(Value::Object(map))
}

/// An object of `metadata` (1), `spec` (2) and an ignored `status` (3).
fn review(raw: &[u8], spec: fn(&[u8]) -> Option<Value>) -> Option<Value> {
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

const RESOURCE_ATTRIBUTES: &[(u64, &str)] = &[
    (1, "namespace"),
    (2, "verb"),
    (3, "group"),
    (4, "version"),
    (5, "resource"),
    (6, "subresource"),
    (7, "name"),
];

/// `SubjectAccessReviewSpec` (the self and local reviews use a prefix of its fields).
fn access_spec(data: &[u8]) -> Option<Value> {
    let mut spec = Map::new();
    for (n, f) in fields(data)? {
        match (n, f) {
            (1, Field::Bytes(b)) => {
                _ = spec.insert("resourceAttributes".into(), strings(b, RESOURCE_ATTRIBUTES)?)
            }
            (2, Field::Bytes(b)) => {
                let attrs = strings(b, &[(1, "path"), (2, "verb")])?;
                spec.insert("nonResourceAttributes".into(), attrs);
            }
            (3, Field::Bytes(b)) => put(&mut spec, "user", b)?,
            (4, Field::Bytes(b)) => push(&mut spec, "groups", json!(text(b)?)),
            (5, Field::Bytes(b)) => {
                let mut key = String::new();
                let mut values = Vec::new();
                for (n, f) in fields(b)? {
                    match (n, f) {
                        (1, Field::Bytes(k)) => key = text(k)?,
                        (2, Field::Bytes(v)) => {
                            for (n, f) in fields(v)? {
                                if let (1, Field::Bytes(item)) = (n, f) {
                                    values.push(json!(text(item)?));
                                }
                            }
                        }
                        _ => {}
                    }
                }
                let extra = spec.entry("extra").or_insert_with(|| json!({}));
                extra[key] = Value::Array(values);
            }
            (6, Field::Bytes(b)) => put(&mut spec, "uid", b)?,
            _ => {}
        }
    }
    Some(Value::Object(spec))
}

/// `SelfSubjectRulesReviewSpec`.
fn rules_spec(data: &[u8]) -> Option<Value> {
    strings(data, &[(1, "namespace")])
}

/// `PolicyRule`.
fn policy_rule(data: &[u8]) -> Option<Value> {
    let names = ["verbs", "apiGroups", "resources", "resourceNames", "nonResourceURLs"];
    let mut rule = Map::new();
    for (n, f) in fields(data)? {
        if let (1..=5, Field::Bytes(b)) = (n, f) {
            push(&mut rule, names[(n - 1) as usize], json!(text(b)?));
        }
    }
    Some(Value::Object(rule))
}

/// `LabelSelector`.
fn label_selector(data: &[u8]) -> Option<Value> {
    let mut selector = Map::new();
    for (n, f) in fields(data)? {
        match (n, f) {
            (1, Field::Bytes(b)) => {
                let entry = strings(b, &[(1, "key"), (2, "value")])?;
                let key = entry["key"].as_str().unwrap_or("").to_string();
                let value = entry.get("value").cloned().unwrap_or_else(|| json!(""));
                selector.entry("matchLabels").or_insert_with(|| json!({}))[key] = value;
            }
            (2, Field::Bytes(b)) => {
                let mut expr = Map::new();
                for (n, f) in fields(b)? {
                    match (n, f) {
                        (1, Field::Bytes(k)) => put(&mut expr, "key", k)?,
                        (2, Field::Bytes(o)) => put(&mut expr, "operator", o)?,
                        (3, Field::Bytes(v)) => push(&mut expr, "values", json!(text(v)?)),
                        _ => {}
                    }
                }
                push(&mut selector, "matchExpressions", Value::Object(expr));
            }
            _ => {}
        }
    }
    Some(Value::Object(selector))
}

/// `Role` and `ClusterRole`.
fn role(raw: &[u8]) -> Option<Value> {
    let mut obj = Map::new();
    obj.insert("rules".into(), json!([]));
    for (n, f) in fields(raw)? {
        match (n, f) {
            (1, Field::Bytes(b)) => _ = obj.insert("metadata".into(), object_meta(b)?),
            (2, Field::Bytes(b)) => push(&mut obj, "rules", policy_rule(b)?),
            (3, Field::Bytes(b)) => {
                let mut rule = json!({"clusterRoleSelectors": []});
                for (n, f) in fields(b)? {
                    if let (1, Field::Bytes(s)) = (n, f) {
                        if let Some(list) = rule["clusterRoleSelectors"].as_array_mut() {
                            list.push(label_selector(s)?);
                        }
                    }
                }
                obj.insert("aggregationRule".into(), rule);
            }
            _ => {}
        }
    }
    Some(Value::Object(obj))
}

/// `RoleBinding` and `ClusterRoleBinding`.
fn binding(raw: &[u8]) -> Option<Value> {
    let mut obj = Map::new();
    for (n, f) in fields(raw)? {
        match (n, f) {
            (1, Field::Bytes(b)) => _ = obj.insert("metadata".into(), object_meta(b)?),
            (2, Field::Bytes(b)) => {
                let subject =
                    strings(b, &[(1, "kind"), (2, "apiGroup"), (3, "name"), (4, "namespace")])?;
                push(&mut obj, "subjects", subject);
            }
            (3, Field::Bytes(b)) => {
                let role_ref = strings(b, &[(1, "apiGroup"), (2, "kind"), (3, "name")])?;
                obj.insert("roleRef".into(), role_ref);
            }
            _ => {}
        }
    }
    Some(Value::Object(obj))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::apiserver::protobuf::test_field as field;

    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let type_meta = [field(1, api_version.as_bytes()), field(2, kind.as_bytes())].concat();
        [b"k8s\0".to_vec(), field(1, &type_meta), field(2, raw)].concat()
    }

    #[test]
    fn self_subject_access_review_as_kubectl_sends_it() {
        // `kubectl auth can-i list pods` (v1.32), empty strings included as proto2 sends them.
        let attrs = [
            field(1, b"default"),
            field(2, b"list"),
            field(3, b""),
            field(4, b""),
            field(5, b"pods"),
            field(6, b""),
            field(7, b""),
        ]
        .concat();
        let raw = [field(1, &[]), field(2, &field(1, &attrs))].concat();
        let body = envelope("authorization.k8s.io/v1", "SelfSubjectAccessReview", &raw);
        let obj = crate::apiserver::protobuf::decode(&body).unwrap();
        assert_eq!(obj["kind"], "SelfSubjectAccessReview");
        assert_eq!(
            obj["spec"]["resourceAttributes"],
            json!({"namespace": "default", "verb": "list", "resource": "pods"})
        );
    }

    #[test]
    fn role_binding_and_role_from_kubectl_create() {
        let subject =
            [field(1, b"User"), field(2, b"rbac.authorization.k8s.io"), field(3, b"alice")]
                .concat();
        let role_ref =
            [field(1, b"rbac.authorization.k8s.io"), field(2, b"ClusterRole"), field(3, b"view")]
                .concat();
        let raw =
            [field(1, &field(1, b"alice-view")), field(2, &subject), field(3, &role_ref)].concat();
        let body = envelope("rbac.authorization.k8s.io/v1", "RoleBinding", &raw);
        let obj = crate::apiserver::protobuf::decode(&body).unwrap();
        assert_eq!(obj["metadata"]["name"], "alice-view");
        assert_eq!(obj["subjects"][0]["name"], "alice");
        assert_eq!(obj["roleRef"]["kind"], "ClusterRole");

        let rule = [field(1, b"get"), field(1, b"list"), field(2, b""), field(3, b"pods")].concat();
        let raw = [field(1, &field(1, b"reader")), field(2, &rule)].concat();
        let body = envelope("rbac.authorization.k8s.io/v1", "Role", &raw);
        let obj = crate::apiserver::protobuf::decode(&body).unwrap();
        assert_eq!(
            obj["rules"],
            json!([{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}])
        );
        let broken = envelope("rbac.authorization.k8s.io/v1", "Role", b"\x12\xff");
        assert_eq!(crate::apiserver::protobuf::decode(&broken).unwrap_err().code, 400);
    }
}
