//! Pod network on real namespaces: bridge + veth + IPAM on one node, and pod-to-pod across
//! nodes over VXLAN and host-gw, with nodes joined by a LAN bridge in its own namespace.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use common::{fetch_retry, Lan, Netns, Server};
use skerry_netproxy::podnet::{Backend, NetworkConfig, NodePeer, PodNetwork};

fn config(node: &Netns, state: &Path, cidr: &str, node_ip: Ipv4Addr, b: Backend) -> NetworkConfig {
    let mut cfg = NetworkConfig::new(cidr.parse().unwrap(), node_ip, state.to_path_buf());
    cfg.backend = b;
    cfg.node_netns = Some(node.path());
    cfg
}

#[tokio::test]
async fn pods_on_one_node_get_addresses_and_talk_over_the_bridge() {
    if !skerry_testkit::require_root() {
        return;
    }
    let mut lan = Lan::new();
    let node = lan.node(Ipv4Addr::new(192, 168, 77, 1));
    let state = tempfile::tempdir().unwrap();
    let cfg =
        config(&node, state.path(), "10.42.1.0/24", Ipv4Addr::new(192, 168, 77, 1), Backend::Vxlan);
    let net = PodNetwork::new(cfg.clone()).await.unwrap();
    // A second `new` over the same node is what an agent restart does: it must be idempotent.
    let net2 = PodNetwork::new(cfg).await.unwrap();
    let (a, b) = (Netns::new("pod"), Netns::new("pod"));
    let addr_a = net.attach("ns/a", &a.path()).await.unwrap();
    let addr_b = net2.attach("ns/b", &b.path()).await.unwrap();
    assert_eq!(addr_a.ip, Ipv4Addr::new(10, 42, 1, 2));
    assert_eq!(addr_b.ip, Ipv4Addr::new(10, 42, 1, 3));
    assert_eq!(addr_a.gateway, Ipv4Addr::new(10, 42, 1, 1));
    // The pod sees eth0 with its address, MTU lowered for VXLAN, default route via the bridge.
    let shown = a.ip(&["-o", "addr", "show", "dev", "eth0"]);
    assert!(shown.contains("10.42.1.2/24"), "{shown}");
    assert!(a.ip(&["link", "show", "eth0"]).contains("mtu 1450"));
    assert!(a.ip(&["route", "show", "default"]).contains("via 10.42.1.1 dev eth0"));
    assert!(a.ip(&["link", "show", "lo"]).contains("UP"));

    let _srv = Server::start(&b, 8080, "pod-b");
    let got = fetch_retry(&a, SocketAddr::from((addr_b.ip, 8080))).unwrap();
    assert_eq!(got, "pod-b");

    // Detach removes the veth and frees the address; a new pod does not get it back at once.
    net.detach("ns/b").await.unwrap();
    assert!(!node.ip(&["link"]).contains(&addr_b.host_veth));
    assert_eq!(net.ipam().lookup("ns/b").unwrap(), None);
    let c = Netns::new("pod");
    let addr_c = net.attach("ns/c", &c.path()).await.unwrap();
    assert_eq!(addr_c.ip, Ipv4Addr::new(10, 42, 1, 4));
    // gc at start releases pods that are gone (here: c) and keeps live ones.
    let freed = net.gc(&["ns/a"]).await.unwrap();
    assert_eq!(freed, vec![addr_c.ip]);
    assert!(!node.ip(&["link"]).contains(&addr_c.host_veth));
}

