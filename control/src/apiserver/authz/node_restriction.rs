//! NodeRestriction admission: what a node may write, as the reference's plugin of that name
//! limits it beyond what the Node authorizer's rules allow.
//!
//! The node rules let every node create, update and delete Nodes and Pods; this admission
//! narrows that to the node's own objects: its own Node — without changing its taints or
//! `spec.configSource`, and of the `kubernetes.io`/`k8s.io` labels only those a kubelet sets
//! about itself (never `node-restriction.kubernetes.io/`, nor `node-role.kubernetes.io/`,
//! which the control plane applies) — the status of pods bound to it (not their labels),
//! deleting or evicting pods bound to it, creating only mirror pods bound to and owned by it,
//! its own Lease, and tokens only for pods bound to it; of the PersistentVolumes pinned to it
//! (a Skerry extension, see [`super::node`]) it may only take off the local-path cleanup
//! finalizer, changing nothing else. Requests of anyone but a node pass untouched.
//!
//! [`admit_request`] runs before the handler and checks what the request names (reading the
//! stored pod where the answer depends on its node); [`admit_object`] runs on the object about
//! to be stored, for what only the body says (a created object's name, labels, annotations).

use serde_json::Value;

use super::node::{node_identity, pinned_node, LEASE_NAMESPACE};
use crate::apiserver::rest;
use crate::apiserver::server::{ApiServer, Call};
use crate::apiserver::status::{ApiError, ApiResult};

/// The annotation that makes a pod a mirror pod (of a static pod the node runs).
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// Labels under this domain (or a subdomain) are for the administrator to set on nodes only.
const RESTRICTED_LABEL_DOMAIN: &str = "node-restriction.kubernetes.io";
/// The `kubernetes.io` labels a kubelet may set on its own Node (the reference's
/// `kubeletapis.KubeletLabels`).
const KUBELET_LABELS: &[&str] = &[
    "kubernetes.io/hostname",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
];
/// Label domains (and their subdomains) a kubelet may set freely.
const KUBELET_LABEL_DOMAINS: &[&str] = &["kubelet.kubernetes.io", "node.kubernetes.io"];

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The reference's admission 403: `pods "p" is forbidden: <why>`.
fn refuse(call: &Call, name: &str, why: String) -> ApiError {
    super::forbidden_status(&call.info.group, &call.info.plural, name, &why)
}

fn is(call: &Call, group: &str, plural: &str) -> bool {
    call.info.group == group && call.info.plural == plural
}

/// The node of the stored pod `namespace/name`; `None` when there is no such pod (the handler
/// then answers 404 as usual).
async fn stored_pod(server: &ApiServer, namespace: &str, name: &str) -> ApiResult<Option<Value>> {
    let Some(info) = server.inner.registry.resolve("", "v1", "pods") else { return Ok(None) };
    let key = info.storage_key(Some(namespace), name);
    Ok(rest::read(server, &key).await?.map(|(pod, _)| pod))
}

/// Checks a node's request before it is handled; `verb` is the dispatcher's.
pub(crate) async fn admit_request(server: &ApiServer, call: &Call, verb: &str) -> ApiResult<()> {
    let Some(node) = node_identity(&call.user) else { return Ok(()) };
    let name = call.path.name.as_deref().unwrap_or("");
    let sub = call.path.subresource.as_deref().unwrap_or("");
    let namespace = call.namespace().unwrap_or("");
    let writes = matches!(verb, "update" | "patch" | "delete" | "deletecollection");
    if is(call, "", "nodes") && writes && name != node {
        return Err(refuse(
            call,
            name,
            format!("node {node:?} is not allowed to modify node {name:?}"),
        ));
    }
    if is(call, "", "pods") {
        let only_own = match (verb, sub) {
            ("update" | "patch", "") => {
                return Err(refuse(
                    call,
                    name,
                    format!(
                        "unexpected operation \"UPDATE\", node {node:?} can only create and delete mirror pods"
                    ),
                ))
            }
            ("deletecollection", _) => Some("delete pods"),
            ("update" | "patch", "status") => Some("update pod status for pods"),
            ("delete", "") => Some("delete pods"),
            ("create", "eviction") => Some("evict pods"),
            _ => None,
        };
        if let Some(what) = only_own {
            // A pod that does not exist is the handler's 404; one bound elsewhere is not ours.
            let pod = if name.is_empty() {
                Some(Value::Null)
            } else {
                stored_pod(server, namespace, name).await?
            };
            if pod.is_some_and(|p| text(&p, "/spec/nodeName") != node) {
                return Err(refuse(
                    call,
                    name,
                    format!("node {node:?} can only {what} with spec.nodeName set to itself"),
                ));
            }
        }
    }
    if is(call, "", "serviceaccounts") && sub == "token" {
        let request = rest::decode_body(call, Some(("authentication.k8s.io/v1", "TokenRequest")))?;
        admit_token(server, call, node, namespace, &request).await?;
    }
    Ok(())
}

