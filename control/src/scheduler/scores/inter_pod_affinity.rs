//! InterPodAffinity, preferred terms: a node gains the weight of each preferred affinity term of
//! the pod for every selected pod in its topology domain (anti-affinity subtracts), and the same
//! for placed pods' preferred terms (and required affinity, with weight 1) that select the pod;
//! scores are normalized between the worst and the best node.

use std::collections::HashMap;

use super::{normalize_min_max, ScoreContext};
use crate::scheduler::affinity_terms::{terms_of, AffinityTerm, Kind};
use crate::scheduler::node_info::NodeInfo;

/// Weighted affinity minus anti-affinity per node, normalized.
pub fn scores(ctx: &ScoreContext, nodes: &[&NodeInfo]) -> Vec<i64> {
    let pod = ctx.pod;
    let affinity = terms_of(&pod.pod, Kind::PreferredAffinity, ctx.objects);
    let anti = terms_of(&pod.pod, Kind::PreferredAntiAffinity, ctx.objects);
    let incoming = !affinity.is_empty() || !anti.is_empty();
    // (topology key, value) → weight gained by nodes in that domain.
    let mut domains: HashMap<(String, String), i64> = HashMap::new();
    let mut add = |term: &AffinityTerm, node: &NodeInfo, sign: i64| {
        if let Some(value) = term.domain(node) {
            *domains.entry((term.topology_key.clone(), value.clone())).or_insert(0) +=
                sign * term.weight;
        }
    };
    for node in ctx.all_nodes {
        for existing in &node.pods {
            if existing.uid == pod.uid {
                continue;
            }
            if incoming {
                affinity.iter().filter(|t| t.matches(existing)).for_each(|t| add(t, node, 1));
                anti.iter().filter(|t| t.matches(existing)).for_each(|t| add(t, node, -1));
            }
            if existing.has_affinity {
                for (kind, sign) in [
                    (Kind::PreferredAffinity, 1),
                    (Kind::RequiredAffinity, 1),
                    (Kind::PreferredAntiAffinity, -1),
                ] {
                    for term in terms_of(&existing.pod, kind, ctx.objects) {
                        if term.matches(pod) {
                            add(&term, node, sign);
                        }
                    }
                }
            }
        }
    }
    if domains.is_empty() {
        return vec![0; nodes.len()];
    }
    let raw: Vec<i64> = nodes
        .iter()
        .map(|n| {
            let labels = n.labels();
            domains
                .iter()
                .filter(|((key, value), _)| labels.get(key) == Some(value))
                .map(|(_, w)| w)
                .sum()
        })
        .collect();
    normalize_min_max(&raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::framework::ClusterObjects;
    use crate::scheduler::node_info::testing::*;
    use serde_json::json;

    #[test]
    fn preferred_affinity_and_anti_affinity() {
        let db = pod("db", json!({"metadata": {"labels": {"app": "db"}}}));
        let cache = pod("cache", json!({"metadata": {"labels": {"app": "cache"}}}));
        let n1 = with_pods(node("n1", "1", "1Gi", json!({})), vec![db]);
        let n2 = with_pods(node("n2", "1", "1Gi", json!({})), vec![cache]);
        let n3 = node("n3", "1", "1Gi", json!({}));
        let term = |app: &str, weight: i32| {
            json!({"weight": weight, "podAffinityTerm": {
            "labelSelector": {"matchLabels": {"app": app}}, "topologyKey": "kubernetes.io/hostname"}})
        };
        let p = pod(
            "p",
            json!({"spec": {"affinity": {
            "podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [term("db", 10)]},
            "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [term("cache", 10)]}}}}),
        );
        let all = [&n1, &n2, &n3];
        let ctx = ScoreContext { pod: &p, all_nodes: &all, objects: &ClusterObjects::default() };
        assert_eq!(scores(&ctx, &all), [100, 0, 50]);
    }
}
