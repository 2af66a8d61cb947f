//! The scheduler of the real `skerry server` (no agent: the tests create Node objects and act
//! as the agent where a pod must go away): spreading of a ReplicaSet's pods over equal nodes,
//! nodeSelector, taints, cordon, resources (with the reference's `PodScheduled=False` message and
//! a `FailedScheduling` event), two pods racing for the last room, a pod that waits until a
//! fitting node appears, and preemption by a higher-priority pod.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::server::{ApiClient, SkerryServer};
use serde_json::{json, Value};

const PODS: &str = "/api/v1/namespaces/default/pods";
const WAIT: Duration = Duration::from_secs(30);

/// Recursive JSON merge (objects merge, anything else replaces).
fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}

/// Creates a Ready node with `cpu` and 8Gi allocatable and `extra` merged in (labels, spec).
async fn create_node(api: &ApiClient, name: &str, cpu: &str, extra: Value) {
    let status = json!({
        "allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
        "capacity": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "message": "ready", "lastHeartbeatTime": "2025-01-01T00:00:00Z",
                        "lastTransitionTime": "2025-01-01T00:00:00Z"}]
    });
    let mut node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": status.clone(),
    });
    merge(&mut node, extra);
    let (code, body) = api.json("POST", "/api/v1/nodes", Some(&node)).await;
    assert_eq!(code, 201, "{body}");
    // Whether or not create kept the status, write it as an agent would.
    let patch = serde_json::to_vec(&json!({"status": status})).unwrap();
    let path = format!("/api/v1/nodes/{name}/status");
    let resp =
        api.request("PATCH", &path, Some("application/merge-patch+json"), &patch).await.unwrap();
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
}

/// Creates pod `name` (one container) with `extra` merged in.
async fn create_pod(api: &ApiClient, name: &str, extra: Value) {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    });
    merge(&mut pod, extra);
    let (code, body) = api.json("POST", PODS, Some(&pod)).await;
    assert_eq!(code, 201, "{body}");
}

fn requesting(cpu: &str) -> Value {
    json!({"spec": {"containers": [{"name": "c", "image": "busybox",
        "resources": {"requests": {"cpu": cpu}}}]}})
}

async fn get_pod(api: &ApiClient, name: &str) -> Value {
    let (code, pod) = api.json("GET", &format!("{PODS}/{name}"), None).await;
    assert_eq!(code, 200, "{pod}");
    pod
}

