//! The agent's service networking end to end: the real `skerry server` as API server, the
//! agent's `services::run` in this process, and the proxy, DNS and pod network it programs
//! inside a node network namespace made by the test (a pod namespace on its bridge runs tiny
//! TCP servers and is the client). Services and EndpointSlices are created through the API, as
//! the EndpointSlice controller would; connections to the ClusterIP and `dig` queries to the
//! node-local DNS show that what the API holds is what the node serves, also after a restart
//! with the server gone (the offline snapshot). Needs root.

mod common;
#[path = "../dns/tests/common/mod.rs"]
mod dns_common;
#[path = "../netproxy/tests/common/mod.rs"]
mod net_common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::server::SkerryServer;
use dns_common::{dig_in, DigAnswer};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use net_common::{fetch, Lan, Netns, Server};
use serde_json::json;
use skerry_agent::services::{self, ServicesConfig};
use skerry_dns::{ClusterDns, DnsConfig, DnsHandle};
use skerry_netproxy::podnet::{Backend, NetworkConfig, PodNetwork};
use skerry_netproxy::proxy::{ProxyConfig, ServiceProxy};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const NODE: &str = "node-1";
const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
const CLUSTER_DNS: Ipv4Addr = Ipv4Addr::new(10, 43, 0, 10);
/// How long the node may take to converge on a change (programming takes milliseconds; this
/// only bounds a failing test).
const CONVERGE: Duration = Duration::from_secs(20);

async fn kube_client(kubeconfig: &Path) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig).unwrap();
    let config =
        kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.unwrap();
    Client::try_from(config).unwrap()
}

/// The node-local DNS on 10.43.0.10:53 inside the node namespace (its sockets are made on a
/// thread that joined the namespace; its tasks run on this test's runtime).
async fn start_dns(node: &Netns) -> DnsHandle {
    let rt = tokio::runtime::Handle::current();
    let path = node.path();
    let config = DnsConfig {
        listen: vec![SocketAddr::new(IpAddr::V4(CLUSTER_DNS), 53)],
        ..DnsConfig::default()
    };
    tokio::task::spawn_blocking(move || {
        skerry_netproxy::netns::run_in(Some(&path), move || rt.block_on(ClusterDns::start(config)))
    })
    .await
    .unwrap()
    .unwrap()
    .unwrap()
}

fn proxy(node: &Netns) -> ServiceProxy {
    let mut cfg = ProxyConfig::new(NODE, vec![NODE_IP]);
    cfg.netns = Some(node.path());
    ServiceProxy::new(cfg).unwrap()
}

/// A running `services::run` and the means to stop it.
struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), services::ServicesError>>,
}

impl Running {
    async fn start(
        client: Client,
        node: &Netns,
        network: Arc<PodNetwork>,
        state_dir: &Path,
    ) -> Running {
        let cfg = ServicesConfig {
            node_name: NODE.into(),
            cluster_dns: IpAddr::V4(CLUSTER_DNS),
            state_dir: state_dir.to_path_buf(),
        };
        let dns = start_dns(node).await;
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let proxy = proxy(node);
        let task = tokio::spawn(services::run(client, cfg, proxy, dns, network, shutdown));
        Running { stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

/// Polls `probe` until it returns Some, or panics with the last state after `CONVERGE`.
async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + CONVERGE;
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(last) if Instant::now() > deadline => {
                panic!("{what}: never happened; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// `fetch` (it blocks on a namespace thread for up to its 3 s timeout) without stalling the
/// runtime the agent's loop runs on.
async fn connect(from: &Netns, to: SocketAddr) -> std::io::Result<String> {
    tokio::task::block_in_place(|| fetch(from, to))
}

async fn reaches(from: &Netns, to: SocketAddr, reply: &str) {
    eventually(&format!("{to} answers {reply:?}"), async || match connect(from, to).await {
        Ok(got) if got == reply => Ok(()),
        other => Err(format!("{other:?}")),
    })
    .await
}

async fn unreachable(from: &Netns, to: SocketAddr) {
    eventually(&format!("{to} stops answering"), async || match connect(from, to).await {
        Err(_) => Ok(()),
        Ok(got) => Err(got),
    })
    .await
}

async fn dig(from: &Netns, name: &str, rtype: &str) -> DigAnswer {
    let server = SocketAddr::new(IpAddr::V4(CLUSTER_DNS), 53);
    dig_in(Some(&from.name), server, name, rtype, &[]).await
}

async fn resolves(from: &Netns, name: &str, rtype: &str, expected: &[String]) {
    eventually(&format!("{name} {rtype} = {expected:?}"), async || {
        let answer = dig(from, name, rtype).await;
        if answer.data(rtype) == expected {
            Ok(())
        } else {
            Err(answer.raw)
        }
    })
    .await
}

async fn nxdomain(from: &Netns, name: &str) {
    eventually(&format!("{name} is NXDOMAIN"), async || {
        let answer = dig(from, name, "A").await;
        if answer.status == "NXDOMAIN" {
            Ok(())
        } else {
            Err(answer.raw)
        }
    })
    .await
}

fn service_json(
    ns: &str,
    name: &str,
    cluster_ip: Option<&str>,
    ports: serde_json::Value,
) -> Service {
    let mut spec = json!({"ports": ports});
    if let Some(ip) = cluster_ip {
        spec["clusterIP"] = json!(ip);
    }
    serde_json::from_value(json!({"metadata": {"namespace": ns, "name": name}, "spec": spec}))
        .unwrap()
}

fn slice_json(ns: &str, service: &str, ip: Ipv4Addr, ports: serde_json::Value) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": format!("{service}-abcde"),
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip.to_string()], "conditions": {"ready": true},
                       "nodeName": NODE}],
        "ports": ports,
    }))
    .unwrap()
}

