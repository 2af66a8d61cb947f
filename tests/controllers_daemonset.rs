//! The DaemonSet controller and the pod garbage collector against the real `skerry server`
//! (scheduler and controllers, no agent), driven by kubectl 1.32 where users would use it.
//! The test creates the Node objects itself and plays the agents: a background thread marks
//! pods bound to its nodes Running and Ready, and finishes the deletion of terminating ones
//! (grace period 0) as an agent would once their containers stopped. The node lifecycle
//! controller is off: no agent renews the nodes' Leases.
//!
//! DaemonSet: one pod per eligible node (a NoSchedule-tainted node is skipped until the
//! template tolerates the taint), pods follow node label changes, a RollingUpdate replaces
//! every pod and `kubectl rollout status` completes, `kubectl rollout history` lists the
//! ControllerRevisions and `kubectl rollout undo` goes back to the previous template.
//! PodGC: the pods of a deleted Node are marked Failed with the DisruptionTarget condition
//! and removed after the (shortened) quarantine, and terminated pods beyond a threshold of 2
//! are removed oldest first.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::cluster::{is_ready, pod_status, Cluster};
use common::server::{ok, runtime, SkerryServer};
use serde_json::{json, Value};

const NS: &str = "default";
/// Bounds a failing wait only.
const LIMIT: Duration = Duration::from_secs(90);
const TAINT_KEY: &str = "dedicated";

fn daemon_set_yaml(name: &str, image: &str, pod_spec_extra: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: {name}
spec:
  selector:
    matchLabels: {{app: {name}}}
  updateStrategy:
    type: RollingUpdate
    rollingUpdate: {{maxUnavailable: 1}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      {pod_spec_extra}
      containers:
      - name: c
        image: {image}
"#
    )
}

/// The DaemonSet and PodGC tests' queries.
impl Cluster {
    /// Every pod of the namespace.
    fn pods(&self) -> Vec<Value> {
        let list = self.get(&format!("/api/v1/namespaces/{NS}/pods"));
        list["items"].as_array().cloned().unwrap_or_default()
    }

    /// Pods of the DaemonSet `name` that are not terminating, by node.
    fn daemon_pods(&self, name: &str) -> BTreeMap<String, Vec<Value>> {
        let mut by_node: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for p in self.pods() {
            let owner = &p["metadata"]["ownerReferences"][0];
            if owner["kind"] != "DaemonSet" || owner["name"] != name {
                continue;
            }
            if !p["metadata"]["deletionTimestamp"].is_null() {
                continue;
            }
            let node = p["spec"]["nodeName"].as_str().unwrap_or("").to_string();
            by_node.entry(node).or_default().push(p);
        }
        by_node
    }

    /// Waits until `name` runs exactly one ready pod on each of `nodes` (and none elsewhere),
    /// all with `image`; returns them.
    fn wait_placed(&self, name: &str, nodes: &[&str], image: &str) -> BTreeMap<String, Value> {
        let wanted: BTreeSet<String> = nodes.iter().map(|n| n.to_string()).collect();
        self.eventually(&format!("{name} on {nodes:?} with {image}"), || {
            let by_node = self.daemon_pods(name);
            let placed: BTreeSet<String> = by_node.keys().cloned().collect();
            let settled = placed == wanted
                && by_node.values().all(|pods| {
                    pods.len() == 1
                        && is_ready(&pods[0])
                        && pods[0]["spec"]["containers"][0]["image"] == image
                });
            if settled {
                Ok(by_node.into_iter().map(|(n, mut pods)| (n, pods.remove(0))).collect())
            } else {
                let summary: Vec<(String, usize)> =
                    by_node.iter().map(|(n, p)| (n.clone(), p.len())).collect();
                Err(format!("pods per node: {summary:?}"))
            }
        })
    }

    fn daemon_set(&self, name: &str) -> Value {
        self.get(&format!("/apis/apps/v1/namespaces/{NS}/daemonsets/{name}"))
    }
}

