//! The scheduler's cache: a [`NodeInfo`] per node with the pods placed on it, kept up to date
//! from the Node and Pod informers, plus the pods this scheduler has *assumed* onto a node (it
//! decided and is binding, but the informer has not shown the binding yet), so two pods in a
//! row do not both take the last room on a node. Terminal pods hold nothing (the reference's
//! scheduler does not even watch them). Pods nominated to a node by preemption are kept aside:
//! they reserve room for pods of lower priority only ([`Cache::snapshot_for`]).
//!
//! Node infos are shared with snapshots through `Arc` and copied on write, so a snapshot is
//! one `Arc` clone per node.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::node_info::{NodeInfo, PodInfo};

/// One node name: its info, and whether the Node object exists (pods may name a node the
/// cache has not seen yet, or one that is gone).
#[derive(Debug, Clone)]
struct Entry {
    info: Arc<NodeInfo>,
    exists: bool,
}

/// Nodes and the pods on them.
#[derive(Debug, Default)]
pub struct Cache {
    nodes: BTreeMap<String, Entry>,
    /// uid → the placed pod (its `node_name` says where).
    placed: HashMap<String, Arc<PodInfo>>,
    /// uids of placed pods whose binding the informer has not shown yet.
    assumed: HashSet<String>,
    /// uid → (nominated node, pod) for pending pods with `status.nominatedNodeName`.
    nominated: HashMap<String, (String, Arc<PodInfo>)>,
}

/// Whether a pod has finished for good (it holds no resources).
pub fn is_terminal_phase(phase: Option<&str>) -> bool {
    matches!(phase, Some("Succeeded" | "Failed"))
}

impl Cache {
    /// Records the current state of a pod from the informer; `nominated_node` is its
    /// `status.nominatedNodeName` and `terminal` whether it has finished.
    pub fn update_pod(&mut self, pod: PodInfo, nominated_node: Option<String>, terminal: bool) {
        let uid = pod.uid.clone();
        if terminal {
            self.remove_pod(&uid);
            return;
        }
        if !pod.node_name.is_empty() {
            self.nominated.remove(&uid);
            self.assumed.remove(&uid);
            self.place(Arc::new(pod));
            return;
        }
        if self.assumed.contains(&uid) {
            // An update from before the binding: the assumption stands.
            return;
        }
        self.unplace(&uid);
        match nominated_node.filter(|n| !n.is_empty()) {
            Some(node) => {
                self.nominated.insert(uid, (node, Arc::new(pod)));
            }
            None => {
                self.nominated.remove(&uid);
            }
        }
    }

    /// Forgets a deleted pod.
    pub fn remove_pod(&mut self, uid: &str) {
        self.assumed.remove(uid);
        self.nominated.remove(uid);
        self.unplace(uid);
    }

    /// Counts `pod` on `node` before the binding is seen.
    pub fn assume(&mut self, mut pod: PodInfo, node: &str) {
        pod.node_name = node.to_string();
        self.nominated.remove(&pod.uid);
        self.assumed.insert(pod.uid.clone());
        self.place(Arc::new(pod));
    }

    /// Undoes [`Cache::assume`] (the binding failed).
    pub fn forget(&mut self, uid: &str) {
        if self.assumed.remove(uid) {
            self.unplace(uid);
        }
    }

    /// Whether the pod with `uid` is assumed (being bound by this scheduler).
    pub fn is_assumed(&self, uid: &str) -> bool {
        self.assumed.contains(uid)
    }

    /// Whether the pod with `uid` is counted on some node.
    pub fn is_placed(&self, uid: &str) -> bool {
        self.placed.contains_key(uid)
    }

    /// Records a Node object.
    pub fn update_node(&mut self, node: Arc<Node>) {
        let name = node.metadata.name.clone().unwrap_or_default();
        match self.nodes.get_mut(&name) {
            Some(entry) => {
                Arc::make_mut(&mut entry.info).set_node(node);
                entry.exists = true;
            }
            None => {
                let info = Arc::new(NodeInfo::new(node));
                self.nodes.insert(name, Entry { info, exists: true });
            }
        }
    }

