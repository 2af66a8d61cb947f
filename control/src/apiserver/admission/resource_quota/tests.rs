use serde_json::json;

use super::*;

/// The check of a first attempt: nothing charged before.
fn evaluate(
    evaluator: &Evaluator,
    quotas: &[Value],
    obj: &Value,
    old: Option<&Value>,
) -> Result<Vec<(usize, ResourceList)>, String> {
    evaluate_charging(evaluator, quotas, obj, old, &ResourceList::new()).map(|(charges, _)| charges)
}

fn quota(name: &str, hard: Value, used: Value) -> Value {
    json!({"metadata": {"name": name}, "spec": {"hard": hard},
           "status": {"hard": hard, "used": used}})
}

fn pod(cpu: &str) -> Value {
    json!({"metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "c", "resources": {"requests": {"cpu": cpu}, "limits": {"cpu": cpu}}}]}})
}

#[test]
fn a_create_within_the_quota_is_charged() {
    let quotas = [quota(
        "q",
        json!({"pods": "2", "requests.cpu": "1"}),
        json!({"pods": "1", "requests.cpu": "500m"}),
    )];
    let charges = evaluate(&Evaluator::Pods, &quotas, &pod("250m"), None).unwrap();
    assert_eq!(charges.len(), 1);
    assert_eq!(usage::pretty(&charges[0].1), "pods=2,requests.cpu=750m");
}

#[test]
fn a_create_beyond_the_quota_gets_the_reference_message() {
    let quotas = [quota("q", json!({"pods": "2"}), json!({"pods": "2"}))];
    assert_eq!(
        evaluate(&Evaluator::Pods, &quotas, &pod("1"), None).unwrap_err(),
        "exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"
    );
    let compute = [quota(
        "compute",
        json!({"requests.cpu": "1", "pods": "10"}),
        json!({"requests.cpu": "800m", "pods": "1"}),
    )];
    assert_eq!(
        evaluate(&Evaluator::Pods, &compute, &pod("300m"), None).unwrap_err(),
        "exceeded quota: compute, requested: requests.cpu=300m, used: requests.cpu=800m, \
         limited: requests.cpu=1"
    );
}

#[test]
fn missing_compute_and_unknown_status_are_refused() {
    let quotas = [quota("q", json!({"limits.memory": "1Gi"}), json!({"limits.memory": "0"}))];
    assert_eq!(
        evaluate(&Evaluator::Pods, &quotas, &pod("1"), None).unwrap_err(),
        "failed quota: q: must specify limits.memory for: c"
    );
    let fresh = [json!({"metadata": {"name": "new"}, "status": {"hard": {"pods": "1"}}})];
    assert_eq!(
        evaluate(&Evaluator::Pods, &fresh, &pod("1"), None).unwrap_err(),
        "status unknown for quota: new, resources: pods"
    );
}

#[test]
fn object_counts_and_unrelated_quotas() {
    let quotas = [
        quota("cm", json!({"count/configmaps": "1"}), json!({"count/configmaps": "1"})),
        quota("other", json!({"pods": "1"}), json!({"pods": "0"})),
    ];
    let configmaps = Evaluator::of("", "configmaps");
    assert_eq!(
        evaluate(&configmaps, &quotas, &json!({}), None).unwrap_err(),
        "exceeded quota: cm, requested: count/configmaps=1, used: count/configmaps=1, \
         limited: count/configmaps=1"
    );
    // A secret concerns neither quota: nothing to charge.
    assert!(evaluate(&Evaluator::of("", "secrets"), &quotas, &json!({}), None).unwrap().is_empty());
    // A scoped quota does not select a config map.
    let scoped = [json!({"metadata": {"name": "s"}, "spec": {"scopes": ["BestEffort"]},
        "status": {"hard": {"count/configmaps": "0"}, "used": {"count/configmaps": "0"}}})];
    assert!(evaluate(&configmaps, &scoped, &json!({}), None).unwrap().is_empty());
}

fn service(kind: &str, ports: usize) -> Value {
    let ports: Vec<Value> = (0..ports).map(|i| json!({"port": 80 + i})).collect();
    json!({"metadata": {"name": "s"}, "spec": {"type": kind, "ports": ports}})
}

fn claim(class: &str, storage: &str) -> Value {
    json!({"metadata": {"name": "c"}, "spec": {"storageClassName": class,
        "resources": {"requests": {"storage": storage}}}})
}

#[test]
fn an_update_is_charged_only_what_it_adds() {
    let quotas = [quota(
        "q",
        json!({"services": "5", "services.nodeports": "2"}),
        json!({"services": "1", "services.nodeports": "0"}),
    )];
    let (cluster_ip, node_port) = (service("ClusterIP", 2), service("NodePort", 2));
    // ClusterIP → NodePort: two node ports, no new service.
    let charges = evaluate(&Evaluator::Services, &quotas, &node_port, Some(&cluster_ip)).unwrap();
    assert_eq!(usage::pretty(&charges[0].1), "services=1,services.nodeports=2");
    // An update that adds nothing (or takes away) is not charged.
    assert!(evaluate(&Evaluator::Services, &quotas, &cluster_ip, Some(&node_port))
        .unwrap()
        .is_empty());
    let full = [quota("q", json!({"services.nodeports": "1"}), json!({"services.nodeports": "1"}))];
    assert_eq!(
        evaluate(&Evaluator::Services, &full, &node_port, Some(&cluster_ip)).unwrap_err(),
        "exceeded quota: q, requested: services.nodeports=2, used: services.nodeports=1, \
         limited: services.nodeports=1"
    );
}

#[test]
fn a_claim_resize_is_charged_the_growth_per_class() {
    let class_key = "fast.storageclass.storage.k8s.io/requests.storage";
    let quotas = [quota(
        "q",
        json!({"requests.storage": "3Gi", class_key: "2Gi", "persistentvolumeclaims": "5"}),
        json!({"requests.storage": "1Gi", class_key: "1Gi", "persistentvolumeclaims": "1"}),
    )];
    let (small, large) = (claim("fast", "1Gi"), claim("fast", "2Gi"));
    let charges =
        evaluate(&Evaluator::PersistentVolumeClaims, &quotas, &large, Some(&small)).unwrap();
    assert_eq!(
        usage::pretty(&charges[0].1),
        format!("{class_key}=2Gi,persistentvolumeclaims=1,requests.storage=2Gi")
    );
    let huge = claim("fast", "3Gi");
    assert_eq!(
        evaluate(&Evaluator::PersistentVolumeClaims, &quotas, &huge, Some(&small)).unwrap_err(),
        format!("exceeded quota: q, requested: {class_key}=2Gi, used: {class_key}=1Gi, limited: {class_key}=2Gi")
    );
    assert!(Evaluator::PersistentVolumeClaims.charges_updates());
    assert!(!Evaluator::Pods.charges_updates());
    assert!(!Evaluator::of("", "configmaps").charges_updates());
}

#[test]
fn a_retried_update_is_not_charged_twice() {
    let quotas =
        [quota("q", json!({"requests.storage": "2Gi"}), json!({"requests.storage": "2Gi"}))];
    let (small, large) = (claim("", "1Gi"), claim("", "2Gi"));
    // The first attempt charged the growth (used is 2Gi now); its retry adds nothing.
    let already = usage::from_json_map(Some(&json!({"requests.storage": "1Gi"})));
    let pvc = Evaluator::PersistentVolumeClaims;
    let (charges, delta) =
        evaluate_charging(&pvc, &quotas, &large, Some(&small), &already).unwrap();
    assert!(charges.is_empty() && delta.is_empty(), "{charges:?}");
    // Without the memory of the first attempt it would be refused.
    assert!(evaluate(&pvc, &quotas, &large, Some(&small)).is_err());
}
