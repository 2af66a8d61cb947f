//! `skerry etcd` driven by Debian's etcdctl 3.4 (ETCDCTL_API=3), over plain HTTP/2, TLS with
//! client certificates, and a Unix socket: what an operator would type against etcd must give
//! what etcd gives.

mod common;

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::etcd::{
    etcdctl, etcdctl_full, etcdctl_ok, eventually, failed, have_etcdctl, ok, SkerryEtcd, TestPki,
    ETCDCTL,
};

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

/// The revision in the header of `etcdctl get -w json`.
fn revision_of(endpoint: &str, key: &str) -> i64 {
    let out = etcdctl_ok(endpoint, &["get", key, "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["header"]["revision"].as_i64().unwrap()
}

#[test]
fn put_get_by_prefix_limit_revision_and_keys_only() {
    if !have_etcdctl() {
        return;
    }
    let s = SkerryEtcd::start();
    let ep = s.endpoint();
    assert_eq!(etcdctl_ok(ep, &["put", "/app/a", "1"]).trim(), "OK");
    let rev_a = revision_of(ep, "/app/a");
    etcdctl_ok(ep, &["put", "/app/b", "2"]);
    etcdctl_ok(ep, &["put", "/app/c", "3"]);
    etcdctl_ok(ep, &["put", "/other", "x"]);
    etcdctl_ok(ep, &["put", "/app/a", "1b"]);

    assert_eq!(lines(&etcdctl_ok(ep, &["get", "/app/a"])), ["/app/a", "1b"]);
    assert_eq!(
        lines(&etcdctl_ok(ep, &["get", "--prefix", "/app/"])),
        ["/app/a", "1b", "/app/b", "2", "/app/c", "3"]
    );
    // limit cuts the result, and etcd still reports the full count and `more`.
    let limited = etcdctl_ok(ep, &["get", "--prefix", "/app/", "--limit=2", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&limited).unwrap();
    assert_eq!(v["kvs"].as_array().unwrap().len(), 2);
    assert_eq!(v["count"], 3);
    assert_eq!(v["more"], true);
    // A historic read sees the first value.
    assert_eq!(
        lines(&etcdctl_ok(ep, &["get", "/app/a", &format!("--rev={rev_a}")])),
        ["/app/a", "1"]
    );
    // keys-only prints keys (each followed by an empty value line).
    let keys = etcdctl_ok(ep, &["get", "--prefix", "/app/", "--keys-only"]);
    let keys: Vec<&str> = keys.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(keys, ["/app/a", "/app/b", "/app/c"]);
    // Sorting by value, descending.
    let sorted = etcdctl_ok(
        ep,
        &["get", "--prefix", "/app/", "--sort-by=VALUE", "--order=DESCEND", "--print-value-only"],
    );
    assert_eq!(sorted.split_whitespace().collect::<Vec<_>>(), ["3", "2", "1b"]);
}

#[test]
fn delete_by_prefix_returns_previous_values() {
    if !have_etcdctl() {
        return;
    }
    let s = SkerryEtcd::start();
    let ep = s.endpoint();
    etcdctl_ok(ep, &["put", "/d/a", "va"]);
    etcdctl_ok(ep, &["put", "/d/b", "vb"]);
    etcdctl_ok(ep, &["put", "/keep", "k"]);
    let out = etcdctl_ok(ep, &["del", "--prefix", "/d/", "--prev-kv"]);
    assert_eq!(lines(&out), ["2", "/d/a", "va", "/d/b", "vb"]);
    assert_eq!(etcdctl_ok(ep, &["get", "--prefix", "/d/"]), "");
    assert_eq!(lines(&etcdctl_ok(ep, &["del", "/missing"])), ["0"]);
    assert_eq!(lines(&etcdctl_ok(ep, &["get", "/keep"])), ["/keep", "k"]);
}

fn txn(ep: &str, script: &str) -> Vec<String> {
    let out = ok(etcdctl_full(ep, &[], &["txn"], Some(script)), &["txn"]);
    out.lines().map(String::from).collect()
}

/// The three transaction shapes the Kubernetes apiserver uses (k8s.io/apiserver etcd3 store).
#[test]
fn txn_in_the_kubernetes_create_update_and_delete_shapes() {
    if !have_etcdctl() {
        return;
    }
    let s = SkerryEtcd::start();
    let ep = s.endpoint();
    let key = "/registry/pods/default/web";
    // Create: only if the key does not exist (mod revision 0).
    let create = format!("mod(\"{key}\") = \"0\"\n\nput {key} v1\n\nget {key}\n\n");
    assert_eq!(txn(ep, &create), ["SUCCESS", "", "OK"]);
    // The same create again fails and returns the current object.
    assert_eq!(txn(ep, &create), ["FAILURE", "", key, "v1"]);

    // Update: compare-and-swap on the mod revision the client read.
    let rev = revision_of(ep, key);
    let update = format!("mod(\"{key}\") = \"{rev}\"\n\nput {key} v2\n\nget {key}\n\n");
    assert_eq!(txn(ep, &update), ["SUCCESS", "", "OK"]);
    // A stale update loses and sees the newer object.
    assert_eq!(txn(ep, &update), ["FAILURE", "", key, "v2"]);

    // Delete: compare-and-swap on the mod revision, deleting on success.
    let rev = revision_of(ep, key);
    let stale = format!("mod(\"{key}\") = \"{}\"\n\ndel {key}\n\nget {key}\n\n", rev - 1);
    assert_eq!(txn(ep, &stale), ["FAILURE", "", key, "v2"]);
    let delete = format!("mod(\"{key}\") = \"{rev}\"\n\ndel {key}\n\nget {key}\n\n");
    assert_eq!(txn(ep, &delete), ["SUCCESS", "", "1"]);
    assert_eq!(etcdctl_ok(ep, &["get", key]), "");
}

/// Runs `etcdctl watch` in the background and yields its stdout lines.
struct WatchProcess {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl WatchProcess {
    fn start(ep: &str, args: &[&str]) -> Self {
        let mut child = Command::new(ETCDCTL)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={ep}"))
            .arg("watch")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        // etcdctl prints events on stdout and a server-side cancel on stderr; both count.
        let stdout: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().unwrap());
        let stderr: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().unwrap());
        for stream in [stdout, stderr] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        WatchProcess { child, lines }
    }

    /// The next `n` lines; panics if they do not come within 20 s.
    fn take(&self, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                self.lines
                    .recv_timeout(Duration::from_secs(20))
                    .unwrap_or_else(|e| panic!("watch line {i} of {n}: {e}"))
            })
            .collect()
    }
}