    /// Forgets a deleted Node (its pods stay counted until they are gone too).
    pub fn remove_node(&mut self, name: &str) {
        if let Some(entry) = self.nodes.get_mut(name) {
            entry.exists = false;
            if entry.info.pods.is_empty() {
                self.nodes.remove(name);
            }
        }
    }

    /// Every existing node, in name order.
    pub fn snapshot(&self) -> Vec<Arc<NodeInfo>> {
        self.nodes.values().filter(|e| e.exists).map(|e| e.info.clone()).collect()
    }

    /// The snapshot for scheduling `pod`: pods nominated to a node with at least `pod`'s
    /// priority count there as if placed (the room preemption made is theirs).
    pub fn snapshot_for(&self, pod: &PodInfo) -> Vec<Arc<NodeInfo>> {
        let mut nodes = self.snapshot();
        for (node, nominated) in self.nominated.values() {
            if nominated.uid == pod.uid || nominated.priority < pod.priority {
                continue;
            }
            if let Ok(i) = nodes.binary_search_by(|n| n.name.as_str().cmp(node)) {
                Arc::make_mut(&mut nodes[i]).add_pod(nominated.clone());
            }
        }
        nodes
    }

    /// Replaces the node objects and pods wholesale (after a relist), keeping assumptions
    /// the new state has not yet confirmed or refuted.
    pub fn reset(&mut self, nodes: Vec<Arc<Node>>, pods: Vec<(PodInfo, Option<String>, bool)>) {
        let assumed: Vec<Arc<PodInfo>> =
            self.assumed.iter().filter_map(|uid| self.placed.get(uid).cloned()).collect();
        *self = Cache::default();
        for node in nodes {
            self.update_node(node);
        }
        // Assumed pods missing from the list were deleted: they are not carried over.
        for (pod, nominated, terminal) in pods {
            if pod.node_name.is_empty() && !terminal {
                if let Some(a) = assumed.iter().find(|a| a.uid == pod.uid) {
                    self.assume((**a).clone(), &a.node_name.clone());
                    continue;
                }
            }
            self.update_pod(pod, nominated, terminal);
        }
    }

    fn place(&mut self, pod: Arc<PodInfo>) {
        self.unplace(&pod.uid);
        let entry = self.nodes.entry(pod.node_name.clone()).or_insert_with(|| Entry {
            info: Arc::new(NodeInfo::new(Arc::new(placeholder(&pod.node_name)))),
            exists: false,
        });
        Arc::make_mut(&mut entry.info).add_pod(pod.clone());
        self.placed.insert(pod.uid.clone(), pod);
    }

    fn unplace(&mut self, uid: &str) {
        let Some(old) = self.placed.remove(uid) else { return };
        if let Some(entry) = self.nodes.get_mut(&old.node_name) {
            Arc::make_mut(&mut entry.info).remove_pod(uid);
            if !entry.exists && entry.info.pods.is_empty() {
                self.nodes.remove(&old.node_name);
            }
        }
    }
}

