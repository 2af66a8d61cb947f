//! Running the real `skerry server` (`--disable-agent` unless asked) for end-to-end tests: each server gets its
//! own temp data dir and an OS-chosen port (read back from the kubeconfig it writes), is ready
//! once `/readyz` answers, and is killed when the handle drops. [`ApiClient`] sends raw HTTPS
//! requests (HTTP/1.1, the admin client certificate or a bearer token) for the error-class
//! tests; `kubectl` and the Python client use the kubeconfig.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio::io::AsyncBufReadExt;

/// How long a server may take to start serving.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The eviction thresholds of test agents: memory only (see `SkerryServer::spawn`).
pub const TEST_EVICTION_HARD: &str = "memory.available<100Mi";
/// Periodic image GC of test agents: off (100 %), see `SkerryServer::spawn`.
pub const TEST_IMAGE_GC_HIGH: &str = "100";

/// A running `skerry server`.
pub struct SkerryServer {
    child: Option<Child>,
    /// Temp directory holding the data dir and the log; removed on drop.
    pub dir: tempfile::TempDir,
    /// The data directory (inside `dir`).
    pub data_dir: PathBuf,
    /// `data_dir/admin.kubeconfig`.
    pub kubeconfig: PathBuf,
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    log: PathBuf,
    args: Vec<String>,
    /// `--https-listen-port` (0: the OS picks; see `restart_same_port`).
    port: String,
    /// The embedded agent's cgroup root, when it runs (see [`SkerryServer::start_with_agent`]).
    agent_cgroup_root: Option<String>,
}

impl SkerryServer {
    /// A server on 127.0.0.1 with an OS-chosen port.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A server with extra arguments (`{dir}` in an argument is replaced by the temp dir).
    pub fn start_with(args: &[&str]) -> Self {
        Self::start_inner(args, None, |_| {})
    }

    /// A server with its embedded agent (node `node_name`, pods under a cgroup root of their
    /// own); `prepare` runs on the data dir first (e.g. to import images into
    /// `data_dir/agent`). On drop the agent's containers, sandboxes and devices are cleaned up.
    pub fn start_with_agent(args: &[&str], node_name: &str, prepare: impl FnOnce(&Path)) -> Self {
        let cgroup_root = format!("skerry-test-{node_name}-{}", std::process::id());
        let mut all = vec!["--node-name", node_name, "--cgroup-root", &cgroup_root];
        all.extend_from_slice(args);
        let all: Vec<String> = all.iter().map(|a| a.to_string()).collect();
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        Self::start_inner(&all, Some(cgroup_root.clone()), prepare)
    }

