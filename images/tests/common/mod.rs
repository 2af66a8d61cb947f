//! Test fixtures shared by the images integration tests: a real `docker-registry` on a loopback
//! port (plain HTTP, TLS with a generated CA, htpasswd auth), OCI layouts built by the test
//! itself (busybox-static rootfs, crafted layers, multi-arch indexes), pushed with `skopeo`,
//! a TCP proxy that cuts one connection mid-transfer, and tar/archive builders.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use sha2::{Digest, Sha256};

/// `sha256:<hex>`.
pub fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A test CA plus a server certificate for 127.0.0.1 / localhost.
pub struct TestCa {
    pub dir: PathBuf,
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

impl TestCa {
    /// Generates the CA and server certificate with the `openssl` CLI.
    pub fn generate(dir: &Path) -> TestCa {
        std::fs::create_dir_all(dir).unwrap();
        let p = |n: &str| dir.join(n);
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        run(Command::new("openssl")
            .args(["req", "-x509"])
            .args(ec)
            .args(["-days", "2", "-subj", "/CN=skerry-test-ca"])
            .arg("-keyout")
            .arg(p("ca.key"))
            .arg("-out")
            .arg(p("ca.crt")));
        run(Command::new("openssl")
            .arg("req")
            .args(ec)
            .args(["-subj", "/CN=127.0.0.1"])
            .arg("-keyout")
            .arg(p("server.key"))
            .arg("-out")
            .arg(p("server.csr")));
        std::fs::write(p("ext.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
            .arg("-in")
            .arg(p("server.csr"))
            .arg("-CA")
            .arg(p("ca.crt"))
            .arg("-CAkey")
            .arg(p("ca.key"))
            .arg("-extfile")
            .arg(p("ext.cnf"))
            .arg("-out")
            .arg(p("server.crt")));
        TestCa {
            dir: dir.into(),
            ca_cert: p("ca.crt"),
            server_cert: p("server.crt"),
            server_key: p("server.key"),
        }
    }
}

impl TestCa {
    /// A client certificate signed by this CA, as `(client.cert, client.key)` in `dir`.
    pub fn client_cert(&self, dir: &Path) -> (PathBuf, PathBuf) {
        std::fs::create_dir_all(dir).unwrap();
        let (cert, key, csr) = (dir.join("client.cert"), dir.join("client.key"), dir.join("c.csr"));
        run(Command::new("openssl")
            .args(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
            .args(["-subj", "/CN=skerry-test-client"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&csr));
        std::fs::write(dir.join("client-ext.cnf"), "extendedKeyUsage=clientAuth\n").unwrap();
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
            .arg("-in")
            .arg(&csr)
            .arg("-CA")
            .arg(&self.ca_cert)
            .arg("-CAkey")
            .arg(self.dir.join("ca.key"))
            .arg("-extfile")
            .arg(dir.join("client-ext.cnf"))
            .arg("-out")
            .arg(&cert));
        (cert, key)
    }
}

/// A `docker-registry` process; killed on drop.
pub struct Registry {
    child: Child,
    pub port: u16,
    pub storage: PathBuf,
    pub tls: bool,
    pub creds: Option<(String, String)>,
    pub ca_dir: Option<PathBuf>,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    /// Starts a registry storing under `dir`; `tls` enables HTTPS, `htpasswd` basic auth.
    pub fn start(dir: &Path, tls: Option<&TestCa>, htpasswd: Option<(&str, &str)>) -> Registry {
        Registry::start_full(dir, tls, htpasswd, None)
    }

    /// Starts an HTTPS registry that requires client certificates signed by `ca`; skopeo pushes
    /// with a client certificate from the registry's cert dir.
    pub fn start_mutual_tls(dir: &Path, ca: &TestCa) -> Registry {
        let clientcas = format!("    clientcas:\n      - {}\n", ca.ca_cert.display());
        let reg = Registry::start_full_tls(dir, Some(ca), None, None, &clientcas);
        let certs = reg.ca_dir.clone().expect("a TLS registry has a cert dir");
        ca.client_cert(&certs);
        reg
    }

