//! Hardening against the real `skerry server` and `skerry etcd`: what a node's credentials may
//! no longer do to its own Node and pods (NodeRestriction's label, taint and configSource
//! rules), what it may read of pods (the Node authorizer with selectors), the serving
//! certificate renewed near its end and on new SANs, and the etcd endpoint off loopback
//! demanding client certificates from etcdctl.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::etcd::{etcdctl_full, failed, have_etcdctl, ok, SkerryEtcd};
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

fn node(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels},
        "spec": {"taints": [{"key": "example.com/dedicated", "value": "edge", "effect": "NoSchedule"}]},
        "status": {"conditions": [{"type": "Ready", "status": "True"}],
                   "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}})
}

fn pod(name: &str, node: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "busybox"}]}})
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

fn names(list: &Value) -> Vec<&str> {
    let items = list["items"].as_array().map(Vec::as_slice).unwrap_or_default();
    items.iter().filter_map(|i| i["metadata"]["name"].as_str()).collect()
}

#[test]
fn nodes_keep_off_kubernetes_labels_their_taints_and_config_source() {
    let server = SkerryServer::start();
    let admin = server.admin();
    let n1 = node_client(&server, "n1");
    runtime().block_on(async {
        // Registering with a role label is refused with the reference's reason.
        let role = json!({"node-role.kubernetes.io/control-plane": "true", "kubernetes.io/os": "linux"});
        let (code, body) = n1.json("POST", "/api/v1/nodes", Some(&node("n1", role))).await;
        assert_eq!(code, 403, "{body}");
        assert_eq!(
            message(&body),
            "nodes \"n1\" is forbidden: node \"n1\" is not allowed to set the following labels: node-role.kubernetes.io/control-plane"
        );
        // What the kubelet itself sets passes.
        let own = json!({"kubernetes.io/hostname": "n1", "kubernetes.io/os": "linux",
            "beta.kubernetes.io/arch": "arm64", "topology.kubernetes.io/zone": "z1",
            "node.kubernetes.io/instance-type": "pi4", "kubelet.kubernetes.io/x": "y",
            "example.com/rack": "r1"});
        let (code, body) = n1.json("POST", "/api/v1/nodes", Some(&node("n1", own))).await;
        assert_eq!(code, 201, "{body}");

        for (patch, why) in [
            (json!({"metadata": {"labels": {"kubernetes.io/role": "master"}}}),
             "nodes \"n1\" is forbidden: is not allowed to modify labels: kubernetes.io/role"),
            (json!({"metadata": {"labels": {"sub.k8s.io/x": "1", "node-restriction.kubernetes.io/y": "1"}}}),
             "nodes \"n1\" is forbidden: is not allowed to modify labels: node-restriction.kubernetes.io/y, sub.k8s.io/x"),
            (json!({"spec": {"taints": null}}),
             "nodes \"n1\" is forbidden: node \"n1\" is not allowed to modify taints"),
            (json!({"spec": {"configSource": {"configMap": {"name": "c", "namespace": "kube-system", "kubeletConfigKey": "k"}}}}),
             "nodes \"n1\" is forbidden: node \"n1\" is not allowed to update configSource to a new non-nil configSource"),
        ] {
            let (code, body) = merge_patch(&n1, "/api/v1/nodes/n1", &patch).await;
            assert_eq!(code, 403, "{patch}: {body}");
            assert_eq!(message(&body), why, "{patch}");
        }
        // The administrator may; the node then keeps the label but may not take it off.
        let role = json!({"metadata": {"labels": {"node-role.kubernetes.io/edge": ""}}});
        let (code, body) = merge_patch(&admin, "/api/v1/nodes/n1", &role).await;
        assert_eq!(code, 200, "{body}");
        let mine = json!({"metadata": {"labels": {"example.com/rack": "r2", "node.kubernetes.io/disk": "ssd"}}});
        let (code, body) = merge_patch(&n1, "/api/v1/nodes/n1", &mine).await;
        assert_eq!(code, 200, "{body}");
        let off = json!({"metadata": {"labels": {"node-role.kubernetes.io/edge": null}}});
        let (code, body) = merge_patch(&n1, "/api/v1/nodes/n1", &off).await;
        assert_eq!(code, 403, "{body}");
        let (_, stored) = admin.json("GET", "/api/v1/nodes/n1", None).await;
        assert_eq!(stored["metadata"]["labels"]["node-role.kubernetes.io/edge"], "");
        assert_eq!(stored["metadata"]["labels"]["example.com/rack"], "r2");
        assert_eq!(stored["spec"]["taints"][0]["key"], "example.com/dedicated");

        // Mirror pods must be owned by the node.
        let mut mirror = pod("static-web-n1", "n1");
        mirror["metadata"]["annotations"] = json!({"kubernetes.io/config.mirror": "hash"});
        let (code, body) =
            n1.json("POST", "/api/v1/namespaces/default/pods", Some(&mirror)).await;
        assert_eq!(code, 403, "{body}");
        assert!(
            message(&body)
                .ends_with("node \"n1\" can only create pods with an owner reference set to itself"),
            "{body}"
        );
        mirror["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "Node",
            "name": "n1", "uid": stored["metadata"]["uid"], "controller": true}]);
        let (code, body) =
            n1.json("POST", "/api/v1/namespaces/default/pods", Some(&mirror)).await;
        assert_eq!(code, 201, "{body}");
    });
}

