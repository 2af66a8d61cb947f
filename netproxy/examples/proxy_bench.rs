//! Service proxy benchmark (run as root; everything happens in scratch network namespaces):
//!
//! ```text
//! cargo run --release -p skerry-netproxy --example proxy_bench [-- 1000 10000]
//! ```
//!
//! For each size N: a full sync of N services × 3 endpoints through `ServiceProxy` vs
//! `nft -f` of the equivalent kube-proxy (nftables mode) ruleset, which uses one anonymous
//! `numgen … vmap` per service; then one incremental update each way. Finally the latency of
//! a TCP connect+request+reply through a ClusterIP vs straight to the pod.
//!
//! `SKERRY_BENCH_NO_PEER=1` skips `nft -f` and the latency part; `SKERRY_BENCH_LATENCY_ONLY=1`
//! runs only the latency part; `SKERRY_BENCH_LATENCY_SERVICES=N` (default 1) puts N services
//! in the table during it (the measured one first); `SKERRY_BENCH_LIST=1` prints that table;
//! `SKERRY_BENCH_FLOOR=1` measures against one hand-written DNAT rule instead of the proxy.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;
use skerry_netproxy::netns;
use skerry_netproxy::podnet::{NetworkConfig, PodNetwork};
use skerry_netproxy::proxy::{ProxyConfig, ServiceProxy};

struct Ns(String);
impl Ns {
    fn new(tag: &str) -> Ns {
        let name = format!("skr-bench-{tag}-{}", std::process::id());
        sh(&["ip", "netns", "add", &name]);
        sh(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        Ns(name)
    }
    fn path(&self) -> std::path::PathBuf {
        format!("/run/netns/{}", self.0).into()
    }
}
impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn sh(args: &[&str]) {
    let st = Command::new(args[0]).args(&args[1..]).status().expect("spawn");
    assert!(st.success(), "{args:?}");
}

fn cluster_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 43, (i / 250) as u8 + 1, (i % 250) as u8 + 1)
}

fn endpoint_ip(i: usize, j: usize) -> Ipv4Addr {
    let n = i * 3 + j;
    Ipv4Addr::new(10, 42, (n / 250) as u8, (n % 250) as u8 + 2)
}

fn objects(n: usize) -> (Vec<Service>, Vec<EndpointSlice>) {
    let mut svcs = Vec::new();
    let mut slices = Vec::new();
    for i in 0..n {
        let name = format!("svc-{i}");
        svcs.push(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "bench"},
                "spec": {"clusterIP": cluster_ip(i).to_string(),
                         "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
            }))
            .unwrap(),
        );
        let eps: Vec<_> = (0..3)
            .map(|j| {
                json!({"addresses": [endpoint_ip(i, j).to_string()],
                            "conditions": {"ready": true}, "nodeName": "other"})
            })
            .collect();
        slices.push(
            serde_json::from_value(json!({
                "metadata": {"name": format!("{name}-x"), "namespace": "bench",
                             "labels": {"kubernetes.io/service-name": name}},
                "addressType": "IPv4", "endpoints": eps,
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            }))
            .unwrap(),
        );
    }
    (svcs, slices)
}

/// kube-proxy's nftables-mode layout for the same services.
fn kube_proxy_ruleset(n: usize) -> String {
    let mut s = String::from("table ip kp {\n");
    s += " chain mark-for-masquerade { meta mark set mark | 0x4000; }\n";
    for i in 0..n {
        for j in 0..3 {
            let ip = endpoint_ip(i, j);
            let _ = writeln!(
                s,
                " chain ep-{i}-{j} {{ ip saddr {ip} jump mark-for-masquerade\n  meta l4proto tcp dnat to {ip}:8080; }}"
            );
        }
        let _ = writeln!(
            s,
            " chain svc-{i} {{ ip saddr != 10.42.0.0/16 jump mark-for-masquerade\n  numgen random mod 3 vmap {{ 0 : goto ep-{i}-0, 1 : goto ep-{i}-1, 2 : goto ep-{i}-2 }}; }}"
        );
    }
    s += " map service-ips { type ipv4_addr . inet_proto . inet_service : verdict\n  elements = { ";
    let elems: Vec<String> =
        (0..n).map(|i| format!("{} . tcp . 80 : goto svc-{i}", cluster_ip(i))).collect();
    s += &elems.join(", ");
    s += " }; }\n";
    s += " chain services { ip daddr . meta l4proto . th dport vmap @service-ips; }\n";
    s += " chain nat-prerouting { type nat hook prerouting priority -100; jump services; }\n}\n";
    s
}

fn nft_f(ns: &Ns, text: &str) -> Duration {
    let path = std::env::temp_dir().join(format!("skr-bench-{}.nft", std::process::id()));
    std::fs::write(&path, text).unwrap();
    let t = Instant::now();
    sh(&["ip", "netns", "exec", &ns.0, "nft", "-f", path.to_str().unwrap()]);
    let d = t.elapsed();
    let _ = std::fs::remove_file(&path);
    d
}