    fn start_with_auth(dir: &Path, auth_yaml: &str, creds: (&str, &str)) -> Registry {
        let mut r = Registry::start_full(dir, None, None, Some(auth_yaml));
        r.creds = Some((creds.0.to_string(), creds.1.to_string()));
        r
    }

    fn start_full(
        dir: &Path,
        tls: Option<&TestCa>,
        htpasswd: Option<(&str, &str)>,
        auth_yaml: Option<&str>,
    ) -> Registry {
        Registry::start_full_tls(dir, tls, htpasswd, auth_yaml, "")
    }

    fn start_full_tls(
        dir: &Path,
        tls: Option<&TestCa>,
        htpasswd: Option<(&str, &str)>,
        auth_yaml: Option<&str>,
        extra_tls_yaml: &str,
    ) -> Registry {
        let program = PathBuf::from("/usr/bin/docker-registry");
        let port = skerry_testkit::free_port();
        let storage = dir.join("storage");
        std::fs::create_dir_all(&storage).unwrap();
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: skerry-test\n",
            storage.display()
        );
        if let Some(ca) = tls {
            cfg += &format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                ca.server_cert.display(),
                ca.server_key.display()
            );
            cfg += extra_tls_yaml;
        }
        if let Some((u, pw)) = htpasswd {
            let file = dir.join("htpasswd");
            run(Command::new("htpasswd").args(["-Bbc"]).arg(&file).args([u, pw]));
            cfg += &format!(
                "auth:\n  htpasswd:\n    realm: skerry-test\n    path: {}\n",
                file.display()
            );
        }
        if let Some(a) = auth_yaml {
            cfg += a;
        }
        let cfg_path = dir.join("config.yml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let child = Command::new(program)
            .arg("serve")
            .arg(&cfg_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting docker-registry");
        let ca_dir = tls.map(|ca| {
            let d = dir.join("certs.d");
            std::fs::create_dir_all(&d).unwrap();
            std::fs::copy(&ca.ca_cert, d.join("ca.crt")).unwrap();
            d
        });
        let reg = Registry {
            child,
            port,
            storage,
            tls: tls.is_some(),
            creds: htpasswd.map(|(u, p)| (u.to_string(), p.to_string())),
            ca_dir,
        };
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return reg;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("docker-registry did not start on port {port}");
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Pushes `oci:<layout>:<tag>` to `<host>/<repo>:<tag>` with skopeo (all platforms).
    pub fn push(&self, layout: &Path, tag: &str, repo: &str) {
        let mut cmd = Command::new("skopeo");
        cmd.args(["--insecure-policy", "copy", "--all", "--preserve-digests", "-q"]);
        if let Some(d) = &self.ca_dir {
            cmd.arg("--dest-cert-dir").arg(d);
        } else {
            cmd.arg("--dest-tls-verify=false");
        }
        if let Some((u, p)) = &self.creds {
            cmd.arg("--dest-creds").arg(format!("{u}:{p}"));
        }
        cmd.arg(format!("oci:{}:{tag}", layout.display()));
        cmd.arg(format!("docker://{}/{repo}:{tag}", self.host()));
        run(&mut cmd);
    }

    /// The stored data file of a blob (to corrupt it).
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage.join(format!("docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]))
    }
}

/// Builds an OCI image layout directory.
pub struct Layout {
    pub dir: PathBuf,
    manifests: Vec<serde_json::Value>,
}

/// A file in a test layer.
pub enum Entry<'a> {
    File(&'a str, &'a [u8], u32),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
}

/// An uncompressed tar of `entries` (names used verbatim, even malicious ones).
pub fn tar_of(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        let (name, data): (&str, &[u8]) = match e {
            Entry::File(n, d, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(d.len() as u64);
                (n, d)
            }
            Entry::Dir(n) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                (n, &[])
            }
            Entry::Symlink(n, target) | Entry::HardLink(n, target) => {
                h.set_entry_type(if matches!(e, Entry::Symlink(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                });
                h.set_mode(0o777);
                h.set_size(0);
                set_raw_name(h.as_old_mut().linkname.as_mut(), target);
                (n, &[])
            }
        };
        // Raw name bytes: the tar crate's set_path would refuse `..` and absolute paths.
        set_raw_name(h.as_old_mut().name.as_mut(), name);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

fn set_raw_name(field: &mut [u8], name: &str) {
    assert!(name.len() < field.len(), "test names must fit the ustar field");
    field.fill(0);
    field[..name.len()].copy_from_slice(name.as_bytes());
}

/// gzip of `data`.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// A busybox-static rootfs layer: /bin/busybox plus applet symlinks and a marker file.
pub fn busybox_layer(marker: &str) -> Vec<u8> {
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static installed");
    tar_of(&[
        Entry::Dir("bin/"),
        Entry::File("bin/busybox", &busybox, 0o755),
        Entry::Symlink("bin/sh", "busybox"),
        Entry::Symlink("bin/cat", "busybox"),
        Entry::Symlink("bin/ls", "busybox"),
        Entry::Dir("etc/"),
        Entry::File("etc/marker", marker.as_bytes(), 0o644),
    ])
}

/// An image to add to a layout.
pub struct ImageSpec<'a> {
    pub arch: &'a str,
    pub variant: Option<&'a str>,
    /// Layer tars (uncompressed); gzip-compressed when `gzip` is set.
    pub layers: Vec<Vec<u8>>,
    pub gzip: bool,
    pub cmd: Vec<&'a str>,
}

/// Descriptor JSON.
pub fn desc(media_type: &str, data: &[u8]) -> serde_json::Value {
    json!({"mediaType": media_type, "digest": digest(data), "size": data.len()})
}

impl Layout {
    pub fn new(dir: &Path) -> Layout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout { dir: dir.to_path_buf(), manifests: Vec::new() }
    }

    /// Writes a blob and returns its digest.
    pub fn blob(&self, data: &[u8]) -> String {
        let d = digest(data);
        std::fs::write(self.dir.join("blobs/sha256").join(&d[7..]), data).unwrap();
        d
    }

    /// Adds an image's blobs; returns the manifest bytes.
    pub fn image(&self, spec: &ImageSpec) -> Vec<u8> {
        let diff_ids: Vec<String> = spec.layers.iter().map(|l| digest(l)).collect();
        let mut variant = json!(null);
        if let Some(v) = spec.variant {
            variant = json!(v);
        }
        let mut config = json!({
            "architecture": spec.arch, "os": "linux",
            "config": {"Cmd": spec.cmd, "Env": ["PATH=/bin"], "WorkingDir": "/", "ExposedPorts": {"8080/tcp": {}}},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        if spec.variant.is_some() {
            config["variant"] = variant;
        }
        let config = serde_json::to_vec(&config).unwrap();
        self.blob(&config);
        let layers: Vec<serde_json::Value> = spec
            .layers
            .iter()
            .map(|l| {
                let (data, mt) = if spec.gzip {
                    (gzip(l), "application/vnd.oci.image.layer.v1.tar+gzip")
                } else {
                    (l.clone(), "application/vnd.oci.image.layer.v1.tar")
                };
                self.blob(&data);
                desc(mt, &data)
            })
            .collect();
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": desc("application/vnd.oci.image.config.v1+json", &config),
            "layers": layers,
        }))
        .unwrap();
        self.blob(&manifest);
        manifest
    }

