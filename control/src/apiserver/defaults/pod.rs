//! Pod and pod-template defaulting (core/v1 `SetDefaults_PodSpec`, `SetDefaults_Container`,
//! `SetDefaults_Probe`, volume sources, ...), shared by pods and every workload's template.

use serde_json::{json, Value};

use super::{child, each, existing, set};

/// Defaults of a Pod object (the spec's plus the pod-only ones).
pub(super) fn pod(obj: &mut Value) {
    // The reference's ServiceAccount admission leaves mirror pods (a node's static pods) alone.
    let mirror = obj.pointer("/metadata/annotations/kubernetes.io~1config.mirror").is_some();
    if let Some(spec) = child(obj, "spec") {
        pod_spec(spec);
        // SetDefaults_Pod: pods (not templates) get enableServiceLinks.
        set(spec, "enableServiceLinks", json!(true));
        admission_defaults(spec, mirror);
        for key in ["containers", "initContainers"] {
            each(spec, key, requests_from_limits);
        }
    }
    // The pod strategy on create: a new pod is Pending, with its QoS class.
    let qos = obj.get("spec").map(qos_class);
    if let Some(status) = child(obj, "status") {
        set(status, "phase", json!("Pending"));
        if let Some(qos) = qos {
            set(status, "qosClass", json!(qos));
        }
    }
}

/// The pod's QoS class: Guaranteed when every container limits and requests cpu and memory
/// equally, BestEffort when none requests or limits anything, Burstable otherwise.
fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|k| spec.get(*k).and_then(Value::as_array))
        .flatten()
        .collect();
    let quantities = |c: &Value, kind: &str| {
        c.get("resources").and_then(|r| r.get(kind)).and_then(Value::as_object).cloned()
    };
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        let requests = quantities(c, "requests").unwrap_or_default();
        let limits = quantities(c, "limits").unwrap_or_default();
        let relevant =
            |m: &serde_json::Map<String, Value>| m.keys().any(|k| k == "cpu" || k == "memory");
        any |= relevant(&requests) || relevant(&limits);
        for resource in ["cpu", "memory"] {
            match (requests.get(resource), limits.get(resource)) {
                (Some(r), Some(l)) if r == l => {}
                (None, Some(_)) => {}
                _ => guaranteed = false,
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// What the reference's always-on admission plugins add to every pod: `DefaultTolerationSeconds`
/// (tolerate not-ready and unreachable nodes for 300 s) and `ServiceAccount` (the `default`
/// account, not for mirror pods). The priority comes from the Priority admission plugin.
fn admission_defaults(spec: &mut Value, mirror: bool) {
    if !mirror {
        set(spec, "serviceAccountName", json!("default"));
        let account = spec.get("serviceAccountName").cloned().unwrap_or(json!("default"));
        set(spec, "serviceAccount", account);
    }
    set(spec, "tolerations", json!([]));
    if let Some(tolerations) = spec.get_mut("tolerations").and_then(Value::as_array_mut) {
        for key in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"] {
            let tolerated = tolerations.iter().any(|t| {
                let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
                let exists = t.get("operator").and_then(Value::as_str) == Some("Exists");
                let key_matches = match t.get("key").and_then(Value::as_str) {
                    Some(k) if !k.is_empty() => k == key,
                    // An empty key with Exists tolerates every taint.
                    _ => exists,
                };
                key_matches && (effect.is_empty() || effect == "NoExecute")
            });
            if !tolerated {
                tolerations.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute",
                                        "tolerationSeconds": 300}));
            }
        }
    }
}

/// Defaults of a `PodTemplateSpec` at `template` (its spec, created when absent).
pub(super) fn template(template: &mut Value) {
    if let Some(spec) = child(template, "spec") {
        pod_spec(spec);
    }
}

/// SetDefaults_PodSpec and everything nested in it.
pub(super) fn pod_spec(spec: &mut Value) {
    set(spec, "dnsPolicy", json!("ClusterFirst"));
    set(spec, "restartPolicy", json!("Always"));
    set(spec, "terminationGracePeriodSeconds", json!(30));
    set(spec, "securityContext", json!({}));
    set(spec, "schedulerName", json!("default-scheduler"));
    let host_network = spec.get("hostNetwork").and_then(Value::as_bool) == Some(true);
    for key in ["containers", "initContainers", "ephemeralContainers"] {
        each(spec, key, |c| container(c, host_network));
    }
    each(spec, "volumes", volume);
}

