//! Static pods end to end, as root: one `skerry server` with its embedded agent, a pod manifest
//! dropped into `DATA_DIR/agent/pod-manifests/` before start. The agent runs it without any
//! API object, the server shows it as a mirror pod (annotated, owned by the Node, with the
//! running status, `kubectl logs` through the tunnel); deleting the mirror pod through the API
//! only brings the mirror pod back (the container keeps running); editing the manifest replaces
//! the container and the mirror pod; removing the file stops the pod and deletes the mirror.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use common::agent::{agent_test_kubectl, eventually, start_single_node, TEST_IMAGE};

const NODE: &str = "static-node";
/// The mirror pod's name: the manifest's name and the node's.
const POD: &str = "web-static-node";
const LIMIT: Duration = Duration::from_secs(90);

fn manifest(version: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {{app: web}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {TEST_IMAGE}
    command: ["sh", "-c", "echo {version}; exec sleep 3600"]
"#
    )
}

fn annotation<'a>(pod: &'a Value, key: &str) -> &'a str {
    pod["metadata"]["annotations"][key].as_str().unwrap_or("")
}

/// `(containerID, restartCount)` of the mirror pod's running container, once it runs.
fn running(pod: &Value) -> Result<(String, i64), String> {
    let c = &pod["status"]["containerStatuses"][0];
    if pod["status"]["phase"] != "Running" || c["state"]["running"].is_null() {
        return Err(format!("not running: {}", pod["status"]));
    }
    let id = c["containerID"].as_str().unwrap_or("").to_string();
    Ok((id, c["restartCount"].as_i64().unwrap_or(-1)))
}

/// The embedded agent's runtime containers: (id, name, state), from `skerry ctr ps`.
fn containers(agent_dir: &Path, cgroup_root: &str) -> Vec<(String, String, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_skerry"))
        .arg("ctr")
        .arg("--data-dir")
        .arg(agent_dir)
        .arg("ps")
        .env("SKERRY_CGROUP_ROOT", cgroup_root)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.to_string(), f.next()?.to_string(), f.next()?.to_string()))
        })
        .collect()
}