impl Drop for WatchProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn watch_replays_from_a_revision_with_prev_kv_then_goes_live() {
    if !have_etcdctl() {
        return;
    }
    let s = SkerryEtcd::start();
    let ep = s.endpoint();
    etcdctl_ok(ep, &["put", "/w/k", "v1"]);
    let first = revision_of(ep, "/w/k");
    etcdctl_ok(ep, &["put", "/w/k", "v2"]);
    etcdctl_ok(ep, &["del", "/w/k"]);
    etcdctl_ok(ep, &["put", "/unwatched", "x"]);

    let watch =
        WatchProcess::start(ep, &["--prefix", "--prev-kv", &format!("--rev={first}"), "/w/"]);
    // History: the create (no previous value), the update, the delete (previous value v2).
    assert_eq!(watch.take(3), ["PUT", "/w/k", "v1"]);
    assert_eq!(watch.take(5), ["PUT", "/w/k", "v1", "/w/k", "v2"]);
    assert_eq!(watch.take(5), ["DELETE", "/w/k", "v2", "/w/k", ""]);
    // Live events follow.
    etcdctl_ok(ep, &["put", "/w/k", "v3"]);
    assert_eq!(watch.take(3), ["PUT", "/w/k", "v3"]);
}

#[test]
fn lease_grant_keep_alive_time_to_live_revoke_and_expiry() {
    if !have_etcdctl() {
        return;
    }
    let s = SkerryEtcd::start();
    let ep = s.endpoint();
    // "lease 694d7a4d1a6c1a0b granted with TTL(60s)"
    let granted = etcdctl_ok(ep, &["lease", "grant", "60"]);
    let id = granted.split_whitespace().nth(1).unwrap().to_string();
    assert!(granted.contains("granted with TTL(60s)"), "{granted}");
    etcdctl_ok(ep, &["put", "--lease", &id, "/l/a", "1"]);
    etcdctl_ok(ep, &["put", "--lease", &id, "/l/b", "2"]);

    let kept = etcdctl_ok(ep, &["lease", "keep-alive", "--once", &id]);
    assert!(kept.contains(&format!("lease {id} keepalived with TTL(60)")), "{kept}");
    let ttl = etcdctl_ok(ep, &["lease", "timetolive", "--keys", &id]);
    assert!(ttl.contains("granted with TTL(60s)"), "{ttl}");
    assert!(ttl.contains("attached keys([/l/a /l/b])"), "{ttl}");
    let list = etcdctl_ok(ep, &["lease", "list"]);
    assert!(list.contains(&id), "{list}");

    let revoked = etcdctl_ok(ep, &["lease", "revoke", &id]);
    assert!(revoked.contains("revoked"), "{revoked}");
    assert_eq!(etcdctl_ok(ep, &["get", "--prefix", "/l/"]), "", "revoking deletes the keys");
    let gone = etcdctl_ok(ep, &["lease", "timetolive", &id]);
    assert!(gone.contains("already expired"), "{gone}");
    let err = failed(etcdctl(ep, &["lease", "revoke", &id]), &["lease", "revoke"]);
    assert!(err.contains("etcdserver: requested lease not found"), "{err}");

    // Expiry: a short lease that is not kept alive takes its key with it.
    let short = etcdctl_ok(ep, &["lease", "grant", "2"]);
    let short_id = short.split_whitespace().nth(1).unwrap().to_string();
    etcdctl_ok(ep, &["put", "--lease", &short_id, "/l/short", "x"]);
    assert_eq!(lines(&etcdctl_ok(ep, &["get", "/l/short"])), ["/l/short", "x"]);
    let expired = eventually(Duration::from_secs(30), || {
        etcdctl_ok(ep, &["get", "/l/short"]).is_empty().then_some(())
    });
    assert!(expired.is_some(), "the key of an expired lease must be deleted");
}

