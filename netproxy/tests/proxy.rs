//! The service proxy on real nftables inside test namespaces: a node namespace with pods on
//! the pod network, services programmed over nfnetlink, traffic from pod namespaces.

mod common;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};

use common::{fetch, fetch_retry, Lan, Netns, Server};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;
use skerry_netproxy::podnet::{Backend, NetworkConfig, NodePeer, PodNetwork};
use skerry_netproxy::proxy::{ProxyConfig, ServiceProxy};

fn service(name: &str, ip: &str, extra: serde_json::Value) -> Service {
    let mut spec = json!({
        "clusterIP": ip, "clusterIPs": [ip],
        "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"}, "spec": spec,
    }))
    .unwrap()
}

fn slice(service: &str, eps: &[(Ipv4Addr, &str)]) -> EndpointSlice {
    let endpoints: Vec<_> = eps
        .iter()
        .map(|(ip, node)| {
            json!({"addresses": [ip.to_string()], "conditions": {"ready": true}, "nodeName": node})
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": format!("{service}-abc"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }))
    .unwrap()
}

/// One node with `n` pods serving their name on 8080, and its proxy.
struct OneNode {
    _lan: Lan,
    node: Netns,
    pods: Vec<(Netns, Ipv4Addr, Server)>,
    client: (Netns, Ipv4Addr),
    proxy: ServiceProxy,
    _net: PodNetwork,
    _state: tempfile::TempDir,
}

async fn one_node(n: usize) -> OneNode {
    let mut lan = Lan::new();
    let node_ip = Ipv4Addr::new(192, 168, 77, 1);
    let node = lan.node(node_ip);
    let state = tempfile::tempdir().unwrap();
    let mut cfg = NetworkConfig::new("10.42.1.0/24".parse().unwrap(), node_ip, state.path().into());
    cfg.node_netns = Some(node.path());
    let net = PodNetwork::new(cfg).await.unwrap();
    let mut pods = Vec::new();
    for i in 0..n {
        let ns = Netns::new("pod");
        let addr = net.attach(&format!("pod-{i}"), &ns.path()).await.unwrap();
        let srv = Server::start(&ns, 8080, &format!("pod-{i}"));
        pods.push((ns, addr.ip, srv));
    }
    let client_ns = Netns::new("pod");
    let client_ip = net.attach("client", &client_ns.path()).await.unwrap().ip;
    let mut pcfg = ProxyConfig::new("node-1", vec![node_ip]);
    pcfg.netns = Some(node.path());
    let proxy = ServiceProxy::new(pcfg).unwrap();
    OneNode {
        _lan: lan,
        node,
        pods,
        client: (client_ns, client_ip),
        proxy,
        _net: net,
        _state: state,
    }
}

fn vip(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(10, 43, 0, 10), port))
}

fn replies(from: &Netns, to: SocketAddr, tries: usize) -> BTreeSet<String> {
    (0..tries).map(|_| fetch(from, to).unwrap()).collect()
}

