//! The per-node half of a DaemonSet sync (the reference's `podsShouldBeOnNode`): the claimed
//! pods grouped by the node they are for, and for each node whether a pod must be created and
//! which pods must go — the ones on a node the DaemonSet may no longer run on, succeeded ones,
//! all but the oldest when there are several (one old and one new while surging), and failed
//! ones (which the caller deletes behind a per-node backoff, so a node that keeps rejecting
//! the pod is not hammered).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;

use super::eligibility::{target_node, Placement};
use crate::controllers::util::pod;

/// The label naming the ControllerRevision a daemon pod was made from.
pub const REVISION_HASH: &str = "controller-revision-hash";
/// The label carrying the DaemonSet's template generation a daemon pod was made from.
pub const TEMPLATE_GENERATION: &str = "pod-template-generation";

/// Pods grouped by the node they are for (see [`target_node`]).
pub type PodsByNode = BTreeMap<String, Vec<Arc<Pod>>>;

/// Groups `pods` by their node. Pods that are terminal and terminating are left out unless
/// `include_deleted_terminal` (they are gone as far as running goes); pods naming no node are
/// left out.
pub fn by_node(pods: &[Arc<Pod>], include_deleted_terminal: bool) -> PodsByNode {
    let mut map = PodsByNode::new();
    for p in pods {
        if !include_deleted_terminal && pod::is_terminal(p) && pod::is_terminating(p) {
            continue;
        }
        if let Some(node) = target_node(p) {
            map.entry(node.to_string()).or_default().push(p.clone());
        }
    }
    map
}

/// The reference's `IsPodUpdated`: the pod carries the current revision hash, or the current
/// template generation.
pub fn is_updated(p: &Pod, hash: &str, generation: Option<&str>) -> bool {
    let label = |key: &str| p.metadata.labels.as_ref().and_then(|l| l.get(key)).map(String::as_str);
    let hash_matches = !hash.is_empty() && label(REVISION_HASH) == Some(hash);
    let generation_matches = generation.is_some() && label(TEMPLATE_GENERATION) == generation;
    hash_matches || generation_matches
}

/// The reference's `podByCreationTimestampAndPhase`: bound pods first, then oldest first, then
/// by name.
pub fn oldest_first(a: &Pod, b: &Pod) -> Ordering {
    let bound = |p: &Pod| {
        p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty())
    };
    match (bound(a), bound(b)) {
        (true, false) => return Ordering::Less,
        (false, true) => return Ordering::Greater,
        _ => {}
    }
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    created(a).cmp(&created(b)).then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// What to do on one node.
#[derive(Debug, Default)]
pub struct NodeDecision {
    /// The node has no daemon pod and should run one.
    pub needs_pod: bool,
    /// Pods to delete now.
    pub delete: Vec<Arc<Pod>>,
    /// Failed pods to delete unless the node is backing off.
    pub failed: Vec<Arc<Pod>>,
}

/// The decision for a node with `placement`, whose daemon pods are `pods` (`None`: none at
/// all). `surge`: the update strategy lets a new pod start next to an old one.
pub fn decide(
    placement: Placement,
    pods: Option<&[Arc<Pod>]>,
    hash: &str,
    generation: Option<&str>,
    surge: bool,
    min_ready_seconds: i32,
    now: Timestamp,
) -> NodeDecision {
    let mut decision = NodeDecision::default();
    match pods {
        None if placement.should_run => decision.needs_pod = true,
        None => {}
        Some(pods) if placement.should_continue_running => {
            let mut running = Vec::new();
            for p in pods.iter().filter(|p| !pod::is_terminating(p)) {
                match pod::phase(p) {
                    "Failed" => decision.failed.push(p.clone()),
                    "Succeeded" => decision.delete.push(p.clone()),
                    _ => running.push(p.clone()),
                }
            }
            if running.len() <= 1 {
                return decision;
            }
            running.sort_by(|a, b| oldest_first(a, b));
            if !surge {
                decision.delete.extend(running.into_iter().skip(1));
                return decision;
            }
            // Surging: keep the oldest new pod and the oldest old pod; the old one goes once it
            // is not ready anyway, or the new one is available.
            let (mut oldest_new, mut oldest_old) = (None, None);
            for p in running {
                let slot = if is_updated(&p, hash, generation) {
                    &mut oldest_new
                } else {
                    &mut oldest_old
                };
                if slot.is_none() {
                    *slot = Some(p);
                } else {
                    decision.delete.push(p);
                }
            }
            if let (Some(new), Some(old)) = (oldest_new, oldest_old) {
                if !pod::is_ready(&old) || pod::is_available(&new, min_ready_seconds, now) {
                    decision.delete.push(old);
                }
            }
        }
        Some(pods) => {
            decision.delete.extend(pods.iter().filter(|p| !pod::is_terminating(p)).cloned())
        }
    }
    decision
}

/// Pods not yet bound whose node is not in `nodes` (the node is gone; the reference's
/// `getUnscheduledPodsWithoutNode`). Bound pods of a gone node are the pod GC's.
pub fn unscheduled_without_node(
    by_node: &PodsByNode,
    node_exists: impl Fn(&str) -> bool,
) -> impl Iterator<Item = &Arc<Pod>> {
    by_node.iter().filter(move |(node, _)| !node_exists(node)).flat_map(|(_, pods)| {
        pods.iter().filter(|p| {
            p.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or("").is_empty()
        })
    })
}

#[cfg(test)]
pub(super) mod testing {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::SignedDuration;

