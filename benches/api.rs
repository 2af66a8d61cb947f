//! API server benchmark: `skerry server` over HTTPS against Skerry's own store through its etcd
//! v3 gRPC API, the same workloads side by side in one run, so the API layer's overhead
//! (TLS, authentication, admission, defaulting, JSON, the watch cache) shows as a ratio. There
//! is no Kubernetes apiserver on this machine to compare with; the store is the floor.
//!
//! The API side is `skerry server --disable-agent --disable-scheduler` with every controller
//! that reacts to pods disabled (only the namespace, service account and root CA publisher
//! controllers run: pods need their namespace's `default` account). The store side is a
//! `skerry etcd` on a data dir of its own on the same disk (the server cannot expose its
//! embedded store), fed the bytes the API server stores for the same pod, under the same keys.
//! Both are HTTP/2 (gRPC on plain TCP for the store, h2 over TLS with the admin client
//! certificate for the API), with min(N, 16) connections for N concurrent clients.
//!
//! Run: `cargo bench --bench api` (about two minutes; not part of the test suite).
//! `SKERRY_BENCH_SECONDS` sets the length of each timed phase (default 3);
//! `SKERRY_BENCH_ONLY=create` stops after the create phases; `SKERRY_BENCH_SKERRY=PATH` runs
//! another `skerry` binary (e.g. a saved build, to compare two builds interleaved).

use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use etcd_client::{Client, Compare, CompareOp, GetOptions, KvClient, Txn, TxnOp, WatchOptions};
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};

mod support;
use support::{admin_tls, free_port, load_average, namespace, percentile, Api};

/// Concurrent clients of the create workload.
const CREATE_CLIENTS: [usize; 3] = [1, 16, 64];
/// Concurrent clients of the single-object get.
const GET_CLIENTS: usize = 16;
/// Objects in the list workloads.
const LIST_SIZES: [usize; 2] = [1_000, 10_000];
/// Page size of the paginated lists (kubectl's `--chunk-size` default).
const PAGE: usize = 500;
const WATCHERS: usize = 1000;
const WATCH_EVENTS: usize = 50;
/// Most HTTP/2 connections a workload opens (the server allows 200 streams on each).
const MAX_CONNS: usize = 16;
/// The annotation carrying an update's send time in the watch workload.
const SENT: &str = "bench-sent";
/// Controllers off in the API server: every one that watches pods (and the rest that would
/// only add noise). `namespace`, `serviceaccount` and `root-ca-cert-publisher` stay on.
const DISABLED_CONTROLLERS: &str = "replicaset,replicationcontroller,endpoint,endpointslice,\
garbagecollector,nodeipam,nodelifecycle,deployment,csrsigning,job,cronjob,ttl-after-finished,\
disruption,statefulset,daemonset,podgc";

/// A small pod as a user would post it (the server adds defaults, a service account volume and
/// managed fields: about 2 KB stored).
fn pod(name: &str) -> String {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "labels": { "app": "bench", "tier": "web" } },
        "spec": {
            "containers": [{
                "name": "app",
                "image": "registry.example/bench/app:1.0",
                "ports": [{ "containerPort": 8080 }],
                "resources": { "requests": { "cpu": "10m", "memory": "16Mi" } }
            }]
        }
    })
    .to_string()
}

// ---------------------------------------------------------------------------------------------
// Processes under test

/// A process under test, killed on drop with its temp dir.
struct Proc {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// User + system CPU time of the process so far, in seconds.
    fn cpu_seconds(&self) -> f64 {
        support::cpu_seconds(self.child.id())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn spawn(prefix: &str, args: &[&str], data_dir_flag: &str) -> (Proc, PathBuf) {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log file");
        let bin = std::env::var("SKERRY_BENCH_SKERRY")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_skerry").to_string());
        let child = Command::new(bin)
            .args(args)
            .arg(data_dir_flag)
            .arg(&data)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting skerry");
        (Proc { child, dir }, data)
    }
}

struct Store {
    proc: Proc,
    endpoint: String,
}

impl Store {
    fn start() -> Store {
        let endpoint = format!("http://127.0.0.1:{}", free_port());
        let (proc, _) = Proc::spawn(
            "skerry-apibench-etcd",
            &["etcd", "--listen-client-urls", &endpoint],
            "--data-dir",
        );
        Store { proc, endpoint }
    }

