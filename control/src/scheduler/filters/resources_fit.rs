//! NodeResourcesFit: the pod's requests (cpu, memory, ephemeral-storage, extended resources)
//! must fit in what the node can allocate minus what its pods already request, and the node
//! must have a free pod slot. Every shortfall is reported, as the reference does.

use crate::scheduler::framework::{Rejection, Verdict};
use crate::scheduler::node_info::{NodeInfo, PodInfo};

/// Rejects the node with one reason per resource that does not fit.
pub fn filter(pod: &PodInfo, node: &NodeInfo) -> Verdict {
    let mut reasons = Vec::new();
    if node.requested.pods + 1 > node.allocatable.pods {
        reasons.push("Too many pods".to_string());
    }
    let want = &pod.requests;
    let have = &node.allocatable;
    let used = &node.requested;
    let short = |request: i64, allocatable: i64, requested: i64| {
        request > 0 && request > allocatable - requested
    };
    if short(want.milli_cpu, have.milli_cpu, used.milli_cpu) {
        reasons.push("Insufficient cpu".to_string());
    }
    if short(want.memory, have.memory, used.memory) {
        reasons.push("Insufficient memory".to_string());
    }
    if short(want.ephemeral_storage, have.ephemeral_storage, used.ephemeral_storage) {
        reasons.push("Insufficient ephemeral-storage".to_string());
    }
    for (name, &request) in &want.scalar {
        let allocatable = have.scalar.get(name).copied().unwrap_or(0);
        let requested = used.scalar.get(name).copied().unwrap_or(0);
        if short(request, allocatable, requested) {
            reasons.push(format!("Insufficient {name}"));
        }
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(Rejection { code: crate::scheduler::framework::Code::Unschedulable, reasons })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::node_info::testing::*;
    use serde_json::json;

    #[test]
    fn requests_must_fit_in_what_is_left() {
        let n = with_pods(
            node("n1", "2", "4Gi", json!({})),
            vec![pod_requesting("a", "1500m", "1Gi", json!({}))],
        );
        assert!(filter(&pod_requesting("b", "500m", "3Gi", json!({})), &n).is_ok());
        let err = filter(&pod_requesting("c", "600m", "4Gi", json!({})), &n).unwrap_err();
        assert_eq!(err.reasons, ["Insufficient cpu", "Insufficient memory"]);
    }

    #[test]
    fn pod_slots_and_extended_resources() {
        let n = node(
            "n1",
            "2",
            "4Gi",
            json!({"status": {"allocatable": {"pods": "1", "example.com/gpu": "1"}}}),
        );
        let gpu = |name: &str, count: &str| {
            pod(
                name,
                json!({"spec": {"containers": [{"name": "c",
            "image": "x", "resources": {"limits": {"example.com/gpu": count}}}]}}),
            )
        };
        assert!(filter(&gpu("a", "1"), &n).is_ok());
        assert_eq!(
            filter(&gpu("b", "2"), &n).unwrap_err().reasons,
            ["Insufficient example.com/gpu"]
        );
        let full = with_pods(n, vec![pod("x", json!({}))]);
        assert_eq!(filter(&pod("y", json!({})), &full).unwrap_err().reasons, ["Too many pods"]);
    }

    #[test]
    fn ephemeral_storage_counts() {
        let n = node("n1", "2", "4Gi", json!({}));
        let p = pod(
            "p",
            json!({"spec": {"containers": [{"name": "c", "image": "x",
            "resources": {"requests": {"ephemeral-storage": "20Gi"}}}]}}),
        );
        assert_eq!(filter(&p, &n).unwrap_err().reasons, ["Insufficient ephemeral-storage"]);
    }
}
