//! NodePorts: a pod's `hostPort`s must be free on the node (same protocol and port on the same
//! IP, or on the wildcard address, collide).

use crate::scheduler::framework::{Rejection, Verdict};
use crate::scheduler::node_info::{NodeInfo, PodInfo};

/// Rejects the node when a host port the pod wants is taken by a pod already there.
pub fn filter(pod: &PodInfo, node: &NodeInfo) -> Verdict {
    if pod.host_ports.is_empty() {
        return Ok(());
    }
    let taken = node.pods.iter().flat_map(|p| p.host_ports.iter());
    let conflict =
        taken.into_iter().any(|used| pod.host_ports.iter().any(|want| want.conflicts(used)));
    if conflict {
        Err(Rejection::unschedulable("node(s) didn't have free ports for the requested pod ports"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::node_info::testing::*;
    use serde_json::json;

    fn with_port(name: &str, port: i32, protocol: &str) -> PodInfo {
        pod(
            name,
            json!({"spec": {"containers": [{"name": "c", "image": "x",
            "ports": [{"containerPort": 80, "hostPort": port, "protocol": protocol}]}]}}),
        )
    }

    #[test]
    fn a_taken_host_port_rejects_the_node() {
        let n = with_pods(node("n1", "1", "1Gi", json!({})), vec![with_port("a", 8080, "TCP")]);
        let err = filter(&with_port("b", 8080, "TCP"), &n).unwrap_err();
        assert_eq!(err.reasons, ["node(s) didn't have free ports for the requested pod ports"]);
        assert!(filter(&with_port("c", 8080, "UDP"), &n).is_ok());
        assert!(filter(&with_port("d", 8081, "TCP"), &n).is_ok());
    }
}
