//! Per-kind rules for what a write may change, as the reference apiserver's "strategies":
//! the server-owned metadata on create, the spec/status split between the main resource and its
//! `/status` subresource, `generation` bumps on spec changes, and the initial status of pods and
//! namespaces.

use serde_json::{json, Map, Value};

use super::meta;
use super::resource::ResourceInfo;

/// Metadata fields the server owns: kept from the stored object on every update.
const SERVER_OWNED: [&str; 5] =
    ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"];

/// Every `ObjectMeta` field (others are unknown fields for `fieldValidation`).
pub const OBJECT_META_FIELDS: [&str; 15] = [
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

fn has_status_subresource(info: &ResourceInfo) -> bool {
    info.subresources.iter().any(|s| s == "status")
}

/// Whether the kind tracks `metadata.generation` (it has a spec, or is a custom resource).
fn tracks_generation(info: &ResourceInfo, obj: &Value) -> bool {
    info.custom || obj.get("spec").is_some()
}

/// Sets `apiVersion` and `kind` to the served resource's (objects are stored per storage prefix
/// and may be read through another group version, e.g. core and events.k8s.io Events).
pub fn present(info: &ResourceInfo, obj: &mut Value) {
    if let Some(map) = obj.as_object_mut() {
        map.insert("apiVersion".into(), json!(info.api_version()));
        map.insert("kind".into(), json!(info.kind));
    }
}

/// A new CertificateSigningRequest records who asked, whatever the body says (the reference's
/// CSR strategy): approvers and signers decide by `spec.username` and `spec.groups`.
pub fn set_requester(info: &ResourceInfo, obj: &mut Value, user: &crate::apiserver::authn::User) {
    if info.group != "certificates.k8s.io" || info.kind != "CertificateSigningRequest" {
        return;
    }
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("username".into(), json!(user.name));
        spec.insert("groups".into(), json!(user.groups));
        spec.remove("extra");
        if user.uid.is_empty() {
            spec.remove("uid");
        } else {
            spec.insert("uid".into(), json!(user.uid));
        }
    }
}

/// Fills the server-owned fields of a new object and resets what clients may not set.
pub fn prepare_create(info: &ResourceInfo, obj: &mut Value) {
    meta::set_meta(obj, "uid", json!(meta::new_uid()));
    meta::set_meta(obj, "creationTimestamp", json!(meta::now_rfc3339()));
    for field in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
        "managedFields",
    ] {
        meta::remove_meta(obj, field);
    }
    if tracks_generation(info, obj) {
        meta::set_meta(obj, "generation", json!(1));
    } else {
        meta::remove_meta(obj, "generation");
    }
    // Status belongs to the controllers; nodes alone may bring theirs on create.
    let keep_status =
        !has_status_subresource(info) || (info.group.is_empty() && info.kind == "Node");
    if !keep_status {
        if let Some(map) = obj.as_object_mut() {
            map.remove("status");
        }
    }
    match (info.group.as_str(), info.kind.as_str()) {
        ("", "Pod") => {
            let qos = qos_class(obj);
            obj["status"] = json!({ "phase": "Pending", "qosClass": qos });
        }
        ("", "Namespace") => {
            obj["status"] = json!({ "phase": "Active" });
            // As the reference's PrepareForCreate: `kubernetes` is always among the
            // finalizers of a new namespace (kubectl sends `finalizers: []`).
            let mut finalizers: Vec<Value> = obj
                .pointer("/spec/finalizers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if !finalizers.iter().any(|f| f == "kubernetes") {
                finalizers.push(json!("kubernetes"));
            }
            if !obj.get("spec").is_some_and(Value::is_object) {
                obj["spec"] = json!({});
            }
            obj["spec"]["finalizers"] = json!(finalizers);
        }
        _ => {}
    }
}

