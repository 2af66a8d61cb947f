//! Which pods the pod garbage collector deletes (the reference's `gcTerminated`, `gcOrphaned`,
//! `gcUnscheduledTerminating` and `gcTerminating`), as pure functions over the cached pods and
//! nodes, and the quarantine that keeps a node missing from the cache for a moment (a watch
//! lagging, a node re-registering) from costing it its pods.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};

use crate::controllers::util::pod;

/// The taint that marks a node as out of service (its terminating pods may be force-deleted).
pub const OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";

fn node_name(p: &Pod) -> &str {
    p.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or("")
}

/// Failed with reason `Evicted` (the agent's eviction of a pod under node pressure).
fn is_evicted(p: &Pod) -> bool {
    let status = p.status.as_ref();
    pod::phase(p) == "Failed" && status.and_then(|s| s.reason.as_deref()) == Some("Evicted")
}

/// The reference's `byEvictionAndCreationTimestamp`: evicted pods first, then oldest first,
/// then by name.
fn collect_first(a: &Pod, b: &Pod) -> Ordering {
    is_evicted(b).cmp(&is_evicted(a)).then_with(|| {
        let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
        created(a).cmp(&created(b)).then_with(|| a.metadata.name.cmp(&b.metadata.name))
    })
}

/// The terminated (Succeeded or Failed) pods beyond `threshold`, evicted and oldest first;
/// none when `threshold` is 0 (collection of terminated pods is off).
pub fn terminated_beyond(pods: &[Arc<Pod>], threshold: usize) -> Vec<Arc<Pod>> {
    if threshold == 0 {
        return Vec::new();
    }
    let mut terminated: Vec<Arc<Pod>> =
        pods.iter().filter(|p| pod::is_terminal(p)).cloned().collect();
    let excess = terminated.len().saturating_sub(threshold);
    if excess == 0 {
        return Vec::new();
    }
    terminated.sort_by(|a, b| collect_first(a, b));
    terminated.truncate(excess);
    terminated
}

/// Pods bound to one of `gone_nodes`.
pub fn orphaned(pods: &[Arc<Pod>], gone_nodes: &HashSet<String>) -> Vec<Arc<Pod>> {
    pods.iter().filter(|p| gone_nodes.contains(node_name(p))).cloned().collect()
}

/// Terminating pods never bound to a node: no agent will finish their deletion.
pub fn unscheduled_terminating(pods: &[Arc<Pod>]) -> Vec<Arc<Pod>> {
    pods.iter().filter(|p| pod::is_terminating(p) && node_name(p).is_empty()).cloned().collect()
}