    fn start_inner(
        args: &[&str],
        agent_cgroup_root: Option<String>,
        prepare: impl FnOnce(&Path),
    ) -> Self {
        let dir = tempfile::Builder::new().prefix("skerry-server-test").tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let dir_str = dir.path().to_str().unwrap().to_string();
        let args: Vec<String> = args.iter().map(|a| a.replace("{dir}", &dir_str)).collect();
        let log = dir.path().join("server.log");
        let kubeconfig = data_dir.join("admin.kubeconfig");
        let mut server = SkerryServer {
            child: None,
            dir,
            data_dir,
            kubeconfig,
            url: String::new(),
            log,
            args,
            port: "0".into(),
            agent_cgroup_root,
        };
        std::fs::create_dir_all(&server.data_dir).unwrap();
        prepare(&server.data_dir);
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let _ = std::fs::remove_file(&self.kubeconfig);
        let log = std::fs::File::create(&self.log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_skerry"))
            .arg("server")
            .args(self.agent_cgroup_root.is_none().then_some("--disable-agent"))
            // Loopback unless the test binds elsewhere (agents in other namespaces must reach it).
            .args(
                (!self.args.iter().any(|a| a == "--bind-address"))
                    .then_some(["--bind-address", "127.0.0.1"])
                    .into_iter()
                    .flatten(),
            )
            // Disk thresholds would evict every test pod on a machine with little free disk
            // (the kubelet's defaults are 10 % / 15 % free): tests keep the memory one only.
            .args(
                (self.agent_cgroup_root.is_some()
                    && !self.args.iter().any(|a| a == "--eviction-hard"))
                .then_some(["--eviction-hard", TEST_EVICTION_HARD])
                .into_iter()
                .flatten(),
            )
            // Likewise periodic image GC (85 % disk use by default) would delete test images
            // imported before the pods that use them exist.
            .args(
                (self.agent_cgroup_root.is_some()
                    && !self.args.iter().any(|a| a == "--image-gc-high-threshold"))
                .then_some(["--image-gc-high-threshold", TEST_IMAGE_GC_HIGH])
                .into_iter()
                .flatten(),
            )
            .args(["--https-listen-port", &self.port, "--data-dir"])
            .arg(&self.data_dir)
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning skerry server");
        self.child = Some(child);
        self.url = self.wait_ready();
    }

    fn wait_ready(&mut self) -> String {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("skerry server exited with {status}:\n{}", self.log_text());
            }
            if let Ok(text) = std::fs::read_to_string(&self.kubeconfig) {
                if let Some(url) = text.lines().find_map(|l| l.trim().strip_prefix("server: ")) {
                    let url = url.to_string();
                    let client = ApiClient::admin(&self.data_dir, &url);
                    // A thread of its own: the caller may be inside an async runtime.
                    let ready = std::thread::spawn(move || {
                        runtime().block_on(client.request("GET", "/readyz", None, b""))
                    })
                    .join()
                    .unwrap();
                    if ready.map(|r| r.status == 200).unwrap_or(false) {
                        return url;
                    }
                }
            }
            assert!(Instant::now() < deadline, "server not ready in time:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A client authenticating as the admin (client certificate, group system:masters).
    pub fn admin(&self) -> ApiClient {
        ApiClient::admin(&self.data_dir, &self.url)
    }

    /// A client authenticating with a bearer token (or none).
    pub fn anonymous(&self, token: Option<&str>) -> ApiClient {
        ApiClient::with(&self.data_dir, &self.url, None, token.map(String::from))
    }

    /// Runs kubectl 1.32 with the admin kubeconfig and a private cache dir.
    pub fn kubectl(&self, kubectl: &Path, args: &[&str]) -> Output {
        self.kubectl_stdin(kubectl, args, None)
    }

    /// kubectl's JSON output (`-o json` among `args`), or its stderr.
    pub fn kubectl_json(&self, kubectl: &Path, args: &[&str]) -> Result<Value, String> {
        let out = self.kubectl(kubectl, args);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
    }

    /// Waits (bounded) until pod `name` is Running.
    pub fn wait_running(&self, kubectl: &Path, name: &str, limit: Duration) {
        super::agent::eventually(&format!("pod {name} runs"), limit, || {
            let pod = self.kubectl_json(kubectl, &["get", "pod", name, "-o", "json"])?;
            if pod["status"]["phase"] == "Running" {
                Ok(())
            } else {
                Err(pod.to_string())
            }
        });
    }

    /// Runs kubectl with `stdin` piped in.
    pub fn kubectl_stdin(&self, kubectl: &Path, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let cache = self.dir.path().join("kube-cache");
        let mut child = Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&cache)
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning kubectl");
        if let Some(text) = stdin {
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// Stops the server (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Adds arguments for the next (re)start.
    pub fn add_args(&mut self, args: &[&str]) {
        self.args.extend(args.iter().map(|a| a.to_string()));
    }

    /// Kills and starts the server again on the same data dir (the port may change).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Kills and starts the server again on the same data dir and port (clients holding the
    /// old kubeconfig, like a running agent, reconnect).
    pub fn restart_same_port(&mut self) {
        self.port = self.url.rsplit(':').next().unwrap_or("0").to_string();
        self.restart();
    }
}

impl Drop for SkerryServer {
    fn drop(&mut self) {
        self.kill();
        let Some(cgroup_root) = &self.agent_cgroup_root else { return };
        let agent_dir = self.data_dir.join("agent");
        let _ = Command::new(env!("CARGO_BIN_EXE_skerry"))
            .args(["agent", "--cleanup", "--config", "/dev/null", "--data-dir"])
            .arg(&agent_dir)
            .arg("--kubeconfig")
            .arg(agent_dir.join("kubeconfig"))
            .env("SKERRY_CGROUP_ROOT", cgroup_root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        super::agent::remove_cgroup_root(cgroup_root);
    }
}

/// kubectl's output, asserting success.
pub fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A small current-thread runtime for the synchronous parts of a test.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// A response: status, headers and the whole body.
#[derive(Debug)]
pub struct ApiResponse {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

impl ApiResponse {
    /// The body as JSON (panics with the body text when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("{e}: status {} body {:?}", self.status, String::from_utf8_lossy(&self.body))
        })
    }
}

/// A raw HTTPS client for the API server (one connection per request, HTTP/1.1).
#[derive(Clone)]
pub struct ApiClient {
    tls: Arc<rustls::ClientConfig>,
    host: String,
    port: u16,
    token: Option<String>,
}

fn pem_certs(path: &Path) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    let pem = std::fs::read(path).unwrap();
    rustls_pemfile::certs(&mut pem.as_slice()).map(|c| c.unwrap()).collect()
}

impl ApiClient {
    /// The admin's client.
    pub fn admin(data_dir: &Path, url: &str) -> ApiClient {
        Self::with(data_dir, url, Some("admin"), None)
    }

