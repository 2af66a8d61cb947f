//! The scores: how good each feasible node is for a pod, 0 to 100 per score, summed with the
//! reference's default weights. Each score is a pure function over the pod and the nodes; the
//! ones that compare nodes normalize over the feasible set.

pub mod balanced_allocation;
pub mod default_spread;
pub mod image_locality;
pub mod inter_pod_affinity;
pub mod least_allocated;
pub mod node_affinity;
pub mod taint_toleration;
pub mod topology_spread;

use super::framework::ClusterObjects;
use super::node_info::{NodeInfo, PodInfo};

/// The best score one plugin gives.
pub const MAX_SCORE: i64 = 100;

/// What the scores read besides the feasible nodes.
pub struct ScoreContext<'a> {
    pub pod: &'a PodInfo,
    /// Every node (spreading and image locality look beyond the feasible ones).
    pub all_nodes: &'a [&'a NodeInfo],
    pub objects: &'a ClusterObjects,
}

type Score = fn(&ScoreContext, &[&NodeInfo]) -> Vec<i64>;

/// The scores and their weights (the reference's default profile).
const SCORES: &[(Score, i64)] = &[
    (taint_toleration::scores, 3),
    (node_affinity::scores, 2),
    (topology_spread::scores, 2),
    (default_spread::scores, 2),
    (inter_pod_affinity::scores, 2),
    (least_allocated::scores, 1),
    (balanced_allocation::scores, 1),
    (image_locality::scores, 1),
];

/// The weighted total of every score for each of `nodes`.
pub fn total(ctx: &ScoreContext, nodes: &[&NodeInfo]) -> Vec<i64> {
    let mut totals = vec![0; nodes.len()];
    for (score, weight) in SCORES {
        for (total, value) in totals.iter_mut().zip(score(ctx, nodes)) {
            *total += value * weight;
        }
    }
    totals
}

/// Scales raw values so the highest becomes [`MAX_SCORE`] (all 0 stays 0); with `reverse`, the
/// lowest raw value scores best.
pub fn normalize(raw: &[i64], reverse: bool) -> Vec<i64> {
    let max = raw.iter().copied().max().unwrap_or(0);
    if max <= 0 {
        return vec![if reverse { MAX_SCORE } else { 0 }; raw.len()];
    }
    raw.iter()
        .map(|&v| {
            let scaled = MAX_SCORE * v / max;
            if reverse {
                MAX_SCORE - scaled
            } else {
                scaled
            }
        })
        .collect()
}

/// Scales raw values (possibly negative) so the lowest becomes 0 and the highest [`MAX_SCORE`].
pub fn normalize_min_max(raw: &[i64]) -> Vec<i64> {
    let max = raw.iter().copied().max().unwrap_or(0);
    let min = raw.iter().copied().min().unwrap_or(0);
    if max == min {
        return vec![0; raw.len()];
    }
    raw.iter().map(|&v| MAX_SCORE * (v - min) / (max - min)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization() {
        assert_eq!(normalize(&[0, 5, 10], false), [0, 50, 100]);
        assert_eq!(normalize(&[0, 5, 10], true), [100, 50, 0]);
        assert_eq!(normalize(&[0, 0], true), [100, 100]);
        assert_eq!(normalize_min_max(&[-10, 0, 10]), [0, 50, 100]);
    }
}
