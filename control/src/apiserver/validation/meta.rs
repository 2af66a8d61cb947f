//! `ObjectMeta` validation (`ValidateObjectMeta`, `ValidateObjectMetaUpdate`): the name rule of
//! each kind, generateName, namespace, labels, annotations (with their 256 KiB total), finalizers,
//! owner references, and the metadata that may not change on update.

use serde_json::{json, Value};

use super::errors::Errors;
use super::names;
use crate::apiserver::resource::ResourceInfo;

/// Total size of all annotation keys and values (`TotalAnnotationSizeLimitB`).
const ANNOTATIONS_MAX_BYTES: usize = 256 * 1024;

/// Kinds with no name at all: requests that are answered, never stored.
const NAMELESS: &[&str] = &[
    "TokenReview",
    "SelfSubjectReview",
    "SubjectAccessReview",
    "SelfSubjectAccessReview",
    "LocalSubjectAccessReview",
    "SelfSubjectRulesReview",
];

/// Finalizers without a '/' that the reference accepts.
const STANDARD_FINALIZERS: &[&str] = &["kubernetes", "orphan", "foregroundDeletion"];

/// The name rule of a kind.
pub fn name_rule(info: &ResourceInfo) -> fn(&str) -> Vec<String> {
    if info.custom {
        return names::dns1123_subdomain;
    }
    match (info.group.as_str(), info.kind.as_str()) {
        ("", "Namespace") => names::dns1123_label,
        // Service names become DNS labels that must start with a letter.
        ("", "Service") => names::dns1035_label,
        ("rbac.authorization.k8s.io", _) => names::path_segment,
        _ => names::dns1123_subdomain,
    }
}

/// Checks the metadata of a new object.
pub fn validate_create(info: &ResourceInfo, obj: &Value, errs: &mut Errors) {
    let Some(meta) = obj.get("metadata").filter(|m| m.is_object()) else {
        if !NAMELESS.contains(&info.kind.as_str()) {
            errs.required("metadata.name", "name or generateName is required");
        }
        return;
    };
    if !NAMELESS.contains(&info.kind.as_str()) {
        validate_name(info, meta, errs);
    }
    validate_common(info, meta, errs);
}

fn validate_name(info: &ResourceInfo, meta: &Value, errs: &mut Errors) {
    let rule = name_rule(info);
    let name = meta.get("name");
    let generate_name = meta.get("generateName");
    match generate_name {
        Some(Value::String(g)) if !g.is_empty() => {
            for msg in rule(&names::mask_trailing_dash(g)) {
                errs.invalid_str("metadata.generateName", g, &msg);
            }
        }
        None | Some(Value::Null) | Some(Value::String(_)) => {}
        Some(other) => errs.invalid("metadata.generateName", other, "must be a string"),
    }
    match name {
        Some(Value::String(n)) if !n.is_empty() => {
            for msg in rule(n) {
                errs.invalid_str("metadata.name", n, &msg);
            }
        }
        None | Some(Value::Null) | Some(Value::String(_)) => {
            let has_generate = generate_name.and_then(Value::as_str).is_some_and(|g| !g.is_empty());
            if !has_generate {
                errs.required("metadata.name", "name or generateName is required");
            }
        }
        Some(other) => errs.invalid("metadata.name", other, "must be a string"),
    }
}

/// Checks shared by create and update: namespace, labels, annotations, finalizers, owners.
fn validate_common(info: &ResourceInfo, meta: &Value, errs: &mut Errors) {
    if info.namespaced && !NAMELESS.contains(&info.kind.as_str()) {
        match meta.get("namespace") {
            Some(Value::String(ns)) if !ns.is_empty() => {
                for msg in names::dns1123_label(ns) {
                    errs.invalid_str("metadata.namespace", ns, &msg);
                }
            }
            _ => errs.required("metadata.namespace", ""),
        }
    } else if meta.get("namespace").and_then(Value::as_str).is_some_and(|ns| !ns.is_empty()) {
        errs.forbidden("metadata.namespace", "not allowed on this type");
    }
    validate_labels(meta.get("labels"), "metadata.labels", errs);
    validate_annotations(meta.get("annotations"), "metadata.annotations", errs);
    validate_finalizers(meta.get("finalizers"), errs);
    validate_owner_references(meta.get("ownerReferences"), errs);
}

