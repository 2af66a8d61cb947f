//! Bound service account tokens against the real `skerry server`: the ServiceAccount admission
//! adds the `kube-api-access-*` volume, `kubectl create token` issues a pod-bound token, the
//! token authenticates (`kubectl auth whoami`, TokenReview) until its pod is deleted; expired,
//! forged and foreign-issuer tokens are 401; the OIDC discovery documents verify the token; and
//! every namespace gets the `kube-root-ca.crt` ConfigMap. Legacy token Secrets are filled in by
//! the tokens controller and their tokens authenticate until the Secret is deleted.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::server::SkerryServer;
use serde_json::{json, Value};
use skerry_control::apiserver::serviceaccount::jwt::{self, SigningKey, VerifyingKey};

const NS: &str = "sa-test";
const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const WHOAMI: &str = "/apis/authentication.k8s.io/v1/selfsubjectreviews";
const TOKEN_REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

fn claims_of(token: &str) -> Value {
    jwt::unverified_claims(token).unwrap()
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// POSTs a SelfSubjectReview with `token`: (status code, body).
async fn whoami(server: &SkerryServer, token: &str) -> (u16, Value) {
    let review = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
    server.anonymous(Some(token)).json("POST", WHOAMI, Some(&review)).await
}

/// A kubeconfig that authenticates with `token`.
fn token_kubeconfig(server: &SkerryServer, token: &str, path: &Path) {
    let ca = server.data_dir.join("tls/ca.crt");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n",
        server.url,
        ca.display()
    );
    std::fs::write(path, text).unwrap();
}