    /// A daemon pod on `node` made from revision `hash`, `age` seconds old, in `phase`, ready
    /// for `age` seconds when `ready`.
    pub fn daemon_pod(
        name: &str,
        node: &str,
        hash: &str,
        phase: &str,
        ready: bool,
        age: i64,
    ) -> Arc<Pod> {
        let now = Timestamp::now();
        let then = Time(now.checked_sub(SignedDuration::from_secs(age)).unwrap());
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.uid = Some(format!("uid-{name}"));
        p.metadata.creation_timestamp = Some(then.clone());
        p.metadata.labels = Some([(REVISION_HASH.to_string(), hash.to_string())].into());
        p.spec = Some(PodSpec { node_name: Some(node.into()), ..Default::default() });
        let conditions = ready.then(|| {
            vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                last_transition_time: Some(then),
                ..Default::default()
            }]
        });
        p.status = Some(PodStatus { phase: Some(phase.into()), conditions, ..Default::default() });
        Arc::new(p)
    }

    pub fn names(pods: &[Arc<Pod>]) -> Vec<&str> {
        pods.iter().map(|p| p.metadata.name.as_deref().unwrap_or("")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    const RUN: Placement = Placement { should_run: true, should_continue_running: true };
    const STAY: Placement = Placement { should_run: false, should_continue_running: true };
    const NONE: Placement = Placement { should_run: false, should_continue_running: false };

    #[test]
    fn a_node_without_a_pod_gets_one_only_where_it_should_run() {
        let now = Timestamp::now();
        assert!(decide(RUN, None, "h", None, false, 0, now).needs_pod);
        assert!(!decide(STAY, None, "h", None, false, 0, now).needs_pod);
        assert!(!decide(NONE, None, "h", None, false, 0, now).needs_pod);
    }

    #[test]
    fn pods_on_an_ineligible_node_go_and_failed_ones_are_set_apart() {
        let now = Timestamp::now();
        let pods = vec![daemon_pod("a", "n", "h", "Running", true, 10)];
        let d = decide(NONE, Some(&pods), "h", None, false, 0, now);
        assert_eq!(names(&d.delete), ["a"]);
        let d = decide(STAY, Some(&pods), "h", None, false, 0, now);
        assert!(d.delete.is_empty(), "a NoSchedule taint does not evict");

        let pods = vec![
            daemon_pod("failed", "n", "h", "Failed", false, 10),
            daemon_pod("done", "n", "h", "Succeeded", false, 10),
        ];
        let d = decide(RUN, Some(&pods), "h", None, false, 0, now);
        assert_eq!(names(&d.failed), ["failed"]);
        assert_eq!(names(&d.delete), ["done"]);
        assert!(!d.needs_pod, "the replacement comes once the failed pod is gone");
    }

    #[test]
    fn without_surge_all_but_the_oldest_go() {
        let now = Timestamp::now();
        let pods = vec![
            daemon_pod("young", "n", "h", "Running", true, 5),
            daemon_pod("old", "n", "h", "Running", true, 500),
            daemon_pod("mid", "n", "h", "Pending", false, 50),
        ];
        let d = decide(RUN, Some(&pods), "h", None, false, 0, now);
        assert_eq!(names(&d.delete), ["mid", "young"]);
    }

    #[test]
    fn surging_keeps_the_old_pod_until_the_new_one_is_available() {
        let now = Timestamp::now();
        let old = daemon_pod("old", "n", "old", "Running", true, 500);
        let new_unready = daemon_pod("new", "n", "h", "Running", false, 5);
        let pods = vec![old.clone(), new_unready];
        assert!(decide(RUN, Some(&pods), "h", None, true, 0, now).delete.is_empty());
        let new_ready = daemon_pod("new", "n", "h", "Running", true, 5);
        let pods = vec![old.clone(), new_ready];
        assert_eq!(names(&decide(RUN, Some(&pods), "h", None, true, 0, now).delete), ["old"]);
        // Ready for 5 s is not available with minReadySeconds 60.
        assert!(decide(RUN, Some(&pods), "h", None, true, 60, now).delete.is_empty());
        // A second new pod is surplus.
        let pods = vec![
            old,
            daemon_pod("new1", "n", "h", "Running", false, 50),
            daemon_pod("new2", "n", "h", "Running", false, 5),
        ];
        assert_eq!(names(&decide(RUN, Some(&pods), "h", None, true, 0, now).delete), ["new2"]);
    }

    #[test]
    fn updated_means_current_hash_or_generation() {
        let p = daemon_pod("p", "n", "h1", "Running", true, 1);
        assert!(is_updated(&p, "h1", None));
        assert!(!is_updated(&p, "h2", None));
        let mut with_generation = (*p).clone();
        with_generation
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(TEMPLATE_GENERATION.into(), "3".into());
        assert!(is_updated(&with_generation, "h2", Some("3")));
        assert!(!is_updated(&with_generation, "h2", Some("4")));
    }

    #[test]
    fn grouping_skips_deleted_terminal_pods_and_finds_unbound_orphans() {
        let mut gone = (*daemon_pod("gone", "n1", "h", "Failed", false, 1)).clone();
        gone.metadata.deletion_timestamp = gone.metadata.creation_timestamp.clone();
        let mut unbound = (*daemon_pod("unbound", "", "h", "Pending", false, 1)).clone();
        unbound.spec.as_mut().unwrap().affinity =
            Some(super::super::eligibility::pin_to_node(None, "vanished"));
        let pods = vec![
            Arc::new(gone),
            daemon_pod("live", "n1", "h", "Running", true, 1),
            Arc::new(unbound),
        ];
        let map = by_node(&pods, false);
        assert_eq!(names(&map["n1"]), ["live"]);
        assert_eq!(by_node(&pods, true)["n1"].len(), 2);
        let orphans: Vec<_> = unscheduled_without_node(&map, |n| n == "n1").cloned().collect();
        assert_eq!(names(&orphans), ["unbound"]);
    }
}
