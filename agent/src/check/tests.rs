//! The self-check against prepared host trees: a healthy node passes, and each kind of missing
//! piece a real board can lack makes the report fail (or warn) with the reason.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::cgroup::CgroupMode;
use super::{inspect, Host, Report, Status};

const HYBRID_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
34 31 0:31 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
35 31 0:32 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
36 31 0:33 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

const UNIFIED_MOUNTINFO: &str = "\
30 23 0:27 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
";

const CONFIG: &str = "CONFIG_OVERLAY_FS=m\nCONFIG_NF_TABLES=y\nCONFIG_NFT_NAT=m\nCONFIG_NFT_CT=m\n\
CONFIG_VETH=m\nCONFIG_BRIDGE=m\nCONFIG_VXLAN=m\nCONFIG_BRIDGE_NETFILTER=m\n";

fn write(root: &Path, path: &str, text: &str) {
    let path = root.join(path);
    fs::create_dir_all(path.parent().expect("test paths have parents")).expect("mkdir");
    fs::write(path, text).expect("write");
}

/// A Raspberry Pi OS–like node: unified cgroups, config in /boot, modules installed.
fn healthy_tree(root: &Path) {
    write(root, "proc/sys/kernel/osrelease", "6.6.51+rpt-rpi-v8\n");
    for ns in ["mnt", "uts", "ipc", "pid", "net", "cgroup", "user"] {
        write(root, &format!("proc/self/ns/{ns}"), "");
    }
    write(root, "proc/self/status", "Name:\tskerry\nSeccomp:\t0\n");
    write(root, "proc/filesystems", "nodev\tsysfs\nnodev\tcgroup2\n\text4\n");
    write(root, "boot/config-6.6.51+rpt-rpi-v8", CONFIG);
    write(
        root,
        "lib/modules/6.6.51+rpt-rpi-v8/modules.dep",
        "kernel/fs/overlayfs/overlay.ko.xz:\nkernel/net/netfilter/nft_nat.ko.xz:\n\
         kernel/net/netfilter/nft_ct.ko.xz:\nkernel/drivers/net/veth.ko.xz:\n\
         kernel/net/bridge/bridge.ko.xz:\nkernel/drivers/net/vxlan/vxlan.ko.xz:\n\
         kernel/net/bridge/br_netfilter.ko.xz:\n",
    );
    write(root, "proc/self/mountinfo", UNIFIED_MOUNTINFO);
    write(root, "sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma\n");
    write(
        root,
        "proc/cgroups",
        "#subsys_name\thierarchy\tnum_cgroups\tenabled\nmemory\t0\t80\t1\n",
    );
}

fn now() -> SystemTime {
    SystemTime::now()
}

fn check<'r>(report: &'r Report, group: &str, name: &str) -> &'r super::Check {
    report
        .checks
        .iter()
        .find(|c| c.group == group && c.name == name)
        .unwrap_or_else(|| panic!("no check {group}/{name} in {:#?}", report.checks))
}

fn host(root: &Path) -> Host {
    Host::at(root).with_machine("aarch64")
}

#[test]
fn a_healthy_node_passes_every_required_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    healthy_tree(dir.path());
    let report = inspect(&host(dir.path()), now());
    let failures: Vec<_> = report.failures().collect();
    assert!(report.ok, "unexpected failures: {failures:#?}");
    assert_eq!(report.cgroup.mode, CgroupMode::Unified);
    assert_eq!(report.cgroup.controllers.get("memory").map(String::as_str), Some("v2"));
    assert_eq!(check(&report, "feature", "nf_tables").status, Status::Ok);
    assert!(check(&report, "feature", "veth").detail.contains("CONFIG_VETH=m"));
    assert!(report.to_table().contains("This node can run the Skerry agent."));
}

#[test]
fn memory_controller_disabled_at_boot_fails_with_the_fix() {
    // Raspberry Pi OS before bookworm disabled the memory controller by default.
    let dir = tempfile::tempdir().expect("tempdir");
    healthy_tree(dir.path());
    write(
        dir.path(),
        "proc/self/mountinfo",
        HYBRID_MOUNTINFO
            .replace(
                "33 31 0:30 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n",
                "",
            )
            .as_str(),
    );
    write(
        dir.path(),
        "proc/cgroups",
        "#subsys_name\thierarchy\tnum_cgroups\tenabled\nmemory\t0\t1\t0\n",
    );
    let report = inspect(&host(dir.path()), now());
    assert_eq!(report.cgroup.mode, CgroupMode::Hybrid);
    let memory = check(&report, "cgroup", "memory");
    assert_eq!(memory.status, Status::Fail);
    assert!(memory.detail.contains("cgroup_enable=memory"), "{}", memory.detail);
    assert!(!report.ok);
    assert!(report.to_table().contains("Missing required: memory."));
}

