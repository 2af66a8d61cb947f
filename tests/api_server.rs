//! `skerry server` as a process: certificates and the admin kubeconfig on first start and their
//! reuse on restart, authentication (client certificates, bearer tokens, 401 otherwise), the
//! unauthenticated health and version endpoints, metrics, and the max-in-flight limit.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::server::SkerryServer;
use serde_json::json;

#[tokio::test]
async fn first_start_writes_credentials_and_restart_reuses_them() {
    let mut server = SkerryServer::start();
    let mode = std::fs::metadata(&server.kubeconfig).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let ca = std::fs::read(server.data_dir.join("tls/ca.crt")).unwrap();
    let kubeconfig = std::fs::read_to_string(&server.kubeconfig).unwrap();
    assert!(
        kubeconfig.contains("certificate-authority-data:")
            && kubeconfig.contains("client-key-data:")
    );

    let api = server.admin();
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kept"}});
    let (code, _) = api.json("POST", "/api/v1/namespaces/default/configmaps", Some(&cm)).await;
    assert_eq!(code, 201);

    server.restart();
    assert_eq!(std::fs::read(server.data_dir.join("tls/ca.crt")).unwrap(), ca, "the CA is reused");
    let api = server.admin();
    let (code, got) = api.json("GET", "/api/v1/namespaces/default/configmaps/kept", None).await;
    assert_eq!(code, 200, "objects survive a restart: {got}");
    let (_, list) = api.json("GET", "/api/v1/namespaces/default/services", None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "bootstrap objects are not duplicated");

    // A watch from a resourceVersion of before the restart replays from the store.
    let rv = got["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let mut changed = got.clone();
    changed["data"] = json!({"after": "restart"});
    let (code, _) =
        api.json("PUT", "/api/v1/namespaces/default/configmaps/kept", Some(&changed)).await;
    assert_eq!(code, 200);
    let path = format!("/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}");
    let (code, mut watch) = api.watch(&path).await;
    assert_eq!(code, 200);
    // Other ConfigMaps of the namespace may come first (the controllers publish
    // `kube-root-ca.crt` whenever they get to it, possibly after `kept` was created).
    let event = loop {
        let event = watch.next_event(Duration::from_secs(10)).await.expect("the modification");
        if event["object"]["metadata"]["name"] == "kept" {
            break event;
        }
    };
    assert_eq!(event["type"], "MODIFIED", "{event}");
    assert_eq!(event["object"]["data"]["after"], "restart");
}

#[tokio::test]
async fn authentication_health_version_and_metrics() {
    let tokens = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tokens.path(), "secret-token,alice,1001,\"dev,ops\"\n").unwrap();
    let server = SkerryServer::start_with(&["--token-auth-file", tokens.path().to_str().unwrap()]);

    let anon = server.anonymous(None);
    for path in ["/healthz", "/livez", "/readyz"] {
        let resp = anon.request("GET", path, None, b"").await.unwrap();
        assert_eq!((resp.status, resp.body.as_slice()), (200, b"ok".as_slice()), "{path}");
    }
    let verbose = anon.request("GET", "/readyz?verbose", None, b"").await.unwrap();
    assert!(String::from_utf8_lossy(&verbose.body).contains("[+]etcd ok"));
    let resp = anon.request("GET", "/version", None, b"").await.unwrap();
    let version = resp.json();
    assert_eq!((version["major"].as_str(), version["minor"].as_str()), (Some("1"), Some("33")));
    assert!(version["gitVersion"].as_str().unwrap().starts_with("v1.33."));
    for path in ["/api", "/apis", "/api/v1/namespaces", "/metrics"] {
        let resp = anon.request("GET", path, None, b"").await.unwrap();
        assert_eq!(resp.status, 401, "{path}");
        assert_eq!(resp.json()["reason"], "Unauthorized");
    }
    let wrong = server.anonymous(Some("not-the-token"));
    assert_eq!(wrong.request("GET", "/api", None, b"").await.unwrap().status, 401);
    // Authenticated, but not authorized: alice has no RBAC bindings (see tests/api_rbac.rs).
    let alice = server.anonymous(Some("secret-token"));
    let (code, body) = alice.json("GET", "/api/v1/namespaces", None).await;
    assert_eq!(code, 403, "{body}");

    let (code, _) = server.admin().json("GET", "/api/v1/namespaces/default", None).await;
    assert_eq!(code, 200);
    let metrics = server.admin().request("GET", "/metrics", None, b"").await.unwrap();
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains(
            "apiserver_request_total{verb=\"LIST\",resource=\"namespaces\",code=\"200\"}"
        ),
        "{text}"
    );
    assert!(text.contains("apiserver_request_duration_seconds_bucket{verb=\"GET\",resource=\"namespaces\",le=\"0.005\"}"), "{text}");
    // Store latency, by operation and resource type (the namespaces just read).
    assert!(
        text.contains(
            "etcd_request_duration_seconds_count{operation=\"range\",type=\"namespaces\"}"
        ),
        "{text}"
    );
    // The in-process scheduler and controllers hold watches of their own: count, not zero.
    let watchers = text
        .lines()
        .find_map(|l| l.strip_prefix("apiserver_registered_watchers "))
        .and_then(|n| n.trim().parse::<u64>().ok());
    assert!(watchers.is_some(), "{text}");

    // Discovery, legacy and aggregated.
    let api = server.admin();
    let (_, versions) = api.json("GET", "/api", None).await;
    assert_eq!(versions["versions"][0], "v1");
    let resp = api
        .request_with("GET", "/apis", &[("accept", "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json")], b"")
        .await
        .unwrap();
    assert_eq!(
        resp.headers["content-type"],
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    );
    assert_eq!(resp.json()["kind"], "APIGroupDiscoveryList");
}

