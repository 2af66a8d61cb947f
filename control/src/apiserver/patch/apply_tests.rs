//! Server-side apply cases. "docs" is kubernetes.io/docs/reference/using-api/server-side-apply
//! (Kubernetes v1.33): its "Conflicts", "Field management" and "Merge strategy" sections.

use super::*;
use serde_json::json;

fn mgr(name: &str) -> Manager<'_> {
    Manager {
        name,
        api_version: "apps/v1",
        subresource: None,
        time: "2025-01-01T00:00:00Z",
        schema: Schema::for_kind("apps", "Deployment"),
    }
}

fn deploy(replicas: i64, image: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"replicas": replicas,
                 "template": {"spec": {"containers": [{"name": "c", "image": image}]}}}})
}

fn managers(obj: &Value) -> Vec<(String, String)> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|e| {
                    (e["manager"].as_str().unwrap().into(), e["operation"].as_str().unwrap().into())
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn first_apply_creates_the_object_and_records_ownership() {
    // docs "Field management": the applier owns every field it specified; operation Apply.
    let out = server_side_apply(None, &deploy(1, "a"), &mgr("alice"), false).unwrap();
    assert_eq!(out["spec"]["replicas"], 1);
    let entry = &out["metadata"]["managedFields"][0];
    assert_eq!(entry["operation"], "Apply");
    assert_eq!(entry["fieldsType"], "FieldsV1");
    assert_eq!(entry["fieldsV1"]["f:spec"]["f:replicas"], json!({}));
    assert!(entry.get("subresource").is_none());
}

#[test]
fn reapplying_the_same_config_by_another_manager_shares_ownership() {
    // docs "Conflicts": applying the same value to a field owned by another manager is not a
    // conflict; both become owners.
    let live = server_side_apply(None, &deploy(1, "a"), &mgr("alice"), false).unwrap();
    let out = server_side_apply(Some(&live), &deploy(1, "a"), &mgr("bob"), false).unwrap();
    assert_eq!(managers(&out), [("alice".into(), "Apply".into()), ("bob".into(), "Apply".into())]);
}

#[test]
fn apply_conflict_on_field_owned_by_other_manager() {
    // docs "Conflicts": a different value for a field another manager owns is a conflict.
    let live = server_side_apply(None, &deploy(1, "a"), &mgr("alice"), false).unwrap();
    let err = server_side_apply(Some(&live), &deploy(3, "a"), &mgr("bob"), false).unwrap_err();
    let ApplyError::Conflicts(conflicts) = &err else { panic!("{err}") };
    assert_eq!(conflicts.len(), 1);
    assert_eq!(
        (conflicts[0].manager.as_str(), conflicts[0].field.as_str()),
        ("alice", ".spec.replicas")
    );
    assert_eq!(
        err.to_string(),
        "Apply failed with 1 conflict: conflict with \"alice\": .spec.replicas"
    );
}

#[test]
fn conflict_messages_read_like_the_reference() {
    // apimachinery managedfields NewConflictError/printManager: Update owners print
    // `using <apiVersion>`; several conflicts are grouped per owner.
    let live = server_side_apply(None, &deploy(1, "a"), &mgr("alice"), false).unwrap();
    let mut edited = live.clone();
    edited["spec"]["replicas"] = json!(2);
    record_update(
        Some(&live),
        &mut edited,
        &Manager { name: "kubectl-client-side-apply", ..mgr("") },
    )
    .unwrap();
    let err = server_side_apply(Some(&edited), &deploy(3, "b"), &mgr("bob"), false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Apply failed with 2 conflicts: conflicts with \"alice\":\n\
         - .spec.template.spec.containers[name=\"c\"].image\n\
         conflicts with \"kubectl-client-side-apply\" using apps/v1:\n\
         - .spec.replicas"
    );
    let ApplyError::Conflicts(c) = err else { unreachable!() };
    assert_eq!(c[0].cause_message(), "conflict with \"alice\"");
}

#[test]
fn force_apply_takes_ownership() {
    // docs "Conflicts": with force the applier becomes the sole owner of the conflicting field.
    let live = server_side_apply(None, &deploy(1, "a"), &mgr("alice"), false).unwrap();
    let out = server_side_apply(Some(&live), &deploy(3, "a"), &mgr("bob"), true).unwrap();
    assert_eq!(out["spec"]["replicas"], 3);
    let alice = &out["metadata"]["managedFields"][0];
    assert_eq!(alice["manager"], "alice");
    assert!(alice["fieldsV1"]["f:spec"].get("f:replicas").is_none(), "alice lost replicas");
    let again = server_side_apply(Some(&out), &deploy(5, "a"), &mgr("bob"), false).unwrap();
    assert_eq!(again["spec"]["replicas"], 5, "no conflict once bob owns it alone");
}

#[test]
fn field_no_longer_applied_is_removed() {
    // docs "Field management": a field the applier owned alone and dropped from its config is
    // removed from the object.
    let mut with_labels = deploy(1, "a");
    with_labels["metadata"]["labels"] = json!({"a": "1", "b": "2"});
    let live = server_side_apply(None, &with_labels, &mgr("alice"), false).unwrap();
    let mut fewer = deploy(1, "a");
    fewer["metadata"]["labels"] = json!({"a": "1"});
    fewer["spec"].as_object_mut().unwrap().remove("replicas");
    let out = server_side_apply(Some(&live), &fewer, &mgr("alice"), false).unwrap();
    assert_eq!(out["metadata"]["labels"], json!({"a": "1"}));
    assert!(out["spec"].get("replicas").is_none());
}

#[test]
fn field_dropped_but_co_owned_is_kept() {
    // docs: a dropped field that another manager also owns stays, owned by the other.
    let live = server_side_apply(None, &deploy(2, "a"), &mgr("alice"), false).unwrap();
    let live = server_side_apply(Some(&live), &deploy(2, "a"), &mgr("bob"), false).unwrap();
    let mut no_replicas = deploy(2, "a");
    no_replicas["spec"].as_object_mut().unwrap().remove("replicas");
    let out = server_side_apply(Some(&live), &no_replicas, &mgr("alice"), false).unwrap();
    assert_eq!(out["spec"]["replicas"], 2);
}

#[test]
fn dropped_container_is_removed_but_others_remain() {
    // docs "Merge strategy": containers are a list map keyed by name; elements are owned one by one.
    let mut two = deploy(1, "a");
    two["spec"]["template"]["spec"]["containers"] =
        json!([{"name": "c", "image": "a"}, {"name": "s", "image": "b"}]);
    let live = server_side_apply(None, &two, &mgr("alice"), false).unwrap();
    let out = server_side_apply(Some(&live), &deploy(1, "a"), &mgr("alice"), false).unwrap();
    assert_eq!(out["spec"]["template"]["spec"]["containers"], json!([{"name": "c", "image": "a"}]));
}

#[test]
fn another_managers_container_survives_an_apply() {
    // list map (listType=map, key name): bob's sidecar is not touched by alice's apply.
    let live = server_side_apply(None, &deploy(1, "a"), &mgr("alice"), false).unwrap();
    let mut sidecar = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"template": {"spec": {"containers": [{"name": "s", "image": "b"}]}}}});
    let live = server_side_apply(Some(&live), &sidecar, &mgr("bob"), false).unwrap();
    let out = server_side_apply(Some(&live), &deploy(1, "z"), &mgr("alice"), false).unwrap();
    sidecar = out["spec"]["template"]["spec"]["containers"].clone();
    assert_eq!(sidecar, json!([{"name": "c", "image": "z"}, {"name": "s", "image": "b"}]));
}

