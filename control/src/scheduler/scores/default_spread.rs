//! Default spreading (the reference's SelectorSpread, which its system-default topology spread
//! replaced with the same effect): pods of one controller (same controller ownerReference) are
//! spread across nodes and, where nodes carry `topology.kubernetes.io/zone`, across zones, the
//! zone counting for two thirds. Pods with their own `topologySpreadConstraints` skip it.

use std::collections::HashMap;

use super::{ScoreContext, MAX_SCORE};
use crate::scheduler::node_info::{NodeInfo, PodInfo};

/// The label naming a node's zone (a site, for an edge fleet).
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

fn siblings(pod: &PodInfo, node: &NodeInfo) -> i64 {
    node.pods
        .iter()
        .filter(|p| {
            p.owner == pod.owner
                && p.namespace == pod.namespace
                && !p.terminating
                && p.uid != pod.uid
        })
        .count() as i64
}

/// Nodes and zones with fewer of the owner's pods score higher.
pub fn scores(ctx: &ScoreContext, nodes: &[&NodeInfo]) -> Vec<i64> {
    let has_constraints = ctx
        .pod
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_ref())
        .is_some_and(|c| !c.is_empty());
    if ctx.pod.owner.is_none() || has_constraints {
        return vec![0; nodes.len()];
    }
    let per_node: Vec<i64> = nodes.iter().map(|n| siblings(ctx.pod, n)).collect();
    let mut per_zone: HashMap<&str, i64> = HashMap::new();
    for (node, count) in nodes.iter().zip(&per_node) {
        if let Some(zone) = node.labels().get(ZONE_LABEL) {
            *per_zone.entry(zone.as_str()).or_insert(0) += count;
        }
    }
    let max_node = per_node.iter().copied().max().unwrap_or(0);
    let max_zone = per_zone.values().copied().max().unwrap_or(0);
    let share =
        |count: i64, max: i64| if max > 0 { MAX_SCORE * (max - count) / max } else { MAX_SCORE };
    nodes
        .iter()
        .zip(&per_node)
        .map(|(node, &count)| {
            let node_score = share(count, max_node);
            match node.labels().get(ZONE_LABEL).and_then(|z| per_zone.get(z.as_str())) {
                Some(&zone_count) => (node_score + 2 * share(zone_count, max_zone)) / 3,
                None => node_score,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::framework::ClusterObjects;
    use crate::scheduler::node_info::testing::*;
    use serde_json::json;

    fn owned(name: &str) -> PodInfo {
        pod(
            name,
            json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "name": "rs", "uid": "rs-uid", "controller": true}]}}),
        )
    }

    #[test]
    fn siblings_push_the_pod_to_other_nodes_and_zones() {
        let zone = |z: &str| json!({"metadata": {"labels": {ZONE_LABEL: z}}});
        let a1 = with_pods(node("a1", "4", "8Gi", zone("a")), vec![owned("x")]);
        let a2 = node("a2", "4", "8Gi", zone("a"));
        let b1 = node("b1", "4", "8Gi", zone("b"));
        let p = owned("p");
        let all = [&a1, &a2, &b1];
        let ctx = ScoreContext { pod: &p, all_nodes: &all, objects: &ClusterObjects::default() };
        // a1 has a sibling (0), a2 none but its zone has one (33), b1 is empty all round (100).
        assert_eq!(scores(&ctx, &all), [0, 33, 100]);
    }

    #[test]
    fn unowned_pods_are_not_spread() {
        let n = node("n", "1", "1Gi", json!({}));
        let p = pod("p", json!({}));
        let ctx = ScoreContext { pod: &p, all_nodes: &[], objects: &ClusterObjects::default() };
        assert_eq!(scores(&ctx, &[&n]), [0]);
    }
}
