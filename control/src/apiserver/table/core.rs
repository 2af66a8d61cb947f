//! Printers for core/v1 kinds other than pods: services, endpoints, nodes, namespaces,
//! configmaps, secrets, serviceaccounts, events (core and events.k8s.io), persistent volumes and
//! claims, resource quotas and component statuses.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::format::{age, format_labels, get, int, list, list_with_more, or_none, since, text};
use super::{Col, Printer, AGE, NAME};

const SERVICE: &[Col] = &[
    NAME,
    ("Type", "string", "", 0, "How the Service is exposed."),
    ("Cluster-IP", "string", "", 0, "The IP address of the service, usually allocated."),
    ("External-IP", "string", "", 0, "IP addresses the service is reachable at from outside."),
    ("Port(s)", "string", "", 0, "The list of ports exposed by this service."),
    AGE,
    ("Selector", "string", "", 1, "Route service traffic to pods with these labels."),
];
const ENDPOINTS: &[Col] = &[NAME, ("Endpoints", "string", "", 0, "The set of all endpoints."), AGE];
const NODE: &[Col] = &[
    NAME,
    ("Status", "string", "", 0, "The status of the node"),
    ("Roles", "string", "", 0, "The roles of the node"),
    AGE,
    ("Version", "string", "", 0, "Kubelet Version reported by the node."),
    ("Internal-IP", "string", "", 1, "List of addresses reachable to the node."),
    ("External-IP", "string", "", 1, "List of addresses reachable to the node."),
    ("OS-Image", "string", "", 1, "OS Image reported by the node."),
    ("Kernel-Version", "string", "", 1, "Kernel Version reported by the node."),
    ("Container-Runtime", "string", "", 1, "ContainerRuntime Version reported by the node."),
];
const NAMESPACE: &[Col] = &[NAME, ("Status", "string", "", 0, "The status of the namespace"), AGE];
const CONFIGMAP: &[Col] = &[NAME, ("Data", "string", "", 0, "Number of data entries."), AGE];
const SECRET: &[Col] = &[
    NAME,
    ("Type", "string", "", 0, "Used to facilitate programmatic handling of secret data."),
    ("Data", "string", "", 0, "Number of data entries."),
    AGE,
];
const SERVICE_ACCOUNT: &[Col] =
    &[NAME, ("Secrets", "string", "", 0, "Number of secrets referenced."), AGE];
const EVENT: &[Col] = &[
    ("Last Seen", "string", "", 0, "The time at which the most recent occurrence was recorded."),
    ("Type", "string", "", 0, "Type of this event (Normal, Warning)."),
    ("Reason", "string", "", 0, "Short, machine understandable reason for the event."),
    ("Object", "string", "", 0, "The object that this event is about."),
    ("Subobject", "string", "", 1, "The part of the object the event is about."),
    ("Source", "string", "", 1, "The component reporting this event."),
    ("Message", "string", "", 0, "A human-readable description of the event."),
    ("First Seen", "string", "", 1, "The time at which the event was first recorded."),
    ("Count", "string", "", 1, "The number of times this event has occurred."),
    ("Name", "string", "name", 1, "Name must be unique within a namespace."),
];
const PV: &[Col] = &[
    NAME,
    ("Capacity", "string", "", 0, "Capacity of the volume."),
    ("Access Modes", "string", "", 0, "Ways the volume can be mounted."),
    ("Reclaim Policy", "string", "", 0, "What happens to the volume when released."),
    ("Status", "string", "", 0, "Phase of the volume."),
    ("Claim", "string", "", 0, "The claim bound to the volume."),
    ("StorageClass", "string", "", 0, "StorageClass of the pv"),
    ("VolumeAttributesClass", "string", "", 0, "VolumeAttributesClass of the pv"),
    ("Reason", "string", "", 0, "Reason the volume is in this phase."),
    AGE,
    ("VolumeMode", "string", "", 1, "Whether the volume is a filesystem or a block device."),
];
const PVC: &[Col] = &[
    NAME,
    ("Status", "string", "", 0, "Phase of the claim."),
    ("Volume", "string", "", 0, "The volume bound to the claim."),
    ("Capacity", "string", "", 0, "Capacity of the bound volume."),
    ("Access Modes", "string", "", 0, "Ways the volume can be mounted."),
    ("StorageClass", "string", "", 0, "StorageClass of the pvc"),
    ("VolumeAttributesClass", "string", "", 0, "VolumeAttributesClass of the pvc"),
    AGE,
    ("VolumeMode", "string", "", 1, "Whether the volume is a filesystem or a block device."),
];
const QUOTA: &[Col] = &[
    NAME,
    ("Request", "string", "", 0, "Used and hard request quotas."),
    ("Limit", "string", "", 0, "Used and hard limit quotas."),
    AGE,
];
const COMPONENT_STATUS: &[Col] = &[
    NAME,
    ("Status", "string", "", 0, "Status of the component conditions"),
    ("Message", "string", "", 0, "Message of the component conditions"),
    ("Error", "string", "", 0, "Error of the component conditions"),
];

