//! Strategic merge patch cases. "docs" is kubernetes.io/docs/tasks/manage-kubernetes-objects/
//! update-api-object-kubectl-patch; "smp:<case>" is the `Description` of a case in
//! k8s.io/apimachinery v0.33 pkg/util/strategicpatch/patch_test.go (its ThreeWay patch applied to
//! its Current object gives its Result).

use super::*;
use serde_json::json;

fn pod() -> Schema {
    Schema::for_kind("", "Pod")
}

fn spec(containers: Value) -> Value {
    json!({"spec": {"containers": containers}})
}

fn containers(v: &Value) -> Vec<String> {
    v["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].to_string().trim_matches('"').to_string())
        .collect()
}

#[test]
fn containers_merge_by_name_and_keep_unmentioned_ones() {
    // docs: patching in patch-demo-ctr-2 keeps patch-demo-ctr; the new container comes first.
    let original = spec(json!([{"name": "patch-demo-ctr", "image": "nginx"}]));
    let patch = spec(json!([{"name": "patch-demo-ctr-2", "image": "redis"}]));
    let out = apply(pod(), &original, &patch).unwrap();
    assert_eq!(
        out["spec"]["containers"],
        json!([{"name": "patch-demo-ctr-2", "image": "redis"}, {"name": "patch-demo-ctr", "image": "nginx"}])
    );
}

#[test]
fn merged_element_is_updated_in_place_field_by_field() {
    // smp:"add field to map in merging list" — other fields of the element survive.
    let original = spec(
        json!([{"name": "a", "image": "x", "env": [{"name": "K", "value": "1"}]}, {"name": "b"}]),
    );
    let patch = spec(json!([{"name": "a", "image": "y", "env": [{"name": "L", "value": "2"}]}]));
    let out = apply(pod(), &original, &patch).unwrap();
    assert_eq!(containers(&out), ["a", "b"]);
    assert_eq!(out["spec"]["containers"][0]["image"], "y");
    // env merges by name too (Container.env patchMergeKey=name).
    assert_eq!(
        out["spec"]["containers"][0]["env"],
        json!([{"name": "L", "value": "2"}, {"name": "K", "value": "1"}])
    );
}

#[test]
fn lists_without_patch_strategy_are_replaced() {
    // docs: "the tolerations list is replaced, not merged" (PodSpec.tolerations has no strategy).
    let original = json!({"spec": {"tolerations": [{"key": "a"}], "containers": []}});
    let patch = json!({"spec": {"tolerations": [{"key": "b"}]}});
    let out = apply(pod(), &original, &patch).unwrap();
    assert_eq!(out["spec"]["tolerations"], json!([{"key": "b"}]));
}

#[test]
fn null_deletes_a_map_key_and_is_dropped_from_new_values() {
    // smp:"delete field from map in merging list"; nulls in new subtrees are discarded.
    let original = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
    let patch = json!({"metadata": {"labels": {"a": null}, "annotations": {"x": null, "y": "1"}}});
    let out = apply(pod(), &original, &patch).unwrap();
    assert_eq!(out["metadata"], json!({"labels": {"b": "2"}, "annotations": {"y": "1"}}));
}

#[test]
fn dollar_patch_delete_removes_the_keyed_element() {
    // smp:"delete map from merging list": name 1 goes, name 2 keeps its server-side field.
    let current = spec(json!([{"name": "1"}, {"name": "2", "other": "b"}]));
    let patch = json!({"spec": {
        "$setElementOrder/containers": [{"name": "2"}],
        "containers": [{"name": "1", "$patch": "delete"}]}});
    let out = apply(pod(), &current, &patch).unwrap();
    assert_eq!(out["spec"]["containers"], json!([{"name": "2", "other": "b"}]));
}

#[test]
fn dollar_patch_delete_of_a_missing_element_is_a_no_op() {
    // smp:"delete missing map from merging list".
    let current = spec(json!([{"name": "2"}]));
    let patch = spec(json!([{"name": "1", "$patch": "delete"}]));
    assert_eq!(apply(pod(), &current, &patch).unwrap(), current);
}

#[test]
fn dollar_patch_replace_on_a_list_replaces_it_whole() {
    // The reference's mergeSliceWithSpecialElements: `$patch: replace` keeps only the patch items.
    let current = spec(json!([{"name": "a"}, {"name": "b"}]));
    let patch = spec(json!([{"name": "c"}, {"$patch": "replace"}]));
    let out = apply(pod(), &current, &patch).unwrap();
    assert_eq!(out["spec"]["containers"], json!([{"name": "c"}]));
}

#[test]
fn dollar_patch_replace_on_a_map_replaces_it_whole() {
    // handleDirectiveInMergeMap: the patch map without the marker becomes the value.
    let current = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
    let patch = json!({"metadata": {"labels": {"c": "3", "$patch": "replace"}}});
    let out = apply(pod(), &current, &patch).unwrap();
    assert_eq!(out["metadata"]["labels"], json!({"c": "3"}));
}

#[test]
fn dollar_patch_delete_on_a_map_leaves_an_empty_map() {
    // handleDirectiveInMergeMap returns an empty map for `$patch: delete`.
    let current = json!({"metadata": {"labels": {"a": "1"}}});
    let patch = json!({"metadata": {"labels": {"$patch": "delete"}}});
    let out = apply(pod(), &current, &patch).unwrap();
    assert_eq!(out["metadata"]["labels"], json!({}));
}

#[test]
fn dollar_patch_merge_and_unknown_directives_are_rejected() {
    // The reference: "merging lists cannot yet be specified in the patch" for a list element,
    // ErrBadPatchType ("Unknown patch type") for a map.
    let mut current = spec(json!([{"name": "a"}]));
    let in_list = spec(json!([{"name": "a", "$patch": "merge"}]));
    assert!(matches!(apply(pod(), &current, &in_list), Err(PatchError::BadDirective(_))));
    current["metadata"] = json!({"name": "x"});
    let in_map = json!({"metadata": {"$patch": "merge"}});
    assert!(matches!(apply(pod(), &current, &in_map), Err(PatchError::BadDirective(_))));
}

#[test]
fn set_element_order_reorders_merged_list() {
    // smp:"set elements order in a list with server-only items": 9 is server-only, stays last.
    let current = spec(json!([
        {"name": "1", "other": "a"}, {"name": "3", "value": 3}, {"name": "4", "value": 4},
        {"name": "2", "value": 2}, {"name": "9"}]));
    let patch = json!({"spec": {"$setElementOrder/containers":
        [{"name": "4"}, {"name": "2"}, {"name": "3"}, {"name": "1"}]}});
    let out = apply(pod(), &current, &patch).unwrap();
    assert_eq!(containers(&out), ["4", "2", "3", "1", "9"]);
    assert_eq!(out["spec"]["containers"][3], json!({"name": "1", "other": "a"}));
}

#[test]
fn set_element_order_places_primitives_around_server_only_items() {
    // smp:"add an item in a list of primitives and preserve order": [1,4,2] + 3 → [3,1,4,2].
    let current = json!({"metadata": {"finalizers": ["1", "4", "2"]}});
    let patch =
        json!({"metadata": {"$setElementOrder/finalizers": ["3", "1", "2"], "finalizers": ["3"]}});
    let out = apply(pod(), &current, &patch).unwrap();
    assert_eq!(out["metadata"]["finalizers"], json!(["3", "1", "4", "2"]));
}

#[test]
fn set_element_order_must_agree_with_the_patch_list() {
    // smp:"should check if order in $setElementOrder and patch list match" → "doesn't match".
    let current = spec(json!([{"name": "1"}, {"name": "3"}, {"name": "2"}]));
    let patch = json!({"spec": {
        "$setElementOrder/containers": [{"name": "1"}, {"name": "2"}, {"name": "3"}],
        "containers": [{"name": "3", "value": 3}, {"name": "1", "value": 1}]}});
    assert!(matches!(apply(pod(), &current, &patch), Err(PatchError::BadSetElementOrder(_))));
}

#[test]
fn retain_keys_drops_unlisted_fields() {
    // smp:"retainKeys map clears a field": switching a Deployment strategy to Recreate drops
    // the rollingUpdate the server defaulted (DeploymentSpec.strategy is patchStrategy=retainKeys).
    let current =
        json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
    let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
    let out = apply(Schema::for_kind("apps", "Deployment"), &current, &patch).unwrap();
    assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
}

#[test]
fn retain_keys_rejects_a_patch_field_it_does_not_list() {
    // applyRetainKeysDirective: a patch field missing from $retainKeys is ErrBadPatchFormatForRetainKeys.
    let current = json!({"spec": {"strategy": {"type": "RollingUpdate"}}});
    let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {}}}});
    let err = apply(Schema::for_kind("apps", "Deployment"), &current, &patch).unwrap_err();
    assert!(matches!(err, PatchError::BadRetainKeys(_)));
    let not_a_list = json!({"spec": {"strategy": {"$retainKeys": "type"}}});
    assert!(apply(Schema::for_kind("apps", "Deployment"), &current, &not_a_list).is_err());
}

