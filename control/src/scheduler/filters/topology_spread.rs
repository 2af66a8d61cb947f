//! PodTopologySpread: `topologySpreadConstraints` count the pods their `labelSelector` selects
//! (in the pod's namespace) per topology domain, over the nodes the pod could use (its node
//! selector and required node affinity) that carry every constraint's key. A
//! `DoNotSchedule` constraint rejects a node when placing the pod there would make its domain
//! exceed the least populated domain by more than `maxSkew` (with fewer than `minDomains`
//! domains the minimum counts as 0); `ScheduleAnyway` constraints only score
//! (`scores::topology_spread`).

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use crate::scheduler::framework::{Rejection, Verdict};
use crate::scheduler::node_info::{NodeInfo, PodInfo};
use crate::scheduler::selectors::{label_selector_matches, required_node_affinity_matches};

/// One constraint, ready to count.
#[derive(Debug, Clone)]
pub struct Constraint {
    pub max_skew: i64,
    pub topology_key: String,
    selector: Option<LabelSelector>,
    min_domains: usize,
}

impl Constraint {
    /// Whether the constraint counts `pod` (same namespace as `owner`, selected, not leaving).
    pub fn counts(&self, owner: &PodInfo, pod: &PodInfo) -> bool {
        let Some(selector) = &self.selector else { return false };
        pod.namespace == owner.namespace
            && !pod.terminating
            && label_selector_matches(selector, pod.labels())
    }
}

/// The pod's constraints that are hard (`DoNotSchedule`) or soft (`ScheduleAnyway`), with
/// `matchLabelKeys` folded into the selector.
pub fn constraints(pod: &Pod, hard: bool) -> Vec<Constraint> {
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let all = pod
        .spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_deref())
        .unwrap_or_default();
    all.iter()
        .filter(|c| (c.when_unsatisfiable == "DoNotSchedule") == hard)
        .map(|c| {
            let mut selector = c.label_selector.clone();
            if let Some(selector) = selector.as_mut() {
                for key in c.match_label_keys.iter().flatten() {
                    if let Some(value) = labels.get(key) {
                        selector.match_expressions.get_or_insert_with(Vec::new).push(
                            LabelSelectorRequirement {
                                key: key.clone(),
                                operator: "In".into(),
                                values: Some(vec![value.clone()]),
                            },
                        );
                    }
                }
            }
            Constraint {
                max_skew: i64::from(c.max_skew),
                topology_key: c.topology_key.clone(),
                selector,
                min_domains: c.min_domains.map_or(1, |m| m.max(1) as usize),
            }
        })
        .collect()
}

/// Per constraint: domain → pods counted there, over the nodes the pod could use that carry
/// every constraint's key (each such node's domain starts at 0).
pub fn count_domains(
    pod: &PodInfo,
    constraints: &[Constraint],
    nodes: &[&NodeInfo],
) -> Vec<HashMap<String, i64>> {
    let mut counts = vec![HashMap::new(); constraints.len()];
    if constraints.is_empty() {
        return counts;
    }
    for node in nodes {
        let labels = node.labels();
        if !constraints.iter().all(|c| labels.contains_key(&c.topology_key))
            || !required_node_affinity_matches(&pod.pod, &node.node)
        {
            continue;
        }
        for (constraint, counts) in constraints.iter().zip(counts.iter_mut()) {
            let Some(value) = labels.get(&constraint.topology_key) else { continue };
            let matching = node.pods.iter().filter(|p| constraint.counts(pod, p)).count() as i64;
            *counts.entry(value.clone()).or_insert(0) += matching;
        }
    }
    counts
}

/// The hard constraints and their counts for one pod.
#[derive(Debug, Clone, Default)]
pub struct SpreadState {
    constraints: Vec<Constraint>,
    counts: Vec<HashMap<String, i64>>,
}

/// Counts the domains of the pod's hard constraints.
pub fn pre_filter(pod: &PodInfo, nodes: &[&NodeInfo]) -> SpreadState {
    let constraints = constraints(&pod.pod, true);
    let counts = count_domains(pod, &constraints, nodes);
    SpreadState { constraints, counts }
}

/// Rejects the node when the pod there would skew a hard constraint too far.
pub fn filter(state: &SpreadState, pod: &PodInfo, node: &NodeInfo) -> Verdict {
    for (constraint, counts) in state.constraints.iter().zip(&state.counts) {
        let Some(value) = node.labels().get(&constraint.topology_key) else {
            return Err(Rejection::unresolvable(
                "node(s) didn't match pod topology spread constraints (missing required label)",
            ));
        };
        let min = if counts.len() < constraint.min_domains {
            0
        } else {
            counts.values().copied().min().unwrap_or(0)
        };
        let self_match = i64::from(constraint.counts(pod, pod));
        let here = counts.get(value).copied().unwrap_or(0);
        if here + self_match - min > constraint.max_skew {
            return Err(Rejection::unschedulable(
                "node(s) didn't match pod topology spread constraints",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::node_info::testing::*;
    use serde_json::json;

    fn spread(name: &str, extra: serde_json::Value) -> PodInfo {
        let mut base = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"topologySpreadConstraints": [{
            "maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app": "web"}}}]}});
        merge(&mut base, extra);
        pod(name, base)
    }

    fn zone_node(name: &str, zone: &str, pods: Vec<PodInfo>) -> NodeInfo {
        with_pods(node(name, "4", "8Gi", json!({"metadata": {"labels": {"zone": zone}}})), pods)
    }

    #[test]
    fn max_skew_keeps_domains_balanced() {
        let web = |n: &str| pod(n, json!({"metadata": {"labels": {"app": "web"}}}));
        let nodes = [zone_node("a1", "a", vec![web("x")]), zone_node("b1", "b", vec![])];
        let refs: Vec<&NodeInfo> = nodes.iter().collect();
        let p = spread("p", json!({}));
        let state = pre_filter(&p, &refs);
        assert_eq!(
            filter(&state, &p, &nodes[0]).unwrap_err().reasons,
            ["node(s) didn't match pod topology spread constraints"]
        );
        assert!(filter(&state, &p, &nodes[1]).is_ok());
    }

    #[test]
    fn a_node_without_the_key_is_unresolvable() {
        let nodes = [node("n1", "1", "1Gi", json!({}))];
        let refs: Vec<&NodeInfo> = nodes.iter().collect();
        let p = spread("p", json!({}));
        let err = filter(&pre_filter(&p, &refs), &p, &nodes[0]).unwrap_err();
        assert_eq!(err.code, crate::scheduler::framework::Code::Unresolvable);
    }

    #[test]
    fn min_domains_counts_missing_domains_as_empty() {
        let web = |n: &str| pod(n, json!({"metadata": {"labels": {"app": "web"}}}));
        let nodes = [zone_node("a1", "a", vec![web("x")])];
        let refs: Vec<&NodeInfo> = nodes.iter().collect();
        let plain = spread("p", json!({}));
        assert!(
            filter(&pre_filter(&plain, &refs), &plain, &nodes[0]).is_ok(),
            "one domain: skew 0"
        );
        let p = spread(
            "p",
            json!({"spec": {"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone",
            "whenUnsatisfiable": "DoNotSchedule", "minDomains": 2, "labelSelector": {"matchLabels": {"app": "web"}}}]}}),
        );
        assert!(filter(&pre_filter(&p, &refs), &p, &nodes[0]).is_err());
    }
}