/// The printer of a core kind, if it has one.
pub(super) fn printer(group: &str, kind: &str) -> Option<(&'static [Col], Printer)> {
    let found: (&'static [Col], Printer) = match (group, kind) {
        ("", "Service") => (SERVICE, service),
        ("", "Endpoints") => (ENDPOINTS, endpoints),
        ("", "Node") => (NODE, node),
        ("", "Namespace") => (NAMESPACE, namespace),
        ("", "ConfigMap") => (CONFIGMAP, configmap),
        ("", "Secret") => (SECRET, secret),
        ("", "ServiceAccount") => (SERVICE_ACCOUNT, service_account),
        ("", "Event") => (EVENT, core_event),
        ("events.k8s.io", "Event") => (EVENT, events_event),
        ("", "PersistentVolume") => (PV, persistent_volume),
        ("", "PersistentVolumeClaim") => (PVC, persistent_volume_claim),
        ("", "ResourceQuota") => (QUOTA, resource_quota),
        ("", "ComponentStatus") => (COMPONENT_STATUS, component_status),
        _ => return None,
    };
    Some(found)
}

fn name(obj: &Value) -> Value {
    json!(text(obj, &["metadata", "name"]))
}

fn object_len(v: Option<&Value>) -> usize {
    v.and_then(Value::as_object).map(|m| m.len()).unwrap_or(0)
}

fn strings<'a>(v: &'a Value, path: &[&str]) -> Vec<&'a str> {
    list(v, path).iter().filter_map(Value::as_str).collect()
}

/// The EXTERNAL-IP cell (the reference's `getServiceExternalIP`, as printed wide).
fn external_ip(svc: &Value) -> String {
    let external = strings(svc, &["spec", "externalIPs"]);
    match text(svc, &["spec", "type"]) {
        "ClusterIP" | "NodePort" if !external.is_empty() => external.join(","),
        "ClusterIP" | "NodePort" => "<none>".to_string(),
        "LoadBalancer" => {
            let ingress: BTreeSet<&str> = list(svc, &["status", "loadBalancer", "ingress"])
                .iter()
                .map(|i| match text(i, &["ip"]) {
                    "" => text(i, &["hostname"]),
                    ip => ip,
                })
                .filter(|s| !s.is_empty())
                .collect();
            let mut all: Vec<&str> = ingress.into_iter().collect();
            all.extend(external);
            if all.is_empty() {
                "<pending>".to_string()
            } else {
                all.join(",")
            }
        }
        "ExternalName" => text(svc, &["spec", "externalName"]).to_string(),
        _ => "<unknown>".to_string(),
    }
}

fn service(svc: &Value, now: i64) -> Vec<Value> {
    let cluster_ip = strings(svc, &["spec", "clusterIPs"]).first().copied().unwrap_or("");
    let ports: Vec<String> = list(svc, &["spec", "ports"])
        .iter()
        .map(|p| {
            let protocol = text(p, &["protocol"]);
            match int(p, &["nodePort"]) {
                0 => format!("{}/{protocol}", int(p, &["port"])),
                node_port => format!("{}:{node_port}/{protocol}", int(p, &["port"])),
            }
        })
        .collect();
    vec![
        name(svc),
        json!(text(svc, &["spec", "type"])),
        json!(or_none(cluster_ip)),
        json!(external_ip(svc)),
        json!(or_none(&ports.join(","))),
        json!(age(svc, now)),
        json!(format_labels(get(svc, &["spec", "selector"]))),
    ]
}