fn sync_bench(n: usize) {
    let ns = Ns::new("sync");
    let (svcs, slices) = objects(n);
    let mut cfg = ProxyConfig::new("node", vec![Ipv4Addr::new(192, 168, 77, 1)]);
    cfg.netns = Some(ns.path());
    // The userspace share: resolve objects, plan and encode the batch without sending it.
    let t = Instant::now();
    let layout = skerry_netproxy::proxy::plan::Layout {
        cluster_cidr: cfg.cluster_cidr,
        masquerade_mark: cfg.masquerade_mark,
    };
    let mut slots = skerry_netproxy::proxy::slots::Slots::default();
    let objs: Vec<_> = svcs
        .iter()
        .zip(&slices)
        .flat_map(|(s, sl)| skerry_netproxy::proxy::model::service_ports(s, &[sl], "node", &[]))
        .map(|p| skerry_netproxy::proxy::plan::service_objects(&p, &layout, &mut |c| slots.get(c)))
        .collect();
    let mut batch = skerry_netproxy::nft::wire::Batch::new(1);
    let refs: Vec<_> = objs.iter().collect();
    skerry_netproxy::proxy::plan::write_full(&mut batch, "skerry", &layout, &cfg.node_ips, &refs);
    let bytes = batch.finish().map(|b| b.0.len()).unwrap_or(0);
    let encode = t.elapsed();
    let mut proxy = ServiceProxy::new(cfg).unwrap();
    let t = Instant::now();
    let stats = proxy.sync(&svcs, &slices).unwrap();
    let full = t.elapsed();
    // Incremental: change the endpoints of one service, 20 times, take the mean.
    let rounds: usize =
        std::env::var("SKERRY_BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(20);
    let t = Instant::now();
    for r in 0..rounds {
        let i = (r * 37) % n;
        let mut s = slices[i].clone();
        s.endpoints.truncate(if r % 2 == 0 { 2 } else { 3 });
        proxy.update_service(&svcs[i], &[s]).unwrap();
    }
    let incr = t.elapsed() / rounds as u32;
    // Adding and removing whole services: new chains and dispatch elements, so the kernel
    // validates the table on these commits.
    let (more_svcs, more_slices) = objects(n + 5);
    let t = Instant::now();
    for k in n..n + 5 {
        proxy.update_service(&more_svcs[k], std::slice::from_ref(&more_slices[k])).unwrap();
    }
    let add = t.elapsed() / 5;
    let t = Instant::now();
    for k in n..n + 5 {
        proxy.remove_service("bench", &format!("svc-{k}")).unwrap();
    }
    let remove = t.elapsed() / 5;
    // Resync over an existing table (the restart / drift path).
    let t = Instant::now();
    proxy.resync().unwrap();
    let resync = t.elapsed();
    proxy.cleanup().unwrap();

    if std::env::var_os("SKERRY_BENCH_NO_PEER").is_some() {
        // For profiling our side alone.
        println!(
            "{n:>6} services: full {full:?}, resync {resync:?}, incremental {incr:?}, \
             add service {add:?}, remove service {remove:?}"
        );
        return;
    }
    let kp_full = nft_f(&ns, &kube_proxy_ruleset(n));
    let kp_incr = nft_f(
        &ns,
        "flush chain ip kp svc-0\ntable ip kp { chain svc-0 { ip saddr != 10.42.0.0/16 jump mark-for-masquerade\n numgen random mod 2 vmap { 0 : goto ep-0-0, 1 : goto ep-0-1 }\n }\n}\n",
    );
    println!(
        "{n:>6} services x 3 endpoints: skerry full sync {:>8.1} ms ({} netlink commands, {} KiB, \
         {:.1} ms of it in userspace), \
         resync {:>8.1} ms, incremental {:>6.2} ms, add service {:>6.2} ms, remove service \
         {:>6.2} ms | nft -f kube-proxy layout: full {:>9.1} ms, \
         incremental {:>6.2} ms (process start included) | full-sync ratio {:.1}x",
        full.as_secs_f64() * 1e3,
        stats.commands,
        bytes / 1024,
        encode.as_secs_f64() * 1e3,
        resync.as_secs_f64() * 1e3,
        incr.as_secs_f64() * 1e3,
        add.as_secs_f64() * 1e3,
        remove.as_secs_f64() * 1e3,
        kp_full.as_secs_f64() * 1e3,
        kp_incr.as_secs_f64() * 1e3,
        kp_full.as_secs_f64() / full.as_secs_f64(),
    );
}

/// Medians of one connect+request+reply straight to `direct` and through `vip`, interleaved
/// one by one so background load hits both alike (the machine is shared).
fn connect_latency(
    client: &std::path::Path,
    direct: SocketAddr,
    vip: SocketAddr,
    rounds: usize,
) -> (Duration, Duration) {
    let client = client.to_path_buf();
    netns::run_in(Some(&client.clone()), move || {
        let once = |to: SocketAddr| {
            let mut buf = [0u8; 16];
            let t = Instant::now();
            let mut s = TcpStream::connect(to).unwrap();
            s.write_all(b"ping").unwrap();
            let _ = s.read(&mut buf).unwrap();
            t.elapsed()
        };
        let mut a = Vec::with_capacity(rounds);
        let mut b = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            a.push(once(direct));
            b.push(once(vip));
        }
        a.sort();
        b.sort();
        (a[rounds / 2], b[rounds / 2])
    })
    .unwrap()
}