#[test]
fn reading_or_watching_below_the_compaction_point_fails_with_etcds_error() {
    if !have_etcdctl() {
        return;
    }
    let s = SkerryEtcd::start();
    let ep = s.endpoint();
    etcdctl_ok(ep, &["put", "/c/k", "1"]);
    let old = revision_of(ep, "/c/k");
    etcdctl_ok(ep, &["put", "/c/k", "2"]);
    etcdctl_ok(ep, &["put", "/c/k", "3"]);
    let now = revision_of(ep, "/c/k");
    let out = etcdctl_ok(ep, &["compaction", &now.to_string()]);
    assert_eq!(out.trim(), format!("compacted revision {now}"));

    let err = failed(etcdctl(ep, &["get", "/c/k", &format!("--rev={old}")]), &["get --rev"]);
    assert!(err.contains("etcdserver: mvcc: required revision has been compacted"), "{err}");
    // Compacting again to the same revision is the same error.
    let err = failed(etcdctl(ep, &["compaction", &now.to_string()]), &["compaction"]);
    assert!(err.contains("required revision has been compacted"), "{err}");
    // The current value is still there.
    assert_eq!(lines(&etcdctl_ok(ep, &["get", "/c/k"])), ["/c/k", "3"]);
    // A watch from before the compaction is cancelled with the compacted error.
    let watch = WatchProcess::start(ep, &[&format!("--rev={old}"), "/c/k"]);
    let line = watch.take(1).remove(0);
    assert!(line.contains("required revision has been compacted"), "{line}");
}