#[test]
fn atomic_list_is_replaced_and_owned_whole() {
    // PodSpec.tolerations listType=atomic: the applier's list replaces the live one.
    let mut a = deploy(1, "a");
    a["spec"]["template"]["spec"]["tolerations"] = json!([{"key": "x"}, {"key": "y"}]);
    let live = server_side_apply(None, &a, &mgr("alice"), false).unwrap();
    a["spec"]["template"]["spec"]["tolerations"] = json!([{"key": "z"}]);
    let out = server_side_apply(Some(&live), &a, &mgr("alice"), false).unwrap();
    assert_eq!(out["spec"]["template"]["spec"]["tolerations"], json!([{"key": "z"}]));
}

#[test]
fn update_records_changed_fields_for_the_writer() {
    // The reference records create/update/patch as operation Update for the request's manager
    // (kubectl client-side apply uses `kubectl-client-side-apply`).
    let csa = Manager { name: "kubectl-client-side-apply", ..mgr("") };
    let mut created = deploy(1, "a");
    record_update(None, &mut created, &csa).unwrap();
    assert_eq!(managers(&created), [("kubectl-client-side-apply".into(), "Update".into())]);
    let mut scaled = created.clone();
    scaled["spec"]["replicas"] = json!(4);
    record_update(Some(&created), &mut scaled, &Manager { name: "hpa", ..mgr("") }).unwrap();
    let fields = &scaled["metadata"]["managedFields"];
    assert!(fields[0]["fieldsV1"]["f:spec"].get("f:replicas").is_none(), "csa lost replicas");
    assert_eq!(fields[1]["manager"], "hpa");
    assert_eq!(fields[1]["fieldsV1"], json!({"f:spec": {"f:replicas": {}}}));
}

