use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::MatchResources;
use serde_json::{json, Value};

use super::*;

fn criteria(v: Value) -> MatchResources {
    serde_json::from_value(v).expect("match resources")
}

fn deployment(labels: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "web", "namespace": "prod", "labels": labels}})
}

fn attrs<'a>(obj: &'a Value, subresource: &'a str, operation: &'a str) -> Attributes<'a> {
    Attributes {
        group: "apps",
        version: "v1",
        resource: "deployments",
        subresource,
        operation,
        name: "web",
        namespaced: true,
        object: Some(obj),
        old_object: None,
        equivalent_versions: &[],
    }
}

fn ns_labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

const DEPLOYMENTS: &str = r#"{"resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"],
    "operations": ["CREATE", "UPDATE"], "resources": ["deployments"]}]}"#;

#[test]
fn resource_rules_match_group_version_resource_and_operation() {
    let rules = criteria(serde_json::from_str(DEPLOYMENTS).unwrap());
    let obj = deployment(json!({}));
    assert_eq!(matches(&rules, &attrs(&obj, "", "CREATE"), None), Ok(true));
    assert_eq!(matches(&rules, &attrs(&obj, "", "DELETE"), None), Ok(false));
    // A rule for the resource does not cover its subresources.
    assert_eq!(matches(&rules, &attrs(&obj, "scale", "UPDATE"), None), Ok(false));
    let mut other = attrs(&obj, "", "CREATE");
    other.resource = "replicasets";
    assert_eq!(matches(&rules, &other, None), Ok(false));
    other = attrs(&obj, "", "CREATE");
    other.version = "v1beta1";
    assert_eq!(matches(&rules, &other, None), Ok(false));
}

#[test]
fn wildcards_follow_the_reference_subresource_rules() {
    let obj = deployment(json!({}));
    let rule = |resources: Value| {
        criteria(json!({"resourceRules": [{"apiGroups": ["*"], "apiVersions": ["*"],
                                           "operations": ["*"], "resources": resources}]}))
    };
    let main = attrs(&obj, "", "UPDATE");
    let status = attrs(&obj, "status", "UPDATE");
    assert_eq!(matches(&rule(json!(["*"])), &main, None), Ok(true));
    assert_eq!(matches(&rule(json!(["*"])), &status, None), Ok(false));
    assert_eq!(matches(&rule(json!(["*/*"])), &status, None), Ok(true));
    assert_eq!(matches(&rule(json!(["deployments/*"])), &status, None), Ok(true));
    // As in the reference, `sub == "*"` also matches no subresource.
    assert_eq!(matches(&rule(json!(["deployments/*"])), &main, None), Ok(true));
    assert_eq!(matches(&rule(json!(["replicasets/*"])), &status, None), Ok(false));
    assert_eq!(matches(&rule(json!(["*/status"])), &status, None), Ok(true));
    assert_eq!(matches(&rule(json!(["*/status"])), &main, None), Ok(false));
}

#[test]
fn exclusions_scope_and_resource_names_narrow_the_rules() {
    let obj = deployment(json!({}));
    let a = attrs(&obj, "", "CREATE");
    let excluded = criteria(json!({
        "resourceRules": [{"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["*"],
                           "resources": ["*"]}],
        "excludeResourceRules": [{"apiGroups": ["apps"], "apiVersions": ["*"],
                                  "operations": ["*"], "resources": ["deployments"]}]}));
    assert_eq!(matches(&excluded, &a, None), Ok(false));
    let scoped = |scope: &str| {
        criteria(json!({"resourceRules": [{"apiGroups": ["*"], "apiVersions": ["*"],
            "operations": ["*"], "resources": ["*"], "scope": scope}]}))
    };
    assert_eq!(matches(&scoped("Cluster"), &a, None), Ok(false));
    assert_eq!(matches(&scoped("Namespaced"), &a, None), Ok(true));
    let named = |name: &str| {
        criteria(json!({"resourceRules": [{"apiGroups": ["*"], "apiVersions": ["*"],
            "operations": ["*"], "resources": ["*"], "resourceNames": [name]}]}))
    };
    assert_eq!(matches(&named("web"), &a, None), Ok(true));
    assert_eq!(matches(&named("db"), &a, None), Ok(false));
}

#[test]
fn equivalent_versions_match_unless_the_policy_is_exact() {
    let obj = deployment(json!({}));
    let versions = ["v1".to_string()];
    let mut a = attrs(&obj, "", "CREATE");
    a.version = "v2";
    a.equivalent_versions = &versions;
    let rules = criteria(serde_json::from_str(DEPLOYMENTS).unwrap());
    assert_eq!(matches(&rules, &a, None), Ok(true));
    let mut exact = rules.clone();
    exact.match_policy = Some("Exact".into());
    assert_eq!(matches(&exact, &a, None), Ok(false));
}

#[test]
fn namespace_selector_reads_the_namespace_labels() {
    let obj = deployment(json!({}));
    let a = attrs(&obj, "", "CREATE");
    let mut rules = criteria(serde_json::from_str(DEPLOYMENTS).unwrap());
    rules.namespace_selector =
        Some(serde_json::from_value(json!({"matchLabels": {"env": "prod"}})).unwrap());
    assert_eq!(matches(&rules, &a, Some(&ns_labels(&[("env", "prod")]))), Ok(true));
    assert_eq!(matches(&rules, &a, Some(&ns_labels(&[("env", "dev")]))), Ok(false));
    // A selector that needs the labels of a namespace nobody knows is an error.
    assert!(matches(&rules, &a, None).is_err());
    // Cluster-scoped objects are never exempted by a namespace selector.
    let mut cluster = attrs(&obj, "", "CREATE");
    cluster.namespaced = false;
    rules.resource_rules = None;
    assert_eq!(matches(&rules, &cluster, None), Ok(true));
    // A namespace is selected by its own labels.
    let ns = json!({"metadata": {"name": "x", "labels": {"env": "prod"}}});
    let namespace = Attributes {
        group: "",
        resource: "namespaces",
        namespaced: false,
        object: Some(&ns),
        ..attrs(&obj, "", "CREATE")
    };
    assert_eq!(matches(&rules, &namespace, None), Ok(true));
}

#[test]
fn object_selector_matches_new_or_old_labels_and_empty_rules_match_all() {
    let new = deployment(json!({"tier": "web"}));
    let old = deployment(json!({"tier": "db"}));
    let sel = criteria(json!({"objectSelector": {"matchExpressions": [
        {"key": "tier", "operator": "In", "values": ["db"]}]}}));
    let mut a = attrs(&new, "", "UPDATE");
    assert_eq!(matches(&sel, &a, None), Ok(false));
    a.old_object = Some(&old);
    assert_eq!(matches(&sel, &a, None), Ok(true));
    // No resource rules: a binding that only narrows by selector selects every resource.
    assert_eq!(matches(&criteria(json!({})), &attrs(&new, "status", "UPDATE"), None), Ok(true));
}