/// ENDPOINTS: `ip:port` per address and port (bare IPs for port-less subsets), first three.
fn endpoints(ep: &Value, now: i64) -> Vec<Value> {
    let subsets = list(ep, &["subsets"]);
    let mut items = Vec::new();
    for subset in subsets {
        let addresses = list(subset, &["addresses"]);
        let ports = list(subset, &["ports"]);
        if ports.is_empty() {
            items.extend(addresses.iter().map(|a| text(a, &["ip"]).to_string()));
            continue;
        }
        for port in ports {
            for a in addresses {
                let ip = text(a, &["ip"]);
                let p = int(port, &["port"]);
                // net.JoinHostPort brackets IPv6 addresses.
                items.push(if ip.contains(':') {
                    format!("[{ip}]:{p}")
                } else {
                    format!("{ip}:{p}")
                });
            }
        }
    }
    let cell =
        if subsets.is_empty() { "<none>".to_string() } else { list_with_more(&items, 3, "") };
    vec![name(ep), json!(cell), json!(age(ep, now))]
}

fn node(n: &Value, now: i64) -> Vec<Value> {
    let ready =
        list(n, &["status", "conditions"]).iter().rev().find(|c| text(c, &["type"]) == "Ready");
    let mut status = vec![match ready {
        Some(c) if text(c, &["status"]) == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }];
    if get(n, &["spec", "unschedulable"]).and_then(Value::as_bool) == Some(true) {
        status.push("SchedulingDisabled");
    }
    let mut roles = BTreeSet::new();
    if let Some(labels) = get(n, &["metadata", "labels"]).and_then(Value::as_object) {
        for (k, v) in labels {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.insert(role.to_string());
                }
            } else if k == "kubernetes.io/role" {
                if let Some(v) = v.as_str().filter(|v| !v.is_empty()) {
                    roles.insert(v.to_string());
                }
            }
        }
    }
    let address = |kind: &str| {
        list(n, &["status", "addresses"])
            .iter()
            .find(|a| text(a, &["type"]) == kind)
            .map(|a| text(a, &["address"]).to_string())
            .unwrap_or_else(|| "<none>".to_string())
    };
    let info = |field: &str| match text(n, &["status", "nodeInfo", field]) {
        "" => "<unknown>".to_string(),
        v => v.to_string(),
    };
    vec![
        name(n),
        json!(status.join(",")),
        json!(or_none(&roles.into_iter().collect::<Vec<_>>().join(","))),
        json!(age(n, now)),
        json!(text(n, &["status", "nodeInfo", "kubeletVersion"])),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(info("osImage")),
        json!(info("kernelVersion")),
        json!(info("containerRuntimeVersion")),
    ]
}

fn namespace(ns: &Value, now: i64) -> Vec<Value> {
    vec![name(ns), json!(text(ns, &["status", "phase"])), json!(age(ns, now))]
}

fn configmap(cm: &Value, now: i64) -> Vec<Value> {
    let count = object_len(cm.get("data")) + object_len(cm.get("binaryData"));
    vec![name(cm), json!(count), json!(age(cm, now))]
}

fn secret(s: &Value, now: i64) -> Vec<Value> {
    vec![name(s), json!(text(s, &["type"])), json!(object_len(s.get("data"))), json!(age(s, now))]
}

fn service_account(sa: &Value, now: i64) -> Vec<Value> {
    vec![name(sa), json!(list(sa, &["secrets"]).len()), json!(age(sa, now))]
}

/// Field names of the two Event schemas (core/v1 and events.k8s.io/v1).
struct EventFields {
    regarding: &'static str,
    message: &'static str,
    first: &'static str,
    last: &'static str,
    count: &'static str,
    source: &'static str,
}

const CORE_EVENT: EventFields = EventFields {
    regarding: "involvedObject",
    message: "message",
    first: "firstTimestamp",
    last: "lastTimestamp",
    count: "count",
    source: "source",
};
const EVENTS_EVENT: EventFields = EventFields {
    regarding: "regarding",
    message: "note",
    first: "deprecatedFirstTimestamp",
    last: "deprecatedLastTimestamp",
    count: "deprecatedCount",
    source: "deprecatedSource",
};

