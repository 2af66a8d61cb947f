//! Tests of the node graph and the Node authorizer's decisions.

use std::sync::Arc;

use super::*;
use crate::apiserver::watch_cache::CachedObject;
use serde_json::json;

fn pod(name: &str, node: &str, spec: Value) -> Arc<CachedObject> {
    let mut spec = spec;
    spec["nodeName"] = json!(node);
    CachedObject::new(json!({"metadata": {"name": name, "namespace": "team"}, "spec": spec}))
}

fn graph() -> Graph {
    let on_n1 = pod(
        "web",
        "n1",
        json!({
            "serviceAccountName": "web-sa",
            "imagePullSecrets": [{"name": "pull"}],
            "volumes": [
                {"name": "s", "secret": {"secretName": "vol-secret"}},
                {"name": "c", "configMap": {"name": "vol-cm"}},
                {"name": "p", "projected": {"sources": [{"secret": {"name": "proj-secret"}}, {"configMap": {"name": "proj-cm"}}]}},
                {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
                {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {}}},
            ],
            "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "init-env"}}]}],
            "containers": [{"name": "c", "env": [
                {"name": "A", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "k"}}},
                {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "k"}}},
            ], "envFrom": [{"configMapRef": {"name": "from-cm"}}]}],
        }),
    );
    let on_n2 =
        pod("db", "n2", json!({"volumes": [{"name": "s", "secret": {"secretName": "db-secret"}}]}));
    let pending = CachedObject::new(json!({"metadata": {"name": "p", "namespace": "team"},
        "spec": {"volumes": [{"name": "s", "secret": {"secretName": "pending-secret"}}]}}));
    let claim = CachedObject::new(json!({"metadata": {"name": "data", "namespace": "team"},
        "spec": {"volumeName": "pv-1"}}));
    Graph::build(&[on_n1, on_n2, pending], &[claim])
}

#[test]
fn the_graph_follows_every_reference_of_bound_pods() {
    let g = graph();
    for name in ["vol-secret", "proj-secret", "pull", "env-secret", "init-env"] {
        assert!(g.has_path("n1", Kind::Secret, "team", name), "{name}");
    }
    for name in ["vol-cm", "proj-cm", "env-cm", "from-cm"] {
        assert!(g.has_path("n1", Kind::ConfigMap, "team", name), "{name}");
    }
    assert!(g.has_path("n1", Kind::Claim, "team", "data"));
    assert!(g.has_path("n1", Kind::Claim, "team", "web-scratch"), "ephemeral claim");
    assert!(g.has_path("n1", Kind::Volume, "", "pv-1"), "through the bound claim");
    assert!(g.has_path("n1", Kind::ServiceAccount, "team", "web-sa"));
    assert!(!g.has_path("n1", Kind::Secret, "team", "db-secret"), "used on n2 only");
    assert!(!g.has_path("n1", Kind::Secret, "other", "vol-secret"), "namespaced");
    assert!(g.has_path("n2", Kind::Secret, "team", "db-secret"));
    assert!(
        !g.has_path("n1", Kind::Secret, "team", "pending-secret"),
        "unbound pods reach nothing"
    );
}

fn node(name: &str) -> User {
    User::new(format!("system:node:{name}"), vec![NODES_GROUP.into()])
}

fn get(user: &User, resource: &str, ns: &str, name: &str) -> Attributes {
    Attributes::resource(user, "get", "", resource).in_namespace(ns).named(name)
}

