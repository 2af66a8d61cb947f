//! TaintToleration, soft part: a node with `PreferNoSchedule` taints the pod does not tolerate
//! scores lower, the more such taints the lower.

use super::{normalize, ScoreContext};
use crate::scheduler::node_info::NodeInfo;
use crate::scheduler::selectors::{tolerates, tolerations_of};

/// Fewer untolerated `PreferNoSchedule` taints score higher.
pub fn scores(ctx: &ScoreContext, nodes: &[&NodeInfo]) -> Vec<i64> {
    let tolerations = tolerations_of(&ctx.pod.pod);
    let raw: Vec<i64> = nodes
        .iter()
        .map(|n| {
            let taints = n.node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or_default();
            taints
                .iter()
                .filter(|t| t.effect == "PreferNoSchedule")
                .filter(|t| !tolerations.iter().any(|tol| tolerates(tol, t)))
                .count() as i64
        })
        .collect();
    normalize(&raw, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::framework::ClusterObjects;
    use crate::scheduler::node_info::testing::*;
    use serde_json::json;

    #[test]
    fn prefer_no_schedule_lowers_the_score() {
        let tainted = node(
            "a",
            "1",
            "1Gi",
            json!({"spec": {"taints": [{"key": "k", "effect": "PreferNoSchedule"}]}}),
        );
        let clean = node("b", "1", "1Gi", json!({}));
        let p = pod("p", json!({}));
        let ctx = ScoreContext { pod: &p, all_nodes: &[], objects: &ClusterObjects::default() };
        assert_eq!(scores(&ctx, &[&tainted, &clean]), [0, 100]);
    }
}
