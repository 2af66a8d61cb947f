//! The node-local binding: the server on the real cluster DNS address, 10.43.0.10:53, inside a
//! network namespace made by the test (standing in for a node), queried by `dig` from inside it.
//! Needs root (network namespaces, port 53).

mod common;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use common::{dig_in, service, tools, Dnsmasq};
use serde_json::json;
use skerry_dns::{ClusterDns, DnsConfig, DnsHandle, Update};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A network namespace, deleted on drop.
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        let name =
            format!("skdns-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        ip(&["netns", "add", &name]);
        let ns = Netns(name);
        ip(&["-n", &ns.0, "link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().unwrap();
    assert!(status.success(), "ip {args:?} failed");
}

/// A server running on its own thread inside `netns` (sockets are created in the namespace of
/// the thread that makes them, and stay there).
struct ServerInNetns {
    handle: Option<DnsHandle>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerInNetns {
    fn start(netns: &str, config: DnsConfig) -> ServerInNetns {
        let ns_file = File::open(format!("/run/netns/{netns}")).unwrap();
        let (handle_tx, handle_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            // SAFETY: setns on a valid namespace fd affects only this thread.
            let rc = unsafe { libc::setns(ns_file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                handle_tx.send(ClusterDns::start(config).await).unwrap();
                // Serve until the test is done with us.
                let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
            });
        });
        let handle = handle_rx.recv().unwrap().unwrap();
        ServerInNetns { handle: Some(handle), stop: Some(stop_tx), thread: Some(thread) }
    }

    fn dns(&self) -> &DnsHandle {
        self.handle.as_ref().unwrap()
    }
}

impl Drop for ServerInNetns {
    fn drop(&mut self) {
        self.handle.take();
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_the_cluster_dns_address_inside_a_node_namespace() {
    if !skerry_testkit::require_root() {
        return;
    }
    let Some((_, dnsmasq)) = tools() else { return };
    let netns = Netns::new();
    let upstream = Dnsmasq::start_in(Some(&netns.0), &dnsmasq, 300).await;
    let config = DnsConfig { upstreams: vec![upstream.addr], ..DnsConfig::default() };
    assert_eq!(config.listen, vec!["10.43.0.10:53".parse().unwrap()], "the default address");
    // Started before the address exists on the node: IP_FREEBIND lets it bind anyway.
    let server = ServerInNetns::start(&netns.0, config);
    ip(&["-n", &netns.0, "addr", "add", "10.43.0.10/32", "dev", "lo"]);
    server.dns().apply(Update::apply(service("prod", "web", json!({"clusterIP": "10.43.0.20"}))));

    let at = "10.43.0.10:53".parse().unwrap();
    let ns = Some(netns.0.as_str());
    let udp = dig_in(ns, at, "web.prod.svc.cluster.local", "A", &[]).await;
    assert_eq!(udp.data("A"), vec!["10.43.0.20"], "{}", udp.raw);
    assert!(udp.has_flag("aa") && udp.has_flag("ra"), "{}", udp.raw);
    let tcp = dig_in(ns, at, "web.prod.svc.cluster.local", "A", &["+tcp"]).await;
    assert_eq!(tcp.data("A"), vec!["10.43.0.20"], "{}", tcp.raw);
    let forwarded = dig_in(ns, at, "www.example.test", "A", &[]).await;
    assert_eq!(forwarded.data("A"), vec!["192.0.2.1"], "{}", forwarded.raw);
    let ns_record = dig_in(ns, at, "ns.dns.cluster.local", "A", &[]).await;
    assert_eq!(ns_record.data("A"), vec!["10.43.0.10"], "{}", ns_record.raw);
}