/// SetDefaults_Container with its ports, env and probes.
fn container(c: &mut Value, host_network: bool) {
    if c.get("imagePullPolicy").is_none_or(Value::is_null) {
        if let Some(image) = c.get("image").and_then(Value::as_str) {
            let policy = if pulls_always(image) { "Always" } else { "IfNotPresent" };
            set(c, "imagePullPolicy", json!(policy));
        }
    }
    set(c, "terminationMessagePath", json!("/dev/termination-log"));
    // Go serializes the non-pointer ResourceRequirements as `{}`; clients expect it.
    set(c, "resources", json!({}));
    set(c, "terminationMessagePolicy", json!("File"));
    each(c, "ports", |p| {
        set(p, "protocol", json!("TCP"));
        // With hostNetwork, the host port is the container port.
        if host_network {
            if let Some(port) = p.get("containerPort").cloned() {
                set(p, "hostPort", port);
            }
        }
    });
    each(c, "env", |e| {
        if let Some(field_ref) = existing(e, "valueFrom").and_then(|v| existing(v, "fieldRef")) {
            set(field_ref, "apiVersion", json!("v1"));
        }
    });
    for probe_key in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = existing(c, probe_key) {
            probe(p);
        }
    }
    if let Some(lifecycle) = existing(c, "lifecycle") {
        for hook in ["postStart", "preStop"] {
            if let Some(handler) = existing(lifecycle, hook) {
                http_get(handler);
            }
        }
    }
}

/// `:latest` or no tag (and no digest) means the image may change: pull Always.
fn pulls_always(image: &str) -> bool {
    if image.contains('@') {
        return false;
    }
    // The tag is after the last ':' that follows the last '/' (a registry port is not a tag).
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) => tag == "latest",
        None => true,
    }
}

/// SetDefaults_Probe.
fn probe(p: &mut Value) {
    set(p, "timeoutSeconds", json!(1));
    set(p, "periodSeconds", json!(10));
    set(p, "successThreshold", json!(1));
    set(p, "failureThreshold", json!(3));
    http_get(p);
}

/// SetDefaults_HTTPGetAction.
fn http_get(handler: &mut Value) {
    if let Some(get) = existing(handler, "httpGet") {
        set(get, "path", json!("/"));
        set(get, "scheme", json!("HTTP"));
    }
}

/// Volume sources: no source means emptyDir; file-projecting sources get mode 0644.
fn volume(v: &mut Value) {
    let Some(map) = v.as_object() else { return };
    if !crate::apiserver::validation::VOLUME_SOURCES
        .iter()
        .any(|s| map.get(*s).is_some_and(|v| !v.is_null()))
    {
        set(v, "emptyDir", json!({}));
    }
    for source in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(s) = existing(v, source) {
            set(s, "defaultMode", json!(420));
        }
    }
    if let Some(host_path) = existing(v, "hostPath") {
        set(host_path, "type", json!(""));
    }
    if let Some(downward) = existing(v, "downwardAPI") {
        each(downward, "items", |item| {
            if let Some(field_ref) = existing(item, "fieldRef") {
                set(field_ref, "apiVersion", json!("v1"));
            }
        });
    }
}

/// SetDefaults_Pod: a resource with a limit but no request gets the limit as its request.
fn requests_from_limits(c: &mut Value) {
    let Some(resources) = existing(c, "resources") else { return };
    let Some(limits) = resources.get("limits").and_then(Value::as_object).cloned() else {
        return;
    };
    if let Some(requests) = child(resources, "requests") {
        for (name, quantity) in limits {
            set(requests, &name, quantity);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_pull_policy_follows_the_tag() {
        for (image, always) in [
            ("nginx", true),
            ("nginx:latest", true),
            ("nginx:1.27", false),
            ("registry:5000/nginx", true),
            ("registry:5000/nginx:1.0", false),
            ("nginx@sha256:abcd", false),
        ] {
            assert_eq!(pulls_always(image), always, "{image}");
        }
    }

    #[test]
    fn volumes_and_probes() {
        let mut spec = json!({"containers": [{"name": "a", "image": "x:1",
            "livenessProbe": {"httpGet": {"port": 80}},
            "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]}],
            "volumes": [{"name": "scratch"}, {"name": "cfg", "configMap": {"name": "c"}}]});
        pod_spec(&mut spec);
        assert_eq!(spec["volumes"][0]["emptyDir"], json!({}));
        assert_eq!(spec["volumes"][1]["configMap"]["defaultMode"], 420);
        let probe = &spec["containers"][0]["livenessProbe"];
        assert_eq!(probe["httpGet"], json!({"port": 80, "path": "/", "scheme": "HTTP"}));
        assert_eq!(probe["periodSeconds"], 10);
        assert_eq!(spec["containers"][0]["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
    }
}
