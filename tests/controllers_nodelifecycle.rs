//! The node lifecycle controller end to end against the real `skerry server` with a 3 s
//! `--node-monitor-grace-period` and no agent: the test plays the agents, renewing the Leases
//! in `kube-node-lease` of three nodes. While renewed, a node stays untainted; once one stops,
//! it goes Ready=Unknown with the unreachable NoExecute taint, its pod tolerating that for 2 s
//! is evicted while one tolerating it forever stays; renewed again (and Ready=True posted, as
//! the agent would), the taints go. The other two nodes keep their zone below the disruption
//! threshold, so evictions are not held back.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::server::{ApiClient, SkerryServer};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

/// Bounds a failing test only.
const CONVERGE: Duration = Duration::from_secs(60);
const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
const NODES: [&str; 3] = ["edge-a", "edge-b", "edge-c"];

fn now_micro() -> Value {
    serde_json::to_value(MicroTime(Timestamp::now())).unwrap()
}

/// Polls `probe` until it returns Ok, or panics with the last state after `CONVERGE`.
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + CONVERGE;
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(last) if Instant::now() > deadline => {
                panic!("{what}: never happened; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

fn node(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name},
        "status": {
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "KubeletReady",
                 "lastHeartbeatTime": now_micro(), "lastTransitionTime": now_micro()},
                {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory"}
            ],
            "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"}
        }
    })
}

fn pod(name: &str, node: &str, toleration_seconds: Option<i64>) -> Value {
    let mut toleration = json!({"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"});
    if let Some(seconds) = toleration_seconds {
        toleration["tolerationSeconds"] = json!(seconds);
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": node,
            "tolerations": [toleration],
            "containers": [{"name": "c", "image": "busybox"}]
        }
    })
}

/// Creates `object` at `path`, answering the created object.
async fn create(api: &ApiClient, path: &str, object: &Value) -> Value {
    let (code, body) = api.json("POST", path, Some(object)).await;
    assert!(code == 201 || code == 200, "create {path}: {code} {body}");
    body
}

async fn merge_patch(api: &ApiClient, path: &str, patch: &Value) {
    let bytes = serde_json::to_vec(patch).unwrap();
    let resp = api.request("PATCH", path, Some("application/merge-patch+json"), &bytes).await;
    let resp = resp.unwrap();
    assert_eq!(resp.status, 200, "patch {path}: {}", String::from_utf8_lossy(&resp.body));
}

async fn get(api: &ApiClient, path: &str) -> (u16, Value) {
    api.json("GET", path, None).await
}

/// The unreachable taints of a node, as `effect` strings.
fn unreachable_taints(node: &Value) -> Vec<String> {
    node["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["key"] == UNREACHABLE)
        .map(|t| t["effect"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn condition<'a>(node: &'a Value, type_: &str) -> &'a Value {
    node["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .unwrap_or(&Value::Null)
}

/// Plays the agents: renews the Lease of every node in `renewing` every 500 ms.
fn spawn_renewer(api: ApiClient, renewing: Arc<Mutex<HashSet<String>>>) {
    tokio::spawn(async move {
        loop {
            let names: Vec<String> = renewing.lock().unwrap().iter().cloned().collect();
            for name in names {
                let path = format!(
                    "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}"
                );
                let patch =
                    serde_json::to_vec(&json!({"spec": {"renewTime": now_micro()}})).unwrap();
                let _ =
                    api.request("PATCH", &path, Some("application/merge-patch+json"), &patch).await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrenewed_node_is_tainted_its_pods_evicted_and_it_recovers() {
    let server = SkerryServer::start_with(&["--node-monitor-grace-period", "3s"]);
    let api = server.admin();
    // The lease namespace may already exist (bootstrap); a 409 is fine.
    let _ = api
        .json("POST", "/api/v1/namespaces", Some(&json!({"metadata": {"name": "kube-node-lease"}})))
        .await;
    for name in NODES {
        create(&api, "/api/v1/nodes", &node(name)).await;
        let lease = json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now_micro()}
        });
        create(&api, "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", &lease)
            .await;
    }
    let renewing =
        Arc::new(Mutex::new(NODES.iter().map(|n| n.to_string()).collect::<HashSet<_>>()));
    spawn_renewer(server.admin(), renewing.clone());
    let pods = "/api/v1/namespaces/default/pods";
    create(&api, pods, &pod("short", "edge-a", Some(2))).await;
    create(&api, pods, &pod("forever", "edge-a", None)).await;

    // Renewed for well past the grace period: nothing happens.
    tokio::time::sleep(Duration::from_secs(6)).await;
    for name in NODES {
        let (_, n) = get(&api, &format!("/api/v1/nodes/{name}")).await;
        assert!(unreachable_taints(&n).is_empty(), "{name} tainted while renewed: {n}");
        assert_eq!(condition(&n, "Ready")["status"], "True", "{n}");
    }

    // edge-a's agent goes silent.
    renewing.lock().unwrap().remove("edge-a");
    let tainted = eventually("edge-a unreachable", || async {
        let (_, n) = get(&api, "/api/v1/nodes/edge-a").await;
        let ready = condition(&n, "Ready");
        let taints = unreachable_taints(&n);
        if ready["status"] == "Unknown" && taints.iter().any(|e| e == "NoExecute") {
            Ok(n)
        } else {
            Err(n.to_string())
        }
    })
    .await;
    let ready = condition(&tainted, "Ready");
    assert_eq!(ready["reason"], "NodeStatusUnknown");
    assert_eq!(ready["message"], "Kubelet stopped posting node status.");
    assert_eq!(condition(&tainted, "MemoryPressure")["status"], "Unknown");
    assert!(unreachable_taints(&tainted).iter().any(|e| e == "NoSchedule"), "{tainted}");

    // The pod tolerating the taint for 2 s is evicted (deleted, or on its way out).
    eventually("short evicted", || async {
        let (code, p) = get(&api, &format!("{pods}/short")).await;
        if code == 404 || !p["metadata"]["deletionTimestamp"].is_null() {
            Ok(())
        } else {
            Err(format!("{code} {p}"))
        }
    })
    .await;
    // The one tolerating it forever stays; the healthy nodes stay untainted.
    let (code, forever) = get(&api, &format!("{pods}/forever")).await;
    assert_eq!(code, 200, "{forever}");
    assert!(forever["metadata"]["deletionTimestamp"].is_null(), "{forever}");
    for name in ["edge-b", "edge-c"] {
        let (_, n) = get(&api, &format!("/api/v1/nodes/{name}")).await;
        assert!(unreachable_taints(&n).is_empty(), "{name} tainted: {n}");
    }

    // The agent comes back: lease renewed, Ready=True posted.
    renewing.lock().unwrap().insert("edge-a".to_string());
    let status = json!({"status": {"conditions": [
        {"type": "Ready", "status": "True", "reason": "KubeletReady",
         "lastHeartbeatTime": now_micro(), "lastTransitionTime": now_micro()}
    ]}});
    merge_patch(&api, "/api/v1/nodes/edge-a/status", &status).await;
    eventually("edge-a untainted", || async {
        let (_, n) = get(&api, "/api/v1/nodes/edge-a").await;
        if unreachable_taints(&n).is_empty() {
            Ok(())
        } else {
            Err(n.to_string())
        }
    })
    .await;
    let (code, forever) = get(&api, &format!("{pods}/forever")).await;
    assert_eq!(code, 200, "{forever}");
}
