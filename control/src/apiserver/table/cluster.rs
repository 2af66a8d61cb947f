//! Printers for the cluster-infrastructure kinds: RBAC bindings, CSRs, leases, endpoint slices,
//! networking (ingresses, ingress classes, network policies), scheduling, storage, node and
//! admission-registration kinds. Roles, cluster roles, CRDs and limit ranges have no printer in
//! the reference either and fall back to the default Name / Created At table.

use serde_json::{json, Value};

use super::format::{
    age, format_selector, get, human_duration, int, list, list_with_more, or_none, text,
};
use super::{Col, Printer, AGE, NAME};

const BINDING: &[Col] = &[
    NAME,
    ("Role", "string", "", 0, "The role the binding grants."),
    AGE,
    ("Users", "string", "", 1, "Users in the binding"),
    ("Groups", "string", "", 1, "Groups in the binding"),
    ("ServiceAccounts", "string", "", 1, "ServiceAccounts in the binding"),
];
const CSR: &[Col] = &[
    NAME,
    AGE,
    ("SignerName", "string", "", 0, "The requested signer."),
    ("Requestor", "string", "", 0, "The user that created the request."),
    ("RequestedDuration", "string", "", 0, "The requested validity of the certificate."),
    ("Condition", "string", "", 0, "Approval and issuance state."),
];
const LEASE: &[Col] = &[NAME, ("Holder", "string", "", 0, "The current holder of the lease."), AGE];
const ENDPOINT_SLICE: &[Col] = &[
    NAME,
    ("AddressType", "string", "", 0, "The type of addresses carried by this slice."),
    ("Ports", "string", "", 0, "Ports exposed by the endpoints."),
    ("Endpoints", "string", "", 0, "Addresses of the endpoints."),
    AGE,
];
const INGRESS: &[Col] = &[
    NAME,
    ("Class", "string", "", 0, "The IngressClass of this ingress."),
    ("Hosts", "string", "", 0, "Hosts that incoming requests are matched against."),
    ("Address", "string", "", 0, "Ingress points of the load-balancer."),
    ("Ports", "string", "", 0, "Ports of TLS configurations that open"),
    AGE,
];
const INGRESS_CLASS: &[Col] = &[
    NAME,
    ("Controller", "string", "", 0, "Controller that is responsible for handling this class"),
    ("Parameters", "string", "", 0, "A reference to a resource with additional parameters"),
    AGE,
];
const NETWORK_POLICY: &[Col] =
    &[NAME, ("Pod-Selector", "string", "", 0, "The pods this policy applies to."), AGE];
const PRIORITY_CLASS: &[Col] = &[
    NAME,
    ("Value", "integer", "", 0, "The priority of pods of this class."),
    ("Global-Default", "boolean", "", 0, "Whether this is the default priority class."),
    AGE,
    ("PreemptionPolicy", "string", "", 0, "The policy for preempting lower-priority pods."),
];
const STORAGE_CLASS: &[Col] = &[
    NAME,
    ("Provisioner", "string", "", 0, "The volume plugin that provisions volumes."),
    ("ReclaimPolicy", "string", "", 0, "Reclaim policy of provisioned volumes."),
    ("VolumeBindingMode", "string", "", 0, "When volumes are bound and provisioned."),
    ("AllowVolumeExpansion", "string", "", 0, "Whether volumes can be expanded."),
    AGE,
];
const CSI_DRIVER: &[Col] = &[
    NAME,
    ("AttachRequired", "boolean", "", 0, "Whether the driver needs an attach operation."),
    ("PodInfoOnMount", "boolean", "", 0, "Whether pod information is passed on mount."),
    ("StorageCapacity", "boolean", "", 0, "Whether storage capacity is considered."),
    ("TokenRequests", "string", "", 0, "Audiences of the tokens passed to the driver."),
    ("RequiresRepublish", "boolean", "", 0, "Whether NodePublishVolume is called again."),
    ("Modes", "string", "", 0, "Volume lifecycle modes supported."),
    AGE,
];
const CSI_NODE: &[Col] =
    &[NAME, ("Drivers", "integer", "", 0, "The number of CSI drivers registered on the node"), AGE];
