use serde_json::json;

use super::*;

fn pod(containers: Value) -> Value {
    json!({"metadata": {"name": "p"}, "spec": {"containers": containers}})
}

#[test]
fn pods_charge_their_summed_requests_and_limits() {
    let p = pod(json!([
        {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                                     "limits": {"cpu": "200m", "memory": "64Mi"}}},
        {"name": "b", "resources": {"requests": {"cpu": "150m", "memory": "64Mi"}}},
    ]));
    let usage = Evaluator::Pods.usage(&p);
    assert_eq!(
        pretty(&usage),
        "count/pods=1,cpu=250m,limits.cpu=200m,limits.memory=64Mi,memory=128Mi,pods=1,\
         requests.cpu=250m,requests.memory=128Mi"
    );
}

#[test]
fn an_init_container_counts_at_its_peak() {
    let mut p = pod(json!([{"name": "a", "resources": {"requests": {"cpu": "100m"}}}]));
    p["spec"]["initContainers"] = json!([{"name": "i", "resources": {"requests": {"cpu": "1"}}}]);
    assert_eq!(Evaluator::Pods.usage(&p)["requests.cpu"].to_string(), "1");
}

#[test]
fn terminal_pods_only_count_as_objects() {
    let mut p = pod(json!([{"name": "a", "resources": {"requests": {"cpu": "1"}}}]));
    p["status"] = json!({"phase": "Succeeded"});
    assert_eq!(pretty(&Evaluator::Pods.usage(&p)), "count/pods=1");
}

#[test]
fn services_claims_and_other_objects() {
    let svc = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 81}]}});
    assert_eq!(
        pretty(&Evaluator::Services.usage(&svc)),
        "count/services=1,services=1,services.nodeports=2"
    );
    let lb = json!({"spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}});
    assert_eq!(Evaluator::Services.usage(&lb)["services.loadbalancers"].to_string(), "1");
    let pvc = json!({"spec": {"storageClassName": "fast",
        "resources": {"requests": {"storage": "1Gi"}}}});
    assert_eq!(
        pretty(&Evaluator::PersistentVolumeClaims.usage(&pvc)),
        "count/persistentvolumeclaims=1,fast.storageclass.storage.k8s.io/persistentvolumeclaims=1,\
         fast.storageclass.storage.k8s.io/requests.storage=1Gi,persistentvolumeclaims=1,\
         requests.storage=1Gi"
    );
    let cm = Evaluator::of("", "configmaps");
    assert_eq!(pretty(&cm.usage(&json!({}))), "configmaps=1,count/configmaps=1");
    let deploy = Evaluator::of("apps", "deployments");
    assert_eq!(pretty(&deploy.usage(&json!({}))), "count/deployments.apps=1");
}

#[test]
fn quota_names_map_to_their_evaluator() {
    assert_eq!(Evaluator::tracking("requests.cpu"), Some(Evaluator::Pods));
    assert_eq!(Evaluator::tracking("count/pods"), Some(Evaluator::Pods));
    assert_eq!(Evaluator::tracking("services.nodeports"), Some(Evaluator::Services));
    assert_eq!(Evaluator::tracking("requests.storage"), Some(Evaluator::PersistentVolumeClaims));
    assert_eq!(Evaluator::tracking("configmaps"), Some(Evaluator::of("", "configmaps")));
    assert_eq!(
        Evaluator::tracking("count/deployments.apps"),
        Some(Evaluator::of("apps", "deployments"))
    );
    assert_eq!(
        Evaluator::tracking("count/widgets.example.com").unwrap().resource(),
        ("example.com", "widgets")
    );
    assert_eq!(Evaluator::tracking("bogus"), None);
}

#[test]
fn scopes_select_pods_only() {
    let quota = |scopes: Value| json!({"spec": {"scopes": scopes}});
    let best_effort = pod(json!([{"name": "a"}]));
    let mut terminating = pod(json!([{"name": "a", "resources": {"limits": {"cpu": "1"}}}]));
    terminating["spec"]["activeDeadlineSeconds"] = json!(30);
    let pods = Evaluator::Pods;
    assert!(pods.matches_scopes(&quota(json!(["BestEffort"])), &best_effort));
    assert!(!pods.matches_scopes(&quota(json!(["BestEffort"])), &terminating));
    assert!(pods.matches_scopes(&quota(json!(["Terminating", "NotBestEffort"])), &terminating));
    assert!(!pods.matches_scopes(&quota(json!(["NotTerminating"])), &terminating));
    assert!(
        !Evaluator::of("", "configmaps").matches_scopes(&quota(json!(["BestEffort"])), &json!({}))
    );
    let mut high = best_effort.clone();
    high["spec"]["priorityClassName"] = json!("high");
    let selector = json!({"spec": {"scopeSelector": {"matchExpressions": [
        {"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}}});
    assert!(pods.matches_scopes(&selector, &high));
    assert!(!pods.matches_scopes(&selector, &best_effort));
}

#[test]
fn compute_quota_requires_every_container_to_state_it() {
    let mut p = pod(json!([
        {"name": "a", "resources": {"requests": {"cpu": "1"}}},
        {"name": "b"},
    ]));
    p["spec"]["initContainers"] = json!([{"name": "init"}]);
    let required = vec!["limits.cpu".to_string(), "requests.cpu".to_string(), "pods".to_string()];
    assert_eq!(
        pod_constraints(&required, &p).unwrap_err(),
        "must specify limits.cpu for: a,b,init; must specify requests.cpu for: b,init"
    );
    assert!(pod_constraints(&["pods".to_string()], &p).is_ok());
}
