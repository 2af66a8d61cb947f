//! Node pressure beyond eviction, end to end as root with the embedded agent (one
//! `skerry server`, pods in real containers):
//!
//! - A soft memory threshold above anything the machine can have available
//!   (`memory.available<MemTotal`) with a one-hour grace period: MemoryPressure turns True at
//!   once, nothing is evicted, and a new BestEffort pod is refused the way the kubelet's admit
//!   handler refuses it (Failed, reason Evicted, `Pod was rejected: The node had condition:
//!   [MemoryPressure]. `), while a Burstable pod and a BestEffort pod tolerating the
//!   memory-pressure taint run.
//! - A hard disk threshold that can never be met (`imagefs.available<1Ei`): the agent removes
//!   an imported image nothing uses (once past `--minimum-image-gc-age`) but keeps the one a
//!   static pod runs; DiskPressure refuses every new pod, while the static (critical) pod runs
//!   on and is never evicted.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::agent::{
    agent_test_kubectl, eventually, import_image, mem_total_kib, start_single_node, TEST_IMAGE,
};
use common::images::{archive_of, busybox_layout};
use common::server::{ok, SkerryServer};
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(90);

/// A pod bound to `node` that sleeps, with `resources` and extra `spec` fields.
fn pod(node: &str, name: &str, resources: Value, extra: Value) -> Value {
    let mut spec = json!({"nodeName": node, "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "main", "image": TEST_IMAGE, "command": ["sleep", "3600"],
                        "resources": resources}]});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"}, "spec": spec})
}

fn create(server: &SkerryServer, kubectl: &Path, object: &Value) {
    let out = server.kubectl_stdin(kubectl, &["create", "-f", "-"], Some(&object.to_string()));
    ok(out, "kubectl create");
}

fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    object["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_)
}

/// Waits for the Node's `type_` condition to be True.
fn wait_condition(server: &SkerryServer, kubectl: &Path, node: &str, type_: &str) -> Value {
    eventually(&format!("the Node reports {type_}"), LIMIT, || {
        let n = server.kubectl_json(kubectl, &["get", "node", node, "-o", "json"])?;
        let on = condition(&n, type_).is_some_and(|c| c["status"] == "True");
        on.then_some(n.clone()).ok_or_else(|| n["status"]["conditions"].to_string())
    })
}

/// Waits for pod `name` to be refused, and checks how it was.
fn assert_refused(server: &SkerryServer, kubectl: &Path, name: &str, conditions: &str) {
    let pod = eventually(&format!("{name} is refused"), LIMIT, || {
        let pod = server.kubectl_json(kubectl, &["get", "pod", name, "-o", "json"])?;
        let failed = pod["status"]["phase"] == "Failed";
        failed
            .then_some(pod.clone())
            .ok_or_else(|| format!("{}\n{}", pod["status"], server.log_text()))
    });
    let message = format!("The node had condition: [{conditions}]. ");
    assert_eq!(pod["status"]["reason"], "Evicted", "{}", pod["status"]);
    assert_eq!(pod["status"]["message"], format!("Pod was rejected: {message}"));
    // Refused, not disrupted: no DisruptionTarget condition, nothing ever started.
    assert!(condition(&pod, "DisruptionTarget").is_none(), "{}", pod["status"]);
    assert!(pod["status"]["startTime"].is_null(), "{}", pod["status"]);
    let event = eventually(&format!("an Evicted event names {name}"), LIMIT, || {
        let events = server.kubectl_json(kubectl, &["get", "events", "-o", "json"])?;
        let found = events["items"].as_array().into_iter().flatten().find(|e| {
            e["reason"] == "Evicted"
                && e["involvedObject"]["name"] == name
                && e["type"] == "Warning"
        });
        found.cloned().ok_or_else(|| events.to_string())
    });
    assert_eq!(event["message"], message, "{event}");
}

fn phase(server: &SkerryServer, kubectl: &Path, name: &str) -> String {
    let pod = server.kubectl_json(kubectl, &["get", "pod", name, "-o", "json"]).unwrap();
    pod["status"]["phase"].as_str().unwrap_or_default().to_string()
}