#[test]
fn a_manifest_file_runs_a_static_pod_shown_as_a_mirror_pod() {
    let Some(kubectl) = agent_test_kubectl() else { return };
    let mut manifest_file = PathBuf::new();
    let server = start_single_node(&kubectl, NODE, &[], |data_dir| {
        let dir = data_dir.join("agent").join("pod-manifests");
        std::fs::create_dir_all(&dir).unwrap();
        manifest_file = dir.join("web.yaml");
        std::fs::write(&manifest_file, manifest("version-1")).unwrap();
        // A file that is not a Pod is logged and skipped; the others still run.
        std::fs::write(dir.join("not-a-pod.yaml"), "apiVersion: v1\nkind: ConfigMap\n").unwrap();
    });
    let agent_dir = server.data_dir.join("agent");
    let cgroup_root = format!("skerry-test-{NODE}-{}", std::process::id());
    let get_pod = || server.kubectl_json(&kubectl, &["get", "pod", POD, "-o", "json"]);
    let context = || {
        let state = server.kubectl(&kubectl, &["get", "pods,events", "-o", "wide"]);
        format!("{}\nserver log:\n{}", String::from_utf8_lossy(&state.stdout), server.log_text())
    };

    // The static pod runs and its mirror pod shows it.
    let (pod, (container_id, restarts)) = eventually("the mirror pod runs", LIMIT, || {
        let pod = get_pod()?;
        let run = running(&pod).map_err(|e| format!("{e}\n{}", context()))?;
        Ok((pod, run))
    });
    assert_eq!(restarts, 0, "{pod}");
    let hash = annotation(&pod, "kubernetes.io/config.hash").to_string();
    assert_eq!(hash.len(), 32, "{pod}");
    assert_eq!(annotation(&pod, "kubernetes.io/config.mirror"), hash, "{pod}");
    assert_eq!(annotation(&pod, "kubernetes.io/config.source"), "file", "{pod}");
    assert!(!annotation(&pod, "kubernetes.io/config.seen").is_empty(), "{pod}");
    assert_eq!(pod["spec"]["nodeName"], NODE, "{pod}");
    assert_eq!(pod["metadata"]["namespace"], "default", "{pod}");
    assert_ne!(pod["metadata"]["uid"], hash.as_str(), "the server assigns the mirror's UID");
    // No service account token volume: nothing in the static pod depends on the API.
    assert!(pod["spec"]["volumes"].is_null(), "{pod}");
    let node = server.kubectl_json(&kubectl, &["get", "node", NODE, "-o", "json"]).unwrap();
    let owners = pod["metadata"]["ownerReferences"].as_array().cloned().unwrap_or_default();
    assert_eq!(owners.len(), 1, "{pod}");
    assert_eq!(owners[0]["kind"], "Node");
    assert_eq!(owners[0]["name"], NODE);
    assert_eq!(owners[0]["uid"], node["metadata"]["uid"]);
    assert_eq!(owners[0]["controller"], true);
    // The runtime container is named by the static pod's UID (the hash).
    let runtime_id = container_id.strip_prefix("skerry://").unwrap_or_default().to_string();
    assert!(
        containers(&agent_dir, &cgroup_root)
            .iter()
            .any(|(id, name, _)| id == &runtime_id && name.starts_with(&hash)),
        "{:?}",
        containers(&agent_dir, &cgroup_root)
    );
    eventually("kubectl logs of the mirror pod", LIMIT, || {
        let out = server.kubectl(&kubectl, &["logs", POD]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("version-1") {
            Ok(())
        } else {
            Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)))
        }
    });
    assert!(
        server.log_text().contains("not-a-pod.yaml"),
        "the rejected manifest is logged by name"
    );

    // Deleting the mirror pod through the API: the mirror pod comes back, the container
    // does not restart.
    let first_uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
    // Bounded: kubectl's own wait has no limit by default.
    let deleted = server.kubectl(&kubectl, &["delete", "pod", POD, "--wait=true", "--timeout=60s"]);
    if !deleted.status.success() {
        panic!("kubectl delete pod: {}\n{}", String::from_utf8_lossy(&deleted.stderr), context());
    }
    let back = eventually("the mirror pod is recreated with its status", LIMIT, || {
        let pod = get_pod()?;
        if pod["metadata"]["uid"] == first_uid.as_str() {
            return Err("still the deleted mirror pod".into());
        }
        running(&pod)?;
        Ok(pod)
    });
    assert_eq!(annotation(&back, "kubernetes.io/config.mirror"), hash, "{back}");
    assert_eq!(running(&back).unwrap(), (container_id.clone(), 0), "{back}");
    let still: Vec<_> = containers(&agent_dir, &cgroup_root);
    assert!(
        still
            .iter()
            .any(|(id, _, state)| id == &runtime_id && state.eq_ignore_ascii_case("running")),
        "{still:?}"
    );

    // A changed manifest: a new static pod (new hash, new container), a new mirror pod.
    std::fs::write(&manifest_file, manifest("version-2")).unwrap();
    let (changed, new_id) = eventually("the mirror pod of the new manifest runs", LIMIT, || {
        let pod = get_pod()?;
        let mirror = annotation(&pod, "kubernetes.io/config.mirror");
        if mirror == hash || mirror.is_empty() {
            return Err(format!("still mirroring {mirror:?}"));
        }
        let (id, _) = running(&pod)?;
        Ok((pod, id))
    });
    assert_ne!(new_id, container_id, "{changed}");
    let new_hash = annotation(&changed, "kubernetes.io/config.hash").to_string();
    assert_eq!(annotation(&changed, "kubernetes.io/config.mirror"), new_hash);
    eventually("kubectl logs show the new spec", LIMIT, || {
        let out = server.kubectl(&kubectl, &["logs", POD]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("version-2") {
            Ok(())
        } else {
            Err(text)
        }
    });
    eventually("the old static pod's container is removed", LIMIT, || {
        let all = containers(&agent_dir, &cgroup_root);
        match all.iter().any(|(_, name, _)| name.starts_with(&hash)) {
            true => Err(format!("{all:?}")),
            false => Ok(()),
        }
    });

    // The file removed: the pod stops and the mirror pod goes.
    std::fs::remove_file(&manifest_file).unwrap();
    eventually("the mirror pod is deleted", LIMIT, || {
        let out = server.kubectl(&kubectl, &["get", "pod", POD, "-o", "name"]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() && err.contains("NotFound") {
            Ok(())
        } else {
            Err(format!("{}{err}", String::from_utf8_lossy(&out.stdout)))
        }
    });
    eventually("the static pod's containers are removed", LIMIT, || {
        let all = containers(&agent_dir, &cgroup_root);
        match all.iter().any(|(_, name, _)| name.starts_with(&new_hash)) {
            true => Err(format!("{all:?}")),
            false => Ok(()),
        }
    });
}