    async fn connect(&self) -> Client {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut c) = Client::connect([&self.endpoint], None).await {
                if c.get("ready", None).await.is_ok() {
                    return c;
                }
            }
            assert!(Instant::now() < deadline, "skerry etcd did not start:\n{}", self.proc.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `n` connections' KV clients (no cap on response size: a 10k-pod range is ~20 MB).
    async fn kv(&self, n: usize) -> Vec<KvClient> {
        let mut v = Vec::new();
        for _ in 0..n {
            v.push(self.connect().await.kv_client().max_decoding_message_size(usize::MAX));
        }
        v
    }
}

/// `skerry server` on a loopback port, and the admin's TLS settings.
struct ApiServer {
    proc: Proc,
    /// `https://127.0.0.1:<port>`.
    url: String,
    tls: Arc<rustls::ClientConfig>,
}

impl ApiServer {
    async fn start() -> ApiServer {
        let args = [
            "server",
            "--disable-agent",
            "--disable-scheduler",
            "--disable-controllers",
            DISABLED_CONTROLLERS,
            "--bind-address",
            "127.0.0.1",
            "--https-listen-port",
            "0",
        ];
        let (mut proc, data) = Proc::spawn("skerry-apibench-server", &args, "--data-dir");
        let kubeconfig = data.join("admin.kubeconfig");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = proc.child.try_wait() {
                panic!("skerry server exited with {status}:\n{}", proc.log());
            }
            let url = std::fs::read_to_string(&kubeconfig).ok().and_then(|text| {
                text.lines().find_map(|l| l.trim().strip_prefix("server: ").map(String::from))
            });
            if let Some(url) = url {
                let server = ApiServer { url, tls: admin_tls(&data), proc };
                if let Ok(api) = server.try_connect().await {
                    if api.call(Method::GET, "/readyz", None, "").await.0 == StatusCode::OK {
                        return server;
                    }
                }
                proc = server.proc;
            }
            assert!(Instant::now() < deadline, "server not ready in time:\n{}", proc.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn try_connect(&self) -> std::io::Result<Api> {
        support::connect(&self.url, &self.tls).await
    }

    /// `n` HTTP/2 connections.
    async fn conns(&self, n: usize) -> Vec<Api> {
        support::connect_many(&self.url, &self.tls, n).await
    }
}

fn phase() -> Duration {
    let secs = std::env::var("SKERRY_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    Duration::from_secs(secs)
}

/// Operations per second, latency percentiles and the server's CPU per operation.
#[derive(Clone, Copy)]
struct Stats {
    ops: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us_per_op: f64,
}

/// Unique object numbers across phases.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Runs `op` from `concurrency` tasks over `conns` (round-robin) for one phase.
async fn run<C, F, Fut>(server: &Proc, conns: &[C], concurrency: usize, op: F) -> Stats
where
    C: Clone + Send + 'static,
    F: Fn(C, u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = ()> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let cpu = server.cpu_seconds();
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let conn = conns[t % conns.len()].clone();
            let (stop, op) = (stop.clone(), op.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
                    let t0 = Instant::now();
                    op(conn.clone(), id).await;
                    lat.push(t0.elapsed().as_secs_f64() * 1e3);
                }
                lat
            })
        })
        .collect();
    tokio::time::sleep(phase()).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("worker"));
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = server.cpu_seconds() - cpu;
    lat.sort_by(f64::total_cmp);
    let n = lat.len().max(1) as f64;
    Stats {
        ops: lat.len() as f64 / secs,
        p50_ms: percentile(&lat, 0.50),
        p99_ms: percentile(&lat, 0.99),
        cpu_us_per_op: cpu * 1e6 / n,
    }
}