    /// A client presenting `data_dir/tls/<cert>.crt` (if any) and a bearer token (if any).
    pub fn with(
        data_dir: &Path,
        url: &str,
        cert: Option<&str>,
        token: Option<String>,
    ) -> ApiClient {
        let tls_dir = data_dir.join("tls");
        let mut roots = rustls::RootCertStore::empty();
        for ca in pem_certs(&tls_dir.join("ca.crt")) {
            roots.add(ca).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match cert {
            Some(name) => {
                let certs = pem_certs(&tls_dir.join(format!("{name}.crt")));
                let key_pem = std::fs::read(tls_dir.join(format!("{name}.key"))).unwrap();
                let key = rustls_pemfile::private_key(&mut key_pem.as_slice()).unwrap().unwrap();
                builder.with_client_auth_cert(certs, key).unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let rest = url.strip_prefix("https://").unwrap();
        let (host, port) = rest.rsplit_once(':').unwrap();
        ApiClient {
            tls: Arc::new(config),
            host: host.to_string(),
            port: port.parse().unwrap(),
            token,
        }
    }

    async fn connect(
        &self,
    ) -> std::io::Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await?;
        let name = ServerName::try_from(self.host.clone()).unwrap();
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone()).connect(name, tcp).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        Ok(sender)
    }

    fn build(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> http::Request<Full<Bytes>> {
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", format!("{}:{}", self.host, self.port));
        if let Some(token) = &self.token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(Full::new(Bytes::copy_from_slice(body))).unwrap()
    }

    /// Sends a request with an optional Content-Type.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> std::io::Result<ApiResponse> {
        let headers: Vec<(&str, &str)> =
            content_type.map(|c| ("content-type", c)).into_iter().collect();
        self.request_with(method, path, &headers, body).await
    }

    /// Sends a request with the given headers.
    pub async fn request_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<ApiResponse> {
        let mut sender = self.connect().await?;
        let resp = sender
            .send_request(self.build(method, path, headers, body))
            .await
            .map_err(std::io::Error::other)?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.map_err(std::io::Error::other)?.to_bytes();
        Ok(ApiResponse { status, headers, body: body.to_vec() })
    }

    /// `request` with a JSON body, answering status and JSON.
    pub async fn json(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap()).unwrap_or_default();
        let ct = body.map(|_| "application/json");
        let resp = self.request(method, path, ct, &bytes).await.unwrap();
        let value = if resp.body.is_empty() { Value::Null } else { resp.json() };
        (resp.status, value)
    }

