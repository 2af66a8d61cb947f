use serde_json::json;

use super::*;

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
    let charges = evaluate(&Evaluator::Pods, &quotas, &pod("250m")).unwrap();
    assert_eq!(charges.len(), 1);
    assert_eq!(usage::pretty(&charges[0].1), "pods=2,requests.cpu=750m");
}

#[test]
fn a_create_beyond_the_quota_gets_the_reference_message() {
    let quotas = [quota("q", json!({"pods": "2"}), json!({"pods": "2"}))];
    assert_eq!(
        evaluate(&Evaluator::Pods, &quotas, &pod("1")).unwrap_err(),
        "exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"
    );
    let compute = [quota(
        "compute",
        json!({"requests.cpu": "1", "pods": "10"}),
        json!({"requests.cpu": "800m", "pods": "1"}),
    )];
    assert_eq!(
        evaluate(&Evaluator::Pods, &compute, &pod("300m")).unwrap_err(),
        "exceeded quota: compute, requested: requests.cpu=300m, used: requests.cpu=800m, \
         limited: requests.cpu=1"
    );
}

#[test]
fn missing_compute_and_unknown_status_are_refused() {
    let quotas = [quota("q", json!({"limits.memory": "1Gi"}), json!({"limits.memory": "0"}))];
    assert_eq!(
        evaluate(&Evaluator::Pods, &quotas, &pod("1")).unwrap_err(),
        "failed quota: q: must specify limits.memory for: c"
    );
    let fresh = [json!({"metadata": {"name": "new"}, "status": {"hard": {"pods": "1"}}})];
    assert_eq!(
        evaluate(&Evaluator::Pods, &fresh, &pod("1")).unwrap_err(),
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
        evaluate(&configmaps, &quotas, &json!({})).unwrap_err(),
        "exceeded quota: cm, requested: count/configmaps=1, used: count/configmaps=1, \
         limited: count/configmaps=1"
    );
    // A secret concerns neither quota: nothing to charge.
    assert!(evaluate(&Evaluator::of("", "secrets"), &quotas, &json!({})).unwrap().is_empty());
    // A scoped quota does not select a config map.
    let scoped = [json!({"metadata": {"name": "s"}, "spec": {"scopes": ["BestEffort"]},
        "status": {"hard": {"count/configmaps": "0"}, "used": {"count/configmaps": "0"}}})];
    assert!(evaluate(&configmaps, &scoped, &json!({})).unwrap().is_empty());
}
