//! The Node authorizer: what a node's credentials may do, as the reference's
//! `--authorization-mode=Node` decides it.
//!
//! A node (user `system:node:<name>` in group `system:nodes`) may read a Secret, ConfigMap,
//! PersistentVolumeClaim or PersistentVolume, and ask for a service account's token, only when a
//! pod bound to it refers to that object; it may touch only its own Lease in `kube-node-lease`.
//! With the reference's `AuthorizeNodeWithSelectors` (beta and on since v1.32) it reads only its
//! own Node, gets only pods bound to it, and lists or watches pods only with the field selector
//! `spec.nodeName=<itself>`; anything broader is left to RBAC.
//!
//! A Skerry extension: a node may also get, list, watch, update and patch the
//! PersistentVolumes *pinned* to it — whose node affinity is exactly one term with exactly one
//! requirement, `kubernetes.io/hostname In [<node>]` (see [`pinned_node`]), what the local-path
//! provisioner writes. Their data lives only on that node, so only its agent can remove the
//! directory once the volume is deleted; it finds them by listing with the field selector
//! [`PINNED_NODE_FIELD`]`=<itself>` (the list then returns nothing else), and may only take the
//! cleanup finalizer off ([`super::node_restriction`]). The pin is read this narrowly on
//! purpose: any wider affinity (several terms, values or operators) might place the volume on
//! more than one node, and a node must not reach a volume another node may hold.
//!
//! Everything else is decided by the rules of the `system:node` ClusterRole (the reference's
//! node rules), which RBAC no longer grants to nodes. A stolen node's credentials therefore
//! reach the secrets of the pods on that node, not every secret of the cluster; what a node may
//! write to Nodes and Pods is narrowed further by [`super::node_restriction`].
//!
//! Like RBAC, the authorizer never reads the store: [`NodeIndex`] keeps a [`Graph`] (node →
//! pods → the objects they use) up to date from the pods, claims and volumes watch caches'
//! events ([`super::node_graph`]). Refusals are `NoOpinion` with the reference's reason, so RBAC may still
//! grant a node more; the reason is what the 403 says when nothing does.

use std::sync::OnceLock;

use serde_json::Value;

pub use super::node_graph::{Graph, NodeIndex};
use super::rules::PolicyRule;
use super::{Attributes, Authorizer, Decision};
use crate::apiserver::authn::User;

/// The group every node belongs to.
pub const NODES_GROUP: &str = "system:nodes";
/// Node user names are this followed by the node's name.
pub const NODE_USER_PREFIX: &str = "system:node:";
/// Where node leases live.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// The ClusterRole whose rules are the reference's node rules.
const NODE_ROLE: &str = "system:node";
/// The field selector on PersistentVolumes that selects those pinned to a node (a Skerry
/// extension; its value is [`pinned_node`]).
pub const PINNED_NODE_FIELD: &str = "skerry.io/pinnedNode";
/// The local-path provisioner's finalizer on its volumes, the one a node may take off a volume
/// pinned to it once its agent removed the directory.
pub const LOCAL_PATH_FINALIZER: &str = "skerry.io/local-path-cleanup";
/// The node label a pinned volume's affinity names.
const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// The node a PersistentVolume is pinned to: its required node affinity is exactly one term
/// of exactly one requirement (no `matchFields`), `kubernetes.io/hostname In [<node>]` with a
/// single value. The label's value is taken as the node's name, as agents label themselves.
pub fn pinned_node(pv: &Value) -> Option<&str> {
    let terms = pv.pointer("/spec/nodeAffinity/required/nodeSelectorTerms")?.as_array()?;
    let [term] = terms.as_slice() else { return None };
    let no_fields = term.get("matchFields").and_then(Value::as_array).is_none_or(Vec::is_empty);
    let [expression] = term.get("matchExpressions")?.as_array()?.as_slice() else { return None };
    let values = expression.get("values")?.as_array()?;
    let [Value::String(node)] = values.as_slice() else { return None };
    let pinned = no_fields
        && text(expression, "/key") == HOSTNAME_LABEL
        && text(expression, "/operator") == "In"
        && !node.is_empty();
    pinned.then_some(node.as_str())
}

/// The node a user is, when it is one (the reference's `NodeIdentity`): the name after
/// `system:node:` of a member of `system:nodes`. `Some("")` is a node of unknown name.
pub fn node_identity(user: &User) -> Option<&str> {
    let name = user.name.strip_prefix(NODE_USER_PREFIX)?;
    user.groups.iter().any(|g| g == NODES_GROUP).then_some(name)
}

/// The kinds of object a node reaches through its pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Secret,
    ConfigMap,
    Claim,
    Volume,
    ServiceAccount,
    Pod,
}

pub(super) fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn items<'a>(value: &'a Value, pointer: &str) -> impl Iterator<Item = &'a Value> {
    value.pointer(pointer).and_then(Value::as_array).into_iter().flatten()
}