#[test]
fn delete_from_primitive_list_removes_the_values() {
    // smp:"$deleteFromPrimitiveList should delete item from a list with merge patch strategy".
    let current = json!({"metadata": {"finalizers": ["a", "b", "c"]}});
    let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b", "zz"]}});
    let out = apply(pod(), &current, &patch).unwrap();
    assert_eq!(out["metadata"]["finalizers"], json!(["a", "c"]));
}

#[test]
fn delete_from_primitive_list_never_adds_a_list() {
    // smp:"$deleteFromPrimitiveList on nonexistent primitive list should not add the primitive list".
    let current = json!({"metadata": {"name": "x"}});
    let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}});
    assert_eq!(apply(pod(), &current, &patch).unwrap(), current);
}

#[test]
fn finalizers_merge_as_a_set_with_new_values_first() {
    // ObjectMeta.finalizers is patchStrategy=merge on scalars: a union without duplicates;
    // patched values take the patch's order and "b" (server-only, after "a") follows them, as
    // the reference's normalizeElementOrder/mergeSortedSlice places it.
    let current = json!({"metadata": {"finalizers": ["a", "b"]}});
    let patch = json!({"metadata": {"finalizers": ["c", "a"]}});
    let out = apply(pod(), &current, &patch).unwrap();
    assert_eq!(out["metadata"]["finalizers"], json!(["c", "a", "b"]));
}