/// A node's token must be bound to a pod that is bound to the node.
async fn admit_token(
    server: &ApiServer,
    call: &Call,
    node: &str,
    namespace: &str,
    request: &Value,
) -> ApiResult<()> {
    let name = call.path.name.as_deref().unwrap_or("");
    let Some(bound) = request.pointer("/spec/boundObjectRef").filter(|b| b.is_object()) else {
        return Err(refuse(call, name, "node requested token not bound to a pod".into()));
    };
    if text(bound, "/kind") != "Pod" {
        return Err(refuse(
            call,
            name,
            format!(
                "node requested token bound to a {:?}, only pods are allowed",
                text(bound, "/kind")
            ),
        ));
    }
    let pod = stored_pod(server, namespace, text(bound, "/name")).await?;
    let Some(pod) = pod else {
        return Err(refuse(
            call,
            name,
            "node requested token bound to a pod that does not exist".into(),
        ));
    };
    if text(&pod, "/spec/nodeName") != node {
        return Err(refuse(
            call,
            name,
            "node requested token bound to a pod scheduled on a different node".into(),
        ));
    }
    let uid = text(bound, "/uid");
    if !uid.is_empty() && uid != text(&pod, "/metadata/uid") {
        return Err(refuse(
            call,
            name,
            format!("the UID in the bound object reference ({uid}) does not match the UID in record. The object might have been deleted and then recreated"),
        ));
    }
    Ok(())
}

/// Whether `domain` is `parent` or one of its subdomains.
fn in_domain(domain: &str, parent: &str) -> bool {
    domain == parent || domain.strip_suffix(parent).is_some_and(|rest| rest.ends_with('.'))
}

/// Whether a node may not set, change or remove the label `key` on itself: the restricted
/// domain, and every `kubernetes.io`/`k8s.io` label but the kubelet's own (so a node cannot
/// steer workloads meant for other nodes, e.g. `node-role.kubernetes.io/control-plane`).
fn restricted(key: &str) -> bool {
    let Some((domain, _)) = key.split_once('/') else { return false };
    if in_domain(domain, RESTRICTED_LABEL_DOMAIN) {
        return true;
    }
    let kubernetes = in_domain(domain, "kubernetes.io") || in_domain(domain, "k8s.io");
    kubernetes
        && !KUBELET_LABELS.contains(&key)
        && !KUBELET_LABEL_DOMAINS.iter().any(|d| in_domain(domain, d))
}

