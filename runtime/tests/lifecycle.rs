//! Container lifecycle on real containers: output, exit codes, env, working dir, stop.

mod common;

use std::time::Duration;

use common::Fixture;
use nix::sys::signal::Signal;
use skerry_runtime::ContainerState;

#[test]
fn output_exit_code_env_and_workdir_reach_the_log_and_status() {
    if !common::privileged() {
        return;
    }
    let fx = Fixture::new("output");
    let pod = fx.sandbox("output");
    let script =
        "echo out; echo err >&2; echo FOO=$FOO; pwd; echo bye > /dev/termination-log; exit 3";
    let mut spec = fx.shell("c1", script);
    spec.env = vec![("FOO".into(), "bar".into())];
    spec.termination_message_path = Some("/dev/termination-log".into());
    spec.working_dir = Some("/tmp".into());
    let id = fx.run(&pod, spec);
    let status = fx.wait(&id);
    assert_eq!(status.exit_code, Some(3));
    assert_eq!(status.reason.as_deref(), Some("Error"));
    assert!(status.started_at.is_some() && status.finished_at.is_some());
    let log = fx.logs(&id);
    for line in ["out\n", "err\n", "FOO=bar\n", "/tmp\n"] {
        assert!(log.contains(line), "missing {line:?} in {log:?}");
    }
    assert_eq!(fx.runtime.termination_message(&id).unwrap().as_deref(), Some("bye\n"));
    let raw = std::fs::read_to_string(&status.log_path).unwrap();
    assert!(raw.lines().any(|l| l.ends_with(" stderr F err")), "{raw}");
}

#[test]
fn graceful_stop_escalates_to_sigkill_for_pid1_ignoring_sigterm() {
    if !common::privileged() {
        return;
    }
    let fx = Fixture::new("stop");
    let pod = fx.sandbox("stop");
    // PID 1 without a handler ignores SIGTERM: only SIGKILL ends it.
    let stubborn = fx.run(&pod, fx.shell("stubborn", "sleep 1000"));
    let polite =
        fx.run(&pod, fx.shell("polite", "trap 'exit 0' TERM; while true; do sleep 0.1; done"));
    for id in [&stubborn, &polite] {
        assert_eq!(fx.runtime.container_status(id).unwrap().state, ContainerState::Running);
    }
    let done = fx.runtime.stop_container(&stubborn, Duration::from_millis(300)).unwrap();
    assert_eq!((done.exit_code, done.state), (Some(137), ContainerState::Exited));
    let done = fx.runtime.stop_container(&polite, Duration::from_secs(30)).unwrap();
    assert_eq!(done.exit_code, Some(0), "{done:?}");
    assert_eq!(done.reason.as_deref(), Some("Completed"));
}

#[test]
fn monitors_come_from_a_zygote_that_is_replaced_when_it_dies() {
    if !common::privileged() {
        return;
    }
    let fx = Fixture::new("zygote");
    let pod = fx.sandbox("zygote");
    let first = fx.run(&pod, fx.shell("first", "echo one; exit 3"));
    assert_eq!(fx.wait(&first).exit_code, Some(3));
    let zygote = fx.runtime.monitor_zygote_pid().expect("the monitor was forked by a zygote");
    // A monitor is detached: a child of neither the zygote nor this process (the "agent").
    let long = fx.run(&pod, fx.shell("long", "sleep 1000"));
    let parent = parent_of(monitor_pid(&fx, &long)).expect("the monitor runs");
    assert!(parent != zygote as i32 && parent != std::process::id() as i32, "{parent}");
    fx.runtime.stop_container(&long, Duration::ZERO).unwrap();

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(zygote as i32), Signal::SIGKILL).unwrap();
    // Dead (a zombie until the runtime reaps it) before the next creation asks it.
    while !is_zombie(zygote as i32) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let second = fx.run(&pod, fx.shell("second", "echo two; exit 4"));
    assert_eq!(fx.wait(&second).exit_code, Some(4));
    assert!(fx.logs(&second).contains("two"));
    let replaced = fx.runtime.monitor_zygote_pid().expect("a new zygote");
    assert_ne!(replaced, zygote);
    fx.runtime.remove_sandbox(&pod).unwrap();
}

/// The monitor pid recorded for a container.
fn monitor_pid(fx: &Fixture, id: &str) -> i32 {
    let path = fx.runtime.state_dir().join("containers").join(id).join("monitor.json");
    let record: skerry_runtime::state::MonitorRecord =
        skerry_runtime::state::read_json(&path).unwrap().unwrap();
    record.monitor_pid
}

/// The parent pid of a live process (`None` once it is gone).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].split(' ').nth(1)?.parse().ok()
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rfind(')').is_some_and(|i| s[i + 2..].starts_with('Z')))
        .unwrap_or(true)
}

#[test]
fn removal_leaves_no_cgroup_mount_or_state_behind() {
    if !common::privileged() {
        return;
    }
    let fx = Fixture::new("cleanup");
    let pod = fx.sandbox("cleanup");
    let id = fx.run(&pod, fx.shell("c", "sleep 1000"));
    let status = fx.runtime.container_status(&id).unwrap();
    let pod_cgroup = fx.runtime.sandbox(&pod).unwrap().cgroup_path;
    assert!(common::cgroup_exists(&status.cgroup_path));
    let sandbox_dir = fx.runtime.state_dir().join("sandboxes").join(&pod);
    assert!(common::mounted_below(&sandbox_dir), "namespaces are held by bind mounts");
    let err = fx.runtime.remove_container(&id, false).unwrap_err();
    assert!(err.to_string().contains("stop it first"), "{err}");
    fx.runtime.remove_sandbox(&pod).unwrap();
    assert!(!common::cgroup_exists(&status.cgroup_path));
    assert!(!common::cgroup_exists(&pod_cgroup));
    assert!(!common::mounted_below(&sandbox_dir));
    assert!(!sandbox_dir.exists());
    assert!(!fx.runtime.state_dir().join("containers").join(&id).exists());
    assert!(fx.runtime.list_containers().is_empty());
}

#[test]
fn clear_errors_for_bad_requests() {
    if !common::privileged() {
        return;
    }
    let fx = Fixture::new("errors");
    let pod = fx.sandbox("errors");
    let mut spec = fx.shell("c", "true");
    spec.rootfs = fx.dir.path().join("nope");
    let err = fx.runtime.create_container(&pod, spec).unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    let id = fx.runtime.create_container(&pod, fx.shell("dup", "true")).unwrap();
    let err = fx.runtime.create_container(&pod, fx.shell("dup", "true")).unwrap_err();
    assert!(err.to_string().contains("already in use"), "{err}");
    let err = fx.runtime.find_container("missing").unwrap_err();
    assert!(err.to_string().contains("no such container"), "{err}");
    let mut spec = fx.shell("nocmd", "true");
    spec.image.entrypoint.clear();
    spec.image.cmd.clear();
    let err = fx.runtime.create_container(&pod, spec).unwrap_err();
    assert!(err.to_string().contains("no command"), "{err}");
    // A created container that is removed with force never runs.
    fx.runtime.remove_container(&id, true).unwrap();
}
