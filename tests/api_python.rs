//! The official Kubernetes Python client (PyPI `kubernetes`, installed by
//! scripts/install-deps.sh) against the real `skerry server`: tests/python/client_crud.py runs
//! CRUD, selectors, paging, watch from a resourceVersion, 409 on stale updates and patches.

mod common;

use std::process::Command;

use common::server::SkerryServer;

fn python_client_installed() -> bool {
    Command::new("python3")
        .args(["-c", "import kubernetes"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn python_client_crud_selectors_paging_watch_and_conflicts() {
    if !skerry_testkit::require(python_client_installed(), "python3 with the kubernetes client") {
        return;
    }
    // The test counts every ConfigMap in its namespace: no `kube-root-ca.crt` publisher.
    let server = SkerryServer::start_with(&["--disable-controllers", "root-ca-cert-publisher"]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/client_crud.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(&server.kubeconfig)
        .arg(format!("py-{}", std::process::id()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("ALL OK"),
        "{}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
