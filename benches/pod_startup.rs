//! Pod startup and agent footprint benchmark (issue 9), as root.
//!
//! In a network namespace of its own (so the agent's bridge, nftables table and DNS address
//! never touch the host's), a `skerry server --disable-agent` and one `skerry agent` that joins
//! it with the node token, with a busybox image built here and imported into the agent's store
//! (image present: no pull is timed). Then:
//!
//! 1. the agent's RSS and CPU at idle with 0 pods, and with 30 running pods;
//! 2. 100 pods created one after the other, each waited for: create issued → the watch shows
//!    the pod `Ready` (the reference's pod-startup SLI, without kubectl's own process start);
//! 3. 100 pods created at once (16 clients): each create → Ready, and the time until all are.
//!
//! The peer, when Debian's `containerd` is installed (runc is its runtime): a private
//! `containerd` on temp dirs with the same image imported, and `ctr run -d` of the same command
//! 100 times one after the other and 100 at once, each timed until `ctr` returns (the task is
//! then running). That is the runtime alone: no API, scheduler, pod network or status writes,
//! which the Skerry numbers include.
//!
//! Run: `cargo bench --bench pod_startup` (not part of the test suite). `SKERRY_BENCH_PODS`
//! changes the 100.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use serde_json::{json, Value};

mod support;
use support::{
    cpu_seconds, list_revision, load_average, namespace, percentile, rss_mb, watch_events, Api,
    Server,
};
#[path = "../tests/common/images.rs"]
mod images;

const IMAGE: &str = "example.com/bench/busybox:1";
const NAMESPACE: &str = "startup";
const NODE: &str = "bench-node";
/// Concurrent clients for the burst.
const CLIENTS: usize = 16;

fn pod(name: &str) -> String {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name },
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "automountServiceAccountToken": false,
            "containers": [{
                "name": "app",
                "image": IMAGE,
                "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", "3600"],
            }]
        }
    })
    .to_string()
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// A joined `skerry agent`, killed and cleaned up on drop.
struct Agent {
    child: Child,
    dir: tempfile::TempDir,
    cgroup_root: String,
}

impl Agent {
    fn join(server: &Server, archive: &Path) -> Agent {
        let dir = tempfile::Builder::new().prefix("skerry-startbench-agent").tempdir().unwrap();
        let data = dir.path().join("data");
        let cgroup_root = format!("skerry-bench-{}", std::process::id());
        let import = Command::new(env!("CARGO_BIN_EXE_skerry"))
            .args(["ctr", "--data-dir"])
            .arg(&data)
            .args(["images", "import"])
            .arg(archive)
            .output()
            .expect("skerry ctr");
        assert!(import.status.success(), "import: {}", String::from_utf8_lossy(&import.stderr));
        let token = std::fs::read_to_string(server.data_dir().join("server/node-token"))
            .expect("node token");
        let log = std::fs::File::create(dir.path().join("agent.log")).expect("agent log");
        let child = Command::new(env!("CARGO_BIN_EXE_skerry"))
            .args(["agent", "--server", &server.url, "--token", token.trim()])
            .args(["--node-name", NODE, "--node-ip", skerry_testkit::NODE_IP])
            // A build machine's disk is often below the default disk thresholds (a tainted
            // node schedules nothing): memory is the only pressure signal here, as in the tests.
            .args(["--eviction-hard", "memory.available<100Mi"])
            .args(["--config", "/dev/null", "--data-dir"])
            .arg(&data)
            .env("SKERRY_CGROUP_ROOT", &cgroup_root)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting skerry agent");
        Agent { child, dir, cgroup_root }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new(env!("CARGO_BIN_EXE_skerry"))
            .args(["agent", "--cleanup", "--node-name", NODE, "--config", "/dev/null"])
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .env("SKERRY_CGROUP_ROOT", &self.cgroup_root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        skerry_testkit::remove_cgroup_root(&self.cgroup_root);
    }
}

/// Waits until the node is Ready.
async fn node_ready(api: &Api, agent: &Agent) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, body) =
            api.call(Method::GET, &format!("/api/v1/nodes/{NODE}"), None, "").await;
        if status == StatusCode::OK && is_ready(&serde_json::from_slice(&body).unwrap_or_default())
        {
            return;
        }
        assert!(Instant::now() < deadline, "node not Ready:\n{}", agent.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// When each pod of the namespace was first seen Ready, from one watch.
struct Readiness {
    events: tokio::sync::mpsc::UnboundedReceiver<(Value, Instant)>,
    ready_at: HashMap<String, Instant>,
}

impl Readiness {
    async fn watch(api: &Api, path: &str) -> Readiness {
        let rv = list_revision(api, path).await;
        Readiness { events: watch_events(api, path, &rv), ready_at: HashMap::new() }
    }

    /// Waits until every pod in `names` was seen Ready.
    async fn wait(&mut self, names: &[String]) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
        while !names.iter().all(|n| self.ready_at.contains_key(n)) {
            let Ok(Some((event, at))) = tokio::time::timeout_at(deadline, self.events.recv()).await
            else {
                panic!("pods not Ready in time: {} of {}", self.ready_at.len(), names.len());
            };
            let pod = &event["object"];
            if let Some(name) = pod["metadata"]["name"].as_str() {
                if is_ready(pod) {
                    self.ready_at.entry(name.to_string()).or_insert(at);
                }
            }
        }
    }
}

