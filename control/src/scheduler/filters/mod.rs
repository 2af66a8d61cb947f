//! The filters: whether a node can take a pod at all. Each filter is a pure function of the pod,
//! the node and, for those that look beyond the node, a state computed once per scheduling
//! cycle over the whole cluster ([`CycleState`]). They run in the reference's order and the
//! first rejection decides the node's reason.

pub mod inter_pod_affinity;
pub mod node_affinity;
pub mod node_ports;
pub mod node_unschedulable;
pub mod resources_fit;
pub mod taint_toleration;
pub mod topology_spread;
pub mod volume_binding;

use super::framework::{ClusterObjects, Verdict};
use super::node_info::{NodeInfo, PodInfo};

/// What the filters of one pod share across nodes.
#[derive(Debug, Clone)]
pub struct CycleState {
    pub affinity: inter_pod_affinity::AffinityState,
    pub spread: topology_spread::SpreadState,
    pub volumes: volume_binding::VolumeState,
}

impl CycleState {
    /// Works out the cluster-wide state for `pod`; a reason that rules out every node (a
    /// missing claim, ...) as the error.
    pub fn new(
        pod: &PodInfo,
        nodes: &[&NodeInfo],
        objects: &ClusterObjects,
    ) -> Result<CycleState, String> {
        let volumes = volume_binding::pre_filter(&pod.pod, objects)?;
        Ok(CycleState {
            affinity: inter_pod_affinity::pre_filter(pod, nodes, objects),
            spread: topology_spread::pre_filter(pod, nodes),
            volumes,
        })
    }
}

/// Runs every filter on `node`, stopping at the first rejection.
pub fn run(state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Verdict {
    node_unschedulable::filter(pod, node)?;
    taint_toleration::filter(pod, node)?;
    node_affinity::filter(pod, node)?;
    node_ports::filter(pod, node)?;
    resources_fit::filter(pod, node)?;
    volume_binding::filter(&state.volumes, node)?;
    topology_spread::filter(&state.spread, pod, node)?;
    inter_pod_affinity::filter(&state.affinity, pod, node)
}
