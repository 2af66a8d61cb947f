//! RollingUpdate planning (the reference's `rollingUpdate`): which old pods to delete and on
//! which nodes to start new pods, given the pods on every node, within `maxUnavailable` and
//! `maxSurge` (scaled against the number of nodes that should run the pod).
//!
//! Without surge, old pods are deleted while fewer than `maxUnavailable` nodes lack an
//! available pod; the per-node sync then creates the new pods. With surge, a new pod starts
//! next to an old one on up to `maxSurge` nodes at a time (at once where the old one is not
//! available), and the old one is deleted when the new one is available. Nodes are visited in
//! name order so that a plan is reproducible.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;

use super::nodes::PodsByNode;
use crate::controllers::util::intstr::{scaled_value, InvalidIntOrPercent};
use crate::controllers::util::pod;

/// Whether the DaemonSet uses the RollingUpdate strategy (the default).
pub fn is_rolling_update(ds: &DaemonSet) -> bool {
    let strategy = ds.spec.as_ref().and_then(|s| s.update_strategy.as_ref());
    strategy.and_then(|s| s.type_.as_deref()).unwrap_or("RollingUpdate") == "RollingUpdate"
}

/// `(maxSurge, maxUnavailable)` as numbers of nodes out of `desired` (both rounded up, as the
/// reference's `SurgeCount` and `UnavailableCount`); zero for OnDelete.
fn raw_bounds(ds: &DaemonSet, desired: i32) -> Result<(i32, i32), InvalidIntOrPercent> {
    if !is_rolling_update(ds) {
        return Ok((0, 0));
    }
    let rolling = ds
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let Some(rolling) = rolling else { return Ok((0, 0)) };
    let scale = |v: Option<&_>| v.map_or(Ok(0), |v| scaled_value(v, desired, true));
    Ok((scale(rolling.max_surge.as_ref())?, scale(rolling.max_unavailable.as_ref())?))
}

/// Whether a new pod may start next to an old one (the reference's `AllowsSurge`).
pub fn allows_surge(ds: &DaemonSet) -> bool {
    raw_bounds(ds, 1).is_ok_and(|(surge, _)| surge != 0)
}

/// `(maxSurge, maxUnavailable)` for `desired` nodes; if both are zero, one node may be
/// unavailable (otherwise the rollout could never progress).
pub fn bounds(ds: &DaemonSet, desired: i32) -> Result<(i32, i32), InvalidIntOrPercent> {
    let (surge, unavailable) = raw_bounds(ds, desired)?;
    if desired > 0 && surge == 0 && unavailable == 0 {
        return Ok((0, 1));
    }
    Ok((surge, unavailable))
}

/// What a rolling-update step does.
#[derive(Debug, Default)]
pub struct Plan {
    pub delete: Vec<Arc<Pod>>,
    pub create_on: Vec<String>,
}

/// The inputs of a plan besides the pods.
pub struct Rollout<'a> {
    pub max_surge: i32,
    pub max_unavailable: i32,
    /// Nodes that should run the pod.
    pub desired: i32,
    pub min_ready_seconds: i32,
    pub now: Timestamp,
    /// Whether a pod is of the current revision.
    pub is_updated: &'a dyn Fn(&Pod) -> bool,
    /// Whether the node should run the pod.
    pub should_run: &'a dyn Fn(&str) -> bool,
}

/// The pod of the current revision and the older one on a node, either may be missing.
type NewAndOld<'p> = (Option<&'p Arc<Pod>>, Option<&'p Arc<Pod>>);

/// The new and the old pod on a node, ignoring terminating pods; `None` when there are
/// several of either (the per-node sync prunes those first).
fn new_and_old<'p>(
    pods: &'p [Arc<Pod>],
    is_updated: &dyn Fn(&Pod) -> bool,
) -> Option<NewAndOld<'p>> {
    let (mut new, mut old) = (None, None);
    for p in pods.iter().filter(|p| !pod::is_terminating(p)) {
        let slot = if is_updated(p) { &mut new } else { &mut old };
        if slot.replace(p).is_some() {
            return None;
        }
    }
    Some((new, old))
}

