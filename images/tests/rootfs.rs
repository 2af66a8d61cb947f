//! Container root filesystems: overlayfs over the layer snapshots with whiteouts and opaque
//! directories applied, a writable upper dir, images with more layers than one mount option
//! string holds, release, and disk-pressure GC that spares images in use. Needs root.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use skerry_images::{GcPolicy, ImageError, ImageStore, Platform, UnusedImages};

fn store(root: &Path) -> ImageStore {
    ImageStore::open(root, Platform::parse(&format!("linux/{}", host_arch())).unwrap()).unwrap()
}

async fn import(s: &ImageStore, tmp: &Path, name: &str, layers: Vec<Vec<u8>>) -> String {
    let dir = tmp.join(format!("layout-{}", name.replace(['/', ':'], "_")));
    let mut layout = Layout::new(&dir);
    let m = layout.image(&ImageSpec {
        arch: host_arch(),
        variant: None,
        layers,
        gzip: true,
        cmd: vec!["/bin/sh"],
    });
    layout.tag_manifest(&m, name);
    let archive = dir.with_extension("tar");
    layout.archive(&archive);
    s.import(&archive).await.unwrap()[0].name.clone()
}

/// Unmounts on drop so a failed assertion does not leave a mount behind.
struct Mounted(ImageStore, &'static str);
impl Drop for Mounted {
    fn drop(&mut self) {
        let s = self.0.clone();
        let id = self.1;
        let _ = std::thread::spawn(move || {
            tokio::runtime::Runtime::new().unwrap().block_on(s.release_rootfs(id))
        })
        .join();
    }
}

fn mounted(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines().any(|l| l.split(' ').nth(4) == Some(path.to_str().unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlay_rootfs_applies_whiteouts_and_runs_busybox() {
    if !skerry_testkit::require_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let s = store(&tmp.path().join("store"));
    let base = tar_of(&[
        Entry::Dir("data/"),
        Entry::File("data/a", b"a", 0o644),
        Entry::File("data/b", b"b", 0o644),
        Entry::File("gone", b"x", 0o644),
        Entry::File("keep", b"k", 0o644),
    ]);
    let top = tar_of(&[
        Entry::File(".wh.gone", b"", 0o644),
        Entry::Dir("data/"),
        Entry::File("data/.wh..wh..opq", b"", 0o644),
        Entry::File("data/c", b"c", 0o644),
    ]);
    let name =
        import(&s, tmp.path(), "example.com/wh:1", vec![busybox_layer("overlay"), base, top]).await;
    let target = tmp.path().join("rootfs");
    let rootfs = s.prepare_rootfs(&name, "c1", &target).await.unwrap();
    let guard = Mounted(s.clone(), "c1");
    assert_eq!(rootfs.path, target);
    assert_eq!(rootfs.config.cmd, vec!["/bin/sh"]);
    assert!(mounted(&target));
    assert!(!target.join("gone").exists(), "whiteout hides the lower file");
    assert!(target.join("keep").exists());
    let mut data: Vec<_> =
        std::fs::read_dir(target.join("data")).unwrap().flatten().map(|e| e.file_name()).collect();
    data.sort();
    assert_eq!(data, vec!["c"], "opaque dir hides lower entries");
    // The image runs: busybox from the bottom layer, marker from the same layer.
    let out =
        Command::new("chroot").arg(&target).args(["/bin/cat", "/etc/marker"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "overlay");
    // Writes land in the container's upper dir, not in the shared snapshots.
    std::fs::write(target.join("new"), "w").unwrap();
    assert!(s.root().join("containers/c1/upper/new").exists());
    // Idempotent for an agent re-adopting a container.
    s.prepare_rootfs(&name, "c1", &target).await.unwrap();
    // In use: cannot be removed.
    let err = s.remove(&name).await.unwrap_err();
    assert!(matches!(err, ImageError::InUse { .. }), "{err}");

    s.release_rootfs("c1").await.unwrap();
    drop(guard);
    assert!(!mounted(&target));
    assert!(!s.root().join("containers/c1").exists());
    s.remove(&name).await.unwrap();
    assert_eq!(std::fs::read_dir(s.root().join("snapshots")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(s.root().join("blobs/sha256")).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_layers_than_one_mount_option_string_holds() {
    if !skerry_testkit::require_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // A long store path makes 40 lower dirs exceed the one-page option string.
    let root = tmp.path().join("x".repeat(200)).join("y".repeat(60));
    let s = store(&root);
    let layers: Vec<Vec<u8>> = (0..40)
        .map(|i| tar_of(&[Entry::File(&format!("f{i}"), format!("{i}").as_bytes(), 0o644)]))
        .collect();
    let name = import(&s, tmp.path(), "example.com/many:1", layers).await;
    let target = tmp.path().join("rootfs");
    s.prepare_rootfs(&name, "many", &target).await.unwrap();
    let _guard = Mounted(s.clone(), "many");
    for i in 0..40 {
        assert_eq!(std::fs::read_to_string(target.join(format!("f{i}"))).unwrap(), format!("{i}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_layers_mount_through_the_new_mount_api() {
    if !skerry_testkit::require_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let s = store(&tmp.path().join("store"));
    // 260 layers: even /proc/self/fd/N names exceed one page of mount options.
    let layers: Vec<Vec<u8>> = (0..260)
        .map(|i| tar_of(&[Entry::File(&format!("f{i}"), format!("{i}").as_bytes(), 0o644)]))
        .collect();
    let name = import(&s, tmp.path(), "example.com/huge:1", layers).await;
    let target = tmp.path().join("rootfs");
    s.prepare_rootfs(&name, "huge", &target).await.unwrap();
    let _guard = Mounted(s.clone(), "huge");
    assert_eq!(std::fs::read_dir(&target).unwrap().count(), 260);
    assert_eq!(std::fs::read_to_string(target.join("f0")).unwrap(), "0");
    assert_eq!(std::fs::read_to_string(target.join("f259")).unwrap(), "259");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_removes_least_recently_used_unused_images_down_to_the_low_threshold() {
    if !skerry_testkit::require_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let s = store(&tmp.path().join("store"));
    let mut names = Vec::new();
    for n in ["a", "b", "c", "d"] {
        let layer = tar_of(&[Entry::File(n, n.as_bytes(), 0o644)]);
        names.push(import(&s, tmp.path(), &format!("example.com/{n}:1"), vec![layer]).await);
    }
    let target = tmp.path().join("rootfs");
    s.prepare_rootfs(&names[0], "user", &target).await.unwrap();
    let _guard = Mounted(s.clone(), "user");

    // Below the high threshold: nothing happens.
    let report = s.gc_with_usage(GcPolicy::default(), || Ok(50.0)).await.unwrap();
    assert!(report.removed_images.is_empty());
    // Usage falls 6 points per removed image: 92 -> 86 -> 80 -> 74.
    let s2 = s.clone();
    let usage = move || Ok(92.0 - 6.0 * (4 - s2.list().unwrap().len()) as f64);
    let report = s.gc_with_usage(GcPolicy::default(), usage).await.unwrap();
    // `a` is in use; b, c, d are unused and equally old, so they go in name order until < 80.
    assert_eq!(report.removed_images, vec![names[1].clone(), names[2].clone(), names[3].clone()]);
    assert!(report.usage_after < 80.0);
    let left: Vec<_> = s.list().unwrap().into_iter().map(|i| i.name).collect();
    assert_eq!(left, vec![names[0].clone()]);
    assert_eq!(std::fs::read_dir(s.root().join("snapshots")).unwrap().count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_unused_spares_kept_digests_and_young_images() {
    if !skerry_testkit::require_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let s = store(&tmp.path().join("store"));
    let mut names = Vec::new();
    for n in ["a", "b", "c"] {
        let layer = tar_of(&[Entry::File(n, n.as_bytes(), 0o644)]);
        names.push(import(&s, tmp.path(), &format!("example.com/{n}:1"), vec![layer]).await);
    }
    // Everything was imported just now: an hour's minimum age spares all of it.
    let young = UnusedImages { keep_digests: vec![], min_age: Duration::from_secs(3600) };
    let report = s.remove_unused(&young, || Ok(false)).await.unwrap();
    assert!(report.removed_images.is_empty());
    assert_eq!(s.list().unwrap().len(), 3);
    // `a` is kept by digest (a pod about to use it); `enough` stops after one removal.
    let keep_a = UnusedImages {
        keep_digests: vec![s.get(&names[0]).unwrap().digest],
        min_age: Duration::ZERO,
    };
    let mut asked = 0;
    let report = s
        .remove_unused(&keep_a, || {
            asked += 1;
            Ok(asked > 1)
        })
        .await
        .unwrap();
    assert_eq!(report.removed_images, vec![names[1].clone()]);
    let report = s.remove_unused(&keep_a, || Ok(false)).await.unwrap();
    assert_eq!(report.removed_images, vec![names[2].clone()]);
    let left: Vec<_> = s.list().unwrap().into_iter().map(|i| i.name).collect();
    assert_eq!(left, vec![names[0].clone()]);
}

/// A tmpfs mounted for one test; unmounted on drop.
struct Tmpfs(std::path::PathBuf);
impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_reported_as_disk_full_and_registers_nothing() {
    if !skerry_testkit::require_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let small = tmp.path().join("small");
    std::fs::create_dir(&small).unwrap();
    rustix::mount::mount(
        "tmpfs",
        &small,
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        Some(c"size=2m"),
    )
    .unwrap();
    let _guard = Tmpfs(small.clone());
    let s = store(&small.join("store"));
    let dir = tmp.path().join("layout");
    let mut layout = Layout::new(&dir);
    let big = tar_of(&[Entry::File("big", &random_bytes(3 << 20, 11), 0o644)]);
    let m = layout.image(&ImageSpec {
        arch: host_arch(),
        variant: None,
        layers: vec![big],
        gzip: false,
        cmd: vec![],
    });
    layout.tag_manifest(&m, "example.com/big:1");
    let archive = tmp.path().join("big.tar");
    layout.archive(&archive);
    let err = s.import(&archive).await.unwrap_err();
    assert!(matches!(err, ImageError::DiskFull { .. }), "{err:?}");
    assert!(err.to_string().starts_with("disk full"), "{err}");
    assert!(s.list().unwrap().is_empty());
}
