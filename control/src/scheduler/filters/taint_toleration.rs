//! TaintToleration: a node's `NoSchedule` and `NoExecute` taints keep out every pod that does
//! not tolerate them (`PreferNoSchedule` only lowers the node's score, see
//! `scores::taint_toleration`).

use crate::scheduler::framework::{Rejection, Verdict};
use crate::scheduler::node_info::{NodeInfo, PodInfo};
use crate::scheduler::selectors::{tolerates, tolerations_of};

/// Rejects the node if one of its hard taints is not tolerated, naming the first such taint.
pub fn filter(pod: &PodInfo, node: &NodeInfo) -> Verdict {
    let tolerations = tolerations_of(&pod.pod);
    let taints = node.node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or_default();
    let untolerated = taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .find(|t| !tolerations.iter().any(|tol| tolerates(tol, t)));
    match untolerated {
        Some(taint) => Err(Rejection::unresolvable(format!(
            "node(s) had untolerated taint {{{}: {}}}",
            taint.key,
            taint.value.as_deref().unwrap_or("")
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::node_info::testing::*;
    use serde_json::json;

    fn tainted(effect: &str) -> NodeInfo {
        node(
            "n1",
            "1",
            "1Gi",
            json!({"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": effect}]}}),
        )
    }

    #[test]
    fn hard_taints_reject_untolerating_pods_with_the_reference_reason() {
        for effect in ["NoSchedule", "NoExecute"] {
            let err = filter(&pod("p", json!({})), &tainted(effect)).unwrap_err();
            assert_eq!(err.reasons, ["node(s) had untolerated taint {dedicated: db}"]);
        }
        assert!(filter(&pod("p", json!({})), &tainted("PreferNoSchedule")).is_ok());
    }

    #[test]
    fn a_matching_toleration_admits_the_pod() {
        let p = pod(
            "p",
            json!({"spec": {"tolerations": [
            {"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]}}),
        );
        assert!(filter(&p, &tainted("NoSchedule")).is_ok());
        assert!(filter(&p, &tainted("NoExecute")).is_err(), "effect must match");
    }
}
