//! kubectl 1.32's review-and-edit commands against the real `skerry server`: `diff -f` (a
//! server-side dry-run of the patch `apply` would send, then the local `diff`), `edit` through an
//! editor (`KUBE_EDITOR`, a script here), and `describe` of a pod with its events.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::server::{ok, SkerryServer};

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: c
        image: busybox
"#;

#[test]
fn kubectl_diff_edit_and_describe() {
    let Some(kubectl) = skerry_testkit::kubectl() else { return };
    let server = SkerryServer::start_with(&["--disable-scheduler"]);
    let k = |args: &[&str]| server.kubectl(&kubectl, args);
    let k_in = |args: &[&str], stdin: &str| server.kubectl_stdin(&kubectl, args, Some(stdin));
    ok(k_in(&["apply", "-f", "-"], DEPLOYMENT), "apply");

    // No change: exit 0 and nothing printed. A change: exit 1 and the unified diff of it, the
    // stored object untouched (the server only dry-ran the patch).
    let same = k_in(&["diff", "-f", "-"], DEPLOYMENT);
    assert_eq!(same.status.code(), Some(0), "{}", String::from_utf8_lossy(&same.stderr));
    assert!(same.stdout.is_empty(), "{}", String::from_utf8_lossy(&same.stdout));
    let changed = k_in(&["diff", "-f", "-"], &DEPLOYMENT.replace("replicas: 1", "replicas: 3"));
    let text = String::from_utf8_lossy(&changed.stdout);
    assert_eq!(
        changed.status.code(),
        Some(1),
        "{text}{}",
        String::from_utf8_lossy(&changed.stderr)
    );
    assert!(text.contains("-  replicas: 1") && text.contains("+  replicas: 3"), "{text}");
    let replicas = ok(k(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]), "get");
    assert_eq!(replicas, "1", "diff must not change the object");

    // `edit` opens the object in the editor and sends what it saved.
    let dir = tempfile::tempdir().unwrap();
    let editor = dir.path().join("editor.sh");
    std::fs::write(&editor, "#!/bin/sh\nsed -i 's/replicas: 1$/replicas: 2/' \"$1\"\n").unwrap();
    std::fs::set_permissions(&editor, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The test binary is its own process (nextest): nothing else reads the environment.
    std::env::set_var("KUBE_EDITOR", &editor);
    let edited = ok(k(&["edit", "deployment", "web"]), "edit");
    assert!(edited.contains("deployment.apps/web edited"), "{edited}");
    let replicas = ok(k(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]), "get");
    assert_eq!(replicas, "2");
    // An editor that changes nothing: kubectl says so and sends nothing.
    std::fs::write(&editor, "#!/bin/sh\ntrue\n").unwrap();
    let untouched = k(&["edit", "deployment", "web"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&untouched.stdout),
        String::from_utf8_lossy(&untouched.stderr)
    );
    assert!(said.contains("Edit cancelled, no changes made."), "{said}");

    // `describe pod` shows the pod and its events (listed by field selector).
    let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"solo","labels":{"app":"solo"}},
        "spec":{"containers":[{"name":"c","image":"busybox"}]}}"#;
    ok(k_in(&["create", "-f", "-"], pod), "create pod");
    // kubectl finds a pod's events by involvedObject name, namespace, kind and uid.
    let uid = ok(k(&["get", "pod", "solo", "-o", "jsonpath={.metadata.uid}"]), "get uid");
    let event = format!(
        r#"{{"apiVersion":"v1","kind":"Event","metadata":{{"name":"solo.1"}},
        "involvedObject":{{"kind":"Pod","name":"solo","namespace":"default","uid":"{uid}"}},
        "reason":"Testing","message":"described with its events","type":"Normal",
        "source":{{"component":"test"}}}}"#
    );
    ok(k_in(&["create", "-f", "-"], &event), "create event");
    let described = ok(k(&["describe", "pod", "solo"]), "describe pod");
    for line in
        ["Name:", "solo", "Labels:", "app=solo", "Containers:", "Image:", "busybox", "Events:"]
    {
        assert!(described.contains(line), "{line} missing from:\n{described}");
    }
    assert!(described.contains("described with its events"), "{described}");
}
