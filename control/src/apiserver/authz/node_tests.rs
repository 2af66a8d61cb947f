//! Tests of the node graph and the Node authorizer's decisions.

use super::*;
use serde_json::json;

fn pod(name: &str, node: &str, spec: Value) -> Arc<Value> {
    let mut spec = spec;
    spec["nodeName"] = json!(node);
    Arc::new(json!({"metadata": {"name": name, "namespace": "team"}, "spec": spec}))
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
    let pending = Arc::new(json!({"metadata": {"name": "p", "namespace": "team"},
        "spec": {"volumes": [{"name": "s", "secret": {"secretName": "pending-secret"}}]}}));
    let claim = Arc::new(json!({"metadata": {"name": "data", "namespace": "team"},
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
    let watch_pods = Attributes::resource(&n1, "watch", "", "pods");
    assert_eq!(authz.judge(&watch_pods), Some(Ok(())));
    let list_roles = Attributes::resource(&n1, "list", "rbac.authorization.k8s.io", "roles");
    assert_eq!(authz.judge(&list_roles), Some(Err(String::new())));
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
