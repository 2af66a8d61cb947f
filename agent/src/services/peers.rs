//! Node objects → the pod network's peers: every other node's `spec.podCIDR` and address, for
//! the VXLAN forwarding entries or host-gw routes `PodNetwork::set_peers` installs.
//!
//! Pure: no I/O. A node without a pod CIDR yet (the node IPAM controller has not assigned one)
//! or without an IPv4 address is left out until it has both; `set_peers` then adds it.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use skerry_netproxy::podnet::NodePeer;

/// The peers among `nodes` (sorted by name; `own_node` excluded).
pub fn node_peers<'a>(nodes: impl IntoIterator<Item = &'a Node>, own_node: &str) -> Vec<NodePeer> {
    let mut peers: Vec<NodePeer> = nodes
        .into_iter()
        .filter_map(|node| {
            let name = node.metadata.name.as_deref()?;
            if name == own_node {
                return None;
            }
            let pod_cidr = pod_cidr(node)?;
            let Some(node_ip) = node_ip(node) else {
                tracing::debug!(node = name, "node has no IPv4 address yet; not a peer");
                return None;
            };
            Some(NodePeer { name: name.to_string(), node_ip, pod_cidr })
        })
        .collect();
    peers.sort_by(|a, b| a.name.cmp(&b.name));
    peers
}

/// The node's IPv4 pod CIDR: `spec.podCIDR`, else the first IPv4 one of `spec.podCIDRs`.
fn pod_cidr(node: &Node) -> Option<Ipv4Net> {
    let spec = node.spec.as_ref()?;
    let candidates = spec.pod_cidr.iter().chain(spec.pod_cidrs.iter().flatten());
    candidates.filter_map(|c| c.parse::<Ipv4Net>().ok()).map(|c| c.trunc()).next()
}

/// The node's address for pod traffic: its first IPv4 `InternalIP`, else (nodes on a plain
/// network may publish only that) its first IPv4 `ExternalIP`.
fn node_ip(node: &Node) -> Option<Ipv4Addr> {
    let addresses = node.status.as_ref()?.addresses.as_ref()?;
    let of_type = |kind: &str| {
        addresses
            .iter()
            .filter(|a| a.type_ == kind)
            .find_map(|a| a.address.parse::<Ipv4Addr>().ok())
    };
    of_type("InternalIP").or_else(|| of_type("ExternalIP"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, cidr: Option<&str>, addresses: serde_json::Value) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"podCIDR": cidr},
            "status": {"addresses": addresses},
        }))
        .unwrap()
    }

    #[test]
    fn peers_are_the_other_nodes_with_a_pod_cidr_and_an_internal_ip() {
        let nodes = [
            node(
                "self",
                Some("10.42.0.0/24"),
                json!([{"type": "InternalIP", "address": "192.168.1.1"}]),
            ),
            node(
                "b",
                Some("10.42.2.0/24"),
                json!([{"type": "Hostname", "address": "b"},
                       {"type": "InternalIP", "address": "fd00::2"},
                       {"type": "InternalIP", "address": "192.168.1.2"}]),
            ),
            node(
                "a",
                Some("10.42.1.0/24"),
                json!([{"type": "ExternalIP", "address": "203.0.113.1"}]),
            ),
            node("no-cidr", None, json!([{"type": "InternalIP", "address": "192.168.1.4"}])),
            node("no-ip", Some("10.42.4.0/24"), json!([{"type": "Hostname", "address": "x"}])),
            node(
                "bad-cidr",
                Some("banana"),
                json!([{"type": "InternalIP", "address": "192.168.1.5"}]),
            ),
        ];
        let peers = node_peers(&nodes, "self");
        assert_eq!(
            peers,
            vec![
                NodePeer {
                    name: "a".into(),
                    node_ip: "203.0.113.1".parse().unwrap(),
                    pod_cidr: "10.42.1.0/24".parse().unwrap(),
                },
                NodePeer {
                    name: "b".into(),
                    node_ip: "192.168.1.2".parse().unwrap(),
                    pod_cidr: "10.42.2.0/24".parse().unwrap(),
                },
            ]
        );
    }

    #[test]
    fn an_ipv6_first_pod_cidr_list_yields_its_ipv4_entry() {
        let mut n = node("dual", None, json!([{"type": "InternalIP", "address": "192.168.1.9"}]));
        n.spec.as_mut().unwrap().pod_cidrs = Some(vec!["fd42::/64".into(), "10.42.9.0/24".into()]);
        let peers = node_peers([&n], "self");
        assert_eq!(peers[0].pod_cidr, "10.42.9.0/24".parse::<Ipv4Net>().unwrap());
    }
}