const VOLUME_ATTACHMENT: &[Col] = &[
    NAME,
    ("Attacher", "string", "name", 0, "The volume driver that attaches the volume."),
    ("PV", "string", "", 0, "The persistent volume to attach."),
    ("Node", "string", "", 0, "The node to attach to."),
    ("Attached", "boolean", "", 0, "Whether the volume is attached."),
    AGE,
];
const RUNTIME_CLASS: &[Col] =
    &[NAME, ("Handler", "string", "", 0, "The container runtime handler."), AGE];
const WEBHOOKS: &[Col] = &[
    NAME,
    ("Webhooks", "integer", "", 0, "The number of webhooks registered in this configuration"),
    AGE,
];
const ADMISSION_POLICY: &[Col] = &[
    NAME,
    ("Validations", "integer", "", 0, "The number of validation rules."),
    ("ParamKind", "string", "", 0, "The kind of resources used to parameterize this policy"),
    AGE,
];
const ADMISSION_POLICY_BINDING: &[Col] = &[
    NAME,
    ("PolicyName", "string", "", 0, "The policy this binding binds."),
    ("ParamRef", "string", "", 0, "The param resource of the binding."),
    AGE,
];

/// The printer of a cluster-infrastructure kind, if it has one.
pub(super) fn printer(group: &str, kind: &str) -> Option<(&'static [Col], Printer)> {
    let found: (&'static [Col], Printer) = match (group, kind) {
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => (BINDING, binding),
        ("certificates.k8s.io", "CertificateSigningRequest") => (CSR, csr),
        ("coordination.k8s.io", "Lease") => (LEASE, lease),
        ("discovery.k8s.io", "EndpointSlice") => (ENDPOINT_SLICE, endpoint_slice),
        ("networking.k8s.io", "Ingress") => (INGRESS, ingress),
        ("networking.k8s.io", "IngressClass") => (INGRESS_CLASS, ingress_class),
        ("networking.k8s.io", "NetworkPolicy") => (NETWORK_POLICY, network_policy),
        ("scheduling.k8s.io", "PriorityClass") => (PRIORITY_CLASS, priority_class),
        ("storage.k8s.io", "StorageClass") => (STORAGE_CLASS, storage_class),
        ("storage.k8s.io", "CSIDriver") => (CSI_DRIVER, csi_driver),
        ("storage.k8s.io", "CSINode") => (CSI_NODE, csi_node),
        ("storage.k8s.io", "VolumeAttachment") => (VOLUME_ATTACHMENT, volume_attachment),
        ("node.k8s.io", "RuntimeClass") => (RUNTIME_CLASS, runtime_class),
        (
            "admissionregistration.k8s.io",
            "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration",
        ) => (WEBHOOKS, webhooks),
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy") => {
            (ADMISSION_POLICY, admission_policy)
        }
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding") => {
            (ADMISSION_POLICY_BINDING, admission_policy_binding)
        }
        _ => return None,
    };
    Some(found)
}

fn name(obj: &Value) -> Value {
    json!(text(obj, &["metadata", "name"]))
}

fn flag(v: Option<&Value>, default: bool) -> bool {
    v.and_then(Value::as_bool).unwrap_or(default)
}

fn binding(b: &Value, now: i64) -> Vec<Value> {
    let role = format!("{}/{}", text(b, &["roleRef", "kind"]), text(b, &["roleRef", "name"]));
    let (mut users, mut groups, mut sas) = (Vec::new(), Vec::new(), Vec::new());
    for s in list(b, &["subjects"]) {
        let subject_name = text(s, &["name"]).to_string();
        match text(s, &["kind"]) {
            "User" => users.push(subject_name),
            "Group" => groups.push(subject_name),
            "ServiceAccount" => sas.push(match text(s, &["namespace"]) {
                "" => subject_name,
                ns => format!("{ns}/{subject_name}"),
            }),
            _ => {}
        }
    }
    vec![
        name(b),
        json!(role),
        json!(age(b, now)),
        json!(users.join(", ")),
        json!(groups.join(", ")),
        json!(sas.join(", ")),
    ]
}