/// Creates pods `prefix-0…n-1` (one after the other, each waited for, when `clients` is 1;
/// else from `clients` tasks at once) and returns each one's create → Ready latency in ms and
/// the wall time until the last was Ready.
async fn start_pods(conns: &[Api], prefix: &str, n: usize, clients: usize) -> (Vec<f64>, f64) {
    let path = format!("/api/v1/namespaces/{NAMESPACE}/pods");
    let mut readiness = Readiness::watch(&conns[0], &path).await;
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}-{i:03}")).collect();
    let t0 = Instant::now();
    let mut created: HashMap<String, Instant> = HashMap::new();
    if clients <= 1 {
        for name in &names {
            created.insert(name.clone(), Instant::now());
            conns[0].expect(StatusCode::CREATED, Method::POST, &path, pod(name)).await;
            readiness.wait(std::slice::from_ref(name)).await;
        }
    } else {
        let shared = Arc::new(names.clone());
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                let (api, names, path) =
                    (conns[c % conns.len()].clone(), shared.clone(), path.clone());
                tokio::spawn(async move {
                    let mut starts = Vec::new();
                    for name in names.iter().skip(c).step_by(clients) {
                        starts.push((name.clone(), Instant::now()));
                        api.expect(StatusCode::CREATED, Method::POST, &path, pod(name)).await;
                    }
                    starts
                })
            })
            .collect();
        for t in tasks {
            created.extend(t.await.expect("client task"));
        }
        readiness.wait(&names).await;
    }
    let ready_at = &readiness.ready_at;
    let wall = ready_at.values().max().map_or(0.0, |last| last.duration_since(t0).as_secs_f64());
    let mut latencies: Vec<f64> =
        names.iter().map(|n| ready_at[n].duration_since(created[n]).as_secs_f64() * 1e3).collect();
    latencies.sort_by(f64::total_cmp);
    (latencies, wall)
}

