//! Pod spec validation (`ValidatePodSpec`), used for pods and for every workload's template, and
//! the pod update rule: a pod's spec is immutable except container images,
//! `activeDeadlineSeconds` (set or lowered), tolerations (only additions) and scheduling gates
//! (only removals).

use serde_json::{json, Value};

use super::errors::Errors;
use super::names;

const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
const DNS_POLICIES: &[&str] = &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];

/// The volume sources a volume may name exactly one of (defaulting reads it too).
pub(crate) const VOLUME_SOURCES: &[&str] = &[
    "hostPath",
    "emptyDir",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "persistentVolumeClaim",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "downwardAPI",
    "fc",
    "azureFile",
    "configMap",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "projected",
    "portworxVolume",
    "scaleIO",
    "storageos",
    "csi",
    "ephemeral",
    "image",
];

fn items(v: Option<&Value>) -> &[Value] {
    v.and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Validates a pod spec at `path` (e.g. `spec` or `spec.template.spec`).
pub fn validate_spec(spec: Option<&Value>, path: &str, errs: &mut Errors) {
    let Some(spec) = spec.filter(|s| s.is_object()) else {
        errs.required(&format!("{path}.containers"), "");
        return;
    };
    let volumes = validate_volumes(spec, path, errs);
    let containers = items(spec.get("containers"));
    if containers.is_empty() {
        errs.required(&format!("{path}.containers"), "");
    }
    // Container names are unique across regular, init and ephemeral containers.
    let mut names_seen: Vec<String> = Vec::new();
    let mut host_ports: Vec<String> = Vec::new();
    for key in ["initContainers", "containers", "ephemeralContainers"] {
        for (i, c) in items(spec.get(key)).iter().enumerate() {
            let field = format!("{path}.{key}[{i}]");
            validate_container(c, &field, &volumes, errs);
            let name = text(c, "name");
            if !name.is_empty() {
                if names_seen.iter().any(|n| n == name) {
                    errs.duplicate(&format!("{field}.name"), &json!(name));
                }
                names_seen.push(name.to_string());
            }
            // Host ports may not collide across the pod's containers.
            for (j, p) in items(c.get("ports")).iter().enumerate() {
                let host_port = p.get("hostPort").and_then(Value::as_i64).unwrap_or(0);
                if host_port > 0 {
                    let protocol = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                    let key = format!("{host_port}/{protocol}");
                    if host_ports.contains(&key) {
                        errs.duplicate(&format!("{field}.ports[{j}].hostPort"), &json!(key));
                    }
                    host_ports.push(key);
                }
            }
        }
    }
    supported(spec.get("restartPolicy"), &format!("{path}.restartPolicy"), RESTART_POLICIES, errs);
    supported(spec.get("dnsPolicy"), &format!("{path}.dnsPolicy"), DNS_POLICIES, errs);
    for key in ["terminationGracePeriodSeconds", "activeDeadlineSeconds"] {
        if let Some(v) = spec.get(key).filter(|v| !v.is_null()) {
            let minimum = if key == "activeDeadlineSeconds" { 1 } else { 0 };
            match v.as_i64() {
                Some(n) if n >= minimum => {}
                Some(_) if key == "activeDeadlineSeconds" => errs.invalid(
                    &format!("{path}.{key}"),
                    v,
                    "must be between 1 and 2147483647, inclusive",
                ),
                _ => {
                    errs.invalid(&format!("{path}.{key}"), v, "must be greater than or equal to 0")
                }
            }
        }
    }
    if let Some(selector) = spec.get("nodeSelector").filter(|s| !s.is_null()) {
        super::meta::validate_labels(Some(selector), &format!("{path}.nodeSelector"), errs);
    }
    for (key, rule) in [
        ("hostname", names::dns1123_label as fn(&str) -> Vec<String>),
        ("subdomain", names::dns1123_label),
        ("serviceAccountName", names::dns1123_subdomain),
        ("priorityClassName", names::dns1123_subdomain),
    ] {
        if let Some(value) = spec.get(key).and_then(Value::as_str).filter(|v| !v.is_empty()) {
            for msg in rule(value) {
                errs.invalid_str(&format!("{path}.{key}"), value, &msg);
            }
        }
    }
    for (i, t) in items(spec.get("tolerations")).iter().enumerate() {
        validate_toleration(t, &format!("{path}.tolerations[{i}]"), errs);
    }
    if let Some(node) = spec.get("nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()) {
        for msg in names::dns1123_subdomain(node) {
            errs.invalid_str(&format!("{path}.nodeName"), node, &msg);
        }
    }
}

/// A toleration: a valid key, a supported operator and effect, no value with `Exists`.
fn validate_toleration(t: &Value, field: &str, errs: &mut Errors) {
    let key = text(t, "key");
    if !key.is_empty() {
        for msg in names::qualified_name(key) {
            errs.invalid_str(&format!("{field}.key"), key, &msg);
        }
    }
    supported(t.get("operator"), &format!("{field}.operator"), &["Equal", "Exists"], errs);
    supported(
        t.get("effect"),
        &format!("{field}.effect"),
        &["NoSchedule", "PreferNoSchedule", "NoExecute"],
        errs,
    );
    let exists = text(t, "operator") == "Exists";
    if key.is_empty() && !exists {
        let why = "operator must be Exists when `key` is empty, which means \"match all values \
                   and all keys\"";
        errs.invalid_str(&format!("{field}.operator"), text(t, "operator"), why);
    }
    if exists && !text(t, "value").is_empty() {
        errs.invalid_str(
            &format!("{field}.operator"),
            text(t, "value"),
            "value must be empty when `operator` is 'Exists'",
        );
    }
    if t.get("tolerationSeconds").is_some_and(|s| !s.is_null()) && text(t, "effect") != "NoExecute"
    {
        errs.invalid_str(
            &format!("{field}.effect"),
            text(t, "effect"),
            "effect must be 'NoExecute' when `tolerationSeconds` is set",
        );
    }
}

/// A field must be one of `values` when set.
pub fn supported(v: Option<&Value>, field: &str, values: &[&str], errs: &mut Errors) {
    match v {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if values.contains(&s.as_str()) => {}
        Some(other) => errs.not_supported(field, other, values),
    }
}

/// Validates the volumes and returns their names.
fn validate_volumes(spec: &Value, path: &str, errs: &mut Errors) -> Vec<String> {
    let mut seen = Vec::new();
    for (i, v) in items(spec.get("volumes")).iter().enumerate() {
        let field = format!("{path}.volumes[{i}]");
        let name = text(v, "name");
        if name.is_empty() {
            errs.required(&format!("{field}.name"), "");
        } else {
            for msg in names::dns1123_label(name) {
                errs.invalid_str(&format!("{field}.name"), name, &msg);
            }
            if seen.iter().any(|s| s == name) {
                errs.duplicate(&format!("{field}.name"), &json!(name));
            }
            seen.push(name.to_string());
        }
        let sources =
            VOLUME_SOURCES.iter().filter(|s| v.get(**s).is_some_and(|x| !x.is_null())).count();
        match sources {
            0 => errs.required(&field, "must specify a volume type"),
            1 => {}
            _ => errs.forbidden(&field, "may not specify more than 1 volume type"),
        }
    }
    seen
}

fn validate_container(c: &Value, field: &str, volumes: &[String], errs: &mut Errors) {
    if !c.is_object() {
        errs.invalid(field, c, "must be an object");
        return;
    }
    let name = text(c, "name");
    if name.is_empty() {
        errs.required(&format!("{field}.name"), "");
    } else {
        for msg in names::dns1123_label(name) {
            errs.invalid_str(&format!("{field}.name"), name, &msg);
        }
    }
    if text(c, "image").trim().is_empty() {
        errs.required(&format!("{field}.image"), "");
    }
    supported(c.get("imagePullPolicy"), &format!("{field}.imagePullPolicy"), PULL_POLICIES, errs);
    let mut port_names: Vec<&str> = Vec::new();
    for (i, p) in items(c.get("ports")).iter().enumerate() {
        let pf = format!("{field}.ports[{i}]");
        match p.get("containerPort") {
            None | Some(Value::Null) => errs.required(&format!("{pf}.containerPort"), ""),
            Some(v) => port_number(v, &format!("{pf}.containerPort"), errs),
        }
        if let Some(host) = p.get("hostPort").filter(|h| h.as_i64() != Some(0) && !h.is_null()) {
            port_number(host, &format!("{pf}.hostPort"), errs);
        }
        supported(p.get("protocol"), &format!("{pf}.protocol"), PROTOCOLS, errs);
        let port_name = text(p, "name");
        if !port_name.is_empty() {
            for msg in names::port_name(port_name) {
                errs.invalid_str(&format!("{pf}.name"), port_name, &msg);
            }
            if port_names.contains(&port_name) {
                errs.duplicate(&format!("{pf}.name"), &json!(port_name));
            }
            port_names.push(port_name);
        }
    }
    for (i, e) in items(c.get("env")).iter().enumerate() {
        let ef = format!("{field}.env[{i}].name");
        match e.get("name").and_then(Value::as_str) {
            Some(n) if !n.is_empty() => {
                for msg in names::env_var_name(n) {
                    errs.invalid_str(&ef, n, &msg);
                }
            }
            _ => errs.required(&ef, ""),
        }
    }
    for (i, m) in items(c.get("volumeMounts")).iter().enumerate() {
        let mf = format!("{field}.volumeMounts[{i}]");
        let mount_name = text(m, "name");
        if mount_name.is_empty() {
            errs.required(&format!("{mf}.name"), "");
        } else if !volumes.iter().any(|v| v == mount_name) {
            errs.not_found(&format!("{mf}.name"), &json!(mount_name));
        }
        if text(m, "mountPath").is_empty() {
            errs.required(&format!("{mf}.mountPath"), "");
        }
    }
    validate_resources(c.get("resources"), &format!("{field}.resources"), errs);
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get(probe).filter(|p| p.is_object()) {
            let handlers = ["exec", "httpGet", "tcpSocket", "grpc"]
                .iter()
                .filter(|h| p.get(**h).is_some_and(|x| !x.is_null()))
                .count();
            match handlers {
                0 => errs.required(&format!("{field}.{probe}"), "must specify a handler type"),
                1 => {}
                _ => errs.forbidden(
                    &format!("{field}.{probe}"),
                    "may not specify more than 1 handler type",
                ),
            }
        }
    }
}

