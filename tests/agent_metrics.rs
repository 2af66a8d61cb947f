//! The resource metrics API end to end, as root: one `skerry server` with its embedded agent
//! (in a network namespace made by the test), a pod that spins on the CPU and one that
//! sleeps, in real containers, and kubectl 1.32's `top pods` and `top nodes` — served by the
//! API server's built-in `metrics.k8s.io` from the usage the agent reads in the pods' cgroups
//! and reports over its tunnel. Also: label selectors, `get` of one PodMetrics, discovery, and
//! read access through the `view` role's aggregation.

mod common;

use std::path::Path;
use std::time::Duration;

use common::agent::{agent_test_kubectl, eventually, start_single_node, TEST_IMAGE};
use common::server::{ok, SkerryServer};
use serde_json::{json, Value};

const NODE: &str = "metrics-node";

/// A pod bound to the node running `command`, labelled `load=<load>`.
fn pod(name: &str, load: &str, command: &[&str]) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default",
                     "labels": {"app": "metrics-test", "load": load}},
        "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "main", "image": TEST_IMAGE, "command": command}]}})
}

/// Millicores of a `kubectl top` CPU column (`998m`, `1`, `0m`).
fn millicores(text: &str) -> u64 {
    match text.strip_suffix('m') {
        Some(m) => m.parse().unwrap_or_else(|_| panic!("bad CPU column {text:?}")),
        None => text.parse::<u64>().map(|c| c * 1000).unwrap_or_else(|_| panic!("bad {text:?}")),
    }
}

/// `kubectl top pods --no-headers` as (name, millicores, memory column).
fn top_pods(
    server: &SkerryServer,
    kubectl: &Path,
    extra: &[&str],
) -> Result<Vec<(String, u64, String)>, String> {
    let mut args = vec!["top", "pods", "--no-headers"];
    args.extend_from_slice(extra);
    let out = server.kubectl(kubectl, &args);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            (cols.len() == 3)
                .then(|| (cols[0].to_string(), millicores(cols[1]), cols[2].to_string()))
        })
        .collect())
}

