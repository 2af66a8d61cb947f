//! The Node authorizer: what a node's credentials may do, as the reference's
//! `--authorization-mode=Node` decides it.
//!
//! A node (user `system:node:<name>` in group `system:nodes`) may read a Secret, ConfigMap,
//! PersistentVolumeClaim or PersistentVolume, and ask for a service account's token, only when a
//! pod bound to it refers to that object; it may touch only its own Lease in `kube-node-lease`.
//! Everything else is decided by the rules of the `system:node` ClusterRole (the reference's
//! node rules), which RBAC no longer grants to nodes. A stolen node's credentials therefore
//! reach the secrets of the pods on that node, not every secret of the cluster; what a node may
//! write to Nodes and Pods is narrowed further by [`super::node_restriction`].
//!
//! Like RBAC, the authorizer never reads the store: [`NodeIndex`] keeps a [`Graph`] (node →
//! pods → the objects they use) built from the pods and claims watch caches and rebuilt only when
//! one of them moved on. Refusals are `NoOpinion` with the reference's reason, so RBAC may still
//! grant a node more; the reason is what the 403 says when nothing does.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;

use super::rules::PolicyRule;
use super::{Attributes, Authorizer, Decision};
use crate::apiserver::authn::User;
use crate::apiserver::server::ApiServer;
use crate::store::Revision;

/// The group every node belongs to.
pub const NODES_GROUP: &str = "system:nodes";
/// Node user names are this followed by the node's name.
pub const NODE_USER_PREFIX: &str = "system:node:";
/// Where node leases live.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// The ClusterRole whose rules are the reference's node rules.
const NODE_ROLE: &str = "system:node";

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

/// What the pods bound to one node refer to, by (kind, namespace, name); PersistentVolumes
/// have an empty namespace.
#[derive(Debug, Default)]
struct Reach(HashSet<(Kind, String, String)>);

/// Node → pods → referenced objects, at one moment.
#[derive(Debug, Default)]
pub struct Graph {
    nodes: HashMap<String, Reach>,
}

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
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

impl Graph {
    /// The graph of the bound pods in `pods`; `claims` give the PersistentVolume each
    /// PersistentVolumeClaim is bound to.
    pub fn build(pods: &[Arc<Value>], claims: &[Arc<Value>]) -> Graph {
        let volumes: HashMap<(&str, &str), &str> = claims
            .iter()
            .map(|c| {
                (
                    (text(c, "/metadata/namespace"), text(c, "/metadata/name")),
                    text(c, "/spec/volumeName"),
                )
            })
            .filter(|(_, volume)| !volume.is_empty())
            .collect();
        let mut graph = Graph::default();
        for pod in pods {
            let node = text(pod, "/spec/nodeName");
            if node.is_empty() {
                continue;
            }
            let ns = text(pod, "/metadata/namespace");
            let reach = &mut graph.nodes.entry(node.to_string()).or_default().0;
            reach.insert((Kind::Pod, ns.to_string(), text(pod, "/metadata/name").to_string()));
            for (kind, name) in pod_references(pod) {
                if kind == Kind::Claim {
                    if let Some(volume) = volumes.get(&(ns, name.as_str())) {
                        reach.insert((Kind::Volume, String::new(), volume.to_string()));
                    }
                }
                reach.insert((kind, ns.to_string(), name));
            }
        }
        graph
    }

    /// Whether a pod bound to `node` refers to the object.
    pub fn has_path(&self, node: &str, kind: Kind, namespace: &str, name: &str) -> bool {
        self.nodes
            .get(node)
            .is_some_and(|r| r.0.contains(&(kind, namespace.to_string(), name.to_string())))
    }
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
            ("", "persistentvolumes") => self.get(node, Kind::Volume, attrs),
            ("", "serviceaccounts") => self.create_token(node, attrs),
            ("coordination.k8s.io", "leases") => lease(node, attrs),
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

/// The current [`Graph`], rebuilt from the pods and claims caches when they have moved on.
#[derive(Debug, Default)]
pub struct NodeIndex {
    built: Mutex<Option<([Revision; 2], Arc<Graph>)>>,
}

impl NodeIndex {
    fn prefixes(server: &ApiServer) -> [String; 2] {
        let prefix = |plural: &str| {
            server
                .inner
                .registry
                .resolve("", "v1", plural)
                .map(|info| info.storage_prefix.clone())
                .unwrap_or_else(|| format!("/registry/{plural}/"))
        };
        [prefix("pods"), prefix("persistentvolumeclaims")]
    }

    /// The graph as the caches have it now.
    pub fn current(&self, server: &ApiServer) -> Arc<Graph> {
        let caches =
            Self::prefixes(server).map(|p| server.inner.caches.get(&server.inner.store, &p));
        let revisions = [caches[0].revision(), caches[1].revision()];
        let mut built = self.built.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, graph)) = built.as_ref() {
            if *at == revisions {
                return graph.clone();
            }
        }
        let (pods_rev, pods) = caches[0].snapshot(caches[0].prefix());
        let (claims_rev, claims) = caches[1].snapshot(caches[1].prefix());
        let graph = Arc::new(Graph::build(&pods, &claims));
        *built = Some(([pods_rev, claims_rev], graph.clone()));
        graph
    }

    /// Waits (briefly) until the pods and claims caches have seen what the store had when
    /// called, so a pod bound a moment ago lets its node read its secrets.
    pub async fn catch_up(&self, server: &ApiServer) {
        super::catch_up(server, &Self::prefixes(server), "the node graph").await;
    }
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;
