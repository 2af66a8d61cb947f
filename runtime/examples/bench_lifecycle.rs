//! Benchmark: create → start → exit → delete latency of `/bin/true` (busybox) in skerry's
//! runtime, runc and crun, side by side on the same root filesystem and the same OCI
//! `config.json` (the one skerry generates, with fresh namespaces instead of a sandbox's), plus
//! the resident memory of one monitor process. The three run interleaved, one cycle each per
//! round, so that a change in the machine's load during the run weighs on all of them alike.
//!
//! Run as root: `cargo run --release -p skerry-runtime --example bench_lifecycle [ITERATIONS]`

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use skerry_runtime::{
    ContainerSpec, ImageConfig, LoopbackOnly, MonitorCommand, Runtime, RuntimeConfig, SandboxSpec,
};

const RUNC: &str = "/usr/sbin/runc";
const CRUN: &str = "/usr/bin/crun";

fn main() {
    if !skerry_runtime::terminal::running_as_root() {
        eprintln!("bench_lifecycle needs root");
        std::process::exit(2);
    }
    let iterations: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(30);
    let runc = Path::new(RUNC).exists().then_some(RUNC);
    let crun = Path::new(CRUN).exists().then_some(CRUN);
    for (name, program) in [("runc", RUNC), ("crun", CRUN)] {
        if !Path::new(program).exists() {
            eprintln!("{name}: not installed, skipped");
        }
    }
    // First, while this process surely has a single thread.
    let namespaces = crun.map(|_| CrunNamespace::new());
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
    runtime.flush_removals();
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

    let mut n = 0;
    let mut oci_cycle = |name: &str, program: &str, i: usize| {
        let id = format!("bench-{name}-{}-{i}-{n}", std::process::id());
        n += 1;
        config["linux"]["cgroupsPath"] = serde_json::json!(format!("/{cgroup_root}/{name}/{id}"));
        std::fs::write(bundle.join("config.json"), serde_json::to_vec(&config).unwrap()).unwrap();
        let root = dir.path().join(format!("{name}-state"));
        let start = Instant::now();
        oci_lifecycle(program, &root, &bundle, &id);
        start.elapsed().as_secs_f64() * 1000.0
    };

    // Interleaved, one cycle of each runtime per round in a rotating order, so that the load
    // of a busy machine (2 cores shared with builds) weighs on all three alike.
    let mut times: [Vec<f64>; 3] = Default::default();
    let mut phases = [0.0f64; 5];
    for round in 0..=iterations {
        let warm_up = round == 0;
        for k in 0..3 {
            let which = (round + k) % 3;
            let elapsed = match which {
                0 => {
                    let name = format!("true-{round}");
                    let (total, lap) = skerry_cycle(&runtime, &pod, spec(name, &["/bin/true"]));
                    if !warm_up {
                        for (p, l) in phases.iter_mut().zip(lap) {
                            *p += l / iterations as f64;
                        }
                    }
                    Some(total)
                }
                1 => runc.map(|program| oci_cycle("runc", program, round)),
                _ => crun.map(|program| {
                    let ns = namespaces.as_ref().unwrap();
                    ns.enter_crun();
                    let t = oci_cycle("crun", program, round);
                    ns.enter_host();
                    t
                }),
            };
            if let (Some(t), false) = (elapsed, warm_up) {
                times[which].push(t);
            }
        }
    }
    let results: Vec<(&str, Vec<f64>)> =
        ["skerry", "runc", "crun"].into_iter().zip(times).filter(|(_, t)| !t.is_empty()).collect();

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
        "skerry phases (mean ms): create {:.2}, start {:.2}, exit seen {:.2}, remove {:.2} \
         (+ deferred deletion {:.2}, not in the cycle time)",
        phases[0], phases[1], phases[2], phases[3], phases[4]
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

/// crun 1.8 refuses this machine's hybrid layout (a cgroup2 mount holding a controller), so it
/// runs in a private mount namespace without `/sys/fs/cgroup/unified` and manages v1 cgroups
/// like the others. The bench process (single-threaded, as `setns` into a mount namespace
/// requires) enters that namespace around each crun cycle and returns to the host's after, so
/// that skerry's monitors and runc see the host's mounts. The host's mounts are untouched.
struct CrunNamespace {
    host: std::fs::File,
    private: std::fs::File,
}

impl CrunNamespace {
    fn new() -> CrunNamespace {
        use nix::mount::{mount, umount2, MntFlags, MsFlags};
        let host = std::fs::File::open("/proc/self/ns/mnt").unwrap();
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
        mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
            .unwrap();
        if Path::new("/sys/fs/cgroup/unified").exists() {
            let _ = umount2("/sys/fs/cgroup/unified", MntFlags::MNT_DETACH);
        }
        let private = std::fs::File::open("/proc/self/ns/mnt").unwrap();
        let ns = CrunNamespace { host, private };
        ns.enter_host();
        ns
    }

    fn enter_crun(&self) {
        nix::sched::setns(&self.private, nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
    }

    fn enter_host(&self) {
        nix::sched::setns(&self.host, nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
    }
}

/// One create → start → exit → remove cycle of skerry: total and per-phase milliseconds.
fn skerry_cycle(runtime: &Runtime, pod: &str, spec: ContainerSpec) -> (f64, [f64; 5]) {
    let start = Instant::now();
    let mut t = start;
    let mut phases = [0.0; 5];
    let mut lap = |k: usize| {
        phases[k] = t.elapsed().as_secs_f64() * 1000.0;
        t = Instant::now();
    };
    let id = runtime.create_container(pod, spec).unwrap();
    lap(0);
    runtime.start_container(&id).unwrap();
    lap(1);
    let status = runtime.wait_container(&id, Some(Duration::from_secs(30))).unwrap();
    assert_eq!(status.exit_code, Some(0), "{status:?}");
    lap(2);
    runtime.remove_container(&id, false).unwrap();
    lap(3);
    let total = start.elapsed().as_secs_f64() * 1000.0;
    // Removal leaves the unlinking of the container's files to a background thread; finish it
    // here, outside the cycle's time (it is off the caller's critical path) but before the next
    // cycle, so that it does not overlap the next runtime's cycle, and so that this process is
    // single-threaded again for crun's `setns` into its mount namespace.
    runtime.flush_removals();
    lap(4);
    (total, phases)
}

/// One create → start → exit (seen by polling `state`) → delete cycle of an OCI runtime CLI.
fn oci_lifecycle(program: &str, root: &Path, bundle: &Path, id: &str) {
    let oci = |args: &[&str]| {
        let status = Command::new(program)
            .arg("--root")
            .arg(root)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "{program} {args:?}");
    };
    oci(&["create", "--bundle", bundle.to_str().unwrap(), id]);
    oci(&["start", id]);
    wait_stopped(program, root, id);
    oci(&["delete", id]);
}

/// Polls `state` until the container has stopped.
fn wait_stopped(program: &str, root: &Path, id: &str) {
    for _ in 0..10_000 {
        let out =
            Command::new(program).arg("--root").arg(root).args(["state", id]).output().unwrap();
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