fn row(name: &str, unit: &str, api: f64, store: f64) {
    println!("{name:<44} {api:>10.1} {store:>10.1}  {unit:<10} {:>6.2}", api / store);
}

/// The throughput, latency and CPU rows of one workload.
fn rows(name: &str, api: Stats, store: Stats) {
    row(&format!("{name} (ops/s)"), "ops/s", api.ops, store.ops);
    row(&format!("{name}, p50"), "ms", api.p50_ms, store.p50_ms);
    row(&format!("{name}, p99"), "ms", api.p99_ms, store.p99_ms);
    row(&format!("{name}, server CPU per op"), "µs", api.cpu_us_per_op, store.cpu_us_per_op);
}

/// The send time (ns since `base`) in an event or stored object: the `bench-sent` annotation,
/// found without parsing the JSON (the same cheap scan on both sides).
fn sent_time(bytes: &[u8]) -> Option<u64> {
    let needle = format!("\"{SENT}\":\"");
    let at = bytes.windows(needle.len()).position(|w| w == needle.as_bytes())? + needle.len();
    let digits: Vec<u8> = bytes[at..].iter().take_while(|b| b.is_ascii_digit()).copied().collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

fn latency_summary(name: &str, rx: &mut tokio::sync::mpsc::UnboundedReceiver<f64>) -> (f64, f64) {
    let mut lat = Vec::new();
    while let Ok(l) = rx.try_recv() {
        lat.push(l);
    }
    let expected = WATCHERS * WATCH_EVENTS;
    if lat.len() < expected {
        println!("!! {name}: {} of {expected} watch events arrived", lat.len());
    }
    lat.sort_by(f64::total_cmp);
    (percentile(&lat, 0.50), percentile(&lat, 0.99))
}

// ---------------------------------------------------------------------------------------------
// Workloads through the API server

fn pods_path(ns: &str) -> String {
    format!("/api/v1/namespaces/{ns}/pods")
}

/// Creates namespace `ns` and waits for its `default` service account (pods need it).
/// Creates of new pods in namespace `bench` from `concurrency` clients.
async fn api_create(server: &ApiServer, concurrency: usize) -> Stats {
    let conns = server.conns(concurrency.min(MAX_CONNS)).await;
    let path: Arc<str> = pods_path("bench").into();
    run(&server.proc, &conns, concurrency, move |api: Api, id| {
        let path = path.clone();
        async move {
            api.expect(StatusCode::CREATED, Method::POST, &path, pod(&format!("c-{id}"))).await;
        }
    })
    .await
}

/// Gets of one pod from `GET_CLIENTS` clients.
async fn api_get(server: &ApiServer) -> Stats {
    let conns = server.conns(GET_CLIENTS).await;
    let path: Arc<str> = format!("{}/one", pods_path("bench")).into();
    run(&server.proc, &conns, GET_CLIENTS, move |api: Api, _| {
        let path = path.clone();
        async move {
            api.expect(StatusCode::OK, Method::GET, &path, String::new()).await;
        }
    })
    .await
}

/// Sequential lists of namespace `ns` (`paged`: `limit=PAGE` with continue tokens).
async fn api_list(server: &ApiServer, ns: &str, paged: bool) -> Stats {
    let conns = server.conns(1).await;
    let ns: Arc<str> = ns.into();
    run(&server.proc, &conns, 1, move |api: Api, _| {
        let ns = ns.clone();
        async move {
            if paged {
                api_list_paged(&api, &ns).await;
            } else {
                api.expect(StatusCode::OK, Method::GET, &pods_path(&ns), String::new()).await;
            }
        }
    })
    .await
}

/// Creates `n` pods named `p-00000`… in `ns`, 64 at a time.
async fn api_load(conns: &[Api], ns: &str, n: usize) {
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..64)
        .map(|t| {
            let (api, next, path) = (conns[t % conns.len()].clone(), next.clone(), pods_path(ns));
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if i >= n {
                        break;
                    }
                    api.expect(StatusCode::CREATED, Method::POST, &path, pod(&format!("p-{i:05}")))
                        .await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("loader");
    }
}

/// Reads every page of a `limit=PAGE` list (served from the store with continue tokens, as
/// kubectl does); returns the number of pages.
async fn api_list_paged(api: &Api, ns: &str) -> usize {
    let mut pages = 0;
    let mut cont = String::new();
    loop {
        let path = format!("{}?limit={PAGE}{cont}", pods_path(ns));
        let body = api.expect(StatusCode::OK, Method::GET, &path, String::new()).await;
        pages += 1;
        // `metadata` follows `items` in the server's (sorted) JSON: scan from the end.
        let needle = b"\"continue\":\"";
        let Some(at) = body.windows(needle.len()).rposition(|w| w == needle) else { break };
        let token: String = body[at + needle.len()..]
            .iter()
            .take_while(|&&b| b != b'"')
            .map(|&b| b as char)
            .collect();
        if token.is_empty() {
            break;
        }
        cont = format!(
            "&continue={}",
            token.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D")
        );
    }
    pages
}

/// Update-to-event latency over `WATCHERS` watches of one pod; returns (p50, p99) in ms.
async fn api_watch(server: &ApiServer) -> (f64, f64) {
    let conns = server.conns(MAX_CONNS).await;
    let api = &conns[0];
    namespace(api, "watch").await;
    let created =
        api.expect(StatusCode::CREATED, Method::POST, &pods_path("watch"), pod("w")).await;
    let created: Value = serde_json::from_slice(&created).expect("pod JSON");
    let rv = created["metadata"]["resourceVersion"].as_str().expect("resourceVersion").to_string();
    let base = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<f64>();
    let mut watchers = Vec::new();
    for w in 0..WATCHERS {
        let path = format!("{}?watch=1&resourceVersion={rv}", pods_path("watch"));
        let resp = conns[w % conns.len()].start(Method::GET, &path, None, "").await;
        assert_eq!(resp.status(), StatusCode::OK, "watch {w}");
        let tx = tx.clone();
        watchers.push(tokio::spawn(async move {
            let mut body = resp.into_body();
            let mut buf: Vec<u8> = Vec::new();
            let mut seen = 0;
            while seen < WATCH_EVENTS {
                let Some(Ok(frame)) = body.frame().await else { return };
                let Ok(data) = frame.into_data() else { continue };
                buf.extend_from_slice(&data);
                while let Some(end) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=end).collect();
                    if let Some(sent) = sent_time(&line) {
                        let now = base.elapsed().as_nanos() as u64;
                        let _ = tx.send(now.saturating_sub(sent) as f64 / 1e6);
                        seen += 1;
                    }
                }
            }
        }));
    }
    drop(tx);
    let path = format!("{}/w", pods_path("watch"));
    for _ in 0..WATCH_EVENTS {
        let sent = base.elapsed().as_nanos() as u64;
        let patch = json!({ "metadata": { "annotations": { SENT: sent.to_string() } } });
        let (status, body) = api
            .call(Method::PATCH, &path, Some("application/merge-patch+json"), patch.to_string())
            .await;
        assert_eq!(status, StatusCode::OK, "patch: {}", String::from_utf8_lossy(&body));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for mut t in watchers {
        if tokio::time::timeout_at(deadline, &mut t).await.is_err() {
            t.abort();
        }
    }
    latency_summary("api", &mut rx)
}