/// Deletes every pod of the namespace and waits until they are gone.
async fn delete_pods(api: &Api) {
    let path = format!("/api/v1/namespaces/{NAMESPACE}/pods");
    api.expect(
        StatusCode::OK,
        Method::DELETE,
        &format!("{path}?gracePeriodSeconds=0"),
        String::new(),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let body = api.expect(StatusCode::OK, Method::GET, &path, String::new()).await;
        let list: Value = serde_json::from_slice(&body).expect("pod list");
        if list["items"].as_array().is_none_or(Vec::is_empty) {
            return;
        }
        assert!(Instant::now() < deadline, "pods not deleted");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// RSS now and CPU % of a core over `secs` of `pid` at rest.
async fn footprint(pid: u32, secs: u64) -> (f64, f64) {
    let cpu = cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    (rss_mb(pid), (cpu_seconds(pid) - cpu) * 100.0 / secs as f64)
}

fn report(what: &str, latencies: &[f64], wall: f64) {
    println!(
        "  {what:<40} p50 {:>7.1} ms   p99 {:>7.1} ms   all done in {:>6.2} s",
        percentile(latencies, 0.50),
        percentile(latencies, 0.99),
        wall
    );
}

/// A private containerd (runc underneath) on temp dirs, stopped on drop.
struct Containerd {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ =
            Command::new("ctr").args(self.args()).args(["tasks", "ls", "-q"]).output().map(|out| {
                for id in String::from_utf8_lossy(&out.stdout).lines() {
                    let _ = Command::new("ctr")
                        .args(self.args())
                        .args(["tasks", "kill", "-s", "KILL", id])
                        .status();
                }
            });
        std::thread::sleep(Duration::from_secs(1));
        let _ =
            Command::new("ctr").args(self.args()).args(["containers", "ls", "-q"]).output().map(
                |out| {
                    for id in String::from_utf8_lossy(&out.stdout).lines() {
                        let _ = Command::new("ctr")
                            .args(self.args())
                            .args(["tasks", "delete", "-f", id])
                            .status();
                        let _ = Command::new("ctr")
                            .args(self.args())
                            .args(["containers", "delete", id])
                            .status();
                    }
                },
            );
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("umount").arg("-R").arg(self.dir.path()).status();
    }
}

impl Containerd {
    fn start(archive: &Path) -> Option<Containerd> {
        let bin = PathBuf::from("/usr/bin/containerd");
        if !bin.exists() {
            println!("  (containerd not installed: `apt-get install containerd` for the peer)");
            return None;
        }
        let dir = tempfile::Builder::new().prefix("skerry-startbench-ctrd").tempdir().unwrap();
        let root = dir.path();
        let config = root.join("config.toml");
        std::fs::write(&config, "version = 2\n").unwrap();
        let log = std::fs::File::create(root.join("containerd.log")).unwrap();
        let child = Command::new(&bin)
            .arg("--config")
            .arg(&config)
            .arg("--root")
            .arg(root.join("root"))
            .arg("--state")
            .arg(root.join("state"))
            .arg("--address")
            .arg(root.join("containerd.sock"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting containerd");
        let ctrd = Containerd { child, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ctrd.dir.path().join("containerd.sock").exists() {
            assert!(Instant::now() < deadline, "containerd did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let out = Command::new("ctr")
            .args(ctrd.args())
            .args(["images", "import"])
            .arg(archive)
            .output()
            .expect("ctr images import");
        assert!(out.status.success(), "ctr import: {}", String::from_utf8_lossy(&out.stderr));
        Some(ctrd)
    }

    fn args(&self) -> Vec<String> {
        let sock = self.dir.path().join("containerd.sock");
        vec!["--address".into(), sock.display().to_string(), "--namespace".into(), "bench".into()]
    }

    /// `ctr run -d IMAGE ID sleep 3600`: the time until it returns (the task runs), in ms.
    fn run(args: &[String], id: &str) -> f64 {
        let t0 = Instant::now();
        let out = Command::new("ctr")
            .args(args)
            .args(["run", "-d", IMAGE, id, "sleep", "3600"])
            .stdout(Stdio::null())
            .output()
            .expect("ctr run");
        assert!(out.status.success(), "ctr run {id}: {}", String::from_utf8_lossy(&out.stderr));
        t0.elapsed().as_secs_f64() * 1e3
    }

    fn sequential(&self, n: usize) -> (Vec<f64>, f64) {
        let t0 = Instant::now();
        let mut latencies: Vec<f64> =
            (0..n).map(|i| Self::run(&self.args(), &format!("s-{i}"))).collect();
        latencies.sort_by(f64::total_cmp);
        (latencies, t0.elapsed().as_secs_f64())
    }

    fn burst(&self, n: usize) -> (Vec<f64>, f64) {
        let t0 = Instant::now();
        let threads: Vec<_> = (0..n)
            .map(|i| {
                let args = self.args();
                std::thread::spawn(move || Self::run(&args, &format!("b-{i}")))
            })
            .collect();
        let mut latencies: Vec<f64> =
            threads.into_iter().map(|t| t.join().expect("ctr run")).collect();
        latencies.sort_by(f64::total_cmp);
        (latencies, t0.elapsed().as_secs_f64())
    }
}

async fn bench(archive: PathBuf, pods: usize) {
    println!("load average at start: {}", load_average());
    let server = Server::start("skerry-startbench", &["--disable-agent"]).await;
    let conns = server.conns(4).await;
    let api = conns[0].clone();
    let agent = Agent::join(&server, &archive);
    node_ready(&api, &agent).await;
    namespace(&api, NAMESPACE).await;

    println!("--- skerry (server + one joined agent, image present) ---");
    let (rss, cpu) = footprint(agent.child.id(), 30).await;
    println!(
        "  agent idle, 0 pods:                      RSS {rss:>6.1} MB   CPU {cpu:.2} % of a core"
    );
    let (latencies, wall) = start_pods(&conns, "idle", 30, CLIENTS).await;
    report("30 pods at once, create → Ready", &latencies, wall);
    let (rss, cpu) = footprint(agent.child.id(), 30).await;
    println!(
        "  agent with 30 running pods:              RSS {rss:>6.1} MB   CPU {cpu:.2} % of a core"
    );
    delete_pods(&api).await;

    let (latencies, wall) = start_pods(&conns, "seq", pods, 1).await;
    report(&format!("{pods} pods one by one, create → Ready"), &latencies, wall);
    delete_pods(&api).await;
    let (latencies, wall) = start_pods(&conns, "burst", pods, CLIENTS).await;
    report(&format!("{pods} pods at once, create → Ready"), &latencies, wall);
    println!(
        "  server CPU so far: {:.1} s; load average: {}",
        server.cpu_seconds(),
        load_average()
    );
    delete_pods(&api).await;
    drop(agent);
    drop(server);

    println!("--- containerd + runc (`ctr run -d`, image present) ---");
    if let Some(ctrd) = Containerd::start(&archive) {
        let (latencies, wall) = ctrd.sequential(pods);
        report(&format!("{pods} containers one by one"), &latencies, wall);
        let (latencies, wall) = ctrd.burst(pods);
        report(&format!("{pods} containers at once"), &latencies, wall);
        println!("  load average: {}", load_average());
    }
}

fn main() {
    if !skerry_testkit::is_root() {
        eprintln!("pod_startup needs root (containers, a network namespace)");
        return;
    }
    let pods = std::env::var("SKERRY_BENCH_PODS").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let images = tempfile::tempdir().expect("temp dir");
    let (layout, _) = images::busybox_layout(images.path(), IMAGE);
    let archive = images::archive_of(&layout, images.path());
    // Before the runtime's threads exist, so that they and every child live in the namespace.
    skerry_testkit::enter_test_netns();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(bench(archive, pods));
}
