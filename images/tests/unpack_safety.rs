//! Layer unpacking against crafted malicious layers: nothing may be written outside the
//! target (`..`, absolute names, writes through symlinks, hard links leaving the layer), and
//! overlay whiteouts are produced for `.wh.` entries.

mod common;

use std::path::Path;

use common::*;
use skerry_images::unpack::unpack_layer;
use skerry_images::ImageError;

struct Fixture {
    _tmp: tempfile::TempDir,
    target: std::path::PathBuf,
    outside: std::path::PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("target");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), "original").unwrap();
    Fixture { _tmp: tmp, target, outside }
}

fn assert_unsafe(res: skerry_images::Result<skerry_images::unpack::LayerStats>, what: &str) {
    match res {
        Err(ImageError::UnsafeLayer { .. }) => {}
        other => panic!("{what}: expected UnsafeLayer, got {other:?}"),
    }
}

fn outside_untouched(f: &Fixture) {
    assert_eq!(std::fs::read_to_string(f.outside.join("secret")).unwrap(), "original");
    let names: Vec<_> =
        std::fs::read_dir(&f.outside).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(names.len(), 1, "nothing new outside the target: {names:?}");
    assert!(!Path::new("/pwned").exists());
}

#[test]
fn dot_dot_paths_are_refused() {
    let f = fixture();
    let layer =
        tar_of(&[Entry::File("ok", b"1", 0o644), Entry::File("../outside/pwned", b"x", 0o644)]);
    assert_unsafe(unpack_layer(&layer[..], &f.target), "../ path");
    let layer = tar_of(&[Entry::File("a/../../outside/pwned", b"x", 0o644)]);
    assert_unsafe(unpack_layer(&layer[..], &f.target), "nested ../ path");
    outside_untouched(&f);
}

#[test]
fn absolute_paths_are_refused() {
    let f = fixture();
    let abs = format!("{}/pwned", f.outside.display());
    let layer = tar_of(&[Entry::File(&abs, b"x", 0o644)]);
    assert_unsafe(unpack_layer(&layer[..], &f.target), "absolute path");
    outside_untouched(&f);
}

#[test]
fn writes_through_a_symlink_are_refused() {
    let f = fixture();
    // Relative and absolute symlinks to outside, then a file "inside" them.
    for link_target in ["../outside".to_string(), f.outside.display().to_string()] {
        let layer =
            tar_of(&[Entry::Symlink("link", &link_target), Entry::File("link/pwned", b"x", 0o644)]);
        let t = f.target.join(format!("t{}", link_target.len()));
        std::fs::create_dir(&t).unwrap();
        assert_unsafe(unpack_layer(&layer[..], &t), "symlink then write-through");
    }
    // A symlink inside the layer pointing inside is still not followed for writes.
    let layer = tar_of(&[
        Entry::Dir("real/"),
        Entry::Symlink("alias", "real"),
        Entry::File("alias/f", b"x", 0o644),
    ]);
    let t = f.target.join("inner");
    std::fs::create_dir(&t).unwrap();
    assert_unsafe(unpack_layer(&layer[..], &t), "write through an inner symlink");
    outside_untouched(&f);
}

#[test]
fn a_file_replacing_a_symlink_does_not_write_through_it() {
    let f = fixture();
    let secret = f.outside.join("secret").display().to_string();
    let layer = tar_of(&[Entry::Symlink("s", &secret), Entry::File("s", b"replaced", 0o644)]);
    unpack_layer(&layer[..], &f.target).unwrap();
    let meta = std::fs::symlink_metadata(f.target.join("s")).unwrap();
    assert!(meta.is_file(), "the symlink was replaced by a regular file");
    assert_eq!(std::fs::read_to_string(f.target.join("s")).unwrap(), "replaced");
    outside_untouched(&f);
}