/// The CONDITION cell: Denied / Approved / Pending, then `,Failed` and `,Issued`.
fn csr_condition(csr: &Value) -> String {
    let has = |kind: &str| {
        list(csr, &["status", "conditions"]).iter().any(|c| text(c, &["type"]) == kind)
    };
    let mut status = if has("Denied") {
        "Denied".to_string()
    } else if has("Approved") {
        "Approved".to_string()
    } else {
        "Pending".to_string()
    };
    if has("Failed") {
        status.push_str(",Failed");
    }
    if !text(csr, &["status", "certificate"]).is_empty() {
        status.push_str(",Issued");
    }
    status
}

fn csr(c: &Value, now: i64) -> Vec<Value> {
    let duration = get(c, &["spec", "expirationSeconds"])
        .and_then(Value::as_i64)
        .map(human_duration)
        .unwrap_or_else(|| "<none>".to_string());
    vec![
        name(c),
        json!(age(c, now)),
        json!(or_none(text(c, &["spec", "signerName"]))),
        json!(text(c, &["spec", "username"])),
        json!(duration),
        json!(csr_condition(c)),
    ]
}

fn lease(l: &Value, now: i64) -> Vec<Value> {
    vec![name(l), json!(text(l, &["spec", "holderIdentity"])), json!(age(l, now))]
}

fn endpoint_slice(s: &Value, now: i64) -> Vec<Value> {
    let ports: Vec<String> = list(s, &["ports"])
        .iter()
        .map(|p| {
            match (p.get("port").and_then(Value::as_i64), p.get("name").and_then(Value::as_str)) {
                (Some(port), _) => port.to_string(),
                (None, Some(n)) => n.to_string(),
                (None, None) => "*".to_string(),
            }
        })
        .collect();
    let addresses: Vec<String> = list(s, &["endpoints"])
        .iter()
        .flat_map(|e| list(e, &["addresses"]).iter().filter_map(Value::as_str).map(str::to_string))
        .collect();
    vec![
        name(s),
        json!(text(s, &["addressType"])),
        json!(list_with_more(&ports, 3, "<unset>")),
        json!(list_with_more(&addresses, 3, "<unset>")),
        json!(age(s, now)),
    ]
}

fn ingress(i: &Value, now: i64) -> Vec<Value> {
    let class = get(i, &["spec", "ingressClassName"]).and_then(Value::as_str).unwrap_or("<none>");
    let rules = list(i, &["spec", "rules"]);
    let hosts: Vec<&str> =
        rules.iter().map(|r| text(r, &["host"])).filter(|h| !h.is_empty()).take(3).collect();
    let hosts = match hosts.len() {
        0 => "*".to_string(),
        // The reference counts every rule, hosted or not, in the "+ N more".
        _ if rules.len() > 3 && hosts.len() == 3 => {
            format!("{} + {} more...", hosts.join(","), rules.len() - 3)
        }
        _ => hosts.join(","),
    };
    let mut addresses: Vec<&str> = list(i, &["status", "loadBalancer", "ingress"])
        .iter()
        .map(|a| match text(a, &["ip"]) {
            "" => text(a, &["hostname"]),
            ip => ip,
        })
        .filter(|a| !a.is_empty())
        .collect();
    addresses.sort_unstable();
    addresses.dedup();
    let ports = if list(i, &["spec", "tls"]).is_empty() { "80" } else { "80, 443" };
    vec![
        name(i),
        json!(class),
        json!(hosts),
        json!(addresses.join(",")),
        json!(ports),
        json!(age(i, now)),
    ]
}

fn ingress_class(c: &Value, now: i64) -> Vec<Value> {
    let parameters = match get(c, &["spec", "parameters"]).filter(|p| p.is_object()) {
        Some(p) => {
            let group = match text(p, &["apiGroup"]) {
                "" => String::new(),
                g => format!(".{g}"),
            };
            format!("{}{group}/{}", text(p, &["kind"]), text(p, &["name"]))
        }
        None => "<none>".to_string(),
    };
    vec![name(c), json!(text(c, &["spec", "controller"])), json!(parameters), json!(age(c, now))]
}