    /// Tags a single-platform image in index.json.
    pub fn tag_manifest(&mut self, manifest: &[u8], tag: &str) {
        let mut d = desc("application/vnd.oci.image.manifest.v1+json", manifest);
        d["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        self.manifests.push(d);
        self.write_index();
    }

    /// Adds a multi-platform index of `(manifest, arch, variant)` tagged `tag`; returns it.
    pub fn tag_index(&mut self, entries: &[(&[u8], &str, Option<&str>)], tag: &str) -> Vec<u8> {
        let manifests: Vec<serde_json::Value> = entries
            .iter()
            .map(|(m, arch, variant)| {
                let mut d = desc("application/vnd.oci.image.manifest.v1+json", m);
                let mut p = json!({"architecture": arch, "os": "linux"});
                if let Some(v) = variant {
                    p["variant"] = json!(v);
                }
                d["platform"] = p;
                d
            })
            .collect();
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        }))
        .unwrap();
        self.blob(&index);
        let mut d = desc("application/vnd.oci.image.index.v1+json", &index);
        d["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        self.manifests.push(d);
        self.write_index();
        index
    }

    fn write_index(&self) {
        let index = json!({"schemaVersion": 2, "manifests": self.manifests});
        std::fs::write(self.dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    }

    /// The layout as a tar archive (what `skopeo copy ... oci-archive:` writes).
    pub fn archive(&self, out: &Path) {
        let mut b = tar::Builder::new(std::fs::File::create(out).unwrap());
        b.append_dir_all(".", &self.dir).unwrap();
        b.finish().unwrap();
    }
}

/// The host's architecture in OCI terms (the busybox binary runs only there).
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    }
}

