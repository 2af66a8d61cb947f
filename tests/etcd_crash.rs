//! Crash safety of `skerry etcd`: a write acknowledged to a client is on disk. Concurrent
//! writers record every acknowledged put, the server is SIGKILLed mid-stream, restarted on the
//! same data dir, and every acknowledged write must be there with its revision.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::etcd::SkerryEtcd;
use etcd_client::{Client, GetOptions};

/// Concurrent writers (each on its own connection).
const WRITERS: usize = 16;
/// Acknowledged writes to wait for before the kill.
const ACKED_BEFORE_KILL: usize = 400;

/// One acknowledged put: key, value, revision.
type Acked = (String, String, i64);

async fn writer(endpoint: String, w: usize, acked: Arc<Mutex<Vec<Acked>>>) {
    let Ok(mut client) = Client::connect([endpoint], None).await else { return };
    for i in 0.. {
        let key = format!("/crash/{w:02}/{i:06}");
        let value = format!("w{w}-i{i}");
        let put = client.put(key.clone(), value.clone(), None);
        match tokio::time::timeout(Duration::from_secs(10), put).await {
            Ok(Ok(resp)) => {
                let rev = resp.header().expect("put response header").revision();
                acked.lock().unwrap().push((key, value, rev));
            }
            // The server died: everything not acknowledged may be lost.
            _ => return,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_write_survives_sigkill() {
    let mut server = SkerryEtcd::start();
    let endpoint = server.endpoint().to_string();
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let tasks: Vec<_> =
        (0..WRITERS).map(|w| tokio::spawn(writer(endpoint.clone(), w, acked.clone()))).collect();

    // Kill while the writers are busy.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < ACKED_BEFORE_KILL {
        assert!(tokio::time::Instant::now() < deadline, "writers made no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= ACKED_BEFORE_KILL);

    server.restart();
    let mut client = Client::connect([server.endpoint()], None).await.unwrap();
    let found = client.get("/crash/", Some(GetOptions::new().with_prefix())).await.unwrap();
    let stored: BTreeMap<String, (String, i64)> = found
        .kvs()
        .iter()
        .map(|kv| {
            let key = kv.key_str().unwrap().to_string();
            (key, (kv.value_str().unwrap().to_string(), kv.mod_revision()))
        })
        .collect();

    // Every acknowledged write is there, with the revision the client was told.
    for (key, value, rev) in &acked {
        let got = stored.get(key).unwrap_or_else(|| panic!("acknowledged write {key} lost"));
        assert_eq!(&got.0, value, "value of {key}");
        assert_eq!(got.1, *rev, "revision of {key}");
    }
    // Revisions are unique, and each writer's acknowledged revisions increase.
    let mut revs: Vec<i64> = acked.iter().map(|a| a.2).collect();
    revs.sort_unstable();
    revs.dedup();
    assert_eq!(revs.len(), acked.len(), "two writes acknowledged with one revision");
    for w in 0..WRITERS {
        let prefix = format!("/crash/{w:02}/");
        let mine: Vec<i64> =
            acked.iter().filter(|a| a.0.starts_with(&prefix)).map(|a| a.2).collect();
        assert!(mine.windows(2).all(|p| p[0] < p[1]), "writer {w} revisions not monotonic");
    }
    // The store continues after the highest revision it ever acknowledged.
    let max_acked = *revs.last().unwrap();
    let next = client.put("/crash/after", "x", None).await.unwrap();
    assert!(next.header().unwrap().revision() > max_acked);
}
