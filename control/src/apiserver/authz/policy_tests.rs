//! The bootstrap policy, enforced by a real handler over a real store: what the in-process
//! components, nodes and joining agents do is allowed, what others try is not, and a grant is
//! honoured by the very next request.

use std::sync::Arc;

use http::Method;
use http_body_util::Full;
use serde_json::json;

use super::{check_request, Decision};
use crate::apiserver::authn::User;
use crate::apiserver::request::{route, Query};
use crate::apiserver::server::{ApiConfig, ApiServer};
use crate::store::sqlite::{SqliteOptions, SqliteStore};

async fn server() -> (tempfile::TempDir, ApiServer) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("state.db"), SqliteOptions::default()).unwrap();
    let server = ApiServer::new(Arc::new(store), ApiConfig::default(), Default::default());
    crate::apiserver::serve::bootstrap(&server).await.unwrap();
    (dir, server)
}

/// Whether `user` may send `method path` (query included).
async fn may(server: &ApiServer, user: &User, method: Method, path_and_query: &str) -> bool {
    let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
    let query = Query::parse(Some(query));
    check_request(server, user, &method, path, &route(path), &query).await.is_ok()
}

fn named(name: &str, groups: &[&str]) -> User {
    User::new(name, groups.iter().map(|g| g.to_string()).collect())
}

#[tokio::test]
async fn components_nodes_and_joining_agents_are_allowed_their_work() {
    let (_dir, server) = server().await;
    let scheduler = crate::machinery::Identity::Scheduler.user();
    let kcm = crate::machinery::Identity::ControllerManager.user();
    let node = named("system:node:pi-1", &["system:nodes"]);
    let joining = named("system:bootstrap:abcdef", &["system:bootstrappers"]);
    let allowed: &[(&User, Method, &str)] = &[
        (&scheduler, Method::POST, "/api/v1/namespaces/default/pods/web/binding"),
        (&scheduler, Method::PATCH, "/api/v1/namespaces/default/pods/web/status"),
        (&scheduler, Method::DELETE, "/api/v1/namespaces/default/pods/victim"),
        (&scheduler, Method::POST, "/apis/events.k8s.io/v1/namespaces/default/events"),
        (&kcm, Method::GET, "/apis/apps/v1/replicasets?watch=true"),
        (&kcm, Method::POST, "/apis/apps/v1/namespaces/a/replicasets"),
        (&kcm, Method::POST, "/api/v1/namespaces/a/pods"),
        (&kcm, Method::PUT, "/api/v1/namespaces/a/status"),
        (&kcm, Method::PUT, "/api/v1/namespaces/a/finalize"),
        (&kcm, Method::DELETE, "/api/v1/namespaces/a/configmaps"),
        (&kcm, Method::PATCH, "/apis/example.com/v1/namespaces/a/widgets/w"),
        (&kcm, Method::PUT, "/apis/certificates.k8s.io/v1/certificatesigningrequests/c/approval"),
        (&kcm, Method::POST, "/apis/discovery.k8s.io/v1/namespaces/a/endpointslices"),
        (&kcm, Method::POST, "/apis/batch/v1/namespaces/a/jobs"),
        (&node, Method::GET, "/skerry/v1/tunnel"),
        (&node, Method::GET, "/api/v1/pods?watch=true&fieldSelector=spec.nodeName%3Dpi-1"),
        (&node, Method::GET, "/api/v1/persistentvolumes?fieldSelector=skerry.io/pinnedNode%3Dpi-1"),
        (&node, Method::GET, "/apis/discovery.k8s.io/v1/endpointslices?watch=true"),
        (&node, Method::PATCH, "/api/v1/nodes/pi-1/status"),
        (
            &node,
            Method::PATCH,
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/pi-1",
        ),
        (&node, Method::DELETE, "/api/v1/namespaces/a/pods/p"),
        (&node, Method::POST, "/apis/certificates.k8s.io/v1/certificatesigningrequests"),
        (&joining, Method::POST, "/apis/certificates.k8s.io/v1/certificatesigningrequests"),
        (&joining, Method::GET, "/apis/certificates.k8s.io/v1/certificatesigningrequests/c"),
        (&joining, Method::GET, "/apis"),
    ];
    for (user, method, path) in allowed {
        assert!(may(&server, user, method.clone(), path).await, "{} {method} {path}", user.name);
    }
    let refused: &[(&User, Method, &str)] = &[
        (&scheduler, Method::DELETE, "/api/v1/namespaces/default/secrets/s"),
        (&kcm, Method::POST, "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings"),
        (&node, Method::POST, "/apis/rbac.authorization.k8s.io/v1/clusterroles"),
        (&node, Method::GET, "/api/v1/namespaces/a/pods/p/exec"),
        // Every pod or volume of the cluster (the DNS answers pod names without pods).
        (&node, Method::GET, "/api/v1/pods?watch=true"),
        (&node, Method::GET, "/api/v1/persistentvolumes"),
        // No pod on the node uses them (the Node authorizer).
        (&node, Method::GET, "/api/v1/namespaces/a/secrets/s"),
        (&node, Method::POST, "/api/v1/namespaces/a/serviceaccounts/default/token"),
        (&node, Method::GET, "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/pi-2"),
        (&joining, Method::GET, "/api/v1/pods"),
        (&joining, Method::GET, "/skerry/v1/tunnel"),
    ];
    for (user, method, path) in refused {
        assert!(!may(&server, user, method.clone(), path).await, "{} {method} {path}", user.name);
    }
}

