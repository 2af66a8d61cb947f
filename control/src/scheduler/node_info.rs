//! The scheduler's view of pods and nodes: a [`PodInfo`] is a pod with what scheduling reads
//! from it worked out once (priority, requests, host ports, owner), a [`NodeInfo`] a node with
//! the pods on it and their summed requests. Both are plain data: filters and scores are pure
//! functions over them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};

use super::affinity_terms::has_pod_affinity;
use super::resources::{node_allocatable, pod_nonzero_requests, pod_requests, Resources};
use super::selectors::labels_of;

/// One host port a pod claims: protocol, IP (`0.0.0.0` when unset) and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub protocol: String,
    pub ip: String,
    pub port: i32,
}

impl HostPort {
    /// Whether two claims collide: same protocol and port, and the same IP or a wildcard.
    pub fn conflicts(&self, other: &HostPort) -> bool {
        self.protocol == other.protocol
            && self.port == other.port
            && (self.ip == other.ip || self.ip == "0.0.0.0" || other.ip == "0.0.0.0")
    }
}

/// A pod with what scheduling needs from it.
#[derive(Debug, Clone)]
pub struct PodInfo {
    pub pod: Arc<Pod>,
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// `spec.priority`, or the PriorityClass value when admission did not set it.
    pub priority: i32,
    pub requests: Resources,
    /// CPU and memory for scoring, with defaults for containers without requests.
    pub nonzero: (i64, i64),
    pub host_ports: Vec<HostPort>,
    /// The uid of the controller owner (ReplicaSet, StatefulSet, ...), for default spreading.
    pub owner: Option<String>,
    /// `spec.nodeName`, empty when unassigned.
    pub node_name: String,
    /// Marked for deletion (still holds its resources until it is gone).
    pub terminating: bool,
    /// Has pod affinity or anti-affinity terms (only such pods constrain others).
    pub has_affinity: bool,
}

impl PodInfo {
    /// Works out `pod`'s scheduling facts; `priority` is its resolved priority.
    pub fn new(pod: Arc<Pod>, priority: i32) -> PodInfo {
        let meta = &pod.metadata;
        let spec = pod.spec.as_ref();
        let host_ports = spec
            .map(|s| s.containers.iter().chain(s.init_containers.iter().flatten()))
            .into_iter()
            .flatten()
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                let port = p.host_port.filter(|&h| h > 0)?;
                Some(HostPort {
                    protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    ip: p
                        .host_ip
                        .clone()
                        .filter(|ip| !ip.is_empty())
                        .unwrap_or_else(|| "0.0.0.0".into()),
                    port,
                })
            })
            .collect();
        let owner = meta
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .map(|o| o.uid.clone());
        PodInfo {
            uid: meta.uid.clone().unwrap_or_default(),
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            priority,
            requests: pod_requests(&pod),
            nonzero: pod_nonzero_requests(&pod),
            host_ports,
            owner,
            node_name: spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
            terminating: meta.deletion_timestamp.is_some(),
            has_affinity: has_pod_affinity(&pod),
            pod,
        }
    }

    /// The pod's labels.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        labels_of(&self.pod.metadata)
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A node and the pods on it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub node: Arc<Node>,
    pub name: String,
    pub allocatable: Resources,
    pub pods: Vec<Arc<PodInfo>>,
    /// Sum of the pods' requests (`pods` counts the pods).
    pub requested: Resources,
    /// Sum of the pods' scoring CPU and memory.
    pub nonzero_requested: (i64, i64),
    /// Image name → size in bytes, from `status.images`.
    pub images: HashMap<String, i64>,
}

impl NodeInfo {
    /// A node with no pods yet.
    pub fn new(node: Arc<Node>) -> NodeInfo {
        let mut info = NodeInfo {
            name: node.metadata.name.clone().unwrap_or_default(),
            allocatable: Resources::default(),
            pods: Vec::new(),
            requested: Resources::default(),
            nonzero_requested: (0, 0),
            images: HashMap::new(),
            node: node.clone(),
        };
        info.set_node(node);
        info
    }

    /// Replaces the node object (its pods stay).
    pub fn set_node(&mut self, node: Arc<Node>) {
        self.allocatable = node_allocatable(&node);
        self.images = node
            .status
            .iter()
            .flat_map(|s| s.images.iter().flatten())
            .flat_map(|image| {
                let size = image.size_bytes.unwrap_or(0);
                image.names.iter().flatten().map(move |name| (name.clone(), size))
            })
            .collect();
        self.node = node;
    }

