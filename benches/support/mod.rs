//! What the API benchmarks share: the admin's HTTP/2 + TLS client of a `skerry server`, free
//! ports, namespaces with their service account, percentiles. Included by each bench with
//! `mod support;`.

// Each bench uses a part of this module.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use serde_json::json;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn pem_certs(path: &Path) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    let pem = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    rustls_pemfile::certs(&mut pem.as_slice()).map(|c| c.expect("PEM certificate")).collect()
}

/// The admin's client certificate (group system:masters), HTTP/2 only.
pub fn admin_tls(data_dir: &Path) -> Arc<rustls::ClientConfig> {
    let tls_dir = data_dir.join("tls");
    let mut roots = rustls::RootCertStore::empty();
    for ca in pem_certs(&tls_dir.join("ca.crt")) {
        roots.add(ca).expect("cluster CA");
    }
    let key_pem = std::fs::read(tls_dir.join("admin.key")).expect("admin key");
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .expect("admin key PEM")
        .expect("admin key present");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(pem_certs(&tls_dir.join("admin.crt")), key)
        .expect("client certificate");
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// One HTTP/2 connection to the server at `url` (`https://host:port`).
pub async fn connect(url: &str, tls: &Arc<rustls::ClientConfig>) -> std::io::Result<Api> {
    let rest = url.strip_prefix("https://").unwrap_or(url);
    let (host, port) = rest.rsplit_once(':').ok_or(std::io::ErrorKind::InvalidInput)?;
    let port: u16 = port.parse().map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let tcp = tokio::net::TcpStream::connect((host, port)).await?;
    tcp.set_nodelay(true)?;
    let name =
        ServerName::try_from(host.to_string()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let tls = tokio_rustls::TlsConnector::from(tls.clone()).connect(name, tcp).await?;
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    Ok(Api { send, base: url.into() })
}

/// `n` HTTP/2 connections.
pub async fn connect_many(url: &str, tls: &Arc<rustls::ClientConfig>, n: usize) -> Vec<Api> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(connect(url, tls).await.expect("connecting to the API server"));
    }
    v
}

#[derive(Clone)]
pub struct Api {
    send: SendRequest<Full<Bytes>>,
    base: Arc<str>,
}

impl Api {
    pub async fn start(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<Bytes>,
    ) -> http::Response<hyper::body::Incoming> {
        let mut req = Request::builder().method(method).uri(format!("{}{path}", self.base));
        if let Some(ct) = content_type {
            req = req.header(http::header::CONTENT_TYPE, ct);
        }
        let req = req.body(Full::new(body.into())).expect("request");
        let mut send = self.send.clone();
        send.ready().await.expect("connection ready");
        send.send_request(req).await.expect("sending a request")
    }

    /// A whole request: status and body (read to the last byte, not parsed).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<Bytes>,
    ) -> (StatusCode, Bytes) {
        let resp = self.start(method, path, content_type, body).await;
        let status = resp.status();
        let body = resp.into_body().collect().await.expect("response body").to_bytes();
        (status, body)
    }

    /// A call that must answer `want`; returns the body.
    pub async fn expect(
        &self,
        want: StatusCode,
        method: Method,
        path: &str,
        body: String,
    ) -> Bytes {
        self.expect_with(want, method, path, "application/json", body).await
    }

    /// [`Api::expect`] with a body of another content type.
    pub async fn expect_with(
        &self,
        want: StatusCode,
        method: Method,
        path: &str,
        ct: &str,
        body: String,
    ) -> Bytes {
        let ct = (!body.is_empty()).then_some(ct);
        let (status, bytes) = self.call(method.clone(), path, ct, body).await;
        assert_eq!(status, want, "{method} {path}: {}", String::from_utf8_lossy(&bytes));
        bytes
    }
}