#[tokio::test]
async fn a_new_binding_is_honoured_by_the_next_request() {
    let (_dir, server) = server().await;
    let alice = named("alice", &[]);
    let path = "/api/v1/namespaces/default/configmaps";
    assert!(!may(&server, &alice, Method::GET, path).await);
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "alice-view", "namespace": "default"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "User", "name": "alice"}]});
    let request =
        http::Request::post("/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(bytes::Bytes::from(binding.to_string())))
            .unwrap();
    let response = server.handle(request, Some(User::system_admin())).await;
    assert_eq!(response.status(), 201);
    // No waiting: a refusal first lets the index catch up with the store.
    assert!(may(&server, &alice, Method::GET, path).await);
    let attrs =
        super::Attributes::resource(&alice, "list", "", "configmaps").in_namespace("default");
    assert!(matches!(super::authorize(&server, &attrs).await, Decision::Allow(_)));
}

#[tokio::test]
async fn a_node_reads_the_secrets_of_a_pod_bound_a_moment_ago() {
    let (_dir, server) = server().await;
    let node = named("system:node:pi-1", &["system:nodes"]);
    let secret = "/api/v1/namespaces/default/secrets/creds";
    let token = "/api/v1/namespaces/default/serviceaccounts/web/token";
    assert!(!may(&server, &node, Method::GET, secret).await);
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"nodeName": "pi-1", "serviceAccountName": "web",
                 "containers": [{"name": "c", "image": "busybox"}],
                 "volumes": [{"name": "s", "secret": {"secretName": "creds"}}]}});
    let request = http::Request::post("/api/v1/namespaces/default/pods")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(bytes::Bytes::from(pod.to_string())))
        .unwrap();
    let response = server.handle(request, Some(User::system_admin())).await;
    assert_eq!(response.status(), 201);
    // No waiting: a refusal first lets the node graph catch up with the store.
    assert!(may(&server, &node, Method::GET, secret).await);
    assert!(may(&server, &node, Method::POST, token).await);
    let other = named("system:node:pi-2", &["system:nodes"]);
    assert!(!may(&server, &other, Method::GET, secret).await);
}

#[tokio::test]
async fn the_old_grant_of_system_node_to_every_node_is_taken_back() {
    let (_dir, server) = server().await;
    let path = "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/system:node";
    let get = || {
        let request = http::Request::get(path).body(Full::new(bytes::Bytes::new())).unwrap();
        server.handle(request, Some(User::system_admin()))
    };
    let body = crate::apiserver::body::read_body(get().await.into_body()).await.unwrap();
    let mut binding: serde_json::Value = serde_json::from_slice(&body).unwrap();
    // A data dir from before the Node authorizer: every node bound to `system:node`.
    binding["subjects"] =
        json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:nodes"}]);
    let request = http::Request::put(path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(bytes::Bytes::from(binding.to_string())))
        .unwrap();
    assert_eq!(server.handle(request, Some(User::system_admin())).await.status(), 200);
    let node = named("system:node:pi-1", &["system:nodes"]);
    let secret = "/api/v1/namespaces/default/secrets/anything";
    assert!(may(&server, &node, Method::GET, secret).await, "the old grant reads every secret");
    super::bootstrap::ensure(&server).await.unwrap();
    let body = crate::apiserver::body::read_body(get().await.into_body()).await.unwrap();
    let binding: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(binding["subjects"], json!([]));
    // A revoked grant is gone once the index has caught up (as the server's start waits for).
    server.inner.authz.catch_up(&server).await;
    assert!(!may(&server, &node, Method::GET, secret).await);
}