/// A TCP proxy that forwards to `upstream` and cuts the first connection that carries more
/// than `cut_after` bytes towards the client. Counts cuts and `Range:` requests.
pub struct CuttingProxy {
    pub port: u16,
    pub cuts: Arc<AtomicU64>,
    pub range_requests: Arc<AtomicU64>,
    /// Blob GETs seen (manifests excluded); config blobs count too.
    pub layer_gets: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

impl CuttingProxy {
    pub fn start(upstream: SocketAddr, cut_after: u64) -> CuttingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cuts = Arc::new(AtomicU64::new(0));
        let range_requests = Arc::new(AtomicU64::new(0));
        let layer_gets = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let armed = Arc::new(Mutex::new(true));
        let (c, r, s) = (cuts.clone(), range_requests.clone(), stop.clone());
        let lg = layer_gets.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let Ok(server) = TcpStream::connect(upstream) else { continue };
                let (c, r, armed, lg) = (c.clone(), r.clone(), armed.clone(), lg.clone());
                let (client2, server2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                // client -> server: watch for Range headers.
                std::thread::spawn(move || {
                    let (mut from, mut to) = (client2, server2);
                    let mut buf = [0u8; 16384];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        let text = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
                        if text.contains("\r\nrange: bytes=") {
                            r.fetch_add(1, Ordering::SeqCst);
                        }
                        if text.starts_with("get /v2/") && text.contains("/blobs/sha256:") {
                            lg.fetch_add(1, Ordering::SeqCst);
                        }
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
                // server -> client: cut once after `cut_after` bytes.
                std::thread::spawn(move || {
                    let (mut from, mut to) = (server, client);
                    let mut buf = [0u8; 16384];
                    let mut sent = 0u64;
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        let mut take = n;
                        let mut cut = false;
                        if sent + n as u64 > cut_after {
                            let mut a = armed.lock().unwrap();
                            if *a {
                                *a = false;
                                cut = true;
                                take = (cut_after - sent) as usize;
                            }
                        }
                        if to.write_all(&buf[..take]).is_err() {
                            break;
                        }
                        sent += take as u64;
                        if cut {
                            c.fetch_add(1, Ordering::SeqCst);
                            let _ = to.shutdown(std::net::Shutdown::Both);
                            let _ = from.shutdown(std::net::Shutdown::Both);
                            break;
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        CuttingProxy { port, cuts, range_requests, layer_gets, stop }
    }
}

/// Random bytes (incompressible layer content) from a simple xorshift generator.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A registries.yaml making `reg` reachable (plain HTTP, or TLS with its CA, plus auth).
pub fn registry_yaml(reg: &Registry, ca: Option<&TestCa>, auth: Option<(&str, &str)>) -> String {
    let mut s = format!("configs:\n  \"{}\":\n", reg.host());
    if ca.is_none() {
        s += "    plain_http: true\n";
    }
    if let Some(ca) = ca {
        s += &format!("    tls:\n      ca_file: {}\n", ca.ca_cert.display());
    }
    if let Some((u, p)) = auth {
        s += &format!("    auth:\n      username: {u}\n      password: {p}\n");
    }
    s
}

/// A bearer-token server for `docker-registry`'s token auth: it checks HTTP basic credentials
/// and returns an RS256 JWT (signed with the `openssl` CLI) granting the requested scope.
pub struct TokenServer {
    pub port: u16,
    pub cert: PathBuf,
    stop: Arc<AtomicBool>,
    /// Token requests answered with a token.
    pub issued: Arc<AtomicU64>,
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

pub const TOKEN_ISSUER: &str = "skerry-test-issuer";
pub const TOKEN_SERVICE: &str = "skerry-test-registry";

fn b64url(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

impl TokenServer {
    pub fn start(dir: &Path, user: &str, password: &str) -> TokenServer {
        use base64::Engine;
        std::fs::create_dir_all(dir).unwrap();
        let key = dir.join("token.key");
        let cert = dir.join("token.crt");
        run(Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=token",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert));
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .output()
            .unwrap()
            .stdout;
        let x5c = base64::engine::general_purpose::STANDARD.encode(der);
        let expected = format!(
            "basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let issued = Arc::new(AtomicU64::new(0));
        let (s, n) = (stop.clone(), issued.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => req.extend_from_slice(&buf[..k]),
                    }
                }
                let text = String::from_utf8_lossy(&req).to_string();
                let authorized = text.lines().any(|l| {
                    l.to_ascii_lowercase().starts_with("authorization:")
                        && l.to_ascii_lowercase().ends_with(&expected.to_ascii_lowercase())
                });
                let path = text.split_whitespace().nth(1).unwrap_or("").to_string();
                let query = path.split_once('?').map(|(_, q)| q).unwrap_or("");
                let scopes: Vec<String> = query
                    .split('&')
                    .filter_map(|kv| kv.strip_prefix("scope="))
                    .map(percent_decode)
                    .collect();
                let response = if !authorized {
                    "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_string()
                } else {
                    let access: Vec<serde_json::Value> = scopes
                        .iter()
                        .filter_map(|s| {
                            let mut parts = s.splitn(3, ':');
                            let (t, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                            Some(serde_json::json!({"type": t, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
                        })
                        .collect();
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_secs();
                    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [x5c]});
                    let claims = serde_json::json!({"iss": TOKEN_ISSUER, "sub": "alice", "aud": TOKEN_SERVICE,
                        "exp": now + 3600, "nbf": now - 60, "iat": now, "jti": format!("{now}-{}", n.load(Ordering::SeqCst)), "access": access});
                    let signing_input = format!(
                        "{}.{}",
                        b64url(&serde_json::to_vec(&header).unwrap()),
                        b64url(&serde_json::to_vec(&claims).unwrap())
                    );
                    let mut child = Command::new("openssl")
                        .args(["dgst", "-sha256", "-sign"])
                        .arg(&key)
                        .stdin(Stdio::piped())
                        .stdout(Stdio::piped())
                        .spawn()
                        .unwrap();
                    child.stdin.take().unwrap().write_all(signing_input.as_bytes()).unwrap();
                    let sig = child.wait_with_output().unwrap().stdout;
                    let token = format!("{signing_input}.{}", b64url(&sig));
                    n.fetch_add(1, Ordering::SeqCst);
                    let body = serde_json::json!({"token": token, "access_token": token, "expires_in": 3600}).to_string();
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                };
                let _ = conn.write_all(response.as_bytes());
            }
        });
        TokenServer { port, cert, stop, issued }
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Registry {
    /// Starts a plain-HTTP registry that uses `tokens` for bearer-token auth.
    pub fn start_with_tokens(dir: &Path, tokens: &TokenServer, creds: (&str, &str)) -> Registry {
        Registry::start_with_auth(
            dir,
            &format!(
                "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                tokens.port,
                tokens.cert.display()
            ),
            creds,
        )
    }
}
