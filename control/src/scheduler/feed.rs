//! Keeps the cache and the queue in step with the Pod and Node informers: every pod change
//! updates the cache, pending pods of ours are queued, and changes that may make room (a node
//! added or changed in a way scheduling reads, a placed pod deleted or finished, a pod placed
//! for pods with affinity) wake parked pods, and so does any PersistentVolumeClaim,
//! PersistentVolume or StorageClass added or changed (a missing claim created, a volume made
//! or bound, a class added: what VolumeBinding waits for). A relist or a lag rebuilds the
//! cache from the informers' stores. A timer moves pods parked too long back to the queue.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use tokio::sync::broadcast::error::RecvError;

use super::cache::is_terminal_phase;
use super::cycle::{is_ours, phase, Scheduler};
use super::queue::{fingerprint, Wake, MAX_PARKED};
use crate::machinery::{Change, ObjectKey};

/// How often pods parked longer than [`MAX_PARKED`] are looked for.
const FLUSH_INTERVAL: Duration = Duration::from_secs(15);

/// What about a node scheduling reads: labels, taints, cordon, allocatable, condition
/// statuses (not heartbeat times, so a status refresh wakes nothing).
pub fn node_fingerprint(node: &Node) -> u64 {
    let spec = node.spec.as_ref();
    let status = node.status.as_ref();
    let conditions: Vec<(&str, &str)> = status
        .and_then(|s| s.conditions.as_ref())
        .map(|c| c.iter().map(|c| (c.type_.as_str(), c.status.as_str())).collect())
        .unwrap_or_default();
    let parts = (
        &node.metadata.labels,
        spec.and_then(|s| s.taints.as_ref()),
        spec.and_then(|s| s.unschedulable),
        status.and_then(|s| s.allocatable.as_ref()),
        conditions,
    );
    let mut hasher = DefaultHasher::new();
    serde_json::to_string(&parts).unwrap_or_default().hash(&mut hasher);
    hasher.finish()
}

/// Follows both informers until their channels close.
pub async fn run(scheduler: Arc<Scheduler>) {
    let mut pods = scheduler.pods.subscribe();
    let mut nodes = scheduler.nodes.subscribe();
    let mut claims = scheduler.claims.subscribe();
    let mut volumes = scheduler.volumes.subscribe();
    let mut classes = scheduler.storage_classes.subscribe();
    scheduler.pods.ready().await;
    scheduler.nodes.ready().await;
    let mut node_prints: HashMap<String, u64> = HashMap::new();
    resync(&scheduler, &mut node_prints);
    tracing::info!(nodes = node_prints.len(), "scheduler caches ready");
    let mut flush = tokio::time::interval(FLUSH_INTERVAL);
    loop {
        tokio::select! {
            change = pods.recv() => match change {
                Ok(Change::Applied(pod)) => pod_applied(&scheduler, &pod),
                Ok(Change::Deleted(pod)) => pod_deleted(&scheduler, &pod),
                Ok(Change::Resynced) | Err(RecvError::Lagged(_)) => resync(&scheduler, &mut node_prints),
                Err(RecvError::Closed) => return,
            },
            change = nodes.recv() => match change {
                Ok(Change::Applied(node)) => node_applied(&scheduler, node, &mut node_prints),
                Ok(Change::Deleted(node)) => {
                    let name = node.metadata.name.clone().unwrap_or_default();
                    node_prints.remove(&name);
                    scheduler.cache().remove_node(&name);
                }
                Ok(Change::Resynced) | Err(RecvError::Lagged(_)) => resync(&scheduler, &mut node_prints),
                Err(RecvError::Closed) => return,
            },
            // Storage: an addition or change (or a relist, which may hide one) may be what a
            // parked pod waits for; a deletion never is.
            change = claims.recv() => match change {
                Ok(Change::Deleted(_)) => {}
                Err(RecvError::Closed) => return,
                _ => scheduler.queue.wake(Wake::All),
            },
            change = volumes.recv() => match change {
                Ok(Change::Deleted(_)) => {}
                Err(RecvError::Closed) => return,
                _ => scheduler.queue.wake(Wake::All),
            },
            change = classes.recv() => match change {
                Ok(Change::Deleted(_)) => {}
                Err(RecvError::Closed) => return,
                _ => scheduler.queue.wake(Wake::All),
            },
            _ = flush.tick() => scheduler.queue.flush_parked(MAX_PARKED),
        }
    }
}

