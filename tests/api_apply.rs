//! Server-side apply and field ownership against the real `skerry server`: kubectl 1.32's
//! `apply --server-side` (create, conflicts, `--force-conflicts`, removal of fields a manager
//! stops applying, migration from client-side apply), `metadata.managedFields` on ordinary
//! writes, and the PatchOptions errors of the raw API.

mod common;

use common::server::{ok, runtime, SkerryServer};
use serde_json::Value;

const CM_AB: &str = "
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {a: '1', b: '2'}
";

/// The managedFields entry of `manager` with `operation`, if any.
fn entry<'a>(obj: &'a Value, manager: &str, operation: &str) -> Option<&'a Value> {
    obj["metadata"]["managedFields"]
        .as_array()?
        .iter()
        .find(|e| e["manager"] == manager && e["operation"] == operation)
}

#[test]
fn kubectl_server_side_apply_tracks_owners_and_conflicts() {
    let Some(kubectl) = skerry_testkit::kubectl() else { return };
    let server = SkerryServer::start();
    let run = |args: &[&str], stdin: &str| server.kubectl_stdin(&kubectl, args, Some(stdin));
    let get = || -> Value {
        let args = ["get", "cm", "settings", "-o", "json", "--show-managed-fields"];
        serde_json::from_str(&ok(server.kubectl(&kubectl, &args), "get")).unwrap()
    };

    let out = ok(run(&["apply", "--server-side", "-f", "-"], CM_AB), "first apply");
    assert!(out.contains("configmap/settings serverside-applied"), "{out}");
    let cm = get();
    let mine = entry(&cm, "kubectl", "Apply").expect("kubectl owns what it applied");
    assert!(mine["fieldsV1"]["f:data"]["f:a"].is_object(), "{mine}");
    assert!(mine["fieldsV1"]["f:data"]["f:b"].is_object(), "{mine}");

    // Another manager changing a field kubectl owns is a conflict naming owner and field …
    let theirs = CM_AB.replace("a: '1', b: '2'", "a: '9'");
    let refused = run(&["apply", "--server-side", "--field-manager=ops", "-f", "-"], &theirs);
    assert!(!refused.status.success(), "a conflicting apply must fail");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("conflict with \"kubectl\"") && err.contains(".data.a"), "{err}");
    assert_eq!(get()["data"]["a"], "1", "nothing written on conflict");

    // … unless forced: the value and its ownership move.
    let args = ["apply", "--server-side", "--field-manager=ops", "--force-conflicts", "-f", "-"];
    ok(run(&args, &theirs), "forced apply");
    let cm = get();
    assert_eq!(cm["data"]["a"], "9");
    assert!(entry(&cm, "ops", "Apply").unwrap()["fieldsV1"]["f:data"]["f:a"].is_object());
    let mine = entry(&cm, "kubectl", "Apply").unwrap();
    assert!(mine["fieldsV1"]["f:data"].get("f:a").is_none(), "ownership moved: {mine}");

    // kubectl applies again without `b` (and agrees on `a`): b, owned by kubectl alone, goes.
    ok(run(&["apply", "--server-side", "-f", "-"], &theirs), "apply without b");
    let cm = get();
    assert_eq!(cm["data"], serde_json::json!({"a": "9"}), "{cm}");

    // An ordinary write is recorded as an Update by its manager.
    ok(server.kubectl(&kubectl, &["label", "cm", "settings", "tier=gold"]), "label");
    let cm = get();
    let label = entry(&cm, "kubectl-label", "Update").expect("label recorded");
    assert!(label["fieldsV1"]["f:metadata"]["f:labels"]["f:tier"].is_object(), "{label}");
}

#[test]
fn server_side_apply_after_client_side_apply_takes_over_without_conflict() {
    let Some(kubectl) = skerry_testkit::kubectl() else { return };
    let server = SkerryServer::start();
    let run = |args: &[&str], stdin: &str| server.kubectl_stdin(&kubectl, args, Some(stdin));
    ok(run(&["apply", "-f", "-"], CM_AB), "client-side apply");
    let changed = CM_AB.replace("b: '2'", "b: '3'");
    ok(run(&["apply", "--server-side", "-f", "-"], &changed), "server-side apply");
    let args = ["get", "cm", "settings", "-o", "jsonpath={.data.b}"];
    assert_eq!(ok(server.kubectl(&kubectl, &args), "get"), "3");
}

#[test]
fn apply_patch_options_are_validated_and_apply_creates() {
    let server = SkerryServer::start();
    let api = server.admin();
    runtime().block_on(async {
        let path = "/api/v1/namespaces/default/configmaps/raw";
        let body =
            br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"raw"},"data":{"k":"v"}}"#;
        let apply = Some("application/apply-patch+yaml");

        let resp = api.request("PATCH", path, apply, body).await.unwrap();
        assert_eq!(resp.status, 422, "apply without fieldManager");
        let status = resp.json();
        assert!(
            status["message"].as_str().unwrap().contains("fieldManager: Required value"),
            "{status}"
        );

        let resp = api.request("PATCH", &format!("{path}?fieldManager=raw"), apply, body).await;
        let resp = resp.unwrap();
        assert_eq!(resp.status, 201, "an apply creates a missing object");
        let created = resp.json();
        assert_eq!(created["data"]["k"], "v");
        assert_eq!(created["metadata"]["managedFields"][0]["manager"], "raw");

        // force is for applies only.
        let merge = Some("application/merge-patch+json");
        let resp = api.request("PATCH", &format!("{path}?force=true"), merge, b"{}").await;
        assert_eq!(resp.unwrap().status, 422, "force on a merge patch");

        // A second apply of the same configuration changes nothing.
        let again = api.request("PATCH", &format!("{path}?fieldManager=raw"), apply, body).await;
        let again = again.unwrap();
        assert_eq!(again.status, 200);
        assert_eq!(
            again.json()["metadata"]["resourceVersion"],
            created["metadata"]["resourceVersion"],
            "a no-op apply does not write"
        );
    });
}
