//! Scheduler benchmark (issue 5): pods scheduled per second by the real `skerry server` with
//! 1,000 and 5,000 nodes, and each pod's create → bound latency.
//!
//! For each cluster size a fresh `skerry server --disable-agent` is started with the scheduler on
//! and every controller that would write to nodes or pods off (node lifecycle would taint Ready
//! nodes that renew no Lease; pod GC would delete pods of nodes it thinks are gone). The nodes
//! are plain Node objects (Ready, 4 CPUs / 32Gi / 110 pods allocatable, hostname and zone labels
//! over five zones), the shape of the reference's `scheduler_perf` node template. Then
//! `SKERRY_BENCH_PODS` pods (default 2,000; 100m CPU / 500Mi requested, as the reference's
//! default pod) are created from 64 clients while one watch of the namespace notes when each pod
//! first shows a `spec.nodeName`.
//!
//! Reported per size: the scheduling throughput (pods bound / time from the first binding to the
//! last, which is what the reference's `SchedulingThroughput` averages), the end-to-end rate (pods
//! / time from the first create to the last binding), the create rate the clients achieved (if
//! creates are slower than the scheduler, the scheduler waits on them and the rate is a floor),
//! p50/p99 of create-issued → binding-seen, and the server's CPU per scheduled pod (the API server
//! serves both the creates and the bindings, so this is the whole process, not the scheduler).
//!
//! There is no kube-scheduler on this machine: BENCHMARKS.md compares with the thresholds the
//! reference publishes for its `SchedulingBasic` test instead.
//!
//! Run: `cargo bench --bench scheduler` (not part of the test suite). `SKERRY_BENCH_NODES`
//! (comma-separated, default `1000,5000`) and `SKERRY_BENCH_PODS` change the sizes.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};

mod support;
use support::{admin_tls, free_port, namespace, percentile, Api};

/// Concurrent clients creating nodes and pods.
const CLIENTS: usize = 64;
/// HTTP/2 connections they share (the server allows 200 streams on each).
const CONNS: usize = 16;
const ZONES: usize = 5;
const NAMESPACE: &str = "sched";
/// Controllers off: all that write nodes or pods, or would only add noise. `namespace`,
/// `serviceaccount` and `root-ca-cert-publisher` stay on (pods need the `default` account).
const DISABLED_CONTROLLERS: &str = "replicaset,replicationcontroller,endpoint,endpointslice,\
garbagecollector,nodeipam,nodelifecycle,deployment,csrsigning,job,cronjob,ttl-after-finished,\
disruption,statefulset,daemonset,podgc";

fn node_status() -> Value {
    let resources = json!({ "cpu": "4", "memory": "32Gi", "pods": "110" });
    json!({
        "allocatable": resources,
        "capacity": resources,
        "conditions": [{ "type": "Ready", "status": "True", "reason": "KubeletReady",
                         "message": "ready", "lastHeartbeatTime": "2026-01-01T00:00:00Z",
                         "lastTransitionTime": "2026-01-01T00:00:00Z" }]
    })
}

fn node(i: usize) -> String {
    let name = format!("node-{i:05}");
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "topology.kubernetes.io/zone": format!("zone-{}", i % ZONES),
            }
        },
        "status": node_status(),
    })
    .to_string()
}

fn pod(name: &str) -> String {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "labels": { "app": "bench" } },
        "spec": {
            "containers": [{
                "name": "app",
                "image": "registry.example/pause:3.10",
                "resources": { "requests": { "cpu": "100m", "memory": "500Mi" } }
            }]
        }
    })
    .to_string()
}

// ---------------------------------------------------------------------------------------------
// The server under test (as in benches/api.rs)

