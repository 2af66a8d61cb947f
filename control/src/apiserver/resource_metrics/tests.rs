//! The metrics objects built from agent reports, and the quantity and duration formats.

use serde_json::json;

use super::scrape::ContainerUsage;
use super::*;

fn usage(nano_cores: Option<u64>, window: Option<f64>, bytes: u64) -> Usage {
    Usage {
        timestamp: "2026-01-01T00:00:10Z".into(),
        window_seconds: window,
        cpu_usage_nano_cores: nano_cores,
        memory_working_set_bytes: bytes,
    }
}

#[test]
fn quantities_are_canonical_as_metrics_server_writes_them() {
    assert_eq!(cpu_quantity(0), "0");
    assert_eq!(cpu_quantity(2_000_000_000), "2");
    assert_eq!(cpu_quantity(250_000_000), "250m");
    assert_eq!(cpu_quantity(1_234_000), "1234u");
    assert_eq!(cpu_quantity(1_234_567), "1234567n");
    assert_eq!(memory_quantity(5 << 20), "5Mi");
    assert_eq!(memory_quantity(1234 * 1024), "1234Ki");
    assert_eq!(memory_quantity(1000), "1000");
    assert_eq!(go_duration(10.0), "10s");
    assert_eq!(go_duration(10.5), "10.5s");
    assert_eq!(go_duration(10.0321), "10.032s");
    assert_eq!(go_duration(60.25), "1m0.25s");
}

#[test]
fn node_metrics_carry_name_labels_window_and_usage() {
    let node = json!({"metadata": {"name": "n1", "labels": {"zone": "a"}, "uid": "x"},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
    assert!(is_ready(&node));
    let m = node_metrics(&node, &usage(Some(1_500_000_000), Some(10.5), 3 << 30)).unwrap();
    assert_eq!(m["metadata"]["name"], "n1");
    assert_eq!(m["metadata"]["labels"], json!({"zone": "a"}));
    assert!(m["metadata"]["uid"].is_null());
    assert_eq!(m["timestamp"], "2026-01-01T00:00:10Z");
    assert_eq!(m["window"], "10.5s");
    assert_eq!(m["usage"], json!({"cpu": "1500m", "memory": "3Gi"}));
    // No rate yet: no metrics.
    assert_eq!(node_metrics(&node, &usage(None, None, 1)), None);
    let unready = json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
    assert!(!is_ready(&unready));
}

#[test]
fn pod_metrics_list_the_containers_with_a_rate() {
    let pod = json!({"metadata": {"name": "web", "namespace": "ns1", "labels": {"app": "web"}}});
    let report = PodUsage {
        uid: "u1".into(),
        containers: vec![
            ContainerUsage { name: "app".into(), usage: usage(Some(5_000), Some(9.0), 4096) },
            ContainerUsage { name: "new".into(), usage: usage(None, None, 1) },
            ContainerUsage { name: "side".into(), usage: usage(Some(7), Some(11.0), 1000) },
        ],
    };
    let m = pod_metrics(&pod, &report).unwrap();
    assert_eq!(m["metadata"]["namespace"], "ns1");
    assert_eq!(m["metadata"]["labels"]["app"], "web");
    assert_eq!(m["window"], "11s");
    assert_eq!(
        m["containers"],
        json!([{"name": "app", "usage": {"cpu": "5u", "memory": "4Ki"}},
               {"name": "side", "usage": {"cpu": "7n", "memory": "1000"}}])
    );
    let fresh = PodUsage {
        uid: "u2".into(),
        containers: vec![ContainerUsage { name: "new".into(), usage: usage(None, None, 1) }],
    };
    assert_eq!(pod_metrics(&pod, &fresh), None);
}

#[test]
fn discovery_infos_are_the_two_read_only_resources() {
    let infos = infos();
    let names: Vec<(&str, &str, bool)> =
        infos.iter().map(|i| (i.kind.as_str(), i.plural.as_str(), i.namespaced)).collect();
    assert_eq!(names, [("NodeMetrics", "nodes", false), ("PodMetrics", "pods", true)]);
    assert!(infos
        .iter()
        .all(|i| i.verbs == ["get", "list"] && i.api_version() == "metrics.k8s.io/v1beta1"));
    assert_eq!(percent_encode("app in (a,b)"), "app%20in%20%28a%2Cb%29");
    let err = no_metrics(&infos[1], "default/web");
    assert_eq!(err.message, "podmetrics.metrics.k8s.io \"default/web\" not found");
}

#[test]
fn discovery_lists_the_group_for_kubectl_top() {
    use super::super::discovery;
    use super::super::resource::Registry;
    let registry = Registry::builtin();
    let groups = discovery::api_group_list(&registry);
    let metrics = groups["groups"].as_array().unwrap().iter().find(|g| g["name"] == GROUP);
    assert_eq!(metrics.unwrap()["preferredVersion"]["groupVersion"], "metrics.k8s.io/v1beta1");
    let list = discovery::api_resource_list(&registry, GROUP, VERSION).unwrap();
    assert_eq!(
        list["resources"],
        json!([
            {"name": "nodes", "singularName": "", "namespaced": false, "kind": "NodeMetrics",
             "verbs": ["get", "list"]},
            {"name": "pods", "singularName": "", "namespaced": true, "kind": "PodMetrics",
             "verbs": ["get", "list"]}])
    );
    let aggregated = discovery::aggregated(&registry, false);
    let item =
        aggregated["items"].as_array().unwrap().iter().find(|g| g["metadata"]["name"] == GROUP);
    let resources = &item.unwrap()["versions"][0]["resources"];
    assert_eq!(resources[1]["resource"], "pods");
    assert_eq!(resources[1]["scope"], "Namespaced");
    assert_eq!(resources[1]["responseKind"]["kind"], "PodMetrics");
}

#[test]
fn the_metrics_reader_role_aggregates_into_view_edit_and_admin() {
    let roles = super::super::authz::bootstrap::cluster_roles();
    let reader = roles
        .iter()
        .find(|r| r["metadata"]["name"] == "system:aggregated-metrics-reader")
        .expect("the bootstrap policy has the metrics reader role");
    for label in ["view", "edit", "admin"] {
        let key = format!("rbac.authorization.k8s.io/aggregate-to-{label}");
        assert_eq!(reader["metadata"]["labels"][&key], "true", "{reader}");
    }
    assert_eq!(
        reader["rules"],
        json!([{"apiGroups": ["metrics.k8s.io"], "resources": ["nodes", "pods"],
                "verbs": ["get", "list", "watch"]}])
    );
}