fn cluster_ip(svc: &Service) -> Ipv4Addr {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_from_the_api_are_served_by_cluster_ip_and_name_and_survive_the_server_going_away()
{
    if !skerry_testkit::require_root() {
        return;
    }
    if skerry_testkit::require_program(&[dns_common::DIG]).is_none() {
        return;
    }
    // The node: a namespace with eth0 on a LAN, the pod network (host-gw, so peer routes are
    // plain), the cluster DNS address on lo, and one pod serving on 8080 and 8081.
    let mut lan = Lan::new();
    let node = lan.node(NODE_IP);
    node.ip(&["addr", "add", &format!("{CLUSTER_DNS}/32"), "dev", "lo"]);
    let net_state = tempfile::tempdir().unwrap();
    let mut net_cfg =
        NetworkConfig::new("10.42.1.0/24".parse().unwrap(), NODE_IP, net_state.path().into());
    net_cfg.backend = Backend::HostGw;
    net_cfg.node_netns = Some(node.path());
    let network = Arc::new(PodNetwork::new(net_cfg).await.unwrap());
    let pod = Netns::new("pod");
    let pod_ip = network.attach("default/web-0", &pod.path()).await.unwrap().ip;
    let _http = Server::start(&pod, 8080, "web-http");
    let _metrics = Server::start(&pod, 8081, "web-metrics");
    let client_pod = Netns::new("pod");
    network.attach("default/client", &client_pod.path()).await.unwrap();

    let mut server = SkerryServer::start();
    let client = kube_client(&server.kubeconfig).await;
    let state = tempfile::tempdir().unwrap();
    let running = Running::start(client.clone(), &node, network.clone(), state.path()).await;

    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    let http_port = json!([{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]);
    let http_slice_port = json!([{"name": "http", "port": 8080, "protocol": "TCP"}]);

    // A Service and its EndpointSlice appear: the ClusterIP reaches the pod, the name resolves.
    let web = services.create(&pp, &service_json("default", "web", None, http_port)).await.unwrap();
    let web_ip = cluster_ip(&web);
    slices.create(&pp, &slice_json("default", "web", pod_ip, http_slice_port)).await.unwrap();
    reaches(&client_pod, SocketAddr::from((web_ip, 80)), "web-http").await;
    resolves(&client_pod, "web.default.svc.cluster.local", "A", &[web_ip.to_string()]).await;

    // The Service gains a port (and its slice the target): it takes effect, also in SRV.
    let mut web = services.get("web").await.unwrap();
    web.spec.as_mut().unwrap().ports.as_mut().unwrap().push(
        serde_json::from_value(
            json!({"name": "metrics", "port": 81, "protocol": "TCP", "targetPort": 8081}),
        )
        .unwrap(),
    );
    services.replace("web", &pp, &web).await.unwrap();
    let mut web_slice = slices.get("web-abcde").await.unwrap();
    web_slice.ports.as_mut().unwrap().push(
        serde_json::from_value(json!({"name": "metrics", "port": 8081, "protocol": "TCP"}))
            .unwrap(),
    );
    slices.replace("web-abcde", &pp, &web_slice).await.unwrap();
    reaches(&client_pod, SocketAddr::from((web_ip, 81)), "web-metrics").await;
    let srv = "0 100 81 web.default.svc.cluster.local.".to_string();
    resolves(&client_pod, "_metrics._tcp.web.default.svc.cluster.local", "SRV", &[srv]).await;

    // A second Service, then deleted: its DNAT and its name go away, `web` is untouched.
    let old_port = json!([{"name": "http", "port": 90, "protocol": "TCP", "targetPort": 8080}]);
    let old = services.create(&pp, &service_json("default", "old", None, old_port)).await.unwrap();
    let old_ip = cluster_ip(&old);
    let old_slice_port = json!([{"name": "http", "port": 8080, "protocol": "TCP"}]);
    slices.create(&pp, &slice_json("default", "old", pod_ip, old_slice_port)).await.unwrap();
    reaches(&client_pod, SocketAddr::from((old_ip, 90)), "web-http").await;
    resolves(&client_pod, "old.default.svc.cluster.local", "A", &[old_ip.to_string()]).await;
    services.delete("old", &DeleteParams::default()).await.unwrap();
    slices.delete("old-abcde", &DeleteParams::default()).await.unwrap();
    unreachable(&client_pod, SocketAddr::from((old_ip, 90))).await;
    nxdomain(&client_pod, "old.default.svc.cluster.local").await;
    let table = node.exec(&["nft", "list", "table", "ip", "skerry"]);
    assert!(!table.contains(&old_ip.to_string()), "{table}");
    reaches(&client_pod, SocketAddr::from((web_ip, 80)), "web-http").await;

    // kube-dns's ClusterIP is the node-local DNS address: the proxy leaves it alone, so queries
    // keep reaching the resolver on the node (its endpoint, the pod, serves no DNS at all).
    let dns_ports = json!([{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                           {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}]);
    let system: Api<Service> = Api::namespaced(client.clone(), "kube-system");
    let kube_dns = service_json("kube-system", "kube-dns", Some("10.43.0.10"), dns_ports);
    system.create(&pp, &kube_dns).await.unwrap();
    let dns_slice_ports = json!([{"name": "dns", "port": 53, "protocol": "UDP"},
                                 {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]);
    let system_slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "kube-system");
    let dns_slice = slice_json("kube-system", "kube-dns", pod_ip, dns_slice_ports);
    system_slices.create(&pp, &dns_slice).await.unwrap();
    // The name being published proves the watch delivered kube-dns to this node ...
    let dns_name = "kube-dns.kube-system.svc.cluster.local";
    resolves(&client_pod, dns_name, "A", &[CLUSTER_DNS.to_string()]).await;
    // ... and a later change round-trips too, so the proxy saw kube-dns before it.
    let marker = services
        .create(&pp, &service_json("default", "marker", None, json!([{"port": 70}])))
        .await
        .unwrap();
    let marker_ip = cluster_ip(&marker).to_string();
    eventually("the marker service is programmed", async || {
        let table = node.exec(&["nft", "list", "table", "ip", "skerry"]);
        if table.contains(&marker_ip) {
            Ok(())
        } else {
            Err(table)
        }
    })
    .await;
    let table = node.exec(&["nft", "list", "table", "ip", "skerry"]);
    assert!(!table.contains(&CLUSTER_DNS.to_string()), "kube-dns was proxied: {table}");
    resolves(&client_pod, "web.default.svc.cluster.local", "A", &[web_ip.to_string()]).await;

    // Another node appears: this node routes its pod CIDR via its InternalIP (host-gw).
    let nodes: Api<Node> = Api::all(client.clone());
    let node2: Node = serde_json::from_value(json!({
        "metadata": {"name": "node-2"},
        "spec": {"podCIDR": "10.42.2.0/24"},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.168.77.2"}]},
    }))
    .unwrap();
    nodes.create(&pp, &node2).await.unwrap();
    eventually("the route to node-2's pods", async || {
        let routes = node.ip(&["route", "show", "10.42.2.0/24"]);
        if routes.contains("via 192.168.77.2") {
            Ok(())
        } else {
            Err(routes)
        }
    })
    .await;

    // The agent stops, the server goes away, the node reboots (rules and DNS data gone): the
    // snapshot brings back the ClusterIPs and names, without any API server.
    running.stop().await;
    server.kill();
    node.exec(&["nft", "delete", "table", "ip", "skerry"]);
    unreachable(&client_pod, SocketAddr::from((web_ip, 80))).await;
    let running = Running::start(client, &node, network.clone(), state.path()).await;
    reaches(&client_pod, SocketAddr::from((web_ip, 80)), "web-http").await;
    reaches(&client_pod, SocketAddr::from((web_ip, 81)), "web-metrics").await;
    resolves(&client_pod, "web.default.svc.cluster.local", "A", &[web_ip.to_string()]).await;
    nxdomain(&client_pod, "old.default.svc.cluster.local").await;
    let table = node.exec(&["nft", "list", "table", "ip", "skerry"]);
    assert!(!table.contains(&CLUSTER_DNS.to_string()), "kube-dns proxied after restore: {table}");
    running.stop().await;
}