/// Polls pod `name` until `done` holds, returning it.
async fn wait_pod(api: &ApiClient, name: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let pod = get_pod(api, name).await;
        if done(&pod) {
            return pod;
        }
        assert!(Instant::now() < deadline, "pod {name}: {what} did not happen:\n{pod:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_bound(api: &ApiClient, name: &str) -> String {
    let pod = wait_pod(api, name, "binding", |p| p["spec"]["nodeName"].is_string()).await;
    pod["spec"]["nodeName"].as_str().unwrap().to_string()
}

/// The pod's `PodScheduled` condition once it is `False`.
async fn wait_unschedulable(api: &ApiClient, name: &str) -> Value {
    let scheduled = |p: &Value| {
        p["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "PodScheduled"))
            .cloned()
    };
    let pod = wait_pod(api, name, "PodScheduled=False", |p| {
        scheduled(p).is_some_and(|c| c["status"] == "False")
    })
    .await;
    assert!(pod["spec"]["nodeName"].is_null(), "{pod:#}");
    scheduled(&pod).unwrap()
}

async fn events_for(api: &ApiClient, name: &str, reason: &str) -> Vec<Value> {
    let (code, list) = api.json("GET", "/api/v1/namespaces/default/events", None).await;
    assert_eq!(code, 200, "{list}");
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["involvedObject"]["name"] == name && e["reason"] == reason)
        .cloned()
        .collect()
}

#[tokio::test]
async fn replicaset_pods_spread_over_equal_nodes() {
    let server = SkerryServer::start();
    let api = server.admin();
    for name in ["n1", "n2", "n3"] {
        create_node(&api, name, "4", json!({})).await;
    }
    let rs = json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web"},
        "spec": {"replicas": 6, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}
    });
    let (code, body) =
        api.json("POST", "/apis/apps/v1/namespaces/default/replicasets", Some(&rs)).await;
    assert_eq!(code, 201, "{body}");
    let deadline = Instant::now() + WAIT;
    let per_node = loop {
        let (_, list) = api.json("GET", &format!("{PODS}?labelSelector=app%3Dweb"), None).await;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        let bound: Vec<String> =
            items.iter().filter_map(|p| p["spec"]["nodeName"].as_str().map(String::from)).collect();
        if items.len() == 6 && bound.len() == 6 {
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            bound.into_iter().for_each(|n| *counts.entry(n).or_insert(0) += 1);
            break counts;
        }
        assert!(
            Instant::now() < deadline,
            "pods not all bound: {list:#}\nserver log:\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let expected: BTreeMap<String, usize> =
        [("n1".to_string(), 2), ("n2".to_string(), 2), ("n3".to_string(), 2)].into();
    assert_eq!(per_node, expected);
    // Each binding is reported as the reference does.
    let (_, list) = api.json("GET", &format!("{PODS}?labelSelector=app%3Dweb"), None).await;
    let first = &list["items"][0];
    let name = first["metadata"]["name"].as_str().unwrap();
    let node = first["spec"]["nodeName"].as_str().unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let events = events_for(&api, name, "Scheduled").await;
        if let Some(event) = events.first() {
            assert_eq!(event["message"], format!("Successfully assigned default/{name} to {node}"));
            assert_eq!(event["source"]["component"], "default-scheduler");
            break;
        }
        assert!(Instant::now() < deadline, "no Scheduled event for {name}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn node_selector_taints_and_cordon_filter_nodes() {
    let server = SkerryServer::start();
    let api = server.admin();
    create_node(&api, "ssd", "4", json!({"metadata": {"labels": {"disk": "ssd"}}})).await;
    let taint =
        json!({"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}});
    create_node(&api, "tainted", "4", taint).await;
    create_node(&api, "cordoned", "4", json!({"spec": {"unschedulable": true}})).await;

    // Pods that pick no node can only use the one node neither tainted nor cordoned.
    for i in 0..4 {
        create_pod(&api, &format!("plain{i}"), json!({})).await;
    }
    for i in 0..4 {
        assert_eq!(wait_bound(&api, &format!("plain{i}")).await, "ssd");
    }
    create_pod(&api, "selected", json!({"spec": {"nodeSelector": {"disk": "ssd"}}})).await;
    assert_eq!(wait_bound(&api, "selected").await, "ssd");
    // A toleration opens the tainted node.
    let tolerating = json!({"spec": {
        "nodeSelector": {"kubernetes.io/hostname": "tainted"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]}});
    create_pod(&api, "tolerating", tolerating).await;
    assert_eq!(wait_bound(&api, "tolerating").await, "tainted");

    // Only the cordoned node would do: unschedulable, with one reason per node.
    create_pod(
        &api,
        "wants-cordoned",
        json!({"spec": {"nodeSelector": {"kubernetes.io/hostname": "cordoned"}}}),
    )
    .await;
    let condition = wait_unschedulable(&api, "wants-cordoned").await;
    assert_eq!(condition["reason"], "Unschedulable");
    assert_eq!(
        condition["message"],
        "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, \
         1 node(s) had untolerated taint {dedicated: db}, 1 node(s) were unschedulable. \
         preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.."
    );
    // Uncordoning the node (a node update) schedules the waiting pod.
    let uncordon = serde_json::to_vec(&json!({"spec": {"unschedulable": false}})).unwrap();
    let resp = api
        .request("PATCH", "/api/v1/nodes/cordoned", Some("application/merge-patch+json"), &uncordon)
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(wait_bound(&api, "wants-cordoned").await, "cordoned");
}

#[tokio::test]
async fn insufficient_cpu_is_reported_and_a_new_node_takes_the_pod() {
    let server = SkerryServer::start();
    let api = server.admin();
    for name in ["small1", "small2", "small3"] {
        create_node(&api, name, "1", json!({})).await;
    }
    create_pod(&api, "big", requesting("2")).await;
    let condition = wait_unschedulable(&api, "big").await;
    let message = "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are \
                   available: 3 No preemption victims found for incoming pod..";
    assert_eq!(condition["reason"], "Unschedulable");
    assert_eq!(condition["message"], message);
    let deadline = Instant::now() + WAIT;
    loop {
        let events = events_for(&api, "big", "FailedScheduling").await;
        if let Some(event) = events.first() {
            assert_eq!(event["type"], "Warning");
            assert_eq!(event["message"], message);
            assert_eq!(event["source"]["component"], "default-scheduler");
            break;
        }
        assert!(Instant::now() < deadline, "no FailedScheduling event");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A node with room appears: the waiting pod goes there.
    create_node(&api, "large", "4", json!({})).await;
    assert_eq!(wait_bound(&api, "big").await, "large");
}

#[tokio::test]
async fn two_pods_do_not_share_the_last_room() {
    let server = SkerryServer::start();
    let api = server.admin();
    create_node(&api, "only", "1", json!({})).await;
    create_pod(&api, "first", requesting("600m")).await;
    create_pod(&api, "second", requesting("600m")).await;
    // Whichever is decided first takes the node; the other must not be put there too.
    let deadline = Instant::now() + WAIT;
    let (bound, waiting) = loop {
        let a = get_pod(&api, "first").await;
        let b = get_pod(&api, "second").await;
        match (a["spec"]["nodeName"].is_string(), b["spec"]["nodeName"].is_string()) {
            (true, true) => panic!("both pods were bound to the one node"),
            (true, false) => break ("first", "second"),
            (false, true) => break ("second", "first"),
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "neither pod was bound:\n{a:#}\n{b:#}\nserver log:\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(wait_bound(&api, bound).await, "only");
    let condition = wait_unschedulable(&api, waiting).await;
    assert!(
        condition["message"]
            .as_str()
            .unwrap()
            .starts_with("0/1 nodes are available: 1 Insufficient cpu."),
        "{condition}"
    );
    // Once the bound pod is gone (as its agent would confirm), the other one gets the room.
    let (code, body) =
        api.json("DELETE", &format!("{PODS}/{bound}?gracePeriodSeconds=0"), None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(wait_bound(&api, waiting).await, "only");
}

#[tokio::test]
async fn a_higher_priority_pod_preempts_a_lower_one() {
    let server = SkerryServer::start();
    let api = server.admin();
    create_node(&api, "n1", "1", json!({})).await;
    create_pod(&api, "low", requesting("800m")).await;
    assert_eq!(wait_bound(&api, "low").await, "n1");
    let class = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                       "metadata": {"name": "high"}, "value": 1000});
    let (code, body) =
        api.json("POST", "/apis/scheduling.k8s.io/v1/priorityclasses", Some(&class)).await;
    assert_eq!(code, 201, "{body}");
    let mut high = requesting("800m");
    merge(&mut high, json!({"spec": {"priorityClassName": "high"}}));
    create_pod(&api, "high", high).await;
    // The victim is deleted (it waits for its agent to confirm) and the pod is nominated.
    let victim =
        wait_pod(&api, "low", "deletion", |p| p["metadata"]["deletionTimestamp"].is_string()).await;
    let disruption = victim["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "DisruptionTarget").cloned());
    assert_eq!(disruption.map(|c| c["reason"].clone()), Some(json!("PreemptionByScheduler")));
    assert_eq!(events_for(&api, "low", "Preempted").await.len(), 1);
    let nominated =
        wait_pod(&api, "high", "nomination", |p| p["status"]["nominatedNodeName"] == "n1").await;
    assert!(nominated["spec"]["nodeName"].is_null());
    // The agent confirms the victim is gone: the preemptor takes its place.
    let (code, body) = api.json("DELETE", &format!("{PODS}/low?gracePeriodSeconds=0"), None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(wait_bound(&api, "high").await, "n1");
}
