//! The node agent end to end, as root: the real `skerry server` (without its embedded agent)
//! and a real `skerry agent` in a network namespace made by the test, real containers from a
//! locally built busybox image, kubectl 1.32 as the client. Pods are bound with
//! `spec.nodeName` by the test (no scheduler involved).

mod common;

use std::path::Path;
use std::time::Duration;

use common::agent::{
    agent_test_kubectl, enter_test_netns, eventually, SkerryAgent, NODE_IP, TEST_IMAGE,
};
use common::images::{archive_of, busybox_layout};
use common::server::{ok, SkerryServer};
use serde_json::Value;

/// A server and an agent (node `node1`) in a fresh network namespace, the test image imported.
fn cluster() -> (SkerryServer, SkerryAgent) {
    enter_test_netns();
    let server = SkerryServer::start();
    let mut agent = SkerryAgent::new(&server, "node1");
    let tmp = tempfile::tempdir().unwrap();
    let (layout, _) = busybox_layout(tmp.path(), TEST_IMAGE);
    agent.import_image(&archive_of(&layout, tmp.path()));
    agent.start();
    (server, agent)
}

fn pod(server: &SkerryServer, kubectl: &Path, name: &str) -> Result<Value, String> {
    server.kubectl_json(kubectl, &["get", "pod", name, "-o", "json"])
}

/// Creates a pod bound to node1 from a spec fragment.
fn create_pod(server: &SkerryServer, kubectl: &Path, name: &str, spec: Value) {
    let mut spec = spec;
    spec["nodeName"] = "node1".into();
    let doc = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"}, "spec": spec});
    ok(
        server.kubectl_stdin(
            kubectl,
            &["create", "--validate=false", "-f", "-"],
            Some(&doc.to_string()),
        ),
        "kubectl create",
    );
}

/// Waits until `check` accepts the pod, printing the agent log on failure.
fn wait_pod(
    server: &SkerryServer,
    agent: &SkerryAgent,
    kubectl: &Path,
    name: &str,
    what: &str,
    limit: Duration,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        eventually(what, limit, || {
            let p = pod(server, kubectl, name)?;
            if check(&p) {
                Ok(p)
            } else {
                Err(serde_json::to_string_pretty(&p["status"]).unwrap_or_default())
            }
        })
    }));
    match result {
        Ok(p) => p,
        Err(e) => {
            eprintln!("agent log:\n{}", agent.log_text());
            std::panic::resume_unwind(e)
        }
    }
}