#[tokio::test]
async fn cluster_ip_spreads_over_all_endpoints_and_follows_endpoint_changes() {
    if !skerry_testkit::require_root() {
        return;
    }
    let mut t = one_node(3).await;
    let eps: Vec<_> = t.pods.iter().map(|p| (p.1, "node-1")).collect();
    let svc = service("web", "10.43.0.10", json!({}));
    t.proxy.sync(std::slice::from_ref(&svc), &[slice("web", &eps)]).unwrap();
    let seen = replies(&t.client.0, vip(80), 60);
    let all: BTreeSet<String> = (0..3).map(|i| format!("pod-{i}")).collect();
    // With 60 tries the chance of missing one of 3 endpoints is 3·(2/3)^60 ≈ 1e-10.
    assert_eq!(seen, all);

    // The table stays listable by nft, with our maps and per-service chains.
    let listed = t.node.exec(&["nft", "-j", "list", "table", "ip", "skerry"]);
    let v: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let chains: Vec<String> = v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("chain").and_then(|c| c["name"].as_str()).map(String::from))
        .collect();
    assert!(chains.contains(&"svc-default/web/tcp/http".to_string()), "{chains:?}");
    let text = t.node.exec(&["nft", "list", "table", "ip", "skerry"]);
    assert!(text.contains("10.43.0.10 . tcp . 80"), "{text}");

    // Endpoint removal takes effect: pod-2 gets nothing any more.
    t.proxy.update_service(&svc, &[slice("web", &eps[..2])]).unwrap();
    let seen = replies(&t.client.0, vip(80), 40);
    assert!(!seen.contains("pod-2"), "{seen:?}");
    assert_eq!(seen.len(), 2);

    // No endpoints: connections are refused at once (not left to time out).
    t.proxy.update_service(&svc, &[slice("web", &[])]).unwrap();
    let err = fetch(&t.client.0, vip(80)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    // ... also from the node itself (output path).
    let err = fetch(&t.node, vip(80)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");

    // And back: the service works again, from the node too (masqueraded).
    t.proxy.update_service(&svc, &[slice("web", &eps[..1])]).unwrap();
    assert_eq!(fetch(&t.client.0, vip(80)).unwrap(), "pod-0");
    assert_eq!(fetch_retry(&t.node, vip(80)).unwrap(), "pod-0");

    t.proxy.remove_service("default", "web").unwrap();
    assert!(fetch(&t.client.0, vip(80)).is_err());
    t.proxy.cleanup().unwrap();
    let tables = t.node.exec(&["nft", "list", "tables"]);
    assert!(!tables.contains("table ip skerry\n"), "{tables}");
}

#[tokio::test]
async fn a_pod_reaches_itself_through_its_service_hairpin() {
    if !skerry_testkit::require_root() {
        return;
    }
    let mut t = one_node(1).await;
    let svc = service("self", "10.43.0.10", json!({}));
    t.proxy.sync(&[svc], &[slice("self", &[(t.pods[0].1, "node-1")])]).unwrap();
    assert_eq!(fetch(&t.pods[0].0, vip(80)).unwrap(), "pod-0");
}

#[tokio::test]
async fn session_affinity_client_ip_sticks_and_survives_other_services_updates() {
    if !skerry_testkit::require_root() {
        return;
    }
    let mut t = one_node(3).await;
    let eps: Vec<_> = t.pods.iter().map(|p| (p.1, "node-1")).collect();
    let sticky = service(
        "sticky",
        "10.43.0.10",
        json!({"sessionAffinity": "ClientIP",
               "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}}}),
    );
    let other = service("other", "10.43.0.11", json!({}));
    let slices = [slice("sticky", &eps), slice("other", &eps)];
    t.proxy.sync(&[sticky, other.clone()], &slices).unwrap();
    let first = replies(&t.client.0, vip(80), 20);
    assert_eq!(first.len(), 1, "ClientIP affinity sends one client to one pod: {first:?}");

    // An incremental update of another service leaves this one's affinity state alone
    // (a full resync would have recreated the affinity sets empty).
    t.proxy.update_service(&other, &[slice("other", &eps[..1])]).unwrap();
    let listed = t.node.exec(&["nft", "list", "table", "ip", "skerry"]);
    assert!(listed.contains(&t.client.1.to_string()), "affinity entry kept: {listed}");
    let after = replies(&t.client.0, vip(80), 10);
    assert_eq!(after, first);
    let other_vip = SocketAddr::from((Ipv4Addr::new(10, 43, 0, 11), 80));
    assert_eq!(replies(&t.client.0, other_vip, 10).len(), 1);
}

#[tokio::test]
async fn rules_converge_after_someone_deletes_the_table() {
    if !skerry_testkit::require_root() {
        return;
    }
    let mut t = one_node(1).await;
    let svc = service("web", "10.43.0.10", json!({}));
    let eps = [(t.pods[0].1, "node-1")];
    t.proxy.sync(std::slice::from_ref(&svc), &[slice("web", &eps)]).unwrap();
    assert!(!t.proxy.repair().unwrap(), "nothing to repair");
    t.node.exec(&["nft", "delete", "table", "ip", "skerry"]);
    assert!(fetch(&t.client.0, vip(80)).is_err());
    assert!(t.proxy.repair().unwrap());
    assert_eq!(fetch(&t.client.0, vip(80)).unwrap(), "pod-0");

    // An incremental update against a table changed behind our back falls back to a resync.
    t.node.exec(&["nft", "delete", "table", "ip", "skerry"]);
    let svc2 = service("web2", "10.43.0.11", json!({}));
    t.proxy.update_service(&svc2, &[slice("web2", &eps)]).unwrap();
    assert_eq!(fetch(&t.client.0, vip(80)).unwrap(), "pod-0");
    let vip2 = SocketAddr::from((Ipv4Addr::new(10, 43, 0, 11), 80));
    assert_eq!(fetch(&t.client.0, vip2).unwrap(), "pod-0");

    // An agent restart: the old proxy goes away without removing anything (rules keep
    // serving meanwhile), and the new one's first full sync replaces the table atomically.
    let mut cfg = ProxyConfig::new("node-1", vec![Ipv4Addr::new(192, 168, 77, 1)]);
    cfg.netns = Some(t.node.path());
    drop(std::mem::replace(&mut t.proxy, ServiceProxy::new(cfg).unwrap()));
    assert_eq!(fetch(&t.client.0, vip2).unwrap(), "pod-0");
    t.proxy.sync(&[svc2], &[slice("web2", &eps)]).unwrap();
    assert_eq!(fetch(&t.client.0, vip2).unwrap(), "pod-0");
    assert!(fetch(&t.client.0, vip(80)).is_err(), "services gone while we were down are removed");
}

#[tokio::test]
async fn node_port_is_reachable_via_another_nodes_address() {
    if !skerry_testkit::require_root() {
        return;
    }
    let mut lan = Lan::new();
    let (ip1, ip2) = (Ipv4Addr::new(192, 168, 77, 1), Ipv4Addr::new(192, 168, 77, 2));
    let (n1, n2) = (lan.node(ip1), lan.node(ip2));
    let outside = lan.node(Ipv4Addr::new(192, 168, 77, 9));
    let (s1, s2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mk = |node: &Netns, s: &tempfile::TempDir, cidr: &str, ip| {
        let mut c = NetworkConfig::new(cidr.parse().unwrap(), ip, s.path().into());
        c.node_netns = Some(node.path());
        c.backend = Backend::Vxlan;
        c
    };
    let net1 = PodNetwork::new(mk(&n1, &s1, "10.42.1.0/24", ip1)).await.unwrap();
    let net2 = PodNetwork::new(mk(&n2, &s2, "10.42.2.0/24", ip2)).await.unwrap();
    let peers = [
        NodePeer { name: "n1".into(), node_ip: ip1, pod_cidr: "10.42.1.0/24".parse().unwrap() },
        NodePeer { name: "n2".into(), node_ip: ip2, pod_cidr: "10.42.2.0/24".parse().unwrap() },
    ];
    net1.set_peers(&peers).await.unwrap();
    net2.set_peers(&peers).await.unwrap();
    let pod = Netns::new("pod");
    let pod_ip = net1.attach("web-0", &pod.path()).await.unwrap().ip;
    let _srv = Server::start(&pod, 8080, "web-0");

    let svc = service(
        "np",
        "10.43.0.20",
        json!({"type": "NodePort",
        "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]}),
    );
    let slices = [slice("np", &[(pod_ip, "node-1")])];
    let mut proxies = Vec::new();
    for (node, name, ip) in [(&n1, "node-1", ip1), (&n2, "node-2", ip2)] {
        let mut c = ProxyConfig::new(name, vec![ip]);
        c.netns = Some(node.path());
        let mut p = ServiceProxy::new(c).unwrap();
        p.sync(std::slice::from_ref(&svc), &slices).unwrap();
        proxies.push(p);
    }
    // From outside the cluster, via the node that has no endpoint: DNAT + masquerade + VXLAN.
    let via_n2 = SocketAddr::from((ip2, 30080));
    assert_eq!(fetch_retry(&outside, via_n2).unwrap(), "web-0");
    assert_eq!(fetch_retry(&outside, SocketAddr::from((ip1, 30080))).unwrap(), "web-0");

    // Cluster policy masquerades outside clients; Local keeps their address.
    let echo = Netns::new("pod");
    let echo_ip = net1.attach("echo-0", &echo.path()).await.unwrap().ip;
    let _echo_srv = Server::start(&echo, 8080, "$peer");
    let echo_slices = [slice("echo", &[(echo_ip, "node-1")])];
    let outside_ip = "192.168.77.9".to_string();
    for (policy, port) in [("Cluster", 30081), ("Local", 30082)] {
        let echo_svc = service(
            "echo",
            "10.43.0.21",
            json!({"type": "NodePort",
            "externalTrafficPolicy": policy,
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": port}]}),
        );
        proxies[0].update_service(&echo_svc, &echo_slices).unwrap();
        let seen = fetch_retry(&outside, SocketAddr::from((ip1, port))).unwrap();
        if policy == "Local" {
            assert_eq!(seen, outside_ip, "Local keeps the client address");
        } else {
            assert_ne!(seen, outside_ip, "Cluster masquerades");
        }
    }

    // externalTrafficPolicy Local: node 2 has no local endpoint and drops; node 1 serves.
    let local = service(
        "np",
        "10.43.0.20",
        json!({"type": "NodePort",
        "externalTrafficPolicy": "Local",
        "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]}),
    );
    for p in &mut proxies {
        p.update_service(&local, &slices).unwrap();
    }
    assert_eq!(fetch_retry(&outside, SocketAddr::from((ip1, 30080))).unwrap(), "web-0");
    let err = fetch(&outside, via_n2).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");

    // No endpoints at all: the NodePort refuses at once on every node.
    for p in &mut proxies {
        p.update_service(&svc, &[slice("np", &[])]).unwrap();
    }
    for ip in [ip1, ip2] {
        let err = fetch(&outside, SocketAddr::from((ip, 30080))).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    }
}

#[tokio::test]
async fn external_ips_and_load_balancer_ingress_on_the_node_address_are_served() {
    if !skerry_testkit::require_root() {
        return;
    }
    let mut t = one_node(1).await;
    let eps = [(t.pods[0].1, "node-1")];
    let lb = service(
        "lb",
        "10.43.0.10",
        json!({"type": "LoadBalancer", "externalIPs": ["10.99.0.1"],
               "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]}),
    );
    t.proxy.sync(&[lb], &[slice("lb", &eps)]).unwrap();
    // ServiceLB-like: the node's own address is the load balancer's.
    let node_lb = SocketAddr::from((Ipv4Addr::new(192, 168, 77, 1), 80));
    assert_eq!(fetch(&t.client.0, node_lb).unwrap(), "pod-0");
    assert_eq!(fetch(&t.client.0, "10.99.0.1:80".parse().unwrap()).unwrap(), "pod-0");
    let node_port = SocketAddr::from((Ipv4Addr::new(192, 168, 77, 1), 30080));
    assert_eq!(fetch(&t.client.0, node_port).unwrap(), "pod-0");
}

#[tokio::test]
async fn internal_traffic_policy_local_only_uses_endpoints_on_this_node() {
    if !skerry_testkit::require_root() {
        return;
    }
    let mut t = one_node(3).await;
    // pod-0 is "ours", the others claim to run on another node.
    let eps = [(t.pods[0].1, "node-1"), (t.pods[1].1, "node-2"), (t.pods[2].1, "node-2")];
    let svc = service("itp", "10.43.0.10", json!({"internalTrafficPolicy": "Local"}));
    t.proxy.sync(&[svc], &[slice("itp", &eps)]).unwrap();
    assert_eq!(replies(&t.client.0, vip(80), 20), BTreeSet::from(["pod-0".to_string()]));
}

#[tokio::test]
async fn the_proxy_touches_only_its_own_table_and_survives_bad_input() {
    if !skerry_testkit::require_root() {
        return;
    }
    let mut t = one_node(1).await;
    // Someone else's table in the same namespace must stay as it is.
    t.node.exec(&["nft", "add", "table", "ip", "theirs"]);
    t.node.exec(&["nft", "add", "chain", "ip", "theirs", "c"]);
    let before = t.node.exec(&["nft", "list", "table", "ip", "theirs"]);
    let eps = [(t.pods[0].1, "node-1")];
    // Two services claiming the same IP and port (invalid, but seen in the wild during
    // migrations) plus a headless and an IPv6 one: the sync still succeeds.
    let svcs = [
        service("a", "10.43.0.10", json!({})),
        service("b", "10.43.0.10", json!({})),
        service("headless", "None", json!({})),
        service("v6", "fd00::10", json!({})),
    ];
    let slices = [slice("a", &eps), slice("b", &eps)];
    t.proxy.sync(&svcs, &slices).unwrap();
    assert_eq!(fetch(&t.client.0, vip(80)).unwrap(), "pod-0");
    t.proxy.cleanup().unwrap();
    assert_eq!(t.node.exec(&["nft", "list", "table", "ip", "theirs"]), before);
}

#[test]
fn a_refused_transaction_applies_nothing() {
    if !skerry_testkit::require_root() {
        return;
    }
    use skerry_netproxy::nft::{NfSocket, NftError, TableTx};
    let ns = Netns::new("nft");
    let mut sock = NfSocket::open(Some(&ns.path())).unwrap();
    let mut batch = sock.batch();
    let mut tx = TableTx::new(&mut batch, "atomic");
    tx.add_table();
    tx.add_chain("ok", None);
    tx.del_chain("missing"); // refused: ENOENT
    match sock.commit(batch) {
        Err(NftError::Rejected { index, total, source }) => {
            assert_eq!((index, total), (3, 3));
            assert_eq!(source.raw_os_error(), Some(libc::ENOENT));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(!sock.table_exists("atomic").unwrap(), "nothing of the batch was applied");
    let listed = ns.exec(&["nft", "list", "ruleset"]);
    assert!(!listed.contains("atomic"), "{listed}");
    // The same socket keeps working after a refusal.
    let mut batch = sock.batch();
    TableTx::new(&mut batch, "atomic").add_table();
    sock.commit(batch).unwrap();
    assert!(sock.table_exists("atomic").unwrap());
}

/// Sends one datagram from inside `ns` to `to` on a connected UDP socket; returns the reply.
fn udp_ask(ns: &Netns, to: SocketAddr) -> std::io::Result<String> {
    skerry_netproxy::netns::run_in(Some(&ns.path()), move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(3)))?;
        s.connect(to)?;
        s.send(b"q")?;
        let mut buf = [0u8; 64];
        let n = s.recv(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
    .unwrap()
}

#[tokio::test]
async fn udp_services_are_proxied_and_rejected_without_endpoints() {
    if !skerry_testkit::require_root() {
        return;
    }
    let mut t = one_node(1).await;
    // A UDP responder in the pod (the shape of cluster DNS).
    let pod_path = t.pods[0].0.path();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        skerry_netproxy::netns::enter(&pod_path).unwrap();
        let s = std::net::UdpSocket::bind("0.0.0.0:5353").unwrap();
        ready_tx.send(()).unwrap();
        let mut buf = [0u8; 64];
        // Serves a few requests then ends with the test process.
        for _ in 0..4 {
            if let Ok((_, peer)) = s.recv_from(&mut buf) {
                let _ = s.send_to(b"udp-pod-0", peer);
            }
        }
    });
    ready_rx.recv().unwrap();
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "dns", "namespace": "default"},
        "spec": {"clusterIP": "10.43.0.10",
                 "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]},
    }))
    .unwrap();
    let mk_slice = |eps: &[Ipv4Addr]| -> EndpointSlice {
        let eps: Vec<_> = eps.iter().map(|ip| json!({"addresses": [ip.to_string()]})).collect();
        serde_json::from_value(json!({
            "metadata": {"name": "dns-x", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "dns"}},
            "addressType": "IPv4", "endpoints": eps,
            "ports": [{"name": "dns", "port": 5353, "protocol": "UDP"}],
        }))
        .unwrap()
    };
    t.proxy.sync(std::slice::from_ref(&svc), &[mk_slice(&[t.pods[0].1])]).unwrap();
    assert_eq!(udp_ask(&t.client.0, vip(53)).unwrap(), "udp-pod-0");
    // TCP to the same port is not part of the service.
    assert!(fetch(&t.client.0, vip(53)).is_err());

    t.proxy.update_service(&svc, &[mk_slice(&[])]).unwrap();
    let err = udp_ask(&t.client.0, vip(53)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
}