#[test]
fn nodes_read_pods_only_through_their_own_node() {
    let server = SkerryServer::start();
    let admin = server.admin();
    let n1 = node_client(&server, "n1");
    runtime().block_on(async {
        for name in ["n1", "n2"] {
            let (code, body) =
                admin.json("POST", "/api/v1/nodes", Some(&node(name, json!({})))).await;
            assert_eq!(code, 201, "{body}");
        }
        for (name, node) in [("web", "n1"), ("db", "n2")] {
            let (code, body) =
                admin.json("POST", "/api/v1/namespaces/default/pods", Some(&pod(name, node))).await;
            assert_eq!(code, 201, "{body}");
        }
        // Its own pods, by the selector the agent uses.
        let (code, body) =
            n1.json("GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1", None).await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(names(&body), ["web"]);
        let (code, body) = n1.json("GET", "/api/v1/namespaces/default/pods/web", None).await;
        assert_eq!(code, 200, "{body}");
        // A pod bound elsewhere is not the node's to get (the node rules alone allowed it).
        let (code, body) = n1.json("GET", "/api/v1/namespaces/default/pods/db", None).await;
        assert_eq!(code, 403, "{body}");
        assert_eq!(
            message(&body),
            "pods \"db\" is forbidden: User \"system:node:n1\" cannot get resource \"pods\" in API group \"\" in the namespace \"default\": no relationship found between node 'n1' and this object"
        );
        // Nothing grants a node every pod any more (the agent's DNS answers pod names from
        // the name alone): listing or watching without its own field selector is refused.
        for path in ["/api/v1/pods", "/api/v1/pods?watch=true", "/api/v1/namespaces/default/pods"]
        {
            let (code, body) = n1.json("GET", path, None).await;
            assert_eq!(code, 403, "{path}: {body}");
            assert!(
                message(&body).ends_with("can only list/watch pods with spec.nodeName field selector"),
                "{path}: {body}"
            );
        }
        let (code, body) =
            n1.json("GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dn2", None).await;
        assert_eq!(code, 403, "another node's pods: {body}");
    });
}

/// The certificate a TLS client is served at `url`, checked against the cluster CA for `name`.
fn served_certificate(data_dir: &std::path::Path, url: &str, name: &str) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(data_dir.join("tls/ca.crt")).unwrap();
    for cert in rustls_pemfile::certs(&mut ca.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let addr = url.strip_prefix("https://").unwrap().to_string();
    let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
    runtime().block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .expect("the served certificate verifies against the cluster CA");
        tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    })
}

fn der_of(pem: &str) -> Vec<u8> {
    rustls_pemfile::certs(&mut pem.as_bytes()).next().unwrap().unwrap().to_vec()
}