async fn two_nodes_pod_to_pod(backend: Backend) {
    let mut lan = Lan::new();
    let (ip1, ip2) = (Ipv4Addr::new(192, 168, 77, 1), Ipv4Addr::new(192, 168, 77, 2));
    let (n1, n2) = (lan.node(ip1), lan.node(ip2));
    let (s1, s2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let net1 = PodNetwork::new(config(&n1, s1.path(), "10.42.1.0/24", ip1, backend)).await.unwrap();
    let net2 = PodNetwork::new(config(&n2, s2.path(), "10.42.2.0/24", ip2, backend)).await.unwrap();
    let peers = vec![
        NodePeer { name: "n1".into(), node_ip: ip1, pod_cidr: "10.42.1.0/24".parse().unwrap() },
        NodePeer { name: "n2".into(), node_ip: ip2, pod_cidr: "10.42.2.0/24".parse().unwrap() },
    ];
    net1.set_peers(&peers).await.unwrap();
    net2.set_peers(&peers).await.unwrap();
    let (a, b) = (Netns::new("pod"), Netns::new("pod"));
    let addr_a = net1.attach("a", &a.path()).await.unwrap();
    let addr_b = net2.attach("b", &b.path()).await.unwrap();
    let _sa = Server::start(&a, 8080, "pod-a");
    let _sb = Server::start(&b, 8080, "pod-b");
    assert_eq!(fetch_retry(&a, SocketAddr::from((addr_b.ip, 8080))).unwrap(), "pod-b");
    assert_eq!(fetch_retry(&b, SocketAddr::from((addr_a.ip, 8080))).unwrap(), "pod-a");
    // The source address is the pod's own: no masquerade inside the cluster CIDR.
    let routes = n1.ip(&["route", "show", "10.42.2.0/24"]);
    match backend {
        Backend::Vxlan => assert!(routes.contains("via 10.42.2.0 dev skerry.vxlan"), "{routes}"),
        Backend::HostGw => assert!(routes.contains("via 192.168.77.2 dev eth0"), "{routes}"),
    }

    // A node leaving removes its route; coming back restores it.
    net1.set_peers(&peers[..1]).await.unwrap();
    assert_eq!(n1.ip(&["route", "show", "10.42.2.0/24"]).trim(), "");
    assert!(common::fetch(&a, SocketAddr::from((addr_b.ip, 8080))).is_err());
    net1.set_peers(&peers).await.unwrap();
    assert_eq!(fetch_retry(&a, SocketAddr::from((addr_b.ip, 8080))).unwrap(), "pod-b");
}

#[tokio::test]
async fn pods_on_two_nodes_talk_over_vxlan() {
    if !skerry_testkit::require_root() {
        return;
    }
    two_nodes_pod_to_pod(Backend::Vxlan).await;
}

#[tokio::test]
async fn pods_on_two_nodes_talk_over_host_gw() {
    if !skerry_testkit::require_root() {
        return;
    }
    two_nodes_pod_to_pod(Backend::HostGw).await;
}

#[tokio::test]
async fn traffic_leaving_the_cluster_is_masqueraded_to_the_node_address() {
    if !skerry_testkit::require_root() {
        return;
    }
    let mut lan = Lan::new();
    let ip1 = Ipv4Addr::new(192, 168, 77, 1);
    let n1 = lan.node(ip1);
    // An "outside" host on the LAN with no route back to the pod CIDR.
    let outside = lan.node(Ipv4Addr::new(192, 168, 77, 9));
    let s1 = tempfile::tempdir().unwrap();
    let net1 = PodNetwork::new(config(&n1, s1.path(), "10.42.1.0/24", ip1, Backend::HostGw))
        .await
        .unwrap();
    let pod = Netns::new("pod");
    net1.attach("p", &pod.path()).await.unwrap();
    let srv = std::thread::spawn({
        let path = outside.path();
        move || {
            skerry_netproxy::netns::run_in(Some(&path), || {
                use std::io::Write;
                let l = std::net::TcpListener::bind("192.168.77.9:9000").unwrap();
                let (mut s, peer) = l.accept().unwrap();
                s.write_all(peer.ip().to_string().as_bytes()).unwrap();
            })
            .unwrap()
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(100));
    let seen = fetch_retry(&pod, "192.168.77.9:9000".parse().unwrap()).unwrap();
    srv.join().unwrap();
    assert_eq!(seen, "192.168.77.1", "the outside host sees the node address");
}

#[tokio::test]
async fn host_ports_forward_node_address_traffic_to_the_pod() {
    if !skerry_testkit::require_root() {
        return;
    }
    let mut lan = Lan::new();
    let ip1 = Ipv4Addr::new(192, 168, 77, 1);
    let n1 = lan.node(ip1);
    let outside = lan.node(Ipv4Addr::new(192, 168, 77, 9));
    let s1 = tempfile::tempdir().unwrap();
    let net = PodNetwork::new(config(&n1, s1.path(), "10.42.1.0/24", ip1, Backend::HostGw))
        .await
        .unwrap();
    let pod = Netns::new("pod");
    let pod_ip = net.attach("p", &pod.path()).await.unwrap().ip;
    let _srv = Server::start(&pod, 8080, "hostport-pod");
    let mapping = skerry_netproxy::podnet::HostPort {
        protocol: 6,
        host_port: 8081,
        pod_ip,
        container_port: 8080,
    };
    net.set_host_ports(&[mapping]).await.unwrap();
    let node_addr = SocketAddr::from((ip1, 8081));
    assert_eq!(fetch_retry(&outside, node_addr).unwrap(), "hostport-pod");
    // Removing the mapping closes the port again (nothing listens on the node itself).
    net.set_host_ports(&[]).await.unwrap();
    let err = common::fetch(&outside, node_addr).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    // Someone deleting the table: resync_nat puts masquerade (and the ports) back.
    n1.exec(&["nft", "delete", "table", "ip", "skerry-podnet"]);
    net.resync_nat().await.unwrap();
    assert!(n1.exec(&["nft", "list", "table", "ip", "skerry-podnet"]).contains("masquerade"));
    net.cleanup().await.unwrap();
    assert!(!n1.ip(&["link"]).contains("skerry0"));
}
