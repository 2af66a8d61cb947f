//! The status a DaemonSet reports (the reference's `updateDaemonSetStatus`), which `kubectl get
//! ds` prints and `kubectl rollout status` waits on: per node that should run the pod, whether
//! one is there, and whether the oldest is ready, available and of the current revision; pods
//! on nodes that should not run one count as misscheduled.

use k8s_openapi::api::apps::v1::DaemonSetStatus;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

use super::eligibility::Placement;
use super::nodes::{is_updated, oldest_first, PodsByNode};
use crate::controllers::util::pod;

/// What the status is computed from.
pub struct Observed<'a> {
    pub nodes: &'a [(&'a Node, Placement)],
    pub by_node: &'a PodsByNode,
    pub hash: &'a str,
    pub generation: Option<&'a str>,
    pub min_ready_seconds: i32,
    pub now: Timestamp,
}

/// The counts of a DaemonSet's status; `observed_generation` is the generation the sync acted
/// on (`None`: keep the current one, the sync did not act).
pub fn calculate(
    current: &DaemonSetStatus,
    o: &Observed,
    observed_generation: Option<i64>,
) -> DaemonSetStatus {
    let mut status = current.clone();
    let (mut desired, mut scheduled, mut misscheduled) = (0, 0, 0);
    let (mut ready, mut available, mut updated) = (0, 0, 0);
    for (node, placement) in o.nodes {
        let name = node.metadata.name.as_deref().unwrap_or("");
        let pods = o.by_node.get(name).filter(|p| !p.is_empty());
        if !placement.should_run {
            if pods.is_some() {
                misscheduled += 1;
            }
            continue;
        }
        desired += 1;
        let Some(pods) = pods else { continue };
        scheduled += 1;
        let Some(oldest) = pods.iter().min_by(|a, b| oldest_first(a, b)) else { continue };
        if pod::is_ready(oldest) {
            ready += 1;
            if pod::is_available(oldest, o.min_ready_seconds, o.now) {
                available += 1;
            }
        }
        if is_updated(oldest, o.hash, o.generation) {
            updated += 1;
        }
    }
    status.desired_number_scheduled = desired;
    status.current_number_scheduled = scheduled;
    status.number_misscheduled = misscheduled;
    status.number_ready = ready;
    status.number_available = Some(available);
    status.number_unavailable = Some(desired - available);
    status.updated_number_scheduled = Some(updated);
    if observed_generation.is_some() {
        status.observed_generation = observed_generation;
    }
    status
}

/// Whether `next` differs from `current` in what this controller writes.
pub fn changed(current: &DaemonSetStatus, next: &DaemonSetStatus) -> bool {
    let or0 = |v: Option<i32>| v.unwrap_or(0);
    current.desired_number_scheduled != next.desired_number_scheduled
        || current.current_number_scheduled != next.current_number_scheduled
        || current.number_misscheduled != next.number_misscheduled
        || current.number_ready != next.number_ready
        || or0(current.number_available) != or0(next.number_available)
        || or0(current.number_unavailable) != or0(next.number_unavailable)
        || or0(current.updated_number_scheduled) != or0(next.updated_number_scheduled)
        || current.observed_generation != next.observed_generation
}

/// The merge patch writing `status` (the collision count is left alone: only the history
/// sync bumps it).
pub fn patch(status: &DaemonSetStatus) -> Value {
    json!({"status": {
        "desiredNumberScheduled": status.desired_number_scheduled,
        "currentNumberScheduled": status.current_number_scheduled,
        "numberMisscheduled": status.number_misscheduled,
        "numberReady": status.number_ready,
        "numberAvailable": status.number_available,
        "numberUnavailable": status.number_unavailable,
        "updatedNumberScheduled": status.updated_number_scheduled,
        "observedGeneration": status.observed_generation,
    }})
}

#[cfg(test)]
mod tests {
    use super::super::nodes::by_node;
    use super::super::nodes::testing::daemon_pod;
    use super::*;

    fn node(name: &str) -> Node {
        let mut n = Node::default();
        n.metadata.name = Some(name.into());
        n
    }

    #[test]
    fn counts_follow_placement_readiness_and_revision() {
        let run = Placement { should_run: true, should_continue_running: true };
        let stay = Placement { should_run: false, should_continue_running: true };
        let nodes = [node("a"), node("b"), node("c"), node("d")];
        let placed = [(&nodes[0], run), (&nodes[1], run), (&nodes[2], run), (&nodes[3], stay)];
        let pods = vec![
            // On a: the oldest is the one counted (old revision, ready long ago).
            daemon_pod("a-old", "a", "h0", "Running", true, 100),
            daemon_pod("a-new", "a", "h1", "Running", false, 1),
            // On b: current, ready for 5 s.
            daemon_pod("b", "b", "h1", "Running", true, 5),
            // c has none; d should not run one.
            daemon_pod("d", "d", "h1", "Running", true, 100),
        ];
        let by_node = by_node(&pods, false);
        let observed = Observed {
            nodes: &placed,
            by_node: &by_node,
            hash: "h1",
            generation: None,
            min_ready_seconds: 10,
            now: Timestamp::now(),
        };
        let s = calculate(&DaemonSetStatus::default(), &observed, Some(7));
        assert_eq!(
            (s.desired_number_scheduled, s.current_number_scheduled, s.number_misscheduled),
            (3, 2, 1)
        );
        assert_eq!(s.number_ready, 2);
        assert_eq!(s.number_available, Some(1), "b is ready for less than minReadySeconds");
        assert_eq!(s.number_unavailable, Some(2));
        assert_eq!(s.updated_number_scheduled, Some(1));
        assert_eq!(s.observed_generation, Some(7));
        assert!(changed(&DaemonSetStatus::default(), &s));
        assert!(!changed(&s, &calculate(&s, &observed, None)));
    }
}