/// `skerry server`, killed on drop with its temp dir; its URL and the admin's TLS settings.
struct Server {
    child: Child,
    dir: tempfile::TempDir,
    url: String,
    tls: Arc<rustls::ClientConfig>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    async fn start() -> Server {
        let dir = tempfile::Builder::new().prefix("skerry-schedbench").tempdir().expect("temp dir");
        let data: PathBuf = dir.path().join("data");
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log file");
        let port = free_port().to_string();
        let child = Command::new(env!("CARGO_BIN_EXE_skerry"))
            .args(["server", "--disable-agent", "--disable-controllers", DISABLED_CONTROLLERS])
            .args(["--bind-address", "127.0.0.1", "--https-listen-port", &port])
            .arg("--data-dir")
            .arg(&data)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting skerry");
        let mut server = Server {
            child,
            dir,
            url: format!("https://127.0.0.1:{port}"),
            tls: Arc::new(
                rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .expect("TLS versions")
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
            ),
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("skerry server exited with {status}:\n{}", server.log());
            }
            if data.join("tls/admin.key").exists() && data.join("admin.kubeconfig").exists() {
                server.tls = admin_tls(&data);
                if let Ok(api) = server.try_connect().await {
                    if api.call(Method::GET, "/readyz", None, "").await.0 == StatusCode::OK {
                        return server;
                    }
                }
            }
            assert!(Instant::now() < deadline, "server not ready in time:\n{}", server.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// User + system CPU time of the server so far, in seconds.
    fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the `(comm)`: state is the first, utime the 12th, stime the 13th.
        let fields: Vec<&str> =
            stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
        let ticks: f64 = [11, 12]
            .iter()
            .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<f64>().ok()))
            .sum();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        ticks / hz.max(1.0)
    }

    async fn try_connect(&self) -> std::io::Result<Api> {
        support::connect(&self.url, &self.tls).await
    }

    /// `n` HTTP/2 connections.
    async fn conns(&self, n: usize) -> Vec<Api> {
        support::connect_many(&self.url, &self.tls, n).await
    }
}

// ---------------------------------------------------------------------------------------------
// Setup

