//! Preemption, the simple case of the reference's DefaultPreemption: when a pod fits nowhere,
//! look for one node where removing pods of lower priority makes it fit. On each node that a
//! resource-like reason rejected, every lower-priority pod is removed, then as many as possible
//! are given back, most important first; the pods left out are the victims. The node whose
//! victims matter least (lowest highest priority, then lowest priority sum, then fewest) wins.
//! Without a candidate, the per-node reasons become the `preemption: 0/3 nodes are available:
//! ...` part of the scheduling failure message. PodDisruptionBudgets are not consulted.

use std::collections::HashMap;
use std::sync::Arc;

use super::filters::{self, CycleState};
use super::framework::{summary, ClusterObjects, Code, FitError};
use super::node_info::{NodeInfo, PodInfo};

/// The reference's reason for a node that no victim set can fix.
const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
/// The reference's reason for a node without lower-priority pods.
const NO_VICTIMS: &str = "No preemption victims found for incoming pod";

/// Where the pod goes once its victims are gone.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub node: String,
    pub victims: Vec<Arc<PodInfo>>,
}

/// Whether `pod` may preempt at all; the reference's message when not. A pod already
/// nominated to a node where a lower-priority pod is terminating waits for that pod instead.
pub fn eligible(
    pod: &PodInfo,
    nominated_node: Option<&str>,
    nodes: &[Arc<NodeInfo>],
) -> Result<(), String> {
    let policy = pod.pod.spec.as_ref().and_then(|s| s.preemption_policy.as_deref());
    if policy == Some("Never") {
        return Err("not eligible due to preemptionPolicy=Never.".to_string());
    }
    let Some(node) = nominated_node.filter(|n| !n.is_empty()) else { return Ok(()) };
    let Some(info) = nodes.iter().find(|n| n.name == node) else { return Ok(()) };
    if info.pods.iter().any(|p| p.terminating && p.priority < pod.priority) {
        return Err("not eligible due to a terminating pod on the nominated node.".to_string());
    }
    Ok(())
}

/// Finds the best node to preempt on, or the per-node reasons there is none (the
/// `preemption: ...` message).
pub fn find_candidate(
    pod: &PodInfo,
    nodes: &[Arc<NodeInfo>],
    objects: &ClusterObjects,
    fit: &FitError,
) -> Result<Candidate, String> {
    let all: Vec<&NodeInfo> = nodes.iter().map(|n| n.as_ref()).collect();
    let state = CycleState::new(pod, &all, objects).ok();
    let mut reasons: HashMap<String, Vec<String>> = HashMap::new();
    let mut candidates = Vec::new();
    for node in nodes {
        let helpful = fit.pre_filter.is_none()
            && fit.rejections.get(&node.name).is_some_and(|r| r.code == Code::Unschedulable);
        let Some(state) = state.as_ref().filter(|_| helpful) else {
            reasons.insert(node.name.clone(), vec![NOT_HELPFUL.to_string()]);
            continue;
        };
        match victims_on(state, pod, node) {
            Ok(victims) => candidates.push(Candidate { node: node.name.clone(), victims }),
            Err(why) => {
                reasons.insert(node.name.clone(), why);
            }
        }
    }
    let best = candidates.into_iter().min_by_key(|c| {
        let highest = c.victims.iter().map(|v| v.priority).max().unwrap_or(i32::MIN);
        let sum: i64 = c.victims.iter().map(|v| i64::from(v.priority)).sum();
        (highest, sum, c.victims.len())
    });
    match best {
        Some(candidate) => Ok(candidate),
        None => {
            let mut counts: HashMap<&str, usize> = HashMap::new();
            for reason in reasons.values().flatten() {
                *counts.entry(reason.as_str()).or_insert(0) += 1;
            }
            Err(format!("preemption: {}", summary(nodes.len(), counts)))
        }
    }
}