    /// The node's labels.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        labels_of(&self.node.metadata)
    }

    /// Counts `pod` on this node.
    pub fn add_pod(&mut self, pod: Arc<PodInfo>) {
        self.requested.add(&pod.requests);
        self.requested.pods += 1;
        self.nonzero_requested.0 += pod.nonzero.0;
        self.nonzero_requested.1 += pod.nonzero.1;
        self.pods.push(pod);
    }

    /// Stops counting the pod with `uid`; whether it was there.
    pub fn remove_pod(&mut self, uid: &str) -> bool {
        let Some(index) = self.pods.iter().position(|p| p.uid == uid) else { return false };
        let pod = self.pods.swap_remove(index);
        self.requested.sub(&pod.requests);
        self.requested.pods -= 1;
        self.nonzero_requested.0 -= pod.nonzero.0;
        self.nonzero_requested.1 -= pod.nonzero.1;
        true
    }

    /// Whether the node's `Ready` condition is `True`.
    pub fn is_ready(&self) -> bool {
        self.node
            .status
            .iter()
            .flat_map(|s| s.conditions.iter().flatten())
            .any(|c| c.type_ == "Ready" && c.status == "True")
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Builders for in-memory nodes and pods in the filter and score tests.

    use super::*;
    use serde_json::{json, Value};

    /// A Ready node with `cpu`/`memory` allocatable, 110 pod slots, and `extra` merged into
    /// the object (labels, taints, ...).
    pub fn node(name: &str, cpu: &str, memory: &str, extra: Value) -> NodeInfo {
        let mut value = json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": {},
            "status": {
                "allocatable": {"cpu": cpu, "memory": memory, "pods": "110", "ephemeral-storage": "10Gi"},
                "conditions": [{"type": "Ready", "status": "True"}]
            }
        });
        merge(&mut value, extra);
        NodeInfo::new(Arc::new(serde_json::from_value(value).expect("node")))
    }

    /// A pod in `default` with one container and `extra` merged into the object.
    pub fn pod(name: &str, extra: Value) -> PodInfo {
        let mut value = json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}
        });
        merge(&mut value, extra);
        let pod: Pod = serde_json::from_value(value).expect("pod");
        let priority = pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
        PodInfo::new(Arc::new(pod), priority)
    }

    /// A pod whose one container requests `cpu` and `memory`.
    pub fn pod_requesting(name: &str, cpu: &str, memory: &str, extra: Value) -> PodInfo {
        let mut base = json!({"spec": {"containers": [{"name": "c", "image": "busybox",
            "resources": {"requests": {"cpu": cpu, "memory": memory}}}]}});
        merge(&mut base, extra);
        pod(name, base)
    }

    /// `node` with `pods` placed on it.
    pub fn with_pods(mut node: NodeInfo, pods: Vec<PodInfo>) -> NodeInfo {
        for mut p in pods {
            p.node_name = node.name.clone();
            node.add_pod(Arc::new(p));
        }
        node
    }

    /// Recursive JSON merge (objects merge, anything else replaces).
    pub fn merge(base: &mut Value, extra: Value) {
        match (base, extra) {
            (Value::Object(b), Value::Object(e)) => {
                for (k, v) in e {
                    merge(b.entry(k).or_insert(Value::Null), v);
                }
            }
            (b, e) => *b = e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use serde_json::json;

    #[test]
    fn node_counts_added_and_removed_pods() {
        let mut n = node("n1", "2", "4Gi", json!({}));
        let p = pod_requesting("a", "500m", "1Gi", json!({}));
        n.add_pod(std::sync::Arc::new(p));
        assert_eq!(n.requested.milli_cpu, 500);
        assert_eq!(n.requested.pods, 1);
        assert!(n.remove_pod("uid-a"));
        assert_eq!(n.requested.milli_cpu, 0);
        assert_eq!(n.requested.pods, 0);
    }

    #[test]
    fn host_ports_default_protocol_and_ip() {
        let p = pod(
            "a",
            json!({"spec": {"containers": [{"name": "c", "image": "x",
            "ports": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 81}]}]}}),
        );
        assert_eq!(p.host_ports.len(), 1);
        assert_eq!(p.host_ports[0].protocol, "TCP");
        assert_eq!(p.host_ports[0].ip, "0.0.0.0");
    }
}
