//! The agent tunnel end to end: a real `skerry server`, the agent's tunnel client dialing it
//! through a TCP relay (the server never dials the node), a real container in skerry-runtime,
//! and kubectl 1.32 as the only client for `logs`, `logs -f`, `exec` (WebSocket and SPDY),
//! `port-forward` (SPDY-in-WebSocket and SPDY), and `cp`; cutting the tunnel's connection makes
//! the agent dial again.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::server::SkerryServer;
use skerry_agent::tunnel::{run_tunnel, PodLookup, TunnelConfig};
use skerry_runtime::{
    ContainerSpec, ImageConfig, LoopbackOnly, MonitorCommand, Runtime, RuntimeConfig, SandboxSpec,
};

const NODE: &str = "tunnel-node";
const POD: &str = "tunnel-pod";

/// The test's stand-in for the agent core: the one pod it runs.
struct OnePod {
    sandbox: String,
    container: String,
}

impl PodLookup for OnePod {
    fn container_id(&self, ns: &str, pod: &str, container: &str, previous: bool) -> Option<String> {
        (ns == "default" && pod == POD && container == "app" && !previous)
            .then(|| self.container.clone())
    }

    fn sandbox_id(&self, ns: &str, pod: &str) -> Option<String> {
        (ns == "default" && pod == POD).then(|| self.sandbox.clone())
    }
}