/// The objects a pod refers to (without its namespace): volumes, env and envFrom of every
/// container, image pull secrets and its service account.
pub fn pod_references(pod: &Value) -> Vec<(Kind, String)> {
    let mut out = Vec::new();
    let mut add = |kind: Kind, name: &str| {
        if !name.is_empty() {
            out.push((kind, name.to_string()));
        }
    };
    add(Kind::ServiceAccount, text(pod, "/spec/serviceAccountName"));
    for secret in items(pod, "/spec/imagePullSecrets") {
        add(Kind::Secret, text(secret, "/name"));
    }
    let pod_name = text(pod, "/metadata/name");
    for volume in items(pod, "/spec/volumes") {
        add(Kind::Secret, text(volume, "/secret/secretName"));
        add(Kind::ConfigMap, text(volume, "/configMap/name"));
        add(Kind::Claim, text(volume, "/persistentVolumeClaim/claimName"));
        if volume.get("ephemeral").is_some() {
            // A generic ephemeral volume's claim is named after the pod and the volume.
            add(Kind::Claim, &format!("{pod_name}-{}", text(volume, "/name")));
        }
        for source in items(volume, "/projected/sources") {
            add(Kind::Secret, text(source, "/secret/name"));
            add(Kind::ConfigMap, text(source, "/configMap/name"));
        }
        add(Kind::Secret, text(volume, "/azureFile/secretName"));
        add(Kind::Secret, text(volume, "/csi/nodePublishSecretRef/name"));
        // The other in-tree sources name their credentials `secretRef`.
        if let Some(sources) = volume.as_object() {
            for source in sources.values() {
                add(Kind::Secret, text(source, "/secretRef/name"));
            }
        }
    }
    for list in ["/spec/initContainers", "/spec/containers", "/spec/ephemeralContainers"] {
        for container in items(pod, list) {
            for env in items(container, "/env") {
                add(Kind::Secret, text(env, "/valueFrom/secretKeyRef/name"));
                add(Kind::ConfigMap, text(env, "/valueFrom/configMapKeyRef/name"));
            }
            for from in items(container, "/envFrom") {
                add(Kind::Secret, text(from, "/secretRef/name"));
                add(Kind::ConfigMap, text(from, "/configMapRef/name"));
            }
        }
    }
    out
}

/// The reference's node rules: the `system:node` bootstrap ClusterRole's.
pub fn node_rules() -> &'static [PolicyRule] {
    static RULES: OnceLock<Vec<PolicyRule>> = OnceLock::new();
    RULES.get_or_init(|| super::bootstrap::role_rules(NODE_ROLE))
}

/// The Node authorizer over one [`Graph`].
pub struct NodeAuthorizer<'a> {
    pub graph: &'a Graph,
    pub rules: &'a [PolicyRule],
}

const ALLOWED: &str = "";

impl NodeAuthorizer<'_> {
    /// `None` when the user is no node; otherwise `Ok` (allowed) or `Err` with the reason the
    /// authorizer has no opinion (the 403's reason if nothing else allows).
    pub fn judge(&self, attrs: &Attributes) -> Option<Result<(), String>> {
        let node = node_identity(&attrs.user)?;
        if node.is_empty() {
            return Some(Err("unknown node".into()));
        }
        if !attrs.resource_request {
            return Some(self.by_rules(attrs));
        }
        let verdict = match (attrs.group.as_str(), attrs.resource.as_str()) {
            ("", "secrets") => self.read_namespaced(node, Kind::Secret, attrs),
            ("", "configmaps") => self.read_namespaced(node, Kind::ConfigMap, attrs),
            ("", "persistentvolumeclaims") => self.get(node, Kind::Claim, attrs),
            ("", "persistentvolumes") => self.volume(node, attrs),
            ("", "serviceaccounts") => self.create_token(node, attrs),
            ("coordination.k8s.io", "leases") => lease(node, attrs),
            ("", "nodes") => own_node(node, attrs),
            ("", "pods") => self.pod(node, attrs),
            _ => self.by_rules(attrs),
        };
        Some(verdict)
    }

    fn by_rules(&self, attrs: &Attributes) -> Result<(), String> {
        if self.rules.iter().any(|r| r.allows(attrs)) {
            Ok(())
        } else {
            Err(String::new())
        }
    }

    fn read_namespaced(&self, node: &str, kind: Kind, attrs: &Attributes) -> Result<(), String> {
        if !matches!(attrs.verb.as_str(), "get" | "list" | "watch") {
            return Err("can only read resources of this type".into());
        }
        if !attrs.subresource.is_empty() {
            return Err("cannot read subresource".into());
        }
        if attrs.namespace.is_empty() {
            return Err("can only read namespaced object of this type".into());
        }
        self.related(node, kind, attrs)
    }

    fn get(&self, node: &str, kind: Kind, attrs: &Attributes) -> Result<(), String> {
        if attrs.verb != "get" {
            return Err("can only get individual resources of this type".into());
        }
        if !attrs.subresource.is_empty() {
            return Err("cannot get subresource".into());
        }
        self.related(node, kind, attrs)
    }

    /// PersistentVolumes: those pinned to the node (see the module docs), else what a pod bound
    /// to it uses, get only (the reference).
    fn volume(&self, node: &str, attrs: &Attributes) -> Result<(), String> {
        if attrs.subresource.is_empty() {
            let verb = attrs.verb.as_str();
            if matches!(verb, "list" | "watch")
                && selects_equal(&attrs.field_selector, PINNED_NODE_FIELD, node)
            {
                return Ok(());
            }
            let pinned = !attrs.name.is_empty() && self.graph.is_pinned(node, &attrs.name);
            if pinned && matches!(verb, "get" | "list" | "watch" | "update" | "patch") {
                return Ok(());
            }
        }
        self.get(node, Kind::Volume, attrs)
    }

    fn create_token(&self, node: &str, attrs: &Attributes) -> Result<(), String> {
        if attrs.verb != "create" || attrs.name.is_empty() {
            return Err("can only create tokens for individual service accounts".into());
        }
        if attrs.subresource != "token" {
            return Err("can only create token subresource of serviceaccount".into());
        }
        self.related(node, Kind::ServiceAccount, attrs)
    }

    fn related(&self, node: &str, kind: Kind, attrs: &Attributes) -> Result<(), String> {
        if attrs.name.is_empty() {
            return Err("No Object name found".into());
        }
        if self.graph.has_path(node, kind, &attrs.namespace, &attrs.name) {
            Ok(())
        } else {
            Err(format!("no relationship found between node '{node}' and this object"))
        }
    }
}