// ---------------------------------------------------------------------------------------------
// The same workloads against the store

/// `/registry/pods/<ns>/<name>`, the API server's key layout.
fn pod_key(ns: &str, name: &str) -> String {
    format!("/registry/pods/{ns}/{name}")
}

/// Creates (put if absent, as the API server asks its store) of the stored pod bytes.
async fn store_create(store: &Store, value: &Bytes, concurrency: usize) -> Stats {
    let conns = store.kv(concurrency.min(MAX_CONNS)).await;
    let value = value.clone();
    run(&store.proc, &conns, concurrency, move |mut kv: KvClient, id| {
        let value = value.clone();
        async move {
            let key = pod_key("bench", &format!("c-{id}"));
            let txn = Txn::new()
                .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key, value.to_vec(), None)]);
            assert!(kv.txn(txn).await.expect("create txn").succeeded(), "key exists");
        }
    })
    .await
}

async fn store_get(store: &Store, value: &Bytes) -> Stats {
    let conns = store.kv(GET_CLIENTS).await;
    let key = pod_key("bench", "one");
    conns[0].clone().put(key.clone(), value.to_vec(), None).await.expect("put");
    run(&store.proc, &conns, GET_CLIENTS, move |mut kv: KvClient, _| {
        let key = key.clone();
        async move {
            assert_eq!(kv.get(key, None).await.expect("get").kvs().len(), 1);
        }
    })
    .await
}

