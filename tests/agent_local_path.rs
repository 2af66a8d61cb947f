//! Local-path volumes end to end, as root: one `skerry server` with its embedded agent, a claim
//! of the default class and a pod using it. Deleting the pod and the claim deletes the volume;
//! the agent of the node it is pinned to (here the server's own, talking to the API as any
//! node does) removes the directory and the finalizer, and the volume is gone.
//!
//! The agent does not mount pod volumes yet (`volumes::VolumeManager` is not wired into the pod
//! worker), so the test writes the volume's data itself, where the pod's hostPath
//! (`DirectoryOrCreate`) would have made it.

mod common;

use std::time::Duration;

use common::agent::{agent_test_kubectl, eventually, start_single_node, TEST_IMAGE};
use common::server::ok;

const NODE: &str = "lp-node";

fn manifest() -> String {
    format!(
        r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
  namespace: default
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests: {{storage: 1Gi}}
---
apiVersion: v1
kind: Pod
metadata:
  name: writer
  namespace: default
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: sh
    image: {TEST_IMAGE}
    command: ["sh", "-c", "mkdir -p /data/sub && echo kept > /data/sub/file && exec sleep 3600"]
    volumeMounts:
    - {{name: data, mountPath: /data}}
  volumes:
  - name: data
    persistentVolumeClaim: {{claimName: data}}
"#
    )
}

#[test]
fn a_deleted_claims_directory_is_removed_by_its_nodes_agent() {
    let Some(kubectl) = agent_test_kubectl() else { return };
    let args = ["--default-local-storage-path", "{dir}/storage"];
    let server = start_single_node(&kubectl, NODE, &args, |_| {});
    let base = server.dir.path().join("storage");
    let on_failure = || {
        let state = server.kubectl(&kubectl, &["get", "pv,pvc,pods,events", "-o", "wide"]);
        format!(
            "cluster:\n{}{}\nserver log:\n{}",
            String::from_utf8_lossy(&state.stdout),
            String::from_utf8_lossy(&state.stderr),
            server.log_text()
        )
    };

    let out = server.kubectl_stdin(&kubectl, &["apply", "-f", "-"], Some(&manifest()));
    ok(out, "kubectl apply");
    server.wait_running(&kubectl, "writer", Duration::from_secs(60));
    let pv = server.kubectl_json(&kubectl, &["get", "pvc", "data", "-o", "json"]).unwrap();
    let volume = pv["spec"]["volumeName"].as_str().unwrap().to_string();
    let dir = base.join(format!("{volume}_default_data"));
    let pv = server.kubectl_json(&kubectl, &["get", "pv", &volume, "-o", "json"]).unwrap();
    assert_eq!(pv["spec"]["hostPath"]["path"], dir.to_string_lossy().as_ref(), "{pv}");
    // The pod wrote its data into the volume on the node; a directory of some other volume
    // sits beside it.
    eventually("the pod's file in the volume directory", Duration::from_secs(30), || {
        let text = std::fs::read_to_string(dir.join("sub/file")).map_err(|e| e.to_string())?;
        (text == "kept\n").then_some(()).ok_or(text)
    });
    let other = base.join("pvc-other_default_data");
    std::fs::create_dir_all(&other).unwrap();

    ok(server.kubectl(&kubectl, &["delete", "pod", "writer", "--wait=true"]), "delete pod");
    ok(server.kubectl(&kubectl, &["delete", "pvc", "data", "--wait=true"]), "delete pvc");
    eventually("the volume and its directory are gone", Duration::from_secs(90), || {
        let pvs = server.kubectl_json(&kubectl, &["get", "pv", "-o", "json"])?;
        let left = pvs["items"].as_array().map_or(0, Vec::len);
        if left == 0 && !dir.exists() {
            Ok(())
        } else {
            Err(format!("{left} volumes, {dir:?} exists: {}\n{}", dir.exists(), on_failure()))
        }
    });
    assert!(other.exists(), "only the deleted volume's directory is removed");
}
