//! Per-kind defaults of the built-in types other than the pod spec itself (which is in
//! [`super::pod`]): services, namespaces, secrets, volumes and claims, workloads, jobs and
//! cronjobs, networking, RBAC, storage, scheduling, admission registration and CRDs.

use serde_json::{json, Value};

use super::{child, each, existing, pod, set};

/// Applies the defaults of kind `kind` in `group` to `obj`.
pub(super) fn apply(group: &str, kind: &str, obj: &mut Value) {
    match (group, kind) {
        ("", "Pod") => pod::pod(obj),
        ("", "PodTemplate") => {
            if let Some(t) = child(obj, "template") {
                pod::template(t);
            }
        }
        ("", "ReplicationController") => replication_controller(obj),
        ("", "Service") => service(obj),
        ("", "Namespace") => namespace(obj),
        ("", "Secret") => secret(obj),
        ("", "PersistentVolume") => persistent_volume(obj),
        ("", "PersistentVolumeClaim") => persistent_volume_claim(obj),
        ("", "Endpoints") => each(obj, "subsets", |s| each(s, "ports", tcp)),
        ("discovery.k8s.io", "EndpointSlice") => each(obj, "ports", tcp),
        ("apps", "Deployment") => deployment(obj),
        ("apps", "ReplicaSet") => workload(obj, 1),
        ("apps", "StatefulSet") => statefulset(obj),
        ("apps", "DaemonSet") => daemonset(obj),
        ("batch", "Job") => job(obj),
        ("batch", "CronJob") => cronjob(obj),
        ("autoscaling", "HorizontalPodAutoscaler") => hpa(obj),
        ("networking.k8s.io", "NetworkPolicy") => network_policy(obj),
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            each(obj, "subjects", rbac_subject)
        }
        ("scheduling.k8s.io", "PriorityClass") => {
            set(obj, "preemptionPolicy", json!("PreemptLowerPriority"))
        }
        ("storage.k8s.io", "StorageClass") => {
            set(obj, "reclaimPolicy", json!("Delete"));
            set(obj, "volumeBindingMode", json!("Immediate"));
        }
        ("storage.k8s.io", "CSIDriver") => csi_driver(obj),
        ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration") => {
            each(obj, "webhooks", |w| webhook(w, false))
        }
        ("admissionregistration.k8s.io", "MutatingWebhookConfiguration") => {
            each(obj, "webhooks", |w| webhook(w, true))
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => crd(obj),
        _ => {}
    }
}

/// A service or endpoint port protocol.
fn tcp(port: &mut Value) {
    set(port, "protocol", json!("TCP"));
}

/// The defaults of a spec with `replicas` and a pod `template`.
fn workload(obj: &mut Value, replicas: i64) {
    if let Some(spec) = child(obj, "spec") {
        set(spec, "replicas", json!(replicas));
        if let Some(t) = existing(spec, "template") {
            pod::template(t);
        }
    }
}

fn replication_controller(obj: &mut Value) {
    workload(obj, 1);
    // SetDefaults_ReplicationController: selector and labels come from the template's labels.
    let template_labels = obj.pointer("/spec/template/metadata/labels").cloned();
    if let Some(labels) = template_labels.filter(|l| l.as_object().is_some_and(|m| !m.is_empty())) {
        if let Some(spec) = existing(obj, "spec") {
            set(spec, "selector", labels.clone());
        }
        if let Some(meta) = child(obj, "metadata") {
            set(meta, "labels", labels);
        }
    }
}

fn deployment(obj: &mut Value) {
    workload(obj, 1);
    if let Some(spec) = existing(obj, "spec") {
        if let Some(strategy) = child(spec, "strategy") {
            set(strategy, "type", json!("RollingUpdate"));
            if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                if let Some(rolling) = child(strategy, "rollingUpdate") {
                    set(rolling, "maxUnavailable", json!("25%"));
                    set(rolling, "maxSurge", json!("25%"));
                }
            }
        }
        set(spec, "revisionHistoryLimit", json!(10));
        set(spec, "progressDeadlineSeconds", json!(600));
    }
}