/// Requests and limits: valid non-negative quantities, each request at most its limit.
fn validate_resources(resources: Option<&Value>, field: &str, errs: &mut Errors) {
    let Some(resources) = resources.filter(|r| r.is_object()) else { return };
    let mut parsed = [Vec::new(), Vec::new()];
    for (slot, kind) in ["limits", "requests"].iter().enumerate() {
        let Some(map) = resources.get(*kind).and_then(Value::as_object) else { continue };
        for (name, q) in map {
            let qf = format!("{field}.{kind}[{name}]");
            let text = match q {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => {
                    errs.invalid(&qf, other, super::quantity::QUANTITY_MSG);
                    continue;
                }
            };
            match super::quantity::parse(&text) {
                Some(v) if v < 0.0 => {
                    errs.invalid_str(&qf, &text, "must be greater than or equal to 0")
                }
                Some(v) => parsed[slot].push((name.as_str(), v, text)),
                None => errs.invalid_str(&qf, &text, super::quantity::QUANTITY_MSG),
            }
        }
    }
    let [limits, requests] = parsed;
    for (name, request, text) in &requests {
        if let Some((_, limit, limit_text)) = limits.iter().find(|(n, _, _)| n == name) {
            if request > limit {
                errs.invalid_str(
                    &format!("{field}.requests"),
                    text,
                    &format!("must be less than or equal to {name} limit of {limit_text}"),
                );
            }
        }
    }
}

