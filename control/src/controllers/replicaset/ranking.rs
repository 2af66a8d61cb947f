//! Which pods a scale-down deletes first: the reference's `ActivePodsWithRanks` order
//! (unscheduled, then pending, then not ready, then lower `pod-deletion-cost`, then pods doubled
//! up on a node with their siblings, then ready for less time, then more restarts, then newer),
//! with the logarithmic bucketing of times (`LogarithmicScaleDown`, on by default) so pods of
//! about the same age are picked at random (by uid) rather than always the very newest.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;

use crate::controllers::util::pod;

/// The annotation that orders deletions explicitly (lower first).
const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// The `count` pods of `pods` to delete first. `related` are the active pods of the owner's
/// siblings (the other ReplicaSets of its Deployment, itself included): a pod on a node that
/// runs more of them goes before one that is alone there.
pub fn pods_to_delete(
    pods: &[Arc<Pod>],
    related: &[Arc<Pod>],
    count: usize,
    now: Timestamp,
) -> Vec<Arc<Pod>> {
    if count >= pods.len() {
        return pods.to_vec();
    }
    let mut on_node: HashMap<&str, i32> = HashMap::new();
    for p in related.iter().filter(|p| pod::is_active(p)) {
        *on_node.entry(node_name(p)).or_default() += 1;
    }
    let mut ranked: Vec<(i32, &Arc<Pod>)> =
        pods.iter().map(|p| (on_node.get(node_name(p)).copied().unwrap_or(0), p)).collect();
    ranked.sort_by(|a, b| delete_first(a.1, a.0, b.1, b.0, now));
    ranked.into_iter().take(count).map(|(_, p)| p.clone()).collect()
}

fn node_name(p: &Pod) -> &str {
    p.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or("")
}

fn phase_ordinal(p: &Pod) -> u8 {
    match pod::phase(p) {
        "Unknown" => 1,
        "Running" => 2,
        _ => 0,
    }
}

fn deletion_cost(p: &Pod) -> i32 {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DELETION_COST))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn max_restarts(p: &Pod) -> i32 {
    let status = p.status.as_ref();
    status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .chain(status.and_then(|s| s.init_container_statuses.as_ref()).into_iter().flatten())
        .map(|c| c.restart_count)
        .max()
        .unwrap_or(0)
}

/// `floor(log2(now - t))` in nanoseconds, -1 for a time not in the past.
fn log_bucket(t: Timestamp, now: Timestamp) -> i64 {
    let nanos = now.as_nanosecond() - t.as_nanosecond();
    if nanos <= 0 {
        -1
    } else {
        i64::from(127 - nanos.leading_zeros() as i32)
    }
}

/// Orders two times so the more recent one comes first, a missing one before both; times in
/// the same power-of-two age bucket fall back to the uids.
fn newer_first(
    a: Option<Timestamp>,
    b: Option<Timestamp>,
    uids: (&str, &str),
    now: Timestamp,
) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) => match log_bucket(a, now).cmp(&log_bucket(b, now)) {
            Ordering::Equal => uids.0.cmp(uids.1),
            other => other,
        },
    }
}