#[tokio::test]
async fn max_in_flight_answers_429_with_retry_after() {
    // system:masters is never limited (as in the reference): a cluster-admin by binding is.
    let tokens = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tokens.path(), "loader-token,loader,1002,\"loaders\"\n").unwrap();
    let server = SkerryServer::start_with(&[
        "--max-mutating-requests-inflight",
        "1",
        "--token-auth-file",
        tokens.path().to_str().unwrap(),
    ]);
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "loaders"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "Group", "name": "loaders", "apiGroup": "rbac.authorization.k8s.io"}]});
    let path = "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings";
    let (code, body) = server.admin().json("POST", path, Some(&binding)).await;
    assert_eq!(code, 201, "{body}");
    let api = server.anonymous(Some("loader-token"));
    // The binding is in force before the slot is taken.
    let (code, body) = api.json("GET", "/api/v1/namespaces/default/configmaps", None).await;
    assert_eq!(code, 200, "{body}");
    let path = "/api/v1/namespaces/default/configmaps";
    let mut held = api.hold_request("POST", path).await;
    // The held request occupies the only mutating slot once the server has read its headers.
    let mut refused = None;
    for _ in 0..100 {
        // It may instead have lost the slot to the previous probe and been refused itself:
        // then hold a fresh one.
        if held.was_answered().await {
            held = api.hold_request("POST", path).await;
        }
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}});
        let resp = api
            .request(
                "POST",
                "/api/v1/namespaces/default/configmaps",
                Some("application/json"),
                cm.to_string().as_bytes(),
            )
            .await
            .unwrap();
        if resp.status == 429 {
            refused = Some(resp);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused = refused.expect("a 429 while the slot is held");
    assert_eq!(refused.headers["retry-after"], "1");
    assert_eq!(refused.json()["reason"], "TooManyRequests");
    // system:masters is not limited while the slot is taken.
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "by-admin"}});
    let (code, body) = server.admin().json("POST", path, Some(&cm)).await;
    assert_eq!(code, 201, "{body}");
    // Reads have their own limit and still work.
    let (code, _) = api.json("GET", "/api/v1/namespaces", None).await;
    assert_eq!(code, 200);
    drop(held);
    let mut accepted = false;
    for _ in 0..100 {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "after"}});
        let (code, _) = api.json("POST", "/api/v1/namespaces/default/configmaps", Some(&cm)).await;
        if code == 201 {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(accepted, "the slot is freed when the held request goes away");
}
