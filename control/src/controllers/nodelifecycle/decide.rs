//! The node lifecycle decisions as pure functions of observed state: when a node is stale,
//! which conditions go Unknown, which taints a node should carry, whether a zone is disrupted
//! (and so must not be evicted from), and when each pod on an unreachable node is evicted.
//! The controller only gathers the inputs and writes the outputs.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// The taint of a node whose agent stopped reporting.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The zone label nodes are grouped by for disruption.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// The conditions the agent owns, set to Unknown when it stops reporting.
pub const AGENT_CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];
/// The NoSchedule taints that follow the agent's pressure conditions (the reference's
/// TaintNodeByCondition): present while the condition is True.
pub const PRESSURE_TAINTS: [(&str, &str); 3] = [
    ("MemoryPressure", "node.kubernetes.io/memory-pressure"),
    ("DiskPressure", "node.kubernetes.io/disk-pressure"),
    ("PIDPressure", "node.kubernetes.io/pid-pressure"),
];
/// Reason and message of a condition the controller set to Unknown (the reference's words).
pub const UNKNOWN_REASON: &str = "NodeStatusUnknown";
pub const UNKNOWN_MESSAGE: &str = "Kubelet stopped posting node status.";
/// Share of unreachable nodes above which a zone counts as disrupted: its nodes are more likely
/// cut off from the control plane than dead, so nothing there is evicted.
const DISRUPTION_THRESHOLD_PERCENT: usize = 55;

/// What identifies one heartbeat of a node: its Lease's renewTime and its Ready condition's
/// lastHeartbeatTime. A change of either is a sign of life; the controller times staleness with
/// its own clock from when it saw the change, so agents' clock skew does not matter.
pub fn heartbeat(node: &Node, lease: Option<&Lease>) -> (Option<Timestamp>, Option<Timestamp>) {
    let renewed = lease.and_then(|l| l.spec.as_ref()?.renew_time.as_ref()).map(|t| t.0);
    let posted = condition(node, "Ready").and_then(|c| c.last_heartbeat_time.as_ref()).map(|t| t.0);
    (renewed, posted)
}

/// Whether a node last seen alive `since_alive` ago has outlived the grace period.
pub fn is_stale(since_alive: Duration, grace: Duration) -> bool {
    since_alive > grace
}

/// The condition of `type_` in the node's status.
pub fn condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == type_)
}

/// The Ready condition's status ("True", "False", "Unknown"), `None` when it has none.
pub fn ready_status(node: &Node) -> Option<&str> {
    condition(node, "Ready").map(|c| c.status.as_str())
}

/// The conditions of a stale node: the agent's conditions that are not Unknown yet become
/// Unknown (heartbeat kept, transition at `now`); a missing Ready is added as never posted.
/// `None` when nothing changes.
pub fn unknown_conditions(current: &[NodeCondition], now: Timestamp) -> Option<Vec<NodeCondition>> {
    let mut changed = false;
    let mut conditions: Vec<NodeCondition> = current
        .iter()
        .map(|c| {
            if AGENT_CONDITIONS.contains(&c.type_.as_str()) && c.status != "Unknown" {
                changed = true;
                NodeCondition {
                    status: "Unknown".into(),
                    reason: Some(UNKNOWN_REASON.into()),
                    message: Some(UNKNOWN_MESSAGE.into()),
                    last_transition_time: Some(Time(now)),
                    ..c.clone()
                }
            } else {
                c.clone()
            }
        })
        .collect();
    if !conditions.iter().any(|c| c.type_ == "Ready") {
        changed = true;
        conditions.push(NodeCondition {
            type_: "Ready".into(),
            status: "Unknown".into(),
            reason: Some("NodeStatusNeverUpdated".into()),
            message: Some("Kubelet never posted node status.".into()),
            last_transition_time: Some(Time(now)),
            last_heartbeat_time: None,
        });
    }
    changed.then_some(conditions)
}

/// The zone a node belongs to (all unlabelled nodes form one zone, "").
pub fn zone_of(node: &Node) -> String {
    node.metadata.labels.as_ref().and_then(|l| l.get(ZONE_LABEL)).cloned().unwrap_or_default()
}

