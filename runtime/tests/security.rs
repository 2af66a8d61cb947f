//! Security defaults: no host processes, masked and read-only /proc paths, read-only cgroup
//! mounts, exactly the default capabilities; and the securityContext fields that change them.

mod common;

use common::Fixture;

/// CapEff of containerd's default capability set (the 14 capabilities of Docker's default).
const DEFAULT_CAP_EFF: &str = "00000000a80425fb";

#[test]
fn default_container_is_isolated_masked_and_has_only_default_capabilities() {
    if !common::privileged() {
        return;
    }
    let fx = Fixture::new("security");
    let pod = fx.sandbox("security");
    let script = "\
        echo procs=$(ls -d /proc/[0-9]* | wc -l); \
        grep CapEff /proc/self/status; \
        echo timer_list=$(cat /proc/timer_list | wc -c); \
        touch /proc/acpi/x && echo acpi-writable; \
        echo 1 > /proc/sys/vm/drop_caches && echo procsys-writable; \
        for f in /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max; do \
          [ -e $f ] && { echo cgroup-present; echo max > $f && echo cgroup-writable; }; done; \
        echo x > /sys/kernel/uevent_helper && echo sys-writable; \
        echo done";
    let id = fx.run(&pod, fx.shell("probe", script));
    fx.wait(&id);
    let log = fx.logs(&id);
    assert!(log.contains("done") && log.contains("cgroup-present"), "{log}");
    // ls and the shell (and the pipeline's wc) are the only processes: no host processes.
    let procs: usize = log
        .lines()
        .find_map(|l| l.strip_prefix("procs="))
        .and_then(|n| n.trim().parse().ok())
        .unwrap();
    assert!(procs <= 4, "{log}");
    assert!(log.contains(&format!("CapEff:\t{DEFAULT_CAP_EFF}")), "{log}");
    // The host's /proc/timer_list has content; the masked one reads as empty.
    assert!(std::fs::read_to_string("/proc/timer_list").is_ok_and(|t| !t.is_empty()));
    assert!(log.contains("timer_list=0"), "/proc/timer_list is masked: {log}");
    for forbidden in ["acpi-writable", "procsys-writable", "cgroup-writable", "sys-writable"] {
        assert!(!log.contains(forbidden), "{forbidden}: {log}");
    }
}

#[test]
fn security_context_drops_capabilities_and_runs_as_user() {
    if !common::privileged() {
        return;
    }
    let fx = Fixture::new("secctx");
    let pod = fx.sandbox("secctx");
    let script = "echo uid=$(id -u) gid=$(id -g) groups=$(id -G); grep CapEff /proc/self/status; \
                  touch /x 2>/dev/null || echo ro-root";
    let mut spec = fx.shell("probe", script);
    spec.security.run_as_user = Some(1000);
    spec.security.run_as_group = Some(1000);
    spec.security.supplemental_groups = vec![2000];
    spec.security.capabilities_drop = vec!["ALL".into()];
    spec.security.read_only_root_filesystem = true;
    spec.security.allow_privilege_escalation = Some(false);
    let id = fx.run(&pod, spec);
    fx.wait(&id);
    let log = fx.logs(&id);
    assert!(log.contains("uid=1000 gid=1000 groups=1000 2000\n"), "{log}");
    assert!(log.contains("CapEff:\t0000000000000000"), "{log}");
    assert!(log.contains("ro-root"), "{log}");
}

#[test]
fn runtime_default_seccomp_refuses_blocked_syscalls_even_with_capabilities() {
    if !common::privileged() {
        return;
    }
    let fx = Fixture::new("seccomp");
    let pod = fx.sandbox("seccomp");
    // CAP_SYS_ADMIN would allow mount/unshare; the profile still refuses them.
    let script =
        "mount -t tmpfs none /tmp && echo mounted; unshare -n true && echo unshared; echo done";
    let mut spec = fx.shell("probe", script);
    spec.security.capabilities_add = vec!["SYS_ADMIN".into()];
    let id = fx.run(&pod, spec);
    fx.wait(&id);
    let log = fx.logs(&id);
    assert!(log.contains("done") && !log.contains("mounted") && !log.contains("unshared"), "{log}");
    let mut spec = fx.shell("unconfined", "mount -t tmpfs none /tmp && echo mounted");
    spec.security.capabilities_add = vec!["SYS_ADMIN".into()];
    spec.security.seccomp = skerry_runtime::SeccompProfile::Unconfined;
    let id = fx.run(&pod, spec);
    fx.wait(&id);
    assert!(fx.logs(&id).contains("mounted"), "Unconfined lets CAP_SYS_ADMIN mount");
}

// privileged: every capability of the host's bounding set, nothing masked, and the syscalls
// RuntimeDefault seccomp would refuse (mount) work.
#[test]
fn privileged_container_has_every_capability_and_no_masking() {
    if !common::privileged() {
        return;
    }
    let fx = Fixture::new("privileged");
    let pod = fx.sandbox("privileged");
    let script = "grep CapEff /proc/self/status; echo timer_list=$(cat /proc/timer_list | wc -c); \
                  mkdir -p /mnt/t && mount -t tmpfs none /mnt/t && echo mounted; echo done";
    let mut spec = fx.shell("probe", script);
    spec.security.privileged = true;
    let id = fx.run(&pod, spec);
    assert_eq!(fx.wait(&id).exit_code, Some(0));
    let log = fx.logs(&id);
    let host_bounding = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:\t").map(str::to_string))
        .unwrap();
    assert!(log.contains(&format!("CapEff:\t{host_bounding}")), "{log}");
    assert!(!log.contains("timer_list=0\n"), "nothing masked: {log}");
    assert!(log.contains("mounted"), "{log}");
}
