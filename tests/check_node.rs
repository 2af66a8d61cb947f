//! `skerry check` end to end: the real binary inspects this machine (every required feature is
//! present on the CI machine, so it exits 0 and its JSON names the architecture), and a prepared
//! host tree with the memory controller disabled makes it exit 1 with the fix in the table.

use std::path::Path;
use std::process::{Command, Output};

fn skerry(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_skerry")).args(args).output().expect("running skerry")
}

#[test]
fn check_json_reports_this_node_and_exit_code_follows_ok() {
    let out = skerry(&["check", "--json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("check --json printed no JSON ({e}): {stdout}"));
    for key in ["ok", "arch", "kernel", "cgroup", "clock", "checks"] {
        assert!(report.get(key).is_some(), "no {key:?} in {stdout}");
    }
    assert_eq!(report["arch"]["binary"], std::env::consts::ARCH);
    assert!(report["kernel"]["release"].as_str().is_some_and(|r| !r.is_empty()), "{stdout}");
    assert!(report["clock"]["sane"].as_bool().expect("clock.sane"), "{stdout}");
    let checks = report["checks"].as_array().expect("checks is a list");
    for (group, name) in [
        ("namespace", "net"),
        ("feature", "overlayfs"),
        ("feature", "nf_tables"),
        ("cgroup", "memory"),
        ("clock", "time"),
        ("arch", "cpu"),
    ] {
        assert!(
            checks.iter().any(|c| c["group"] == group && c["name"] == name),
            "no {group}/{name} check in {stdout}"
        );
    }
    let ok = report["ok"].as_bool().expect("ok is a boolean");
    assert_eq!(out.status.success(), ok, "exit status must follow \"ok\": {stdout}");
    if skerry_testkit::require(ok, "a node with every required kernel feature") {
        assert_eq!(out.status.code(), Some(0));
    }
}

fn write(root: &Path, path: &str, text: &str) {
    let path = root.join(path);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

#[test]
fn check_fails_when_the_memory_controller_is_disabled() {
    // Raspberry Pi OS bullseye's default: the memory cgroup is compiled in but disabled at boot.
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(root, "proc/sys/kernel/osrelease", "5.15.84-v7l+\n");
    for ns in ["mnt", "uts", "ipc", "pid", "net", "cgroup", "user"] {
        write(root, &format!("proc/self/ns/{ns}"), "");
    }
    write(root, "proc/filesystems", "nodev\toverlay\n");
    write(
        root,
        "boot/config-5.15.84-v7l+",
        "CONFIG_NF_TABLES=y\nCONFIG_NFT_NAT=y\nCONFIG_NFT_CT=y\nCONFIG_VETH=y\nCONFIG_BRIDGE=y\n",
    );
    write(
        root,
        "proc/self/mountinfo",
        "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n\
         34 31 0:31 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n",
    );
    write(root, "proc/cgroups", "#subsys_name\thierarchy\tnum_cgroups\tenabled\nmemory\t0\t1\t0\n");
    let root_arg = root.to_str().expect("utf-8 temp path");

    let out = skerry(&["check", "--root", root_arg]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{table}");
    assert!(table.contains("cgroup_enable=memory"), "{table}");
    assert!(table.contains("Missing required: memory."), "{table}");

    let out = skerry(&["check", "--json", "--root", root_arg]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["ok"], false);
    assert_eq!(report["cgroup"]["mode"], "legacy");
    assert_eq!(out.status.code(), Some(1));
}