/// Node objects: writes are left to NodeRestriction; reads only of the node's own Node, by name
/// rather than through the graph so a node may look for its Node before creating it.
fn own_node(node: &str, attrs: &Attributes) -> Result<(), String> {
    match (attrs.subresource.as_str(), attrs.verb.as_str()) {
        ("", "create" | "update" | "patch") | ("status", "update" | "patch") => Ok(()),
        ("", "get" | "list" | "watch") if attrs.name == node => Ok(()),
        ("", "get" | "list" | "watch") if attrs.name.is_empty() => {
            Err(format!("node '{node}' cannot read all nodes, only its own Node object"))
        }
        ("", "get" | "list" | "watch") => {
            Err(format!("node '{node}' cannot read '{}', only its own Node object", attrs.name))
        }
        _ => Err(String::new()),
    }
}

/// Whether a raw field selector requires `field` to equal `value` (`=` or `==`). The list
/// handler applies every requirement, so one equality term is enough to bound what it returns.
pub fn selects_equal(selector: &str, field: &str, value: &str) -> bool {
    selector.split(',').any(|term| {
        let Some((key, wanted)) = term.split_once('=') else { return false };
        // `a!=b` splits at its `=` with `!` left on the key; `a==b` leaves `=` on the value.
        let wanted = wanted.strip_prefix('=').unwrap_or(wanted);
        key.trim() == field && wanted.trim() == value
    })
}

impl NodeAuthorizer<'_> {
    /// Pods: get a pod bound to the node, list or watch those bound to it; create, delete,
    /// status and eviction are narrowed by NodeRestriction.
    fn pod(&self, node: &str, attrs: &Attributes) -> Result<(), String> {
        match (attrs.subresource.as_str(), attrs.verb.as_str()) {
            ("", "get") => self.related(node, Kind::Pod, attrs),
            ("", "list" | "watch") => {
                if selects_equal(&attrs.field_selector, "spec.nodeName", node) {
                    Ok(())
                } else if !attrs.name.is_empty() {
                    self.related(node, Kind::Pod, attrs)
                } else {
                    Err("can only list/watch pods with spec.nodeName field selector".into())
                }
            }
            ("", "create" | "delete") | ("status", "update" | "patch") | ("eviction", "create") => {
                Ok(())
            }
            _ => Err(String::new()),
        }
    }
}

/// A node's own Lease, and nothing else of leases.
fn lease(node: &str, attrs: &Attributes) -> Result<(), String> {
    if !matches!(attrs.verb.as_str(), "get" | "create" | "update" | "patch" | "delete") {
        return Err("can only get, create, update, patch, or delete a node lease".into());
    }
    if attrs.namespace != LEASE_NAMESPACE {
        return Err(format!("can only access leases in the {LEASE_NAMESPACE} namespace"));
    }
    // A create names its object in the body, which the authorizer does not see; admission's
    // name check is the reference's answer there, here the name must match when given.
    if attrs.name != node && !(attrs.verb == "create" && attrs.name.is_empty()) {
        return Err("can only access node lease with the same name as the requesting node".into());
    }
    Ok(())
}

impl Authorizer for NodeAuthorizer<'_> {
    fn authorize(&self, attrs: &Attributes) -> Decision {
        match self.judge(attrs) {
            Some(Ok(())) => Decision::Allow(ALLOWED.into()),
            _ => Decision::NoOpinion,
        }
    }
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;