#[test]
fn hard_links_leaving_the_layer_are_refused() {
    let f = fixture();
    let abs = f.outside.join("secret").display().to_string();
    for target in ["../outside/secret", abs.as_str(), "/etc/passwd"] {
        let layer = tar_of(&[Entry::HardLink("h", target)]);
        let t = f.target.join(format!("h{}", target.len()));
        std::fs::create_dir(&t).unwrap();
        assert_unsafe(unpack_layer(&layer[..], &t), &format!("hard link to {target}"));
        assert!(!t.join("h").exists());
    }
    // A hard link through a symlinked directory is refused too.
    let layer = tar_of(&[Entry::Symlink("d", "../outside"), Entry::HardLink("h", "d/secret")]);
    let t = f.target.join("hsym");
    std::fs::create_dir(&t).unwrap();
    assert_unsafe(unpack_layer(&layer[..], &t), "hard link via symlink");
    outside_untouched(&f);
}

#[test]
fn regular_layers_unpack_with_links_modes_and_diff_id() {
    let f = fixture();
    let tar = tar_of(&[
        Entry::Dir("usr/"),
        Entry::File("usr/bin/tool", b"#!/bin/sh\n", 0o4755),
        Entry::HardLink("usr/bin/tool2", "usr/bin/tool"),
        Entry::Symlink("usr/bin/t", "/usr/bin/tool"),
        Entry::File("./etc/conf", b"k=v", 0o600),
    ]);
    let stats = unpack_layer(&gzip(&tar)[..], &f.target).unwrap();
    assert_eq!(stats.diff_id, digest(&tar), "diff ID is the uncompressed digest");
    use std::os::unix::fs::MetadataExt;
    let tool = std::fs::metadata(f.target.join("usr/bin/tool")).unwrap();
    assert_eq!(tool.mode() & 0o7777, 0o4755);
    assert_eq!(tool.nlink(), 2, "hard link shares the inode");
    assert_eq!(std::fs::read_link(f.target.join("usr/bin/t")).unwrap(), Path::new("/usr/bin/tool"));
    assert_eq!(std::fs::metadata(f.target.join("etc/conf")).unwrap().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(f.target.join("etc/conf")).unwrap().mtime(), 1_700_000_000);
}

#[test]
fn whiteouts_become_overlay_whiteouts() {
    if !skerry_testkit::require_root() {
        return;
    }
    let f = fixture();
    let layer = tar_of(&[
        Entry::Dir("d/"),
        Entry::File("d/.wh..wh..opq", b"", 0o644),
        Entry::File(".wh.gone", b"", 0o644),
    ]);
    unpack_layer(&layer[..], &f.target).unwrap();
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let wh = std::fs::symlink_metadata(f.target.join("gone")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0, "0/0 char device");
    let opaque =
        rustix::fs::getxattr(f.target.join("d"), "trusted.overlay.opaque", &mut [0u8; 4]).unwrap();
    assert_eq!(opaque, 1);
    assert!(!f.target.join("d/.wh..wh..opq").exists());
}

#[test]
fn zstd_and_uncompressed_layers_unpack_to_the_same_diff_id() {
    let f = fixture();
    let tar = tar_of(&[Entry::File("z/file", &random_bytes(50_000, 5), 0o644)]);
    let zst =
        ruzstd::encoding::compress_to_vec(&tar[..], ruzstd::encoding::CompressionLevel::Fastest);
    assert_eq!(&zst[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
    let a = f.target.join("zstd");
    let b = f.target.join("plain");
    std::fs::create_dir(&a).unwrap();
    std::fs::create_dir(&b).unwrap();
    let za = unpack_layer(&zst[..], &a).unwrap();
    let pb = unpack_layer(&tar[..], &b).unwrap();
    assert_eq!(za.diff_id, digest(&tar));
    assert_eq!(pb.diff_id, za.diff_id);
    assert_eq!(std::fs::read(a.join("z/file")).unwrap(), std::fs::read(b.join("z/file")).unwrap());
}
