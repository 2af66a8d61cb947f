//! Store benchmark: `skerry etcd` (SQLite behind the etcd v3 gRPC front) against Debian's
//! `etcd`, side by side on loopback with temp data dirs, driven through the gRPC API by the
//! same `etcd-client` workload. Prints each number and the ratio skerry/etcd.
//!
//! Run: `cargo bench --bench store` (about a minute; not part of the test suite). Needs
//! `/usr/bin/etcd` (Debian's `etcd-server`). `SKERRY_BENCH_SECONDS` sets the length of each
//! timed phase (default 3).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions, Txn, TxnOp, WatchOptions};

const ETCD: &str = "/usr/bin/etcd";
/// Value size of the put workload (a small Kubernetes object is a few hundred bytes).
const PUT_VALUE: usize = 256;
/// Keys in the large-range workload.
const RANGE_KEYS: usize = 10_000;
const RANGE_VALUE: usize = 100;
const WATCHERS: usize = 1000;
const WATCH_EVENTS: usize = 50;

/// A server under test, killed on drop.
struct Server {
    name: &'static str,
    endpoint: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn log_file(dir: &Path) -> std::fs::File {
    std::fs::File::create(dir.join("server.log")).expect("log file")
}

fn start_skerry() -> Server {
    let dir = tempfile::Builder::new().prefix("skerry-bench").tempdir().expect("temp dir");
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_skerry"))
        .args(["etcd", "--listen-client-urls", &endpoint, "--data-dir"])
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log_file(dir.path()))
        .spawn()
        .expect("starting skerry etcd");
    Server { name: "skerry", endpoint, child, _dir: dir }
}

fn start_etcd() -> Server {
    let dir = tempfile::Builder::new().prefix("etcd-bench").tempdir().expect("temp dir");
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let peer = format!("http://127.0.0.1:{}", free_port());
    let child = Command::new(ETCD)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--name", "bench", "--listen-client-urls", &endpoint])
        .args(["--advertise-client-urls", &endpoint, "--listen-peer-urls", &peer])
        .args(["--initial-advertise-peer-urls", &peer])
        .args(["--initial-cluster", &format!("bench={peer}")])
        .args(["--log-level", "error"])
        .stdout(Stdio::null())
        .stderr(log_file(dir.path()))
        .spawn()
        .expect("starting etcd");
    Server { name: "etcd", endpoint, child, _dir: dir }
}

async fn connect(server: &Server) -> Client {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut c) = Client::connect([&server.endpoint], None).await {
            if c.get("ready", None).await.is_ok() {
                return c;
            }
        }
        assert!(Instant::now() < deadline, "{} did not start", server.name);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `clients` connections shared round-robin by the tasks of a workload.
async fn clients(server: &Server, n: usize) -> Vec<Client> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(connect(server).await);
    }
    v
}