fn statefulset(obj: &mut Value) {
    workload(obj, 1);
    if let Some(spec) = existing(obj, "spec") {
        set(spec, "podManagementPolicy", json!("OrderedReady"));
        if let Some(strategy) = child(spec, "updateStrategy") {
            set(strategy, "type", json!("RollingUpdate"));
            if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                if let Some(rolling) = child(strategy, "rollingUpdate") {
                    set(rolling, "partition", json!(0));
                }
            }
        }
        set(spec, "revisionHistoryLimit", json!(10));
        if let Some(policy) = child(spec, "persistentVolumeClaimRetentionPolicy") {
            set(policy, "whenDeleted", json!("Retain"));
            set(policy, "whenScaled", json!("Retain"));
        }
        each(spec, "volumeClaimTemplates", persistent_volume_claim);
    }
}

fn daemonset(obj: &mut Value) {
    if let Some(spec) = child(obj, "spec") {
        if let Some(t) = existing(spec, "template") {
            pod::template(t);
        }
        if let Some(strategy) = child(spec, "updateStrategy") {
            set(strategy, "type", json!("RollingUpdate"));
            if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                if let Some(rolling) = child(strategy, "rollingUpdate") {
                    set(rolling, "maxUnavailable", json!(1));
                    set(rolling, "maxSurge", json!(0));
                }
            }
        }
        set(spec, "revisionHistoryLimit", json!(10));
    }
}

fn job(obj: &mut Value) {
    let uid = obj.pointer("/metadata/uid").and_then(Value::as_str).map(str::to_string);
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).map(str::to_string);
    let Some(spec) = child(obj, "spec") else { return };
    job_spec(spec);
    // The job strategy generates the selector and pod labels from the uid unless the user
    // manages the selector (manualSelector: true).
    if spec.get("manualSelector").and_then(Value::as_bool) == Some(true) {
        return;
    }
    set(spec, "manualSelector", json!(false));
    let (Some(uid), Some(name)) = (uid, name) else { return };
    if spec.get("selector").is_none_or(Value::is_null) {
        set(spec, "selector", json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}));
    }
    let labels = spec
        .get_mut("template")
        .filter(|t| t.is_object())
        .and_then(|t| child(t, "metadata"))
        .and_then(|m| child(m, "labels"));
    if let Some(labels) = labels {
        set(labels, "batch.kubernetes.io/controller-uid", json!(uid));
        set(labels, "batch.kubernetes.io/job-name", json!(name));
        set(labels, "controller-uid", json!(uid));
        set(labels, "job-name", json!(name));
    }
}

