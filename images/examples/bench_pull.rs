//! Benchmark: pull + unpack of a multi-layer image (~48 MiB of random content in 6 gzip
//! layers) from a local `docker-registry`, skerry-images against `skopeo copy` + `umoci unpack`
//! on the same image, side by side; then the time to prepare (mount) and release a container
//! root filesystem from the already-pulled image.
//!
//! Run as root (umoci unpack and overlay mounts):
//! `cargo run --release -p skerry-images --example bench_pull`

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use skerry_images::{ImageStore, Platform, PullOptions, RegistryConfig};

const LAYERS: usize = 6;
const FILES_PER_LAYER: usize = 16;
const FILE_SIZE: usize = 512 * 1024;
const ROUNDS: usize = 3;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let reg = Registry::start(&tmp.path().join("reg"), None, None);
    let mut layout = Layout::new(&tmp.path().join("layout"));
    let layers: Vec<Vec<u8>> = (0..LAYERS)
        .map(|l| {
            let names: Vec<String> =
                (0..FILES_PER_LAYER).map(|f| format!("layer{l}/file{f}")).collect();
            let data: Vec<Vec<u8>> = (0..FILES_PER_LAYER)
                .map(|f| random_bytes(FILE_SIZE, (l * 1000 + f + 1) as u64))
                .collect();
            let entries: Vec<Entry> = names
                .iter()
                .zip(&data)
                .map(|(n, d)| Entry::File(n.as_str(), d.as_slice(), 0o644))
                .collect();
            tar_of(&entries)
        })
        .collect();
    let total: usize = layers.iter().map(Vec::len).sum();
    let m = layout.image(&ImageSpec {
        arch: host_arch(),
        variant: None,
        layers,
        gzip: true,
        cmd: vec!["/bin/sh"],
    });
    layout.tag_manifest(&m, "v1");
    reg.push(&layout.dir, "v1", "bench/app");
    let reference = format!("{}/bench/app:v1", reg.host());
    println!(
        "image: {LAYERS} gzip layers, {:.1} MiB uncompressed, registry {}",
        total as f64 / 1048576.0,
        reg.host()
    );

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let yaml = registry_yaml(&reg, None, None);
    let config = Arc::new(RegistryConfig::parse(&yaml, "bench").expect("config"));
    let platform = Platform::parse(&format!("linux/{}", host_arch())).expect("platform");

    let mut ours = Vec::new();
    let mut peer = Vec::new();
    let mut last_store = None;
    for round in 0..ROUNDS {
        // skerry-images: fresh store each round.
        let root = tmp.path().join(format!("store{round}"));
        let store = ImageStore::open(&root, platform.clone()).expect("store");
        let options = PullOptions { registry_config: Some(config.clone()), ..Default::default() };
        let t = Instant::now();
        rt.block_on(store.pull(&reference, options)).expect("pull");
        ours.push(t.elapsed());
        last_store = Some(store);

        // skopeo copy + umoci unpack into fresh dirs.
        let oci = tmp.path().join(format!("oci{round}"));
        let bundle = tmp.path().join(format!("bundle{round}"));
        let t = Instant::now();
        let s = Command::new("skopeo")
            .args(["--insecure-policy", "copy", "-q", "--src-tls-verify=false"])
            .arg(format!("docker://{reference}"))
            .arg(format!("oci:{}:v1", oci.display()))
            .status()
            .expect("skopeo");
        assert!(s.success(), "skopeo copy failed");
        let s = Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:v1", oci.display()))
            .arg(&bundle)
            .status()
            .expect("umoci");
        assert!(s.success(), "umoci unpack failed");
        peer.push(t.elapsed());
    }
    let (ours, peer) = (median(ours), median(peer));
    println!(
        "pull+unpack  skerry-images: {:>8.1} ms (median of {ROUNDS})",
        ours.as_secs_f64() * 1e3
    );
    println!(
        "pull+unpack  skopeo+umoci:  {:>8.1} ms (median of {ROUNDS})",
        peer.as_secs_f64() * 1e3
    );
    println!(
        "ratio (skopeo+umoci / skerry-images): {:.2}x",
        peer.as_secs_f64() / ours.as_secs_f64()
    );

    let store = last_store.expect("a store");
    let mut prepare = Vec::new();
    let mut release = Vec::new();
    for i in 0..10 {
        let target = tmp.path().join(format!("rootfs{i}"));
        let id = format!("bench{i}");
        let t = Instant::now();
        rt.block_on(store.prepare_rootfs(&reference, &id, &target)).expect("prepare");
        prepare.push(t.elapsed());
        let t = Instant::now();
        rt.block_on(store.release_rootfs(&id)).expect("release");
        release.push(t.elapsed());
    }
    println!(
        "prepare_rootfs (overlay mount, {LAYERS} layers): {:.2} ms median",
        median(prepare).as_secs_f64() * 1e3
    );
    println!("release_rootfs: {:.2} ms median", median(release).as_secs_f64() * 1e3);
}