fn is_ready(node: &Node) -> bool {
    let conditions = node.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.into_iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Terminating pods on a node that is not ready and tainted out-of-service (the operator says
/// it is down for good), evicted and oldest first.
pub fn terminating_out_of_service(
    pods: &[Arc<Pod>],
    nodes: &HashMap<&str, &Node>,
) -> Vec<Arc<Pod>> {
    let out_of_service = |name: &str| {
        nodes.get(name).is_some_and(|n| {
            let taints = n.spec.as_ref().and_then(|s| s.taints.as_ref());
            !is_ready(n) && taints.into_iter().flatten().any(|t| t.key == OUT_OF_SERVICE)
        })
    };
    let mut found: Vec<Arc<Pod>> = pods
        .iter()
        .filter(|p| pod::is_terminating(p) && out_of_service(node_name(p)))
        .cloned()
        .collect();
    found.sort_by(|a, b| collect_first(a, b));
    found
}

/// Nodes that pods are bound to but the cache does not have, and since when.
#[derive(Debug, Default)]
pub struct Quarantine {
    since: HashMap<String, Instant>,
}

impl Quarantine {
    /// Notes the nodes `pods` are bound to that are not in `existing`, forgets the ones that
    /// came back or have no pods left, and returns the ones missing for at least `period` (to
    /// be confirmed gone with the API server) and when the next one will be due.
    pub fn observe(
        &mut self,
        pods: &[Arc<Pod>],
        existing: &HashSet<&str>,
        period: Duration,
        now: Instant,
    ) -> (Vec<String>, Option<Instant>) {
        let missing: HashSet<&str> = pods
            .iter()
            .map(|p| node_name(p))
            .filter(|n| !n.is_empty() && !existing.contains(n))
            .collect();
        self.since.retain(|n, _| missing.contains(n.as_str()));
        for node in missing {
            self.since.entry(node.to_string()).or_insert(now);
        }
        let mut due = Vec::new();
        let mut next = None::<Instant>;
        for (node, since) in &self.since {
            let at = *since + period;
            if at <= now {
                due.push(node.clone());
            } else {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        due.sort();
        (due, next)
    }

    /// Starts the quarantine of `node` over (it turned out to exist).
    pub fn release(&mut self, node: &str) {
        self.since.remove(node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::{SignedDuration, Timestamp};
    use serde_json::json;

    fn pod(name: &str, node: &str, phase: &str, age: i64) -> Arc<Pod> {
        let mut p: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": node, "containers": []},
            "status": {"phase": phase}
        }))
        .unwrap();
        let created = Timestamp::now().checked_sub(SignedDuration::from_secs(age)).unwrap();
        p.metadata.creation_timestamp = Some(Time(created));
        Arc::new(p)
    }

    fn names(pods: &[Arc<Pod>]) -> Vec<&str> {
        pods.iter().map(|p| p.metadata.name.as_deref().unwrap_or("")).collect()
    }

    #[test]
    fn terminated_pods_beyond_the_threshold_go_evicted_then_oldest_first() {
        let mut evicted = (*pod("evicted", "n", "Failed", 1)).clone();
        evicted.status.as_mut().unwrap().reason = Some("Evicted".into());
        let pods = vec![
            pod("running", "n", "Running", 1000),
            pod("new-done", "n", "Succeeded", 10),
            pod("old-failed", "n", "Failed", 500),
            pod("mid-done", "n", "Succeeded", 100),
            Arc::new(evicted),
        ];
        assert_eq!(names(&terminated_beyond(&pods, 2)), ["evicted", "old-failed"]);
        assert_eq!(names(&terminated_beyond(&pods, 1)), ["evicted", "old-failed", "mid-done"]);
        assert!(terminated_beyond(&pods, 4).is_empty());
        assert!(terminated_beyond(&pods, 0).is_empty(), "0 turns collection off");
    }

    #[test]
    fn orphans_and_unscheduled_terminating_pods_are_found() {
        let mut deleting = (*pod("deleting", "", "Pending", 1)).clone();
        deleting.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        let pods = vec![
            pod("on-gone", "gone", "Running", 1),
            pod("on-live", "live", "Running", 1),
            pod("pending", "", "Pending", 1),
            Arc::new(deleting),
        ];
        let gone: HashSet<String> = ["gone".to_string()].into();
        assert_eq!(names(&orphaned(&pods, &gone)), ["on-gone"]);
        assert_eq!(names(&unscheduled_terminating(&pods)), ["deleting"]);
    }

    #[test]
    fn terminating_pods_on_out_of_service_nodes_go() {
        let down: Node = serde_json::from_value(json!({
            "metadata": {"name": "down"},
            "spec": {"taints": [{"key": OUT_OF_SERVICE, "effect": "NoExecute"}]},
            "status": {"conditions": [{"type": "Ready", "status": "False"}]}
        }))
        .unwrap();
        let up: Node = serde_json::from_value(json!({
            "metadata": {"name": "up"},
            "spec": {"taints": [{"key": OUT_OF_SERVICE, "effect": "NoExecute"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap();
        let nodes: HashMap<&str, &Node> = [("down", &down), ("up", &up)].into();
        let terminating = |name: &str, node: &str| {
            let mut p = (*pod(name, node, "Running", 1)).clone();
            p.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
            Arc::new(p)
        };
        let pods =
            vec![terminating("a", "down"), terminating("b", "up"), pod("c", "down", "Running", 1)];
        assert_eq!(names(&terminating_out_of_service(&pods, &nodes)), ["a"]);
    }

    #[test]
    fn a_missing_node_is_due_only_after_the_quarantine() {
        let mut q = Quarantine::default();
        let pods = vec![pod("p", "gone", "Running", 1), pod("q", "live", "Running", 1)];
        let existing: HashSet<&str> = ["live"].into();
        let period = Duration::from_secs(40);
        let t0 = Instant::now();
        let (due, next) = q.observe(&pods, &existing, period, t0);
        assert!(due.is_empty());
        assert_eq!(next, Some(t0 + period));
        let (due, _) = q.observe(&pods, &existing, period, t0 + Duration::from_secs(39));
        assert!(due.is_empty());
        let (due, next) = q.observe(&pods, &existing, period, t0 + period);
        assert_eq!((due, next), (vec!["gone".to_string()], None));
        // The node came back: its quarantine ends; gone again, it starts over.
        let back: HashSet<&str> = ["live", "gone"].into();
        q.observe(&pods, &back, period, t0 + period);
        let later = t0 + 2 * period;
        let (due, next) = q.observe(&pods, &existing, period, later);
        assert!(due.is_empty());
        assert_eq!(next, Some(later + period));
    }
}