/// The next step of the rollout. `by_node` must hold an entry (empty if need be) for every
/// node that should run the pod.
pub fn plan(by_node: &PodsByNode, r: &Rollout) -> Plan {
    let available = |p: &Pod| pod::is_available(p, r.min_ready_seconds, r.now);
    if r.max_surge == 0 {
        return plan_without_surge(by_node, r, &available);
    }
    let mut plan = Plan::default();
    let (mut allowed_new, mut candidates, mut should_not_run) =
        (Vec::new(), Vec::new(), Vec::new());
    let (mut surging, mut num_available) = (0, 0);
    for (node, pods) in by_node {
        let Some((new, old)) = new_and_old(pods, r.is_updated) else {
            surging += 1;
            continue;
        };
        if old.or(new).is_some_and(|p| available(p)) {
            num_available += 1;
        }
        match (new, old) {
            (_, None) => {}
            (None, Some(old)) if !available(old) => {
                if (r.should_run)(node) {
                    allowed_new.push(node.clone());
                } else {
                    plan.delete.push(old.clone());
                }
            }
            (None, Some(old)) => {
                if !(r.should_run)(node) {
                    should_not_run.push(old.clone());
                } else if surging < r.max_surge {
                    candidates.push(node.clone());
                }
            }
            (Some(new), Some(old)) => {
                if available(new) {
                    plan.delete.push(old.clone());
                } else {
                    surging += 1;
                }
            }
        }
    }
    // Pods on nodes the DaemonSet left go only once as many are available elsewhere.
    let deletable = usize::try_from(num_available - r.desired).unwrap_or(0);
    plan.delete.extend(should_not_run.into_iter().take(deletable));
    let remaining = usize::try_from(r.max_surge - surging).unwrap_or(0).min(candidates.len());
    plan.create_on = allowed_new;
    plan.create_on.extend(candidates.into_iter().take(remaining));
    plan
}

fn plan_without_surge(by_node: &PodsByNode, r: &Rollout, available: &dyn Fn(&Pod) -> bool) -> Plan {
    let mut plan = Plan::default();
    let mut unavailable = 0;
    let mut candidates = Vec::new();
    for pods in by_node.values() {
        let Some((new, old)) = new_and_old(pods, r.is_updated) else {
            unavailable += 1;
            continue;
        };
        match (new, old) {
            (None, None) | (Some(_), Some(_)) => unavailable += 1,
            (Some(new), None) => {
                if !available(new) {
                    unavailable += 1;
                }
            }
            (None, Some(old)) if !available(old) => {
                // Not serving anyway: replace it at once.
                plan.delete.push(old.clone());
                unavailable += 1;
            }
            (None, Some(old)) => {
                if unavailable < r.max_unavailable {
                    candidates.push(old.clone());
                }
            }
        }
    }
    let remaining =
        usize::try_from(r.max_unavailable - unavailable).unwrap_or(0).min(candidates.len());
    plan.delete.extend(candidates.into_iter().take(remaining));
    plan
}

#[cfg(test)]
mod tests {
    use super::super::nodes::is_updated;
    use super::super::nodes::testing::{daemon_pod, names};
    use super::*;
    use serde_json::json;