fn core_event(e: &Value, now: i64) -> Vec<Value> {
    event(e, now, &CORE_EVENT)
}

fn events_event(e: &Value, now: i64) -> Vec<Value> {
    event(e, now, &EVENTS_EVENT)
}

fn present<'a>(e: &'a Value, field: &str) -> Option<&'a Value> {
    e.get(field).filter(|v| !v.is_null() && v.as_str() != Some(""))
}

fn event(e: &Value, now: i64, f: &EventFields) -> Vec<Value> {
    // The reference falls back from firstTimestamp to eventTime and from lastTimestamp to
    // firstSeen; a series overrides both the last time and the count.
    let first = match present(e, f.first) {
        Some(t) => since(Some(t), now),
        None => since(present(e, "eventTime"), now),
    };
    let mut last = match present(e, f.last) {
        Some(t) => since(Some(t), now),
        None => first.clone(),
    };
    let mut count = int(e, &[f.count]);
    if let Some(series) = e.get("series").filter(|s| s.is_object()) {
        last = since(series.get("lastObservedTime"), now);
        count = int(series, &["count"]);
    } else if count == 0 {
        count = 1;
    }
    let kind = text(e, &[f.regarding, "kind"]).to_lowercase();
    let target = match text(e, &[f.regarding, "name"]) {
        "" => kind,
        n => format!("{kind}/{n}"),
    };
    let component = match text(e, &[f.source, "component"]) {
        "" => text(e, &["reportingController"]),
        c => c,
    };
    let host = match text(e, &[f.source, "host"]) {
        "" => text(e, &["reportingInstance"]),
        h => h,
    };
    let source =
        if host.is_empty() { component.to_string() } else { format!("{component}, {host}") };
    vec![
        json!(last),
        json!(text(e, &["type"])),
        json!(text(e, &["reason"])),
        json!(target),
        json!(text(e, &[f.regarding, "fieldPath"])),
        json!(source),
        json!(text(e, &[f.message]).trim()),
        json!(first),
        json!(count),
        name(e),
    ]
}

/// Access modes abbreviated in the reference's fixed order (RWO, ROX, RWX, RWOP).
fn access_modes(modes: &[Value]) -> String {
    let has = |m: &str| modes.iter().any(|v| v.as_str() == Some(m));
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(mode, _)| has(mode))
    .map(|(_, short)| *short)
    .collect::<Vec<_>>()
    .join(",")
}

/// A storage class from `spec.storageClassName` or the beta annotation.
fn storage_class(obj: &Value) -> String {
    match text(obj, &["spec", "storageClassName"]) {
        "" => text(obj, &["metadata", "annotations", "volume.beta.kubernetes.io/storage-class"])
            .to_string(),
        class => class.to_string(),
    }
}

/// A quantity cell: the string as stored (the reference canonicalizes; users write canonical
/// forms like `1Gi` almost always).
fn quantity(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "0".to_string(),
    }
}

fn deleting(obj: &Value) -> bool {
    get(obj, &["metadata", "deletionTimestamp"]).is_some_and(|v| !v.is_null())
}

fn unset_or(v: Option<&Value>) -> String {
    v.and_then(Value::as_str).unwrap_or("<unset>").to_string()
}

fn persistent_volume(pv: &Value, now: i64) -> Vec<Value> {
    let claim = match get(pv, &["spec", "claimRef"]).filter(|c| c.is_object()) {
        Some(c) => format!("{}/{}", text(c, &["namespace"]), text(c, &["name"])),
        None => String::new(),
    };
    let phase = if deleting(pv) { "Terminating" } else { text(pv, &["status", "phase"]) };
    vec![
        name(pv),
        json!(quantity(get(pv, &["spec", "capacity", "storage"]))),
        json!(access_modes(list(pv, &["spec", "accessModes"]))),
        json!(text(pv, &["spec", "persistentVolumeReclaimPolicy"])),
        json!(phase),
        json!(claim),
        json!(storage_class(pv)),
        json!(unset_or(get(pv, &["spec", "volumeAttributesClassName"]))),
        json!(text(pv, &["status", "reason"])),
        json!(age(pv, now)),
        json!(unset_or(get(pv, &["spec", "volumeMode"]))),
    ]
}

