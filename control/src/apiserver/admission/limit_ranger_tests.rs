use serde_json::json;

use super::*;

fn items(limits: Value) -> Vec<Item> {
    items_of(&[json!({"spec": {"limits": limits}})]).remove(0)
}

#[test]
fn defaults_fill_missing_requests_and_limits_and_annotate() {
    let items = items(json!([{"type": "Container",
        "default": {"cpu": "500m", "memory": "256Mi"}, "defaultRequest": {"cpu": "100m"}}]));
    let mut pod = json!({"metadata": {"name": "p"}, "spec": {
        "containers": [{"name": "app"},
                       {"name": "set", "resources": {"limits": {"cpu": "1", "memory": "1Gi"},
                                                     "requests": {"cpu": "1", "memory": "1Gi"}}}],
        "initContainers": [{"name": "init", "resources": {"limits": {"cpu": "1"}}}]}});
    apply_defaults(&items, &mut pod);
    assert_eq!(
        pod["spec"]["containers"][0]["resources"],
        // memory's default request is its default limit (LimitRange defaulting).
        json!({"requests": {"cpu": "100m", "memory": "256Mi"},
               "limits": {"cpu": "500m", "memory": "256Mi"}})
    );
    assert_eq!(pod["spec"]["containers"][1]["resources"]["limits"]["cpu"], "1");
    assert_eq!(
        pod["metadata"]["annotations"][ANNOTATION],
        "LimitRanger plugin set: cpu, memory request for container app; \
         cpu, memory limit for container app; cpu, memory request for init container init; \
         memory limit for init container init"
    );
}

#[test]
fn no_defaults_no_annotation() {
    let items = items(json!([{"type": "Pod", "max": {"cpu": "2"}}]));
    let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}});
    apply_defaults(&items, &mut pod);
    assert!(pod.pointer("/metadata/annotations").is_none());
}

#[test]
fn container_and_pod_bounds_give_the_reference_messages() {
    let container = |limits: Value, requests: Value| {
        json!({"spec": {"containers": [
        {"name": "a", "resources": {"limits": limits, "requests": requests}}]}})
    };
    let max = items(json!([{"type": "Container", "max": {"cpu": "1"}}]));
    assert_eq!(
        validate_pod(&max, &container(json!({"cpu": "2"}), json!({"cpu": "500m"}))),
        vec!["maximum cpu usage per Container is 1, but limit is 2"]
    );
    assert_eq!(
        validate_pod(&max, &container(json!({}), json!({}))),
        vec!["maximum cpu usage per Container is 1.  No limit is specified"]
    );
    let min = items(json!([{"type": "Container", "min": {"memory": "64Mi"}}]));
    assert_eq!(
        validate_pod(&min, &container(json!({"memory": "1Gi"}), json!({"memory": "32Mi"}))),
        vec!["minimum memory usage per Container is 64Mi, but request is 32Mi"]
    );
    let ratio = items(json!([{"type": "Container", "maxLimitRequestRatio": {"cpu": "2"}}]));
    assert_eq!(
        validate_pod(&ratio, &container(json!({"cpu": "1"}), json!({"cpu": "250m"}))),
        vec!["cpu max limit to request ratio per Container is 2, but provided ratio is 4.000000"]
    );
    assert!(
        validate_pod(&ratio, &container(json!({"cpu": "1"}), json!({"cpu": "500m"}))).is_empty()
    );
    let pod_max = items(json!([{"type": "Pod", "max": {"cpu": "1"}}]));
    let two = json!({"spec": {"containers": [
        {"name": "a", "resources": {"limits": {"cpu": "600m"}, "requests": {"cpu": "600m"}}},
        {"name": "b", "resources": {"limits": {"cpu": "600m"}, "requests": {"cpu": "600m"}}}]}});
    assert_eq!(
        validate_pod(&pod_max, &two),
        vec!["maximum cpu usage per Pod is 1, but limit is 1200m"]
    );
}

#[test]
fn claims_are_bounded_by_their_storage_request() {
    let items = items(json!([{"type": "PersistentVolumeClaim",
        "min": {"storage": "1Gi"}, "max": {"storage": "10Gi"}}]));
    let claim = |size: &str| json!({"spec": {"resources": {"requests": {"storage": size}}}});
    assert!(validate_claim(&items, &claim("5Gi")).is_empty());
    assert_eq!(
        validate_claim(&items, &claim("20Gi")),
        vec!["maximum storage usage per PersistentVolumeClaim is 10Gi, but request is 20Gi"]
    );
    assert_eq!(
        validate_claim(&items, &claim("500Mi")),
        vec!["minimum storage usage per PersistentVolumeClaim is 1Gi, but request is 500Mi"]
    );
}

#[test]
fn several_errors_are_aggregated_like_the_reference() {
    assert_eq!(aggregate(vec![]), None);
    assert_eq!(aggregate(vec!["a".into(), "a".into()]).as_deref(), Some("a"));
    assert_eq!(aggregate(vec!["a".into(), "b".into()]).as_deref(), Some("[a, b]"));
}