/// A port number in 1..=65535.
pub fn port_number(v: &Value, field: &str, errs: &mut Errors) {
    match v.as_i64() {
        Some(n) if (1..=65535).contains(&n) => {}
        _ => errs.invalid(field, v, "must be between 1 and 65535, inclusive"),
    }
}

/// The reference's message when a pod update touches more than it may.
const POD_UPDATE_FORBIDDEN: &str = "pod updates may not change fields other than \
     `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,\
     `spec.tolerations` (only additions to existing tolerations),\
     `spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// Validates what a pod update may change in the spec.
pub fn validate_update(old: &Value, new: &Value, errs: &mut Errors) {
    let (Some(old_spec), Some(new_spec)) = (old.get("spec"), new.get("spec")) else { return };
    let mut old_cmp = old_spec.clone();
    let mut new_cmp = new_spec.clone();
    // Images may change: compare without them.
    for spec in [&mut old_cmp, &mut new_cmp] {
        for key in ["containers", "initContainers"] {
            if let Some(list) = spec.get_mut(key).and_then(Value::as_array_mut) {
                for c in list.iter_mut().filter_map(Value::as_object_mut) {
                    c.remove("image");
                }
            }
        }
    }
    // activeDeadlineSeconds may be set, or lowered, but not removed or raised.
    let old_deadline = old_spec.get("activeDeadlineSeconds").and_then(Value::as_i64);
    let new_deadline = new_spec.get("activeDeadlineSeconds");
    match (old_deadline, new_deadline.and_then(Value::as_i64)) {
        (Some(_), None) => errs.invalid(
            "spec.activeDeadlineSeconds",
            &Value::Null,
            "must not update from a positive integer to nil value",
        ),
        (Some(before), Some(after)) if after > before => errs.invalid(
            "spec.activeDeadlineSeconds",
            &json!(after),
            "must be less than or equal to previous value",
        ),
        _ => {}
    }
    // Tolerations: every existing one must remain; new ones may be added.
    let old_tolerations = items(old_spec.get("tolerations"));
    let new_tolerations = items(new_spec.get("tolerations"));
    if old_tolerations.iter().any(|t| !new_tolerations.contains(t)) {
        errs.forbidden(
            "spec.tolerations",
            "existing toleration can not be modified except its tolerationSeconds",
        );
    }
    // Scheduling gates may only be removed.
    let old_gates = items(old_spec.get("schedulingGates"));
    let new_gates = items(new_spec.get("schedulingGates"));
    if new_gates.iter().any(|g| !old_gates.contains(g)) {
        errs.forbidden(
            "spec.schedulingGates",
            "only deletion is allowed, but found new scheduling gate",
        );
    }
    // terminationGracePeriodSeconds may go from negative to 1.
    let old_grace = old_spec.get("terminationGracePeriodSeconds").and_then(Value::as_i64);
    let new_grace = new_spec.get("terminationGracePeriodSeconds").and_then(Value::as_i64);
    let grace_ok =
        old_grace == new_grace || (old_grace.is_some_and(|g| g < 0) && new_grace == Some(1));
    for spec in [&mut old_cmp, &mut new_cmp] {
        if let Some(map) = spec.as_object_mut() {
            map.remove("activeDeadlineSeconds");
            map.remove("tolerations");
            map.remove("schedulingGates");
            if grace_ok {
                map.remove("terminationGracePeriodSeconds");
            }
        }
    }
    if old_cmp != new_cmp {
        errs.forbidden("spec", POD_UPDATE_FORBIDDEN);
    }
}