/// `ValidateLabels`: qualified-name keys and label values (errors on the map's path).
pub fn validate_labels(labels: Option<&Value>, field: &str, errs: &mut Errors) {
    let Some(labels) = labels.filter(|l| !l.is_null()) else { return };
    let Some(map) = labels.as_object() else {
        errs.invalid(field, labels, "must be a map of string keys to string values");
        return;
    };
    for (k, v) in map {
        for msg in names::qualified_name(k) {
            errs.invalid_str(field, k, &msg);
        }
        match v.as_str() {
            Some(value) => {
                for msg in names::label_value(value) {
                    errs.invalid_str(field, value, &msg);
                }
            }
            None => errs.invalid(field, v, "must be a string"),
        }
    }
}

/// `ValidateAnnotations`: lowercased qualified-name keys and a 256 KiB total.
fn validate_annotations(annotations: Option<&Value>, field: &str, errs: &mut Errors) {
    let Some(annotations) = annotations.filter(|a| !a.is_null()) else { return };
    let Some(map) = annotations.as_object() else {
        errs.invalid(field, annotations, "must be a map of string keys to string values");
        return;
    };
    let mut total = 0;
    for (k, v) in map {
        for msg in names::qualified_name(&k.to_lowercase()) {
            errs.invalid_str(field, k, &msg);
        }
        match v.as_str() {
            Some(value) => total += k.len() + value.len(),
            None => errs.invalid(field, v, "must be a string"),
        }
    }
    if total > ANNOTATIONS_MAX_BYTES {
        errs.too_long(field, ANNOTATIONS_MAX_BYTES);
    }
}

fn validate_finalizers(finalizers: Option<&Value>, errs: &mut Errors) {
    let Some(finalizers) = finalizers.filter(|f| !f.is_null()) else { return };
    let Some(list) = finalizers.as_array() else {
        errs.invalid("metadata.finalizers", finalizers, "must be a list of strings");
        return;
    };
    let mut seen = Vec::new();
    for (i, f) in list.iter().enumerate() {
        let field = format!("metadata.finalizers[{i}]");
        let Some(name) = f.as_str() else {
            errs.invalid(&field, f, "must be a string");
            continue;
        };
        for msg in names::qualified_name(name) {
            errs.invalid_str(&field, name, &msg);
        }
        if !name.contains('/') && !STANDARD_FINALIZERS.contains(&name) {
            errs.invalid_str(
                &field,
                name,
                "name is neither a standard finalizer name nor is it fully qualified",
            );
        }
        if seen.contains(&name) {
            errs.duplicate(&field, f);
        }
        seen.push(name);
    }
    if seen.contains(&"orphan") && seen.contains(&"foregroundDeletion") {
        errs.invalid(
            "metadata.finalizers",
            finalizers,
            "finalizer orphan and foregroundDeletion cannot be both set",
        );
    }
}

fn validate_owner_references(owners: Option<&Value>, errs: &mut Errors) {
    let Some(owners) = owners.filter(|o| !o.is_null()) else { return };
    let Some(list) = owners.as_array() else {
        errs.invalid("metadata.ownerReferences", owners, "must be a list");
        return;
    };
    let field = "metadata.ownerReferences";
    let mut controllers = 0;
    for owner in list {
        let text = |k: &str| owner.get(k).and_then(Value::as_str).unwrap_or("");
        if text("apiVersion").is_empty() {
            errs.invalid_str(&format!("{field}.apiVersion"), "", "version must not be empty");
        }
        if text("kind").is_empty() {
            errs.invalid_str(&format!("{field}.kind"), "", "kind must not be empty");
        }
        if text("name").is_empty() {
            errs.invalid_str(&format!("{field}.name"), "", "name must not be empty");
        }
        if text("uid").is_empty() {
            errs.invalid_str(&format!("{field}.uid"), "", "uid must not be empty");
        }
        if owner.get("controller").and_then(Value::as_bool) == Some(true) {
            controllers += 1;
        }
    }
    if controllers > 1 {
        errs.invalid(field, owners, "Only one reference can have Controller set to true");
    }
}