fn condition(p: &Value, typ: &str) -> String {
    p["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == typ))
        .map(|c| c["status"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

fn container_status<'a>(p: &'a Value, field: &str, name: &str) -> &'a Value {
    p["status"][field]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or(&Value::Null)
}

fn running_ready(p: &Value) -> bool {
    p["status"]["phase"] == "Running" && condition(p, "Ready") == "True"
}

// The kubelet's basic contract: a bound pod runs, reports Running/Ready with a pod IP from the
// node's pod CIDR, its output reaches the runtime's log; restartPolicy Never with exit 0 ends
// Succeeded; a failing init container blocks the app container (and fails a Never pod); and
// `kubectl delete pod` stops the containers and the object disappears.
#[test]
fn pods_run_report_status_and_are_deleted() {
    let Some(kubectl) = agent_test_kubectl() else { return };
    let (server, agent) = cluster();
    eventually("node1 Ready", Duration::from_secs(60), || {
        let node = server.kubectl_json(&kubectl, &["get", "node", "node1", "-o", "json"])?;
        let ready = node["status"]["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
        let runtime = &node["status"]["nodeInfo"]["containerRuntimeVersion"];
        if ready && runtime.as_str().is_some_and(|r| r.starts_with("skerry://")) {
            Ok(())
        } else {
            Err(format!("{node}\n{}", agent.log_text()))
        }
    });

    create_pod(
        &server,
        &kubectl,
        "web",
        serde_json::json!({"containers": [{"name": "main", "image": TEST_IMAGE,
            "imagePullPolicy": "IfNotPresent",
            "command": ["sh", "-c", "echo hello from the pod; exec sleep 3600"]}]}),
    );
    let p = wait_pod(
        &server,
        &agent,
        &kubectl,
        "web",
        "web Running and Ready",
        Duration::from_secs(60),
        running_ready,
    );
    let ip = p["status"]["podIP"].as_str().unwrap_or_default().to_string();
    assert!(ip.starts_with("10.42.0."), "pod IP {ip:?} outside the node's pod CIDR");
    assert_eq!(p["status"]["hostIP"], NODE_IP);
    assert_eq!(p["status"]["qosClass"], "BestEffort");
    assert!(p["status"]["startTime"].is_string());
    let main = container_status(&p, "containerStatuses", "main");
    assert_eq!(main["ready"], true);
    assert_eq!(main["restartCount"], 0);
    assert!(main["state"]["running"]["startedAt"].is_string());
    let id = main["containerID"].as_str().unwrap_or_default().to_string();
    assert!(id.starts_with("skerry://"), "{id}");
    assert!(main["imageID"].as_str().unwrap_or_default().contains("@sha256:"));
    let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    let runtime_name = format!("{uid}_main_0");
    eventually("log in the runtime", Duration::from_secs(10), || {
        let out = agent.ctr(&["logs", &runtime_name]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("hello from the pod") {
            Ok(())
        } else {
            Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)))
        }
    });

    create_pod(
        &server,
        &kubectl,
        "job",
        serde_json::json!({"restartPolicy": "Never", "containers": [{"name": "once",
            "image": TEST_IMAGE, "imagePullPolicy": "IfNotPresent", "command": ["true"]}]}),
    );
    let p =
        wait_pod(&server, &agent, &kubectl, "job", "job Succeeded", Duration::from_secs(60), |p| {
            p["status"]["phase"] == "Succeeded"
        });
    let once = container_status(&p, "containerStatuses", "once");
    assert_eq!(once["state"]["terminated"]["reason"], "Completed");
    assert_eq!(once["state"]["terminated"]["exitCode"], 0);
    assert_eq!(condition(&p, "Ready"), "False");

    create_pod(
        &server,
        &kubectl,
        "blocked",
        serde_json::json!({"restartPolicy": "Never",
            "initContainers": [{"name": "init", "image": TEST_IMAGE, "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", "exit 3"]}],
            "containers": [{"name": "app", "image": TEST_IMAGE, "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", "3600"]}]}),
    );
    let p = wait_pod(
        &server,
        &agent,
        &kubectl,
        "blocked",
        "blocked Failed",
        Duration::from_secs(60),
        |p| p["status"]["phase"] == "Failed",
    );
    let init = container_status(&p, "initContainerStatuses", "init");
    assert_eq!(init["state"]["terminated"]["exitCode"], 3);
    assert_eq!(init["state"]["terminated"]["reason"], "Error");
    let app = container_status(&p, "containerStatuses", "app");
    assert_eq!(app["state"]["waiting"]["reason"], "PodInitializing");
    assert_eq!(condition(&p, "Initialized"), "False");
    let blocked_uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    assert!(
        !agent
            .containers()
            .iter()
            .any(|(_, name, _)| name.starts_with(&format!("{blocked_uid}_app_"))),
        "the app container was created although its init container failed"
    );

    // Volumes: a configMap, an emptyDir an init container fills (mounted by subPath), and the
    // projected service account token.
    server.kubectl_stdin(
        &kubectl,
        &["apply", "-f", "-"],
        Some(
            r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "greeting"},
                 "data": {"greeting": "hello from a configMap"}}"#,
        ),
    );
    create_pod(
        &server,
        &kubectl,
        "vols",
        serde_json::json!({"restartPolicy": "Never",
            "volumes": [{"name": "cfg", "configMap": {"name": "greeting"}},
                        {"name": "scratch", "emptyDir": {}}],
            "initContainers": [{"name": "fill", "image": TEST_IMAGE, "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", "mkdir -p /scratch/sub && echo written by init > /scratch/sub/note"],
                "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]}],
            "containers": [{"name": "read", "image": TEST_IMAGE, "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", "cat /cfg/greeting /data/note && \
                    test -s /var/run/secrets/kubernetes.io/serviceaccount/token && echo token-ok"],
                "volumeMounts": [{"name": "cfg", "mountPath": "/cfg"},
                                 {"name": "scratch", "mountPath": "/data", "subPath": "sub"}]}]}),
    );
    let p =
        wait_pod(&server, &agent, &kubectl, "vols", "vols done", Duration::from_secs(60), |p| {
            matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
        });
    let vols_uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    let out = agent.ctr(&["logs", &format!("{vols_uid}_read_0")]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    for line in ["hello from a configMap", "written by init", "token-ok"] {
        assert!(text.contains(line), "{line:?} missing from {text:?}\n{}", agent.log_text());
    }
    assert_eq!(p["status"]["phase"], "Succeeded", "{p}");

    // Deletion: the agent stops the containers, then finishes the delete.
    ok(server.kubectl(&kubectl, &["delete", "pod", "web", "--wait=false"]), "delete");
    eventually("web gone from the server", Duration::from_secs(60), || {
        match pod(&server, &kubectl, "web") {
            Err(e) if e.contains("NotFound") => Ok(()),
            Err(e) => Err(e),
            Ok(p) => Err(p["metadata"].to_string()),
        }
    });
    eventually("web's containers removed", Duration::from_secs(30), || {
        let left: Vec<_> =
            agent.containers().into_iter().filter(|(_, name, _)| name.starts_with(&uid)).collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    });
}

