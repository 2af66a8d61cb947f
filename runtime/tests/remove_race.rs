//! Removal racing the monitor's own cleanup: a container removed right after it started (its
//! process exiting at the same moment) or right after its exit was recorded (its monitor still
//! deleting libcontainer's state and the cgroup) must be removed without an error, and nothing
//! may be left behind once its monitor is gone: no state dir, no cgroup. Repeated many times,
//! because each cycle hits the window at a different point.

mod common;

use std::time::{Duration, Instant};

use common::Fixture;
use skerry_runtime::state::MonitorRecord;

const CYCLES: usize = 200;

#[test]
fn remove_right_after_start_or_exit_never_fails_or_leaks() {
    if !common::privileged() {
        return;
    }
    let fx = Fixture::new("rmrace");
    let pod = fx.sandbox("rmrace");
    let containers = fx.runtime.state_dir().join("containers");
    let mut failures = Vec::new();
    let mut cgroups = Vec::new();
    let mut monitors = Vec::new();
    for i in 0..CYCLES {
        let id = fx.run(&pod, fx.shell(&format!("c{i}"), "true"));
        let status = fx.runtime.container_status(&id).unwrap();
        cgroups.push(status.cgroup_path);
        let record: Option<MonitorRecord> =
            skerry_runtime::state::read_json(&containers.join(&id).join("monitor.json")).unwrap();
        monitors.push(record.expect("a started container has a monitor record").monitor_pid);
        // Even cycles: remove while the process is exiting; odd: as soon as the exit is seen,
        // while the monitor cleans up after it.
        let result = if i % 2 == 0 {
            fx.runtime.remove_container(&id, true)
        } else {
            fx.runtime.wait_container(&id, Some(Duration::from_secs(30))).unwrap();
            fx.runtime.remove_container(&id, false)
        };
        if let Err(err) = result {
            failures.push(format!("cycle {i}: {err}"));
        } else if containers.join(&id).exists() || fx.runtime.container_status(&id).is_ok() {
            failures.push(format!("cycle {i}: still there after its removal"));
        }
    }
    // Whatever a monitor still does once removal returned must not leave anything behind.
    for pid in monitors {
        wait_gone(pid);
    }
    fx.runtime.flush_removals();
    let removed = fx.runtime.state_dir().join("removed");
    let left: Vec<_> = std::fs::read_dir(&containers)
        .unwrap()
        .chain(std::fs::read_dir(&removed).unwrap())
        .flatten()
        .map(|e| e.path())
        .collect();
    let cgroups_left: Vec<_> = cgroups.iter().filter(|c| common::cgroup_exists(c)).collect();
    assert!(
        failures.is_empty() && left.is_empty() && cgroups_left.is_empty(),
        "{} failed removals: {failures:#?}\n{} container dirs left: {left:?}\n\
         {} cgroups left: {cgroups_left:?}",
        failures.len(),
        left.len(),
        cgroups_left.len(),
    );
}

/// Waits (bounded) until a process has exited; monitors are not our children, so their end is
/// seen in /proc.
fn wait_gone(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
        let gone = stat.map_or(true, |s| s.rfind(')').is_some_and(|i| s[i + 2..].starts_with('Z')));
        if gone {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("monitor {pid} did not exit");
}

#[test]
fn removed_files_left_by_a_crash_are_deleted_at_open() {
    if !common::privileged() {
        return;
    }
    let fx = Fixture::new("rmtrash");
    // A removal whose background deletion a crash cut short leaves its dir in the trash.
    let trashed = fx.runtime.state_dir().join("removed/0123456789abcdef");
    std::fs::create_dir_all(trashed.join("bundle")).unwrap();
    std::fs::write(trashed.join("bundle/config.json"), "{}").unwrap();
    let report = fx.reopen().garbage_collect().unwrap();
    assert!(!trashed.exists());
    // `open` collected it already; a second collection finds nothing.
    assert!(report.is_empty(), "{report:?}");
}