/// Checks the metadata of an update: the new metadata on its own, then what may not change.
pub fn validate_update(info: &ResourceInfo, old: &Value, new: &Value, errs: &mut Errors) {
    let Some(meta) = new.get("metadata").filter(|m| m.is_object()) else {
        errs.required("metadata", "");
        return;
    };
    validate_common(info, meta, errs);
    let old_meta = old.get("metadata").cloned().unwrap_or_else(|| json!({}));
    for key in ["name", "namespace", "uid", "creationTimestamp"] {
        let (before, after) = (old_meta.get(key), meta.get(key));
        if before.is_some_and(|b| !b.is_null()) && before != after {
            let shown = after.cloned().unwrap_or(Value::Null);
            errs.immutable(&format!("metadata.{key}"), &shown);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resource::Registry;

    fn info(group: &str, plural: &str) -> ResourceInfo {
        let all = Registry::builtin().all();
        (*all.into_iter().find(|r| r.group == group && r.plural == plural).unwrap()).clone()
    }

    fn create(group: &str, plural: &str, meta: Value) -> Vec<(String, String, String)> {
        let mut errs = Errors::default();
        validate_create(&info(group, plural), &json!({ "metadata": meta }), &mut errs);
        errs.triples()
    }

    #[test]
    fn names_follow_each_kinds_rule() {
        assert!(create("", "configmaps", json!({"name": "app.config", "namespace": "default"}))
            .is_empty());
        let errs = create("", "configmaps", json!({"name": "App_Config", "namespace": "default"}));
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].0, "FieldValueInvalid");
        assert_eq!(errs[0].1, "metadata.name");
        assert!(errs[0]
            .2
            .starts_with("Invalid value: \"App_Config\": a lowercase RFC 1123 subdomain"));
        // Namespaces are DNS labels: no dots.
        assert_eq!(create("", "namespaces", json!({"name": "a.b"})).len(), 1);
        // Services are DNS-1035 labels: must start with a letter.
        assert_eq!(create("", "services", json!({"name": "1web", "namespace": "d"})).len(), 1);
        // RBAC names are path segments: colons are fine, slashes are not.
        assert!(create("rbac.authorization.k8s.io", "clusterroles", json!({"name": "system:x"}))
            .is_empty());
        assert_eq!(
            create("rbac.authorization.k8s.io", "clusterroles", json!({"name": "a/b"}))[0].2,
            "Invalid value: \"a/b\": may not contain '/'"
        );
    }

    #[test]
    fn name_or_generate_name_is_required() {
        let errs = create("", "pods", json!({"namespace": "default"}));
        assert_eq!(
            errs,
            [(
                "FieldValueRequired".to_string(),
                "metadata.name".to_string(),
                "Required value: name or generateName is required".to_string()
            )]
        );
        assert!(create("", "pods", json!({"generateName": "web-", "namespace": "d"})).is_empty());
        let errs = create("", "pods", json!({"generateName": "Web-", "namespace": "d"}));
        assert_eq!(errs[0].1, "metadata.generateName");
        assert_eq!(create("", "pods", json!({"name": "p"}))[0].1, "metadata.namespace");
    }

    #[test]
    fn labels_annotations_and_finalizers() {
        let errs = create(
            "",
            "configmaps",
            json!({"name": "c", "namespace": "d",
                   "labels": {"app.kubernetes.io/name": "ok", "bad key": "v", "k": "bad value"},
                   "annotations": {"note": "x".repeat(300 * 1024)},
                   "finalizers": ["example.com/cleanup", "custom", "orphan", "orphan"]}),
        );
        let summary: Vec<(&str, &str)> =
            errs.iter().map(|(r, f, _)| (r.as_str(), f.as_str())).collect();
        assert_eq!(
            summary,
            [
                ("FieldValueInvalid", "metadata.labels"),
                ("FieldValueInvalid", "metadata.labels"),
                ("FieldValueTooLong", "metadata.annotations"),
                ("FieldValueInvalid", "metadata.finalizers[1]"),
                ("FieldValueDuplicate", "metadata.finalizers[3]"),
            ]
        );
        assert_eq!(errs[2].2, "Too long: may not be more than 262144 bytes");
    }

    #[test]
    fn name_and_namespace_are_immutable() {
        let old = json!({"metadata": {"name": "a", "namespace": "d", "uid": "1"}});
        let new = json!({"metadata": {"name": "b", "namespace": "d", "uid": "1"}});
        let mut errs = Errors::default();
        validate_update(&info("", "configmaps"), &old, &new, &mut errs);
        let causes = errs.into_result().unwrap_err();
        assert_eq!(causes[0].field, "metadata.name");
        assert_eq!(causes[0].message, "Invalid value: \"b\": field is immutable");
    }
}
