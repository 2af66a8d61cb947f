//! Node-pressure eviction end to end, as root: one `skerry server` with its embedded agent (in
//! a network namespace made by the test) runs a BestEffort and a Guaranteed pod in real
//! containers; the server is then restarted with `--eviction-hard memory.available<MemTotal`,
//! a threshold this machine's real measurements always cross (available memory is capacity
//! minus a working set that is never zero). The restarted agent re-adopts the containers,
//! reports MemoryPressure=True (and the node lifecycle controller adds the memory-pressure
//! NoSchedule taint), and evicts one pod per monitoring interval in the kubelet's order: the
//! BestEffort pod, using more than it requested, goes first, with phase Failed, reason
//! Evicted, the kubelet's message, a DisruptionTarget condition and an `Evicted` event; the
//! Guaranteed pod, within its request, only after it.

mod common;

use std::time::Duration;

use common::agent::{agent_test_kubectl, eventually, mem_total_kib, start_single_node, TEST_IMAGE};
use common::server::{ok, SkerryServer};
use serde_json::{json, Value};

const NODE: &str = "eviction-node";
const LIMIT: Duration = Duration::from_secs(90);

/// A pod bound to the node that sleeps; `memory`: requests = limits (Guaranteed).
fn pod(name: &str, memory: Option<&str>) -> Value {
    let resources = match memory {
        Some(m) => json!({"requests": {"cpu": "100m", "memory": m},
                          "limits": {"cpu": "100m", "memory": m}}),
        None => json!({}),
    };
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "main", "image": TEST_IMAGE, "command": ["sleep", "3600"],
                                 "resources": resources}]}})
}

fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    object["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_)
}

/// The pod once it is Failed with reason Evicted.
fn evicted(server: &SkerryServer, kubectl: &std::path::Path, name: &str) -> Result<Value, String> {
    let pod = server.kubectl_json(kubectl, &["get", "pod", name, "-o", "json"])?;
    if pod["status"]["phase"] == "Failed" && pod["status"]["reason"] == "Evicted" {
        Ok(pod)
    } else {
        Err(format!("{name} not evicted: {}", pod["status"]))
    }
}

#[test]
fn memory_pressure_evicts_besteffort_before_guaranteed() {
    let Some(kubectl) = agent_test_kubectl() else { return };
    let mut server = start_single_node(&kubectl, NODE, &[], |_| {});
    let kubectl = kubectl.as_path();
    for p in [pod("besteffort", None), pod("guaranteed", Some("64Mi"))] {
        let out = server.kubectl_stdin(kubectl, &["create", "-f", "-"], Some(&p.to_string()));
        ok(out, "kubectl create");
    }
    server.wait_running(kubectl, "besteffort", LIMIT);
    server.wait_running(kubectl, "guaranteed", LIMIT);
    let qos = |name: &str| {
        let pod = server.kubectl_json(kubectl, &["get", "pod", name, "-o", "json"]).unwrap();
        pod["status"]["qosClass"].as_str().unwrap_or_default().to_string()
    };
    assert_eq!(
        (qos("besteffort").as_str(), qos("guaranteed").as_str()),
        ("BestEffort", "Guaranteed")
    );

    // Both pods run; now the node gets a threshold above anything it can have available.
    let threshold = format!("{}Ki", mem_total_kib());
    eprintln!("restarting with --eviction-hard memory.available<{threshold}");
    server.add_args(&[
        "--eviction-hard",
        &format!("memory.available<{threshold}"),
        "--eviction-pressure-transition-period",
        "5s",
    ]);
    server.restart_same_port();

    let node = eventually("the Node reports MemoryPressure and is tainted", LIMIT, || {
        let node = server.kubectl_json(kubectl, &["get", "node", NODE, "-o", "json"])?;
        let pressure = condition(&node, "MemoryPressure").is_some_and(|c| c["status"] == "True");
        let tainted = node["spec"]["taints"].as_array().into_iter().flatten().any(|t| {
            t["key"] == "node.kubernetes.io/memory-pressure" && t["effect"] == "NoSchedule"
        });
        (pressure && tainted).then_some(node.clone()).ok_or_else(|| node.to_string())
    });
    let memory = condition(&node, "MemoryPressure").unwrap();
    assert_eq!(memory["reason"], "KubeletHasInsufficientMemory", "{memory}");
    // Disk and PIDs were not given thresholds: no pressure there.
    assert_eq!(condition(&node, "DiskPressure").unwrap()["status"], "False");
    assert_eq!(condition(&node, "PIDPressure").unwrap()["status"], "False");
    // Allocatable holds the threshold back.
    assert_eq!(node["status"]["allocatable"]["memory"], "0Ki", "{}", node["status"]);

    let besteffort = eventually("the BestEffort pod is evicted", LIMIT, || {
        evicted(&server, kubectl, "besteffort").map_err(|e| format!("{e}\n{}", server.log_text()))
    });
    // The Guaranteed pod goes only later (if it has gone already).
    let guaranteed =
        server.kubectl_json(kubectl, &["get", "pod", "guaranteed", "-o", "json"]).unwrap();
    let since = |pod: &Value| {
        condition(pod, "DisruptionTarget")
            .and_then(|c| c["lastTransitionTime"].as_str())
            .map(str::to_string)
    };
    let first = since(&besteffort).expect("the evicted pod has a DisruptionTarget condition");
    if let Some(second) = since(&guaranteed) {
        assert!(second >= first, "guaranteed evicted at {second}, before besteffort at {first}");
    }

    let message = besteffort["status"]["message"].as_str().unwrap_or_default();
    let expected = format!(
        "The node was low on resource: memory. Threshold quantity: {threshold}, available: "
    );
    assert!(message.starts_with(&expected), "{message}");
    assert!(
        message.contains("Container main was using ")
            && message.ends_with(", request is 0, has larger consumption of memory. "),
        "{message}"
    );
    let target = condition(&besteffort, "DisruptionTarget").unwrap();
    assert_eq!(target["status"], "True");
    assert_eq!(target["reason"], "TerminationByKubelet");
    let main = &besteffort["status"]["containerStatuses"][0];
    assert!(main["state"]["terminated"].is_object(), "{main}");

    let events = eventually("an Evicted event names the BestEffort pod", LIMIT, || {
        let events = server.kubectl_json(kubectl, &["get", "events", "-o", "json"])?;
        let found = events["items"].as_array().into_iter().flatten().find(|e| {
            e["reason"] == "Evicted"
                && e["involvedObject"]["name"] == "besteffort"
                && e["type"] == "Warning"
        });
        found.cloned().ok_or_else(|| events.to_string())
    });
    assert_eq!(events["message"].as_str(), Some(message), "{events}");

    // The pressure stays, so the next interval takes the Guaranteed pod: within its request,
    // its message names no container.
    let guaranteed = eventually("the Guaranteed pod is evicted next", LIMIT, || {
        evicted(&server, kubectl, "guaranteed")
    });
    let message = guaranteed["status"]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with(&expected) && !message.contains("Container"), "{message}");
    assert!(since(&guaranteed).unwrap() >= first);
}