fn persistent_volume_claim(pvc: &Value, now: i64) -> Vec<Value> {
    let phase = if deleting(pvc) { "Terminating" } else { text(pvc, &["status", "phase"]) };
    let volume = text(pvc, &["spec", "volumeName"]);
    // Capacity and modes show only once bound, as in the reference.
    let (capacity, modes) = if volume.is_empty() {
        (String::new(), String::new())
    } else {
        (
            quantity(get(pvc, &["status", "capacity", "storage"])),
            access_modes(list(pvc, &["status", "accessModes"])),
        )
    };
    vec![
        name(pvc),
        json!(phase),
        json!(volume),
        json!(capacity),
        json!(modes),
        json!(storage_class(pvc)),
        json!(unset_or(get(pvc, &["spec", "volumeAttributesClassName"]))),
        json!(age(pvc, now)),
        json!(unset_or(get(pvc, &["spec", "volumeMode"]))),
    ]
}

fn resource_quota(q: &Value, now: i64) -> Vec<Value> {
    let hard = get(q, &["status", "hard"]).and_then(Value::as_object);
    let mut requests = Vec::new();
    let mut limits = Vec::new();
    if let Some(hard) = hard {
        // serde_json maps are sorted by key, matching the reference's sorted resource names.
        for (resource, value) in hard {
            let used = quantity(get(q, &["status", "used", resource]));
            let entry = format!("{resource}: {used}/{}", quantity(Some(value)));
            if resource.split('.').next() == Some("limits") && resource.contains('.') {
                limits.push(entry);
            } else {
                requests.push(entry);
            }
        }
    }
    vec![name(q), json!(requests.join(", ")), json!(limits.join(", ")), json!(age(q, now))]
}

fn component_status(cs: &Value, _now: i64) -> Vec<Value> {
    let healthy = list(cs, &["conditions"]).iter().find(|c| text(c, &["type"]) == "Healthy");
    let (status, message, error) = match healthy {
        Some(c) => (
            if text(c, &["status"]) == "True" { "Healthy" } else { "Unhealthy" },
            text(c, &["message"]),
            text(c, &["error"]),
        ),
        None => ("Unknown", "", ""),
    };
    vec![name(cs), json!(status), json!(message), json!(error)]
}

#[cfg(test)]
mod tests {
    use super::super::tests::{default_headers, row, table};
    use serde_json::json;

