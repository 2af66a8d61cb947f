//! The Node authorizer's graph (node → pods → the objects they use, and node → the volumes
//! pinned to it), kept up to date from the pods, claims and volumes watch caches.
//!
//! [`NodeIndex`] builds the [`Graph`] once from the caches' snapshots and from then on applies
//! only the events the caches saw since (as the reference's graph populator does from its
//! informers), so a node's request after a pod write costs that write's delta, not a pass over
//! every pod. It falls back to a full rebuild only when the events it missed have left the
//! caches' windows (or a cache re-listed). Only node users consult the graph; nothing else ever
//! pays for it.
//!
//! Every edge a pod contributes is counted, so when two pods on a node use the same Secret,
//! deleting one leaves the node its access through the other. A claim's volume is resolved when
//! asked (volume → the claims bound to it → is one of them used on the node), so binding a claim
//! after its pod needs no rework of the pods.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::node::{pinned_node, pod_references, text, Kind};
use crate::apiserver::server::ApiServer;
use crate::apiserver::watch_cache::{CacheEvent, CachedObject, EventType, WatchCache};
use crate::store::Revision;

/// `(kind, namespace, name)` of an object a node reaches; PersistentVolumes have no namespace.
type Target = (Kind, String, String);
/// `(namespace, name)` of a namespaced object.
type Named = (String, String);

/// What one bound pod contributes to its node's reach.
#[derive(Debug)]
struct PodEdges {
    node: String,
    targets: Vec<Target>,
}

/// Node → pods → referenced objects, and node → the volumes pinned to it.
#[derive(Debug, Default)]
pub struct Graph {
    /// The bound pods by (namespace, name), with what each adds to its node's reach.
    pods: HashMap<Named, PodEdges>,
    /// Per node: each object its pods refer to, with how many references lead there.
    reach: HashMap<String, HashMap<Target, usize>>,
    /// Each bound claim's volume.
    claim_volume: HashMap<Named, String>,
    /// Each volume's bound claims (the inverse of `claim_volume`).
    volume_claims: HashMap<String, HashSet<Named>>,
    /// Each pinned volume's node.
    pinned: HashMap<String, String>,
}

fn named(object: &Value) -> Named {
    (text(object, "/metadata/namespace").to_string(), text(object, "/metadata/name").to_string())
}

impl Graph {
    /// The graph of the bound pods in `pods`; `claims` give the PersistentVolume each
    /// PersistentVolumeClaim is bound to.
    pub fn build(pods: &[Arc<CachedObject>], claims: &[Arc<CachedObject>]) -> Graph {
        let mut graph = Graph::default();
        for claim in claims {
            graph.set_claim(claim, true);
        }
        for pod in pods {
            graph.set_pod(pod, true);
        }
        graph
    }

    /// The same graph knowing which of `volumes` are pinned to which node.
    pub fn with_pinned_volumes(mut self, volumes: &[Arc<CachedObject>]) -> Graph {
        for volume in volumes {
            self.set_volume(volume, true);
        }
        self
    }

    /// Records `pod` as it now is (`exists`), or its deletion: whatever the pod of that name
    /// contributed before is taken back first.
    pub fn set_pod(&mut self, pod: &Value, exists: bool) {
        let key = named(pod);
        if let Some(old) = self.pods.remove(&key) {
            if let Some(reach) = self.reach.get_mut(&old.node) {
                for target in old.targets {
                    if let Some(count) = reach.get_mut(&target) {
                        *count -= 1;
                        if *count == 0 {
                            reach.remove(&target);
                        }
                    }
                }
                if reach.is_empty() {
                    self.reach.remove(&old.node);
                }
            }
        }
        let node = text(pod, "/spec/nodeName");
        if !exists || node.is_empty() {
            return;
        }
        let (ns, name) = &key;
        let mut targets = vec![(Kind::Pod, ns.clone(), name.clone())];
        targets.extend(pod_references(pod).into_iter().map(|(kind, n)| (kind, ns.clone(), n)));
        let reach = self.reach.entry(node.to_string()).or_default();
        for target in &targets {
            *reach.entry(target.clone()).or_default() += 1;
        }
        self.pods.insert(key, PodEdges { node: node.to_string(), targets });
    }

    /// Records a PersistentVolumeClaim as it now is (`exists`), or its deletion.
    pub fn set_claim(&mut self, claim: &Value, exists: bool) {
        let key = named(claim);
        if let Some(volume) = self.claim_volume.remove(&key) {
            if let Some(claims) = self.volume_claims.get_mut(&volume) {
                claims.remove(&key);
                if claims.is_empty() {
                    self.volume_claims.remove(&volume);
                }
            }
        }
        let volume = text(claim, "/spec/volumeName");
        if exists && !volume.is_empty() {
            self.volume_claims.entry(volume.to_string()).or_default().insert(key.clone());
            self.claim_volume.insert(key, volume.to_string());
        }
    }

