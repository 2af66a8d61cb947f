//! The refresher over a real local cache and real volume directories, with in-memory objects
//! and an injected clock for token ages.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{ConfigMap, HostPathVolumeSource, Pod, Secret};
use serde_json::json;

use super::*;
use crate::objects::{MemoryObjects, ObjectError};

/// A clock the test moves forward by hand.
#[derive(Clone)]
struct ManualClock(Arc<Mutex<Instant>>);

impl ManualClock {
    fn new() -> Self {
        Self(Arc::new(Mutex::new(Instant::now())))
    }

    fn advance(&self, by: Duration) {
        *self.0.lock().expect("clock") += by;
    }

    fn clock(&self) -> crate::volumes::Clock {
        let now = self.0.clone();
        Arc::new(move || *now.lock().expect("clock"))
    }
}

/// The server is away and nothing is cached: every read fails.
struct Offline;

#[async_trait]
impl ObjectSource for Offline {
    async fn config_map(&self, _: &str, _: &str) -> Result<Option<ConfigMap>, ObjectError> {
        Err(ObjectError::Unavailable("connection refused".into()))
    }
    async fn secret(&self, _: &str, _: &str) -> Result<Option<Secret>, ObjectError> {
        Err(ObjectError::Unavailable("connection refused".into()))
    }
    async fn service_account_token(
        &self,
        _: &Pod,
        _: &str,
        _: Option<&str>,
        _: i64,
    ) -> Result<String, ObjectError> {
        Err(ObjectError::Unavailable("connection refused".into()))
    }
    async fn persistent_volume(
        &self,
        _: &Pod,
        _: &str,
    ) -> Result<Option<HostPathVolumeSource>, ObjectError> {
        Ok(None)
    }
}

struct Fixture {
    _tmp: tempfile::TempDir,
    pods: PathBuf,
    cache: LocalCache,
    volumes: VolumeManager,
    objects: Arc<MemoryObjects>,
    clock: ManualClock,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cache = LocalCache::open(&tmp.path().join("cache.db")).expect("cache");
        let pods = tmp.path().join("pods");
        let clock = ManualClock::new();
        let volumes = VolumeManager::new(pods.clone()).with_clock(clock.clock());
        Self { _tmp: tmp, pods, cache, volumes, objects: Arc::default(), clock }
    }

    fn refresher(&self, objects: Arc<dyn ObjectSource>) -> VolumeRefresher {
        VolumeRefresher::new(self.cache.clone(), self.volumes.clone(), objects)
    }

    fn put_config_map(&self, value: &str) {
        let cm = serde_json::from_value(json!({
            "metadata": {"name": "settings", "namespace": "shop"}, "data": {"level": value}
        }))
        .expect("cm");
        self.objects.put_config_map(cm);
    }

    /// Caches the pod and sets its volumes up, as the pod manager and its worker do.
    async fn run_pod(&self, pod: &Pod) {
        self.cache.put_pod(pod).expect("cache pod");
        self.volumes.setup(pod, self.objects.as_ref()).await.expect("setup");
    }

    fn volume(&self, uid: &str, plugin: &str, name: &str) -> PathBuf {
        self.pods.join(uid).join("volumes").join(plugin).join(name)
    }
}

fn pod(uid: &str, labels: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("web-{uid}"), "namespace": "shop", "uid": uid,
            "labels": labels},
        "spec": {
            "serviceAccountName": "robot",
            "containers": [{"name": "main"}],
            "volumes": [
                {"name": "config", "configMap": {"name": "settings"}},
                {"name": "info", "downwardAPI": {"items": [
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
                {"name": "api", "projected": {"sources": [
                    {"serviceAccountToken": {"path": "token", "expirationSeconds": 600}}]}}
            ]
        }
    }))
    .expect("pod json")
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| format!("<{e}>"))
}