    /// Starts a watch: returns the status and a reader of its event lines.
    pub async fn watch(&self, path: &str) -> (u16, WatchStream) {
        let mut sender = self.connect().await.unwrap();
        let resp = sender.send_request(self.build("GET", path, &[], b"")).await.unwrap();
        let status = resp.status().as_u16();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut body = resp.into_body();
        tokio::spawn(async move {
            let _keep = sender;
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { break };
                if let Ok(data) = frame.into_data() {
                    if tx.send(data).is_err() {
                        break;
                    }
                }
            }
        });
        let reader = tokio_util_lines(rx);
        (status, WatchStream { lines: reader })
    }
}

fn tokio_util_lines(
    rx: tokio::sync::mpsc::UnboundedReceiver<Bytes>,
) -> tokio::io::Lines<tokio::io::BufReader<ChannelReader>> {
    tokio::io::BufReader::new(ChannelReader { rx, buf: Bytes::new() }).lines()
}

/// An `AsyncRead` over body chunks.
pub struct ChannelReader {
    rx: tokio::sync::mpsc::UnboundedReceiver<Bytes>,
    buf: Bytes,
}

impl tokio::io::AsyncRead for ChannelReader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        out: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        while self.buf.is_empty() {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(chunk)) => self.buf = chunk,
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = out.remaining().min(self.buf.len());
        let chunk = self.buf.split_to(n);
        out.put_slice(&chunk);
        Poll::Ready(Ok(()))
    }
}

/// The events of a watch, one JSON object per line.
pub struct WatchStream {
    lines: tokio::io::Lines<tokio::io::BufReader<ChannelReader>>,
}

impl WatchStream {
    /// The next event, or `None` when the stream ended or nothing came within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<Value> {
        match tokio::time::timeout(timeout, self.lines.next_line()).await {
            Ok(Ok(Some(line))) => Some(serde_json::from_str(&line).unwrap()),
            _ => None,
        }
    }

    /// The next event that is not a BOOKMARK.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<Value> {
        loop {
            let event = self.next(timeout).await?;
            if event["type"] != "BOOKMARK" {
                return Some(event);
            }
        }
    }
}

impl ApiClient {
    /// Starts a request whose body never finishes: the server holds its in-flight slot until the
    /// returned connection is dropped.
    pub async fn hold_request(&self, method: &str, path: &str) -> HeldRequest {
        use tokio::io::AsyncWriteExt;
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await.unwrap();
        let name = ServerName::try_from(self.host.clone()).unwrap();
        let mut tls =
            tokio_rustls::TlsConnector::from(self.tls.clone()).connect(name, tcp).await.unwrap();
        let auth = match &self.token {
            Some(token) => format!("authorization: Bearer {token}\r\n"),
            None => String::new(),
        };
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}:{}\r\n{auth}content-type: application/json\r\ncontent-length: 1000\r\n\r\n{{",
            self.host, self.port
        );
        tls.write_all(head.as_bytes()).await.unwrap();
        tls.flush().await.unwrap();
        HeldRequest(Some(tls))
    }
}

/// A request left unfinished on purpose (see [`ApiClient::hold_request`]).
pub struct HeldRequest(Option<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>);

impl HeldRequest {
    /// Whether the server already answered it (e.g. refused it with a 429 because another
    /// request held the slot at that moment), so it no longer occupies a slot.
    pub async fn was_answered(&mut self) -> bool {
        use tokio::io::AsyncReadExt;
        let Some(stream) = self.0.as_mut() else { return true };
        let mut buf = [0u8; 64];
        matches!(
            tokio::time::timeout(std::time::Duration::from_millis(10), stream.read(&mut buf)).await,
            Ok(Ok(_)) | Ok(Err(_))
        )
    }
}

impl Drop for HeldRequest {
    fn drop(&mut self) {
        self.0.take();
    }
}