    /// Records a PersistentVolume as it now is (`exists`), or its deletion.
    pub fn set_volume(&mut self, volume: &Value, exists: bool) {
        let name = text(volume, "/metadata/name");
        match pinned_node(volume).filter(|_| exists) {
            Some(node) => self.pinned.insert(name.to_string(), node.to_string()),
            None => self.pinned.remove(name),
        };
    }

    /// Whether the PersistentVolume `name` is pinned to `node`.
    pub fn is_pinned(&self, node: &str, name: &str) -> bool {
        self.pinned.get(name).is_some_and(|n| n == node)
    }

    /// Whether a pod bound to `node` refers to the object (for a volume: to a claim bound to it).
    pub fn has_path(&self, node: &str, kind: Kind, namespace: &str, name: &str) -> bool {
        let Some(reach) = self.reach.get(node) else { return false };
        if kind == Kind::Volume {
            let mut claims = self.volume_claims.get(name).into_iter().flatten();
            return claims
                .any(|(ns, claim)| reach.contains_key(&(Kind::Claim, ns.clone(), claim.clone())));
        }
        reach.contains_key(&(kind, namespace.to_string(), name.to_string()))
    }
}

/// The caches the graph follows, in [`NodeIndex`]'s order.
const PODS: usize = 0;
const CLAIMS: usize = 1;
const VOLUMES: usize = 2;

/// The graph and the cache revisions it reflects.
#[derive(Debug)]
struct Tracked {
    graph: Graph,
    at: [Revision; 3],
}

/// The current [`Graph`], built once and then kept up to date from the pods, claims and volumes
/// caches' events.
#[derive(Debug, Default)]
pub struct NodeIndex {
    tracked: Mutex<Option<Tracked>>,
}

impl NodeIndex {
    fn prefixes(server: &ApiServer) -> [String; 3] {
        let prefix = |plural: &str| {
            server
                .inner
                .registry
                .resolve("", "v1", plural)
                .map(|info| info.storage_prefix.clone())
                .unwrap_or_else(|| format!("/registry/{plural}/"))
        };
        [prefix("pods"), prefix("persistentvolumeclaims"), prefix("persistentvolumes")]
    }

    /// Runs `decide` on the graph as the caches have it now. The index is locked meanwhile, so
    /// `decide` should be quick (an authorization decision).
    pub fn with_current<R>(&self, server: &ApiServer, decide: impl FnOnce(&Graph) -> R) -> R {
        let caches =
            Self::prefixes(server).map(|p| server.inner.caches.get(&server.inner.store, &p));
        let mut tracked = self.tracked.lock().unwrap_or_else(|e| e.into_inner());
        let current = match tracked.take() {
            Some(t) => advance(t, &caches).unwrap_or_else(|| rebuild(&caches)),
            None => rebuild(&caches),
        };
        decide(&tracked.insert(current).graph)
    }

    /// Waits (briefly) until the pods, claims and volumes caches have seen what the store had when
    /// called, so a pod bound a moment ago lets its node read its secrets.
    pub async fn catch_up(&self, server: &ApiServer) {
        super::catch_up(server, &Self::prefixes(server), "the node graph").await;
    }
}

/// The graph from the caches' current objects.
fn rebuild(caches: &[Arc<WatchCache>; 3]) -> Tracked {
    let (pods_rev, pods) = caches[PODS].snapshot(caches[PODS].prefix());
    let (claims_rev, claims) = caches[CLAIMS].snapshot(caches[CLAIMS].prefix());
    let (volumes_rev, volumes) = caches[VOLUMES].snapshot(caches[VOLUMES].prefix());
    let graph = Graph::build(&pods, &claims).with_pinned_volumes(&volumes);
    Tracked { graph, at: [pods_rev, claims_rev, volumes_rev] }
}

/// `tracked` with the events each cache saw since applied; `None` when some are gone.
fn advance(mut tracked: Tracked, caches: &[Arc<WatchCache>; 3]) -> Option<Tracked> {
    for (i, cache) in caches.iter().enumerate() {
        if cache.revision() == tracked.at[i] {
            continue;
        }
        let (revision, events) = cache.events_since(tracked.at[i])?;
        for event in events {
            apply(&mut tracked.graph, i, &event);
        }
        tracked.at[i] = revision;
    }
    Some(tracked)
}

fn apply(graph: &mut Graph, cache: usize, event: &CacheEvent) {
    let exists = event.kind != EventType::Deleted;
    match cache {
        PODS => graph.set_pod(&event.object, exists),
        CLAIMS => graph.set_claim(&event.object, exists),
        _ => graph.set_volume(&event.object, exists),
    }
}

#[cfg(test)]
#[path = "node_graph_tests.rs"]
mod tests;
