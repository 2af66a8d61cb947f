//! Running the real `skerry agent` for end-to-end tests.
//!
//! [`enter_test_netns`] (from the testkit) moves the calling test thread (and so every process
//! and thread it starts afterwards: server, agent, kubectl, the test's own HTTP clients) into a
//! new network namespace. Use it with nextest (one process per test).
//! [`SkerryAgent`] runs the agent with its own data dir and cgroup root and, on drop, kills it
//! and runs `skerry agent --cleanup`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::server::SkerryServer;

// Re-exported for the agent tests; not every test binary that includes `common` uses them.
#[allow(unused_imports)]
pub use skerry_testkit::{enter_test_netns, remove_cgroup_root, NODE_IP};

/// The busybox image (built locally by [`super::images`]) the agent tests run.
pub const TEST_IMAGE: &str = "example.com/test/busybox:1";

/// What an agent end-to-end test needs (root, busybox, `ip`, kubectl 1.32): the kubectl path,
/// or `None` after saying what is missing (a failure under `SKERRY_REQUIRE_PRIVILEGED`).
pub fn agent_test_kubectl() -> Option<PathBuf> {
    let ready = skerry_testkit::require_root()
        && skerry_testkit::require_program(&["/bin/busybox"]).is_some()
        && skerry_testkit::require_program(&["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip"]).is_some();
    if ready {
        skerry_testkit::kubectl()
    } else {
        None
    }
}

/// A single-node cluster for an agent test: moves the test into a fresh network namespace,
/// starts `skerry server` with its embedded agent as `node` (`--node-ip NODE_IP` plus `args`)
/// with [`TEST_IMAGE`] imported into the agent's store (an air-gapped import, as on a site
/// without a registry) and `prepare` run on the data dir, and waits for the Node to be Ready.
pub fn start_single_node(
    kubectl: &Path,
    node: &str,
    args: &[&str],
    prepare: impl FnOnce(&Path),
) -> SkerryServer {
    enter_test_netns();
    let images = tempfile::tempdir().unwrap();
    let (layout, _) = super::images::busybox_layout(images.path(), TEST_IMAGE);
    let archive = super::images::archive_of(&layout, images.path());
    let mut all = vec!["--node-ip", NODE_IP];
    all.extend_from_slice(args);
    let server = SkerryServer::start_with_agent(&all, node, |data_dir| {
        import_image(&data_dir.join("agent"), &archive);
        prepare(data_dir);
    });
    eventually("the embedded agent's Node is Ready", Duration::from_secs(60), || {
        let json = server.kubectl_json(kubectl, &["get", "node", node, "-o", "json"])?;
        node_ready(&json)
            .then_some(())
            .ok_or_else(|| format!("{json}\nserver log:\n{}", server.log_text()))
    });
    server
}

/// `MemTotal` of this machine in KiB.
pub fn mem_total_kib() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").expect("reading /proc/meminfo");
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("MemTotal in /proc/meminfo")
}

/// Moves the calling test thread (and every process and thread it starts afterwards) into the
/// named network namespace `name` (`ip netns add`).
pub fn enter_named_netns(name: &str) {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(format!("/run/netns/{name}")).expect("opening the namespace");
    // SAFETY: setns has no memory-safety preconditions; it affects only this thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns({name}): {}", std::io::Error::last_os_error());
}

/// The body of `GET /` from `host:port`, sent with busybox `nc` inside `pod` through
/// `kubectl exec` (static busybox's `wget` crashes in a container without NSS libraries).
pub fn http_get_in_pod(
    server: &SkerryServer,
    kubectl: &Path,
    pod: &str,
    host: &str,
    port: u16,
) -> Result<String, String> {
    let script = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} {port}");
    let out = server.kubectl(kubectl, &["exec", pod, "--", "sh", "-c", &script]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if out.status.success() && head.starts_with("HTTP/1.") => {
            Ok(body.trim().to_string())
        }
        _ => Err(format!("{pod} → {host}:{port}: {text}{}", String::from_utf8_lossy(&out.stderr))),
    }
}

/// Imports an image archive into the image store under `data_dir` (an agent's data dir).
pub fn import_image(data_dir: &Path, archive: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_skerry"))
        .args(["ctr", "--data-dir"])
        .arg(data_dir)
        .args(["images", "import"])
        .arg(archive)
        .output()
        .unwrap();
    assert!(out.status.success(), "import: {}", String::from_utf8_lossy(&out.stderr));
}

