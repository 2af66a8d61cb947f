//! InterPodAffinity, required terms: the pod's affinity terms need a matching pod in the node's
//! topology domain (unless no pod matches anywhere and the pod matches its own terms: the first
//! pod of a group), its anti-affinity terms need none, and no pod already placed may have an
//! anti-affinity term that selects this pod within the node's domain.

use std::collections::{HashMap, HashSet};

use crate::scheduler::affinity_terms::{terms_of, AffinityTerm, Kind};
use crate::scheduler::framework::{ClusterObjects, Rejection, Verdict};
use crate::scheduler::node_info::{NodeInfo, PodInfo};

/// Counts over the whole cluster for one pod, computed once per scheduling cycle.
#[derive(Debug, Clone, Default)]
pub struct AffinityState {
    affinity: Vec<AffinityTerm>,
    /// Per affinity term: topology value → matching pods in that domain.
    affinity_counts: Vec<HashMap<String, usize>>,
    anti_affinity: Vec<AffinityTerm>,
    anti_counts: Vec<HashMap<String, usize>>,
    /// (topology key, value) domains where an existing pod's anti-affinity excludes this pod.
    excluded: HashSet<(String, String)>,
}

/// Counts the pods the incoming pod's terms select, and the domains placed pods exclude it from.
pub fn pre_filter(pod: &PodInfo, nodes: &[&NodeInfo], objects: &ClusterObjects) -> AffinityState {
    let mut state = AffinityState::default();
    if pod.has_affinity {
        state.affinity = terms_of(&pod.pod, Kind::RequiredAffinity, objects);
        state.anti_affinity = terms_of(&pod.pod, Kind::RequiredAntiAffinity, objects);
        state.affinity_counts = vec![HashMap::new(); state.affinity.len()];
        state.anti_counts = vec![HashMap::new(); state.anti_affinity.len()];
    }
    let incoming_terms = !state.affinity.is_empty() || !state.anti_affinity.is_empty();
    for node in nodes {
        for existing in &node.pods {
            if existing.uid == pod.uid {
                continue;
            }
            if incoming_terms {
                count(&state.affinity, &mut state.affinity_counts, existing, node);
                count(&state.anti_affinity, &mut state.anti_counts, existing, node);
            }
            if existing.has_affinity {
                for term in terms_of(&existing.pod, Kind::RequiredAntiAffinity, objects) {
                    if let Some(value) = term.domain(node).filter(|_| term.matches(pod)) {
                        state.excluded.insert((term.topology_key.clone(), value.clone()));
                    }
                }
            }
        }
    }
    state
}

fn count(
    terms: &[AffinityTerm],
    counts: &mut [HashMap<String, usize>],
    pod: &PodInfo,
    node: &NodeInfo,
) {
    for (term, counts) in terms.iter().zip(counts.iter_mut()) {
        if let Some(value) = term.domain(node).filter(|_| term.matches(pod)) {
            *counts.entry(value.clone()).or_insert(0) += 1;
        }
    }
}

/// Rejects the node per the required terms of the pod and of the pods already placed.
pub fn filter(state: &AffinityState, pod: &PodInfo, node: &NodeInfo) -> Verdict {
    let labels = node.labels();
    if state.excluded.iter().any(|(key, value)| labels.get(key) == Some(value)) {
        return Err(Rejection::unschedulable(
            "node(s) didn't satisfy existing pods anti-affinity rules",
        ));
    }
    if !state.affinity.is_empty() {
        let none_anywhere = state.affinity_counts.iter().all(HashMap::is_empty);
        let self_match = state.affinity.iter().all(|t| t.matches(pod));
        let satisfied = state.affinity.iter().zip(&state.affinity_counts).all(|(term, counts)| {
            term.domain(node).is_some_and(|value| {
                counts.get(value).is_some_and(|&n| n > 0) || (none_anywhere && self_match)
            })
        });
        if !satisfied {
            return Err(Rejection::unresolvable("node(s) didn't match pod affinity rules"));
        }
    }
    let conflict = state.anti_affinity.iter().zip(&state.anti_counts).any(|(term, counts)| {
        term.domain(node).is_some_and(|value| counts.get(value).is_some_and(|&n| n > 0))
    });
    if conflict {
        return Err(Rejection::unschedulable("node(s) didn't match pod anti-affinity rules"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::node_info::testing::*;
    use serde_json::json;

    fn web(name: &str, rule: &str) -> PodInfo {
        pod(
            name,
            json!({"metadata": {"labels": {"app": "web"}}, "spec": {"affinity": {rule: {
            "requiredDuringSchedulingIgnoredDuringExecution": [{
                "labelSelector": {"matchLabels": {"app": "web"}},
                "topologyKey": "kubernetes.io/hostname"}]}}}}),
        )
    }

    fn check(incoming: &PodInfo, nodes: &[NodeInfo]) -> Vec<Verdict> {
        let refs: Vec<&NodeInfo> = nodes.iter().collect();
        let state = pre_filter(incoming, &refs, &ClusterObjects::default());
        nodes.iter().map(|n| filter(&state, incoming, n)).collect()
    }

    #[test]
    fn anti_affinity_spreads_one_per_node() {
        let nodes = [
            with_pods(node("n1", "1", "1Gi", json!({})), vec![web("a", "podAntiAffinity")]),
            node("n2", "1", "1Gi", json!({})),
        ];
        let verdicts = check(&web("b", "podAntiAffinity"), &nodes);
        assert_eq!(
            verdicts[0].clone().unwrap_err().reasons,
            ["node(s) didn't satisfy existing pods anti-affinity rules"]
        );
        assert!(verdicts[1].is_ok());
        // A pod without terms of its own is still kept away by the placed pod's term.
        let plain = pod("c", json!({"metadata": {"labels": {"app": "web"}}}));
        assert!(check(&plain, &nodes)[0].is_err());
    }

    #[test]
    fn affinity_follows_matching_pods_and_lets_the_first_one_anywhere() {
        let first = check(&web("a", "podAffinity"), &[node("n1", "1", "1Gi", json!({}))]);
        assert!(first[0].is_ok(), "the first pod of the group matches its own term");
        let nodes = [
            with_pods(
                node("n1", "1", "1Gi", json!({})),
                vec![pod("x", json!({"metadata": {"labels": {"app": "web"}}}))],
            ),
            node("n2", "1", "1Gi", json!({})),
        ];
        let verdicts = check(&web("b", "podAffinity"), &nodes);
        assert!(verdicts[0].is_ok());
        assert_eq!(
            verdicts[1].clone().unwrap_err().reasons,
            ["node(s) didn't match pod affinity rules"]
        );
    }

    #[test]
    fn namespace_selector_widens_the_term() {
        let mut other = pod("x", json!({"metadata": {"labels": {"app": "db"}}}));
        other.namespace = "prod".into();
        let nodes = [with_pods(node("n1", "1", "1Gi", json!({})), vec![other])];
        let term = |ns_sel: serde_json::Value| {
            pod(
                "p",
                json!({"spec": {"affinity": {"podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [{
                "labelSelector": {"matchLabels": {"app": "db"}}, "namespaceSelector": ns_sel,
                "topologyKey": "kubernetes.io/hostname"}]}}}}),
            )
        };
        assert!(check(&term(json!(null)), &nodes)[0].is_ok(), "own namespace only");
        assert!(check(&term(json!({})), &nodes)[0].is_err(), "{{}} selects every namespace");
    }
}
