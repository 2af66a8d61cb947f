//! Tests of the graph's incremental updates and of the index that follows the watch caches.

use super::*;
use crate::apiserver::server::{ApiConfig, ApiServer};
use crate::store::sqlite::{SqliteOptions, SqliteStore};
use crate::store::{DeleteRangeRequest, PutRequest, Store};
use serde_json::json;

fn pod(name: &str, node: &str, secrets: &[&str]) -> Value {
    let volumes: Vec<Value> = secrets
        .iter()
        .map(|s| json!({"name": s, "secret": {"secretName": s}}))
        .chain([json!({"name": "data", "persistentVolumeClaim": {"claimName": "data"}})])
        .collect();
    json!({"metadata": {"name": name, "namespace": "team"},
        "spec": {"nodeName": node, "volumes": volumes}})
}

fn claim(volume: &str) -> Value {
    json!({"metadata": {"name": "data", "namespace": "team"}, "spec": {"volumeName": volume}})
}

fn pinned(name: &str, node: &str) -> Value {
    json!({"metadata": {"name": name}, "spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}
    ]}}}})
}

#[test]
fn edges_shared_by_two_pods_stay_until_the_last_one_goes() {
    let mut g = Graph::default();
    g.set_pod(&pod("a", "n1", &["shared", "only-a"]), true);
    g.set_pod(&pod("b", "n1", &["shared"]), true);
    g.set_pod(&pod("a", "n1", &["shared", "only-a"]), false);
    assert!(g.has_path("n1", Kind::Secret, "team", "shared"), "b still uses it");
    assert!(!g.has_path("n1", Kind::Secret, "team", "only-a"));
    assert!(!g.has_path("n1", Kind::Pod, "team", "a"));
    assert!(g.has_path("n1", Kind::Pod, "team", "b"));
    // An update replaces what the pod contributed.
    g.set_pod(&pod("b", "n1", &["other"]), true);
    assert!(!g.has_path("n1", Kind::Secret, "team", "shared"));
    assert!(g.has_path("n1", Kind::Secret, "team", "other"));
    g.set_pod(&pod("b", "n1", &[]), false);
    assert!(!g.has_path("n1", Kind::Secret, "team", "other"));
    assert!(g.reach.is_empty() && g.pods.is_empty(), "nothing left behind: {g:?}");
}

#[test]
fn a_claim_bound_after_its_pod_leads_to_its_volume() {
    let mut g = Graph::default();
    g.set_pod(&pod("a", "n1", &[]), true);
    assert!(!g.has_path("n1", Kind::Volume, "", "pv-1"));
    g.set_claim(&claim("pv-1"), true);
    assert!(g.has_path("n1", Kind::Volume, "", "pv-1"));
    assert!(!g.has_path("n2", Kind::Volume, "", "pv-1"));
    g.set_claim(&claim("pv-2"), true);
    assert!(!g.has_path("n1", Kind::Volume, "", "pv-1"), "rebound elsewhere");
    assert!(g.has_path("n1", Kind::Volume, "", "pv-2"));
    g.set_claim(&claim("pv-2"), false);
    assert!(!g.has_path("n1", Kind::Volume, "", "pv-2"));
}

#[test]
fn pins_follow_the_volume() {
    let mut g = Graph::default();
    g.set_volume(&pinned("pv", "n1"), true);
    assert!(g.is_pinned("n1", "pv") && !g.is_pinned("n2", "pv"));
    g.set_volume(&pinned("pv", "n2"), true);
    assert!(!g.is_pinned("n1", "pv") && g.is_pinned("n2", "pv"));
    g.set_volume(&pinned("pv", "n2"), false);
    assert!(!g.is_pinned("n2", "pv"));
}

async fn put(store: &dyn Store, key: &str, value: &Value) {
    let req = PutRequest {
        key: key.as_bytes().to_vec(),
        value: serde_json::to_vec(value).unwrap(),
        ..Default::default()
    };
    store.put(req).await.unwrap();
}

async fn delete(store: &dyn Store, key: &str) {
    let req = DeleteRangeRequest { key: key.as_bytes().to_vec(), ..Default::default() };
    store.delete_range(req).await.unwrap();
}

/// What node `n1` reaches of the objects the test writes.
fn reach(server: &ApiServer) -> Vec<&'static str> {
    let index = &server.inner.authz.node;
    index.with_current(server, |g| {
        let mut out = Vec::new();
        for (what, yes) in [
            ("pod a", g.has_path("n1", Kind::Pod, "team", "a")),
            ("secret s1", g.has_path("n1", Kind::Secret, "team", "s1")),
            ("secret s2", g.has_path("n1", Kind::Secret, "team", "s2")),
            ("volume pv-1", g.has_path("n1", Kind::Volume, "", "pv-1")),
            ("pinned pv-local", g.is_pinned("n1", "pv-local")),
        ] {
            if yes {
                out.push(what);
            }
        }
        out
    })
}

#[tokio::test]
async fn the_index_follows_writes_to_the_caches() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("state.db"), SqliteOptions::default()).unwrap();
    let server = ApiServer::new(Arc::new(store), ApiConfig::default(), Default::default());
    let store = server.inner.store.clone();
    let (pod_key, claim_key) =
        ("/registry/pods/team/a", "/registry/persistentvolumeclaims/team/data");
    let pv_key = "/registry/persistentvolumes/pv-local";
    // Built from the caches as they are first (empty), then kept up to date by their events.
    assert!(reach(&server).is_empty());
    let steps = [
        (pod_key, Some(pod("a", "", &["s1"])), vec![]),
        (pod_key, Some(pod("a", "n1", &["s1"])), vec!["pod a", "secret s1"]),
        (claim_key, Some(claim("pv-1")), vec!["pod a", "secret s1", "volume pv-1"]),
        (pod_key, Some(pod("a", "n1", &["s2"])), vec!["pod a", "secret s2", "volume pv-1"]),
        (
            pv_key,
            Some(pinned("pv-local", "n1")),
            vec!["pod a", "secret s2", "volume pv-1", "pinned pv-local"],
        ),
        (pod_key, None, vec!["pinned pv-local"]),
        (pv_key, None, vec![]),
    ];
    for (key, object, want) in steps {
        match object {
            Some(object) => put(store.as_ref(), key, &object).await,
            None => delete(store.as_ref(), key).await,
        }
        server.inner.authz.node.catch_up(&server).await;
        assert_eq!(reach(&server), want, "after writing {key}");
    }
    // What the events made of the graph is what a rebuild from the caches makes.
    let index = &server.inner.authz.node;
    let tracked = index.tracked.lock().unwrap();
    let graph = &tracked.as_ref().unwrap().graph;
    assert!(graph.pods.is_empty() && graph.reach.is_empty() && graph.pinned.is_empty());
    assert_eq!(graph.claim_volume.len(), 1);
}
