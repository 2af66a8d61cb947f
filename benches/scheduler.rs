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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use serde_json::{json, Value};

mod support;
use support::{list_revision, load_average, namespace, percentile, watch_events, Api, Server};

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

/// The server under test: no agent, the scheduler on, [`DISABLED_CONTROLLERS`] off.
fn server_args() -> Vec<&'static str> {
    vec!["--disable-agent", "--disable-controllers", DISABLED_CONTROLLERS]
}

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
    let mut events = watch_events(api, &format!("/api/v1/namespaces/{NAMESPACE}/pods"), &rv);
    tokio::spawn(async move {
        let mut bound = HashSet::new();
        while let Some((event, at)) = events.recv().await {
            let pod = &event["object"];
            let (Some(name), Some(node)) =
                (pod["metadata"]["name"].as_str(), pod["spec"]["nodeName"].as_str())
            else {
                continue;
            };
            if bound.insert(name.to_string())
                && tx.send((name.to_string(), node.to_string(), at)).is_err()
            {
                return;
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
    let server = Server::start("skerry-schedbench", &server_args()).await;
    let conns = server.conns(CONNS).await;
    let admin = conns[0].clone();
    namespace(&admin, NAMESPACE).await;
    let t0 = Instant::now();
    create_nodes(&conns, nodes).await;
    let node_load_s = t0.elapsed().as_secs_f64();
    // Give the scheduler's node informer time to take in the last nodes (there is nothing
    // to observe it by from outside); the spread of the bindings below checks it did.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let rv = list_revision(&admin, &format!("/api/v1/namespaces/{NAMESPACE}/pods")).await;
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
