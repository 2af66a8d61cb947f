//! NodeResourcesBalancedAllocation: prefer the node where, with the pod placed, CPU and memory
//! are used in similar proportions (so neither runs out while the other idles).

use super::{ScoreContext, MAX_SCORE};
use crate::scheduler::node_info::NodeInfo;

fn fraction(requested: i64, capacity: i64) -> f64 {
    if capacity <= 0 {
        return 1.0;
    }
    (requested as f64 / capacity as f64).min(1.0)
}

/// `(1 - |cpu share - memory share| / 2) * 100` for each node.
pub fn scores(ctx: &ScoreContext, nodes: &[&NodeInfo]) -> Vec<i64> {
    let (cpu, memory) = ctx.pod.nonzero;
    nodes
        .iter()
        .map(|n| {
            let c = fraction(n.nonzero_requested.0 + cpu, n.allocatable.milli_cpu);
            let m = fraction(n.nonzero_requested.1 + memory, n.allocatable.memory);
            let deviation = (c - m).abs() / 2.0;
            ((1.0 - deviation) * MAX_SCORE as f64) as i64
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::framework::ClusterObjects;
    use crate::scheduler::node_info::testing::*;
    use serde_json::json;

    #[test]
    fn balanced_use_scores_higher() {
        // The pod wants half the CPU and half the memory of "even", but all the CPU of "skewed".
        let even = node("even", "2", "4Gi", json!({}));
        let skewed = node("skewed", "1", "4Gi", json!({}));
        let p = pod_requesting("p", "1", "2Gi", json!({}));
        let ctx = ScoreContext { pod: &p, all_nodes: &[], objects: &ClusterObjects::default() };
        assert_eq!(scores(&ctx, &[&even, &skewed]), [100, 75]);
    }
}