#[tokio::test]
async fn bound_service_account_tokens() {
    let Some(kubectl) = skerry_testkit::kubectl() else {
        eprintln!("skipping: kubectl 1.32 is not available");
        return;
    };
    let server = SkerryServer::start();
    let api = server.admin();

    // A node for the pod, and a namespace (which gets its `default` account and CA ConfigMap).
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
        "status": {"conditions": [{"type": "Ready", "status": "True"}],
                   "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}});
    let (code, node) = api.json("POST", "/api/v1/nodes", Some(&node)).await;
    assert_eq!(code, 201, "{node}");
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}});
    assert_eq!(api.json("POST", "/api/v1/namespaces", Some(&ns)).await.0, 201);

    // The root CA publisher: `kube-root-ca.crt` holds the cluster CA.
    let ca_pem = std::fs::read_to_string(server.data_dir.join("tls/ca.crt")).unwrap();
    let cm_path = format!("/api/v1/namespaces/{NS}/configmaps/kube-root-ca.crt");
    let mut cm = Value::Null;
    for _ in 0..300 {
        let (code, found) = api.json("GET", &cm_path, None).await;
        if code == 200 {
            cm = found;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(cm["data"]["ca.crt"].as_str(), Some(ca_pem.as_str()));

    // Admission: every container and init container mounts the projected volume read-only.
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"nodeName": "n1",
                 "initContainers": [{"name": "init", "image": "busybox"}],
                 "containers": [{"name": "c", "image": "busybox"}]}});
    let (code, pod) = api.json("POST", &format!("/api/v1/namespaces/{NS}/pods"), Some(&pod)).await;
    assert_eq!(code, 201, "{pod}");
    assert_eq!(pod["spec"]["serviceAccountName"], "default");
    let volumes = pod["spec"]["volumes"].as_array().unwrap();
    let volume = volumes
        .iter()
        .find(|v| v["name"].as_str().unwrap().starts_with("kube-api-access-"))
        .unwrap();
    let volume_name = volume["name"].as_str().unwrap();
    assert_eq!(volume_name.len(), "kube-api-access-".len() + 5);
    let sources = &volume["projected"]["sources"];
    assert_eq!(
        sources[0]["serviceAccountToken"],
        json!({"expirationSeconds": 3607, "path": "token"})
    );
    assert_eq!(sources[1]["configMap"]["name"], "kube-root-ca.crt");
    assert_eq!(
        sources[2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    for list in ["initContainers", "containers"] {
        let mount = &pod["spec"][list][0]["volumeMounts"][0];
        assert_eq!(mount["name"], volume_name, "{list}");
        assert_eq!(mount["mountPath"], "/var/run/secrets/kubernetes.io/serviceaccount");
        assert_eq!(mount["readOnly"], true);
    }
    // Opting out, and a missing account.
    let opt_out = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "quiet"},
        "spec": {"automountServiceAccountToken": false, "containers": [{"name": "c", "image": "busybox"}]}});
    let (code, quiet) =
        api.json("POST", &format!("/api/v1/namespaces/{NS}/pods"), Some(&opt_out)).await;
    assert_eq!(code, 201, "{quiet}");
    assert!(quiet["spec"]["volumes"].as_array().is_none_or(|v| v.is_empty()), "{quiet}");
    let orphan = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "orphan"},
        "spec": {"serviceAccountName": "nobody", "containers": [{"name": "c", "image": "busybox"}]}});
    let (code, refused) =
        api.json("POST", &format!("/api/v1/namespaces/{NS}/pods"), Some(&orphan)).await;
    assert_eq!(code, 403, "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("serviceaccount \"nobody\" not found"));

    // `kubectl create token` bound to the pod.
    let out = server.kubectl(
        &kubectl,
        &[
            "create",
            "token",
            "default",
            "-n",
            NS,
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            "p",
        ],
    );
    let token = common::server::ok(out, "kubectl create token").trim().to_string();
    let claims = claims_of(&token);
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["sub"], format!("system:serviceaccount:{NS}:default"));
    assert_eq!(claims["aud"], json!([ISSUER]));
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 3600);
    assert_eq!(claims["kubernetes.io"]["pod"]["uid"], pod["metadata"]["uid"]);
    assert_eq!(claims["kubernetes.io"]["node"]["name"], "n1");
    assert_eq!(claims["kubernetes.io"]["node"]["uid"], node["metadata"]["uid"]);

    // The token is the service account, with its pod and node.
    let (code, me) = whoami(&server, &token).await;
    assert_eq!(code, 201, "{me}");
    let user = &me["status"]["userInfo"];
    assert_eq!(user["username"], format!("system:serviceaccount:{NS}:default"));
    assert_eq!(
        user["groups"],
        json!([
            "system:serviceaccounts",
            format!("system:serviceaccounts:{NS}"),
            "system:authenticated"
        ])
    );
    assert_eq!(user["extra"]["authentication.kubernetes.io/pod-name"], json!(["p"]));
    assert_eq!(
        user["extra"]["authentication.kubernetes.io/pod-uid"],
        json!([pod["metadata"]["uid"]])
    );
    assert_eq!(user["extra"]["authentication.kubernetes.io/node-name"], json!(["n1"]));
    let kubeconfig = server.dir.path().join("sa.kubeconfig");
    token_kubeconfig(&server, &token, &kubeconfig);
    let out = Command::new(&kubectl)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["auth", "whoami", "-o", "json"])
        .output()
        .unwrap();
    let text = common::server::ok(out, "kubectl auth whoami");
    let review: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        review["status"]["userInfo"]["username"],
        format!("system:serviceaccount:{NS}:default")
    );

    // TokenReview agrees, for the API audience only.
    let review = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}});
    let (code, reviewed) = api.json("POST", TOKEN_REVIEWS, Some(&review)).await;
    assert_eq!(code, 201, "{reviewed}");
    assert_eq!(reviewed["status"]["authenticated"], true);
    assert_eq!(
        reviewed["status"]["user"]["username"],
        format!("system:serviceaccount:{NS}:default")
    );
    assert_eq!(reviewed["status"]["audiences"], json!([ISSUER]));
    let mut other = review.clone();
    other["spec"]["audiences"] = json!(["vault"]);
    let (_, reviewed) = api.json("POST", TOKEN_REVIEWS, Some(&other)).await;
    assert_ne!(reviewed["status"]["authenticated"], true, "{reviewed}");
    assert!(reviewed["status"]["error"].as_str().unwrap().contains("audiences"), "{reviewed}");

    // Issuer discovery: the JWKS verifies the token.
    let (code, config) = api.json("GET", "/.well-known/openid-configuration", None).await;
    assert_eq!(code, 200, "{config}");
    assert_eq!(config["issuer"], ISSUER);
    assert_eq!(config["jwks_uri"], format!("{ISSUER}/openid/v1/jwks"));
    let (code, jwks) = api.json("GET", "/openid/v1/jwks", None).await;
    assert_eq!(code, 200, "{jwks}");
    let keys: Vec<VerifyingKey> =
        jwks["keys"].as_array().unwrap().iter().filter_map(VerifyingKey::from_jwk).collect();
    assert_eq!(keys.len(), 1, "{jwks}");
    assert_eq!(jwt::verify(&token, &keys).unwrap()["sub"], claims["sub"]);
    // Service accounts may read the discovery documents (system:service-account-issuer-discovery).
    let as_account = server.anonymous(Some(&token));
    let (code, body) = as_account.json("GET", "/openid/v1/jwks", None).await;
    assert_eq!(code, 200, "a service account reads the JWKS: {body}");

    // A forged signature, an expired token and a foreign issuer are refused; the same claims
    // re-signed with the server's key (from the data dir) are accepted, so the refusals are
    // about what changed.
    let (head, rest) = token.split_once('.').unwrap();
    let (payload, signature) = rest.split_once('.').unwrap();
    let flipped = if signature.starts_with('A') { 'B' } else { 'A' };
    let forged = format!("{head}.{payload}.{flipped}{}", &signature[1..]);
    assert_eq!(whoami(&server, &forged).await.0, 401);
    let key_pem = std::fs::read_to_string(server.data_dir.join("tls/service-account.key")).unwrap();
    let key = SigningKey::from_pem(&key_pem).unwrap();
    let resigned = key.sign(&claims).unwrap();
    assert_eq!(whoami(&server, &resigned).await.0, 201);
    let mut expired = claims.clone();
    expired["iat"] = json!(now() - 7200);
    expired["nbf"] = json!(now() - 7200);
    expired["exp"] = json!(now() - 120);
    assert_eq!(whoami(&server, &key.sign(&expired).unwrap()).await.0, 401);
    let (_, reviewed) = api
        .json("POST", TOKEN_REVIEWS, Some(&json!({"spec": {"token": key.sign(&expired).unwrap()}})))
        .await;
    assert_eq!(reviewed["status"]["error"], "service account token has expired", "{reviewed}");
    let mut foreign = claims.clone();
    foreign["iss"] = json!("https://elsewhere.example");
    assert_eq!(whoami(&server, &key.sign(&foreign).unwrap()).await.0, 401);
    assert_eq!(whoami(&server, "not.a.jwt").await.0, 401);

    // TokenRequest checks: a stale pod uid, a too-short lifetime.
    let request = |spec: Value| json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec});
    let token_path = format!("/api/v1/namespaces/{NS}/serviceaccounts/default/token");
    let stale = request(
        json!({"boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "0000"}}),
    );
    assert_eq!(api.json("POST", &token_path, Some(&stale)).await.0, 409);
    let short = request(json!({"expirationSeconds": 60}));
    assert_eq!(api.json("POST", &token_path, Some(&short)).await.0, 422);
    let (code, issued) =
        api.json("POST", &token_path, Some(&request(json!({"audiences": ["vault"]})))).await;
    assert_eq!(code, 201, "{issued}");
    assert!(issued["status"]["expirationTimestamp"].as_str().unwrap().ends_with('Z'));
    // An audience the API does not accept: not a credential for it.
    assert_eq!(whoami(&server, issued["status"]["token"].as_str().unwrap()).await.0, 401);

    // Deleting the pod invalidates its tokens.
    let out =
        server.kubectl(&kubectl, &["delete", "pod", "p", "-n", NS, "--grace-period=0", "--force"]);
    common::server::ok(out, "kubectl delete pod");
    let (code, body) = whoami(&server, &token).await;
    assert_eq!(code, 401, "{body}");
}

/// `kubectl auth whoami` with `--token` and no kubeconfig credentials: the status and stdout.
fn kubectl_whoami_with_token(kubectl: &Path, server: &SkerryServer, token: &str) -> (bool, String) {
    let empty = server.dir.path().join("empty.kubeconfig");
    std::fs::write(&empty, "apiVersion: v1\nkind: Config\n").unwrap();
    let out = Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(&empty)
        .args(["--server", &server.url, "--token", token, "--certificate-authority"])
        .arg(server.data_dir.join("tls/ca.crt"))
        .args(["auth", "whoami", "-o", "json"])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test]
async fn legacy_token_secrets_authenticate_until_deleted() {
    let Some(kubectl) = skerry_testkit::kubectl() else {
        eprintln!("skipping: kubectl 1.32 is not available");
        return;
    };
    let server = SkerryServer::start();
    let api = server.admin();
    let ns = "legacy";
    let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
    assert_eq!(api.json("POST", "/api/v1/namespaces", Some(&body)).await.0, 201);
    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "robot"}});
    let (code, sa) =
        api.json("POST", &format!("/api/v1/namespaces/{ns}/serviceaccounts"), Some(&sa)).await;
    assert_eq!(code, 201, "{sa}");
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
        "metadata": {"name": "robot-token",
                     "annotations": {"kubernetes.io/service-account.name": "robot"}}});
    let secrets = format!("/api/v1/namespaces/{ns}/secrets");
    let (code, created) = api.json("POST", &secrets, Some(&secret)).await;
    assert_eq!(code, 201, "{created}");

    // The tokens controller fills in the token, the CA and the namespace.
    let mut filled = Value::Null;
    for _ in 0..300 {
        let (code, got) = api.json("GET", &format!("{secrets}/robot-token"), None).await;
        assert_eq!(code, 200, "{got}");
        if got["data"]["token"].is_string() {
            filled = got;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let typed: k8s_openapi::api::core::v1::Secret = serde_json::from_value(filled.clone()).unwrap();
    let data = typed.data.unwrap_or_default();
    let decode = |field: &str| {
        let bytes = data.get(field).unwrap_or_else(|| panic!("{field}: {filled}"));
        String::from_utf8(bytes.0.clone()).unwrap()
    };
    let token = decode("token");
    assert_eq!(decode("namespace"), ns);
    let ca = std::fs::read_to_string(server.data_dir.join("tls/ca.crt")).unwrap();
    assert_eq!(decode("ca.crt").trim(), ca.trim());
    assert_eq!(
        filled["metadata"]["annotations"]["kubernetes.io/service-account.uid"],
        sa["metadata"]["uid"]
    );
    let claims = claims_of(&token);
    assert_eq!(claims["iss"], "kubernetes/serviceaccount");
    assert_eq!(claims["sub"], format!("system:serviceaccount:{ns}:robot"));
    assert_eq!(claims["kubernetes.io/serviceaccount/namespace"], ns);
    assert_eq!(claims["kubernetes.io/serviceaccount/secret.name"], "robot-token");
    assert_eq!(claims["kubernetes.io/serviceaccount/service-account.name"], "robot");
    assert_eq!(claims["kubernetes.io/serviceaccount/service-account.uid"], sa["metadata"]["uid"]);
    assert!(claims.get("exp").is_none(), "{claims}");

    // The token authenticates as the service account.
    let (success, text) = kubectl_whoami_with_token(&kubectl, &server, &token);
    assert!(success, "{text}");
    let review: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(
        review["status"]["userInfo"]["username"],
        format!("system:serviceaccount:{ns}:robot")
    );
    assert_eq!(review["status"]["userInfo"]["uid"], sa["metadata"]["uid"]);
    // A token signed like it but not the Secret's copy is refused.
    let key = SigningKey::load_or_create(&server.data_dir.join("tls/service-account.key")).unwrap();
    let mut other = claims.clone();
    other["extra"] = json!("x");
    assert_eq!(whoami(&server, &key.sign(&other).unwrap()).await.0, 401);

    // Deleting the Secret revokes the token.
    let (code, answer) = api.json("DELETE", &format!("{secrets}/robot-token"), None).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(whoami(&server, &token).await.0, 401);
    let (success, text) = kubectl_whoami_with_token(&kubectl, &server, &token);
    assert!(!success && text.contains("Unauthorized"), "{text}");

    // A token Secret whose service account is gone is deleted by the controller.
    let orphan = json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
        "metadata": {"name": "ghost-token",
                     "annotations": {"kubernetes.io/service-account.name": "ghost"}}});
    assert_eq!(api.json("POST", &secrets, Some(&orphan)).await.0, 201);
    let mut gone = false;
    for _ in 0..300 {
        if api.json("GET", &format!("{secrets}/ghost-token"), None).await.0 == 404 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the orphaned token Secret was not deleted");
}