/// Creates namespace `ns` and waits for its `default` service account (pods need it).
pub async fn namespace(api: &Api, ns: &str) {
    let body = json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns } });
    api.expect(StatusCode::CREATED, Method::POST, "/api/v1/namespaces", body.to_string()).await;
    let sa = format!("/api/v1/namespaces/{ns}/serviceaccounts/default");
    let deadline = Instant::now() + Duration::from_secs(60);
    while api.call(Method::GET, &sa, None, "").await.0 != StatusCode::OK {
        assert!(Instant::now() < deadline, "no default service account in {ns}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `p` quantile of sorted samples.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

/// The load average, for the record next to each result.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// User + system CPU time of process `pid` so far, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`: state is the first, utime the 12th, stime the 13th.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let ticks: f64 =
        [11, 12].iter().filter_map(|&i| fields.get(i).and_then(|f| f.parse::<f64>().ok())).sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / hz.max(1.0)
}

/// The resident set of process `pid`, in MB (`VmRSS`).
pub fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(f64::NAN);
    kb / 1024.0
}

/// `skerry server` on a free loopback port with its own temp data dir, killed on drop; its
/// URL and the admin's TLS settings.
pub struct Server {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub url: String,
    pub tls: Arc<rustls::ClientConfig>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `skerry server ARGS` and waits until `/readyz` answers 200 to the admin.
    pub async fn start(prefix: &str, args: &[&str]) -> Server {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log file");
        let port = free_port().to_string();
        let child = Command::new(env!("CARGO_BIN_EXE_skerry"))
            .arg("server")
            .args(args)
            .args(["--bind-address", "127.0.0.1", "--https-listen-port", &port])
            .arg("--data-dir")
            .arg(&data)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting skerry");
        let mut server =
            Server { child, dir, url: format!("https://127.0.0.1:{port}"), tls: no_tls() };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("skerry server exited with {status}:\n{}", server.log());
            }
            if data.join("tls/admin.key").exists() && data.join("admin.kubeconfig").exists() {
                server.tls = admin_tls(&data);
                if let Ok(api) = connect(&server.url, &server.tls).await {
                    if api.call(Method::GET, "/readyz", None, "").await.0 == StatusCode::OK {
                        return server;
                    }
                }
            }
            assert!(Instant::now() < deadline, "server not ready in time:\n{}", server.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The server's data dir.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// User + system CPU time of the server so far, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.child.id())
    }

    /// `n` HTTP/2 connections.
    pub async fn conns(&self, n: usize) -> Vec<Api> {
        connect_many(&self.url, &self.tls, n).await
    }
}

/// A placeholder client config until the admin's certificate exists.
fn no_tls() -> Arc<rustls::ClientConfig> {
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth(),
    )
}

/// Watches `path` (a collection, `?watch=1&resourceVersion=…` added here) and sends each
/// event with the time it arrived, until the stream or the receiver ends.
pub fn watch_events(
    api: &Api,
    path: &str,
    rv: &str,
) -> tokio::sync::mpsc::UnboundedReceiver<(serde_json::Value, Instant)> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let api = api.clone();
    let path = format!(
        "{path}?watch=1&resourceVersion={rv}&allowWatchBookmarks=false&timeoutSeconds=3600"
    );
    tokio::spawn(async move {
        let resp = api.start(Method::GET, &path, None, "").await;
        assert_eq!(resp.status(), StatusCode::OK, "watch {path}");
        let mut body = resp.into_body();
        let mut buf: Vec<u8> = Vec::new();
        while let Some(Ok(frame)) = body.frame().await {
            let Ok(data) = frame.into_data() else { continue };
            let now = Instant::now();
            buf.extend_from_slice(&data);
            while let Some(end) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=end).collect();
                let Ok(event) = serde_json::from_slice(&line) else { continue };
                if tx.send((event, now)).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// The `resourceVersion` of a list of `path`, to watch from.
pub async fn list_revision(api: &Api, path: &str) -> String {
    let list = api.expect(StatusCode::OK, Method::GET, path, String::new()).await;
    let list: serde_json::Value = serde_json::from_slice(&list).expect("list JSON");
    list["metadata"]["resourceVersion"].as_str().expect("list resourceVersion").to_string()
}
