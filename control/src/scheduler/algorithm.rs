//! One scheduling decision, as a pure function: run the filters over the nodes (in a large
//! cluster only until enough feasible nodes are found, starting where the last search stopped,
//! as the reference's `percentageOfNodesToScore` does), score the feasible ones, and pick the
//! best, breaking ties in rotation so that equal nodes share the work.

use std::sync::Arc;

use super::filters::{self, CycleState};
use super::framework::{ClusterObjects, FitError};
use super::node_info::{NodeInfo, PodInfo};
use super::scores::{self, ScoreContext};

/// Below this many nodes every node is evaluated.
const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// The least share of a large cluster evaluated, in percent.
const MIN_FEASIBLE_PERCENTAGE: usize = 5;

/// Where the next search starts and which of several best nodes comes next: carried from one
/// decision to the next.
#[derive(Debug, Clone, Default)]
pub struct Rotation {
    next_start: usize,
    ties: usize,
}

/// Why no node was chosen.
#[derive(Debug, Clone)]
pub enum NoFit {
    /// The cluster has no nodes (`no nodes available to schedule pods`).
    NoNodes,
    /// Every node was rejected.
    Fit(FitError),
}

impl NoFit {
    /// The reference's message.
    pub fn message(&self) -> String {
        match self {
            NoFit::NoNodes => "no nodes available to schedule pods".to_string(),
            NoFit::Fit(error) => error.message(),
        }
    }
}

/// The reference's adaptive number of feasible nodes to look for among `total`.
pub fn feasible_nodes_to_find(total: usize) -> usize {
    if total < MIN_FEASIBLE_NODES_TO_FIND {
        return total;
    }
    let percentage = 50usize.saturating_sub(total / 125).max(MIN_FEASIBLE_PERCENTAGE);
    (total * percentage / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
}

/// Picks a node for `pod` among `nodes` (name order), or says why none fits.
pub fn schedule(
    pod: &PodInfo,
    nodes: &[Arc<NodeInfo>],
    objects: &ClusterObjects,
    rotation: &mut Rotation,
) -> Result<String, NoFit> {
    if nodes.is_empty() {
        return Err(NoFit::NoNodes);
    }
    let all: Vec<&NodeInfo> = nodes.iter().map(|n| n.as_ref()).collect();
    let mut error = FitError { num_nodes: all.len(), ..FitError::default() };
    let state = match CycleState::new(pod, &all, objects) {
        Ok(state) => state,
        Err(reason) => {
            error.pre_filter = Some(reason);
            return Err(NoFit::Fit(error));
        }
    };
    let wanted = feasible_nodes_to_find(all.len());
    let start = rotation.next_start % all.len();
    let mut feasible: Vec<&NodeInfo> = Vec::with_capacity(wanted.min(all.len()));
    let mut evaluated = 0;
    for i in 0..all.len() {
        let node = all[(start + i) % all.len()];
        evaluated += 1;
        match filters::run(&state, pod, node) {
            Ok(()) => {
                feasible.push(node);
                if feasible.len() >= wanted {
                    break;
                }
            }
            Err(rejection) => {
                error.rejections.insert(node.name.clone(), rejection);
            }
        }
    }
    rotation.next_start = (start + evaluated) % all.len();
    if feasible.is_empty() {
        return Err(NoFit::Fit(error));
    }
    if feasible.len() == 1 {
        return Ok(feasible[0].name.clone());
    }
    let ctx = ScoreContext { pod, all_nodes: &all, objects };
    let totals = scores::total(&ctx, &feasible);
    Ok(feasible[select(&feasible, &totals, rotation)].name.clone())
}

/// The index of the best score; among equal best, the nodes take turns (in name order).
fn select(nodes: &[&NodeInfo], totals: &[i64], rotation: &mut Rotation) -> usize {
    let best = totals.iter().copied().max().unwrap_or(0);
    let mut tied: Vec<usize> = (0..totals.len()).filter(|&i| totals[i] == best).collect();
    tied.sort_by(|&a, &b| nodes[a].name.cmp(&nodes[b].name));
    let pick = tied[rotation.ties % tied.len()];
    rotation.ties = rotation.ties.wrapping_add(1);
    pick
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::node_info::testing::*;
    use serde_json::json;

    fn nodes(infos: Vec<NodeInfo>) -> Vec<Arc<NodeInfo>> {
        infos.into_iter().map(Arc::new).collect()
    }

    #[test]
    fn feasible_node_count_follows_the_reference() {
        assert_eq!(feasible_nodes_to_find(3), 3);
        assert_eq!(feasible_nodes_to_find(99), 99);
        assert_eq!(feasible_nodes_to_find(200), 100);
        assert_eq!(feasible_nodes_to_find(1000), 420);
        assert_eq!(feasible_nodes_to_find(5000), 500);
        assert_eq!(feasible_nodes_to_find(100_000), 5000);
    }

    #[test]
    fn picks_the_emptier_node() {
        let busy = with_pods(
            node("a", "4", "8Gi", json!({})),
            vec![pod_requesting("x", "3", "6Gi", json!({}))],
        );
        let all = nodes(vec![busy, node("b", "4", "8Gi", json!({}))]);
        let p = pod_requesting("p", "500m", "1Gi", json!({}));
        let chosen = schedule(&p, &all, &ClusterObjects::default(), &mut Rotation::default());
        assert_eq!(chosen.unwrap(), "b");
    }

    #[test]
    fn equal_nodes_take_turns() {
        let all = nodes(vec![
            node("a", "4", "8Gi", json!({})),
            node("b", "4", "8Gi", json!({})),
            node("c", "4", "8Gi", json!({})),
        ]);
        let mut rotation = Rotation::default();
        let p = pod("p", json!({}));
        let picks: Vec<String> = (0..6)
            .map(|_| schedule(&p, &all, &ClusterObjects::default(), &mut rotation).unwrap())
            .collect();
        assert_eq!(picks, ["a", "b", "c", "a", "b", "c"]);
    }

    #[test]
    fn no_fit_reports_every_node() {
        let all = nodes(vec![
            node("a", "1", "8Gi", json!({})),
            node("b", "1", "8Gi", json!({})),
            node("c", "4", "8Gi", json!({"spec": {"unschedulable": true}})),
        ]);
        let p = pod_requesting("p", "2", "1Gi", json!({}));
        let err =
            schedule(&p, &all, &ClusterObjects::default(), &mut Rotation::default()).unwrap_err();
        assert_eq!(
            err.message(),
            "0/3 nodes are available: 1 node(s) were unschedulable, 2 Insufficient cpu."
        );
    }

    #[test]
    fn no_nodes_at_all() {
        let err = schedule(
            &pod("p", json!({})),
            &[],
            &ClusterObjects::default(),
            &mut Rotation::default(),
        )
        .unwrap_err();
        assert_eq!(err.message(), "no nodes available to schedule pods");
    }

    #[test]
    fn large_clusters_stop_at_enough_feasible_nodes_and_resume_after_them() {
        let all =
            nodes((0..1000).map(|i| node(&format!("n{i:04}"), "4", "8Gi", json!({}))).collect());
        let mut rotation = Rotation::default();
        let p = pod("p", json!({}));
        schedule(&p, &all, &ClusterObjects::default(), &mut rotation).unwrap();
        assert_eq!(rotation.next_start, 420);
        schedule(&p, &all, &ClusterObjects::default(), &mut rotation).unwrap();
        assert_eq!(rotation.next_start, 840);
    }
}