#[test]
fn missing_merge_key_is_an_error() {
    // smp:"missing merge key should error out" → "does not contain declared merge key".
    let current = spec(json!([{"name": "1", "value": "a"}]));
    let patch = spec(json!([{"value": "b"}]));
    let err = apply(pod(), &current, &patch).unwrap_err();
    assert!(err.to_string().contains("does not contain declared merge key"), "{err}");
}

#[test]
fn container_ports_merge_on_container_port_alone() {
    // Container.ports patchMergeKey=containerPort: a UDP port patch updates the TCP entry
    // (kubernetes/kubernetes#108255, documented on the field: SMP "may corrupt the data").
    let current = spec(json!([{"name": "a", "ports": [{"containerPort": 53, "protocol": "TCP"}]}]));
    let patch = spec(json!([{"name": "a", "ports": [{"containerPort": 53, "protocol": "UDP"}]}]));
    let out = apply(pod(), &current, &patch).unwrap();
    assert_eq!(
        out["spec"]["containers"][0]["ports"],
        json!([{"containerPort": 53, "protocol": "UDP"}])
    );
}

#[test]
fn service_ports_merge_by_port_and_keep_both() {
    // Issue 4 acceptance: the Python client's strategic merge of a Service's ports keeps both.
    let current = json!({"spec": {"ports": [{"port": 80, "name": "http"}]}});
    let patch = json!({"spec": {"ports": [{"port": 443, "name": "https"}]}});
    let out = apply(Schema::for_kind("", "Service"), &current, &patch).unwrap();
    assert_eq!(
        out["spec"]["ports"],
        json!([{"port": 443, "name": "https"}, {"port": 80, "name": "http"}])
    );
}

#[test]
fn type_change_replaces_the_value() {
    // mergeMap: when original and patch types differ, the patch value is taken.
    let current = json!({"spec": {"x": {"a": 1}, "y": [1]}});
    let patch = json!({"spec": {"x": [1], "y": {"b": {"$patch": "delete"}, "c": 2}}});
    let out = apply(pod(), &current, &patch).unwrap();
    assert_eq!(out["spec"], json!({"x": [1], "y": {"c": 2}}));
}

#[test]
fn list_of_lists_and_mixed_lists_are_errors() {
    // sliceElementType: ErrNoListOfLists / "list element types are not identical".
    let current = json!({"metadata": {"finalizers": ["a"]}});
    for bad in [json!([["x"]]), json!([1]), json!([{"a": 1}])] {
        let patch = json!({"metadata": {"finalizers": bad}});
        assert!(matches!(apply(pod(), &current, &patch), Err(PatchError::MixedList(_))), "{patch}");
    }
}

#[test]
fn non_object_patches_are_errors() {
    for bad in [json!(null), json!([]), json!("x"), json!(1)] {
        assert_eq!(apply(pod(), &json!({}), &bad), Err(PatchError::NotAnObject));
    }
    assert_eq!(apply(pod(), &json!([1]), &json!({})), Err(PatchError::NotAnObject));
}

#[test]
fn odd_shapes_never_panic() {
    // Patches come from users: every combination of shapes must give a value or an error.
    let shapes = [
        json!(null),
        json!(1),
        json!("s"),
        json!([]),
        json!([1, "a"]),
        json!([{"name": 1}, {"name": "1"}]),
        json!([{"$patch": "delete"}]),
        json!([null]),
        json!({"$patch": 3}),
        json!({"$retainKeys": [1], "$setElementOrder/x": 1}),
        json!({"$setElementOrder/containers": [1, {"name": "a"}], "containers": "x"}),
        json!({"$deleteFromPrimitiveList/containers": [{"name": "a"}]}),
    ];
    for original in &shapes {
        for patch in &shapes {
            for schema in [pod(), Schema::UNKNOWN] {
                let original = json!({"spec": {"containers": original, "x": original}});
                let patch = json!({"spec": {"containers": patch, "x": patch}, "metadata": patch});
                let _ = apply(schema, &original, &patch);
            }
        }
    }
}

#[test]
fn directives_never_reach_the_stored_object() {
    // removeDirectives: a new list or map taken from the patch loses `$patch` elements.
    let current = json!({"spec": {}});
    let patch = json!({"spec": {"containers": [{"name": "a"}, {"name": "b", "$patch": "delete"}],
        "volumes": [{"name": "v", "$retainKeys": ["name"]}]}});
    let out = apply(pod(), &current, &patch).unwrap();
    assert_eq!(out["spec"], json!({"containers": [{"name": "a"}], "volumes": [{"name": "v"}]}));
}