async fn latency_bench() {
    let node = Ns::new("node");
    // An uplink with a default route, as on a real node (service IPs route nowhere else).
    for cmd in [
        "link add eth0 type veth peer name eth0p",
        "link set eth0p up",
        "addr add 192.168.77.1/24 dev eth0",
        "link set eth0 up",
        "route add default dev eth0",
    ] {
        let mut args = vec!["ip", "-n", &node.0];
        args.extend(cmd.split(' '));
        sh(&args);
    }
    let (pod, client) = (Ns::new("pod"), Ns::new("client"));
    let state = tempfile::tempdir().unwrap();
    let mut cfg = NetworkConfig::new(
        "10.42.1.0/24".parse().unwrap(),
        Ipv4Addr::new(192, 168, 77, 1),
        state.path().into(),
    );
    cfg.node_netns = Some(node.path());
    cfg.backend = skerry_netproxy::podnet::Backend::HostGw;
    let net = PodNetwork::new(cfg).await.unwrap();
    let pod_ip = net.attach("server", &pod.path()).await.unwrap().ip;
    net.attach("client", &client.path()).await.unwrap();
    let pod_path = pod.path();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        netns::enter(&pod_path).unwrap();
        let l = TcpListener::bind("0.0.0.0:8080").unwrap();
        tx.send(()).unwrap();
        let mut buf = [0u8; 16];
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            if s.read(&mut buf).is_ok() {
                let _ = s.write_all(b"pong");
            }
        }
    });
    rx.recv().unwrap();
    let table_size = std::env::var("SKERRY_BENCH_LATENCY_SERVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1usize)
        .max(1);
    let (svcs, mut slices) = objects(table_size);
    slices[0].endpoints.truncate(1);
    slices[0].endpoints[0].addresses = vec![pod_ip.to_string()];
    let mut pcfg = ProxyConfig::new("node", vec![Ipv4Addr::new(192, 168, 77, 1)]);
    pcfg.netns = Some(node.path());
    let mut proxy = ServiceProxy::new(pcfg).unwrap();
    if std::env::var_os("SKERRY_BENCH_FLOOR").is_some() {
        // The floor: the same DNAT (and masquerade from outside the pod network) as the
        // fewest hand-written rules, no proxy table at all.
        let rules = format!(
            "table ip floor {{\n chain pre {{ type nat hook prerouting priority -100; \
             ip daddr {vip} tcp dport 80 dnat to {pod_ip}:8080; }}\n chain out {{ type nat hook \
             output priority -100; ip daddr {vip} tcp dport 80 dnat to {pod_ip}:8080; }}\n \
             chain post {{ type nat hook postrouting priority 100; ct status dnat ip saddr != \
             10.42.0.0/16 masquerade; }}\n}}\n",
            vip = cluster_ip(0)
        );
        println!("floor: one hand-written DNAT rule, no proxy table");
        nft_f(&node, &rules);
    } else {
        proxy.sync(&svcs, &slices).unwrap();
    }
    if std::env::var_os("SKERRY_BENCH_LIST").is_some() {
        // What `nft` makes of the table (it must stay listable).
        sh(&["ip", "netns", "exec", &node.0, "nft", "list", "table", "ip", "skerry"]);
    }
    let direct_addr = SocketAddr::from((pod_ip, 8080));
    let vip = SocketAddr::from((cluster_ip(0), 80));
    let rounds = 5000;
    println!("latency with {table_size} service(s) in the table");
    connect_latency(&client.path(), direct_addr, vip, 200); // warm-up
    for (label, from) in [("a pod on the same bridge", client.path()), ("the node", node.path())] {
        let (direct, via) = connect_latency(&from, direct_addr, vip, rounds);
        println!(
            "connect+request+reply from {label}, median of {rounds}: direct to pod {:.1} us, \
             via ClusterIP {:.1} us (overhead {:+.1} %)",
            direct.as_secs_f64() * 1e6,
            via.as_secs_f64() * 1e6,
            (via.as_secs_f64() / direct.as_secs_f64() - 1.0) * 100.0
        );
    }
}

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() { vec![1000, 10_000] } else { sizes };
    let latency_only = std::env::var_os("SKERRY_BENCH_LATENCY_ONLY").is_some();
    for n in sizes.into_iter().filter(|_| !latency_only) {
        sync_bench(n);
    }
    if std::env::var_os("SKERRY_BENCH_NO_PEER").is_some() {
        return;
    }
    latency_bench().await;
}