fn phase() -> Duration {
    let secs = std::env::var("SKERRY_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    Duration::from_secs(secs)
}

/// Runs `op` from `concurrency` tasks for one phase; returns operations per second.
async fn throughput<F, Fut>(conns: &[Client], concurrency: usize, op: F) -> f64
where
    F: Fn(Client, u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let client = conns[t % conns.len()].clone();
            let (done, stop, op) = (done.clone(), stop.clone(), op.clone());
            tokio::spawn(async move {
                let mut i = (t as u64) << 32;
                while !stop.load(Ordering::Relaxed) {
                    op(client.clone(), i).await;
                    i += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(phase()).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("worker");
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

async fn put_throughput(server: &Server, concurrency: usize) -> f64 {
    let conns = clients(server, concurrency.min(16)).await;
    throughput(&conns, concurrency, |mut c, i| async move {
        c.put(format!("/bench/put/{i:016x}"), vec![b'v'; PUT_VALUE], None).await.expect("put");
    })
    .await
}

async fn range_one(server: &Server) -> f64 {
    let conns = clients(server, 16).await;
    conns[0].clone().put("/bench/one", vec![b'v'; PUT_VALUE], None).await.expect("put");
    throughput(&conns, 16, |mut c, _| async move {
        let r = c.get("/bench/one", None).await.expect("get");
        assert_eq!(r.kvs().len(), 1);
    })
    .await
}

async fn range_many(server: &Server) -> f64 {
    let conns = clients(server, 4).await;
    let mut c = conns[0].clone();
    for batch in 0..RANGE_KEYS / 100 {
        let ops: Vec<TxnOp> = (0..100)
            .map(|i| {
                TxnOp::put(
                    format!("/bench/many/{:06}", batch * 100 + i),
                    vec![b'v'; RANGE_VALUE],
                    None,
                )
            })
            .collect();
        c.txn(Txn::new().and_then(ops)).await.expect("load txn");
    }
    let opts = GetOptions::new().with_prefix();
    throughput(&conns, 4, move |mut c, _| {
        let opts = opts.clone();
        async move {
            let r = c.get("/bench/many/", Some(opts)).await.expect("range");
            assert_eq!(r.kvs().len(), RANGE_KEYS);
        }
    })
    .await
}

/// Put-to-delivery latency over `WATCHERS` watch streams; returns (p50, p99) in ms.
async fn watch_latency(server: &Server) -> (f64, f64) {
    let conns = clients(server, 8).await;
    let base = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<f64>();
    let mut ready = Vec::new();
    for w in 0..WATCHERS {
        let mut c = conns[w % conns.len()].clone();
        let mut stream = c.watch("/bench/watch", Some(WatchOptions::new())).await.expect("watch");
        let created = stream.message().await.expect("watch created").expect("created");
        assert!(created.created());
        let tx = tx.clone();
        ready.push(tokio::spawn(async move {
            let mut seen = 0;
            while seen < WATCH_EVENTS {
                let Ok(Some(resp)) = stream.message().await else { return };
                for ev in resp.events() {
                    let sent: u64 = ev
                        .kv()
                        .and_then(|kv| kv.value_str().ok())
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    let now = base.elapsed().as_nanos() as u64;
                    let _ = tx.send(now.saturating_sub(sent) as f64 / 1e6);
                    seen += 1;
                }
            }
        }));
    }
    drop(tx);
    let mut c = conns[0].clone();
    for _ in 0..WATCH_EVENTS {
        let sent = base.elapsed().as_nanos() as u64;
        c.put("/bench/watch", sent.to_string(), None).await.expect("put");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for t in ready {
        let _ = tokio::time::timeout_at(deadline, t).await;
    }
    let mut lat = Vec::new();
    while let Ok(l) = rx.try_recv() {
        lat.push(l);
    }
    assert!(!lat.is_empty(), "no watch events from {}", server.name);
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize];
    (pct(0.50), pct(0.99))
}

fn row(name: &str, unit: &str, skerry: f64, etcd: f64) {
    println!("{name:<34} {skerry:>12.1} {etcd:>12.1}  {unit:<8} {:>6.2}", skerry / etcd);
}

fn main() {
    if !Path::new(ETCD).exists() {
        eprintln!("SKIPPED: {ETCD} not installed (apt-get install etcd-server)");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let skerry = start_skerry();
        let etcd = start_etcd();
        let _ = (connect(&skerry).await, connect(&etcd).await);
        println!(
            "{:<34} {:>12} {:>12}  {:<8} {:>6}",
            "workload", "skerry", "etcd", "unit", "ratio"
        );
        for c in [1, 16, 256] {
            let s = put_throughput(&skerry, c).await;
            let e = put_throughput(&etcd, c).await;
            row(&format!("put, {c} concurrent clients"), "ops/s", s, e);
        }
        let (s, e) = (range_one(&skerry).await, range_one(&etcd).await);
        row("range 1 key, 16 concurrent", "ops/s", s, e);
        let (s, e) = (range_many(&skerry).await, range_many(&etcd).await);
        row("range 10k keys, 4 concurrent", "ops/s", s, e);
        let (s, e) = (watch_latency(&skerry).await, watch_latency(&etcd).await);
        row(&format!("watch latency p50, {WATCHERS} watchers"), "ms", s.0, e.0);
        row(&format!("watch latency p99, {WATCHERS} watchers"), "ms", s.1, e.1);
        println!("(ratio = skerry/etcd: above 1 is better for ops/s, worse for latency)");
    });
}
