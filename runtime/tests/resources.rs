//! Resource limits on real cgroups: OOM kills, the pids limit, cpu quota and shares, stats.

mod common;

use std::time::Duration;

use common::Fixture;
use skerry_runtime::{CgroupVersion, ContainerState, QosClass, Resources, SandboxSpec};

#[test]
fn memory_limit_oom_kills_a_hog_with_reason_oomkilled() {
    if !common::privileged() {
        return;
    }
    let fx = Fixture::new("oom");
    let pod = fx.sandbox("oom");
    let mut spec = fx.shell("hog", "");
    // dd's 256 MiB buffer does not fit in 32 MiB: the kernel OOM-kills it (it is PID 1).
    spec.image.entrypoint = vec!["/bin/dd".into()];
    spec.image.cmd =
        vec!["if=/dev/zero".into(), "of=/dev/null".into(), "bs=256M".into(), "count=4".into()];
    spec.resources.memory_limit = Some(32 << 20);
    let id = fx.run(&pod, spec);
    let status = fx.wait(&id);
    assert_eq!(status.reason.as_deref(), Some("OOMKilled"), "{status:?}");
    assert_eq!(status.exit_code, Some(137));
}

#[test]
fn pids_limit_stops_a_fork_bomb() {
    if !common::privileged() {
        return;
    }
    let fx = Fixture::new("pids");
    let pod = fx.sandbox("pids");
    // The bomb runs in a subshell (busy box sh gives up at the first failed fork); PID 1 survives.
    let mut spec = fx.shell(
        "bomb",
        "(for i in $(seq 100); do sleep 600 & done) 2>&1; echo survived; exec sleep 600",
    );
    spec.resources.pids_limit = Some(20);
    let id = fx.run(&pod, spec);
    // Wait until the loop has run.
    for _ in 0..600 {
        if fx.logs(&id).contains("survived") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = fx.logs(&id);
    assert!(log.contains("can't fork"), "forks beyond the limit fail: {log}");
    let status = fx.runtime.container_status(&id).unwrap();
    let pids = fx.runtime.cgroups().pids(&status.cgroup_path);
    assert!(!pids.is_empty() && pids.len() <= 20, "{} processes; {status:?}; {log}", pids.len());
    let stats = fx.runtime.container_stats(&id).unwrap();
    assert!(stats.pids <= 20 && stats.memory_usage_bytes > 0, "{stats:?}");
    fx.runtime.stop_container(&id, Duration::ZERO).unwrap();
}

#[test]
fn cpu_quota_shares_and_pod_limits_are_written_to_the_cgroups() {
    if !common::privileged() {
        return;
    }
    let fx = Fixture::new("cpu");
    let pod_spec = SandboxSpec {
        name: "cpu".into(),
        hostname: "cpu".into(),
        qos: QosClass::Burstable,
        resources: Resources { memory_limit: Some(256 << 20), ..Default::default() }.with_cpus(1.0),
        ..Default::default()
    };
    let pod = fx.runtime.create_sandbox(pod_spec).unwrap();
    let mut spec = fx.shell("busy", "sleep 600");
    spec.resources = Resources { cpu_shares: Some(512), ..Default::default() }.with_cpus(0.5);
    let id = fx.run(&pod, spec);
    let status = fx.runtime.container_status(&id).unwrap();
    assert_eq!(status.state, ContainerState::Running);
    let pod_path = fx.runtime.sandbox(&pod).unwrap().cgroup_path;
    assert!(pod_path.contains("/burstable/pod"), "{pod_path}");
    assert!(status.cgroup_path.starts_with(&pod_path));
    let cg = fx.runtime.cgroups();
    let read =
        |path: &str, controller: &str, file: &str| cg.read_file(path, controller, file).unwrap();
    match cg.version() {
        CgroupVersion::V1 => {
            assert_eq!(read(&status.cgroup_path, "cpu", "cpu.cfs_quota_us"), "50000");
            assert_eq!(read(&status.cgroup_path, "cpu", "cpu.cfs_period_us"), "100000");
            assert_eq!(read(&status.cgroup_path, "cpu", "cpu.shares"), "512");
            assert_eq!(read(&pod_path, "cpu", "cpu.cfs_quota_us"), "100000");
            assert_eq!(
                read(&pod_path, "memory", "memory.limit_in_bytes"),
                (256u64 << 20).to_string()
            );
        }
        CgroupVersion::V2 => {
            assert_eq!(read(&status.cgroup_path, "", "cpu.max"), "50000 100000");
            assert_eq!(read(&status.cgroup_path, "", "cpu.weight"), "20");
            assert_eq!(read(&pod_path, "", "cpu.max"), "100000 100000");
            assert_eq!(read(&pod_path, "", "memory.max"), (256u64 << 20).to_string());
        }
    }
    let stats = fx.runtime.container_stats(&id).unwrap();
    assert!(stats.memory_usage_bytes > 0 && stats.pids >= 1, "{stats:?}");
    // Pod stats are hierarchical: the pod's limit, and its container's process counted.
    let pod_stats = fx.runtime.sandbox_stats(&pod).unwrap();
    assert_eq!(pod_stats.memory_limit_bytes, 256 << 20, "{pod_stats:?}");
    assert!(pod_stats.pids >= 1 && pod_stats.memory_usage_bytes > 0, "{pod_stats:?}");
}
