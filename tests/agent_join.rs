//! Joining with a token, end to end: the real `skerry server` writes `DATA_DIR/server/node-token`;
//! a real `skerry agent --server URL --token TOKEN` (in a network namespace made by the test)
//! pins the CA by the token's hash, gets a `system:node:<name>` client certificate through a
//! CertificateSigningRequest the server approves and signs, and registers its Node with it.
//! `skerry token create|list|delete` manage further tokens; wrong tokens are refused clearly.

mod common;

use std::process::Command;
use std::time::Duration;

use common::agent::{enter_test_netns, eventually, node_ready, SkerryAgent};
use common::server::{ok, SkerryServer};
use serde_json::Value;

fn skerry(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_skerry")).args(args).output().unwrap()
}

fn node_token(server: &SkerryServer) -> String {
    std::fs::read_to_string(server.data_dir.join("server/node-token")).unwrap().trim().to_string()
}

#[test]
fn the_node_token_and_created_tokens_authenticate_until_deleted() {
    let server = SkerryServer::start();
    let token = node_token(&server);
    let bearer = token.rsplit_once("::").unwrap().1.to_string();
    let rt = common::server::runtime();
    rt.block_on(async {
        // /cacerts is public: the CA the token's hash pins.
        let anon = server.anonymous(None);
        let ca = anon.request("GET", "/cacerts", None, b"").await.unwrap();
        assert_eq!(ca.status, 200);
        let pem = std::fs::read(server.data_dir.join("tls/ca.crt")).unwrap();
        assert_eq!(ca.body, pem);

        // The token authenticates as a bootstrapper; a made-up one of the same shape does not.
        let (code, body) = server.anonymous(Some(&bearer)).json("GET", "/api", None).await;
        assert_eq!(code, 200, "{body}");
        let (code, _) =
            server.anonymous(Some("abcdef.0123456789abcdef")).json("GET", "/api", None).await;
        assert_eq!(code, 401);
    });

    // A restart keeps the same node token.
    let mut server = server;
    server.restart();
    assert_eq!(node_token(&server), token);

    let data_dir = server.data_dir.to_str().unwrap().to_string();
    let created = skerry(&[
        "token",
        "create",
        "--ttl",
        "1h",
        "--description",
        "for pi-7",
        "--data-dir",
        &data_dir,
    ]);
    let created = ok(created, "skerry token create");
    let created = created.trim();
    assert!(created.starts_with("K10") && created.len() == token.len(), "{created}");
    let id = created.rsplit_once("::").unwrap().1.split('.').next().unwrap().to_string();
    let listed = ok(skerry(&["token", "list", "--data-dir", &data_dir]), "skerry token list");
    let row = listed.lines().find(|l| l.starts_with(&id)).unwrap_or_else(|| panic!("{listed}"));
    assert!(row.contains("for pi-7"), "{row}");
    assert!(!listed.contains(created.rsplit_once('.').unwrap().1), "a secret was listed: {listed}");

    let created_bearer = created.rsplit_once("::").unwrap().1.to_string();
    rt.block_on(async {
        let (code, body) = server.anonymous(Some(&created_bearer)).json("GET", "/api", None).await;
        assert_eq!(code, 200, "{body}");
    });
    ok(skerry(&["token", "delete", &id, "--data-dir", &data_dir]), "skerry token delete");
    rt.block_on(async {
        let (code, _) = server.anonymous(Some(&created_bearer)).json("GET", "/api", None).await;
        assert_eq!(code, 401, "a deleted token still authenticates");
    });

    // Wrong input: clear errors, no panics.
    let bad_ttl = skerry(&["token", "create", "--ttl", "soon", "--data-dir", &data_dir]);
    assert!(!bad_ttl.status.success());
    assert!(String::from_utf8_lossy(&bad_ttl.stderr).contains("--ttl"), "{bad_ttl:?}");
    let no_server = skerry(&["token", "list", "--data-dir", "/nonexistent"]);
    assert!(
        String::from_utf8_lossy(&no_server.stderr).contains("admin.kubeconfig"),
        "{no_server:?}"
    );
}

