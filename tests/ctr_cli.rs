//! `skerry ctr` with the real binary and real containers: exit codes, output, exec, logs,
//! stop/rm/inspect, clear errors, and containers that outlive a killed `skerry ctr run`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// A data dir, a busybox rootfs and a private cgroup root; removes every container on drop.
struct Ctr {
    dir: tempfile::TempDir,
    cgroup_root: String,
}

impl Ctr {
    fn new(test: &str) -> Option<Ctr> {
        if !skerry_testkit::require_root()
            || skerry_testkit::require_program(&["/bin/busybox"]).is_none()
        {
            return None;
        }
        let dir = tempfile::Builder::new().prefix("skerry-ctr-").tempdir().unwrap();
        let root = dir.path().join("rootfs");
        for sub in ["bin", "etc", "proc", "sys", "dev", "tmp"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
        let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
        for applet in String::from_utf8(list.stdout).unwrap().lines().filter(|a| *a != "busybox") {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        Some(Ctr { dir, cgroup_root: format!("skerry-ctr-{test}-{}", std::process::id()) })
    }

    fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_skerry"));
        cmd.arg("ctr")
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(args)
            .env("SKERRY_CGROUP_ROOT", &self.cgroup_root)
            .stdin(Stdio::null());
        cmd
    }

    fn ctr(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// `ctr inspect NAME` as JSON.
    fn inspect(&self, name: &str) -> serde_json::Value {
        let out = self.ctr(&["inspect", name]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Polls `inspect` until the container exists in state `state` (bounded).
    fn wait_state(&self, name: &str, state: &str) -> serde_json::Value {
        for _ in 0..600 {
            let out = self.ctr(&["inspect", name]);
            if out.status.success() {
                let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                if doc["container"]["state"] == state {
                    return doc;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{name} never reached {state}: {}", text(&self.ctr(&["inspect", name]).stderr));
    }
}

impl Drop for Ctr {
    fn drop(&mut self) {
        let ps = self.ctr(&["ps"]);
        for line in String::from_utf8_lossy(&ps.stdout).lines().skip(1) {
            if let Some(id) = line.split_whitespace().next() {
                let _ = self.ctr(&["rm", "-f", id]);
            }
        }
        if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in entries.flatten() {
                let root = h.path().join(&self.cgroup_root);
                for sub in ["burstable", "besteffort", ""] {
                    let _ = std::fs::remove_dir(root.join(sub));
                }
            }
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn ctr_run_prints_output_and_exits_with_the_container_code() {
    let Some(ctr) = Ctr::new("run") else { return };
    let rootfs = ctr.rootfs();
    let script = "echo out; echo err >&2; echo FOO=$FOO; exit 4";
    let out = ctr.ctr(&[
        "run",
        "--rm",
        "--rootfs",
        path(&rootfs),
        "-e",
        "FOO=bar",
        "--",
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "out\nFOO=bar\n");
    assert!(text(&out.stderr).contains("err"));
    let ps = ctr.ctr(&["ps"]);
    assert_eq!(text(&ps.stdout).lines().count(), 1, "--rm removed it: {}", text(&ps.stdout));
}

#[test]
fn ctr_detached_container_takes_exec_logs_stop_inspect_and_rm() {
    let Some(ctr) = Ctr::new("detached") else { return };
    let rootfs = ctr.rootfs();
    let out = ctr.ctr(&[
        "run",
        "-d",
        "--name",
        "web",
        "--memory",
        "67108864",
        "--cpus",
        "0.5",
        "--rootfs",
        path(&rootfs),
        "--",
        "sh",
        "-c",
        "echo started; sleep 600",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc = ctr.wait_state("web", "running");
    assert_eq!(doc["container"]["spec"]["resources"]["cpu_quota"], 50_000);

    let exec = ctr.ctr(&["exec", "web", "--", "sh", "-c", "exit 9"]);
    assert_eq!(exec.status.code(), Some(9));
    let mut cat = ctr
        .command(&["exec", "-i", "web", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut cat.stdin.take().unwrap(), b"through stdin\n").unwrap();
    let cat = cat.wait_with_output().unwrap();
    assert_eq!((cat.status.code(), text(&cat.stdout).as_str()), (Some(0), "through stdin\n"));

    for _ in 0..200 {
        if text(&ctr.ctr(&["logs", "web"]).stdout).contains("started") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(text(&ctr.ctr(&["logs", "--tail", "1", "web"]).stdout), "started\n");

    assert!(ctr.ctr(&["stop", "--time", "1", "web"]).status.success());
    let doc = ctr.inspect("web");
    assert_eq!(
        (doc["container"]["state"].as_str(), doc["container"]["exit_code"].as_i64()),
        (Some("exited"), Some(137))
    );
    assert!(ctr.ctr(&["rm", "web"]).status.success());
    let gone = ctr.ctr(&["inspect", "web"]);
    assert!(!gone.status.success() && text(&gone.stderr).contains("no such container: web"));
}

#[test]
fn ctr_errors_name_the_problem() {
    let Some(ctr) = Ctr::new("errors") else { return };
    let rootfs = ctr.rootfs();
    let missing = ctr.ctr(&["run", "--rootfs", "/nonexistent-rootfs", "--", "true"]);
    assert!(!missing.status.success());
    assert!(
        text(&missing.stderr).contains("rootfs /nonexistent-rootfs does not exist"),
        "{}",
        text(&missing.stderr)
    );
    let unknown = ctr.ctr(&["logs", "nope"]);
    assert!(!unknown.status.success() && text(&unknown.stderr).contains("no such container: nope"));
    let first =
        ctr.ctr(&["run", "-d", "--name", "dup", "--rootfs", path(&rootfs), "--", "sleep", "600"]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let second = ctr.ctr(&["run", "-d", "--name", "dup", "--rootfs", path(&rootfs), "--", "true"]);
    assert!(
        !second.status.success() && text(&second.stderr).contains("already in use"),
        "{}",
        text(&second.stderr)
    );
    let running = ctr.ctr(&["rm", "dup"]);
    assert!(!running.status.success() && text(&running.stderr).contains("stop it first"));
    assert!(ctr.ctr(&["rm", "-f", "dup"]).status.success());
}

#[test]
fn ctr_containers_outlive_a_killed_cli_and_keep_their_exit_code() {
    let Some(ctr) = Ctr::new("survive") else { return };
    let rootfs = ctr.rootfs();
    let script = "while [ ! -e /tmp/go ]; do sleep 0.05; done; exit 7";
    let mut fg = ctr
        .command(&["run", "--name", "fg", "--rootfs", path(&rootfs), "--", "sh", "-c", script])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let running = ctr.wait_state("fg", "running");
    fg.kill().unwrap(); // SIGKILL the managing process
    fg.wait().unwrap();
    let pid = running["container"]["pid"].as_i64().unwrap();
    // A new process sees the same container, still running with the same pid.
    let doc = ctr.inspect("fg");
    assert_eq!(
        (doc["container"]["state"].as_str(), doc["container"]["pid"].as_i64()),
        (Some("running"), Some(pid))
    );
    // It exits while no `ctr run` watches it; its real exit code is kept.
    assert!(ctr.ctr(&["exec", "fg", "--", "touch", "/tmp/go"]).status.success());
    let done = ctr.wait_state("fg", "exited");
    assert_eq!(done["container"]["exit_code"], 7);
    assert_eq!(done["container"]["reason"], "Error");
}