/// Pod updates through `resize` (container resources and resize policies only) and
/// `ephemeralcontainers` (additions only).
pub fn validate_subresource_update(sub: &str, old: &Value, new: &Value, errs: &mut Errors) {
    let spec_without = |v: &Value, strip: &dyn Fn(&mut Value)| {
        let mut spec = v.get("spec").cloned().unwrap_or(Value::Null);
        strip(&mut spec);
        spec
    };
    if sub == "resize" {
        let strip = |spec: &mut Value| {
            if let Some(list) = spec.get_mut("containers").and_then(Value::as_array_mut) {
                for c in list.iter_mut().filter_map(Value::as_object_mut) {
                    c.remove("resources");
                    c.remove("resizePolicy");
                }
            }
        };
        if spec_without(old, &strip) != spec_without(new, &strip) {
            errs.forbidden("spec", "only cpu and memory resources are mutable");
        }
        return;
    }
    let strip = |spec: &mut Value| {
        if let Some(map) = spec.as_object_mut() {
            map.remove("ephemeralContainers");
        }
    };
    if spec_without(old, &strip) != spec_without(new, &strip) {
        errs.forbidden("spec", "only ephemeralContainers may be changed through this subresource");
    }
    let before = items(old.pointer("/spec/ephemeralContainers"));
    let after = items(new.pointer("/spec/ephemeralContainers"));
    for (i, c) in before.iter().enumerate() {
        if after.get(i) != Some(c) {
            errs.forbidden(
                &format!("spec.ephemeralContainers[{i}]"),
                "existing ephemeral containers may not be changed",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn causes(spec: Value) -> Vec<(String, String, String)> {
        let mut errs = Errors::default();
        validate_spec(Some(&spec), "spec", &mut errs);
        errs.triples()
    }

    #[test]
    fn containers_need_names_and_images() {
        assert_eq!(
            causes(json!({"containers": []})),
            [("FieldValueRequired".into(), "spec.containers".into(), "Required value".into())]
        );
        let errs = causes(
            json!({"containers": [{"name": "a"}, {"image": "x"}, {"name": "a", "image": "y"}]}),
        );
        let fields: Vec<(&str, &str)> =
            errs.iter().map(|(r, f, _)| (r.as_str(), f.as_str())).collect();
        assert_eq!(
            fields,
            [
                ("FieldValueRequired", "spec.containers[0].image"),
                ("FieldValueRequired", "spec.containers[1].name"),
                ("FieldValueDuplicate", "spec.containers[2].name"),
            ]
        );
        assert_eq!(errs[2].2, "Duplicate value: \"a\"");
    }

    #[test]
    fn ports_volumes_and_policies() {
        let errs = causes(json!({
            "restartPolicy": "Sometimes",
            "containers": [{"name": "a", "image": "x", "imagePullPolicy": "Always",
                "ports": [{"containerPort": 70000}, {"containerPort": 80, "name": "http"},
                          {"containerPort": 81, "name": "http", "protocol": "HTTP"}],
                "volumeMounts": [{"name": "missing", "mountPath": "/data"}]}],
            "volumes": [{"name": "v"}, {"name": "w", "emptyDir": {}, "hostPath": {"path": "/"}}]}));
        let fields: Vec<&str> = errs.iter().map(|(_, f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.volumes[0]",
                "spec.volumes[1]",
                "spec.containers[0].ports[0].containerPort",
                "spec.containers[0].ports[2].protocol",
                "spec.containers[0].ports[2].name",
                "spec.containers[0].volumeMounts[0].name",
                "spec.restartPolicy",
            ]
        );
        assert_eq!(errs[2].2, "Invalid value: 70000: must be between 1 and 65535, inclusive");
        assert_eq!(
            errs[6].2,
            "Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\""
        );
        assert_eq!(errs[5].2, "Not found: \"missing\"");
    }

    #[test]
    fn resize_and_ephemeral_container_subresources() {
        let old = json!({"spec": {"containers": [{"name": "a", "image": "x",
            "resources": {"limits": {"cpu": "1"}}}]}});
        let mut resized = old.clone();
        resized["spec"]["containers"][0]["resources"] = json!({"limits": {"cpu": "2"}});
        let mut errs = Errors::default();
        validate_subresource_update("resize", &old, &resized, &mut errs);
        assert!(errs.is_empty());
        validate_update(&old, &resized, &mut errs);
        assert!(!errs.is_empty(), "the main resource may not resize");

        let mut debug = old.clone();
        debug["spec"]["ephemeralContainers"] = json!([{"name": "dbg", "image": "busybox"}]);
        let mut errs = Errors::default();
        validate_subresource_update("ephemeralcontainers", &old, &debug, &mut errs);
        assert!(errs.is_empty());
        let mut changed = debug.clone();
        changed["spec"]["ephemeralContainers"][0]["image"] = json!("other");
        validate_subresource_update("ephemeralcontainers", &debug, &changed, &mut errs);
        assert_eq!(errs.into_result().unwrap_err()[0].field, "spec.ephemeralContainers[0]");
    }

    #[test]
    fn tolerations_and_names_in_the_spec() {
        let errs = causes(json!({"containers": [{"name": "a", "image": "x"}],
            "hostname": "Host_1", "serviceAccountName": "default",
            "tolerations": [
                {"operator": "Exists"},
                {"key": "k", "operator": "Equal", "value": "v", "effect": "NoExecute",
                 "tolerationSeconds": 30},
                {"key": "k", "operator": "Exists", "value": "v"},
                {"key": "k", "operator": "Maybe", "effect": "NoSchedule", "tolerationSeconds": 5}]}));
        let fields: Vec<&str> = errs.iter().map(|(_, f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.hostname",
                "spec.tolerations[2].operator",
                "spec.tolerations[3].operator",
                "spec.tolerations[3].effect",
            ]
        );
    }

    #[test]
    fn requests_may_not_exceed_limits() {
        let errs = causes(json!({"containers": [{"name": "a", "image": "x", "resources": {
            "limits": {"cpu": "500m", "memory": "1Gi"},
            "requests": {"cpu": "1", "memory": "lots"}}}]}));
        assert_eq!(
            errs,
            [
                (
                    "FieldValueInvalid".into(),
                    "spec.containers[0].resources.requests[memory]".into(),
                    format!("Invalid value: \"lots\": {}", super::super::quantity::QUANTITY_MSG)
                ),
                (
                    "FieldValueInvalid".into(),
                    "spec.containers[0].resources.requests".into(),
                    "Invalid value: \"1\": must be less than or equal to cpu limit of 500m".into()
                ),
            ]
        );
    }

    #[test]
    fn pod_updates_may_change_images_deadlines_and_add_tolerations() {
        let old = json!({"spec": {"containers": [{"name": "a", "image": "x:1"}],
            "tolerations": [{"key": "k", "operator": "Exists"}], "activeDeadlineSeconds": 100}});
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!("x:2");
        new["spec"]["activeDeadlineSeconds"] = json!(50);
        new["spec"]["tolerations"]
            .as_array_mut()
            .unwrap()
            .push(json!({"key": "other", "operator": "Exists"}));
        let mut errs = Errors::default();
        validate_update(&old, &new, &mut errs);
        assert!(errs.is_empty());

        let mut changed = old.clone();
        changed["spec"]["containers"][0]["name"] = json!("b");
        changed["spec"]["activeDeadlineSeconds"] = json!(200);
        let mut errs = Errors::default();
        validate_update(&old, &changed, &mut errs);
        let causes = errs.into_result().unwrap_err();
        assert_eq!(causes[0].field, "spec.activeDeadlineSeconds");
        assert_eq!(causes[1].reason, "FieldValueForbidden");
        assert_eq!(causes[1].field, "spec");
        assert!(causes[1].message.starts_with("Forbidden: pod updates may not change fields"));
    }
}
