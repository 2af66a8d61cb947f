//! The Node authorizer and NodeRestriction admission against the real `skerry server`: a node's
//! client certificate (`system:node:n1` in `system:nodes`, issued by the cluster CA as a join
//! would) reads only the Secrets its pods use, writes only its own Node, Lease and pods' status,
//! and creates no ordinary pods — with the reference's 403 reasons.

mod common;

use common::server::{runtime, ApiClient, SkerryServer};
use serde_json::{json, Value};

/// A client for node `name`, its certificate issued by the server's CA.
fn node_client(server: &SkerryServer, name: &str) -> ApiClient {
    let tls = server.data_dir.join("tls");
    let ca = skerry_control::pki::ClusterCa::load_or_create(&tls).unwrap();
    let cert = ca.issue_client(&format!("system:node:{name}"), Some("system:nodes")).unwrap();
    std::fs::write(tls.join(format!("node-{name}.crt")), &cert.cert_pem).unwrap();
    std::fs::write(tls.join(format!("node-{name}.key")), &cert.key_pem).unwrap();
    ApiClient::with(&server.data_dir, &server.url, Some(&format!("node-{name}")), None)
}

fn node(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
        "status": {"conditions": [{"type": "Ready", "status": "True"}],
                   "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}})
}

fn secret(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "default"},
        "data": {"k": "dg=="}})
}

fn pod(name: &str, node: &str, secret: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "busybox"}],
                 "volumes": [{"name": "s", "secret": {"secretName": secret}}]}})
}

fn lease(name: &str) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40}})
}

async fn merge_patch(client: &ApiClient, path: &str, patch: &Value) -> (u16, Value) {
    let body = serde_json::to_vec(patch).unwrap();
    let resp =
        client.request("PATCH", path, Some("application/merge-patch+json"), &body).await.unwrap();
    (resp.status, resp.json())
}

fn message(body: &Value) -> &str {
    body["message"].as_str().unwrap_or("")
}

#[test]
fn node_credentials_reach_only_their_own_pods_objects() {
    let server = SkerryServer::start();
    let admin = server.admin();
    let n1 = node_client(&server, "n1");
    runtime().block_on(async {
        for name in ["n1", "n2"] {
            let (code, body) = admin.json("POST", "/api/v1/nodes", Some(&node(name))).await;
            assert_eq!(code, 201, "{body}");
        }
        for name in ["used", "unused", "elsewhere"] {
            let (code, body) = admin
                .json("POST", "/api/v1/namespaces/default/secrets", Some(&secret(name)))
                .await;
            assert_eq!(code, 201, "{body}");
        }
        for (name, node, secret) in [("web", "n1", "used"), ("db", "n2", "elsewhere")] {
            let (code, body) = admin
                .json("POST", "/api/v1/namespaces/default/pods", Some(&pod(name, node, secret)))
                .await;
            assert_eq!(code, 201, "{body}");
        }

        // Secrets: only what a pod on n1 uses.
        let (code, body) = n1.json("GET", "/api/v1/namespaces/default/secrets/used", None).await;
        assert_eq!(code, 200, "{body}");
        for name in ["unused", "elsewhere"] {
            let path = format!("/api/v1/namespaces/default/secrets/{name}");
            let (code, body) = n1.json("GET", &path, None).await;
            assert_eq!(code, 403, "{name}: {body}");
            assert_eq!(
                message(&body),
                format!(
                    "secrets \"{name}\" is forbidden: User \"system:node:n1\" cannot get resource \"secrets\" in API group \"\" in the namespace \"default\": no relationship found between node 'n1' and this object"
                )
            );
        }
        let (code, _) = n1.json("GET", "/api/v1/namespaces/default/secrets", None).await;
        assert_eq!(code, 403, "no listing every secret");

        // Nodes: its own, not another's.
        let label = json!({"metadata": {"labels": {"example.com/rack": "r1"}}});
        let (code, body) = merge_patch(&n1, "/api/v1/nodes/n2", &label).await;
        assert_eq!(code, 403, "{body}");
        assert_eq!(
            message(&body),
            "nodes \"n2\" is forbidden: node \"n1\" is not allowed to modify node \"n2\""
        );
        let (code, body) = merge_patch(&n1, "/api/v1/nodes/n1", &label).await;
        assert_eq!(code, 200, "{body}");
        let (code, body) = merge_patch(&n1, "/api/v1/nodes/n1/status", &json!({"status": {}})).await;
        assert_eq!(code, 200, "{body}");
        let restricted = json!({"metadata": {"labels": {"node-restriction.kubernetes.io/x": "y"}}});
        let (code, body) = merge_patch(&n1, "/api/v1/nodes/n1", &restricted).await;
        assert_eq!(code, 403, "{body}");
        let (code, body) = n1.json("DELETE", "/api/v1/nodes/n2", None).await;
        assert_eq!(code, 403, "{body}");

        // Pods: no ordinary pods; only its own pods' status.
        let (code, body) = n1
            .json("POST", "/api/v1/namespaces/default/pods", Some(&pod("sneaky", "n1", "unused")))
            .await;
        assert_eq!(code, 403, "{body}");
        assert!(
            message(&body).contains("can only create mirror pods"),
            "{}",
            message(&body)
        );
        let status = json!({"status": {"phase": "Running"}});
        let (code, body) =
            merge_patch(&n1, "/api/v1/namespaces/default/pods/db/status", &status).await;
        assert_eq!(code, 403, "{body}");
        assert_eq!(
            message(&body),
            "pods \"db\" is forbidden: node \"n1\" can only update pod status for pods with spec.nodeName set to itself"
        );
        let (code, body) =
            merge_patch(&n1, "/api/v1/namespaces/default/pods/web/status", &status).await;
        assert_eq!(code, 200, "{body}");
        let (code, body) = n1.json("DELETE", "/api/v1/namespaces/default/pods/db", None).await;
        assert_eq!(code, 403, "{body}");

        // Leases: its own in kube-node-lease only.
        let leases = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";
        let (code, body) = n1.json("POST", leases, Some(&lease("n1"))).await;
        assert_eq!(code, 201, "{body}");
        let (code, body) = n1.json("GET", &format!("{leases}/n1"), None).await;
        assert_eq!(code, 200, "{body}");
        let (code, body) = n1.json("POST", leases, Some(&lease("n2"))).await;
        assert_eq!(code, 403, "{body}");
        let (code, body) = admin.json("POST", leases, Some(&lease("n2"))).await;
        assert_eq!(code, 201, "{body}");
        let (code, body) = n1.json("GET", &format!("{leases}/n2"), None).await;
        assert_eq!(code, 403, "{body}");
        assert!(message(&body).ends_with(
            "can only access node lease with the same name as the requesting node"
        ));
        let (code, body) = merge_patch(&n1, &format!("{leases}/n2"), &json!({"spec": {}})).await;
        assert_eq!(code, 403, "{body}");
    });
}

