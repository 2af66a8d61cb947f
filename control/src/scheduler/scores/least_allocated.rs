//! NodeResourcesFit's LeastAllocated strategy: prefer the node with the most CPU and memory left
//! after placing the pod (pods without requests count the scoring defaults, so they spread).

use super::{ScoreContext, MAX_SCORE};
use crate::scheduler::node_info::NodeInfo;

/// Fraction of `capacity` left free after `requested`, as 0 to 100.
fn free_share(requested: i64, capacity: i64) -> i64 {
    if capacity <= 0 || requested > capacity {
        return 0;
    }
    (capacity - requested) * MAX_SCORE / capacity
}

/// The mean free share of CPU and memory on each node with the pod placed.
pub fn scores(ctx: &ScoreContext, nodes: &[&NodeInfo]) -> Vec<i64> {
    let (cpu, memory) = ctx.pod.nonzero;
    nodes
        .iter()
        .map(|n| {
            let cpu_free = free_share(n.nonzero_requested.0 + cpu, n.allocatable.milli_cpu);
            let memory_free = free_share(n.nonzero_requested.1 + memory, n.allocatable.memory);
            (cpu_free + memory_free) / 2
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
    fn the_emptier_node_scores_higher() {
        let busy = with_pods(
            node("busy", "4", "8Gi", json!({})),
            vec![pod_requesting("a", "2", "4Gi", json!({}))],
        );
        let idle = node("idle", "4", "8Gi", json!({}));
        let p = pod_requesting("p", "1", "2Gi", json!({}));
        let ctx = ScoreContext { pod: &p, all_nodes: &[], objects: &ClusterObjects::default() };
        assert_eq!(scores(&ctx, &[&busy, &idle]), [25, 75]);
    }
}
