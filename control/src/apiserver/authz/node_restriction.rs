//! NodeRestriction admission: what a node may write, as the reference's plugin of that name
//! limits it beyond what the Node authorizer's rules allow.
//!
//! The node rules let every node create, update and delete Nodes and Pods; this admission
//! narrows that to the node's own objects: its own Node (not its `node-restriction.kubernetes.io/`
//! labels), the status of pods bound to it, deleting or evicting pods bound to it, creating only
//! mirror pods bound to it, its own Lease, and tokens only for pods bound to it. Requests of
//! anyone but a node pass untouched.
//!
//! [`admit_request`] runs before the handler and checks what the request names (reading the
//! stored pod where the answer depends on its node); [`admit_object`] runs on the object about
//! to be stored, for what only the body says (a created object's name, labels, annotations).

use serde_json::Value;

use super::node::{node_identity, LEASE_NAMESPACE};
use crate::apiserver::rest;
use crate::apiserver::server::{ApiServer, Call};
use crate::apiserver::status::{ApiError, ApiResult};

/// The annotation that makes a pod a mirror pod (of a static pod the node runs).
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// Labels under this domain (or a subdomain) are for the administrator to set on nodes only.
const RESTRICTED_LABEL_DOMAIN: &str = "node-restriction.kubernetes.io";

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
        let request = rest::decode_body(call, None)?;
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

/// Whether a label key is in the restricted domain (the key's prefix before `/`).
fn restricted(key: &str) -> bool {
    let Some((domain, _)) = key.split_once('/') else { return false };
    domain == RESTRICTED_LABEL_DOMAIN || domain.ends_with(&format!(".{RESTRICTED_LABEL_DOMAIN}"))
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
        let changed = restricted_changes(old, new);
        if !changed.is_empty() {
            let why = if old.is_none() {
                format!(
                    "node {node:?} is not allowed to set the following labels: {}",
                    changed.join(", ")
                )
            } else {
                format!("node {node:?} is not allowed to modify labels: {}", changed.join(", "))
            };
            return Err(refuse(call, name, why));
        }
    }
    if is(call, "", "pods") && old.is_none() {
        admit_mirror_pod(call, node, name, new)?;
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
}