#[test]
fn the_serving_certificate_is_renewed_near_its_end_and_on_new_sans() {
    let mut server = SkerryServer::start();
    let tls = server.data_dir.join("tls");
    let ca_before = std::fs::read_to_string(tls.join("ca.crt")).unwrap();
    let first = std::fs::read_to_string(tls.join("serving.crt")).unwrap();
    assert_eq!(served_certificate(&server.data_dir, &server.url, "localhost"), der_of(&first));

    // Ten days from its end, for the very SANs the server wants: a server up for most of a year.
    server.kill();
    let sans: Vec<String> = std::fs::read_to_string(tls.join("serving.issued-for"))
        .unwrap()
        .split(',')
        .map(String::from)
        .collect();
    let ca = skerry_control::pki::ClusterCa::load_or_create(&tls).unwrap();
    let ten_days = Duration::from_secs(10 * 24 * 3600);
    let short = ca.issue_serving_for("kube-apiserver", &sans, ten_days).unwrap();
    std::fs::write(tls.join("serving.crt"), &short.cert_pem).unwrap();
    std::fs::write(tls.join("serving.key"), &short.key_pem).unwrap();
    server.restart();

    let served = served_certificate(&server.data_dir, &server.url, "localhost");
    assert_ne!(served, der_of(&short.cert_pem), "the nearly expired certificate is not served");
    let renewed = std::fs::read_to_string(tls.join("serving.crt")).unwrap();
    assert_eq!(served, der_of(&renewed));
    let in_200_days = SystemTime::now() + Duration::from_secs(200 * 24 * 3600);
    assert!(!skerry_control::pki::needs_renewal(&renewed, in_200_days), "a year's certificate");
    assert_eq!(std::fs::read_to_string(tls.join("ca.crt")).unwrap(), ca_before, "same CA");

    // A new --tls-san is a new certificate that names it.
    server.add_args(&["--tls-san", "api.edge.example"]);
    server.restart();
    let named = served_certificate(&server.data_dir, &server.url, "api.edge.example");
    assert_ne!(named, served);
}

#[test]
fn etcd_off_loopback_demands_client_certificates() {
    if !have_etcdctl() {
        return;
    }
    let bin = env!("CARGO_BIN_EXE_skerry");
    let dir = tempfile::tempdir().unwrap();
    // Plaintext on every interface does not start.
    let out = std::process::Command::new(bin)
        .args(["etcd", "--listen-client-urls", "http://0.0.0.0:0", "--data-dir"])
        .arg(dir.path().join("plain"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("reachable from other hosts without TLS"), "{err}");

    let etcd = SkerryEtcd::start_with(&["--listen-client-urls", "https://0.0.0.0:0"]);
    let port = etcd.endpoint().rsplit(':').next().unwrap();
    let endpoint = format!("https://127.0.0.1:{port}");
    let files = etcd.data_dir.join("tls/etcd");
    let path = |name: &str| files.join(name).to_str().unwrap().to_string();
    let cacert = format!("--cacert={}", path("ca.crt"));
    let args = ["put", "/hardening", "ok"];
    let refused = etcdctl_full(&endpoint, &[&cacert], &args, None);
    let stderr = failed(refused, &args);
    assert!(!stderr.is_empty());
    let with_cert = [
        cacert.clone(),
        format!("--cert={}", path("client.crt")),
        format!("--key={}", path("client.key")),
    ];
    let with_cert: Vec<&str> = with_cert.iter().map(String::as_str).collect();
    assert_eq!(ok(etcdctl_full(&endpoint, &with_cert, &args, None), &args).trim(), "OK");
    let get = ["get", "/hardening", "--print-value-only"];
    assert_eq!(ok(etcdctl_full(&endpoint, &with_cert, &get, None), &get).trim(), "ok");
    // The files are signed by the data dir's CA, the one kept under tls/.
    assert_eq!(
        std::fs::read_to_string(files.join("ca.crt")).unwrap(),
        std::fs::read_to_string(etcd.data_dir.join("tls/ca.crt")).unwrap()
    );
}
