//! Users against the real `skerry server` with kubectl 1.32: impersonation (`--as`,
//! `--as-group`) allowed only with the `impersonate` verb and served with the impersonated
//! identity's permissions; `skerry kubeconfig create` client certificates carrying several
//! groups; the `kubernetes.io/kube-apiserver-client` CSR signer after `kubectl certificate
//! approve`; and the audit log's `audit.k8s.io/v1` events.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::server::{ok, runtime, SkerryServer};
use serde_json::Value;

const TOKENS: &str = "alice-token,alice,1001\n";

/// A kubeconfig for the token user alice.
fn alice_kubeconfig(server: &SkerryServer) -> PathBuf {
    let path = server.dir.path().join("alice.kubeconfig");
    let ca = server.data_dir.join("tls").join("ca.crt");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: skerry\n  cluster:\n    server: {}\n    certificate-authority: {}\n\
         users:\n- name: alice\n  user:\n    token: alice-token\ncontexts:\n- name: alice\n  context:\n    cluster: skerry\n    user: alice\n\
         current-context: alice\n",
        server.url,
        ca.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// kubectl with `kubeconfig`.
fn kubectl_with(server: &SkerryServer, kubectl: &Path, kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(server.dir.path().join(format!("cache-{}", kubeconfig.display()).replace('/', "_")))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("spawning kubectl")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `kubectl auth whoami -o json` as (username, groups).
fn whoami(out: Output) -> (String, Vec<String>) {
    let text = ok(out, "auth whoami");
    let review: Value = serde_json::from_str(&text).unwrap();
    let info = &review["status"]["userInfo"];
    let groups = info["groups"].as_array().cloned().unwrap_or_default();
    let groups = groups.iter().map(|g| g.as_str().unwrap().to_string()).collect();
    (info["username"].as_str().unwrap().to_string(), groups)
}

#[test]
fn impersonation_needs_the_verb_and_takes_the_identity() {
    let Some(kubectl) = skerry_testkit::kubectl() else { return };
    let tokens = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tokens.path(), TOKENS).unwrap();
    let server = SkerryServer::start_with(&["--token-auth-file", tokens.path().to_str().unwrap()]);
    let admin = |args: &[&str]| server.kubectl(&kubectl, args);
    let alice = alice_kubeconfig(&server);
    let as_alice = |args: &[&str]| kubectl_with(&server, &kubectl, &alice, args);

    // alice may not impersonate anyone: the reference's 403 names the user she asked for.
    // Discovery as alice herself first: kubectl reports a refused discovery only as "unknown".
    ok(as_alice(&["api-resources"]), "discovery as alice");
    let refused = as_alice(&["--as", "bob", "get", "configmaps", "-n", "default"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains(
            r#"users "bob" is forbidden: User "alice" cannot impersonate resource "users" in API group "" at the cluster scope"#
        ),
        "{}",
        stderr(&refused)
    );

    // The admin may; the request then runs as bob with exactly the asked-for groups.
    let (name, groups) =
        whoami(admin(&["auth", "whoami", "--as", "bob", "--as-group", "g1", "-o", "json"]));
    assert_eq!(name, "bob");
    assert_eq!(groups, vec!["g1", "system:authenticated"]);
    // ...and with bob's permissions, not the admin's.
    let as_bob = admin(&["--as", "bob", "get", "configmaps", "-n", "default"]);
    assert!(!as_bob.status.success());
    assert!(
        stderr(&as_bob).contains(r#"User "bob" cannot list resource "configmaps""#),
        "{}",
        stderr(&as_bob)
    );
    ok(
        admin(&[
            "create",
            "rolebinding",
            "g1-view",
            "--clusterrole=view",
            "--group=g1",
            "-n",
            "default",
        ]),
        "bind g1",
    );
    ok(
        admin(&["--as", "bob", "--as-group", "g1", "get", "configmaps", "-n", "default"]),
        "bob in g1 lists",
    );

    // Allowed to impersonate the user bob only: bob works, his group g1 and carol do not.
    ok(
        admin(&[
            "create",
            "clusterrole",
            "impersonate-bob",
            "--verb=impersonate",
            "--resource=users",
            "--resource-name=bob",
        ]),
        "role",
    );
    ok(
        admin(&[
            "create",
            "clusterrolebinding",
            "alice-impersonates",
            "--clusterrole=impersonate-bob",
            "--user=alice",
        ]),
        "binding",
    );
    let (name, groups) = whoami(as_alice(&["auth", "whoami", "--as", "bob", "-o", "json"]));
    assert_eq!((name.as_str(), groups), ("bob", vec!["system:authenticated".to_string()]));
    let group =
        as_alice(&["--as", "bob", "--as-group", "g1", "get", "configmaps", "-n", "default"]);
    assert!(!group.status.success());
    assert!(
        stderr(&group).contains(
            r#"groups "g1" is forbidden: User "alice" cannot impersonate resource "groups""#
        ),
        "{}",
        stderr(&group)
    );
    let carol = as_alice(&["--as", "carol", "get", "configmaps", "-n", "default"]);
    assert!(stderr(&carol).contains(r#"users "carol" is forbidden"#), "{}", stderr(&carol));
}

/// `skerry kubeconfig create` with `args`, its kubeconfig written to `name`.
fn create_kubeconfig(server: &SkerryServer, name: &str, args: &[&str]) -> PathBuf {
    let out = Command::new(env!("CARGO_BIN_EXE_skerry"))
        .args(["kubeconfig", "create"])
        .args(args)
        .arg("--data-dir")
        .arg(&server.data_dir)
        .output()
        .unwrap();
    let text = ok(out, "skerry kubeconfig create");
    let path = server.dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn kubeconfig_create_gives_a_user_in_every_group() {
    let Some(kubectl) = skerry_testkit::kubectl() else { return };
    let server = SkerryServer::start();
    let admin = |args: &[&str]| server.kubectl(&kubectl, args);
    let alice = create_kubeconfig(
        &server,
        "alice.kubeconfig",
        &["alice", "--group", "devs", "--group", "ops"],
    );
    let as_alice = |args: &[&str]| kubectl_with(&server, &kubectl, &alice, args);

    let (name, groups) = whoami(as_alice(&["auth", "whoami", "-o", "json"]));
    assert_eq!(name, "alice");
    assert_eq!(groups, vec!["devs", "ops", "system:authenticated"]);
    // RBAC bound to the second group applies.
    let denied = as_alice(&["create", "configmap", "c1", "-n", "default"]);
    assert!(
        stderr(&denied).contains(r#"User "alice" cannot create resource "configmaps""#),
        "{}",
        stderr(&denied)
    );
    ok(
        admin(&[
            "create",
            "rolebinding",
            "ops-edit",
            "--clusterrole=edit",
            "--group=ops",
            "-n",
            "default",
        ]),
        "bind ops",
    );
    ok(as_alice(&["create", "configmap", "c1", "-n", "default"]), "alice creates in ops");

    // Without a CA in the data dir nothing is issued.
    let out = Command::new(env!("CARGO_BIN_EXE_skerry"))
        .args(["kubeconfig", "create", "x", "--data-dir"])
        .arg(server.dir.path().join("nowhere"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!server.dir.path().join("nowhere/tls/ca.crt").exists());
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A key and a PEM CSR for `subject` made with openssl, or None without openssl.
fn openssl_csr(dir: &Path, name: &str, subject: &str) -> Option<(PathBuf, String)> {
    let key = dir.join(format!("{name}.key"));
    let csr = dir.join(format!("{name}.csr"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&csr)
        .args(["-subj", subject])
        .output()
        .ok()?;
    assert!(out.status.success(), "openssl req: {}", stderr(&out));
    Some((key, std::fs::read_to_string(csr).unwrap()))
}

/// Creates a CSR object for the user signer.
fn submit_csr(server: &SkerryServer, kubectl: &Path, name: &str, pem: &str, usages: &[&str]) {
    let csr = serde_json::json!({
        "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {"request": base64(pem.as_bytes()), "signerName": "kubernetes.io/kube-apiserver-client",
                 "usages": usages, "expirationSeconds": 3600},
    });
    ok(server.kubectl_stdin(kubectl, &["create", "-f", "-"], Some(&csr.to_string())), "create csr");
}

/// The CSR once `done` holds for it (the controller works in the background).
fn wait_csr(
    server: &SkerryServer,
    kubectl: &Path,
    name: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let csr = server.kubectl_json(kubectl, &["get", "csr", name, "-o", "json"]).unwrap();
        if done(&csr) {
            return csr;
        }
        assert!(Instant::now() < deadline, "CSR {name} never got there: {csr}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn approved_client_csrs_are_signed_and_authenticate() {
    let Some(kubectl) = skerry_testkit::kubectl() else { return };
    let server = SkerryServer::start();
    let Some((key, pem)) = openssl_csr(server.dir.path(), "carol", "/O=g1/O=g2/CN=carol") else {
        eprintln!("no openssl: skipped");
        return;
    };
    submit_csr(&server, &kubectl, "carol", &pem, &["client auth", "digital signature"]);
    ok(server.kubectl(&kubectl, &["certificate", "approve", "carol"]), "approve");
    let csr = wait_csr(&server, &kubectl, "carol", |c| c["status"]["certificate"].is_string());
    // Approved by kubectl only: the controller never approves a user certificate itself.
    let conditions = csr["status"]["conditions"].as_array().unwrap();
    let reasons: Vec<_> = conditions.iter().map(|c| c["reason"].as_str().unwrap_or("")).collect();
    assert_eq!(reasons, vec!["KubectlApprove"], "{csr}");

    // The certificate works with kubectl and carries the CSR's user and both groups.
    let cert = csr["status"]["certificate"].as_str().unwrap();
    let key_pem = std::fs::read(&key).unwrap();
    let ca = std::fs::read(server.data_dir.join("tls/ca.crt")).unwrap();
    let kubeconfig = server.dir.path().join("carol.kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: s\n  cluster:\n    server: {}\n    certificate-authority-data: {}\n\
             users:\n- name: carol\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {}\n\
             contexts:\n- name: c\n  context:\n    cluster: s\n    user: carol\ncurrent-context: c\n",
            server.url,
            base64(&ca),
            base64(&key_pem)
        ),
    )
    .unwrap();
    let (name, groups) =
        whoami(kubectl_with(&server, &kubectl, &kubeconfig, &["auth", "whoami", "-o", "json"]));
    assert_eq!(
        (name.as_str(), groups),
        ("carol", vec!["g1".into(), "g2".into(), "system:authenticated".into()])
    );

    // `expirationSeconds: 3600` is honoured.
    let cert_pem = String::from_utf8(
        Command::new("openssl")
            .args(["base64", "-d", "-A"])
            .arg("-in")
            .arg({
                let p = server.dir.path().join("carol.b64");
                std::fs::write(&p, cert).unwrap();
                p
            })
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let end = skerry_control::pki::not_after(&cert_pem).unwrap();
    let left = end.unix_timestamp() - time_now();
    assert!(left <= 3600 && left > 3000, "{left}s left");

    // A server usage is against the signer's rules: Failed, no certificate.
    let (_, pem) = openssl_csr(server.dir.path(), "srv", "/CN=srv").unwrap();
    submit_csr(&server, &kubectl, "srv", &pem, &["server auth"]);
    ok(server.kubectl(&kubectl, &["certificate", "approve", "srv"]), "approve srv");
    let failed = wait_csr(&server, &kubectl, "srv", |c| {
        c["status"]["conditions"]
            .as_array()
            .is_some_and(|l| l.iter().any(|c| c["type"] == "Failed"))
    });
    assert!(failed["status"].get("certificate").is_none(), "{failed}");
}

/// Now as unix seconds, comparable with `OffsetDateTime` through its unix timestamp.
fn time_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

const POLICY: &str = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n\
- level: None\n  verbs: [get]\n  resources: [{group: \"\", resources: [namespaces]}]\n\
- level: Request\n  resources: [{group: \"\", resources: [configmaps]}]\n\
- level: Metadata\n";

/// The audit events so far.
fn events(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// The first event `find` accepts, waiting for the writer thread.
fn wait_event(path: &Path, find: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(event) = events(path).into_iter().find(&find) {
            return event;
        }
        assert!(Instant::now() < deadline, "no such event in {:?}", std::fs::read_to_string(path));
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn audit_log_records_requests_as_reference_events() {
    let Some(kubectl) = skerry_testkit::kubectl() else { return };
    let tokens = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tokens.path(), TOKENS).unwrap();
    let policy = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(policy.path(), POLICY).unwrap();
    let server = SkerryServer::start_with(&[
        "--token-auth-file",
        tokens.path().to_str().unwrap(),
        "--audit-log-path",
        "{dir}/audit/audit.log",
        "--audit-policy-file",
        policy.path().to_str().unwrap(),
    ]);
    let log = server.dir.path().join("audit/audit.log");
    ok(
        server.kubectl(
            &kubectl,
            &["create", "configmap", "cm1", "-n", "default", "--from-literal=a=b"],
        ),
        "create",
    );
    let alice = alice_kubeconfig(&server);
    let denied = kubectl_with(&server, &kubectl, &alice, &["get", "secrets", "-n", "default"]);
    assert!(!denied.status.success());

    // The create, at level Request: metadata, the object's name, the decoded request object.
    let create = wait_event(&log, |e| {
        e["verb"] == "create"
            && e["objectRef"]["resource"] == "configmaps"
            && e["objectRef"]["name"] == "cm1"
            && e["stage"] == "ResponseComplete"
    });
    assert_eq!(create["kind"], "Event");
    assert_eq!(create["apiVersion"], "audit.k8s.io/v1");
    assert_eq!(create["level"], "Request");
    assert_eq!(
        create["requestURI"].as_str().unwrap().split('?').next(),
        Some("/api/v1/namespaces/default/configmaps")
    );
    assert_eq!(create["user"]["username"], "admin");
    assert!(create["user"]["groups"].as_array().unwrap().iter().any(|g| g == "system:masters"));
    assert_eq!(create["objectRef"]["namespace"], "default");
    assert_eq!(create["objectRef"]["name"], "cm1");
    assert_eq!(create["objectRef"]["apiVersion"], "v1");
    assert!(create["objectRef"].get("apiGroup").is_none());
    assert_eq!(create["responseStatus"]["code"], 201);
    assert_eq!(create["requestObject"]["data"]["a"], "b");
    assert!(create.get("responseObject").is_none());
    assert!(create["sourceIPs"].as_array().unwrap().iter().any(|ip| ip == "127.0.0.1"));
    assert!(create["userAgent"].as_str().unwrap().starts_with("kubectl"));
    assert_eq!(create["auditID"].as_str().unwrap().len(), 36);
    for key in ["requestReceivedTimestamp", "stageTimestamp"] {
        assert!(create[key].as_str().unwrap().ends_with('Z'), "{key}: {create}");
    }
    // Its RequestReceived stage shares the id and has no response yet.
    let received =
        wait_event(&log, |e| e["auditID"] == create["auditID"] && e["stage"] == "RequestReceived");
    assert!(received.get("responseStatus").is_none());

    // The refusal, at level Metadata, with the reference's Status fields.
    let refused = wait_event(&log, |e| {
        e["user"]["username"] == "alice"
            && e["objectRef"]["resource"] == "secrets"
            && e["stage"] == "ResponseComplete"
    });
    assert_eq!(refused["level"], "Metadata");
    assert_eq!(refused["verb"], "list");
    assert_eq!(refused["responseStatus"]["code"], 403);
    assert_eq!(refused["responseStatus"]["reason"], "Forbidden");
    assert_eq!(refused["responseStatus"]["status"], "Failure");
    assert!(refused["responseStatus"]["message"]
        .as_str()
        .unwrap()
        .contains(r#"User "alice" cannot list resource "secrets""#));
    // The authorizer's decision is annotated on the event: forbidden with no RBAC rule, ...
    assert_eq!(refused["annotations"]["authorization.k8s.io/decision"], "forbid", "{refused}");
    // ... allowed for the privileged group without a reason, and by RBAC with the binding.
    assert_eq!(create["annotations"]["authorization.k8s.io/decision"], "allow", "{create}");
    assert!(received.get("annotations").is_none(), "authorized after RequestReceived");
    let whoami = kubectl_with(&server, &kubectl, &alice, &["auth", "whoami"]);
    assert!(whoami.status.success(), "{}", String::from_utf8_lossy(&whoami.stderr));
    let review = wait_event(&log, |e| {
        e["user"]["username"] == "alice"
            && e["objectRef"]["resource"] == "selfsubjectreviews"
            && e["stage"] == "ResponseComplete"
    });
    assert_eq!(review["annotations"]["authorization.k8s.io/decision"], "allow", "{review}");
    assert_eq!(
        review["annotations"]["authorization.k8s.io/reason"],
        "RBAC: allowed by ClusterRoleBinding \"system:basic-user\" of ClusterRole \
         \"system:basic-user\" to Group \"system:authenticated\""
    );

    // Impersonation is logged with both identities.
    ok(server.kubectl(&kubectl, &["--as", "bob", "auth", "whoami"]), "whoami as bob");
    let impersonated = wait_event(&log, |e| e["impersonatedUser"]["username"] == "bob");
    assert_eq!(impersonated["user"]["username"], "admin");

    // The response's Audit-Id header names its event; a policy's None rule logs nothing.
    let rt = runtime();
    let response = rt
        .block_on(server.admin().request(
            "GET",
            "/api/v1/namespaces/kube-system/configmaps",
            None,
            b"",
        ))
        .unwrap();
    let id = response.headers.get("audit-id").unwrap().to_str().unwrap().to_string();
    wait_event(&log, |e| e["auditID"] == id.as_str() && e["verb"] == "list");
    let ns = rt
        .block_on(server.admin().request("GET", "/api/v1/namespaces/default", None, b""))
        .unwrap();
    assert!(ns.headers.get("audit-id").is_none());

    // A watch logs ResponseStarted when it starts and ResponseComplete when it ends.
    rt.block_on(async {
        let (status, _stream) = server
            .admin()
            .watch("/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=1")
            .await;
        assert_eq!(status, 200);
    });
    let started = wait_event(&log, |e| {
        e["verb"] == "watch" && e["user"]["username"] == "admin" && e["stage"] == "ResponseStarted"
    });
    wait_event(&log, |e| e["auditID"] == started["auditID"] && e["stage"] == "ResponseComplete");
    assert!(events(&log)
        .iter()
        .all(|e| !(e["verb"] == "get" && e["objectRef"]["resource"] == "namespaces")));
}