    fn rollout<'a>(
        surge: i32,
        unavailable: i32,
        desired: i32,
        updated: &'a dyn Fn(&Pod) -> bool,
        should_run: &'a dyn Fn(&str) -> bool,
    ) -> Rollout<'a> {
        Rollout {
            max_surge: surge,
            max_unavailable: unavailable,
            desired,
            min_ready_seconds: 0,
            now: Timestamp::now(),
            is_updated: updated,
            should_run,
        }
    }

    fn map(pods: Vec<Arc<Pod>>, empty: &[&str]) -> PodsByNode {
        let mut m = super::super::nodes::by_node(&pods, false);
        for n in empty {
            m.entry(n.to_string()).or_default();
        }
        m
    }

    #[test]
    fn without_surge_at_most_max_unavailable_old_pods_go() {
        let updated = |p: &Pod| is_updated(p, "new", None);
        let anywhere = |_: &str| true;
        let pods = (1..=4)
            .map(|i| daemon_pod(&format!("p{i}"), &format!("n{i}"), "old", "Running", true, 100))
            .collect();
        let by_node = map(pods, &[]);
        let plan = plan(&by_node, &rollout(0, 1, 4, &updated, &anywhere));
        assert_eq!(names(&plan.delete), ["p1"]);
        assert!(plan.create_on.is_empty(), "the per-node sync creates the replacements");
        let plan = super::plan(&by_node, &rollout(0, 3, 4, &updated, &anywhere));
        assert_eq!(names(&plan.delete), ["p1", "p2", "p3"]);
    }

    #[test]
    fn without_surge_unavailable_nodes_use_up_the_budget() {
        let updated = |p: &Pod| is_updated(p, "new", None);
        let anywhere = |_: &str| true;
        let pods = vec![
            // A new pod not ready yet: one node is unavailable already.
            daemon_pod("fresh", "n1", "new", "Running", false, 1),
            daemon_pod("p2", "n2", "old", "Running", true, 100),
            // An old pod that is not ready: replaced regardless of the budget.
            daemon_pod("broken", "n3", "old", "Running", false, 100),
        ];
        let by_node = map(pods, &[]);
        let plan = plan(&by_node, &rollout(0, 1, 3, &updated, &anywhere));
        assert_eq!(names(&plan.delete), ["broken"]);
        // A node still missing its pod counts as unavailable too.
        let pods = vec![daemon_pod("p2", "n2", "old", "Running", true, 100)];
        let plan = super::plan(&map(pods, &["n1"]), &rollout(0, 1, 2, &updated, &anywhere));
        assert!(plan.delete.is_empty());
    }

    #[test]
    fn surge_starts_new_pods_beside_old_ones_and_retires_the_old_when_available() {
        let updated = |p: &Pod| is_updated(p, "new", None);
        let anywhere = |_: &str| true;
        let pods = vec![
            daemon_pod("o1", "n1", "old", "Running", true, 100),
            daemon_pod("o2", "n2", "old", "Running", true, 100),
            daemon_pod("o3", "n3", "old", "Running", true, 100),
        ];
        let by_node = map(pods.clone(), &[]);
        let plan = plan(&by_node, &rollout(1, 0, 3, &updated, &anywhere));
        assert_eq!(plan.create_on, ["n1"]);
        assert!(plan.delete.is_empty());

        // The surge pod on n1 is not available yet: nothing more happens.
        let mut with_new = pods.clone();
        with_new.push(daemon_pod("n1-new", "n1", "new", "Running", false, 1));
        let plan = super::plan(&map(with_new, &[]), &rollout(1, 0, 3, &updated, &anywhere));
        assert!(plan.create_on.is_empty() && plan.delete.is_empty());

        // Available: the old pod goes, and the next node surges.
        let mut with_new = pods;
        with_new.push(daemon_pod("n1-new", "n1", "new", "Running", true, 1));
        let plan = super::plan(&map(with_new, &[]), &rollout(1, 0, 3, &updated, &anywhere));
        assert_eq!(names(&plan.delete), ["o1"]);
        assert_eq!(plan.create_on, ["n2"]);
    }

    #[test]
    fn surge_replaces_unavailable_old_pods_at_once() {
        let updated = |p: &Pod| is_updated(p, "new", None);
        let only_n1_n2 = |n: &str| n != "n3";
        let pods = vec![
            daemon_pod("o1", "n1", "old", "Running", false, 100),
            daemon_pod("o2", "n2", "old", "Running", false, 100),
            daemon_pod("o3", "n3", "old", "Running", false, 100),
        ];
        let plan = plan(&map(pods, &[]), &rollout(1, 0, 2, &updated, &only_n1_n2));
        assert_eq!(plan.create_on, ["n1", "n2"], "beyond maxSurge: the old ones serve nothing");
        assert_eq!(names(&plan.delete), ["o3"], "an unavailable pod where it should not run");
    }

    #[test]
    fn bounds_scale_percentages_and_never_stall() {
        let ds = |strategy: serde_json::Value| -> DaemonSet {
            serde_json::from_value(json!({"metadata": {}, "spec": {
                "selector": {}, "template": {}, "updateStrategy": strategy}}))
            .unwrap()
        };
        let percent = ds(json!({"type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": 0}}));
        assert_eq!(bounds(&percent, 10), Ok((0, 3)), "rounded up");
        assert!(!allows_surge(&percent));
        let zero = ds(json!({"type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 0}}));
        assert_eq!(bounds(&zero, 3), Ok((0, 1)));
        let surge = ds(json!({"type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "50%"}}));
        assert!(allows_surge(&surge));
        assert_eq!(bounds(&surge, 3), Ok((2, 0)));
        let on_delete = ds(json!({"type": "OnDelete"}));
        assert!(!is_rolling_update(&on_delete));
        assert!(!allows_surge(&on_delete));
    }
}
