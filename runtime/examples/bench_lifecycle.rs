//! Benchmark: create → start → exit → delete latency of `/bin/true` (busybox) in skerry's
//! runtime, runc and crun, side by side on the same root filesystem and the same OCI
//! `config.json` (the one skerry generates, with fresh namespaces instead of a sandbox's), plus
//! the resident memory of one monitor process.
//!
//! Run as root: `cargo run --release -p skerry-runtime --example bench_lifecycle [ITERATIONS]`

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use skerry_runtime::{
    ContainerSpec, ImageConfig, LoopbackOnly, MonitorCommand, Runtime, RuntimeConfig, SandboxSpec,
};

fn main() {
    if !skerry_runtime::terminal::running_as_root() {
        eprintln!("bench_lifecycle needs root");
        std::process::exit(2);
    }
    let iterations: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(30);
    let dir = tempfile::Builder::new().prefix("skerry-bench-").tempdir().unwrap();
    let rootfs = busybox_rootfs(dir.path());
    let monitor = monitor_exe();
    let cgroup_root = format!("skerry-bench-{}", std::process::id());
    let runtime = Runtime::open(RuntimeConfig {
        state_dir: dir.path().join("state"),
        monitor: MonitorCommand { exe: monitor, args: Vec::new() },
        cgroup_root: cgroup_root.clone(),
        network: Arc::new(LoopbackOnly),
    })
    .unwrap();
    let pod = runtime
        .create_sandbox(SandboxSpec {
            name: "bench".into(),
            hostname: "bench".into(),
            ..Default::default()
        })
        .unwrap();
    let spec = |name: String, args: &[&str]| ContainerSpec {
        name,
        rootfs: rootfs.clone(),
        image: ImageConfig {
            cmd: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        },
        ..Default::default()
    };

    // The shared bundle: skerry's own config.json for /bin/true, made standalone.
    let probe = runtime.create_container(&pod, spec("probe".into(), &["/bin/true"])).unwrap();
    let config_path =
        runtime.state_dir().join("containers").join(&probe).join("bundle/config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(config_path).unwrap()).unwrap();
    runtime.remove_container(&probe, true).unwrap();
    config["linux"]["namespaces"] = serde_json::json!([
        {"type": "pid"}, {"type": "mount"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}
    ]);
    // Without a sandbox there are no /etc files or /dev/shm to bind: keep the standard mounts.
    let mounts: Vec<serde_json::Value> = config["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["type"] != "bind")
        .cloned()
        .collect();
    config["mounts"] = serde_json::json!(mounts);
    let bundle = dir.path().join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();

    let mut results = Vec::new();
    let mut phases = [0.0f64; 4];
    let skerry = measure(iterations, |i| {
        let mut t = Instant::now();
        let mut lap = |k: usize| {
            if i != usize::MAX {
                phases[k] += t.elapsed().as_secs_f64() * 1000.0 / iterations as f64;
            }
            t = Instant::now();
        };
        let id = runtime.create_container(&pod, spec(format!("true-{i}"), &["/bin/true"])).unwrap();
        lap(0);
        runtime.start_container(&id).unwrap();
        lap(1);
        let status = runtime.wait_container(&id, Some(Duration::from_secs(30))).unwrap();
        assert_eq!(status.exit_code, Some(0), "{status:?}");
        lap(2);
        runtime.remove_container(&id, false).unwrap();
        lap(3);
    });
    results.push(("skerry", skerry));
    for (name, program, extra) in
        [("runc", "/usr/sbin/runc", None), ("crun", "/usr/bin/crun", None)]
    {
        if name == "crun" {
            remove_bench_cgroups(&cgroup_root);
            hide_unified_cgroup_mount();
        }
        if !Path::new(program).exists() {
            eprintln!("{name}: not installed, skipped");
            continue;
        }
        let root = dir.path().join(format!("{name}-state"));
        let times = measure(iterations, |i| {
            let id = format!("bench-{name}-{}-{i}", std::process::id());
            config["linux"]["cgroupsPath"] =
                serde_json::json!(format!("/{cgroup_root}/{name}/{id}"));
            std::fs::write(bundle.join("config.json"), serde_json::to_vec(&config).unwrap())
                .unwrap();
            let oci = |args: &[&str]| {
                let status = Command::new(program)
                    .args(extra)
                    .arg("--root")
                    .arg(&root)
                    .args(args)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .status()
                    .unwrap();
                assert!(status.success(), "{name} {args:?}");
            };
            oci(&["create", "--bundle", bundle.to_str().unwrap(), &id]);
            oci(&["start", &id]);
            wait_stopped(program, extra, &root, &id);
            oci(&["delete", &id]);
        });
        results.push((name, times));
    }

    // Memory of one monitor while its container runs.
    let id = runtime.create_container(&pod, spec("rss".into(), &["/bin/sleep", "30"])).unwrap();
    runtime.start_container(&id).unwrap();
    let monitor_json = runtime.state_dir().join("containers").join(&id).join("monitor.json");
    let record: skerry_runtime::state::MonitorRecord =
        skerry_runtime::state::read_json(&monitor_json).unwrap().unwrap();
    let rss_kib = vm_rss_kib(record.monitor_pid);
    runtime.remove_sandbox(&pod).unwrap();
    runtime.cgroups().remove_root_if_empty();
    remove_bench_cgroups(&cgroup_root);

    println!("create→start→exit→delete of /bin/true, {iterations} iterations (ms)");
    println!("{:<8} {:>8} {:>8} {:>8}", "runtime", "median", "mean", "p90");
    let skerry_median = median(&results[0].1);
    for (name, times) in &results {
        println!("{name:<8} {:>8.2} {:>8.2} {:>8.2}", median(times), mean(times), p90(times));
    }
    for (name, times) in results.iter().skip(1) {
        println!("skerry/{name} median ratio: {:.2}", skerry_median / median(times));
    }
    println!(
        "skerry phases (mean ms): create {:.2}, start {:.2}, exit seen {:.2}, remove {:.2}",
        phases[0], phases[1], phases[2], phases[3]
    );
    println!("monitor RSS per running container: {rss_kib} KiB");
}

/// Removes the (empty) cgroup directories the runc/crun runs leave under the bench's root.
fn remove_bench_cgroups(cgroup_root: &str) {
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        for sub in ["runc", "crun", ""] {
            let _ = std::fs::remove_dir(hierarchy.path().join(cgroup_root).join(sub));
        }
    }
}

/// crun 1.8 refuses this machine's hybrid layout (a cgroup2 mount holding a controller): from
/// here on, this process (single-threaded now) and its children use a private mount namespace
/// without `/sys/fs/cgroup/unified`, so crun manages v1 cgroups like the others. The host's
/// mounts are untouched.
fn hide_unified_cgroup_mount() {
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .unwrap();
    if Path::new("/sys/fs/cgroup/unified").exists() {
        let _ = umount2("/sys/fs/cgroup/unified", MntFlags::MNT_DETACH);
    }
}

/// Runs `f` `n` times (after one warm-up) and returns each duration in milliseconds.
fn measure(n: usize, mut f: impl FnMut(usize)) -> Vec<f64> {
    f(usize::MAX);
    (0..n)
        .map(|i| {
            let start = Instant::now();
            f(i);
            start.elapsed().as_secs_f64() * 1000.0
        })
        .collect()
}

/// Polls `state` until the container has stopped.
fn wait_stopped(program: &str, extra: Option<&str>, root: &Path, id: &str) {
    for _ in 0..10_000 {
        let out = Command::new(program)
            .args(extra)
            .arg("--root")
            .arg(root)
            .args(["state", id])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).contains("\"stopped\"") {
            return;
        }
    }
    panic!("{program}: {id} did not stop");
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn p90(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[(s.len() * 9 / 10).min(s.len() - 1)]
}

fn vm_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The monitor binary next to this example (`target/<profile>/skerry-runtime-monitor`).
fn monitor_exe() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let monitor = profile_dir.join("skerry-runtime-monitor");
    if !monitor.exists() {
        eprintln!("build the monitor first: cargo build --release -p skerry-runtime --bins");
        std::process::exit(2);
    }
    monitor
}

/// A root filesystem with busybox and its applet links.
fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for sub in ["bin", "etc", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for applet in ["sh", "true", "sleep"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    root
}