/// Loads `n` pods under `ns` (100-put transactions).
async fn store_load(store: &Store, value: &Bytes, ns: &str, n: usize) {
    let mut kv = store.kv(1).await.remove(0);
    for batch in (0..n).step_by(100) {
        let ops: Vec<TxnOp> = (batch..(batch + 100).min(n))
            .map(|i| TxnOp::put(pod_key(ns, &format!("p-{i:05}")), value.to_vec(), None))
            .collect();
        kv.txn(Txn::new().and_then(ops)).await.expect("load txn");
    }
}

/// Sequential ranges of `ns`'s prefix (`paged`: `PAGE` keys at a time, like the API's paged
/// list); asserts `n` keys.
async fn store_list(store: &Store, ns: &str, n: usize, paged: bool) -> Stats {
    let conns = store.kv(1).await;
    let prefix = format!("/registry/pods/{ns}/");
    run(&store.proc, &conns, 1, move |mut kv: KvClient, _| {
        let prefix = prefix.clone();
        async move {
            let mut end = prefix.clone().into_bytes();
            if let Some(last) = end.last_mut() {
                *last += 1;
            }
            let mut start = prefix.into_bytes();
            let (mut total, mut revision) = (0, 0);
            loop {
                let mut opts = GetOptions::new().with_range(end.clone()).with_revision(revision);
                if paged {
                    opts = opts.with_limit(PAGE as i64);
                }
                let r = kv.get(start.clone(), Some(opts)).await.expect("range");
                revision = r.header().map(|h| h.revision()).unwrap_or(0);
                total += r.kvs().len();
                match r.kvs().last() {
                    Some(last) if r.more() => {
                        start = last.key().to_vec();
                        start.push(0);
                    }
                    _ => break,
                }
            }
            assert_eq!(total, n, "range size");
        }
    })
    .await
}