/// The fewest lower-priority pods whose removal lets `pod` onto `node`, or the reasons it
/// cannot fit even without all of them.
fn victims_on(
    state: &CycleState,
    pod: &PodInfo,
    node: &NodeInfo,
) -> Result<Vec<Arc<PodInfo>>, Vec<String>> {
    let mut potential: Vec<Arc<PodInfo>> =
        node.pods.iter().filter(|p| p.priority < pod.priority).cloned().collect();
    if potential.is_empty() {
        return Err(vec![NO_VICTIMS.to_string()]);
    }
    let mut trial = node.clone();
    for victim in &potential {
        trial.remove_pod(&victim.uid);
    }
    if let Err(rejection) = filters::run(state, pod, &trial) {
        return Err(rejection.reasons);
    }
    // Give back the most important pods first; keep those that still leave room.
    potential.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| a.name.cmp(&b.name)));
    let mut victims = Vec::new();
    for candidate in potential {
        trial.add_pod(candidate.clone());
        if filters::run(state, pod, &trial).is_err() {
            trial.remove_pod(&candidate.uid);
            victims.push(candidate);
        }
    }
    Ok(victims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::algorithm::{schedule, NoFit, Rotation};
    use crate::scheduler::node_info::testing::*;
    use serde_json::json;

    fn prio(name: &str, cpu: &str, priority: i32) -> PodInfo {
        pod_requesting(name, cpu, "100Mi", json!({"spec": {"priority": priority}}))
    }

    fn fit_error(pod: &PodInfo, nodes: &[Arc<NodeInfo>]) -> FitError {
        match schedule(pod, nodes, &ClusterObjects::default(), &mut Rotation::default()) {
            Err(NoFit::Fit(e)) => e,
            other => panic!("expected no fit, got {other:?}"),
        }
    }

    #[test]
    fn evicts_the_fewest_least_important_pods() {
        let n1 = with_pods(
            node("n1", "2", "4Gi", json!({})),
            vec![prio("a", "1", 10), prio("b", "1", 5)],
        );
        let n2 = with_pods(
            node("n2", "2", "4Gi", json!({})),
            vec![prio("c", "1", 50), prio("d", "1", 50)],
        );
        let nodes = vec![Arc::new(n1), Arc::new(n2)];
        let p = prio("p", "1", 100);
        let fit = fit_error(&p, &nodes);
        let candidate = find_candidate(&p, &nodes, &ClusterObjects::default(), &fit).unwrap();
        assert_eq!(candidate.node, "n1");
        let names: Vec<&str> = candidate.victims.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["b"], "a is given back: one victim is enough");
    }

    #[test]
    fn no_candidate_gives_the_reference_message() {
        let full = with_pods(node("n1", "1", "4Gi", json!({})), vec![prio("a", "1", 500)]);
        let tainted = node(
            "n2",
            "1",
            "4Gi",
            json!({"spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}}),
        );
        let nodes = vec![Arc::new(full), Arc::new(tainted)];
        let p = prio("p", "1", 100);
        let fit = fit_error(&p, &nodes);
        let message = find_candidate(&p, &nodes, &ClusterObjects::default(), &fit).unwrap_err();
        assert_eq!(
            message,
            "preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, \
             1 Preemption is not helpful for scheduling."
        );
    }

    #[test]
    fn victims_that_do_not_make_room_are_no_candidate() {
        let n1 = with_pods(node("n1", "1", "4Gi", json!({})), vec![prio("a", "500m", 1)]);
        let nodes = vec![Arc::new(n1)];
        let p = prio("p", "2", 100);
        let fit = fit_error(&p, &nodes);
        let message = find_candidate(&p, &nodes, &ClusterObjects::default(), &fit).unwrap_err();
        assert_eq!(message, "preemption: 0/1 nodes are available: 1 Insufficient cpu.");
    }

    #[test]
    fn never_policy_and_terminating_victims_make_the_pod_ineligible() {
        let never = pod("p", json!({"spec": {"priority": 10, "preemptionPolicy": "Never"}}));
        assert_eq!(
            eligible(&never, None, &[]).unwrap_err(),
            "not eligible due to preemptionPolicy=Never."
        );
        let mut leaving = prio("a", "1", 1);
        leaving.terminating = true;
        let nodes = vec![Arc::new(with_pods(node("n1", "1", "1Gi", json!({})), vec![leaving]))];
        let p = prio("p", "1", 10);
        assert!(eligible(&p, Some("n1"), &nodes).is_err());
        assert!(eligible(&p, None, &nodes).is_ok());
    }
}