/// A TCP relay between the agent and the API server whose connections the test can cut.
struct Relay {
    port: u16,
    accepted: Arc<AtomicUsize>,
    live: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Relay {
    async fn start(target: String) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let live: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (count, tasks) = (accepted.clone(), live.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tasks.lock().unwrap().push(task.abort_handle());
            }
        });
        Relay { port, accepted, live }
    }

    /// Drops every relayed connection (the agent sees its tunnel die).
    fn cut(&self) {
        for task in self.live.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

/// kubectl with the admin kubeconfig, a private cache dir and extra environment.
fn kubectl(server: &SkerryServer, kubectl: &Path, env: &[(&str, &str)], args: &[&str]) -> Command {
    let mut cmd = Command::new(kubectl);
    cmd.arg("--kubeconfig")
        .arg(&server.kubeconfig)
        .arg("--cache-dir")
        .arg(server.dir.path().join("kube-cache"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn run(cmd: &mut Command, stdin: Option<&[u8]>) -> Output {
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().expect("spawning kubectl");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Busybox root filesystem (Debian's busybox-static) with its applet links.
fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for sub in ["bin", "etc", "proc", "sys", "dev", "tmp", "root"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in text(&list.stdout).lines().filter(|a| *a != "busybox") {
        let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    root
}

/// The runtime with one running pod; removes it on drop.
struct Node {
    runtime: Arc<Runtime>,
    sandbox: String,
    container: String,
    cgroup_root: String,
    _dir: tempfile::TempDir,
}

impl Node {
    fn start() -> Node {
        let dir = tempfile::Builder::new().prefix("skerry-tunnel-").tempdir().unwrap();
        let rootfs = busybox_rootfs(dir.path());
        let cgroup_root = format!("skerry-tunnel-test-{}", std::process::id());
        let runtime = Runtime::open(RuntimeConfig {
            state_dir: dir.path().join("state"),
            monitor: MonitorCommand {
                exe: PathBuf::from(env!("CARGO_BIN_EXE_skerry")),
                args: vec!["ctr".into(), "monitor".into()],
            },
            cgroup_root: cgroup_root.clone(),
            network: Arc::new(LoopbackOnly),
        })
        .unwrap();
        let sandbox = runtime
            .create_sandbox(SandboxSpec {
                name: POD.into(),
                hostname: POD.into(),
                ..Default::default()
            })
            .unwrap();
        let script =
            "echo hello-from-app; mkdir -p /tmp/www; echo port-forward-ok > /tmp/www/index.html; \
                      httpd -f -p 127.0.0.1:8080 -h /tmp/www & \
                      i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.2; done";
        let spec = ContainerSpec {
            name: "app".into(),
            rootfs,
            image: ImageConfig {
                entrypoint: vec!["/bin/sh".into(), "-c".into()],
                cmd: vec![script.into()],
                ..Default::default()
            },
            ..Default::default()
        };
        let container = runtime.create_container(&sandbox, spec).unwrap();
        runtime.start_container(&container).unwrap();
        Node { runtime: Arc::new(runtime), sandbox, container, cgroup_root, _dir: dir }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.runtime.remove_sandbox(&self.sandbox);
        if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in entries.flatten() {
                let root = h.path().join(&self.cgroup_root);
                for sub in ["burstable", "besteffort", ""] {
                    let _ = std::fs::remove_dir(root.join(sub));
                }
            }
        }
    }
}

/// Retries `f` until it returns `Some` (bounded: a broken tunnel fails the test, not hangs it).
fn eventually<T>(what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match f() {
            Ok(value) => return value,
            Err(last) if Instant::now() > deadline => {
                panic!("{what}: never happened; last: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Reads lines of a child's stdout until `pred` matches one (bounded by the child's lifetime).
fn wait_line(
    child: &mut Child,
    pred: impl Fn(&str) -> bool,
) -> (String, BufReader<std::process::ChildStdout>) {
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).unwrap();
        if n == 0 {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = pipe.read_to_string(&mut stderr);
            }
            let status = child.wait().map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
            panic!(
                "the command ended ({status}) before printing the expected line; stderr:\n{stderr}"
            );
        }
        if pred(&line) {
            return (line.trim().to_string(), reader);
        }
    }
}

/// A GET through a forwarded port: the body the pod's httpd served.
fn http_get(port: u16) -> Result<String, String> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
    conn.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").map_err(|e| e.to_string())?;
    let mut response = String::new();
    conn.read_to_string(&mut response).map_err(|e| e.to_string())?;
    Ok(response)
}

/// `kubectl port-forward` through the tunnel; `env` picks the protocol.
fn port_forward(server: &SkerryServer, kubectl_bin: &Path, env: &[(&str, &str)]) {
    let mut child =
        kubectl(server, kubectl_bin, env, &["port-forward", &format!("pod/{POD}"), ":8080"])
            .spawn()
            .unwrap();
    let (line, _stdout) = wait_line(&mut child, |l| l.starts_with("Forwarding from 127.0.0.1:"));
    let port: u16 = line
        .trim_start_matches("Forwarding from 127.0.0.1:")
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    for _ in 0..2 {
        let response = http_get(port).unwrap();
        assert!(response.contains("port-forward-ok"), "{env:?}: {response}");
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn kubectl_streams_reach_a_node_through_its_tunnel() {
    if !skerry_testkit::require_root()
        || skerry_testkit::require_program(&["/bin/busybox"]).is_none()
    {
        return;
    }
    let Some(kubectl_bin) = skerry_testkit::kubectl() else { return };
    let server = SkerryServer::start();
    let node = Node::start();

    // The node's identity, as the join would give it: system:node:<name> in system:nodes.
    let ca = skerry_control::pki::ClusterCa::load_or_create(&server.data_dir.join("tls")).unwrap();
    let cert = ca.issue_client(&format!("system:node:{NODE}"), Some("system:nodes")).unwrap();
    let creds = node._dir.path();
    std::fs::write(creds.join("node.crt"), &cert.cert_pem).unwrap();
    std::fs::write(creds.join("node.key"), &cert.key_pem).unwrap();

    let pod = format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{POD}","namespace":"default"}},
            "spec":{{"nodeName":"{NODE}","containers":[{{"name":"app","image":"busybox"}}]}}}}"#
    );
    let ghost = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"ghost","namespace":"default"},
            "spec":{"nodeName":"ghost-node","containers":[{"name":"app","image":"busybox"}]}}"#;
    for manifest in [pod.as_str(), ghost] {
        let mut create =
            kubectl(&server, &kubectl_bin, &[], &["create", "--validate=false", "-f", "-"]);
        ok(run(&mut create, Some(manifest.as_bytes())), "kubectl create pod");
    }
    // The pod runs, as its agent would report (kubectl port-forward refuses a pod that is not
    // Running).
    let running = r#"{"status":{"phase":"Running"}}"#;
    let patch = ["patch", "pod", POD, "--subresource=status", "--type=merge", "-p", running];
    ok(run(&mut kubectl(&server, &kubectl_bin, &[], &patch), None), "kubectl patch pod status");

    // The agent side runs on a runtime of its own, as in the agent process.
    let agent = tokio::runtime::Runtime::new().unwrap();
    let target = server.url.trim_start_matches("https://").to_string();
    let relay = agent.block_on(Relay::start(target));
    let config = TunnelConfig {
        server: format!("https://127.0.0.1:{}", relay.port),
        ca_pem: ca.cert_pem.clone(),
        cert_file: creds.join("node.crt"),
        key_file: creds.join("node.key"),
    };
    let lookup =
        Arc::new(OnePod { sandbox: node.sandbox.clone(), container: node.container.clone() });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    agent.spawn(run_tunnel(config, lookup, node.runtime.clone(), async move {
        let _ = stop_rx.await;
    }));

    // logs: once the tunnel is up, the container's output comes back.
    let logs = eventually("kubectl logs through the tunnel", || {
        let out = run(&mut kubectl(&server, &kubectl_bin, &[], &["logs", POD]), None);
        if out.status.success() {
            Ok(text(&out.stdout))
        } else {
            Err(text(&out.stderr))
        }
    });
    assert!(logs.starts_with("hello-from-app\n"), "{logs}");
    let tail = ok(
        run(&mut kubectl(&server, &kubectl_bin, &[], &["logs", POD, "--tail=1"]), None),
        "logs --tail",
    );
    assert_eq!(tail.lines().count(), 1, "{tail}");
    assert!(tail.starts_with("tick-"), "{tail}");
    let limited = ok(
        run(&mut kubectl(&server, &kubectl_bin, &[], &["logs", POD, "--limit-bytes=5"]), None),
        "logs --limit-bytes",
    );
    assert_eq!(limited, "hello");

    // logs -f: new lines keep arriving on one open request.
    let mut follow =
        kubectl(&server, &kubectl_bin, &[], &["logs", "-f", POD, "--tail=1"]).spawn().unwrap();
    let (first, mut reader) = wait_line(&mut follow, |l| l.starts_with("tick-"));
    let first: u64 = first.trim_start_matches("tick-").parse().unwrap();
    let mut line = String::new();
    loop {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "logs -f ended early");
        let n: u64 = line.trim().trim_start_matches("tick-").parse().unwrap();
        if n >= first + 3 {
            break;
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();

    // exec with stdin and an exit code: WebSocket (kubectl's default) and SPDY (its fallback).
    for env in [&[][..], &[("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")][..]] {
        let args = ["exec", "-i", POD, "--", "sh", "-c", "cat; echo to-stderr >&2; exit 3"];
        let out =
            run(&mut kubectl(&server, &kubectl_bin, env, &args), Some(b"through the tunnel\n"));
        assert_eq!(out.status.code(), Some(3), "{env:?}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "through the tunnel\n", "{env:?}");
        assert!(text(&out.stderr).contains("to-stderr"), "{env:?}: {}", text(&out.stderr));
        let out =
            run(&mut kubectl(&server, &kubectl_bin, env, &["exec", POD, "--", "hostname"]), None);
        assert_eq!(ok(out, &format!("exec hostname {env:?}")), format!("{POD}\n"), "{env:?}");
    }

    // port-forward: SPDY tunnelled in WebSocket (kubectl 1.32's default), then plain SPDY.
    port_forward(&server, &kubectl_bin, &[]);
    port_forward(&server, &kubectl_bin, &[("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")]);

    // cp: tar through exec, both ways.
    let local = node._dir.path().join("to-pod.txt");
    std::fs::write(&local, "copied through the tunnel\n").unwrap();
    let dest = format!("default/{POD}:/tmp/copied.txt");
    ok(
        run(
            &mut kubectl(&server, &kubectl_bin, &[], &["cp", local.to_str().unwrap(), &dest]),
            None,
        ),
        "cp to pod",
    );
    let back = node._dir.path().join("from-pod.txt");
    ok(
        run(&mut kubectl(&server, &kubectl_bin, &[], &["cp", &dest, back.to_str().unwrap()]), None),
        "cp from pod",
    );
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "copied through the tunnel\n");

    // A pod on a node without a tunnel: a clear 503, not a hang.
    let out = run(&mut kubectl(&server, &kubectl_bin, &[], &["logs", "ghost"]), None);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("no tunnel from its agent"), "{}", text(&out.stderr));

    // Cutting the tunnel's connection: the agent dials again and streams work again.
    let before = relay.accepted.load(Ordering::SeqCst);
    relay.cut();
    eventually("the agent dialing again", || {
        let now = relay.accepted.load(Ordering::SeqCst);
        if now > before {
            Ok(())
        } else {
            Err(format!("{now} connections"))
        }
    });
    let out = eventually("kubectl exec after the reconnect", || {
        let out = run(
            &mut kubectl(&server, &kubectl_bin, &[], &["exec", POD, "--", "echo", "back"]),
            None,
        );
        if out.status.success() {
            Ok(text(&out.stdout))
        } else {
            Err(text(&out.stderr))
        }
    });
    assert_eq!(out, "back\n");
    let _ = stop_tx.send(());
    agent.shutdown_timeout(Duration::from_secs(5));
}