fn network_policy(p: &Value, now: i64) -> Vec<Value> {
    vec![name(p), json!(format_selector(get(p, &["spec", "podSelector"]))), json!(age(p, now))]
}

fn priority_class(p: &Value, now: i64) -> Vec<Value> {
    vec![
        name(p),
        json!(int(p, &["value"])),
        json!(flag(p.get("globalDefault"), false)),
        json!(age(p, now)),
        json!(text(p, &["preemptionPolicy"])),
    ]
}

fn storage_class(s: &Value, now: i64) -> Vec<Value> {
    let annotations = get(s, &["metadata", "annotations"]);
    let is_default = [
        "storageclass.kubernetes.io/is-default-class",
        "storageclass.beta.kubernetes.io/is-default-class",
    ]
    .iter()
    .any(|k| annotations.and_then(|a| a.get(*k)).and_then(Value::as_str) == Some("true"));
    let mut display = text(s, &["metadata", "name"]).to_string();
    if is_default {
        display.push_str(" (default)");
    }
    let or = |field: &str, default: &str| match text(s, &[field]) {
        "" => default.to_string(),
        v => v.to_string(),
    };
    vec![
        json!(display),
        json!(text(s, &["provisioner"])),
        json!(or("reclaimPolicy", "Delete")),
        json!(or("volumeBindingMode", "Immediate")),
        json!(flag(s.get("allowVolumeExpansion"), false)),
        json!(age(s, now)),
    ]
}

fn csi_driver(d: &Value, now: i64) -> Vec<Value> {
    let spec = d.get("spec").cloned().unwrap_or(Value::Null);
    let tokens = match spec.get("tokenRequests").and_then(Value::as_array) {
        Some(t) => t.iter().map(|t| text(t, &["audience"])).collect::<Vec<_>>().join(","),
        None => "<unset>".to_string(),
    };
    let modes: Vec<&str> =
        list(&spec, &["volumeLifecycleModes"]).iter().filter_map(Value::as_str).collect();
    vec![
        name(d),
        json!(flag(spec.get("attachRequired"), true)),
        json!(flag(spec.get("podInfoOnMount"), false)),
        json!(flag(spec.get("storageCapacity"), false)),
        json!(tokens),
        json!(flag(spec.get("requiresRepublish"), false)),
        json!(or_none(&modes.join(","))),
        json!(age(d, now)),
    ]
}

fn csi_node(n: &Value, now: i64) -> Vec<Value> {
    vec![name(n), json!(list(n, &["spec", "drivers"]).len()), json!(age(n, now))]
}

fn volume_attachment(v: &Value, now: i64) -> Vec<Value> {
    vec![
        name(v),
        json!(text(v, &["spec", "attacher"])),
        json!(text(v, &["spec", "source", "persistentVolumeName"])),
        json!(text(v, &["spec", "nodeName"])),
        json!(flag(get(v, &["status", "attached"]), false)),
        json!(age(v, now)),
    ]
}

fn runtime_class(r: &Value, now: i64) -> Vec<Value> {
    vec![name(r), json!(text(r, &["handler"])), json!(age(r, now))]
}

fn webhooks(w: &Value, now: i64) -> Vec<Value> {
    vec![name(w), json!(list(w, &["webhooks"]).len()), json!(age(w, now))]
}

fn admission_policy(p: &Value, now: i64) -> Vec<Value> {
    let param_kind = match get(p, &["spec", "paramKind"]).filter(|k| k.is_object()) {
        Some(k) => format!("{}/{}", text(k, &["apiVersion"]), text(k, &["kind"])),
        None => "<unset>".to_string(),
    };
    vec![
        name(p),
        json!(list(p, &["spec", "validations"]).len()),
        json!(param_kind),
        json!(age(p, now)),
    ]
}