#[test]
fn nodes_read_only_what_their_pods_use() {
    let g = graph();
    let authz = NodeAuthorizer { graph: &g, rules: node_rules() };
    let n1 = node("n1");
    assert_eq!(authz.judge(&get(&n1, "secrets", "team", "vol-secret")), Some(Ok(())));
    assert_eq!(
        authz.judge(&get(&n1, "secrets", "team", "db-secret")),
        Some(Err("no relationship found between node 'n1' and this object".into()))
    );
    assert!(matches!(
        authz.authorize(&get(&n1, "secrets", "team", "db-secret")),
        Decision::NoOpinion
    ));
    let list = Attributes::resource(&n1, "list", "", "secrets").in_namespace("team");
    assert_eq!(authz.judge(&list), Some(Err("No Object name found".into())));
    let update = Attributes { verb: "update".into(), ..get(&n1, "configmaps", "team", "vol-cm") };
    assert_eq!(authz.judge(&update), Some(Err("can only read resources of this type".into())));
    assert_eq!(authz.judge(&get(&n1, "persistentvolumes", "", "pv-1")), Some(Ok(())));
    let mut token = Attributes::resource(&n1, "create", "", "serviceaccounts")
        .in_namespace("team")
        .named("web-sa");
    token.subresource = "token".into();
    assert_eq!(authz.judge(&token), Some(Ok(())));
    let other_token = Attributes { name: "default".into(), ..token.clone() };
    assert!(matches!(authz.judge(&other_token), Some(Err(r)) if r.starts_with("no relationship")));
    // The reference's node rules decide the rest.
    let list_roles = Attributes::resource(&n1, "list", "rbac.authorization.k8s.io", "roles");
    assert_eq!(authz.judge(&list_roles), Some(Err(String::new())));
}

#[test]
fn nodes_list_and_watch_only_their_own_pods_and_node() {
    let g = graph();
    let authz = NodeAuthorizer { graph: &g, rules: node_rules() };
    let n1 = node("n1");
    let pods = |verb: &str, selector: &str| Attributes {
        field_selector: selector.into(),
        ..Attributes::resource(&n1, verb, "", "pods")
    };
    let refused = Some(Err("can only list/watch pods with spec.nodeName field selector".into()));
    assert_eq!(authz.judge(&pods("watch", "")), refused);
    assert_eq!(authz.judge(&pods("list", "spec.nodeName=n2")), refused);
    assert_eq!(authz.judge(&pods("list", "spec.nodeName!=n1")), refused);
    assert_eq!(authz.judge(&pods("watch", "spec.nodeName=n1")), Some(Ok(())));
    assert_eq!(authz.judge(&pods("list", "status.phase=Running,spec.nodeName==n1")), Some(Ok(())));
    // Single pods: only those bound to the node (a list by name is a get).
    assert_eq!(authz.judge(&get(&n1, "pods", "team", "web")), Some(Ok(())));
    assert!(authz.judge(&get(&n1, "pods", "team", "db")).is_some_and(|v| v.is_err()));
    let by_name = pods("list", "metadata.name=web").in_namespace("team").named("web");
    assert_eq!(authz.judge(&by_name), Some(Ok(())));
    // Writes are NodeRestriction's to narrow.
    let mut status = get(&n1, "pods", "team", "db");
    (status.verb, status.subresource) = ("patch".into(), "status".into());
    assert_eq!(authz.judge(&status), Some(Ok(())));
    let nodes = |verb: &str, name: &str| Attributes::resource(&n1, verb, "", "nodes").named(name);
    assert_eq!(authz.judge(&nodes("get", "n1")), Some(Ok(())));
    assert_eq!(authz.judge(&nodes("watch", "n1")), Some(Ok(())));
    assert_eq!(
        authz.judge(&nodes("get", "n2")),
        Some(Err("node 'n1' cannot read 'n2', only its own Node object".into()))
    );
    assert_eq!(
        authz.judge(&nodes("list", "")),
        Some(Err("node 'n1' cannot read all nodes, only its own Node object".into()))
    );
    assert_eq!(authz.judge(&nodes("patch", "n2")), Some(Ok(())), "NodeRestriction's to refuse");
}

#[test]
fn nodes_touch_only_their_own_lease() {
    let g = Graph::default();
    let authz = NodeAuthorizer { graph: &g, rules: node_rules() };
    let n1 = node("n1");
    let lease = |verb: &str, ns: &str, name: &str| {
        Attributes::resource(&n1, verb, "coordination.k8s.io", "leases")
            .in_namespace(ns)
            .named(name)
    };
    assert_eq!(authz.judge(&lease("update", LEASE_NAMESPACE, "n1")), Some(Ok(())));
    assert_eq!(authz.judge(&lease("create", LEASE_NAMESPACE, "")), Some(Ok(())));
    assert_eq!(
        authz.judge(&lease("update", LEASE_NAMESPACE, "n2")),
        Some(Err("can only access node lease with the same name as the requesting node".into()))
    );
    assert!(authz.judge(&lease("get", "default", "n1")).is_some_and(|v| v.is_err()));
    assert!(authz.judge(&lease("list", LEASE_NAMESPACE, "")).is_some_and(|v| v.is_err()));
}