// CrashLoopBackOff: a container that keeps failing is restarted with growing delays; the
// status shows the waiting reason, the last termination and a growing restartCount.
#[test]
fn a_crashing_container_goes_to_crash_loop_back_off() {
    let Some(kubectl) = agent_test_kubectl() else { return };
    let (server, agent) = cluster();
    create_pod(
        &server,
        &kubectl,
        "crash",
        serde_json::json!({"containers": [{"name": "c", "image": TEST_IMAGE,
            "imagePullPolicy": "IfNotPresent", "command": ["sh", "-c", "echo dying; exit 2"]}]}),
    );
    let p = wait_pod(
        &server,
        &agent,
        &kubectl,
        "crash",
        "CrashLoopBackOff, restartCount >= 2",
        Duration::from_secs(90),
        |p| {
            let c = container_status(p, "containerStatuses", "c");
            c["state"]["waiting"]["reason"] == "CrashLoopBackOff"
                && c["restartCount"].as_i64() >= Some(2)
        },
    );
    let c = container_status(&p, "containerStatuses", "c");
    assert_eq!(c["lastState"]["terminated"]["exitCode"], 2);
    assert_eq!(c["lastState"]["terminated"]["reason"], "Error");
    assert!(c["state"]["waiting"]["message"].as_str().unwrap_or_default().contains("back-off"));
    assert_eq!(p["status"]["phase"], "Running");
    assert_eq!(condition(&p, "Ready"), "False");
    let events = ok(
        server.kubectl(
            &kubectl,
            &["get", "events", "--field-selector", "involvedObject.name=crash", "-o", "json"],
        ),
        "events",
    );
    assert!(events.contains("BackOff") && events.contains("Started"), "{events}");
}

// Offline autonomy and re-adoption: kill -9 of the agent leaves the container running and,
// once back, the agent reports the same container (no restart); with the server stopped the
// pod keeps running and a container that dies meanwhile is restarted; when the server
// returns the status says so.
#[test]
fn agent_restarts_and_server_outages_do_not_stop_pods() {
    let Some(kubectl) = agent_test_kubectl() else { return };
    let (mut server, mut agent) = cluster();
    create_pod(
        &server,
        &kubectl,
        "steady",
        serde_json::json!({"containers": [{"name": "s", "image": TEST_IMAGE,
            "imagePullPolicy": "IfNotPresent", "command": ["sleep", "3600"]}]}),
    );
    let p = wait_pod(
        &server,
        &agent,
        &kubectl,
        "steady",
        "steady Running",
        Duration::from_secs(60),
        running_ready,
    );
    let id = container_status(&p, "containerStatuses", "s")["containerID"].clone();
    let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    let name0 = format!("{uid}_s_0");

    agent.kill9();
    let running: Vec<_> =
        agent.containers().into_iter().filter(|(_, n, s)| n == &name0 && s == "running").collect();
    assert_eq!(running.len(), 1, "the container must survive the agent: {:?}", agent.containers());
    agent.start();
    // The restarted agent writes its status again; the container is the same one.
    ok(server.kubectl(&kubectl, &["annotate", "pod", "steady", "poke=1"]), "annotate");
    std::thread::sleep(Duration::from_secs(3));
    let p = wait_pod(
        &server,
        &agent,
        &kubectl,
        "steady",
        "steady still Running",
        Duration::from_secs(30),
        running_ready,
    );
    let s = container_status(&p, "containerStatuses", "s");
    assert_eq!(s["containerID"], id, "the agent restart replaced the container");
    assert_eq!(s["restartCount"], 0);

    // The server goes away; the container dies; the agent restarts it from what it knows.
    server.kill();
    let out = agent.ctr(&["stop", "-t", "0", &name0]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let name1 = format!("{uid}_s_1");
    eventually("restarted while the server is down", Duration::from_secs(60), || {
        let all = agent.containers();
        if all.iter().any(|(_, n, s)| n == &name1 && s == "running") {
            Ok(())
        } else {
            Err(format!("{all:?}\n{}", agent.log_text()))
        }
    });
    // And an agent restart while offline keeps it running, from the local cache.
    agent.kill9();
    agent.start();
    std::thread::sleep(Duration::from_secs(3));
    let all = agent.containers();
    assert!(
        all.iter().any(|(_, n, s)| n == &name1 && s == "running"),
        "{all:?}\n{}",
        agent.log_text()
    );
    assert!(!all.iter().any(|(_, n, _)| n == &format!("{uid}_s_2")), "restarted again: {all:?}");

    server.restart_same_port();
    let p = wait_pod(
        &server,
        &agent,
        &kubectl,
        "steady",
        "status after the outage",
        Duration::from_secs(60),
        |p| running_ready(p) && container_status(p, "containerStatuses", "s")["restartCount"] == 1,
    );
    assert_eq!(
        container_status(&p, "containerStatuses", "s")["lastState"]["terminated"]["exitCode"],
        137
    );
}
