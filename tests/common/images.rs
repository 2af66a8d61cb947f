//! Test images built here, from Debian's busybox-static: a root filesystem with every applet
//! linked, the same as an OCI image layout and as an archive `skerry ctr images import` reads.
//! Nothing is pulled from the internet.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    format!("sha256:{}", text.split_whitespace().next().unwrap())
}

/// Stores `path` as a blob of the layout; returns its descriptor.
fn add_blob(layout: &Path, path: &Path, media_type: &str) -> serde_json::Value {
    let digest = sha256(path);
    let size = std::fs::metadata(path).unwrap().len();
    std::fs::copy(path, layout.join("blobs/sha256").join(&digest[7..])).unwrap();
    json!({"mediaType": media_type, "digest": digest, "size": size})
}

/// The Go-style name of this machine's architecture.
pub fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// `<dir>/rootfs`: busybox with all its applets linked in /bin, and the usual mount points.
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for sub in ["bin", "etc", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines().filter(|a| *a != "busybox") {
        let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
    }
    root
}

/// An OCI layout with a busybox rootfs, tagged `tag`; returns (layout dir, manifest digest).
pub fn busybox_layout(tmp: &Path, tag: &str) -> (PathBuf, String) {
    let rootfs = busybox_rootfs(tmp);
    let layer = tmp.join("layer.tar");
    assert!(Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&layer)
        .arg(".")
        .status()
        .unwrap()
        .success());
    let layout = tmp.join("layout");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let layer_desc = add_blob(&layout, &layer, "application/vnd.oci.image.layer.v1.tar");
    let config = json!({"architecture": arch(), "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]}});
    let config_path = tmp.join("config.json");
    std::fs::write(&config_path, serde_json::to_vec(&config).unwrap()).unwrap();
    let config_desc = add_blob(&layout, &config_path, "application/vnd.oci.image.config.v1+json");
    let manifest = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc, "layers": [layer_desc]});
    let manifest_path = tmp.join("manifest.json");
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let mut desc = add_blob(&layout, &manifest_path, "application/vnd.oci.image.manifest.v1+json");
    desc["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [desc]})).unwrap(),
    )
    .unwrap();
    let digest = sha256(&manifest_path);
    (layout, digest)
}

/// `<tmp>/image.tar`: the OCI layout as a plain tar archive.
pub fn archive_of(layout: &Path, tmp: &Path) -> PathBuf {
    let archive = tmp.join("image.tar");
    let status =
        Command::new("tar").arg("-C").arg(layout).arg("-cf").arg(&archive).arg(".").status();
    assert!(status.unwrap().success());
    archive
}