/// Whether a zone of `total` nodes, `unreachable` of them unreachable, is disrupted: more than
/// 55% of it dropped off at once, which looks like a site losing its link, not nodes dying.
pub fn zone_disrupted(total: usize, unreachable: usize) -> bool {
    total > 0 && unreachable * 100 > total * DISRUPTION_THRESHOLD_PERCENT
}

fn is_unreachable_taint(taint: &Taint, effect: &str) -> bool {
    taint.key == UNREACHABLE && taint.effect == effect
}

/// The taints a node should carry. `unreachable`: the node is stale (or still Unknown);
/// `may_add_no_execute`: the NoExecute taint, which starts evictions, may be added now (zone
/// not disrupted, rate limit allows). A NoExecute taint already there stays while the node is
/// unreachable, keeping its `timeAdded`. Other taints are kept as they are. `None`: unchanged.
pub fn desired_taints(
    current: &[Taint],
    unreachable: bool,
    may_add_no_execute: bool,
    now: Timestamp,
) -> Option<Vec<Taint>> {
    let mut taints: Vec<Taint> = current.to_vec();
    if !unreachable {
        taints.retain(|t| t.key != UNREACHABLE);
    } else {
        let new = |effect: &str| Taint {
            key: UNREACHABLE.into(),
            effect: effect.into(),
            time_added: Some(Time(now)),
            value: None,
        };
        if !taints.iter().any(|t| is_unreachable_taint(t, "NoSchedule")) {
            taints.push(new("NoSchedule"));
        }
        if may_add_no_execute && !taints.iter().any(|t| is_unreachable_taint(t, "NoExecute")) {
            taints.push(new("NoExecute"));
        }
    }
    (taints != current).then_some(taints)
}

/// `current` with the pressure taints matching the node's conditions: a NoSchedule taint for
/// each pressure condition that is True, none for one that is False, Unknown or missing.
/// Other taints are kept as they are. `None`: unchanged.
pub fn pressure_taints(node: &Node, current: &[Taint]) -> Option<Vec<Taint>> {
    let mut taints: Vec<Taint> = current.to_vec();
    for (condition_type, key) in PRESSURE_TAINTS {
        let wanted = condition(node, condition_type).is_some_and(|c| c.status == "True");
        let is_it = |t: &Taint| t.key == key && t.effect == "NoSchedule";
        let has = taints.iter().any(is_it);
        if wanted && !has {
            taints.push(Taint {
                key: key.into(),
                effect: "NoSchedule".into(),
                value: None,
                time_added: None,
            });
        } else if !wanted && has {
            taints.retain(|t| !is_it(t));
        }
    }
    (taints != current).then_some(taints)
}

/// The NoExecute unreachable taint of a node, if it has one.
pub fn no_execute_taint(node: &Node) -> Option<&Taint> {
    node.spec.as_ref()?.taints.as_ref()?.iter().find(|t| is_unreachable_taint(t, "NoExecute"))
}

/// When a pod goes from a node with `taint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// Its toleration ran out (or it has none).
    Now,
    /// Still tolerated for this long.
    After(Duration),
    /// Tolerated without a time limit.
    Never,
}

fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect_ok = toleration.effect.as_deref().is_none_or(|e| e.is_empty() || e == taint.effect);
    let key = toleration.key.as_deref().unwrap_or("");
    match toleration.operator.as_deref().unwrap_or("Equal") {
        // An empty key with Exists tolerates every taint.
        "Exists" => effect_ok && (key.is_empty() || key == taint.key),
        "Equal" => {
            effect_ok
                && key == taint.key
                && toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

/// When `pod` is evicted from a node carrying the NoExecute `taint` at `now`: the shortest
/// tolerationSeconds among the tolerations that match, counted from the taint's timeAdded.
pub fn eviction(pod: &Pod, taint: &Taint, now: Timestamp) -> Eviction {
    let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.as_ref());
    let matching: Vec<&Toleration> =
        tolerations.into_iter().flatten().filter(|t| tolerates(t, taint)).collect();
    if matching.is_empty() {
        return Eviction::Now;
    }
    let Some(seconds) = matching.iter().filter_map(|t| t.toleration_seconds).min() else {
        return Eviction::Never;
    };
    let added = taint.time_added.as_ref().map_or(now, |t| t.0);
    let deadline_ms = added.as_millisecond().saturating_add(seconds.max(0).saturating_mul(1000));
    let remaining_ms = deadline_ms.saturating_sub(now.as_millisecond());
    if remaining_ms <= 0 {
        Eviction::Now
    } else {
        Eviction::After(Duration::from_millis(remaining_ms as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeStatus, PodSpec};

    fn ts(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    fn cond(type_: &str, status: &str) -> NodeCondition {
        NodeCondition {
            type_: type_.into(),
            status: status.into(),
            last_heartbeat_time: Some(Time(ts(0))),
            ..Default::default()
        }
    }

    fn unreachable_no_execute(added: i64) -> Taint {
        Taint {
            key: UNREACHABLE.into(),
            effect: "NoExecute".into(),
            time_added: Some(Time(ts(added))),
            value: None,
        }
    }

    fn pod(tolerations: Vec<Toleration>) -> Pod {
        Pod {
            spec: Some(PodSpec { tolerations: Some(tolerations), ..Default::default() }),
            ..Default::default()
        }
    }

    fn toleration(key: &str, seconds: Option<i64>) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: seconds,
            value: None,
        }
    }

    #[test]
    fn a_node_is_stale_only_after_the_grace_period() {
        let grace = Duration::from_secs(40);
        assert!(!is_stale(Duration::from_secs(10), grace));
        assert!(!is_stale(grace, grace));
        assert!(is_stale(Duration::from_secs(41), grace));
    }

    #[test]
    fn heartbeat_changes_with_the_lease_or_the_ready_heartbeat() {
        let mut node = Node {
            status: Some(NodeStatus {
                conditions: Some(vec![cond("Ready", "True")]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut lease = Lease { spec: Some(Default::default()), ..Default::default() };
        let before = heartbeat(&node, Some(&lease));
        lease.spec.as_mut().unwrap().renew_time =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(ts(10)));
        let renewed = heartbeat(&node, Some(&lease));
        assert_ne!(before, renewed);
        node.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].last_heartbeat_time =
            Some(Time(ts(11)));
        assert_ne!(renewed, heartbeat(&node, Some(&lease)));
    }

    #[test]
    fn stale_node_conditions_become_unknown_once() {
        let current =
            vec![cond("Ready", "True"), cond("DiskPressure", "False"), cond("Custom", "True")];
        let updated = unknown_conditions(&current, ts(50)).expect("changed");
        assert_eq!(updated[0].status, "Unknown");
        assert_eq!(updated[0].reason.as_deref(), Some(UNKNOWN_REASON));
        assert_eq!(updated[0].message.as_deref(), Some(UNKNOWN_MESSAGE));
        assert_eq!(updated[0].last_transition_time, Some(Time(ts(50))));
        // The last heartbeat stays what the agent posted.
        assert_eq!(updated[0].last_heartbeat_time, Some(Time(ts(0))));
        assert_eq!(updated[1].status, "Unknown");
        // Conditions the agent does not own are left alone.
        assert_eq!(updated[2].status, "True");
        // Already Unknown: nothing to write.
        assert_eq!(unknown_conditions(&updated, ts(60)), None);
        // A node that never posted gets a Ready=Unknown.
        let added = unknown_conditions(&[], ts(5)).expect("added");
        assert_eq!(added[0].type_, "Ready");
        assert_eq!(added[0].status, "Unknown");
    }

    #[test]
    fn zone_is_disrupted_above_55_percent_unreachable() {
        assert!(!zone_disrupted(3, 1));
        assert!(!zone_disrupted(2, 1));
        assert!(zone_disrupted(3, 2));
        assert!(zone_disrupted(1, 1));
        assert!(!zone_disrupted(100, 55));
        assert!(zone_disrupted(100, 56));
        assert!(!zone_disrupted(0, 0));
    }

    #[test]
    fn zone_comes_from_the_label_or_is_the_unlabelled_zone() {
        let mut node = Node::default();
        assert_eq!(zone_of(&node), "");
        node.metadata.labels = Some([(ZONE_LABEL.to_string(), "edge-1".to_string())].into());
        assert_eq!(zone_of(&node), "edge-1");
    }

    #[test]
    fn taints_follow_reachability() {
        let other =
            Taint { key: "dedicated".into(), effect: "NoSchedule".into(), ..Default::default() };
        let current = vec![other.clone()];
        // Unreachable, but evictions held back: only NoSchedule.
        let held = desired_taints(&current, true, false, ts(1)).expect("changed");
        assert_eq!(held.len(), 2);
        assert!(held.iter().any(|t| is_unreachable_taint(t, "NoSchedule")));
        assert!(!held.iter().any(|t| is_unreachable_taint(t, "NoExecute")));
        // Allowed: NoExecute too, stamped now.
        let full = desired_taints(&held, true, true, ts(2)).expect("changed");
        let no_execute = full.iter().find(|t| is_unreachable_taint(t, "NoExecute")).unwrap();
        assert_eq!(no_execute.time_added, Some(Time(ts(2))));
        // Steady state: nothing to write, timeAdded kept.
        assert_eq!(desired_taints(&full, true, true, ts(9)), None);
        assert_eq!(desired_taints(&full, true, false, ts(9)), None);
        // Reachable again: the unreachable taints go, others stay.
        assert_eq!(desired_taints(&full, false, true, ts(10)), Some(vec![other.clone()]));
        assert_eq!(desired_taints(&current, false, true, ts(10)), None);
    }

    #[test]
    fn pressure_taints_follow_the_conditions() {
        let mut node = Node {
            status: Some(NodeStatus {
                conditions: Some(vec![
                    cond("Ready", "True"),
                    cond("MemoryPressure", "True"),
                    cond("DiskPressure", "False"),
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let other =
            Taint { key: "dedicated".into(), effect: "NoSchedule".into(), ..Default::default() };
        let tainted = pressure_taints(&node, std::slice::from_ref(&other)).expect("changed");
        let keys: Vec<&str> = tainted.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(keys, ["dedicated", "node.kubernetes.io/memory-pressure"]);
        assert_eq!(tainted[1].effect, "NoSchedule");
        assert_eq!(pressure_taints(&node, &tainted), None);
        // Relieved (or Unknown): the taint goes, the others stay.
        node.status.as_mut().unwrap().conditions.as_mut().unwrap()[1].status = "Unknown".into();
        assert_eq!(pressure_taints(&node, &tainted), Some(vec![other]));
    }

    #[test]
    fn pods_are_evicted_after_their_toleration_seconds() {
        let taint = unreachable_no_execute(100);
        // No matching toleration: at once.
        assert_eq!(eviction(&pod(vec![]), &taint, ts(100)), Eviction::Now);
        let unrelated = toleration("node.kubernetes.io/not-ready", Some(300));
        assert_eq!(eviction(&pod(vec![unrelated]), &taint, ts(100)), Eviction::Now);
        // tolerationSeconds counted from timeAdded.
        let two = pod(vec![toleration(UNREACHABLE, Some(2))]);
        assert_eq!(eviction(&two, &taint, ts(100)), Eviction::After(Duration::from_secs(2)));
        assert_eq!(eviction(&two, &taint, ts(101)), Eviction::After(Duration::from_secs(1)));
        assert_eq!(eviction(&two, &taint, ts(102)), Eviction::Now);
        // No tolerationSeconds: tolerated forever.
        let forever = pod(vec![toleration(UNREACHABLE, None)]);
        assert_eq!(eviction(&forever, &taint, ts(10_000)), Eviction::Never);
        // Several matches: the shortest wins; a wildcard Exists matches too.
        let mut wildcard = toleration("", Some(5));
        wildcard.effect = None;
        let both = pod(vec![toleration(UNREACHABLE, Some(300)), wildcard]);
        assert_eq!(eviction(&both, &taint, ts(100)), Eviction::After(Duration::from_secs(5)));
        // A NoSchedule-only toleration does not tolerate NoExecute.
        let mut no_schedule = toleration(UNREACHABLE, None);
        no_schedule.effect = Some("NoSchedule".into());
        assert_eq!(eviction(&pod(vec![no_schedule]), &taint, ts(100)), Eviction::Now);
    }
}