/// Put-to-event latency over `WATCHERS` etcd watches of one key; returns (p50, p99) in ms.
async fn store_watch(store: &Store, template: &Value) -> (f64, f64) {
    let mut conns = Vec::new();
    for _ in 0..MAX_CONNS {
        conns.push(store.connect().await);
    }
    let key = pod_key("watch", "w");
    let base = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<f64>();
    let mut watchers = Vec::new();
    for w in 0..WATCHERS {
        let mut c = conns[w % conns.len()].clone();
        let mut stream = c.watch(key.clone(), Some(WatchOptions::new())).await.expect("watch");
        let created = stream.message().await.expect("watch created").expect("created");
        assert!(created.created());
        let tx = tx.clone();
        watchers.push(tokio::spawn(async move {
            let mut seen = 0;
            while seen < WATCH_EVENTS {
                let Ok(Some(resp)) = stream.message().await else { return };
                for ev in resp.events() {
                    if let Some(sent) = ev.kv().and_then(|kv| sent_time(kv.value())) {
                        let now = base.elapsed().as_nanos() as u64;
                        let _ = tx.send(now.saturating_sub(sent) as f64 / 1e6);
                        seen += 1;
                    }
                }
            }
        }));
    }
    drop(tx);
    let mut kv = conns[0].kv_client();
    let mut obj = template.clone();
    for _ in 0..WATCH_EVENTS {
        let sent = base.elapsed().as_nanos() as u64;
        // The object with its new annotation, serialised as the API server would store it.
        obj["metadata"]["annotations"] = json!({ SENT: sent.to_string() });
        let value = serde_json::to_vec(&obj).expect("pod JSON");
        kv.put(key.clone(), value, None).await.expect("put");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for mut t in watchers {
        if tokio::time::timeout_at(deadline, &mut t).await.is_err() {
            t.abort();
        }
    }
    latency_summary("store", &mut rx)
}

// ---------------------------------------------------------------------------------------------

async fn bench() {
    let store = Store::start();
    let server = ApiServer::start().await;
    let _ = store.connect().await;
    let admin = server.conns(1).await.remove(0);
    for ns in ["bench", "list-1k", "list-10k"] {
        namespace(&admin, ns).await;
    }
    // The bytes the API server stores for a pod (its JSON without resourceVersion), so the
    // store side moves the same payload.
    let one =
        admin.expect(StatusCode::CREATED, Method::POST, &pods_path("bench"), pod("one")).await;
    let mut stored: Value = serde_json::from_slice(&one).expect("pod JSON");
    if let Some(meta) = stored["metadata"].as_object_mut() {
        meta.remove("resourceVersion");
    }
    let value = Bytes::from(serde_json::to_vec(&stored).expect("pod JSON"));
    println!("load average at start: {}", load_average());
    println!("stored pod: {} bytes; phases of {} s", value.len(), phase().as_secs());
    println!("{:<44} {:>10} {:>10}  {:<10} {:>6}", "workload", "api", "store", "unit", "ratio");
    for c in CREATE_CLIENTS {
        let a = api_create(&server, c).await;
        let s = store_create(&store, &value, c).await;
        rows(&format!("create, {c} clients"), a, s);
    }
    if std::env::var("SKERRY_BENCH_ONLY").as_deref() == Ok("create") {
        println!("load average at end: {}", load_average());
        return;
    }
    let (a, s) = (api_get(&server).await, store_get(&store, &value).await);
    rows(&format!("get 1 pod, {GET_CLIENTS} clients"), a, s);
    for (n, ns) in LIST_SIZES.iter().zip(["list-1k", "list-10k"]) {
        let t0 = Instant::now();
        api_load(&server.conns(MAX_CONNS).await, ns, *n).await;
        let load_s = t0.elapsed().as_secs_f64();
        store_load(&store, &value, ns, *n).await;
        // The cache must hold everything before the first timed list; also checks the count.
        let list = admin.expect(StatusCode::OK, Method::GET, &pods_path(ns), String::new()).await;
        let list: Value = serde_json::from_slice(&list).expect("list JSON");
        assert_eq!(list["items"].as_array().map(Vec::len), Some(*n), "list of {ns}");
        println!(
            "{:<44} {:>10.1} {:>10}  {:<10}",
            format!("(loading {n} pods, 64 clients)"),
            *n as f64 / load_s,
            "",
            "creates/s"
        );
        for paged in [false, true] {
            let a = api_list(&server, ns, paged).await;
            let s = store_list(&store, ns, *n, paged).await;
            let how = if paged { format!("limit={PAGE} pages") } else { "whole".to_string() };
            row(&format!("list {n} pods, {how}, p50"), "ms", a.p50_ms, s.p50_ms);
            row(&format!("list {n} pods, {how}, p99"), "ms", a.p99_ms, s.p99_ms);
            row(
                &format!("list {n} pods, {how}, server CPU"),
                "ms",
                a.cpu_us_per_op / 1e3,
                s.cpu_us_per_op / 1e3,
            );
        }
    }
    let a = api_watch(&server).await;
    let s = store_watch(&store, &stored).await;
    row(&format!("watch latency p50, {WATCHERS} watchers"), "ms", a.0, s.0);
    row(&format!("watch latency p99, {WATCHERS} watchers"), "ms", a.1, s.1);
    println!("(ratio = api/store: below 1 is worse for ops/s, above 1 is worse for ms and µs)");
    println!("load average at end: {}", load_average());
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(bench());
}