#[test]
fn an_agent_joins_with_the_node_token_and_acts_as_its_node() {
    if !skerry_testkit::require_root()
        || skerry_testkit::require_program(&["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip"]).is_none()
    {
        return;
    }
    let Some(kubectl) = skerry_testkit::kubectl() else { return };
    enter_test_netns();
    let server = SkerryServer::start();
    let token = node_token(&server);

    // A token for another cluster's CA (same secret, other hash) is refused before any request.
    let forged = format!("K10{}::{}", "0".repeat(64), token.rsplit_once("::").unwrap().1);
    let mut forged_agent = SkerryAgent::joining(&server, "forged", &forged);
    forged_agent.start();
    eventually("the forged join fails", Duration::from_secs(30), || {
        let log = forged_agent.log_text();
        if log.contains("does not match the hash in the join token") {
            Ok(())
        } else {
            Err(log)
        }
    });
    let garbage = Command::new(env!("CARGO_BIN_EXE_skerry"))
        .args(["agent", "--server", &server.url, "--token", "not-a-token", "--config", "/dev/null"])
        .output()
        .unwrap();
    assert!(!garbage.status.success());
    assert!(
        String::from_utf8_lossy(&garbage.stderr).contains("join token is malformed"),
        "{garbage:?}"
    );

    let mut agent = SkerryAgent::joining(&server, "pi-1", &token);
    agent.start();
    let node =
        eventually("the joined node registers and is Ready", Duration::from_secs(60), || {
            let out = server.kubectl(&kubectl, &["get", "node", "pi-1", "-o", "json"]);
            let node: Value = serde_json::from_slice(&out.stdout)
                .map_err(|e| format!("{e}: {}", agent.log_text()))?;
            let ready = node_ready(&node);
            if ready {
                Ok(node)
            } else {
                Err(node.to_string())
            }
        });
    assert_eq!(node["metadata"]["labels"]["kubernetes.io/hostname"], "pi-1", "{node}");

    // The CSR: asked for by the bootstrap token, approved automatically, signed.
    let csrs = ok(server.kubectl(&kubectl, &["get", "csr", "-o", "json"]), "kubectl get csr");
    let csrs: Value = serde_json::from_str(&csrs).unwrap();
    let csr = csrs["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["metadata"]["name"].as_str().is_some_and(|n| n.starts_with("node-csr-pi-1-")))
        .unwrap_or_else(|| panic!("{csrs}"))
        .clone();
    assert!(csr["spec"]["username"].as_str().unwrap().starts_with("system:bootstrap:"), "{csr}");
    assert_eq!(csr["spec"]["signerName"], "kubernetes.io/kube-apiserver-client-kubelet");
    assert_eq!(csr["status"]["conditions"][0]["type"], "Approved", "{csr}");
    assert!(csr["status"]["certificate"].as_str().is_some_and(|c| !c.is_empty()), "{csr}");

    // From then on the agent is system:node:pi-1: its kubeconfig holds its own certificate,
    // and the Node's Lease is renewed with it.
    let kubeconfig = std::fs::read_to_string(agent.data_dir.join("kubeconfig")).unwrap();
    assert!(
        kubeconfig.contains("user: system:node:pi-1") && kubeconfig.contains("client-certificate:"),
        "{kubeconfig}"
    );
    assert!(!kubeconfig.contains("token:"), "the bootstrap token stayed in the kubeconfig");
    let cert = std::fs::read_to_string(agent.data_dir.join("tls/node.crt")).unwrap();
    let mut openssl = Command::new("openssl")
        .args(["x509", "-noout", "-subject"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut openssl.stdin.take().unwrap(), cert.as_bytes()).unwrap();
    let subject = String::from_utf8(openssl.wait_with_output().unwrap().stdout).unwrap();
    assert!(subject.contains("system:node:pi-1") && subject.contains("system:nodes"), "{subject}");

    // A restart does not join again: no second CSR. (The Node is Ready at registration, before
    // the agent has finished starting: wait for that first, so the count below is the restart's.)
    let started = |agent: &SkerryAgent, times: usize| {
        eventually("the agent starts", Duration::from_secs(60), || {
            let log = agent.log_text();
            if log.matches("agent started").count() >= times {
                Ok(())
            } else {
                Err(log)
            }
        })
    };
    started(&agent, 1);
    agent.kill9();
    agent.start();
    started(&agent, 2);
    let csrs = ok(server.kubectl(&kubectl, &["get", "csr", "-o", "name"]), "kubectl get csr");
    assert_eq!(csrs.lines().filter(|l| l.contains("node-csr-pi-1-")).count(), 1, "{csrs}");
}