fn admission_policy_binding(b: &Value, now: i64) -> Vec<Value> {
    let param = match get(b, &["spec", "paramRef"]).filter(|r| r.is_object()) {
        Some(r) if !text(r, &["name"]).is_empty() => match text(r, &["namespace"]) {
            "" => format!("*/{}", text(r, &["name"])),
            ns => format!("{ns}/{}", text(r, &["name"])),
        },
        Some(r) if r.get("selector").is_some_and(Value::is_object) => {
            format_selector(r.get("selector"))
        }
        _ => "<unset>".to_string(),
    };
    vec![name(b), json!(text(b, &["spec", "policyName"])), json!(param), json!(age(b, now))]
}

#[cfg(test)]
mod tests {
    use super::super::tests::{default_headers, headers, row, table};
    use serde_json::json;

    #[test]
    fn role_bindings_list_subjects_wide() {
        let rb = json!({"metadata": {"name": "admins"},
            "roleRef": {"kind": "ClusterRole", "name": "admin"},
            "subjects": [{"kind": "User", "name": "alice"}, {"kind": "Group", "name": "ops"},
                         {"kind": "ServiceAccount", "name": "ci", "namespace": "build"}]});
        let t = table("rbac.authorization.k8s.io", "clusterrolebindings", &[rb]);
        assert_eq!(headers(&t), ["Name", "Role", "Age", "Users", "Groups", "ServiceAccounts"]);
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["admins", "ClusterRole/admin", "<unknown>", "alice", "ops", "build/ci"])
        );
    }

    #[test]
    fn csr_condition_and_duration() {
        let csr = json!({"metadata": {"name": "node-csr"},
            "spec": {"signerName": "kubernetes.io/kube-apiserver-client-kubelet",
                     "username": "system:bootstrap:abc", "expirationSeconds": 86400},
            "status": {"conditions": [{"type": "Approved", "status": "True"}], "certificate": "LS0t"}});
        let t = table("certificates.k8s.io", "certificatesigningrequests", &[csr]);
        assert_eq!(
            default_headers(&t),
            ["Name", "Age", "SignerName", "Requestor", "RequestedDuration", "Condition"]
        );
        assert_eq!(row(&t, 0)[4..6], [json!("24h"), json!("Approved,Issued")]);
    }

    #[test]
    fn leases_slices_and_storage_classes() {
        let lease = json!({"metadata": {"name": "n1"}, "spec": {"holderIdentity": "n1"}});
        assert_eq!(table("coordination.k8s.io", "leases", &[lease])["rows"][0]["cells"][1], "n1");
        let slice = json!({"metadata": {"name": "web-abc"}, "addressType": "IPv4",
            "ports": [{"port": 80}, {"name": "metrics"}],
            "endpoints": [{"addresses": ["10.42.0.1"]}, {"addresses": ["10.42.0.2"]}]});
        let t = table("discovery.k8s.io", "endpointslices", &[slice, json!({})]);
        assert_eq!(
            row(&t, 0)[1..4],
            [json!("IPv4"), json!("80,metrics"), json!("10.42.0.1,10.42.0.2")]
        );
        assert_eq!(t["rows"][1]["cells"][2], "<unset>");
        let sc = json!({"metadata": {"name": "local", "annotations": {
            "storageclass.kubernetes.io/is-default-class": "true"}}, "provisioner": "skerry.io/local"});
        let t = table("storage.k8s.io", "storageclasses", &[sc]);
        assert_eq!(
            row(&t, 0)[0..5],
            [
                json!("local (default)"),
                json!("skerry.io/local"),
                json!("Delete"),
                json!("Immediate"),
                json!(false)
            ]
        );
    }

    #[test]
    fn crds_and_roles_use_the_default_table() {
        let t = table("apiextensions.k8s.io", "customresourcedefinitions", &[]);
        assert_eq!(headers(&t), ["Name", "Created At"]);
        let t = table("rbac.authorization.k8s.io", "clusterroles", &[]);
        assert_eq!(headers(&t), ["Name", "Created At"]);
    }
}