/// A local-path style volume pinned to `node`, with the cleanup finalizer.
fn pinned_volume(name: &str, node: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name, "finalizers": ["skerry.io/local-path-cleanup"]},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "hostPath": {"path": format!("/srv/{name}_default_data")},
                 "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                     {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}}})
}

#[test]
fn nodes_reach_only_the_volumes_pinned_to_them_and_only_to_take_the_finalizer_off() {
    let server = SkerryServer::start();
    let admin = server.admin();
    let n1 = node_client(&server, "n1");
    runtime().block_on(async {
        for (name, node) in [("pvc-a", "n1"), ("pvc-b", "n2")] {
            let body = pinned_volume(name, node);
            let (code, body) = admin.json("POST", "/api/v1/persistentvolumes", Some(&body)).await;
            assert_eq!(code, 201, "{body}");
        }
        // Its own volumes, by the field selector its agent lists with; nothing else.
        let (code, body) = n1
            .json("GET", "/api/v1/persistentvolumes?fieldSelector=skerry.io/pinnedNode%3Dn1", None)
            .await;
        assert_eq!(code, 200, "{body}");
        let names: Vec<&str> = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| i["metadata"]["name"].as_str())
            .collect();
        assert_eq!(names, ["pvc-a"]);
        for path in [
            "/api/v1/persistentvolumes",
            "/api/v1/persistentvolumes?fieldSelector=skerry.io/pinnedNode%3Dn2",
            "/api/v1/persistentvolumes/pvc-b",
        ] {
            let (code, body) = n1.json("GET", path, None).await;
            assert_eq!(code, 403, "{path}: {body}");
        }
        let (code, body) = n1.json("GET", "/api/v1/persistentvolumes/pvc-a", None).await;
        assert_eq!(code, 200, "{body}");
        // Nothing but the finalizer may change, and only on its own volumes.
        let (code, body) = merge_patch(
            &n1,
            "/api/v1/persistentvolumes/pvc-a",
            &json!({"spec": {"hostPath": {"path": "/etc"}}}),
        )
        .await;
        assert_eq!(code, 403, "{body}");
        assert!(message(&body).contains("can only remove the"), "{body}");
        let off = json!({"metadata": {"finalizers": null}});
        let (code, body) = merge_patch(&n1, "/api/v1/persistentvolumes/pvc-b", &off).await;
        assert_eq!(code, 403, "{body}");
        let (code, body) = n1.json("DELETE", "/api/v1/persistentvolumes/pvc-a", None).await;
        assert_eq!(code, 403, "{body}");
        // Deleted by the control plane, it waits for the node; the node's patch ends it.
        let (code, body) = admin.json("DELETE", "/api/v1/persistentvolumes/pvc-a", None).await;
        assert_eq!(code, 200, "{body}");
        // Only the cleanup finalizer (first) comes off: admission added pv-protection, which
        // is not the node's to remove (its controller may take it off meanwhile).
        let only_cleanup = json!([
            {"op": "test", "path": "/metadata/finalizers/0", "value": "skerry.io/local-path-cleanup"},
            {"op": "remove", "path": "/metadata/finalizers/0"}]);
        let body = serde_json::to_vec(&only_cleanup).unwrap();
        let json_patch = Some("application/json-patch+json");
        let resp = n1.request("PATCH", "/api/v1/persistentvolumes/pvc-a", json_patch, &body).await;
        let resp = resp.unwrap();
        assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
        // The volume is not bound, so pv-protection lets it go too.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let (code, body) = admin.json("GET", "/api/v1/persistentvolumes/pvc-a", None).await;
            if code == 404 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "pvc-a not gone: {code} {body}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let (code, body) = admin.json("GET", "/api/v1/persistentvolumes/pvc-b", None).await;
        assert_eq!(code, 200, "{body}");
    });
}