/// `Less` when pod `a` (with `a_rank` siblings on its node) should be deleted before `b`.
fn delete_first(a: &Pod, a_rank: i32, b: &Pod, b_rank: i32, now: Timestamp) -> Ordering {
    let (a_node, b_node) = (node_name(a), node_name(b));
    if a_node != b_node && (a_node.is_empty() || b_node.is_empty()) {
        return if a_node.is_empty() { Ordering::Less } else { Ordering::Greater };
    }
    let by_phase = phase_ordinal(a).cmp(&phase_ordinal(b));
    if by_phase != Ordering::Equal {
        return by_phase;
    }
    let (a_ready, b_ready) = (pod::is_ready(a), pod::is_ready(b));
    if a_ready != b_ready {
        return if a_ready { Ordering::Greater } else { Ordering::Less };
    }
    let by_cost = deletion_cost(a).cmp(&deletion_cost(b));
    if by_cost != Ordering::Equal {
        return by_cost;
    }
    if a_rank != b_rank {
        return b_rank.cmp(&a_rank);
    }
    let uids = (a.metadata.uid.as_deref().unwrap_or(""), b.metadata.uid.as_deref().unwrap_or(""));
    if a_ready && b_ready {
        let (ta, tb) = (pod::ready_since(a), pod::ready_since(b));
        if ta != tb {
            return newer_first(ta, tb, uids, now);
        }
    }
    let by_restarts = max_restarts(b).cmp(&max_restarts(a));
    if by_restarts != Ordering::Equal {
        return by_restarts;
    }
    let (ca, cb) = (
        a.metadata.creation_timestamp.as_ref().map(|t| t.0),
        b.metadata.creation_timestamp.as_ref().map(|t| t.0),
    );
    if ca != cb {
        return newer_first(ca, cb, uids, now);
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::SignedDuration;

    fn at(now: Timestamp, secs_ago: i64) -> Time {
        Time(now.checked_sub(SignedDuration::from_secs(secs_ago)).unwrap())
    }

    fn pod(name: &str, node: &str, phase: &str, ready: bool, age: i64, now: Timestamp) -> Arc<Pod> {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.uid = Some(format!("uid-{name}"));
        p.metadata.creation_timestamp = Some(at(now, age));
        p.spec = Some(PodSpec { node_name: Some(node.into()), ..Default::default() });
        let conditions = ready.then(|| {
            vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                last_transition_time: Some(at(now, age)),
                ..Default::default()
            }]
        });
        p.status = Some(PodStatus { phase: Some(phase.into()), conditions, ..Default::default() });
        Arc::new(p)
    }

    fn names(pods: Vec<Arc<Pod>>) -> Vec<String> {
        pods.into_iter().map(|p| p.metadata.name.clone().unwrap()).collect()
    }

    #[test]
    fn unscheduled_then_pending_then_not_ready_go_first() {
        let now = Timestamp::now();
        let pods = vec![
            pod("ready", "n1", "Running", true, 100, now),
            pod("not-ready", "n1", "Running", false, 100, now),
            pod("pending", "n1", "Pending", false, 100, now),
            pod("unscheduled", "", "Pending", false, 100, now),
        ];
        let order = names(pods_to_delete(&pods, &pods, 3, now));
        assert_eq!(order, ["unscheduled", "pending", "not-ready"]);
    }

    #[test]
    fn doubled_up_then_newer_pods_go_first() {
        let now = Timestamp::now();
        let alone = pod("alone", "n1", "Running", true, 10, now);
        let crowded = pod("crowded", "n2", "Running", true, 1000, now);
        let sibling = pod("sibling", "n2", "Running", true, 1000, now);
        let pods = vec![alone.clone(), crowded.clone()];
        let related = vec![alone, crowded, sibling];
        assert_eq!(names(pods_to_delete(&pods, &related, 1, now)), ["crowded"]);

        // Alone on their nodes: the one ready for less time goes first.
        let young = pod("young", "n1", "Running", true, 5, now);
        let old = pod("old", "n2", "Running", true, 5000, now);
        let pods = vec![old, young];
        assert_eq!(names(pods_to_delete(&pods, &pods, 1, now)), ["young"]);
    }

    #[test]
    fn deletion_cost_overrides_age() {
        let now = Timestamp::now();
        let young = pod("young", "n1", "Running", true, 5, now);
        let mut old = (*pod("old", "n2", "Running", true, 5000, now)).clone();
        old.metadata.annotations =
            Some([(DELETION_COST.to_string(), "-10".to_string())].into_iter().collect());
        let pods = vec![young, Arc::new(old)];
        assert_eq!(names(pods_to_delete(&pods, &pods, 1, now)), ["old"]);
    }

    #[test]
    fn log_buckets_are_powers_of_two_of_nanoseconds() {
        let now = Timestamp::now();
        assert_eq!(log_bucket(now, now), -1);
        let one_second_ago = now.checked_sub(SignedDuration::from_secs(1)).unwrap();
        // 1e9 ns lies in [2^29, 2^30).
        assert_eq!(log_bucket(one_second_ago, now), 29);
    }
}