/// Whether a Node (as JSON) has `Ready=True`.
pub fn node_ready(node: &serde_json::Value) -> bool {
    node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// A running `skerry agent`.
pub struct SkerryAgent {
    child: Option<Child>,
    /// Temp directory holding the data dir and the log.
    pub dir: tempfile::TempDir,
    /// The agent's data dir.
    pub data_dir: PathBuf,
    /// The Node name.
    pub node_name: String,
    /// The cgroup root of its pods.
    pub cgroup_root: String,
    kubeconfig: PathBuf,
    /// `(--server, --token)` when the agent joins with a token instead of a kubeconfig.
    join: Option<(String, String)>,
    /// The named network namespace (`ip netns`) the agent runs in, and its node address there;
    /// `None`: the caller's namespace and [`NODE_IP`].
    netns: Option<(String, String)>,
    log: PathBuf,
}

impl SkerryAgent {
    /// An agent for `server` named `node_name` (credentials: the admin kubeconfig), not yet
    /// started: images can be imported into its data dir first.
    pub fn new(server: &SkerryServer, node_name: &str) -> SkerryAgent {
        let dir = tempfile::Builder::new().prefix("skerry-agent-test").tempdir().unwrap();
        let data_dir = dir.path().join("data");
        std::fs::create_dir_all(&data_dir).unwrap();
        let log = dir.path().join("agent.log");
        SkerryAgent {
            child: None,
            cgroup_root: format!("skerry-test-{node_name}-{}", std::process::id()),
            data_dir,
            node_name: node_name.to_string(),
            kubeconfig: server.kubeconfig.clone(),
            join: None,
            netns: None,
            log,
            dir,
        }
    }

    /// An agent that joins `server` with `token` (its kubeconfig: `DATA_DIR/kubeconfig`,
    /// written by the join).
    pub fn joining(server: &SkerryServer, node_name: &str, token: &str) -> SkerryAgent {
        let mut agent = SkerryAgent::new(server, node_name);
        agent.kubeconfig = agent.data_dir.join("kubeconfig");
        agent.join = Some((server.url.clone(), token.to_string()));
        agent
    }

    /// The server URL a joining agent dials (default: the server's own kubeconfig URL).
    pub fn set_server(&mut self, url: &str) {
        if let Some((server, _)) = &mut self.join {
            *server = url.to_string();
        }
    }

    /// Runs the agent in the named network namespace `netns` with node address `node_ip`.
    pub fn in_netns(mut self, netns: &str, node_ip: &str) -> SkerryAgent {
        self.netns = Some((netns.to_string(), node_ip.to_string()));
        self
    }

    /// Starts (or restarts) the agent process.
    pub fn start(&mut self) {
        std::fs::write(self.dir.path().join("no-config.yaml"), "").unwrap();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let (mut command, node_ip) = match &self.netns {
            Some((netns, ip)) => {
                // nsenter, not `ip netns exec`: that one remounts /sys in a new mount
                // namespace, which hides the cgroup hierarchies under /sys/fs/cgroup.
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{netns}")).arg(env!("CARGO_BIN_EXE_skerry"));
                (c, ip.as_str())
            }
            None => (Command::new(env!("CARGO_BIN_EXE_skerry")), NODE_IP),
        };
        let child = command
            .args(["agent", "--node-name", &self.node_name, "--node-ip", node_ip])
            .args(
                self.join.iter().flat_map(|(server, token)| ["--server", server, "--token", token]),
            )
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--config")
            .arg(self.dir.path().join("no-config.yaml"))
            .args(["--eviction-hard", super::server::TEST_EVICTION_HARD])
            .args(["--image-gc-high-threshold", super::server::TEST_IMAGE_GC_HIGH])
            .env("SKERRY_CGROUP_ROOT", &self.cgroup_root)
            .env("RUST_LOG", "info,skerry_agent=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning skerry agent");
        self.child = Some(child);
    }

    /// The agent's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("agent running").id()
    }

    /// SIGKILL, like a crash: containers are left running.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The agent's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `skerry ctr --data-dir <agent data dir> ARGS`.
    pub fn ctr(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_skerry"))
            .arg("ctr")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(args)
            .env("SKERRY_CGROUP_ROOT", &self.cgroup_root)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Imports an image archive into the agent's image store.
    pub fn import_image(&self, archive: &Path) {
        import_image(&self.data_dir, archive);
    }

    /// The runtime's containers: (id, name, state) from `ctr ps`.
    pub fn containers(&self) -> Vec<(String, String, String)> {
        let out = self.ctr(&["ps"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(1)
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                Some((f.next()?.to_string(), f.next()?.to_string(), f.next()?.to_string()))
            })
            .collect()
    }
}

impl Drop for SkerryAgent {
    fn drop(&mut self) {
        self.kill9();
        let _ = Command::new(env!("CARGO_BIN_EXE_skerry"))
            .args(["agent", "--cleanup", "--node-name", &self.node_name])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--config")
            .arg(self.dir.path().join("no-config.yaml"))
            .env("SKERRY_CGROUP_ROOT", &self.cgroup_root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        remove_cgroup_root(&self.cgroup_root);
    }
}

/// Polls `f` until it returns `Ok` (every 200 ms, at most `limit`); panics with the last error.
pub fn eventually<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline => panic!("{what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}
