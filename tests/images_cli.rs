//! `skerry ctr images` end to end: the real binary imports an OCI archive built here with the
//! `tar` CLI, lists, inspects, exports, pulls from a real local `docker-registry` with a
//! registries.yaml, reports clear errors, and removes.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::json;

mod common;

use common::images::{arch, archive_of, busybox_layout};

fn skerry(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_skerry"))
        .args(["ctr", "--data-dir"])
        .arg(data_dir)
        .arg("images")
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn import_ls_inspect_export_rm_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let (layout, digest) = busybox_layout(tmp.path(), "example.com/cli/busybox:1");
    let archive = archive_of(&layout, tmp.path());
    let data = tmp.path().join("data");

    let out = ok(skerry(&data, &["import", archive.to_str().unwrap()]));
    assert!(out.contains("example.com/cli/busybox:1") && out.contains(&digest), "{out}");
    assert!(
        data.join("images/blobs/sha256").join(&digest[7..]).is_file(),
        "store under <data-dir>/images"
    );
    let ls = ok(skerry(&data, &["ls"]));
    assert!(
        ls.contains("example.com/cli/busybox:1") && ls.contains(&format!("linux/{}", arch())),
        "{ls}"
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(skerry(&data, &["inspect", "example.com/cli/busybox:1"])))
            .unwrap();
    assert_eq!(inspect["config"]["cmd"], json!(["/bin/sh"]));
    assert_eq!(inspect["image"]["digest"], json!(digest));

    let exported = tmp.path().join("out.tar");
    ok(skerry(&data, &["export", "example.com/cli/busybox:1", exported.to_str().unwrap()]));
    let data2 = tmp.path().join("data2");
    assert!(ok(skerry(&data2, &["import", exported.to_str().unwrap()])).contains(&digest));

    let missing = skerry(&data, &["inspect", "example.com/nope:1"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found"));
    ok(skerry(&data, &["rm", "example.com/cli/busybox:1"]));
    assert_eq!(ok(skerry(&data, &["ls", "-q"])).trim(), "");
    assert_eq!(std::fs::read_dir(data.join("images/blobs/sha256")).unwrap().count(), 0);
}

struct Registry(std::process::Child);
impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn pull_from_a_local_registry_with_a_registries_yaml() {
    let (Some(registry), Some(skopeo)) = (
        skerry_testkit::require_program(&["/usr/bin/docker-registry"]),
        skerry_testkit::require_program(&["/usr/bin/skopeo"]),
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let port = skerry_testkit::free_port();
    let cfg = tmp.path().join("registry.yml");
    std::fs::write(&cfg, format!("version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n", tmp.path().join("storage").display())).unwrap();
    let _reg = Registry(
        Command::new(registry)
            .arg("serve")
            .arg(&cfg)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let (layout, digest) = busybox_layout(tmp.path(), "v1");
    let push = Command::new(skopeo)
        .args(["--insecure-policy", "copy", "-q", "--preserve-digests", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://127.0.0.1:{port}/cli/busybox:v1"))
        .output()
        .unwrap();
    assert!(push.status.success(), "{}", String::from_utf8_lossy(&push.stderr));

    let yaml = tmp.path().join("registries.yaml");
    std::fs::write(&yaml, format!("configs:\n  \"127.0.0.1:{port}\":\n    plain_http: true\n"))
        .unwrap();
    let data = tmp.path().join("data");
    let reference = format!("127.0.0.1:{port}/cli/busybox:v1");
    let out =
        ok(skerry(&data, &["pull", "-q", "--registry-config", yaml.to_str().unwrap(), &reference]));
    assert_eq!(out.trim(), digest);
    // Two processes (say the agent and an operator's `skerry ctr`) pulling the same image into
    // one store at once: the per-blob file lock makes one wait for the other; both succeed.
    let shared = tmp.path().join("shared-data");
    let pulls: Vec<_> = (0..2)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_skerry"))
                .args(["ctr", "--data-dir"])
                .arg(&shared)
                .args(["images", "pull", "-q", "--registry-config"])
                .arg(&yaml)
                .arg(&reference)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for pull in pulls {
        assert_eq!(ok(pull.wait_with_output().unwrap()).trim(), digest);
    }
    // On a terminal (a pty from `script`), the pull draws a progress bar that reaches every layer.
    if let Some(script) = skerry_testkit::require_program(&["/usr/bin/script"]) {
        let tty_data = tmp.path().join("tty-data");
        let command = format!(
            "{} ctr --data-dir {} images pull --registry-config {} {reference}",
            env!("CARGO_BIN_EXE_skerry"),
            tty_data.display(),
            yaml.display()
        );
        let shown = Command::new(script).args(["-qec", &command, "/dev/null"]).output().unwrap();
        let screen = String::from_utf8_lossy(&shown.stdout);
        assert!(shown.status.success(), "{screen}");
        assert!(screen.contains("[==============================]"), "a full bar: {screen}");
        assert!(screen.contains("layers 1/1"), "{screen}");
    }
    // The wrong platform is a clear error.
    let wrong = skerry(
        &data,
        &[
            "pull",
            "--registry-config",
            yaml.to_str().unwrap(),
            "--platform",
            "linux/riscv64",
            &reference,
        ],
    );
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("no match for platform linux/riscv64"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
}

/// Removes the test's private cgroup root (`kubepods`-like tree) from every v1 hierarchy.
struct CgroupRoot(String);
impl Drop for CgroupRoot {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") else { return };
        for hierarchy in entries.flatten() {
            let root = hierarchy.path().join(&self.0);
            for sub in ["burstable", "besteffort", ""] {
                let _ = std::fs::remove_dir(root.join(sub));
            }
        }
    }
}

// The air-gap path end to end: import an archive, then `skerry ctr run IMAGE` runs a container
// on the image's root filesystem with the image's env, and exits with the container's code.
#[test]
fn an_imported_image_runs_with_ctr_run() {
    if !skerry_testkit::require_root()
        || skerry_testkit::require_program(&["/bin/busybox"]).is_none()
    {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (layout, _) = busybox_layout(tmp.path(), "example.com/run/busybox:1");
    let archive = archive_of(&layout, tmp.path());
    let data = tmp.path().join("data");
    ok(skerry(&data, &["import", archive.to_str().unwrap()]));

    let cgroup_root = CgroupRoot(format!("skerry-images-cli-{}", std::process::id()));
    let run = Command::new(env!("CARGO_BIN_EXE_skerry"))
        .args(["ctr", "--data-dir"])
        .arg(&data)
        .args(["run", "--rm", "example.com/run/busybox:1", "--", "sh", "-c"])
        .arg("echo PATH=$PATH; exit 3")
        .env("SKERRY_CGROUP_ROOT", &cgroup_root.0)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(3), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(String::from_utf8_lossy(&run.stdout), "PATH=/bin\n", "the image's Env applies");
    // `--rm` released the overlay: the image can be removed again.
    ok(skerry(&data, &["rm", "example.com/run/busybox:1"]));
}
