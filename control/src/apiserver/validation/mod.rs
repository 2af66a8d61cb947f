//! Validation of objects with the reference apiserver's rules and error shapes: each problem is
//! a [`StatusCause`] with the reference reason (`FieldValueRequired`, `FieldValueInvalid`, ...),
//! the reference message body (`Required value`, `Invalid value: "x": <detail>`) and the field
//! path (`spec.containers[0].image`), so a 422 reads exactly like the reference's.
//!
//! [`meta`] checks names, generateName, labels, annotations and the immutable metadata;
//! [`pod`] pod specs and pod updates; [`kinds`] the per-kind rules (workloads, services,
//! configmaps, secrets, RBAC, CRDs, ...); [`schema`] custom objects against their CRD's
//! structural schema. Objects are plain JSON from users, so every check copes with any shape.

mod errors;
mod job;
mod kinds;
mod meta;
mod names;
mod pod;
mod pvc;

pub(crate) use pod::VOLUME_SOURCES;
pub mod quantity;
mod schema;
mod workloads;

use serde_json::Value;

use super::resource::ResourceInfo;
pub use errors::Errors;

/// One reason an object is invalid, as in a Status's `details.causes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCause {
    /// e.g. `FieldValueRequired`.
    pub reason: String,
    /// The reference's message body, e.g. `Required value` or `Invalid value: "A": ...`.
    pub message: String,
    /// Field path, e.g. `spec.containers[0].image`.
    pub field: String,
}

/// Validates a new object.
pub fn validate_create(info: &ResourceInfo, obj: &Value) -> Result<(), Vec<StatusCause>> {
    let mut errs = Errors::default();
    meta::validate_create(info, obj, &mut errs);
    if info.custom {
        if let Some(schema) = &info.schema {
            schema::validate(schema, obj, &mut errs);
        }
    } else {
        kinds::validate(info, obj, &mut errs);
    }
    errs.into_result()
}

/// Validates an update of `old` to `new`: the new object on its own, then what may not change.
pub fn validate_update(
    info: &ResourceInfo,
    old: &Value,
    new: &Value,
) -> Result<(), Vec<StatusCause>> {
    let mut errs = Errors::default();
    meta::validate_update(info, old, new, &mut errs);
    if info.custom {
        if let Some(schema) = &info.schema {
            schema::validate(schema, new, &mut errs);
        }
    } else {
        kinds::validate(info, new, &mut errs);
        kinds::validate_update(info, old, new, &mut errs);
    }
    errs.into_result()
}

/// Validates an update through a subresource (`None` is the main resource): `pods/resize` may
/// change only container resources and resize policies, `pods/ephemeralcontainers` may only add
/// ephemeral containers; `status`, `scale` and the rest validate like a main-resource update.
pub fn validate_subresource_update(
    info: &ResourceInfo,
    subresource: Option<&str>,
    old: &Value,
    new: &Value,
) -> Result<(), Vec<StatusCause>> {
    let is_pod = info.group.is_empty() && info.kind == "Pod" && !info.custom;
    match subresource {
        Some(sub @ ("resize" | "ephemeralcontainers")) if is_pod => {
            let mut errs = Errors::default();
            meta::validate_update(info, old, new, &mut errs);
            kinds::validate(info, new, &mut errs);
            pod::validate_subresource_update(sub, old, new, &mut errs);
            errs.into_result()
        }
        _ => validate_update(info, old, new),
    }
}

/// Validates a custom object against a CRD's structural schema (`openAPIV3Schema`).
pub fn validate_custom(schema: &Value, obj: &Value) -> Result<(), Vec<StatusCause>> {
    let mut errs = Errors::default();
    schema::validate(schema, obj, &mut errs);
    errs.into_result()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resource::Registry;
    use serde_json::json;

    #[test]
    fn any_json_shape_is_validated_without_panicking() {
        let shapes = [
            json!(null),
            json!([1, 2]),
            json!({"metadata": "x", "spec": 3}),
            json!({"metadata": {"name": 1, "labels": [], "annotations": {"a": 1},
                                "finalizers": "f", "ownerReferences": {}},
                   "spec": {"containers": [1, {"ports": "p", "env": [null],
                            "resources": {"limits": [], "requests": {"cpu": {}}}}],
                            "selector": [], "template": {"spec": null}, "ports": [{"port": "x"}],
                            "rules": "r", "versions": [{"schema": {"openAPIV3Schema": 1}}],
                            "strategy": {"rollingUpdate": {"maxSurge": []}}},
                   "data": 5, "roleRef": 1, "subjects": [{}], "rules": [{"verbs": 1}]}),
        ];
        let registry = Registry::builtin();
        let crd = json!({"spec": {"group": "x.io", "scope": "Namespaced",
            "names": {"plural": "ws", "kind": "W"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                          "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                              "spec": {"type": "object", "required": ["a"]}}}}}]}});
        for info in ResourceInfo::from_crd(&crd).unwrap() {
            registry.insert(info);
        }
        for info in registry.all() {
            for old in &shapes {
                let _ = validate_create(&info, old);
                for new in &shapes {
                    let _ = validate_update(&info, old, new);
                }
            }
        }
        // And the broken shapes are reported, not accepted.
        let pods = registry.resolve("", "v1", "pods").unwrap();
        assert!(validate_create(&pods, &shapes[3]).is_err());
    }
}