#[test]
fn endpoint_status_health_defrag_and_member_list_describe_one_member() {
    if !have_etcdctl() {
        return;
    }
    let mut s =
        SkerryEtcd::start_with(&["--listen-client-urls", "http://127.0.0.1:0", "--name", "edge-1"]);
    let ep = s.endpoint().to_string();
    etcdctl_ok(&ep, &["put", "k", "v"]);

    let status = etcdctl_ok(&ep, &["endpoint", "status", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    let st = &v[0]["Status"];
    let member_id = st["header"]["member_id"].as_u64().unwrap();
    assert!(st["version"].as_str().unwrap().starts_with("3.5."), "{status}");
    assert_eq!(st["leader"].as_u64().unwrap(), member_id, "it is its own leader");
    assert!(st["dbSize"].as_i64().unwrap() > 0, "{status}");
    assert!(st["raftTerm"].as_u64().unwrap() >= 1, "{status}");
    assert!(st["raftIndex"].as_u64().unwrap() >= 1, "{status}");

    // etcdctl 3.4 prints the health line on stderr.
    let health = etcdctl(&ep, &["endpoint", "health"]);
    assert!(health.status.success());
    let health = String::from_utf8_lossy(&health.stderr);
    assert!(health.contains(&format!("{ep} is healthy")), "{health}");
    let defrag = etcdctl_ok(&ep, &["defrag"]);
    assert!(defrag.contains("Finished defragmenting etcd member"), "{defrag}");
    let hash = etcdctl_ok(&ep, &["endpoint", "hashkv", "-w", "json"]);
    let h: serde_json::Value = serde_json::from_str(&hash).unwrap();
    assert!(h[0]["HashKV"]["hash"].as_u64().is_some(), "{hash}");
    assert_eq!(etcdctl_ok(&ep, &["alarm", "list"]), "");

    // "ID, started, name, peer URLs, client URLs, is learner"
    let members = etcdctl_ok(&ep, &["member", "list"]);
    let fields: Vec<&str> = members.trim().split(", ").collect();
    assert_eq!(members.lines().count(), 1, "{members}");
    assert_eq!(u64::from_str_radix(fields[0], 16).unwrap(), member_id);
    assert_eq!(fields[1], "started");
    assert_eq!(fields[2], "edge-1");
    assert_eq!(fields[4], ep);

    // Graceful stop on SIGTERM, and the identity survives a restart.
    assert!(s.terminate().success(), "SIGTERM must stop the server cleanly");
    s.restart();
    let ep = s.endpoint().to_string();
    let status = etcdctl_ok(&ep, &["endpoint", "status", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v[0]["Status"]["header"]["member_id"].as_u64().unwrap(), member_id);
    assert_eq!(lines(&etcdctl_ok(&ep, &["get", "k"])), ["k", "v"]);
}

#[test]
fn auth_requests_get_etcds_not_capable_error() {
    if !have_etcdctl() {
        return;
    }
    let s = SkerryEtcd::start();
    let args = ["user", "add", "--interactive=false", "alice:secret"];
    let err = failed(etcdctl(s.endpoint(), &args), &args);
    assert!(err.contains("etcdserver: not capable"), "{err}");
}

#[test]
fn tls_with_client_certificates() {
    if !have_etcdctl() || skerry_testkit::require_program(&["/usr/bin/openssl"]).is_none() {
        return;
    }
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(pki_dir.path());
    let s = SkerryEtcd::start_with(&[
        "--listen-client-urls",
        "https://127.0.0.1:0",
        "--cert-file",
        pki.server_cert.to_str().unwrap(),
        "--key-file",
        pki.server_key.to_str().unwrap(),
        "--trusted-ca-file",
        pki.ca.to_str().unwrap(),
        "--client-cert-auth",
    ]);
    let ep = s.endpoint();
    assert!(ep.starts_with("https://127.0.0.1:"), "{ep}");
    let tls = [
        format!("--cacert={}", pki.ca.display()),
        format!("--cert={}", pki.client_cert.display()),
        format!("--key={}", pki.client_key.display()),
    ];
    let tls: Vec<&str> = tls.iter().map(String::as_str).collect();
    ok(etcdctl_full(ep, &tls, &["put", "secure", "yes"], None), &["put"]);
    let got = ok(etcdctl_full(ep, &tls, &["get", "secure"], None), &["get"]);
    assert_eq!(lines(&got), ["secure", "yes"]);

    // Without a client certificate the handshake is refused.
    let out = etcdctl_full(ep, &tls[..1], &["--command-timeout=3s", "get", "secure"], None);
    failed(out, &["get without client cert"]);
}

#[test]
fn unix_socket_and_tcp_listeners_serve_the_same_store() {
    if !have_etcdctl() {
        return;
    }
    let s = SkerryEtcd::start_with(&[
        "--listen-client-urls",
        "unix://{dir}/etcd.sock,http://127.0.0.1:0",
    ]);
    let unix = &s.urls[0];
    assert!(unix.starts_with("unix:///") && unix.ends_with("/etcd.sock"), "{unix}");
    assert_eq!(etcdctl_ok(unix, &["put", "via-socket", "1"]).trim(), "OK");
    assert_eq!(lines(&etcdctl_ok(&s.urls[1], &["get", "via-socket"])), ["via-socket", "1"]);
}

#[test]
fn bad_flags_are_reported_clearly() {
    let bin = env!("CARGO_BIN_EXE_skerry");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let run = |args: &[&str]| {
        let out =
            Command::new(bin).arg("etcd").arg("--data-dir").arg(&data).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run(&["--listen-client-urls", "http://example.com:2379"]);
    assert!(err.contains("invalid listen URL"), "{err}");
    let err = run(&[
        "--listen-client-urls",
        "https://127.0.0.1:0",
        "--cert-file",
        "/nonexistent/cert.pem",
        "--key-file",
        "/nonexistent/key.pem",
    ]);
    assert!(err.contains("/nonexistent/cert.pem"), "{err}");
    let err = run(&["--listen-client-urls", "https://127.0.0.1:0"]);
    assert!(err.contains("needs --cert-file"), "{err}");
    // A data dir under a regular file cannot be created.
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let out = Command::new(bin)
        .args(["etcd", "--listen-client-urls", "http://127.0.0.1:0", "--data-dir"])
        .arg(file.join("sub"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("creating data directory"), "{err}");
}
