//! NodeAffinity, preferred terms: each matching `preferredDuringSchedulingIgnoredDuringExecution`
//! term adds its weight; the best node scores 100.

use super::{normalize, ScoreContext};
use crate::scheduler::node_info::NodeInfo;
use crate::scheduler::selectors::node_selector_term_matches;

/// The summed weights of the matching preferred terms, normalized.
pub fn scores(ctx: &ScoreContext, nodes: &[&NodeInfo]) -> Vec<i64> {
    let preferred = ctx
        .pod
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| n.preferred_during_scheduling_ignored_during_execution.as_deref())
        .unwrap_or_default();
    if preferred.is_empty() {
        return vec![0; nodes.len()];
    }
    let raw: Vec<i64> = nodes
        .iter()
        .map(|n| {
            preferred
                .iter()
                .filter(|t| node_selector_term_matches(&t.preference, &n.node))
                .map(|t| i64::from(t.weight))
                .sum()
        })
        .collect();
    normalize(&raw, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::framework::ClusterObjects;
    use crate::scheduler::node_info::testing::*;
    use serde_json::json;

    #[test]
    fn matching_preferences_add_their_weights() {
        let p = pod(
            "p",
            json!({"spec": {"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 80, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}},
                {"weight": 20, "preference": {"matchExpressions": [{"key": "zone", "operator": "Exists"}]}}
            ]}}}}),
        );
        let both =
            node("a", "1", "1Gi", json!({"metadata": {"labels": {"disk": "ssd", "zone": "z"}}}));
        let zone = node("b", "1", "1Gi", json!({"metadata": {"labels": {"zone": "z"}}}));
        let none = node("c", "1", "1Gi", json!({}));
        let ctx = ScoreContext { pod: &p, all_nodes: &[], objects: &ClusterObjects::default() };
        assert_eq!(scores(&ctx, &[&both, &zone, &none]), [100, 20, 0]);
    }
}