/// The pod's QoS class from its containers' requests and limits.
fn qos_class(pod: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|k| pod.pointer(&format!("/spec/{k}")).and_then(Value::as_array))
        .flatten()
        .collect();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in &containers {
        let requests = c.pointer("/resources/requests").and_then(Value::as_object);
        let limits = c.pointer("/resources/limits").and_then(Value::as_object);
        any |= requests.is_some_and(|r| !r.is_empty()) || limits.is_some_and(|l| !l.is_empty());
        for resource in ["cpu", "memory"] {
            let limit = limits.and_then(|l| l.get(resource));
            let request = requests.and_then(|r| r.get(resource)).or(limit);
            if limit.is_none() || request != limit {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

/// Builds the object to store for an update of `old` with `new` through `subresource`
/// (`None` = the main resource): server-owned metadata from `old`, the half the subresource
/// does not own from `old`, and `generation` bumped when the spec changed.
pub fn prepare_update(
    info: &ResourceInfo,
    old: &Value,
    new: Value,
    subresource: Option<&str>,
) -> Value {
    let mut merged = match subresource {
        Some("status") => {
            // Only status changes through /status (metadata too is reset, as the reference does).
            let mut merged = old.clone();
            match new.get("status") {
                Some(status) => merged["status"] = status.clone(),
                None => {
                    if let Some(map) = merged.as_object_mut() {
                        map.remove("status");
                    }
                }
            }
            merged
        }
        Some("approval") => {
            // A CSR's approval changes only its conditions (Approved/Denied), nothing else.
            let mut merged = old.clone();
            let conditions = new.pointer("/status/conditions").cloned().unwrap_or(Value::Null);
            match merged.get_mut("status").and_then(Value::as_object_mut) {
                Some(status) => {
                    status.insert("conditions".into(), conditions);
                }
                None => merged["status"] = json!({"conditions": conditions}),
            }
            merged
        }
        _ => {
            let mut merged = new;
            if has_status_subresource(info) {
                match old.get("status") {
                    Some(status) => merged["status"] = status.clone(),
                    None => {
                        if let Some(map) = merged.as_object_mut() {
                            map.remove("status");
                        }
                    }
                }
            }
            if info.group.is_empty() && info.kind == "Namespace" {
                // Namespace finalizers change only through /finalize.
                if let Some(fin) = old.pointer("/spec/finalizers") {
                    merged["spec"]["finalizers"] = fin.clone();
                }
            }
            merged
        }
    };
    let old_meta = old.get("metadata").and_then(Value::as_object).cloned().unwrap_or_default();
    if let Some(meta) = meta::metadata_mut(&mut merged) {
        for field in SERVER_OWNED {
            match old_meta.get(field) {
                Some(v) => meta.insert(field.to_string(), v.clone()),
                None => meta.remove(field),
            };
        }
        meta.remove("managedFields");
    }
    let old_gen = old.pointer("/metadata/generation").and_then(Value::as_i64);
    if let Some(old_gen) = old_gen {
        let bumped = subresource.is_none() && meta::spec_part(old) != meta::spec_part(&merged);
        meta::set_meta(
            &mut merged,
            "generation",
            json!(if bumped { old_gen + 1 } else { old_gen }),
        );
    }
    merged
}

/// Whether two versions differ in anything but their resourceVersion.
pub fn changed(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        meta::remove_meta(&mut v, "resourceVersion");
        v
    };
    strip(old) != strip(new)
}

/// Unknown `metadata` fields, for `fieldValidation` (paths like `metadata.foo`).
pub fn unknown_metadata_fields(obj: &Value) -> Vec<String> {
    obj.get("metadata")
        .and_then(Value::as_object)
        .map(|m: &Map<String, Value>| {
            m.keys()
                .filter(|k| !OBJECT_META_FIELDS.contains(&k.as_str()))
                .map(|k| format!("metadata.{k}"))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resource::Registry;

    #[test]
    fn status_and_generation_follow_the_subresource() {
        let registry = Registry::builtin();
        let pods = registry.resolve("", "v1", "pods").unwrap();
        let mut pod = json!({"metadata": {"name": "p", "resourceVersion": "9"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}, "status": {"phase": "Running"}});
        prepare_create(&pods, &mut pod);
        assert_eq!(pod["status"], json!({"phase": "Pending", "qosClass": "BestEffort"}));
        assert_eq!(pod["metadata"]["generation"], 1);
        assert!(pod["metadata"].get("resourceVersion").is_none());

        let mut new = pod.clone();
        new["status"]["phase"] = json!("Running");
        new["metadata"]["labels"] = json!({"a": "b"});
        let merged = prepare_update(&pods, &pod, new.clone(), None);
        assert_eq!(merged["status"]["phase"], "Pending", "main resource keeps the old status");
        assert_eq!(merged["metadata"]["generation"], 1, "labels are not spec");
        let status = prepare_update(&pods, &pod, new.clone(), Some("status"));
        assert_eq!(status["status"]["phase"], "Running");
        assert!(status["metadata"].get("labels").is_none(), "status writes keep old metadata");

        new["spec"]["containers"][0]["image"] = json!("nginx");
        let merged = prepare_update(&pods, &pod, new, None);
        assert_eq!(merged["metadata"]["generation"], 2);
        assert_eq!(merged["metadata"]["uid"], pod["metadata"]["uid"]);
    }

    #[test]
    fn qos_classes() {
        let pod = |res: Value| json!({"spec": {"containers": [{"resources": res}]}});
        assert_eq!(qos_class(&pod(json!({}))), "BestEffort");
        assert_eq!(qos_class(&pod(json!({"limits": {"cpu": "1", "memory": "1Gi"}}))), "Guaranteed");
        assert_eq!(qos_class(&pod(json!({"requests": {"cpu": "1"}}))), "Burstable");
    }
}