#[test]
fn only_node_identities_are_judged() {
    let g = graph();
    let authz = NodeAuthorizer { graph: &g, rules: node_rules() };
    let impostor = User::new("system:node:n1", vec![]);
    assert_eq!(authz.judge(&get(&impostor, "secrets", "team", "vol-secret")), None);
    let alice = User::new("alice", vec![NODES_GROUP.into()]);
    assert_eq!(authz.authorize(&get(&alice, "secrets", "team", "vol-secret")), Decision::NoOpinion);
    let nameless = node("");
    assert_eq!(
        authz.judge(&get(&nameless, "secrets", "team", "vol-secret")),
        Some(Err("unknown node".into()))
    );
}

fn volume(name: &str, terms: Value) -> Arc<CachedObject> {
    CachedObject::new(json!({"metadata": {"name": name},
        "spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": terms}}}}))
}

fn hostname_in(values: Value) -> Value {
    json!([{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": values}]}])
}

#[test]
fn nodes_reach_the_volumes_pinned_to_them_and_no_other() {
    let wide = json!([{"matchExpressions": [
        {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]},
        {"key": "zone", "operator": "In", "values": ["a"]}]}]);
    let two_terms = json!([hostname_in(json!(["n1"]))[0], hostname_in(json!(["n2"]))[0]]);
    let not_in = json!([{"matchExpressions": [
        {"key": "kubernetes.io/hostname", "operator": "NotIn", "values": ["n2"]}]}]);
    let volumes = [
        volume("pinned-n1", hostname_in(json!(["n1"]))),
        volume("pinned-n2", hostname_in(json!(["n2"]))),
        volume("either", hostname_in(json!(["n1", "n2"]))),
        volume("wide", wide),
        volume("two-terms", two_terms),
        volume("not-in", not_in),
    ];
    assert_eq!(pinned_node(&volumes[0]), Some("n1"));
    for v in &volumes[2..] {
        assert_eq!(pinned_node(v), None, "{}", text(v, "/metadata/name"));
    }
    let g = Graph::default().with_pinned_volumes(&volumes);
    let authz = NodeAuthorizer { graph: &g, rules: node_rules() };
    let n1 = node("n1");
    let pv = |verb: &str, name: &str| {
        Attributes::resource(&n1, verb, "", "persistentvolumes").named(name)
    };
    for verb in ["get", "list", "watch", "update", "patch"] {
        assert_eq!(authz.judge(&pv(verb, "pinned-n1")), Some(Ok(())), "{verb}");
    }
    for verb in ["delete", "create"] {
        assert!(authz.judge(&pv(verb, "pinned-n1")).is_some_and(|v| v.is_err()), "{verb}");
    }
    let mut status = pv("update", "pinned-n1");
    status.subresource = "status".into();
    assert!(authz.judge(&status).is_some_and(|v| v.is_err()), "not its status");
    for name in ["pinned-n2", "either", "wide", "two-terms", "not-in"] {
        assert_eq!(
            authz.judge(&pv("get", name)),
            Some(Err("no relationship found between node 'n1' and this object".into())),
            "{name}"
        );
        assert!(authz.judge(&pv("update", name)).is_some_and(|v| v.is_err()), "{name}");
    }
    // Collections: only through the pinned-node field selector naming itself.
    let list = |verb: &str, selector: &str| Attributes {
        field_selector: selector.into(),
        ..Attributes::resource(&n1, verb, "", "persistentvolumes")
    };
    assert_eq!(authz.judge(&list("watch", "skerry.io/pinnedNode=n1")), Some(Ok(())));
    assert_eq!(authz.judge(&list("list", "skerry.io/pinnedNode==n1")), Some(Ok(())));
    for selector in ["", "skerry.io/pinnedNode=n2", "skerry.io/pinnedNode!=n1"] {
        assert!(authz.judge(&list("list", selector)).is_some_and(|v| v.is_err()), "{selector}");
    }
}