/// The restricted labels `new` adds, changes or (against `old`) removes, sorted.
fn restricted_changes(old: Option<&Value>, new: &Value) -> Vec<String> {
    let labels = |obj: Option<&Value>| {
        obj.and_then(|o| o.pointer("/metadata/labels")).and_then(Value::as_object).cloned()
    };
    let (before, after) = (labels(old).unwrap_or_default(), labels(Some(new)).unwrap_or_default());
    let mut keys: Vec<String> = before
        .keys()
        .chain(after.keys())
        .filter(|k| restricted(k) && before.get(*k) != after.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Checks the object a node's create (`old` is `None`) or update is about to store.
pub(crate) fn admit_object(call: &Call, old: Option<&Value>, new: &Value) -> ApiResult<()> {
    let Some(node) = node_identity(&call.user) else { return Ok(()) };
    let name = text(new, "/metadata/name");
    if is(call, "", "nodes") {
        if name != node {
            return Err(refuse(
                call,
                name,
                format!("node {node:?} is not allowed to modify node {name:?}"),
            ));
        }
        admit_node_spec(call, node, name, old, new)?;
        let changed = restricted_changes(old, new);
        if !changed.is_empty() {
            let why = if old.is_none() {
                format!(
                    "node {node:?} is not allowed to set the following labels: {}",
                    changed.join(", ")
                )
            } else {
                format!("is not allowed to modify labels: {}", changed.join(", "))
            };
            return Err(refuse(call, name, why));
        }
    }
    if is(call, "", "pods") && call.path.subresource.as_deref() == Some("status") {
        let labels = |pod: Option<&Value>| pod.and_then(|p| p.pointer("/metadata/labels")).cloned();
        let none_if_empty =
            |l: Option<Value>| l.filter(|v| v.as_object().is_some_and(|o| !o.is_empty()));
        if none_if_empty(labels(old)) != none_if_empty(labels(Some(new))) {
            return Err(refuse(
                call,
                name,
                format!("node {node:?} cannot update labels through pod status"),
            ));
        }
    }
    if is(call, "", "pods") && old.is_none() {
        admit_mirror_pod(call, node, name, new)?;
    }
    if is(call, "", "persistentvolumes") {
        admit_volume(call, node, name, old, new)?;
    }
    if is(call, "coordination.k8s.io", "leases")
        && old.is_none()
        && (call.namespace() != Some(LEASE_NAMESPACE) || name != node)
    {
        return Err(refuse(
            call,
            name,
            "can only access node lease with the same name as the requesting node".into(),
        ));
    }
    Ok(())
}

/// A node changes a PersistentVolume only to take the local-path cleanup finalizer off one
/// pinned to it, once it removed the volume's directory: its Node authorizer grant is for that.
fn admit_volume(
    call: &Call,
    node: &str,
    name: &str,
    old: Option<&Value>,
    new: &Value,
) -> ApiResult<()> {
    let Some(old) = old.filter(|o| pinned_node(o) == Some(node)) else {
        return Err(refuse(
            call,
            name,
            format!("node {node:?} can only modify persistentvolumes pinned to itself"),
        ));
    };
    let finalizers = |v: &Value| -> Vec<String> {
        v.pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .map(|f| f.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default()
    };
    let (before, after) = (finalizers(old), finalizers(new));
    let cleanup = super::node::LOCAL_PATH_FINALIZER;
    let only_cleanup_removed = after.iter().all(|f| before.contains(f))
        && before.iter().all(|f| f == cleanup || after.contains(f));
    // Everything but the finalizers and what the server itself maintains must stay.
    let without = |v: &Value| {
        let mut v = v.clone();
        if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            for field in ["finalizers", "resourceVersion", "managedFields", "generation"] {
                meta.remove(field);
            }
        }
        v
    };
    if call.path.subresource.is_some() || !only_cleanup_removed || without(old) != without(new) {
        return Err(refuse(
            call,
            name,
            format!("node {node:?} can only remove the {cleanup} finalizer of a persistentvolume"),
        ));
    }
    Ok(())
}

/// A node creates only mirror pods, bound to itself, that use no API objects.
fn admit_mirror_pod(call: &Call, node: &str, name: &str, pod: &Value) -> ApiResult<()> {
    let mirror = pod.pointer("/metadata/annotations").and_then(|a| a.get(MIRROR_ANNOTATION));
    if mirror.is_none() {
        return Err(refuse(
            call,
            name,
            format!("pod does not have {MIRROR_ANNOTATION:?} annotation, node {node:?} can only create mirror pods"),
        ));
    }
    if text(pod, "/spec/nodeName") != node {
        return Err(refuse(
            call,
            name,
            format!("node {node:?} can only create pods with spec.nodeName set to itself"),
        ));
    }
    admit_mirror_owner(call, node, name, pod)?;
    use super::node::Kind;
    for (kind, _) in super::node::pod_references(pod) {
        let what = match kind {
            Kind::Secret => "secrets",
            Kind::ConfigMap => "configmaps",
            Kind::Claim => "persistentvolumeclaims",
            Kind::ServiceAccount => "serviceaccounts",
            Kind::Volume | Kind::Pod => continue,
        };
        return Err(refuse(
            call,
            name,
            format!("node {node:?} can not create pods that reference {what}"),
        ));
    }
    Ok(())
}

/// A node may not give itself a `spec.configSource` (it would widen what it may read) nor
/// change its own taints (it would draw workloads meant to stay off it).
fn admit_node_spec(
    call: &Call,
    node: &str,
    name: &str,
    old: Option<&Value>,
    new: &Value,
) -> ApiResult<()> {
    fn config_source(node: &Value) -> Option<&Value> {
        node.pointer("/spec/configSource").filter(|v| !v.is_null())
    }
    let Some(old) = old else {
        if config_source(new).is_some() {
            // The reference's message says "pods" here too.
            return Err(refuse(
                call,
                name,
                format!("node {node:?} is not allowed to create pods with a non-nil configSource"),
            ));
        }
        return Ok(());
    };
    if config_source(new).is_some() && config_source(new) != config_source(old) {
        return Err(refuse(
            call,
            name,
            format!(
                "node {node:?} is not allowed to update configSource to a new non-nil configSource"
            ),
        ));
    }
    let taints = |n: &Value| {
        n.pointer("/spec/taints").and_then(Value::as_array).filter(|t| !t.is_empty()).cloned()
    };
    if taints(new) != taints(old) {
        return Err(refuse(call, name, format!("node {node:?} is not allowed to modify taints")));
    }
    Ok(())
}

/// A mirror pod is owned by its node: exactly one owner reference, the node's Node, as its
/// controller and without `blockOwnerDeletion`.
fn admit_mirror_owner(call: &Call, node: &str, name: &str, pod: &Value) -> ApiResult<()> {
    let owners: Vec<&Value> = pod
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|o| o.iter().collect())
        .unwrap_or_default();
    let why = match owners.as_slice() {
        [] => "can only create pods with an owner reference set to itself",
        [_, _, ..] => "can only create pods with a single owner reference set to itself",
        [owner] => {
            if text(owner, "/apiVersion") != "v1"
                || text(owner, "/kind") != "Node"
                || text(owner, "/name") != node
            {
                "can only create pods with an owner reference set to itself"
            } else if owner.get("controller").and_then(Value::as_bool) != Some(true) {
                "can only create pods with a controller owner reference set to itself"
            } else if owner.get("blockOwnerDeletion").and_then(Value::as_bool) == Some(true) {
                "must not set blockOwnerDeletion on an owner reference"
            } else {
                return Ok(());
            }
        }
    };
    Err(refuse(call, name, format!("node {node:?} {why}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_restricted_label_changes_are_reported() {
        let old =
            json!({"metadata": {"labels": {"a": "1", "node-restriction.kubernetes.io/x": "1"}}});
        let same =
            json!({"metadata": {"labels": {"a": "2", "node-restriction.kubernetes.io/x": "1"}}});
        assert!(restricted_changes(Some(&old), &same).is_empty());
        let gone = json!({"metadata": {"labels": {"a": "1"}}});
        assert_eq!(restricted_changes(Some(&old), &gone), ["node-restriction.kubernetes.io/x"]);
        let sub = json!({"metadata": {"labels": {"team.node-restriction.kubernetes.io/y": "1"}}});
        assert_eq!(restricted_changes(None, &sub), ["team.node-restriction.kubernetes.io/y"]);
        assert!(!restricted("node-restriction.kubernetes.io.evil.com/x"));
    }

    #[test]
    fn nodes_set_only_the_kubelets_kubernetes_labels() {
        for allowed in [
            "kubernetes.io/hostname",
            "beta.kubernetes.io/arch",
            "topology.kubernetes.io/zone",
            "node.kubernetes.io/instance-type",
            "node.kubernetes.io/anything",
            "team.kubelet.kubernetes.io/x",
            "example.com/rack",
            "plain",
            "notkubernetes.io/x",
        ] {
            assert!(!restricted(allowed), "{allowed}");
        }
        for forbidden in [
            "node-role.kubernetes.io/control-plane",
            "kubernetes.io/role",
            "k8s.io/x",
            "sub.k8s.io/x",
            "node-restriction.kubernetes.io/x",
            "a.node-restriction.kubernetes.io/x",
        ] {
            assert!(restricted(forbidden), "{forbidden}");
        }
    }
}
