//! NodeUnschedulable and node readiness: a cordoned node (`spec.unschedulable`) takes only pods
//! that tolerate `node.kubernetes.io/unschedulable:NoSchedule`, and a node whose `Ready`
//! condition is not `True` only pods that tolerate `node.kubernetes.io/not-ready:NoSchedule`
//! (the taints the reference's node controllers put on such nodes, checked here too so that
//! the answer does not wait for a controller).

use k8s_openapi::api::core::v1::Taint;

use crate::scheduler::framework::{Rejection, Verdict};
use crate::scheduler::node_info::{NodeInfo, PodInfo};
use crate::scheduler::selectors::{tolerates, tolerations_of};

const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";
const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";

fn tolerates_no_schedule(pod: &PodInfo, key: &str) -> bool {
    let taint = Taint { key: key.to_string(), effect: "NoSchedule".into(), ..Taint::default() };
    tolerations_of(&pod.pod).iter().any(|t| tolerates(t, &taint))
}

/// Rejects cordoned and not-ready nodes unless the pod tolerates their taints.
pub fn filter(pod: &PodInfo, node: &NodeInfo) -> Verdict {
    let cordoned = node.node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false);
    if cordoned && !tolerates_no_schedule(pod, UNSCHEDULABLE_TAINT) {
        return Err(Rejection::unresolvable("node(s) were unschedulable"));
    }
    if !node.is_ready() && !tolerates_no_schedule(pod, NOT_READY_TAINT) {
        return Err(Rejection::unresolvable(format!(
            "node(s) had untolerated taint {{{NOT_READY_TAINT}: }}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::node_info::testing::*;
    use serde_json::json;

    #[test]
    fn cordoned_node_rejects_unless_tolerated() {
        let n = node("n1", "1", "1Gi", json!({"spec": {"unschedulable": true}}));
        let err = filter(&pod("p", json!({})), &n).unwrap_err();
        assert_eq!(err.reasons, ["node(s) were unschedulable"]);
        let tolerant = pod(
            "p",
            json!({"spec": {"tolerations": [
            {"key": UNSCHEDULABLE_TAINT, "operator": "Exists", "effect": "NoSchedule"}]}}),
        );
        assert!(filter(&tolerant, &n).is_ok());
    }

    #[test]
    fn not_ready_node_rejects() {
        let n = node(
            "n1",
            "1",
            "1Gi",
            json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
        );
        let err = filter(&pod("p", json!({})), &n).unwrap_err();
        assert_eq!(err.reasons, ["node(s) had untolerated taint {node.kubernetes.io/not-ready: }"]);
        assert!(filter(&pod("p", json!({})), &node("n2", "1", "1Gi", json!({}))).is_ok());
    }
}
