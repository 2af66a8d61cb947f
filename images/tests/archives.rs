//! Air-gapped import and export: OCI archives and `docker save` archives (plain and gzip),
//! built by the test, imported into a store, exported again, and read back.

mod common;

use std::io::Write;
use std::path::Path;

use common::*;
use serde_json::json;
use skerry_images::{ImageError, ImageStore, Platform};

fn store(dir: &Path) -> ImageStore {
    ImageStore::open(dir.join("store"), Platform::parse(&format!("linux/{}", host_arch())).unwrap())
        .unwrap()
}

fn busybox_oci_archive(tmp: &Path, name: &str) -> (std::path::PathBuf, String) {
    let mut layout = Layout::new(&tmp.join("layout"));
    let m = layout.image(&ImageSpec {
        arch: host_arch(),
        variant: None,
        layers: vec![busybox_layer("oci"), tar_of(&[Entry::File("etc/extra", b"2", 0o644)])],
        gzip: true,
        cmd: vec!["/bin/sh", "-c", "echo hi"],
    });
    layout.tag_manifest(&m, name);
    let path = tmp.join("image.oci.tar");
    layout.archive(&path);
    (path, digest(&m))
}

#[tokio::test]
async fn oci_archive_imports_with_its_name_and_exports_back() {
    let tmp = tempfile::tempdir().unwrap();
    let (archive, d) = busybox_oci_archive(tmp.path(), "example.com/tools/busybox:1.36");
    let s = store(tmp.path());
    let imported = s.import(&archive).await.unwrap();
    assert_eq!(imported.len(), 1);
    assert_eq!(imported[0].name, "example.com/tools/busybox:1.36");
    assert_eq!(imported[0].digest, d);
    let cfg = s.inspect("example.com/tools/busybox:1.36").unwrap().config;
    assert_eq!(cfg.cmd, vec!["/bin/sh", "-c", "echo hi"]);
    let snap = s.root().join("snapshots").join(&imported[0].layers[0].digest[7..]);
    assert!(snap.join("bin/busybox").is_file());

    // Export, then import into an empty store: same image.
    let out = tmp.path().join("export.tar");
    s.export("example.com/tools/busybox:1.36", &out).await.unwrap();
    let s2 = store(&tmp.path().join("second"));
    let again = s2.import(&out).await.unwrap();
    assert_eq!(
        (again[0].name.as_str(), again[0].digest.as_str()),
        (imported[0].name.as_str(), d.as_str())
    );
    // A peer tool reads the export as an OCI archive.
    if let Some(skopeo) = skerry_testkit::find_program(&["/usr/bin/skopeo"]) {
        let out = std::process::Command::new(skopeo)
            .args(["inspect", "--raw"])
            .arg(format!("oci-archive:{}", out.display()))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(digest(&out.stdout), d);
    }
}

#[tokio::test]
async fn a_bare_tag_names_the_image_after_the_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let (archive, _) = busybox_oci_archive(tmp.path(), "v2");
    let imported = store(tmp.path()).import(&archive).await.unwrap();
    assert_eq!(imported[0].name, "localhost/image:v2");
}

fn docker_save_archive(tmp: &Path, compress: bool) -> std::path::PathBuf {
    let dir = tmp.join("save");
    std::fs::create_dir_all(dir.join("abc")).unwrap();
    let layer = busybox_layer("docker");
    std::fs::write(dir.join("abc/layer.tar"), &layer).unwrap();
    let config = serde_json::to_vec(&json!({
        "architecture": host_arch(), "os": "linux",
        "config": {"Entrypoint": ["/bin/cat"], "Cmd": ["/etc/marker"], "User": "0"},
        "rootfs": {"type": "layers", "diff_ids": [digest(&layer)]},
    }))
    .unwrap();
    let config_name = format!("{}.json", &digest(&config)[7..]);
    std::fs::write(dir.join(&config_name), &config).unwrap();
    let manifest = json!([{"Config": config_name, "RepoTags": ["busybox:saved", "reg.local/b:1"], "Layers": ["abc/layer.tar"]}]);
    std::fs::write(dir.join("manifest.json"), serde_json::to_vec(&manifest).unwrap()).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    b.append_dir_all(".", &dir).unwrap();
    let tar = b.into_inner().unwrap();
    let path = tmp.join(if compress { "saved.tar.gz" } else { "saved.tar" });
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(&if compress { gzip(&tar) } else { tar }).unwrap();
    path
}

