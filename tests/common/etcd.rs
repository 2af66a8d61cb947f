//! Running the real `skerry etcd` binary for end-to-end tests, and Debian's `etcdctl` (3.4,
//! `ETCDCTL_API=3`) against it. Every server gets its own temp data dir and port 0 listeners
//! (the bound URL is read from its log), and is killed when the handle drops.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Debian's etcdctl.
pub const ETCDCTL: &str = "/usr/bin/etcdctl";

/// How long a server may take to start serving.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `skerry etcd`.
pub struct SkerryEtcd {
    child: Option<Child>,
    /// Temp directory holding the data dir, the log and any sockets; removed on drop.
    pub dir: tempfile::TempDir,
    /// The data directory (inside `dir`).
    pub data_dir: PathBuf,
    /// URLs the server reported after binding, in listen order.
    pub urls: Vec<String>,
    log: PathBuf,
    args: Vec<String>,
    starts: u32,
}

impl SkerryEtcd {
    /// A server on `http://127.0.0.1:<free port>`.
    pub fn start() -> Self {
        Self::start_with(&["--listen-client-urls", "http://127.0.0.1:0"])
    }

    /// A server with these extra arguments (`{dir}` in an argument is replaced by the temp dir).
    pub fn start_with(args: &[&str]) -> Self {
        let dir = tempfile::Builder::new().prefix("skerry-etcd-test").tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let dir_str = dir.path().to_str().unwrap().to_string();
        let args: Vec<String> = args.iter().map(|a| a.replace("{dir}", &dir_str)).collect();
        let log = dir.path().join("server.log");
        let mut server =
            SkerryEtcd { child: None, dir, data_dir, urls: Vec::new(), log, args, starts: 0 };
        server.spawn();
        server
    }

    /// The first URL the server listens on.
    pub fn endpoint(&self) -> &str {
        &self.urls[0]
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let log = std::fs::File::create(&self.log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_skerry"))
            .arg("etcd")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.args)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting skerry etcd");
        self.child = Some(child);
        self.urls = self.wait_for_urls();
    }

    /// Reads the bound URLs from the "serving" log line.
    fn wait_for_urls(&mut self) -> Vec<String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let text = self.log_text();
            if let Some(line) = text.lines().find(|l| l.contains("serving etcd v3 API")) {
                return parse_urls(line);
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("skerry etcd exited with {status} before serving; log:\n{text}");
            }
            assert!(Instant::now() < deadline, "skerry etcd did not start; log:\n{text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// SIGKILL, no chance to clean up (a crash).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server running");
        let sent = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
        assert!(sent.success(), "kill -TERM failed");
        child.wait().unwrap()
    }

    /// Starts again on the same data dir and the same ports (port 0 is replaced by the port
    /// bound the first time, so clients can reconnect).
    pub fn restart(&mut self) {
        self.kill();
        let first_urls = self.urls.clone();
        if let Some(pos) = self.args.iter().position(|a| a == "--listen-client-urls") {
            self.args[pos + 1] = first_urls.join(",");
        }
        self.spawn();
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none())
    }
}

impl Drop for SkerryEtcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The quoted URLs in `urls=["http://…", …]` of the serving log line.
fn parse_urls(line: &str) -> Vec<String> {
    let start = line.find("urls=[").expect("urls in the serving line") + "urls=[".len();
    let rest = &line[start..];
    let end = rest.find(']').expect("closing bracket");
    rest[..end].split(',').map(|u| u.trim().trim_matches('"').to_string()).collect()
}

/// etcdctl against `endpoint` with extra global flags (TLS files); `stdin` is piped in.
pub fn etcdctl_full(endpoint: &str, global: &[&str], args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut child = Command::new(ETCDCTL)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--dial-timeout=5s")
        .arg("--command-timeout=15s")
        .args(global)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running etcdctl");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// etcdctl against `endpoint`; returns the output whatever the exit status.
pub fn etcdctl(endpoint: &str, args: &[&str]) -> Output {
    etcdctl_full(endpoint, &[], args, None)
}

/// etcdctl that must succeed; returns its stdout.
pub fn etcdctl_ok(endpoint: &str, args: &[&str]) -> String {
    ok(etcdctl(endpoint, args), args)
}

/// The stdout of a successful command, or a panic showing what went wrong.
pub fn ok(out: Output, args: &[&str]) -> String {
    assert!(
        out.status.success(),
        "etcdctl {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The stderr of a command that must fail.
pub fn failed(out: Output, args: &[&str]) -> String {
    assert!(
        !out.status.success(),
        "etcdctl {args:?} succeeded but should fail:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Whether the tests can run: they need Debian's etcdctl.
pub fn have_etcdctl() -> bool {
    skerry_testkit::require_program(&[ETCDCTL]).is_some()
}

/// Polls `f` every 100 ms until it returns `Some`, for up to `timeout`.
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A CA, a server certificate for 127.0.0.1/localhost and a client certificate, made with the
/// `openssl` CLI in `dir`.
pub struct TestPki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TestPki {
    /// Generates the files (needs `/usr/bin/openssl`).
    pub fn generate(dir: &Path) -> Self {
        let run = |args: &[&str]| {
            let out = Command::new("openssl").args(args).current_dir(dir).output().unwrap();
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=skerry-test-ca",
        ]);
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        for (name, cn) in [("server", "127.0.0.1"), ("client", "skerry-test-client")] {
            run(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={cn}"),
            ]);
            run(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.crt"),
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
            ]);
        }
        TestPki {
            ca: dir.join("ca.crt"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.crt"),
            client_key: dir.join("client.key"),
        }
    }
}