#[test]
fn apply_conflicts_with_fields_an_update_changed() {
    // docs "Conflicts": fields owned through Update operations conflict like applied ones;
    // this is what `kubectl apply --server-side` meets after `kubectl scale`.
    let live = server_side_apply(None, &deploy(1, "a"), &mgr("alice"), false).unwrap();
    let mut scaled = live.clone();
    scaled["spec"]["replicas"] = json!(7);
    record_update(Some(&live), &mut scaled, &Manager { name: "kubectl", ..mgr("") }).unwrap();
    let err = server_side_apply(Some(&scaled), &deploy(1, "a"), &mgr("alice"), false).unwrap_err();
    assert!(matches!(err, ApplyError::Conflicts(c) if c[0].manager == "kubectl"));
}

#[test]
fn unchanged_update_records_nothing_and_removed_fields_lose_owners() {
    let m = mgr("alice");
    let live = server_side_apply(None, &deploy(1, "a"), &m, false).unwrap();
    let mut same = live.clone();
    record_update(Some(&live), &mut same, &Manager { name: "noop", ..m }).unwrap();
    assert_eq!(managers(&same), [("alice".into(), "Apply".into())]);
    let mut gone = live.clone();
    gone["spec"].as_object_mut().unwrap().remove("replicas");
    record_update(Some(&live), &mut gone, &Manager { name: "editor", ..m }).unwrap();
    assert!(gone["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"].get("f:replicas").is_none());
}

#[test]
fn invalid_applied_configurations_are_errors_not_panics() {
    // structured-merge-diff rejects list-map elements without their keys.
    let bad = json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}, 3]}}}});
    assert!(matches!(server_side_apply(None, &bad, &mgr("a"), false), Err(ApplyError::Invalid(_))));
    assert!(matches!(
        server_side_apply(None, &json!([1]), &mgr("a"), false),
        Err(ApplyError::Invalid(_))
    ));
    let odd_live = json!({"metadata": {"managedFields": [1, {"manager": 2}, {"manager": "x", "operation": "Apply", "fieldsV1": 3}]},
        "spec": "not a map"});
    let out = server_side_apply(Some(&odd_live), &deploy(1, "a"), &mgr("a"), false).unwrap();
    assert_eq!(out["spec"]["replicas"], 1);
}

