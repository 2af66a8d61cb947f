//! Shared fixture of the runtime's integration tests: a busybox root filesystem (Debian's
//! busybox-static), a `Runtime` with a private state dir and a private cgroup root, and a guard
//! that removes everything (sandboxes, containers, cgroups) even when the test fails.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use skerry_runtime::{
    ContainerSpec, ContainerStatus, ImageConfig, LogReadOptions, LoopbackOnly, MonitorCommand,
    Runtime, RuntimeConfig, SandboxSpec,
};

/// The monitor program built with this crate.
pub fn monitor_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_skerry-runtime-monitor"))
}

/// A root filesystem with busybox and its applet links.
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for sub in ["bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "root"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    let list = std::process::Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
        }
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    root
}

/// Whether this test may run (root, busybox), skipping with a reason otherwise.
pub fn privileged() -> bool {
    skerry_testkit::require_root() && skerry_testkit::require_program(&["/bin/busybox"]).is_some()
}

/// A runtime in a temp dir with its own cgroup root; cleans up on drop.
pub struct Fixture {
    pub runtime: Runtime,
    pub rootfs: PathBuf,
    pub dir: tempfile::TempDir,
    pub cgroup_root: String,
}

impl Fixture {
    /// A fixture named after the test (names the cgroup root).
    pub fn new(test: &str) -> Fixture {
        let dir = tempfile::Builder::new().prefix("skerry-rt-").tempdir().unwrap();
        let rootfs = busybox_rootfs(dir.path());
        let cgroup_root = format!("skerry-test-{test}-{}", std::process::id());
        let runtime = Runtime::open(Fixture::config(dir.path(), &cgroup_root)).unwrap();
        Fixture { runtime, rootfs, dir, cgroup_root }
    }

    /// The config of this fixture's runtime (to open a second one on the same state).
    pub fn config(dir: &Path, cgroup_root: &str) -> RuntimeConfig {
        RuntimeConfig {
            state_dir: dir.join("state"),
            monitor: MonitorCommand { exe: monitor_exe(), args: Vec::new() },
            cgroup_root: cgroup_root.to_string(),
            network: Arc::new(LoopbackOnly),
        }
    }

    /// Reopens the runtime on the same state dir (as a restarted agent would).
    pub fn reopen(&self) -> Runtime {
        Runtime::open(Fixture::config(self.dir.path(), &self.cgroup_root)).unwrap()
    }

    /// A sandbox with default settings.
    pub fn sandbox(&self, name: &str) -> String {
        let spec = SandboxSpec { name: name.into(), hostname: name.into(), ..Default::default() };
        self.runtime.create_sandbox(spec).unwrap()
    }

    /// A container spec running `sh -c SCRIPT` in the busybox rootfs.
    pub fn shell(&self, name: &str, script: &str) -> ContainerSpec {
        ContainerSpec {
            name: name.into(),
            rootfs: self.rootfs.clone(),
            image: ImageConfig {
                entrypoint: vec!["/bin/sh".into(), "-c".into()],
                cmd: vec![script.into()],
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// Creates and starts a container, returning its id.
    pub fn run(&self, sandbox: &str, spec: ContainerSpec) -> String {
        let id = self.runtime.create_container(sandbox, spec).unwrap();
        self.runtime.start_container(&id).unwrap();
        id
    }

    /// Waits (bounded) for a container to exit.
    pub fn wait(&self, id: &str) -> ContainerStatus {
        let status = self.runtime.wait_container(id, Some(Duration::from_secs(60))).unwrap();
        assert_eq!(status.state, skerry_runtime::ContainerState::Exited, "{status:?}");
        status
    }

    /// The container's whole log as text (stdout and stderr interleaved).
    pub fn logs(&self, id: &str) -> String {
        let mut out = Vec::new();
        self.runtime
            .read_logs(id, &LogReadOptions::default(), |e| {
                out.extend(e.render(false));
                Ok(())
            })
            .unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for sandbox in self.runtime.list_sandboxes() {
            if let Err(err) = self.runtime.remove_sandbox(&sandbox.id) {
                eprintln!("cleanup: sandbox {}: {err}", sandbox.id);
            }
        }
        for container in self.runtime.list_containers() {
            let _ = self.runtime.remove_container(&container.id, true);
        }
        self.runtime.cgroups().remove_root_if_empty();
    }
}

/// Reads a file in every cgroup v1 hierarchy or v2 and says whether `path` exists anywhere.
pub fn cgroup_exists(path: &str) -> bool {
    let rel = path.trim_start_matches('/');
    let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") else { return false };
    Path::new("/sys/fs/cgroup").join(rel).exists()
        || entries.flatten().any(|e| e.path().join(rel).exists())
}

/// Whether anything is mounted at or below `path`.
pub fn mounted_below(path: &Path) -> bool {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let prefix = path.display().to_string();
    mountinfo.lines().any(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&prefix)))
}
