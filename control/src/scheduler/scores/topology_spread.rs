//! PodTopologySpread, soft part: `ScheduleAnyway` constraints prefer the nodes whose domains
//! hold the fewest selected pods; each constraint's count is weighted by the log of its number
//! of domains (as the reference does), and nodes missing a key score lowest.

use super::{ScoreContext, MAX_SCORE};
use crate::scheduler::filters::topology_spread::{constraints, count_domains};
use crate::scheduler::node_info::NodeInfo;

/// Fewer selected pods in the node's domains score higher.
pub fn scores(ctx: &ScoreContext, nodes: &[&NodeInfo]) -> Vec<i64> {
    let soft = constraints(&ctx.pod.pod, false);
    if soft.is_empty() {
        return vec![0; nodes.len()];
    }
    let counts = count_domains(ctx.pod, &soft, ctx.all_nodes);
    let raw: Vec<Option<f64>> = nodes
        .iter()
        .map(|n| {
            let mut total = 0.0;
            for (constraint, counts) in soft.iter().zip(&counts) {
                let value = n.labels().get(&constraint.topology_key)?;
                let weight = ((counts.len() + 2) as f64).ln();
                total += counts.get(value).copied().unwrap_or(0) as f64 * weight;
            }
            Some(total)
        })
        .collect();
    let known = raw.iter().flatten();
    let max = known.clone().copied().fold(f64::MIN, f64::max);
    let min = known.copied().fold(f64::MAX, f64::min);
    raw.iter()
        .map(|v| match v {
            None => 0,
            Some(_) if max <= min => MAX_SCORE,
            Some(v) => ((max - v) / (max - min) * MAX_SCORE as f64) as i64,
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
    fn schedule_anyway_prefers_the_emptier_domain() {
        let web = |n: &str| pod(n, json!({"metadata": {"labels": {"app": "web"}}}));
        let a = with_pods(
            node("a", "4", "8Gi", json!({"metadata": {"labels": {"zone": "a"}}})),
            vec![web("x"), web("y")],
        );
        let b = node("b", "4", "8Gi", json!({"metadata": {"labels": {"zone": "b"}}}));
        let bare = node("c", "4", "8Gi", json!({}));
        let p = pod(
            "p",
            json!({"metadata": {"labels": {"app": "web"}}, "spec": {"topologySpreadConstraints": [{
            "maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"app": "web"}}}]}}),
        );
        let all = [&a, &b, &bare];
        let ctx = ScoreContext { pod: &p, all_nodes: &all, objects: &ClusterObjects::default() };
        assert_eq!(scores(&ctx, &all), [0, 100, 0]);
    }
}
