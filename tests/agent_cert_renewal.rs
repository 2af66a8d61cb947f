//! Client certificate renewal, end to end: a real `skerry agent` joins with the node token
//! asking for ten-minute certificates (`SKERRY_CLIENT_CERT_DURATION`) and renews at 2 % of
//! their lifetime (`SKERRY_CERT_RENEWAL_FRACTION`, the tests' override of 70–90 %), so the
//! renewal comes within seconds: a second CSR, asked for by `system:node:<name>` itself and
//! approved through its `selfnodeclient` permission; a new certificate (new serial, same
//! subject) in the same file; the API client switched to it; the Lease still renewed.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::agent::{enter_test_netns, eventually, SkerryAgent};
use common::server::{ok, SkerryServer};
use serde_json::Value;

const NODE: &str = "pi-renew";

/// `openssl x509 -noout <flag>` of the PEM certificate at `path`, or the reason it failed.
fn openssl_x509(path: &std::path::Path, flag: &str) -> Result<String, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut child = Command::new("openssl")
        .args(["x509", "-noout", flag])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &pem).unwrap();
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn serial(path: &std::path::Path) -> Result<String, String> {
    let line = openssl_x509(path, "-serial")?;
    line.strip_prefix("serial=").map(str::to_string).ok_or(line)
}

#[test]
fn a_joined_agent_renews_its_certificate_and_keeps_renewing_its_lease() {
    if !skerry_testkit::require_root()
        || skerry_testkit::require_program(&["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip"]).is_none()
        || skerry_testkit::require_program(&["/usr/bin/openssl"]).is_none()
    {
        return;
    }
    let Some(kubectl) = skerry_testkit::kubectl() else { return };
    enter_test_netns();
    // Read by the agent's flags (clap `env`); the server has no such flags.
    std::env::set_var("SKERRY_CLIENT_CERT_DURATION", "600s");
    std::env::set_var("SKERRY_CERT_RENEWAL_FRACTION", "0.02");
    let server = SkerryServer::start();
    let token = std::fs::read_to_string(server.data_dir.join("server/node-token")).unwrap();
    let mut agent = SkerryAgent::joining(&server, NODE, token.trim());
    agent.start();
    let cert_file = agent.data_dir.join("tls/node.crt");

    let first = eventually("the agent joins", Duration::from_secs(60), || {
        serial(&cert_file).map_err(|e| format!("{e}\n{}", agent.log_text()))
    });
    let renewed =
        eventually("the certificate is renewed", Duration::from_secs(90), || {
            match serial(&cert_file) {
                Ok(s) if s != first => Ok(s),
                Ok(s) => Err(format!("still {s}\n{}", agent.log_text())),
                Err(e) => Err(e),
            }
        });
    let subject = openssl_x509(&cert_file, "-subject").unwrap();
    assert!(
        subject.contains(&format!("system:node:{NODE}")) && subject.contains("system:nodes"),
        "{subject}"
    );
    let key = std::fs::read_to_string(agent.data_dir.join("tls/node.key")).unwrap();
    assert!(key.contains("PRIVATE KEY"), "the key file is not a key");

    // The API client moved to the renewed certificate (the agent reports which one it loaded).
    eventually("the API client switches", Duration::from_secs(30), || {
        let log = agent.log_text();
        let switched = log.lines().any(|l| {
            l.contains("the API client now uses the renewed client certificate")
                && l.contains(&renewed)
        });
        if switched {
            Ok(())
        } else {
            Err(log)
        }
    });

    // Two CSRs of this node, both signed for ten minutes: the join's (a bootstrap token) and
    // the renewal's (the node itself, approved as a self renewal).
    let csrs = ok(server.kubectl(&kubectl, &["get", "csr", "-o", "json"]), "kubectl get csr");
    let csrs: Value = serde_json::from_str(&csrs).unwrap();
    let mine: Vec<&Value> = csrs["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with(&format!("node-csr-{NODE}-")))
        })
        .collect();
    let by = |user: &dyn Fn(&str) -> bool| {
        mine.iter().find(|c| c["spec"]["username"].as_str().is_some_and(user)).copied()
    };
    let join = by(&|u| u.starts_with("system:bootstrap:"))
        .unwrap_or_else(|| panic!("no join CSR: {csrs}"));
    let renewal = by(&|u| u == format!("system:node:{NODE}"))
        .unwrap_or_else(|| panic!("no renewal CSR: {csrs}"));
    for csr in [join, renewal] {
        assert_eq!(csr["spec"]["expirationSeconds"], 600, "{csr}");
        assert!(csr["status"]["certificate"].as_str().is_some_and(|c| !c.is_empty()), "{csr}");
    }
    let approval = &renewal["status"]["conditions"][0];
    assert_eq!(approval["type"], "Approved", "{renewal}");
    assert!(approval["message"].as_str().unwrap_or("").contains("renewal"), "{renewal}");

    // The node keeps renewing its Lease after the switch: each request after it goes through
    // the new client, whose connections present the new certificate.
    let renew_time = || {
        let out = server.kubectl(
            &kubectl,
            &["get", "lease", NODE, "-n", "kube-node-lease", "-o", "jsonpath={.spec.renewTime}"],
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let before = renew_time();
    eventually("the Lease is renewed after the switch", Duration::from_secs(60), || {
        let now = renew_time();
        if !now.is_empty() && now != before {
            Ok(())
        } else {
            Err(format!("renewTime still {before:?}\n{}", agent.log_text()))
        }
    });
}