#[tokio::test]
async fn docker_save_archives_import_plain_and_gzip() {
    for compress in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let archive = docker_save_archive(tmp.path(), compress);
        let s = store(tmp.path());
        let imported = s.import(&archive).await.unwrap();
        let names: Vec<_> = imported.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, vec!["docker.io/library/busybox:saved", "reg.local/b:1"]);
        let cfg = s.inspect("busybox:saved").unwrap().config;
        assert_eq!(
            (cfg.entrypoint, cfg.cmd),
            (vec!["/bin/cat".to_string()], vec!["/etc/marker".to_string()])
        );
        let snap = s.root().join("snapshots").join(&imported[0].layers[0].digest[7..]);
        assert_eq!(std::fs::read_to_string(snap.join("etc/marker")).unwrap(), "docker");
    }
}

#[tokio::test]
async fn import_dir_imports_good_archives_and_reports_bad_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("agent-images");
    std::fs::create_dir_all(&dir).unwrap();
    let (archive, _) = busybox_oci_archive(tmp.path(), "example.com/a:1");
    std::fs::rename(&archive, dir.join("a.tar")).unwrap();
    std::fs::write(dir.join("b.tar"), b"not an archive at all").unwrap();
    let s = store(tmp.path());
    let results = s.import_dir(&dir).await.unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].1.as_ref().unwrap()[0].name, "example.com/a:1");
    assert!(results[1].1.is_err());
    assert_eq!(s.list().unwrap().len(), 1);
    assert!(s.import_dir(&tmp.path().join("missing")).await.unwrap().is_empty());

    // At the next start the unchanged archive is not unpacked again (its blobs are not even
    // re-read), but an image removed meanwhile is imported again.
    let blob_dir = s.root().join("blobs/sha256");
    let layer = &results[0].1.as_ref().unwrap()[0].layers[0].digest[7..];
    std::fs::write(blob_dir.join(layer), b"marker: not re-imported").unwrap();
    let again = s.import_dir(&dir).await.unwrap();
    assert_eq!(again[0].1.as_ref().unwrap()[0].name, "example.com/a:1");
    assert_eq!(std::fs::read(blob_dir.join(layer)).unwrap(), b"marker: not re-imported");
    std::fs::remove_file(blob_dir.join(layer)).unwrap();
    s.remove("example.com/a:1").await.unwrap();
    let again = s.import_dir(&dir).await.unwrap();
    assert_eq!(again[0].1.as_ref().unwrap()[0].name, "example.com/a:1");
    assert_eq!(s.list().unwrap().len(), 1);
}

#[tokio::test]
async fn a_tampered_or_malicious_archive_registers_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    // A layer blob that does not match its digest.
    let mut layout = Layout::new(&tmp.path().join("layout"));
    let layer = gzip(&tar_of(&[Entry::File("f", b"good", 0o644)]));
    let m = layout.image(&ImageSpec {
        arch: host_arch(),
        variant: None,
        layers: vec![tar_of(&[Entry::File("f", b"good", 0o644)])],
        gzip: true,
        cmd: vec![],
    });
    layout.tag_manifest(&m, "example.com/x:1");
    std::fs::write(layout.dir.join("blobs/sha256").join(&digest(&layer)[7..]), gzip(b"evil"))
        .unwrap();
    let archive = tmp.path().join("bad.tar");
    layout.archive(&archive);
    let s = store(tmp.path());
    let err = s.import(&archive).await.unwrap_err();
    assert!(
        matches!(err, ImageError::DigestMismatch { .. } | ImageError::SizeMismatch { .. }),
        "{err}"
    );
    // A layer that escapes its root.
    let mut layout = Layout::new(&tmp.path().join("layout2"));
    let m = layout.image(&ImageSpec {
        arch: host_arch(),
        variant: None,
        layers: vec![tar_of(&[Entry::File("../../escape", b"x", 0o644)])],
        gzip: false,
        cmd: vec![],
    });
    layout.tag_manifest(&m, "example.com/y:1");
    let archive = tmp.path().join("evil.tar");
    layout.archive(&archive);
    let err = s.import(&archive).await.unwrap_err();
    assert!(matches!(err, ImageError::UnsafeLayer { .. }), "{err}");
    assert!(s.list().unwrap().is_empty());
    assert_eq!(std::fs::read_dir(s.root().join("snapshots")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(s.root().join("tmp")).unwrap().count(), 0);
}