/// Creates namespace `ns` and waits for its `default` service account (pods need it).
/// Runs `op(i)` for i in 0..n from `CLIENTS` tasks over `conns`; returns each call's start time.
async fn fan_out<F, Fut>(conns: &[Api], n: usize, op: F) -> Vec<(usize, Instant)>
where
    F: Fn(Api, usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|t| {
            let (api, next, op) = (conns[t % conns.len()].clone(), next.clone(), op.clone());
            tokio::spawn(async move {
                let mut started = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    started.push((i, Instant::now()));
                    op(api.clone(), i).await;
                }
                started
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client task"));
    }
    all
}

/// Creates nodes `node-00000`…; writes their status through `nodes/status` when create dropped it.
async fn create_nodes(conns: &[Api], n: usize) {
    fan_out(conns, n, |api, i| async move {
        let body = api.expect(StatusCode::CREATED, Method::POST, "/api/v1/nodes", node(i)).await;
        let created: Value = serde_json::from_slice(&body).expect("node JSON");
        if created["status"]["conditions"].as_array().is_none_or(Vec::is_empty) {
            let path = format!("/api/v1/nodes/node-{i:05}/status");
            let patch = json!({ "status": node_status() }).to_string();
            api.expect_with(
                StatusCode::OK,
                Method::PATCH,
                &path,
                "application/merge-patch+json",
                patch,
            )
            .await;
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Measurement

/// Watches the bench namespace's pods from `rv`; sends (pod name, node) when a pod is first
/// seen with a `spec.nodeName`, stamped with the time the event arrived.
fn watch_bindings(
    api: &Api,
    rv: String,
) -> tokio::sync::mpsc::UnboundedReceiver<(String, String, Instant)> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let api = api.clone();
    tokio::spawn(async move {
        let path = format!(
            "/api/v1/namespaces/{NAMESPACE}/pods?watch=1&resourceVersion={rv}\
             &allowWatchBookmarks=false&timeoutSeconds=3600"
        );
        let resp = api.start(Method::GET, &path, None, "").await;
        assert_eq!(resp.status(), StatusCode::OK, "pod watch");
        let mut body = resp.into_body();
        let mut buf: Vec<u8> = Vec::new();
        let mut bound = HashSet::new();
        while let Some(Ok(frame)) = body.frame().await {
            let Ok(data) = frame.into_data() else { continue };
            let now = Instant::now();
            buf.extend_from_slice(&data);
            while let Some(end) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=end).collect();
                let Ok(event) = serde_json::from_slice::<Value>(&line) else { continue };
                let pod = &event["object"];
                let (Some(name), Some(node)) =
                    (pod["metadata"]["name"].as_str(), pod["spec"]["nodeName"].as_str())
                else {
                    continue;
                };
                if bound.insert(name.to_string())
                    && tx.send((name.to_string(), node.to_string(), now)).is_err()
                {
                    return;
                }
            }
        }
    });
    rx
}

struct Result {
    nodes: usize,
    pods: usize,
    node_load_s: f64,
    create_rate: f64,
    throughput: f64,
    end_to_end: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_ms_per_pod: f64,
    nodes_used: usize,
    zones_used: usize,
}

async fn run(nodes: usize, pods: usize) -> Result {
    let server = Server::start().await;
    let conns = server.conns(CONNS).await;
    let admin = conns[0].clone();
    namespace(&admin, NAMESPACE).await;
    let t0 = Instant::now();
    create_nodes(&conns, nodes).await;
    let node_load_s = t0.elapsed().as_secs_f64();
    // Give the scheduler's node informer time to take in the last nodes (there is nothing
    // to observe it by from outside); the spread of the bindings below checks it did.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let list = admin
        .expect(
            StatusCode::OK,
            Method::GET,
            &format!("/api/v1/namespaces/{NAMESPACE}/pods"),
            String::new(),
        )
        .await;
    let list: Value = serde_json::from_slice(&list).expect("list JSON");
    let rv =
        list["metadata"]["resourceVersion"].as_str().expect("list resourceVersion").to_string();
    let mut bindings = watch_bindings(&admin, rv);

    let cpu = server.cpu_seconds();
    let path: Arc<str> = format!("/api/v1/namespaces/{NAMESPACE}/pods").into();
    let created_at = Instant::now();
    let starts = fan_out(&conns, pods, move |api, i| {
        let path = path.clone();
        async move {
            api.expect(StatusCode::CREATED, Method::POST, &path, pod(&format!("p-{i:05}"))).await;
        }
    })
    .await;
    let create_rate = pods as f64 / created_at.elapsed().as_secs_f64();
    let started: HashMap<String, Instant> =
        starts.into_iter().map(|(i, t)| (format!("p-{i:05}"), t)).collect();

    let mut latencies = Vec::new();
    let mut used_nodes = HashSet::new();
    let (mut first, mut last) = (None, created_at);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    while latencies.len() < pods {
        let Ok(Some((name, node, at))) = tokio::time::timeout_at(deadline, bindings.recv()).await
        else {
            panic!("only {} of {pods} pods bound:\n{}", latencies.len(), server.log());
        };
        let Some(start) = started.get(&name) else { continue };
        latencies.push(at.duration_since(*start).as_secs_f64() * 1e3);
        used_nodes.insert(node);
        first.get_or_insert(at);
        last = last.max(at);
    }
    let cpu = server.cpu_seconds() - cpu;
    let first = first.unwrap_or(created_at);
    latencies.sort_by(f64::total_cmp);
    let zones_used: HashSet<usize> = used_nodes
        .iter()
        .filter_map(|n| n.strip_prefix("node-")?.parse::<usize>().ok())
        .map(|i| i % ZONES)
        .collect();
    Result {
        nodes,
        pods,
        node_load_s,
        create_rate,
        throughput: pods as f64 / last.duration_since(first).as_secs_f64().max(1e-9),
        end_to_end: pods as f64 / last.duration_since(created_at).as_secs_f64().max(1e-9),
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        cpu_ms_per_pod: cpu * 1e3 / pods as f64,
        nodes_used: used_nodes.len(),
        zones_used: zones_used.len(),
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| default.to_vec())
}

async fn bench() {
    let sizes = env_list("SKERRY_BENCH_NODES", &[1_000, 5_000]);
    let pods = env_list("SKERRY_BENCH_PODS", &[2_000])[0];
    println!("load average at start: {}", load_average());
    for nodes in sizes {
        let r = run(nodes, pods).await;
        println!("--- {} nodes, {} pods ---", r.nodes, r.pods);
        println!("  nodes created in            {:>10.1} s", r.node_load_s);
        println!("  pod creates ({CLIENTS} clients)     {:>10.1} pods/s", r.create_rate);
        println!(
            "  scheduling throughput       {:>10.1} pods/s (first → last binding)",
            r.throughput
        );
        println!(
            "  end to end                  {:>10.1} pods/s (first create → last binding)",
            r.end_to_end
        );
        println!("  create → bound, p50         {:>10.1} ms", r.p50_ms);
        println!("  create → bound, p99         {:>10.1} ms", r.p99_ms);
        println!(
            "  server CPU per pod          {:>10.2} ms (creates + scheduling + bindings)",
            r.cpu_ms_per_pod
        );
        println!("  nodes used / zones used     {:>10} / {}", r.nodes_used, r.zones_used);
        println!("  load average: {}", load_average());
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(bench());
}