#[test]
fn set_merge_order_matches_structured_merge_diff() {
    // structured-merge-diff typed/merge_test.go "struct grab bag", setStr triplets (lhs, rhs, out),
    // run on ObjectMeta.finalizers (listType=set).
    let cases: &[(&[&str], &[&str], &[&str])] = &[
        (&["a", "b"], &["b", "a"], &["b", "a"]),
        (&["a", "b", "c"], &[], &["a", "b", "c"]),
        (&["a", "b", "c"], &["c", "d", "e", "f"], &["a", "b", "c", "d", "e", "f"]),
        (&["a", "b", "c", "g", "f"], &["c", "d", "e", "f"], &["a", "b", "c", "g", "d", "e", "f"]),
        (&["c", "d", "e", "f"], &["a", "c", "e"], &["a", "c", "d", "e", "f"]),
        (
            &["a", "b", "c", "x", "y", "z"],
            &["d", "e", "f"],
            &["a", "b", "c", "x", "y", "z", "d", "e", "f"],
        ),
        (&["c", "a", "g", "f"], &["c", "f", "a", "g"], &["c", "f", "a", "g"]),
        (&["a", "b", "c", "d"], &["d", "e", "f", "a"], &["b", "c", "d", "e", "f", "a"]),
        (
            &["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"],
            &["1", "b", "2", "h", "3", "e", "4", "k", "l"],
            &["a", "1", "b", "c", "d", "f", "g", "2", "h", "i", "j", "3", "e", "4", "k", "l"],
        ),
        (&["a", "b", "b"], &["b"], &["a", "b"]),
        (
            &["a", "b", "c", "d", "e", "c"],
            &["1", "b", "2", "e", "d"],
            &["a", "1", "b", "c", "2", "e", "c", "d"],
        ),
    ];
    let schema = Schema::for_kind("apps", "Deployment");
    for (lhs, rhs, out) in cases {
        let live = json!({"metadata": {"finalizers": lhs}});
        let applied = json!({"metadata": {"finalizers": rhs}});
        let got = merge(&live, &applied, schema, "");
        assert_eq!(got["metadata"]["finalizers"], json!(out), "{lhs:?} + {rhs:?}");
    }
}

#[test]
fn managed_fields_sent_by_the_client_are_kept() {
    // The client-side → server-side apply upgrade: kubectl (csaupgrade) patches managedFields to
    // hand `kubectl-client-side-apply`'s fields to its apply manager; the reference keeps
    // managedFields a request changes, then records the request's own changes on top.
    let csa = Manager { name: "kubectl-client-side-apply", ..mgr("") };
    let mut live = deploy(1, "a");
    record_update(None, &mut live, &csa).unwrap();
    let mut upgraded = live.clone();
    upgraded["metadata"]["managedFields"][0]["manager"] = json!("kubectl");
    upgraded["metadata"]["managedFields"][0]["operation"] = json!("Apply");
    record_update(Some(&live), &mut upgraded, &Manager { name: "kubectl-patch", ..mgr("") })
        .unwrap();
    assert_eq!(managers(&upgraded), [("kubectl".into(), "Apply".into())]);
    // The apply manager now owns replicas: its next apply may change it without conflict.
    let out = server_side_apply(Some(&upgraded), &deploy(2, "a"), &mgr("kubectl"), false).unwrap();
    assert_eq!(out["spec"]["replicas"], 2);
}

#[test]
fn one_empty_managed_fields_entry_clears_them() {
    // docs "Clearing ManagedFields": a patch setting managedFields to [{}] strips them.
    let live = server_side_apply(None, &deploy(1, "a"), &mgr("alice"), false).unwrap();
    let mut cleared = live.clone();
    cleared["metadata"]["managedFields"] = json!([{}]);
    record_update(Some(&live), &mut cleared, &mgr("editor")).unwrap();
    assert!(cleared["metadata"].get("managedFields").is_none());
}

