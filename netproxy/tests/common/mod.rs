//! Test topology: "nodes" and "pods" as network namespaces, a LAN namespace with a bridge
//! joining the nodes, small TCP servers inside pods. Everything is created per test with
//! unique names (pid + counter) and removed by Drop guards, even when a test fails.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use skerry_netproxy::netns;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique short tag for names in this process.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst))
}

/// Runs a command, panicking with its output on failure.
pub fn run(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().expect("spawning a command");
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A named network namespace (`ip netns add`), deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Self {
        let name = unique(&format!("skr-{prefix}-"));
        run(&["ip", "netns", "add", &name]);
        run(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        Netns { name }
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// `ip -n NAME args...`.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "-n", &self.name];
        all.extend_from_slice(args);
        run(&all)
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "netns", "exec", &self.name];
        all.extend_from_slice(args);
        run(&all)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// A LAN namespace with a bridge; nodes plug into it with veths.
pub struct Lan {
    pub ns: Netns,
    ports: u32,
}

impl Lan {
    pub fn new() -> Self {
        let ns = Netns::new("lan");
        ns.ip(&["link", "add", "lan0", "type", "bridge"]);
        ns.ip(&["link", "set", "lan0", "up"]);
        Lan { ns, ports: 0 }
    }

    /// A node namespace with `eth0` on the LAN at `ip/24`.
    pub fn node(&mut self, ip: Ipv4Addr) -> Netns {
        let node = Netns::new("node");
        self.ports += 1;
        let port = format!("p{}", self.ports);
        self.ns.ip(&[
            "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &node.name,
        ]);
        self.ns.ip(&["link", "set", &port, "master", "lan0", "up"]);
        node.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        node.ip(&["link", "set", "eth0", "up"]);
        // Like a real node, a default route (service IPs are routed nowhere in particular).
        node.ip(&["route", "add", "default", "dev", "eth0"]);
        node
    }
}

/// A TCP server inside a namespace answering every connection with `reply` (or, for
/// `"$peer"`, the client's address) then closing.
pub struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn start(ns: &Netns, port: u16, reply: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let path = ns.path();
        let reply = reply.to_string();
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            netns::enter(&path).unwrap();
            let l = TcpListener::bind(("0.0.0.0", port)).unwrap();
            l.set_nonblocking(true).unwrap();
            ready_tx.send(()).unwrap();
            while !stop2.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((mut s, peer)) => {
                        // "$peer" answers with the client address the pod sees.
                        let msg =
                            if reply == "$peer" { peer.ip().to_string() } else { reply.clone() };
                        let _ = s.write_all(msg.as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        ready_rx.recv().unwrap();
        Server { stop, thread: Some(thread) }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connects from inside `ns` to `addr` and returns what the server said, or the error.
pub fn fetch(ns: &Netns, addr: SocketAddr) -> std::io::Result<String> {
    let path = ns.path();
    netns::run_in(Some(&path), move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
    .unwrap()
}

/// Retries `fetch` a few times (ARP and the first VXLAN packets can take a moment).
pub fn fetch_retry(ns: &Netns, addr: SocketAddr) -> std::io::Result<String> {
    let mut last = None;
    for _ in 0..20 {
        match fetch(ns, addr) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(last.unwrap())
}
