//! Content volumes stay current in a running pod, end to end as root: one `skerry server` with
//! its embedded agent, a locally built busybox image, kubectl 1.32. A pod that only sleeps
//! mounts a configMap, an optional secret with an item list, a downwardAPI volume of its
//! labels and a projected service account token (600 s, the minimum). Patching the objects
//! and the pod's labels changes what `kubectl exec cat` shows inside the container, through
//! the atomic writer's `..data` symlink, within the kubelet's sync period.

mod common;

use std::time::Duration;

use common::agent::{agent_test_kubectl, eventually, start_single_node, TEST_IMAGE};
use common::server::ok;

const NODE: &str = "refresh-node";
/// The sweep runs every 60 s; a little slack for the exec round trips.
const SYNC_LIMIT: Duration = Duration::from_secs(90);

/// Drops the `password` key and makes `user` "root".
const SECRET_PATCH: &str = r#"[{"op": "remove", "path": "/data/password"},
    {"op": "replace", "path": "/data/user", "value": "cm9vdA=="}]"#;

fn manifest() -> String {
    format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{name: settings, namespace: default}}
data: {{level: debug}}
---
apiVersion: v1
kind: Secret
metadata: {{name: creds, namespace: default}}
stringData: {{user: admin, password: s3cr3t}}
---
apiVersion: v1
kind: Pod
metadata:
  name: reader
  namespace: default
  labels: {{app: reader}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: sh
    image: {TEST_IMAGE}
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
    volumeMounts:
    - {{name: cfg, mountPath: /cfg}}
    - {{name: sec, mountPath: /sec}}
    - {{name: info, mountPath: /info}}
    - {{name: tok, mountPath: /tok}}
  volumes:
  - name: cfg
    configMap: {{name: settings}}
  - name: sec
    secret:
      secretName: creds
      optional: true
      items: [{{key: user, path: user}}, {{key: password, path: password}}]
  - name: info
    downwardAPI:
      items: [{{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}]
  - name: tok
    projected:
      sources: [{{serviceAccountToken: {{path: token, expirationSeconds: 600}}}}]
"#
    )
}

#[test]
fn configmap_secret_and_label_changes_reach_a_running_pods_volumes() {
    let Some(kubectl) = agent_test_kubectl() else { return };
    let server = start_single_node(&kubectl, NODE, &[], |_| {});
    let context = || {
        let state = server.kubectl(&kubectl, &["get", "pods,events", "-o", "wide"]);
        format!("{}\nserver log:\n{}", String::from_utf8_lossy(&state.stdout), server.log_text())
    };
    let exec = |script: &str| -> Result<String, String> {
        let out = server.kubectl(&kubectl, &["exec", "reader", "--", "sh", "-c", script]);
        let stdout = String::from_utf8_lossy(&out.stdout).trim_end().to_string();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
        }
    };
    ok(server.kubectl_stdin(&kubectl, &["apply", "-f", "-"], Some(&manifest())), "apply");
    server.wait_running(&kubectl, "reader", Duration::from_secs(60));
    let first = eventually("the volumes as created", Duration::from_secs(30), || {
        exec("cat /cfg/level /sec/user /sec/password /info/labels; echo; cat /tok/token")
    });
    let lines: Vec<&str> = first.lines().collect();
    assert!(first.starts_with("debugadmins3cr3tapp=\"reader\"\n"), "{first}");
    let token = lines.last().copied().unwrap_or_default().to_string();
    assert_eq!(token.split('.').count(), 3, "a JWT: {first}");
    assert_eq!(exec("readlink /tok/token").unwrap(), "..data/token");

    // A pod update rewrites its volumes at once (downwardAPI from the new labels).
    ok(server.kubectl(&kubectl, &["label", "pod", "reader", "tier=front"]), "label pod");
    eventually("the labels file follows the pod", SYNC_LIMIT, || match exec("cat /info/labels") {
        Ok(text) if text == "app=\"reader\"\ntier=\"front\"" => Ok(()),
        other => Err(format!("{other:?}\n{}", context())),
    });

    // Object changes (after that pod update) arrive with the periodic sweep.
    ok(
        server.kubectl(
            &kubectl,
            &["patch", "configmap", "settings", "-p", r#"{"data":{"level":"info"}}"#],
        ),
        "patch configmap",
    );
    // The password key goes away: an optional source's missing item is left out.
    ok(
        server.kubectl(&kubectl, &["patch", "secret", "creds", "--type=json", "-p", SECRET_PATCH]),
        "patch secret",
    );
    eventually("the configMap's new value in the container", SYNC_LIMIT, || {
        match exec("cat /cfg/level") {
            Ok(text) if text == "info" => Ok(()),
            other => Err(format!("{other:?}\n{}", context())),
        }
    });
    assert_eq!(exec("readlink /cfg/level").unwrap(), "..data/level");
    let data = exec("readlink /cfg/..data").unwrap();
    assert!(data.starts_with("..") && data != "..data", "{data}");
    eventually("the secret's new value in the container", SYNC_LIMIT, || {
        match exec("cat /sec/user") {
            Ok(text) if text == "root" => Ok(()),
            other => Err(format!("{other:?}\n{}", context())),
        }
    });
    assert_eq!(exec("ls /sec").unwrap(), "user", "the removed key's file is gone");
    assert_eq!(exec("cat /tok/token").unwrap(), token, "a fresh token is not rotated");
}
