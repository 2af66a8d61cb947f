//! A test node's surroundings, for anything that runs a real agent (tests and the pod-startup
//! benchmark): a network namespace of its own and the cleanup of its cgroup root.

use std::path::Path;
use std::process::Command;

/// The node address the test namespace's uplink carries.
pub const NODE_IP: &str = "192.168.231.1";

/// Unshares a network namespace for the calling thread and sets it up: `lo` up, a veth
/// `uplink` with [`NODE_IP`]/24 and a default route through it. Every process and thread the
/// caller starts afterwards lives there, so an agent's bridge, routes, nftables tables and DNS
/// address never touch the host's.
pub fn enter_test_netns() {
    // SAFETY: unshare has no memory-safety preconditions; it affects only this thread.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
    for args in [
        vec!["link", "set", "lo", "up"],
        // A veth pair, not a dummy: kernels without the dummy module (this VM's) have veth.
        vec!["link", "add", "uplink", "type", "veth", "peer", "name", "uplink-peer"],
        vec!["addr", "add", &format!("{NODE_IP}/24"), "dev", "uplink"],
        vec!["link", "set", "uplink-peer", "up"],
        vec!["link", "set", "uplink", "up"],
        vec!["route", "add", "default", "dev", "uplink"],
    ] {
        let out = Command::new("ip").args(&args).output().expect("running ip");
        assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Removes the (emptied) QoS cgroups of an agent's cgroup root in every hierarchy.
pub fn remove_cgroup_root(cgroup_root: &str) {
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        for h in entries.flatten() {
            let root = h.path().join(cgroup_root);
            for sub in ["burstable", "besteffort", ""] {
                let _ = std::fs::remove_dir(root.join(sub));
            }
        }
    }
    let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(cgroup_root));
}