#[test]
fn hybrid_hosts_use_v1_controllers() {
    let dir = tempfile::tempdir().expect("tempdir");
    healthy_tree(dir.path());
    write(dir.path(), "proc/self/mountinfo", HYBRID_MOUNTINFO);
    let report = inspect(&host(dir.path()), now());
    assert_eq!(report.cgroup.mode, CgroupMode::Hybrid);
    assert_eq!(report.cgroup.controllers.get("io").map(String::as_str), Some("v1"));
    assert!(report.ok);
}

#[test]
fn a_kernel_without_nf_tables_or_overlay_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    healthy_tree(dir.path());
    write(dir.path(), "boot/config-6.6.51+rpt-rpi-v8", &CONFIG.replace("CONFIG_NF_TABLES=y\n", ""));
    // Configured as a module, but the module file was never installed.
    let dep = "lib/modules/6.6.51+rpt-rpi-v8/modules.dep";
    let listed = fs::read_to_string(dir.path().join(dep)).expect("read");
    write(dir.path(), dep, &listed.replace("kernel/fs/overlayfs/overlay.ko.xz:\n", ""));
    let report = inspect(&host(dir.path()), now());
    assert_eq!(check(&report, "feature", "nf_tables").status, Status::Fail);
    let overlay = check(&report, "feature", "overlayfs");
    assert_eq!(overlay.status, Status::Fail);
    assert!(overlay.detail.contains("not installed"), "{}", overlay.detail);
    assert!(!report.ok);
}

#[test]
fn missing_optional_features_only_warn() {
    let dir = tempfile::tempdir().expect("tempdir");
    healthy_tree(dir.path());
    write(dir.path(), "boot/config-6.6.51+rpt-rpi-v8", &CONFIG.replace("CONFIG_VXLAN=m\n", ""));
    fs::remove_file(dir.path().join("proc/self/ns/user")).expect("rm");
    let report = inspect(&host(dir.path()), now());
    assert_eq!(check(&report, "feature", "vxlan").status, Status::Warn);
    assert_eq!(check(&report, "namespace", "user").status, Status::Warn);
    assert!(report.ok);
}

#[test]
fn missing_namespaces_old_kernels_and_no_cgroups_fail() {
    let dir = tempfile::tempdir().expect("tempdir");
    healthy_tree(dir.path());
    fs::remove_file(dir.path().join("proc/self/ns/pid")).expect("rm");
    write(dir.path(), "proc/sys/kernel/osrelease", "4.4.0\n");
    write(dir.path(), "proc/self/mountinfo", "");
    let report = inspect(&host(dir.path()), now());
    assert_eq!(check(&report, "namespace", "pid").status, Status::Fail);
    assert_eq!(check(&report, "kernel", "release").status, Status::Fail);
    assert_eq!(check(&report, "cgroup", "version").status, Status::Fail);
}

#[test]
fn a_build_without_seccomp_warns_that_profiles_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    healthy_tree(dir.path());
    let with = super::seccomp_check(&host(dir.path()), true);
    assert_eq!(with.status, Status::Ok);
    let without = super::seccomp_check(&host(dir.path()), false);
    assert_eq!(without.status, Status::Warn);
    assert!(!without.required);
    assert!(without.detail.contains("no seccomp support"), "{}", without.detail);
}

#[test]
fn a_clock_in_1970_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    healthy_tree(dir.path());
    let report = inspect(&host(dir.path()), UNIX_EPOCH + Duration::from_secs(3600));
    let clock = check(&report, "clock", "time");
    assert_eq!(clock.status, Status::Fail);
    assert!(clock.detail.contains("1970"), "{}", clock.detail);
    assert!(!report.ok);
}

#[test]
fn no_evidence_is_a_warning_not_a_pass() {
    let dir = tempfile::tempdir().expect("tempdir");
    healthy_tree(dir.path());
    fs::remove_file(dir.path().join("boot/config-6.6.51+rpt-rpi-v8")).expect("rm");
    fs::remove_dir_all(dir.path().join("lib/modules")).expect("rm");
    let report = inspect(&host(dir.path()), now());
    assert_eq!(check(&report, "feature", "veth").status, Status::Warn);
    assert!(report.kernel.config.is_none());
}

#[test]
fn json_has_the_documented_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    healthy_tree(dir.path());
    let json = inspect(&host(dir.path()), now()).to_json().expect("json");
    let value: serde_json::Value = serde_json::from_str(&json).expect("parse");
    for key in ["ok", "arch", "kernel", "cgroup", "clock", "checks"] {
        assert!(value.get(key).is_some(), "no {key} in {json}");
    }
    assert_eq!(value["arch"]["machine"], "aarch64");
    assert_eq!(value["cgroup"]["mode"], "unified");
}
