//! The store conformance suite against a real etcd (Debian's `etcd`, 3.4), one fresh etcd
//! process per case on free loopback ports, killed when the case ends.

#[macro_use]
mod conformance;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use conformance::Backend;
use skerry_control::store::etcd::EtcdStore;
use skerry_control::store::Store;

/// A running etcd with its data dir; killed and removed on drop.
struct EtcdProcess {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts etcd on fresh ports and connects to it; retries if a port was taken meanwhile.
async fn start_etcd() -> Option<(EtcdProcess, EtcdStore)> {
    let bin = skerry_testkit::require_program(&["/usr/bin/etcd"])?;
    for _attempt in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let port = skerry_testkit::free_port();
        let client = format!("http://127.0.0.1:{port}");
        let peer = format!("http://127.0.0.1:{}", skerry_testkit::free_port());
        let log_path = dir.path().join("etcd.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(&bin)
            .args(["--name", "default", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("default={peer}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting etcd");
        let mut process = EtcdProcess { child, _dir: dir };
        // Our etcd logs that it serves on our port only once its own listener is up, so a port
        // taken by someone else (even another test's etcd) is never mistaken for ours.
        let serving = format!("client requests on 127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if process.child.try_wait().unwrap().is_some() {
                break;
            }
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            if log.contains(&serving) {
                if let Ok(store) = EtcdStore::connect(std::slice::from_ref(&client), None).await {
                    if store.status().await.is_ok() {
                        return Some((process, store));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    panic!("etcd did not become healthy");
}

fn etcd() -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<Backend>> + Send>> {
    Box::pin(async {
        let (process, store) = start_etcd().await?;
        Some(Backend { store: Arc::new(store), guard: Box::new(process) })
    })
}

conformance_tests!(etcd);
