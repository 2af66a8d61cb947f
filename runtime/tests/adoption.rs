//! Surviving the agent: containers keep running when the process that manages them is
//! SIGKILLed, a new `Runtime` re-adopts them, and one that exited meanwhile reports its real exit
//! code. Also startup garbage collection of what a crash leaves half-done.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Fixture;
use skerry_runtime::{ContainerState, Mount, Resources};

/// Environment variable that turns `helper_agent_process` into the "agent" of the test below.
const AGENT_DIR: &str = "SKERRY_TEST_AGENT_DIR";

/// Not a test on its own: with `SKERRY_TEST_AGENT_DIR` set, it plays the agent process for
/// `containers_survive_a_killed_agent_and_are_readopted` (creates containers, then waits to be
/// killed). Ignored so that it never runs (and passes vacuously) as a test of its own.
#[test]
#[ignore = "a helper process of containers_survive_a_killed_agent_and_are_readopted"]
fn helper_agent_process() {
    let Some(dir) = std::env::var_os(AGENT_DIR).map(PathBuf::from) else { return };
    let cgroup_root = std::env::var("SKERRY_TEST_CGROUP_ROOT").unwrap();
    let runtime = skerry_runtime::Runtime::open(Fixture::config(&dir, &cgroup_root)).unwrap();
    let spec = skerry_runtime::SandboxSpec {
        name: "agent".into(),
        hostname: "agent".into(),
        ..Default::default()
    };
    let pod = runtime.create_sandbox(spec).unwrap();
    let shell = |name: &str, script: &str| skerry_runtime::ContainerSpec {
        name: name.into(),
        rootfs: dir.join("rootfs"),
        image: skerry_runtime::ImageConfig {
            entrypoint: vec!["/bin/sh".into(), "-c".into(), script.into()],
            ..Default::default()
        },
        mounts: vec![Mount {
            source: dir.join("signal"),
            destination: "/signal".into(),
            read_only: true,
        }],
        ..Default::default()
    };
    for (name, script) in
        [("long", "sleep 600"), ("short", "while [ ! -e /signal/go ]; do sleep 0.05; done; exit 7")]
    {
        let id = runtime.create_container(&pod, shell(name, script)).unwrap();
        runtime.start_container(&id).unwrap();
    }
    println!("ready");
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn containers_survive_a_killed_agent_and_are_readopted() {
    if !common::privileged() {
        return;
    }
    let fx = Fixture::new("adopt");
    std::fs::create_dir_all(fx.dir.path().join("signal")).unwrap();
    let mut agent = Command::new(std::env::current_exe().unwrap())
        .args(["helper_agent_process", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(AGENT_DIR, fx.dir.path())
        .env("SKERRY_TEST_CGROUP_ROOT", &fx.cgroup_root)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(agent.stdout.take().unwrap()).lines();
    assert!(lines.any(|l| l.unwrap().contains("ready")), "the agent created its containers");
    let before = fx.runtime.find_container("long").unwrap();
    assert_eq!(before.state, ContainerState::Running);
    agent.kill().unwrap(); // SIGKILL
    agent.wait().unwrap();

    // The containers did not notice; "short" now exits while no agent runs.
    std::fs::write(fx.dir.path().join("signal/go"), "").unwrap();
    let pid = before.pid.unwrap();
    assert!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok());

    let adopted = fx.reopen();
    let short = adopted.find_container("short").unwrap();
    let short = adopted.wait_container(&short.id, Some(Duration::from_secs(60))).unwrap();
    assert_eq!((short.state, short.exit_code), (ContainerState::Exited, Some(7)));
    let long = adopted.find_container("long").unwrap();
    assert_eq!((long.state, long.pid), (ContainerState::Running, Some(pid)));
    let stopped = adopted.stop_container(&long.id, Duration::from_millis(100)).unwrap();
    assert_eq!(stopped.exit_code, Some(137));
}

#[test]
fn startup_gc_undoes_a_half_created_sandbox_and_orphaned_cgroups() {
    if !common::privileged() {
        return;
    }
    let fx = Fixture::new("gc");
    let pod = fx.sandbox("gc");
    let dir = fx.runtime.state_dir().join("sandboxes").join(&pod);
    let record_path = dir.join("sandbox.json");
    // As if the agent crashed before finishing the sandbox.
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record_path).unwrap()).unwrap();
    record["ready"] = serde_json::json!(false);
    std::fs::write(&record_path, serde_json::to_vec(&record).unwrap()).unwrap();
    let pod_cgroup = record["cgroup_path"].as_str().unwrap().to_string();
    let orphan = format!("/{}/besteffort/podorphan", fx.cgroup_root);
    fx.runtime.cgroups().create_pod(&orphan, &Resources::default()).unwrap();
    let half_container = fx.runtime.state_dir().join("containers/0123456789abcdef");
    std::fs::create_dir_all(half_container.join("bundle")).unwrap();
    assert!(common::mounted_below(&dir) && common::cgroup_exists(&orphan));

    let report = fx.reopen().garbage_collect().unwrap();
    // `reopen` already collected: the explicit second pass finds nothing left.
    assert!(report.is_empty(), "{report:?}");
    assert!(!common::mounted_below(&dir), "namespace and shm mounts are gone");
    assert!(!dir.exists());
    assert!(!common::cgroup_exists(&pod_cgroup) && !common::cgroup_exists(&orphan));
    assert!(!half_container.exists());
    assert!(fx.runtime.list_sandboxes().is_empty());
}