#[test]
fn kubectl_top_shows_the_busy_pod_above_the_idle_one() {
    let Some(kubectl) = agent_test_kubectl() else { return };
    let server = start_single_node(&kubectl, NODE, &[], |_| {});
    let kubectl = kubectl.as_path();

    // Discovery lists the group, as `kubectl top` checks before asking.
    let resources =
        server.kubectl_json(kubectl, &["get", "--raw", "/apis/metrics.k8s.io/v1beta1"]).unwrap();
    let names: Vec<&str> = resources["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, ["nodes", "pods"], "{resources}");
    let groups = ok(server.kubectl(kubectl, &["api-versions"]), "kubectl api-versions");
    assert!(groups.lines().any(|l| l == "metrics.k8s.io/v1beta1"), "{groups}");

    let busy = pod("busy", "busy", &["sh", "-c", "while :; do :; done"]);
    let idle = pod("idle", "idle", &["sleep", "3600"]);
    for p in [&busy, &idle] {
        let out = server.kubectl_stdin(kubectl, &["create", "-f", "-"], Some(&p.to_string()));
        ok(out, "kubectl create");
    }
    server.wait_running(kubectl, "busy", Duration::from_secs(90));
    server.wait_running(kubectl, "idle", Duration::from_secs(90));

    // Rates need two readings of each container (the agent reads every 10 s): wait until
    // `kubectl top pods` shows both pods, then compare them once.
    let top = eventually("kubectl top pods shows both pods", Duration::from_secs(90), || {
        let rows = top_pods(&server, kubectl, &[])?;
        let has = |n: &str| rows.iter().any(|(name, _, _)| name == n);
        if has("busy") && has("idle") {
            Ok(rows)
        } else {
            Err(format!("{rows:?}\nserver log:\n{}", server.log_text()))
        }
    });
    eprintln!("kubectl top pods: {top:?}");
    let row = |n: &str| top.iter().find(|(name, _, _)| name == n).cloned().unwrap();
    let (busy_cpu, idle_cpu) = (row("busy").1, row("idle").1);
    assert!(
        busy_cpu >= idle_cpu + 100,
        "busy {busy_cpu}m should be clearly above idle {idle_cpu}m: {top:?}"
    );
    // Memory is shown in binary units (a few hundred KiB round to `0Mi`).
    assert!(row("busy").2.ends_with("Mi"), "{top:?}");

    // Label selectors reach the metrics API.
    let selected = top_pods(&server, kubectl, &["-l", "load=busy"]).unwrap();
    let selected: Vec<&str> = selected.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(selected, ["busy"]);

    // One PodMetrics, as metrics-server shapes it.
    let metrics = server
        .kubectl_json(
            kubectl,
            &["get", "--raw", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/busy"],
        )
        .unwrap();
    assert_eq!(metrics["kind"], "PodMetrics", "{metrics}");
    assert_eq!(metrics["metadata"]["labels"]["load"], "busy", "{metrics}");
    assert_eq!(metrics["containers"][0]["name"], "main", "{metrics}");
    assert!(metrics["window"].as_str().is_some_and(|w| w.ends_with('s')), "{metrics}");
    assert!(metrics["containers"][0]["usage"]["cpu"].is_string(), "{metrics}");
    // A running shell has a working set: some KiB at least, never zero.
    let memory = metrics["containers"][0]["usage"]["memory"].as_str().unwrap_or("0");
    assert_ne!(memory, "0", "{metrics}");

    // The node: kubectl top nodes shows it with CPU and memory in use.
    let out = ok(server.kubectl(kubectl, &["top", "nodes", "--no-headers"]), "kubectl top nodes");
    eprintln!("kubectl top nodes: {out}");
    let line = out.lines().find(|l| l.starts_with(NODE)).unwrap_or_else(|| panic!("{out}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols.len(), 5, "NAME CPU CPU% MEMORY MEMORY%: {line}");
    // The spinning pod alone keeps a good part of a core busy on the node.
    assert!(millicores(cols[1]) >= 100, "{line}");
    assert!(cols[3].ends_with("Mi") || cols[3].ends_with("Gi"), "{line}");

    // The agent's Prometheus endpoints through the API server (`nodes/<n>/proxy`, as a
    // Prometheus scraping kubelets through the apiserver does), over the agent's tunnel.
    let path = format!("/api/v1/nodes/{NODE}/proxy/metrics/resource");
    let text = ok(server.kubectl(kubectl, &["get", "--raw", &path]), "nodes proxy");
    assert!(
        text.lines().any(|l| l.starts_with(
            "container_cpu_usage_seconds_total{container=\"main\",namespace=\"default\",pod=\"busy\"}"
        )),
        "{text}"
    );
    assert!(text.contains("node_memory_working_set_bytes"), "{text}");
    let out =
        server.kubectl(kubectl, &["get", "--raw", "/api/v1/nodes/no-such-node/proxy/metrics"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("NotFound"), "{out:?}");

    // Whoever can view a namespace can see its pods' usage (`view` aggregates the metrics
    // reader role), but not the nodes' without a cluster-wide grant.
    let out = server.kubectl(
        kubectl,
        &[
            "create",
            "rolebinding",
            "alice-view",
            "--clusterrole=view",
            "--user=alice",
            "-n",
            "default",
        ],
    );
    ok(out, "kubectl create rolebinding");
    let as_alice = eventually("alice can read pod metrics", Duration::from_secs(20), || {
        top_pods(&server, kubectl, &["--as", "alice"])
    });
    assert!(as_alice.iter().any(|(n, _, _)| n == "busy"), "{as_alice:?}");
    let out = server.kubectl(kubectl, &["top", "nodes", "--as", "alice"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("forbidden") || err.contains("Forbidden"), "{err}");
    // A namespace viewer may not reach the node's agent.
    let out = server.kubectl(kubectl, &["get", "--raw", &path, "--as", "alice"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("Forbidden"), "{err}");
}