fn key_of(pod: &Pod) -> ObjectKey {
    ObjectKey::of(pod)
}

fn nominated_node(pod: &Pod) -> Option<String> {
    pod.status.as_ref().and_then(|s| s.nominated_node_name.clone())
}

fn pod_applied(scheduler: &Scheduler, pod: &Arc<Pod>) {
    let info = scheduler.pod_info(pod.clone());
    let terminal = is_terminal_phase(phase(pod));
    let assigned = !info.node_name.is_empty();
    let uid = info.uid.clone();
    let (was_placed, was_assumed) = {
        let mut cache = scheduler.cache();
        let before = (cache.is_placed(&uid), cache.is_assumed(&uid));
        cache.update_pod(info, nominated_node(pod), terminal);
        before
    };
    let key = key_of(pod);
    if is_ours(pod) {
        scheduler.queue.pod_changed(key, fingerprint(pod));
        return;
    }
    scheduler.queue.forget(&key);
    if assigned && terminal && was_placed {
        scheduler.queue.wake(Wake::All);
    } else if assigned && !terminal && (!was_placed || was_assumed) {
        scheduler.queue.wake(Wake::Affinity);
    }
}

fn pod_deleted(scheduler: &Scheduler, pod: &Pod) {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let was_placed = {
        let mut cache = scheduler.cache();
        let placed = cache.is_placed(&uid) && !cache.is_assumed(&uid);
        cache.remove_pod(&uid);
        placed
    };
    scheduler.queue.forget(&key_of(pod));
    if was_placed {
        scheduler.queue.wake(Wake::All);
    }
}

fn node_applied(scheduler: &Scheduler, node: Arc<Node>, prints: &mut HashMap<String, u64>) {
    let name = node.metadata.name.clone().unwrap_or_default();
    let print = node_fingerprint(&node);
    scheduler.cache().update_node(node);
    if prints.insert(name, print) != Some(print) {
        scheduler.queue.wake(Wake::All);
    }
}

/// Rebuilds the cache from the stores, queues every pending pod and wakes every parked one.
fn resync(scheduler: &Scheduler, prints: &mut HashMap<String, u64>) {
    let nodes = scheduler.nodes.list();
    *prints = nodes
        .iter()
        .map(|n| (n.metadata.name.clone().unwrap_or_default(), node_fingerprint(n)))
        .collect();
    let pods = scheduler.pods.list();
    let infos = pods
        .iter()
        .map(|p| (scheduler.pod_info(p.clone()), nominated_node(p), is_terminal_phase(phase(p))))
        .collect();
    scheduler.cache().reset(nodes, infos);
    for pod in pods.iter().filter(|p| is_ours(p)) {
        scheduler.queue.pod_changed(key_of(pod), fingerprint(pod));
    }
    scheduler.queue.wake(Wake::All);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(extra: serde_json::Value) -> Node {
        let mut value = json!({"metadata": {"name": "n1"}, "status": {
            "allocatable": {"cpu": "1"},
            "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": "2024-01-01T00:00:00Z"}]}});
        crate::scheduler::node_info::testing::merge(&mut value, extra);
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn heartbeats_do_not_change_the_node_fingerprint() {
        let base = node_fingerprint(&node(json!({})));
        let heartbeat = node(json!({"status": {"conditions": [{"type": "Ready", "status": "True",
            "lastHeartbeatTime": "2024-01-01T00:01:00Z"}]}}));
        assert_eq!(node_fingerprint(&heartbeat), base);
        assert_ne!(node_fingerprint(&node(json!({"spec": {"unschedulable": true}}))), base);
        assert_ne!(node_fingerprint(&node(json!({"status": {"allocatable": {"cpu": "2"}}}))), base);
        assert_ne!(node_fingerprint(&node(json!({"metadata": {"labels": {"a": "b"}}}))), base);
    }
}
