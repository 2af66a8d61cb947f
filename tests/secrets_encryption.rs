//! Secrets encrypted at rest (`skerry server --secrets-encryption`): with an etcd datastore the
//! raw value etcdctl reads is sealed, never the plaintext; kubectl reads and watches the
//! Secret as usual; `skerry secrets-encrypt rotate` plus a restart re-seals every Secret with
//! the new key and keeps them readable. With the embedded SQLite store, the plaintext appears
//! in no file under the data dir; and a cluster that turns encryption on later seals the
//! Secrets it already had.

mod common;

use std::path::Path;
use std::process::Command;

use common::etcd::{etcdctl, etcdctl_ok, SkerryEtcd};
use common::server::{ok, SkerryServer};

const MARKER: &str = "correct-horse-battery-staple";
/// How the API stores the marker (Secret data is base64).
const MARKER_B64: &str = "Y29ycmVjdC1ob3JzZS1iYXR0ZXJ5LXN0YXBsZQ==";

fn create_secret(server: &SkerryServer, kubectl: &Path, name: &str) {
    let literal = format!("--from-literal=password={MARKER}");
    ok(server.kubectl(kubectl, &["create", "secret", "generic", name, &literal]), "create");
}

fn read_secret(server: &SkerryServer, kubectl: &Path, name: &str) -> String {
    let args = ["get", "secret", name, "-o", "jsonpath={.data.password}"];
    ok(server.kubectl(kubectl, &args), "get secret")
}

fn skerry(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_skerry")).args(args).output().unwrap();
    assert!(out.status.success(), "skerry {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn secrets_are_sealed_in_etcd_and_survive_a_key_rotation() {
    let Some(kubectl) = skerry_testkit::kubectl() else { return };
    let etcd = SkerryEtcd::start();
    let endpoint = etcd.endpoint().to_string();
    let mut server =
        SkerryServer::start_with(&["--datastore-endpoint", &endpoint, "--secrets-encryption"]);
    create_secret(&server, &kubectl, "db");
    // Sealed values are binary: read them lossily.
    let raw = || {
        let key = "/registry/secrets/default/db";
        let out = etcdctl(&endpoint, &["get", key, "--print-value-only"]);
        assert!(out.status.success(), "etcdctl get: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let sealed = raw();
    assert!(sealed.starts_with("k8s:enc:aesgcm:v1:key-1:"), "{sealed}");
    assert!(!sealed.contains(MARKER) && !sealed.contains(MARKER_B64), "plaintext in etcd");
    assert_eq!(read_secret(&server, &kubectl, "db"), MARKER_B64);
    // ConfigMaps are not encrypted.
    ok(server.kubectl(&kubectl, &["create", "configmap", "plain", "--from-literal=k=v"]), "cm");
    let cm =
        etcdctl_ok(&endpoint, &["get", "/registry/configmaps/default/plain", "--print-value-only"]);
    assert!(cm.contains("\"k\":\"v\""), "{cm}");

    // Rotation: a new key seals everything from the next start; the Secret stays readable.
    server.kill();
    let data_dir = server.data_dir.to_str().unwrap().to_string();
    let rotated = skerry(&["secrets-encrypt", "rotate", "--data-dir", &data_dir]);
    assert!(rotated.contains("key-2"), "{rotated}");
    let status = skerry(&["secrets-encrypt", "status", "--data-dir", &data_dir]);
    assert!(status.contains("Active Key: key-2") && status.contains("key-1"), "{status}");
    server.restart();
    let resealed = raw();
    assert!(resealed.starts_with("k8s:enc:aesgcm:v1:key-2:"), "{resealed}");
    assert_eq!(read_secret(&server, &kubectl, "db"), MARKER_B64);
    // Written after the rotation, through the watch cache: readable too.
    create_secret(&server, &kubectl, "later");
    let names = ok(server.kubectl(&kubectl, &["get", "secrets", "-o", "name"]), "list");
    assert!(names.contains("secret/db") && names.contains("secret/later"), "{names}");
    assert_eq!(read_secret(&server, &kubectl, "later"), MARKER_B64);
}

/// Whether any file under `dir` contains `needle`.
fn found_under(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            hits.extend(found_under(&path, needle));
        } else if let Ok(bytes) = std::fs::read(&path) {
            if bytes.windows(needle.len()).any(|w| w == needle) {
                hits.push(path.display().to_string());
            }
        }
    }
    hits
}

#[test]
fn turning_encryption_on_seals_existing_secrets_in_the_sqlite_file() {
    let Some(kubectl) = skerry_testkit::kubectl() else { return };
    let mut server = SkerryServer::start();
    create_secret(&server, &kubectl, "before");
    server.kill();
    assert!(
        !found_under(&server.data_dir, MARKER_B64.as_bytes()).is_empty(),
        "without encryption the Secret is stored as is (the check below can fail)"
    );

    // The encrypted server re-seals what was there; the database is then compacted and
    // vacuumed so that no old row version keeps the plaintext.
    server.add_args(&["--secrets-encryption"]);
    server.restart();
    create_secret(&server, &kubectl, "after");
    assert_eq!(read_secret(&server, &kubectl, "before"), MARKER_B64);
    assert_eq!(read_secret(&server, &kubectl, "after"), MARKER_B64);
    server.kill();
    for needle in [MARKER, MARKER_B64] {
        let hits = found_under(&server.data_dir, needle.as_bytes());
        assert!(hits.is_empty(), "plaintext {needle} in {hits:?}");
    }
}