/// A Node object standing in for one the cache has not seen (not offered to scheduling).
fn placeholder(name: &str) -> Node {
    Node {
        metadata: ObjectMeta { name: Some(name.to_string()), ..ObjectMeta::default() },
        ..Node::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::node_info::testing::*;
    use serde_json::json;

    fn cache_with(nodes: &[&str]) -> Cache {
        let mut cache = Cache::default();
        for name in nodes {
            cache.update_node(node(name, "2", "4Gi", json!({})).node);
        }
        cache
    }

    fn on(mut p: PodInfo, node: &str) -> PodInfo {
        p.node_name = node.to_string();
        p
    }

    fn requested_cpu(cache: &Cache, node: &str) -> i64 {
        let snapshot = cache.snapshot();
        snapshot.iter().find(|n| n.name == node).map_or(-1, |n| n.requested.milli_cpu)
    }

    #[test]
    fn assumed_pods_count_until_the_binding_is_seen() {
        let mut cache = cache_with(&["n1"]);
        let p = pod_requesting("a", "1", "1Gi", json!({}));
        cache.assume(p.clone(), "n1");
        assert_eq!(requested_cpu(&cache, "n1"), 1000);
        // A stale update without the node name does not undo the assumption.
        cache.update_pod(p.clone(), None, false);
        assert_eq!(requested_cpu(&cache, "n1"), 1000);
        // The binding arrives: counted once, no longer assumed.
        cache.update_pod(on(p, "n1"), None, false);
        assert!(!cache.is_assumed("uid-a"));
        assert_eq!(requested_cpu(&cache, "n1"), 1000);
    }

    #[test]
    fn forgetting_an_assumption_frees_the_room() {
        let mut cache = cache_with(&["n1"]);
        cache.assume(pod_requesting("a", "1", "1Gi", json!({})), "n1");
        cache.forget("uid-a");
        assert_eq!(requested_cpu(&cache, "n1"), 0);
        assert!(!cache.is_placed("uid-a"));
    }

    #[test]
    fn terminal_and_deleted_pods_hold_nothing() {
        let mut cache = cache_with(&["n1"]);
        let p = on(pod_requesting("a", "1", "1Gi", json!({})), "n1");
        cache.update_pod(p.clone(), None, false);
        assert_eq!(requested_cpu(&cache, "n1"), 1000);
        cache.update_pod(p.clone(), None, true);
        assert_eq!(requested_cpu(&cache, "n1"), 0);
        cache.update_pod(p, None, false);
        cache.remove_pod("uid-a");
        assert_eq!(requested_cpu(&cache, "n1"), 0);
    }

    #[test]
    fn pods_on_an_unknown_node_wait_for_it_and_are_not_offered() {
        let mut cache = cache_with(&["n1"]);
        cache.update_pod(on(pod_requesting("a", "1", "1Gi", json!({})), "n2"), None, false);
        assert_eq!(cache.snapshot().len(), 1);
        cache.update_node(node("n2", "2", "4Gi", json!({})).node);
        assert_eq!(requested_cpu(&cache, "n2"), 1000);
        cache.remove_node("n2");
        assert_eq!(cache.snapshot().len(), 1);
    }

    #[test]
    fn snapshots_are_not_changed_by_later_updates() {
        let mut cache = cache_with(&["n1"]);
        let before = cache.snapshot();
        cache.update_pod(on(pod_requesting("a", "1", "1Gi", json!({})), "n1"), None, false);
        assert_eq!(before[0].requested.milli_cpu, 0);
        assert_eq!(requested_cpu(&cache, "n1"), 1000);
    }

    #[test]
    fn nominated_pods_reserve_room_for_lower_priority_pods_only() {
        let mut cache = cache_with(&["n1"]);
        let high = pod_requesting("high", "1", "1Gi", json!({"spec": {"priority": 100}}));
        cache.update_pod(high.clone(), Some("n1".into()), false);
        let low = pod("low", json!({"spec": {"priority": 0}}));
        let higher = pod("higher", json!({"spec": {"priority": 1000}}));
        assert_eq!(cache.snapshot_for(&low)[0].requested.milli_cpu, 1000);
        assert_eq!(cache.snapshot_for(&higher)[0].requested.milli_cpu, 0);
        assert_eq!(cache.snapshot_for(&high)[0].requested.milli_cpu, 0, "not itself");
        assert_eq!(cache.snapshot()[0].requested.milli_cpu, 0);
    }

    #[test]
    fn reset_keeps_unconfirmed_assumptions() {
        let mut cache = cache_with(&["n1"]);
        let a = pod_requesting("a", "1", "1Gi", json!({}));
        let b = pod_requesting("b", "500m", "1Gi", json!({}));
        cache.assume(a.clone(), "n1");
        cache.assume(b, "n1");
        let nodes = vec![node("n1", "2", "4Gi", json!({})).node];
        // `a` is still unbound in the new list; `b` is gone.
        cache.reset(nodes, vec![(a, None, false)]);
        assert!(cache.is_assumed("uid-a"));
        assert!(!cache.is_placed("uid-b"));
        assert_eq!(requested_cpu(&cache, "n1"), 1000);
    }
}