#[test]
fn first_apply_to_an_unmanaged_object_conflicts_with_before_first_apply() {
    // The reference's skipNonAppliedManager: fields of an object without managedFields belong
    // to `before-first-apply`, so applying a different value conflicts.
    let live = deploy(1, "a");
    let err = server_side_apply(Some(&live), &deploy(2, "a"), &mgr("alice"), false).unwrap_err();
    assert!(
        matches!(&err, ApplyError::Conflicts(c) if c[0].manager == "before-first-apply"),
        "{err}"
    );
    let same = server_side_apply(Some(&live), &deploy(1, "a"), &mgr("alice"), false).unwrap();
    assert_eq!(managers(&same)[1], ("alice".into(), "Apply".into()));
}

#[test]
fn no_op_apply_keeps_the_object_identical() {
    // managedFieldsUpdater: a no-op apply does not touch the entry's time; a change does.
    let live = server_side_apply(None, &deploy(1, "a"), &mgr("alice"), false).unwrap();
    let later = Manager { time: "2030-01-01T00:00:00Z", ..mgr("alice") };
    assert_eq!(server_side_apply(Some(&live), &deploy(1, "a"), &later, false).unwrap(), live);
    let changed = server_side_apply(Some(&live), &deploy(1, "b"), &later, false).unwrap();
    assert_eq!(changed["metadata"]["managedFields"][0]["time"], "2030-01-01T00:00:00Z");
}

#[test]
fn odd_shapes_never_panic() {
    // Applied configurations and stored objects come from users: any shape gives a value or an error.
    let shapes = [
        json!(null),
        json!(1),
        json!("s"),
        json!([]),
        json!([1, {"name": "a"}]),
        json!([{"name": "a"}, {"name": "a"}]),
        json!({"name": "a"}),
        json!([[1]]),
    ];
    for live in &shapes {
        for applied in &shapes {
            let live = json!({"metadata": {"finalizers": live, "managedFields": applied},
                "spec": {"template": {"spec": {"containers": live, "tolerations": live}}}});
            let applied = json!({"metadata": {"finalizers": applied},
                "spec": {"template": {"spec": {"containers": applied, "tolerations": applied}}}});
            let _ = server_side_apply(Some(&live), &applied, &mgr("a"), false);
            let _ = server_side_apply(Some(&live), &applied, &mgr("a"), true);
            let mut new = applied.clone();
            let _ = record_update(Some(&live), &mut new, &mgr("b"));
        }
    }
}

#[test]
fn kubectl_takes_over_fields_client_side_apply_still_holds() {
    // The reference's lastAppliedManager: `kubectl apply --server-side` after `kubectl apply`.
    let config = deploy(1, "a");
    let mut live = config.clone();
    live["metadata"]["annotations"] = json!({ LAST_APPLIED: config.to_string() });
    record_update(None, &mut live, &mgr("kubectl-client-side-apply")).unwrap();

    let out = server_side_apply_upgrading(Some(&live), &deploy(2, "a"), &mgr("kubectl"), false)
        .expect("upgrade without conflict");
    assert_eq!(out["spec"]["replicas"], 2);
    let annotation = out["metadata"]["annotations"][LAST_APPLIED].as_str().unwrap();
    assert!(annotation.contains("\"replicas\":2"), "last-applied follows: {annotation}");

    // Another manager gets the conflict; so does kubectl on a field changed since.
    let err = server_side_apply_upgrading(Some(&live), &deploy(2, "a"), &mgr("ops"), false);
    assert!(matches!(err, Err(ApplyError::Conflicts(_))), "{err:?}");
    let mut drifted = live.clone();
    drifted["spec"]["replicas"] = json!(5);
    let err = server_side_apply_upgrading(Some(&drifted), &deploy(2, "a"), &mgr("kubectl"), false);
    assert!(matches!(err, Err(ApplyError::Conflicts(c)) if c[0].field == ".spec.replicas"));
}