/// Plays the agents of `nodes` until `stop`: pods bound to them become Running and Ready;
/// terminating ones are deleted for good.
fn spawn_agents(
    server: &SkerryServer,
    nodes: &[&str],
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let api = server.admin();
    let nodes: BTreeSet<String> = nodes.iter().map(|n| n.to_string()).collect();
    std::thread::spawn(move || {
        let rt = runtime();
        while !stop.load(Ordering::SeqCst) {
            let (status, list) =
                rt.block_on(api.json("GET", &format!("/api/v1/namespaces/{NS}/pods"), None));
            if status == 200 {
                for p in list["items"].as_array().into_iter().flatten() {
                    let node = p["spec"]["nodeName"].as_str().unwrap_or("");
                    if !nodes.contains(node) {
                        continue;
                    }
                    let name = p["metadata"]["name"].as_str().unwrap_or("");
                    if !p["metadata"]["deletionTimestamp"].is_null() {
                        let path =
                            format!("/api/v1/namespaces/{NS}/pods/{name}?gracePeriodSeconds=0");
                        let _ = rt.block_on(api.json("DELETE", &path, None));
                    } else if !is_ready(p)
                        && !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
                    {
                        let now = k8s_openapi::jiff::Timestamp::now().to_string();
                        let patch = json!({"status": pod_status("Running", true, &now)});
                        let path = format!("/api/v1/namespaces/{NS}/pods/{name}/status");
                        let body = serde_json::to_vec(&patch).unwrap();
                        let ct = Some("application/merge-patch+json");
                        let _ = rt.block_on(api.request("PATCH", &path, ct, &body));
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    })
}

#[test]
fn daemon_sets_follow_eligible_nodes_roll_out_and_keep_history() {
    let Some(kubectl) = skerry_testkit::kubectl() else { return };
    let server = SkerryServer::start_with(&["--disable-controllers", "nodelifecycle"]);
    let k = |args: &[&str]| ok(server.kubectl(&kubectl, args), &args.join(" "));
    let c = Cluster::new(&server, LIMIT);
    let taint = json!([{"key": TAINT_KEY, "value": "edge", "effect": "NoSchedule"}]);
    c.create_node("ds-a", json!({"disk": "ssd"}), json!([]));
    c.create_node("ds-b", json!({}), json!([]));
    c.create_node("ds-c", json!({}), taint);
    let stop = Arc::new(AtomicBool::new(false));
    let agents = spawn_agents(&server, &["ds-a", "ds-b", "ds-c"], stop.clone());

    // Lands on the two untainted nodes, each pod pinned by node affinity and bound by the
    // scheduler, with the revision labels and the daemon tolerations.
    let yaml = daemon_set_yaml("agent", "busybox:1", "");
    let created = ok(server.kubectl_stdin(&kubectl, &["create", "-f", "-"], Some(&yaml)), "create");
    assert!(created.contains("daemonset.apps/agent created"), "{created}");
    let placed = c.wait_placed("agent", &["ds-a", "ds-b"], "busybox:1");
    let first_hash = placed["ds-a"]["metadata"]["labels"]["controller-revision-hash"].clone();
    for (node, pod) in &placed {
        let labels = &pod["metadata"]["labels"];
        assert_eq!(labels["controller-revision-hash"], first_hash, "{pod}");
        assert!(labels["pod-template-generation"].is_string(), "{pod}");
        let terms = &pod["spec"]["affinity"]["nodeAffinity"]
            ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
        assert_eq!(
            terms,
            &json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}])
        );
        let tolerations = pod["spec"]["tolerations"].as_array().cloned().unwrap_or_default();
        assert!(tolerations.iter().any(|t| t["key"] == "node.kubernetes.io/unreachable"
            && t["effect"] == "NoExecute"
            && t["tolerationSeconds"].is_null()));
        assert!(tolerations.iter().any(|t| t["key"] == "node.kubernetes.io/unschedulable"));
    }
    let rolled = k(&["rollout", "status", "ds/agent", "--timeout=90s"]);
    assert!(rolled.contains("successfully rolled out"), "{rolled}");
    let ds = c.daemon_set("agent");
    assert_eq!(ds["status"]["desiredNumberScheduled"], 2, "{ds}");
    assert_eq!(ds["status"]["numberReady"], 2, "{ds}");
    assert!(!c.events("DaemonSet", "agent", "SuccessfulCreate").is_empty());

    // Tolerating the taint: a new revision that also runs on the tainted node.
    let tolerate = json!({"spec": {"template": {"spec": {"tolerations": [
        {"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}]}}}});
    k(&["patch", "ds/agent", "--type=merge", "-p", &tolerate.to_string()]);
    let rolled = k(&["rollout", "status", "ds/agent", "--timeout=90s"]);
    assert!(rolled.contains("successfully rolled out"), "{rolled}");
    let placed = c.wait_placed("agent", &["ds-a", "ds-b", "ds-c"], "busybox:1");
    let second_hash = placed["ds-c"]["metadata"]["labels"]["controller-revision-hash"].clone();
    assert_ne!(second_hash, first_hash);
    assert!(placed
        .values()
        .all(|p| p["metadata"]["labels"]["controller-revision-hash"] == second_hash));

    // A RollingUpdate of the image replaces every pod; rollout status waits for it.
    k(&["set", "image", "ds/agent", "c=busybox:2"]);
    let rolled = k(&["rollout", "status", "ds/agent", "--timeout=90s"]);
    assert!(rolled.contains("successfully rolled out"), "{rolled}");
    let placed = c.wait_placed("agent", &["ds-a", "ds-b", "ds-c"], "busybox:2");
    let ds = c.daemon_set("agent");
    let status = &ds["status"];
    assert_eq!(
        (
            &status["desiredNumberScheduled"],
            &status["updatedNumberScheduled"],
            &status["numberAvailable"]
        ),
        (&json!(3), &json!(3), &json!(3)),
        "{ds}"
    );
    assert_eq!(status["observedGeneration"], ds["metadata"]["generation"]);
    assert!(!c.events("DaemonSet", "agent", "SuccessfulDelete").is_empty());
    let third_hash = placed["ds-a"]["metadata"]["labels"]["controller-revision-hash"].clone();

    // The history: three ControllerRevisions owned by the DaemonSet, named by their hash.
    let history = k(&["rollout", "history", "ds/agent"]);
    let revisions: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.chars().all(|c| c.is_ascii_digit()))
        .collect();
    assert_eq!(revisions, ["1", "2", "3"], "{history}");
    let list = c.get(&format!("/apis/apps/v1/namespaces/{NS}/controllerrevisions"));
    let names: BTreeSet<String> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["metadata"]["ownerReferences"][0]["name"] == "agent")
        .map(|r| r["metadata"]["name"].as_str().unwrap_or("").to_string())
        .collect();
    for hash in [&first_hash, &second_hash, &third_hash] {
        assert!(names.contains(&format!("agent-{}", hash.as_str().unwrap())), "{names:?}");
    }
    let revision_2 = k(&["rollout", "history", "ds/agent", "--revision=2"]);
    assert!(revision_2.contains("busybox:1"), "{revision_2}");

    // Undo goes back to revision 2's template (which becomes revision 4).
    k(&["rollout", "undo", "ds/agent"]);
    let rolled = k(&["rollout", "status", "ds/agent", "--timeout=90s"]);
    assert!(rolled.contains("successfully rolled out"), "{rolled}");
    let placed = c.wait_placed("agent", &["ds-a", "ds-b", "ds-c"], "busybox:1");
    assert!(placed
        .values()
        .all(|p| p["metadata"]["labels"]["controller-revision-hash"] == second_hash));
    let history = k(&["rollout", "history", "ds/agent"]);
    assert!(history.lines().any(|l| l.trim_start().starts_with('4')), "{history}");

    // A node selector: pods follow the node labels.
    let yaml = daemon_set_yaml("ssd", "busybox:1", "nodeSelector: {disk: ssd}");
    ok(server.kubectl_stdin(&kubectl, &["create", "-f", "-"], Some(&yaml)), "create ssd");
    c.wait_placed("ssd", &["ds-a"], "busybox:1");
    k(&["label", "node", "ds-b", "disk=ssd"]);
    c.wait_placed("ssd", &["ds-a", "ds-b"], "busybox:1");
    k(&["label", "node", "ds-a", "disk-"]);
    c.wait_placed("ssd", &["ds-b"], "busybox:1");
    let ds = c.eventually("ssd status", || {
        let ds = c.daemon_set("ssd");
        let s = &ds["status"];
        (s["desiredNumberScheduled"] == 1
            && s["currentNumberScheduled"] == 1
            && s["numberMisscheduled"] == 0)
            .then_some(ds.clone())
            .ok_or(ds.to_string())
    });
    assert_eq!(ds["status"]["numberReady"], 1);

    stop.store(true, Ordering::SeqCst);
    agents.join().unwrap();
}

/// Creates a pod bound to `node` (as if scheduled) and writes the status an agent would.
fn bound_pod(c: &Cluster, name: &str, node: &str, phase: &str, finalizer: bool) {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}
    });
    if finalizer {
        pod["metadata"]["finalizers"] = json!(["example.com/hold"]);
    }
    c.create(&format!("/api/v1/namespaces/{NS}/pods"), &pod);
    c.merge_patch(
        &format!("/api/v1/namespaces/{NS}/pods/{name}/status"),
        &json!({"status": {"phase": phase}}),
    );
}

fn pod_names(c: &Cluster) -> BTreeSet<String> {
    c.pods().iter().map(|p| p["metadata"]["name"].as_str().unwrap_or("").to_string()).collect()
}

#[test]
fn pod_gc_collects_orphans_and_terminated_pods_beyond_the_threshold() {
    let server = SkerryServer::start_with(&[
        "--disable-controllers",
        "nodelifecycle",
        "--terminated-pod-gc-threshold",
        "2",
        "--pod-gc-orphan-quarantine",
        "2s",
    ]);
    let c = Cluster::new(&server, LIMIT);
    c.create_node("gc-a", json!({}), json!([]));
    c.create_node("gc-b", json!({}), json!([]));

    // Pods on gc-a are orphaned when its Node object goes; the one on gc-b stays.
    bound_pod(&c, "orphan", "gc-a", "Running", false);
    bound_pod(&c, "held-orphan", "gc-a", "Running", true);
    bound_pod(&c, "survivor", "gc-b", "Running", false);
    let (status, body) = c.call("DELETE", "/api/v1/nodes/gc-a", None);
    assert_eq!(status, 200, "{body}");
    c.eventually("orphans collected", || {
        let names = pod_names(&c);
        (!names.contains("orphan")).then_some(()).ok_or(format!("{names:?}"))
    });
    // The finalizer keeps one around to show how it was left: Failed, with the reason.
    let held = c.eventually("held orphan marked", || {
        let p = c.get(&format!("/api/v1/namespaces/{NS}/pods/held-orphan"));
        (!p["metadata"]["deletionTimestamp"].is_null()).then_some(p.clone()).ok_or(p.to_string())
    });
    assert_eq!(held["status"]["phase"], "Failed", "{held}");
    let conditions = held["status"]["conditions"].as_array().cloned().unwrap_or_default();
    let disruption = conditions.iter().find(|c| c["type"] == "DisruptionTarget");
    let disruption = disruption.unwrap_or_else(|| panic!("no DisruptionTarget: {held}"));
    assert_eq!(
        (&disruption["status"], &disruption["reason"]),
        (&json!("True"), &json!("DeletionByPodGC"))
    );
    c.merge_patch(
        &format!("/api/v1/namespaces/{NS}/pods/held-orphan"),
        &json!({"metadata": {"finalizers": null}}),
    );
    c.eventually("held orphan gone", || {
        let names = pod_names(&c);
        (!names.contains("held-orphan")).then_some(()).ok_or(format!("{names:?}"))
    });
    assert!(pod_names(&c).contains("survivor"));

    // Four terminated pods, created a second apart (creation times have second precision),
    // named against their age: with a threshold of 2 the two oldest go.
    for (i, name) in ["t-d", "t-c", "t-b", "t-a"].iter().enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(1100));
        }
        let phase = if i % 2 == 0 { "Succeeded" } else { "Failed" };
        bound_pod(&c, name, "gc-b", phase, false);
    }
    let left = c.eventually("terminated pods beyond 2 collected", || {
        let names = pod_names(&c);
        let terminated: BTreeSet<String> =
            names.iter().filter(|n| n.starts_with("t-")).cloned().collect();
        (terminated.len() == 2).then_some(terminated).ok_or(format!("{names:?}"))
    });
    assert_eq!(left, BTreeSet::from(["t-a".to_string(), "t-b".to_string()]));
    assert!(pod_names(&c).contains("survivor"), "running pods are never collected");
}
