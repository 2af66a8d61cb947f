//! Authorization against the real `skerry server` with kubectl 1.32: RBAC enforcement with the
//! reference's 403 messages, `kubectl auth can-i` (and `--list`) agreeing with it, escalation
//! prevention with its `bind`/`escalate` exemptions, and discovery for every authenticated user.
//! Users come from a static token file: alice and bob start with no bindings at all.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::server::{ok, SkerryServer};
use serde_json::json;

const TOKENS: &str = "alice-token,alice,1001\nbob-token,bob,1002\n";

/// A kubeconfig for a token user of `server`.
fn user_kubeconfig(server: &SkerryServer, user: &str, token: &str) -> PathBuf {
    let path = server.dir.path().join(format!("{user}.kubeconfig"));
    let ca = server.data_dir.join("tls").join("ca.crt");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: skerry\n  cluster:\n    server: {}\n    certificate-authority: {}\n\
         users:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: {user}\n  context:\n    cluster: skerry\n    user: {user}\n\
         current-context: {user}\n",
        server.url,
        ca.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// kubectl as the user of `kubeconfig`.
fn kubectl_as(server: &SkerryServer, kubectl: &Path, kubeconfig: &Path, args: &[&str]) -> Output {
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

/// `kubectl auth can-i …` as a boolean (exit 0 and `yes`, or exit 1 and `no`).
fn can_i(server: &SkerryServer, kubectl: &Path, kubeconfig: &Path, args: &[&str]) -> bool {
    let mut all = vec!["auth", "can-i"];
    all.extend_from_slice(args);
    let out = kubectl_as(server, kubectl, kubeconfig, &all);
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    match (out.status.code(), answer.as_str()) {
        (Some(0), "yes") => true,
        (Some(1), "no") => false,
        _ => panic!("auth can-i {args:?}: {:?} {answer:?} {}", out.status, stderr(&out)),
    }
}

#[test]
fn rbac_enforcement_can_i_and_escalation() {
    let Some(kubectl) = skerry_testkit::kubectl() else { return };
    let tokens = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tokens.path(), TOKENS).unwrap();
    let server = SkerryServer::start_with(&["--token-auth-file", tokens.path().to_str().unwrap()]);
    let admin = |args: &[&str]| ok(server.kubectl(&kubectl, args), &args.join(" "));
    let alice = user_kubeconfig(&server, "alice", "alice-token");
    let as_alice = |args: &[&str]| kubectl_as(&server, &kubectl, &alice, args);

    admin(&["create", "namespace", "team"]);
    // With no binding at all, alice may do nothing in `team` yet.
    let denied = as_alice(&["get", "pods", "-n", "team"]);
    assert!(!denied.status.success());
    assert!(!can_i(&server, &kubectl, &alice, &["list", "pods", "-n", "team"]));

    // `view` in `team` (kubectl create sends the binding as protobuf).
    admin(&[
        "create",
        "rolebinding",
        "alice-view",
        "-n",
        "team",
        "--clusterrole=view",
        "--user=alice",
    ]);
    let listed = as_alice(&["get", "pods", "-n", "team"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert!(can_i(&server, &kubectl, &alice, &["list", "pods", "-n", "team"]));
    assert!(can_i(&server, &kubectl, &alice, &["get", "namespace/team", "-n", "team"]));

    let elsewhere = as_alice(&["get", "pods", "-n", "default"]);
    assert!(!elsewhere.status.success());
    assert!(
        stderr(&elsewhere).contains(
            "pods is forbidden: User \"alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
        ),
        "{}",
        stderr(&elsewhere)
    );
    assert!(!can_i(&server, &kubectl, &alice, &["list", "pods", "-n", "default"]));

    let create = as_alice(&["create", "configmap", "c1", "-n", "team", "--from-literal=a=b"]);
    assert!(!create.status.success());
    assert!(
        stderr(&create).contains(
            "configmaps is forbidden: User \"alice\" cannot create resource \"configmaps\" in API group \"\" in the namespace \"team\""
        ),
        "{}",
        stderr(&create)
    );
    assert!(!can_i(&server, &kubectl, &alice, &["create", "configmaps", "-n", "team"]));
    let nodes = as_alice(&["get", "nodes"]);
    assert!(
        stderr(&nodes).contains(
            "nodes is forbidden: User \"alice\" cannot list resource \"nodes\" in API group \"\" at the cluster scope"
        ),
        "{}",
        stderr(&nodes)
    );
    assert!(!can_i(
        &server,
        &kubectl,
        &alice,
        &["create", "pods", "--subresource=exec", "-n", "team"]
    ));
    assert!(can_i(&server, &kubectl, &alice, &["get", "pods", "--subresource=log", "-n", "team"]));

    // `--list` shows the view rules in `team` and not elsewhere.
    let list = ok(as_alice(&["auth", "can-i", "--list", "-n", "team"]), "can-i --list");
    let pods_row = list.lines().find(|l| l.split_whitespace().next() == Some("pods"));
    assert!(pods_row.is_some_and(|l| l.contains("[get list watch]")), "{list}");
    assert!(list.lines().any(|l| l.starts_with("selfsubjectaccessreviews.authorization.k8s.io")));
    assert!(list.contains("/api/*"), "discovery URLs: {list}");
    let other = ok(as_alice(&["auth", "can-i", "--list", "-n", "default"]), "can-i --list");
    assert!(!other.lines().any(|l| l.starts_with("pods ")), "{other}");

    // `view` itself was filled in by aggregation from system:aggregate-to-view.
    let view =
        server.kubectl_json(&kubectl, &["get", "clusterrole", "view", "-o", "json"]).unwrap();
    assert!(view["rules"].as_array().is_some_and(|r| r
        .iter()
        .any(|r| r["resources"].as_array().is_some_and(|res| res.contains(&json!("pods"))))));

    // Escalation: alice gets `edit` and may manage Roles and RoleBindings in `team`.
    admin(&[
        "create",
        "rolebinding",
        "alice-edit",
        "-n",
        "team",
        "--clusterrole=edit",
        "--user=alice",
    ]);
    admin(&[
        "create",
        "role",
        "rbac-manager",
        "-n",
        "team",
        "--verb=create,get,list",
        "--resource=roles.rbac.authorization.k8s.io,rolebindings.rbac.authorization.k8s.io",
    ]);
    admin(&[
        "create",
        "rolebinding",
        "alice-rbac",
        "-n",
        "team",
        "--role=rbac-manager",
        "--user=alice",
    ]);
    assert!(can_i(&server, &kubectl, &alice, &["create", "configmaps", "-n", "team"]));

    let to_admin =
        ["create", "rolebinding", "bob-admin", "-n", "team", "--clusterrole=admin", "--user=bob"];
    let refused = as_alice(&to_admin);
    assert!(!refused.status.success());
    let text = stderr(&refused);
    assert!(
        text.contains("rolebindings.rbac.authorization.k8s.io \"bob-admin\" is forbidden: user \"alice\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:"),
        "{text}"
    );
    assert!(
        text.contains(
            "{APIGroups:[\"rbac.authorization.k8s.io\"], Resources:[\"rolebindings\"], Verbs:["
        ),
        "{text}"
    );

    let too_much =
        ["create", "role", "secret-admin", "-n", "team", "--verb=*", "--resource=secrets"];
    let refused = as_alice(&too_much);
    assert!(
        stderr(&refused).contains(
            "roles.rbac.authorization.k8s.io \"secret-admin\" is forbidden: user \"alice\""
        ),
        "{}",
        stderr(&refused)
    );
    assert!(stderr(&refused).contains("{APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"*\"]}"));
    // What she holds she may hand on.
    ok(
        as_alice(&[
            "create",
            "role",
            "pod-reader",
            "-n",
            "team",
            "--verb=get,list",
            "--resource=pods",
        ]),
        "create role",
    );
    ok(
        as_alice(&[
            "create",
            "rolebinding",
            "bob-view",
            "-n",
            "team",
            "--clusterrole=view",
            "--user=bob",
        ]),
        "bind view",
    );

    // `bind` on the admin ClusterRole lets her bind it; `escalate` on roles lets her write any Role.
    admin(&[
        "create",
        "role",
        "binder",
        "-n",
        "team",
        "--verb=bind",
        "--resource=clusterroles.rbac.authorization.k8s.io",
        "--resource-name=admin",
    ]);
    admin(&[
        "create",
        "rolebinding",
        "alice-binder",
        "-n",
        "team",
        "--role=binder",
        "--user=alice",
    ]);
    ok(as_alice(&to_admin), "bind admin with bind");
    admin(&[
        "create",
        "role",
        "escalator",
        "-n",
        "team",
        "--verb=escalate",
        "--resource=roles.rbac.authorization.k8s.io",
    ]);
    admin(&[
        "create",
        "rolebinding",
        "alice-escalator",
        "-n",
        "team",
        "--role=escalator",
        "--user=alice",
    ]);
    ok(as_alice(&too_much), "create role with escalate");
}

#[tokio::test]
async fn discovery_needs_authentication_but_no_binding() {
    let tokens = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tokens.path(), TOKENS).unwrap();
    let server = SkerryServer::start_with(&["--token-auth-file", tokens.path().to_str().unwrap()]);

    let anonymous = server.anonymous(None);
    let resp = anonymous.request("GET", "/apis", None, b"").await.unwrap();
    assert_eq!(resp.status, 401);

    let bob = server.anonymous(Some("bob-token"));
    for path in ["/api", "/apis", "/api/v1", "/apis/apps/v1", "/version", "/openapi/v2"] {
        let resp = bob.request("GET", path, None, b"").await.unwrap();
        assert_eq!(resp.status, 200, "{path}: {}", String::from_utf8_lossy(&resp.body));
    }
    let (code, body) = bob.json("GET", "/api/v1/namespaces/default/pods", None).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(body["reason"], "Forbidden");
    assert_eq!(
        body["message"],
        "pods is forbidden: User \"bob\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
    );
    assert_eq!(body["details"], json!({"group": "", "kind": "pods", "name": ""}));
    let (code, body) = bob.json("GET", "/metrics", None).await;
    assert_eq!(
        (code, body["message"].as_str()),
        (403, Some("forbidden: User \"bob\" cannot get path \"/metrics\""))
    );

    // A SubjectAccessReview (as the admin) answers for bob, by the same rules.
    let review = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": "bob", "groups": ["system:authenticated"],
                 "nonResourceAttributes": {"path": "/apis", "verb": "get"}}});
    let (code, body) = server
        .admin()
        .json("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", Some(&review))
        .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["status"]["allowed"], true);
    assert_eq!(
        body["status"]["reason"],
        "RBAC: allowed by ClusterRoleBinding \"system:discovery\" of ClusterRole \"system:discovery\" to Group \"system:authenticated\""
    );
    let mut pods = review.clone();
    pods["spec"] = json!({"user": "bob", "resourceAttributes": {"verb": "list", "resource": "pods", "namespace": "default"}});
    let (_, body) = server
        .admin()
        .json("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", Some(&pods))
        .await;
    assert_eq!(body["status"]["allowed"], false, "{body}");
    // Nothing was stored.
    let (code, _) = server
        .admin()
        .json("GET", "/apis/authorization.k8s.io/v1/subjectaccessreviews", None)
        .await;
    assert_eq!(code, 405);
}