/// SetDefaults_Job on a job spec.
fn job_spec(spec: &mut Value) {
    let completions = spec.get("completions").is_some_and(|v| !v.is_null());
    let parallelism = spec.get("parallelism").is_some_and(|v| !v.is_null());
    match (completions, parallelism) {
        (false, false) => {
            set(spec, "completions", json!(1));
            set(spec, "parallelism", json!(1));
        }
        (true, false) => set(spec, "parallelism", json!(1)),
        _ => {}
    }
    let per_index = spec.get("backoffLimitPerIndex").is_some_and(|v| !v.is_null());
    set(spec, "backoffLimit", json!(if per_index { i32::MAX as i64 } else { 6 }));
    set(spec, "completionMode", json!("NonIndexed"));
    set(spec, "suspend", json!(false));
    // JobPodReplacementPolicy (beta, on): without a podFailurePolicy, replace only once
    // terminated or failed.
    if spec.get("podFailurePolicy").is_none_or(Value::is_null) {
        set(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
    } else {
        set(spec, "podReplacementPolicy", json!("Failed"));
    }
    if let Some(t) = existing(spec, "template") {
        pod::template(t);
    }
}

fn cronjob(obj: &mut Value) {
    let Some(spec) = child(obj, "spec") else { return };
    set(spec, "concurrencyPolicy", json!("Allow"));
    set(spec, "suspend", json!(false));
    set(spec, "successfulJobsHistoryLimit", json!(3));
    set(spec, "failedJobsHistoryLimit", json!(1));
    let template = existing(spec, "jobTemplate").and_then(|j| existing(j, "spec"));
    if let Some(t) = template.and_then(|s| existing(s, "template")) {
        pod::template(t);
    }
}

fn service(obj: &mut Value) {
    if let Some(status) = child(obj, "status") {
        set(status, "loadBalancer", json!({}));
    }
    let Some(spec) = child(obj, "spec") else { return };
    set(spec, "type", json!("ClusterIP"));
    set(spec, "sessionAffinity", json!("None"));
    if spec.get("sessionAffinity").and_then(Value::as_str) == Some("ClientIP") {
        set(spec, "sessionAffinityConfig", json!({"clientIP": {"timeoutSeconds": 10800}}));
    }
    each(spec, "ports", |p| {
        tcp(p);
        // targetPort defaults to the port (an unset or zero targetPort).
        let target_unset = match p.get("targetPort") {
            None | Some(Value::Null) => true,
            Some(Value::Number(n)) => n.as_i64() == Some(0),
            Some(Value::String(s)) => s.is_empty(),
            _ => false,
        };
        if target_unset {
            if let Some(port) = p.get("port").cloned() {
                if let Some(map) = p.as_object_mut() {
                    map.insert("targetPort".into(), port);
                }
            }
        }
    });
    let kind = spec.get("type").and_then(Value::as_str).unwrap_or("").to_string();
    if kind == "NodePort" || kind == "LoadBalancer" {
        set(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if kind == "LoadBalancer" {
        set(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if kind != "ExternalName" {
        set(spec, "internalTrafficPolicy", json!("Cluster"));
        // The service REST strategy: a single-stack IPv4 cluster. Headless services without a
        // selector default to RequireDualStack (with only the families the cluster has).
        let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
        let selectorless =
            spec.get("selector").and_then(Value::as_object).is_none_or(|m| m.is_empty());
        let policy = if headless && selectorless { "RequireDualStack" } else { "SingleStack" };
        set(spec, "ipFamilyPolicy", json!(policy));
        set(spec, "ipFamilies", json!(["IPv4"]));
    }
}

fn namespace(obj: &mut Value) {
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).map(str::to_string);
    // SetDefaults_Namespace: the immutable name label (since 1.21).
    if let Some(name) = name {
        if let Some(labels) = child(obj, "metadata").and_then(|m| child(m, "labels")) {
            set(labels, "kubernetes.io/metadata.name", json!(name));
        }
    }
    // The namespace strategy on create: the kubernetes finalizer and the Active phase.
    if let Some(spec) = child(obj, "spec") {
        set(spec, "finalizers", json!(["kubernetes"]));
    }
    if let Some(status) = child(obj, "status") {
        set(status, "phase", json!("Active"));
    }
}

/// SetDefaults_Secret, and the v1 conversion: write-only `stringData` entries are merged into
/// `data` (base64-encoded, overriding existing keys) and never stored.
fn secret(obj: &mut Value) {
    use base64::Engine as _;
    set(obj, "type", json!("Opaque"));
    let Some(map) = obj.as_object_mut() else { return };
    let Some(Value::Object(string_data)) = map.get("stringData").cloned() else { return };
    if !map.get("data").is_some_and(|d| d.is_object()) {
        map.insert("data".into(), json!({}));
    }
    if let Some(data) = map.get_mut("data").and_then(Value::as_object_mut) {
        for (key, value) in string_data {
            if let Some(text) = value.as_str() {
                let encoded = base64::engine::general_purpose::STANDARD.encode(text);
                data.insert(key, Value::String(encoded));
            }
        }
    }
    map.remove("stringData");
}

fn persistent_volume(obj: &mut Value) {
    if let Some(spec) = child(obj, "spec") {
        set(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
        set(spec, "volumeMode", json!("Filesystem"));
    }
    if let Some(status) = child(obj, "status") {
        set(status, "phase", json!("Pending"));
    }
}

fn persistent_volume_claim(obj: &mut Value) {
    if let Some(spec) = child(obj, "spec") {
        set(spec, "volumeMode", json!("Filesystem"));
    }
    if let Some(status) = child(obj, "status") {
        set(status, "phase", json!("Pending"));
    }
}

fn hpa(obj: &mut Value) {
    let Some(spec) = child(obj, "spec") else { return };
    set(spec, "minReplicas", json!(1));
    // autoscaling/v2: no metrics means 80% average CPU utilization.
    let no_metrics = match spec.get("metrics") {
        None | Some(Value::Null) => true,
        Some(Value::Array(metrics)) => metrics.is_empty(),
        _ => false,
    };
    if no_metrics {
        if let Some(map) = spec.as_object_mut() {
            map.insert(
                "metrics".into(),
                json!([{"type": "Resource", "resource": {"name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 80}}}]),
            );
        }
    }
}

fn network_policy(obj: &mut Value) {
    let Some(spec) = child(obj, "spec") else { return };
    for direction in ["ingress", "egress"] {
        each(spec, direction, |rule| each(rule, "ports", tcp));
    }
    // SetDefaults_NetworkPolicy: Ingress always, Egress when egress rules exist.
    let has_egress = spec.get("egress").and_then(Value::as_array).is_some_and(|e| !e.is_empty());
    let types = if has_egress { json!(["Ingress", "Egress"]) } else { json!(["Ingress"]) };
    set(spec, "policyTypes", types);
}

fn rbac_subject(subject: &mut Value) {
    let group = match subject.get("kind").and_then(Value::as_str) {
        Some("User" | "Group") => "rbac.authorization.k8s.io",
        Some("ServiceAccount") => "",
        _ => return,
    };
    set(subject, "apiGroup", json!(group));
}

fn csi_driver(obj: &mut Value) {
    let Some(spec) = child(obj, "spec") else { return };
    set(spec, "attachRequired", json!(true));
    set(spec, "podInfoOnMount", json!(false));
    set(spec, "storageCapacity", json!(false));
    set(spec, "fsGroupPolicy", json!("ReadWriteOnceWithFSType"));
    set(spec, "requiresRepublish", json!(false));
    set(spec, "volumeLifecycleModes", json!(["Persistent"]));
    set(spec, "seLinuxMount", json!(false));
}

fn webhook(w: &mut Value, mutating: bool) {
    set(w, "failurePolicy", json!("Fail"));
    set(w, "matchPolicy", json!("Equivalent"));
    set(w, "namespaceSelector", json!({}));
    set(w, "objectSelector", json!({}));
    set(w, "timeoutSeconds", json!(10));
    if mutating {
        set(w, "reinvocationPolicy", json!("Never"));
    }
    each(w, "rules", |r| set(r, "scope", json!("*")));
    if let Some(service) = existing(w, "clientConfig").and_then(|c| existing(c, "service")) {
        set(service, "port", json!(443));
    }
}

fn crd(obj: &mut Value) {
    let Some(spec) = child(obj, "spec") else { return };
    if let Some(conversion) = child(spec, "conversion") {
        set(conversion, "strategy", json!("None"));
    }
    if let Some(names) = existing(spec, "names") {
        let kind = names.get("kind").and_then(Value::as_str).map(str::to_string);
        if let Some(kind) = kind.filter(|k| !k.is_empty()) {
            set(names, "singular", json!(kind.to_lowercase()));
            set(names, "listKind", json!(format!("{kind}List")));
        }
    }
}
