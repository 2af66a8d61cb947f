//! NodeAffinity: the pod's `nodeSelector` and its required node affinity
//! (`requiredDuringSchedulingIgnoredDuringExecution`) must both match the node.

use crate::scheduler::framework::{Rejection, Verdict};
use crate::scheduler::node_info::{NodeInfo, PodInfo};
use crate::scheduler::selectors::required_node_affinity_matches;

/// The reference's reason for a node that does not match.
pub const REASON: &str = "node(s) didn't match Pod's node affinity/selector";

/// Rejects nodes outside the pod's node selector or required node affinity.
pub fn filter(pod: &PodInfo, node: &NodeInfo) -> Verdict {
    if required_node_affinity_matches(&pod.pod, &node.node) {
        Ok(())
    } else {
        Err(Rejection::unresolvable(REASON))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::node_info::testing::*;
    use serde_json::json;

    #[test]
    fn node_selector_must_match_labels() {
        let n = node("n1", "1", "1Gi", json!({"metadata": {"labels": {"disk": "ssd"}}}));
        assert!(filter(&pod("p", json!({"spec": {"nodeSelector": {"disk": "ssd"}}})), &n).is_ok());
        let err =
            filter(&pod("p", json!({"spec": {"nodeSelector": {"disk": "hdd"}}})), &n).unwrap_err();
        assert_eq!(err.reasons, [REASON]);
    }

    #[test]
    fn required_affinity_terms_are_ored() {
        let n = node("n1", "1", "1Gi", json!({"metadata": {"labels": {"zone": "b"}}}));
        let p = pod(
            "p",
            json!({"spec": {"affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}
            ]}}}}}),
        );
        assert!(filter(&p, &n).is_ok());
        let other = node("n2", "1", "1Gi", json!({"metadata": {"labels": {"zone": "b"}}}));
        assert!(filter(&p, &other).is_err());
    }
}