    #[test]
    fn service_rows_per_type() {
        let svc = |spec: serde_json::Value| json!({"metadata": {"name": "s"}, "spec": spec});
        let cluster = svc(json!({"type": "ClusterIP", "clusterIPs": ["10.43.0.10"],
            "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
            "selector": {"k8s-app": "dns"}}));
        let t = table("", "services", &[cluster]);
        assert_eq!(
            default_headers(&t),
            ["Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age"]
        );
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "s",
                "ClusterIP",
                "10.43.0.10",
                "<none>",
                "53/UDP,53/TCP",
                "<unknown>",
                "k8s-app=dns"
            ])
        );
        let node_port = svc(json!({"type": "NodePort", "clusterIPs": ["10.43.1.1"],
            "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}));
        let lb = svc(json!({"type": "LoadBalancer", "ports": []}));
        let headless = svc(json!({"type": "ClusterIP", "clusterIPs": ["None"]}));
        let t = table("", "services", &[node_port, lb, headless]);
        assert_eq!(t["rows"][0]["cells"][4], "80:30080/TCP");
        assert_eq!(t["rows"][1]["cells"][2], "<none>");
        assert_eq!(t["rows"][1]["cells"][3], "<pending>");
        assert_eq!(t["rows"][1]["cells"][4], "<none>");
        assert_eq!(t["rows"][2]["cells"][2], "None");
    }

    #[test]
    fn node_status_roles_and_addresses() {
        let n = json!({"metadata": {"name": "pi-1", "labels": {
                "node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/edge": ""}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "addresses": [{"type": "InternalIP", "address": "192.168.1.5"}],
                       "nodeInfo": {"kubeletVersion": "v1.33.1", "osImage": "Debian"}}});
        let t = table("", "nodes", &[n]);
        assert_eq!(default_headers(&t), ["Name", "Status", "Roles", "Age", "Version"]);
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "pi-1",
                "Ready,SchedulingDisabled",
                "control-plane,edge",
                "<unknown>",
                "v1.33.1",
                "192.168.1.5",
                "<none>",
                "Debian",
                "<unknown>",
                "<unknown>"
            ])
        );
    }

    #[test]
    fn namespaces_configmaps_secrets_endpoints() {
        let ns = json!({"metadata": {"name": "default"}, "status": {"phase": "Active"}});
        assert_eq!(table("", "namespaces", &[ns])["rows"][0]["cells"][1], "Active");
        let cm = json!({"metadata": {"name": "c"}, "data": {"a": "1"}, "binaryData": {"b": ""}});
        assert_eq!(table("", "configmaps", &[cm])["rows"][0]["cells"][1], 2);
        let s = json!({"metadata": {"name": "s"}, "type": "Opaque", "data": {"k": "dg=="}});
        let t = table("", "secrets", &[s]);
        assert_eq!(default_headers(&t), ["Name", "Type", "Data", "Age"]);
        assert_eq!(row(&t, 0)[1..3], [json!("Opaque"), json!(1)]);
        let ep = json!({"metadata": {"name": "e"}, "subsets": [{"addresses": [
            {"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "10.0.0.3"}, {"ip": "10.0.0.4"}],
            "ports": [{"port": 80}]}]});
        let none = json!({"metadata": {"name": "empty"}});
        let t = table("", "endpoints", &[ep, none]);
        assert_eq!(t["rows"][0]["cells"][1], "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 1 more...");
        assert_eq!(t["rows"][1]["cells"][1], "<none>");
    }

    #[test]
    fn events_in_both_schemas() {
        let core = json!({"metadata": {"name": "p.1"}, "type": "Warning", "reason": "BackOff",
            "involvedObject": {"kind": "Pod", "name": "web-1", "fieldPath": "spec.containers{a}"},
            "message": "Back-off restarting ", "count": 4, "source": {"component": "kubelet", "host": "n1"},
            "firstTimestamp": "2024-05-01T11:00:00Z", "lastTimestamp": "2024-05-01T11:58:00Z"});
        let t = table("", "events", &[core]);
        assert_eq!(default_headers(&t), ["Last Seen", "Type", "Reason", "Object", "Message"]);
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "2m",
                "Warning",
                "BackOff",
                "pod/web-1",
                "spec.containers{a}",
                "kubelet, n1",
                "Back-off restarting",
                "60m",
                4,
                "p.1"
            ])
        );
        let new = json!({"metadata": {"name": "x"}, "type": "Normal", "reason": "Scheduled",
            "regarding": {"kind": "Pod", "name": "p"}, "note": "assigned",
            "eventTime": "2024-05-01T11:59:30.000000Z", "reportingController": "scheduler"});
        let t = table("events.k8s.io", "events", &[new]);
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "30s",
                "Normal",
                "Scheduled",
                "pod/p",
                "",
                "scheduler",
                "assigned",
                "30s",
                1,
                "x"
            ])
        );
    }

    #[test]
    fn volumes_and_claims() {
        let pv = json!({"metadata": {"name": "pv1"}, "spec": {"capacity": {"storage": "5Gi"},
            "accessModes": ["ReadWriteMany", "ReadWriteOnce"], "persistentVolumeReclaimPolicy": "Retain",
            "claimRef": {"namespace": "ns", "name": "data"}, "storageClassName": "local"},
            "status": {"phase": "Bound"}});
        let t = table("", "persistentvolumes", &[pv]);
        assert_eq!(
            row(&t, 0)[1..9],
            [
                json!("5Gi"),
                json!("RWO,RWX"),
                json!("Retain"),
                json!("Bound"),
                json!("ns/data"),
                json!("local"),
                json!("<unset>"),
                json!("")
            ]
        );
        let pending =
            json!({"metadata": {"name": "c"}, "spec": {}, "status": {"phase": "Pending"}});
        let t = table("", "persistentvolumeclaims", &[pending]);
        assert_eq!(row(&t, 0)[1..5], [json!("Pending"), json!(""), json!(""), json!("")]);
    }
}