/// Polls `check` (the refresher runs in its own task) for at most ten seconds.
async fn eventually(what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match check() {
            Ok(()) => return,
            Err(e) if tokio::time::Instant::now() >= deadline => panic!("{what}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

#[tokio::test]
async fn the_periodic_sweep_rotates_tokens_past_80_percent_of_their_lifetime() {
    let f = Fixture::new();
    f.put_config_map("debug");
    let web = pod("uid-1", json!({"app": "web"}));
    f.run_pod(&web).await;
    let token = f.volume("uid-1", "kubernetes.io~projected", "api").join("token");
    assert_eq!(read(&token), "token:robot::1");

    // 479 s into a 600 s token: below 80 %, a sweep keeps it.
    let mut refresher = f.refresher(f.objects.clone());
    f.clock.advance(Duration::from_secs(479));
    refresher.sweep().await;
    assert_eq!(f.objects.tokens_issued(), 1);

    // Past 480 s the periodic loop (not a direct call) requests a new token bound to the pod.
    f.clock.advance(Duration::from_secs(2));
    let (_stop, stop_rx) = watch::channel(false);
    let _handle = refresher.with_period(Duration::from_millis(20)).spawn(stop_rx);
    eventually("the token is rotated", || match read(&token).as_str() {
        "token:robot::2" => Ok(()),
        other => Err(other.to_owned()),
    })
    .await;
    assert_eq!(f.objects.tokens_issued(), 2);
}

#[tokio::test]
async fn a_sweep_projects_changed_objects_and_keeps_content_offline() {
    let f = Fixture::new();
    f.put_config_map("debug");
    let web = pod("uid-1", json!({"app": "web"}));
    f.run_pod(&web).await;
    // A cached pod whose worker has not set it up yet.
    let later = pod("uid-2", json!({"app": "later"}));
    f.cache.put_pod(&later).expect("cache pod");
    let config = f.volume("uid-1", "kubernetes.io~configmap", "config");
    assert_eq!(read(&config.join("level")), "debug");

    f.put_config_map("info");
    f.refresher(f.objects.clone()).sweep().await;
    assert_eq!(read(&config.join("level")), "info");
    assert_eq!(
        fs::read_link(config.join("level")).expect("user-visible symlink"),
        Path::new("..data/level")
    );
    assert!(!f.pods.join("uid-2").exists(), "a refresh does not set volumes up");

    // Server away, nothing cached, tokens due: every volume keeps what it had.
    f.clock.advance(Duration::from_secs(3600));
    let before = fs::read_link(config.join("..data")).expect("..data");
    f.refresher(Arc::new(Offline)).sweep().await;
    assert_eq!(fs::read_link(config.join("..data")).expect("..data"), before);
    assert_eq!(read(&config.join("level")), "info");
    let token = f.volume("uid-1", "kubernetes.io~projected", "api").join("token");
    assert_eq!(read(&token), "token:robot::1");
}

#[tokio::test]
async fn label_changes_rewrite_downward_api_files_without_waiting_for_a_sweep() {
    let f = Fixture::new();
    f.put_config_map("debug");
    let v1 = pod("uid-1", json!({"app": "web"}));
    f.run_pod(&v1).await;
    let labels = f.volume("uid-1", "kubernetes.io~downward-api", "info").join("labels");
    assert_eq!(read(&labels), "app=\"web\"");

    let (_stop, stop_rx) = watch::channel(false);
    let handle =
        f.refresher(f.objects.clone()).with_period(Duration::from_secs(3600)).spawn(stop_rx);
    handle.pod_changed(&v1);
    let v2 = pod("uid-1", json!({"app": "web", "tier": "front"}));
    handle.pod_changed(&v2);
    eventually("the labels file follows the pod", || match read(&labels).as_str() {
        "app=\"web\"\ntier=\"front\"" => Ok(()),
        other => Err(other.to_owned()),
    })
    .await;

    // A pod being deleted is its worker's to tear down: no rewrite.
    let mut deleting = pod("uid-1", json!({"app": "gone"}));
    deleting.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
    );
    let mut refresher = f.refresher(f.objects.clone());
    refresher.remember(&v2);
    refresher.pod_changed(&deleting).await;
    assert_eq!(read(&labels), "app=\"web\"\ntier=\"front\"");
}
