//! Helpers shared by the test suites of every crate (a dev-dependency only).
//!
//! The one rule they implement: a test that needs root or a kernel feature checks up front and
//! skips with a reason, unless `SKERRY_REQUIRE_PRIVILEGED=1` (set by `.ci/run`), in which case a
//! missing capability fails the test instead.

mod node;

pub use node::{enter_test_netns, remove_cgroup_root, NODE_IP};

use std::net::TcpListener;
use std::path::{Path, PathBuf};

/// True when `SKERRY_REQUIRE_PRIVILEGED=1`: missing capabilities are failures, not skips.
pub fn privileged_required() -> bool {
    std::env::var("SKERRY_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1")
}

/// Whether the test may go on: `available` says if the capability is there, `what` names it.
/// Returns false (after printing why) to skip; panics when skipping is not allowed.
pub fn require(available: bool, what: &str) -> bool {
    if available {
        return true;
    }
    if privileged_required() {
        panic!("SKERRY_REQUIRE_PRIVILEGED=1 but this test needs {what}");
    }
    eprintln!("SKIPPED: this test needs {what}");
    false
}

/// Running as root (effective uid 0)?
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `require(is_root(), "root")`.
pub fn require_root() -> bool {
    require(is_root(), "root")
}

/// The first of `candidates` that exists as a file.
pub fn find_program(candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().map(Path::new).find(|p| p.is_file()).map(Path::to_path_buf)
}

/// A program the test needs, or a skip (or failure under `SKERRY_REQUIRE_PRIVILEGED=1`).
pub fn require_program(candidates: &[&str]) -> Option<PathBuf> {
    let found = find_program(candidates);
    let what = format!("one of {candidates:?} installed (scripts/install-deps.sh)");
    require(found.is_some(), &what).then_some(found).flatten()
}

/// kubectl 1.32, the client version the acceptance tests target.
pub fn kubectl() -> Option<PathBuf> {
    require_program(&["/usr/lib/google-cloud-sdk/bin/kubectl.1.32", "/usr/bin/kubectl.1.32"])
}

/// A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral port on 127.0.0.1")
}