#[test]
fn memory_pressure_refuses_new_besteffort_pods_unless_they_tolerate_it() {
    const NODE: &str = "soft-pressure-node";
    let Some(kubectl) = agent_test_kubectl() else { return };
    let threshold = format!("memory.available<{}Ki", mem_total_kib());
    let args = [
        "--eviction-soft",
        threshold.as_str(),
        "--eviction-soft-grace-period",
        "memory.available=1h",
    ];
    let server = start_single_node(&kubectl, NODE, &args, |_| {});
    let kubectl = kubectl.as_path();
    // Soft thresholds turn the condition on from their first crossing.
    wait_condition(&server, kubectl, NODE, "MemoryPressure");

    create(&server, kubectl, &pod(NODE, "besteffort", json!({}), json!({})));
    let burstable = json!({"requests": {"memory": "16Mi"}});
    create(&server, kubectl, &pod(NODE, "burstable", burstable, json!({})));
    let toleration = json!({"tolerations": [{"key": "node.kubernetes.io/memory-pressure",
        "operator": "Exists", "effect": "NoSchedule"}]});
    create(&server, kubectl, &pod(NODE, "tolerating", json!({}), toleration));

    assert_refused(&server, kubectl, "besteffort", "MemoryPressure");
    server.wait_running(kubectl, "burstable", LIMIT);
    server.wait_running(kubectl, "tolerating", LIMIT);
    // The soft threshold's grace period (an hour) has not passed: nobody was evicted.
    assert_eq!(phase(&server, kubectl, "burstable"), "Running");
    assert_eq!(phase(&server, kubectl, "tolerating"), "Running");
    assert!(!server.log_text().contains("evicting a pod"), "{}", server.log_text());
}

/// Image names in the agent's store under `agent_dir`.
fn images(agent_dir: &Path) -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_skerry"))
        .arg("ctr")
        .arg("--data-dir")
        .arg(agent_dir)
        .args(["images", "ls", "-q"])
        .output()
        .unwrap();
    assert!(out.status.success(), "images ls: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

#[test]
fn disk_pressure_removes_unused_images_and_refuses_new_pods_but_not_static_ones() {
    const NODE: &str = "disk-pressure-node";
    const UNUSED: &str = "example.com/test/unused:1";
    let Some(kubectl) = agent_test_kubectl() else { return };
    // A second image with a different digest: its layer's file times differ from the test
    // image's (built in a later second by `start_single_node`).
    let tmp = tempfile::tempdir().unwrap();
    let (layout, _) = busybox_layout(tmp.path(), UNUSED);
    let unused_archive = archive_of(&layout, tmp.path());
    std::thread::sleep(Duration::from_millis(1100));
    let manifest = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "keeper"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [
            {"name": "c", "image": TEST_IMAGE, "command": ["sleep", "3600"]}]}})
    .to_string();
    let args = [
        "--eviction-hard",
        "imagefs.available<1Ei",
        // Young images are spared: the unused one goes only after this, by then the static
        // pod runs (its image is also spared as the image of an active pod).
        "--minimum-image-gc-age",
        "15s",
        // Only the disk-pressure reclaim removes images here, not the periodic GC.
        "--image-gc-high-threshold",
        "100",
    ];
    let server = start_single_node(&kubectl, NODE, &args, |data_dir| {
        let agent_dir = data_dir.join("agent");
        import_image(&agent_dir, &unused_archive);
        let manifests = agent_dir.join("pod-manifests");
        std::fs::create_dir_all(&manifests).unwrap();
        std::fs::write(manifests.join("keeper.json"), &manifest).unwrap();
    });
    let kubectl = kubectl.as_path();
    let agent_dir = server.data_dir.join("agent");
    let node = wait_condition(&server, kubectl, NODE, "DiskPressure");
    assert_eq!(condition(&node, "DiskPressure").unwrap()["reason"], "KubeletHasDiskPressure");
    let mirror = format!("keeper-{NODE}");
    server.wait_running(kubectl, &mirror, LIMIT);

    let left = eventually("the unused image is removed", LIMIT, || {
        let left = images(&agent_dir);
        (!left.iter().any(|i| i == UNUSED))
            .then_some(left.clone())
            .ok_or_else(|| format!("images: {left:?}\n{}", server.log_text()))
    });
    assert!(left.iter().any(|i| i == TEST_IMAGE), "the static pod's image was kept: {left:?}");

    let guaranteed = json!({"requests": {"cpu": "100m", "memory": "32Mi"},
                            "limits": {"cpu": "100m", "memory": "32Mi"}});
    create(&server, kubectl, &pod(NODE, "guaranteed", guaranteed, json!({})));
    assert_refused(&server, kubectl, "guaranteed", "DiskPressure");
    // The static pod is critical: admitted under pressure and never evicted.
    assert_eq!(phase(&server, kubectl, &mirror), "Running");
    assert!(server.log_text().contains("no pod to evict"), "{}", server.log_text());
    assert!(images(&agent_dir).iter().any(|i| i == TEST_IMAGE));
}
