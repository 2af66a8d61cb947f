//! The OCI distribution client: fetches manifests and blobs from one registry endpoint,
//! answering auth challenges (tokens cached per endpoint and repository), and downloads blobs
//! into a partial file that survives dropped connections: each retry asks for the missing tail
//! with an HTTP `Range` request, with exponential backoff, and the digest is checked at the end.

use std::collections::HashMap;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use sha2::{Digest as _, Sha256};

use crate::auth;
use crate::error::{ImageError, IoContext, Result};
use crate::manifest::{Descriptor, MANIFEST_ACCEPT};
use crate::registry_config::{Credentials, DockerConfig, Endpoint, RegistryConfig};
use crate::transport::{read_body, Transport, IDLE_TIMEOUT};

/// Largest manifest or config accepted (registries cap manifests at 4 MiB).
const MAX_DOCUMENT: usize = 8 << 20;
/// Consecutive failed attempts (without any byte of progress) before a blob download gives up.
const MAX_ATTEMPTS_WITHOUT_PROGRESS: u32 = 6;
/// First backoff delay; doubles per failed attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// A fetched manifest: its bytes, declared media type and computed digest.
pub(crate) struct FetchedManifest {
    pub body: Bytes,
    pub content_type: Option<String>,
    pub digest: String,
}

/// Talks to the endpoints of one pull.
pub(crate) struct RegistryClient {
    transport: Transport,
    config: Arc<RegistryConfig>,
    docker_config: Option<DockerConfig>,
    registry: String,
    tokens: Mutex<HashMap<String, HeaderValue>>,
}

impl RegistryClient {
    /// A client for images of `registry` (the reference's registry, used to find credentials).
    pub fn new(
        config: Arc<RegistryConfig>,
        docker_config: Option<DockerConfig>,
        registry: &str,
    ) -> Result<Self> {
        Ok(RegistryClient {
            transport: Transport::new(&config)?,
            config,
            docker_config,
            registry: registry.to_string(),
            tokens: Mutex::new(HashMap::new()),
        })
    }

    fn credentials(&self, ep: &Endpoint) -> Result<Option<Credentials>> {
        if let Some(auth) = self.config.endpoint_config(&ep.host).and_then(|c| c.auth.as_ref()) {
            if let Some(c) = auth.credentials(&format!("configs.{}.auth", ep.host))? {
                return Ok(Some(c));
            }
        }
        let dc = match &self.docker_config {
            Some(dc) => dc,
            None => return Ok(None),
        };
        let by_host = dc.get(&ep.host);
        let by_registry = if ep.upstream { dc.get(&self.registry) } else { None };
        Ok(by_host.or(by_registry).cloned())
    }

    /// GET `path` on the endpoint, answering one auth challenge.
    async fn get(
        &self,
        ep: &Endpoint,
        path: &str,
        headers: HeaderMap,
    ) -> Result<Response<Incoming>> {
        let url = format!("{}/v2/{}/{}", ep.base(), ep.repository, path);
        let key = format!("{} {}", ep.base(), ep.repository);
        let cached = self.tokens.lock().ok().and_then(|t| t.get(&key).cloned());
        let mut h = headers.clone();
        if let Some(v) = &cached {
            h.insert(http::header::AUTHORIZATION, v.clone());
        }
        let resp = self.transport.send(Method::GET, &url, h, None).await?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let challenge = resp
            .headers()
            .get(http::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(auth::parse_challenge);
        let unauthorized = |detail: &str| ImageError::Unauthorized {
            registry: ep.base(),
            repository: ep.repository.clone(),
            detail: detail.into(),
        };
        let challenge = challenge.ok_or_else(|| unauthorized("401 without a usable challenge"))?;
        let creds = self.credentials(ep)?;
        let value =
            auth::answer(&self.transport, &challenge, creds.as_ref(), &ep.base(), &ep.repository)
                .await?;
        if let Ok(mut t) = self.tokens.lock() {
            t.insert(key, value.clone());
        }
        let mut h = headers;
        h.insert(http::header::AUTHORIZATION, value);
        let resp = self.transport.send(Method::GET, &url, h, None).await?;
        if resp.status() == StatusCode::UNAUTHORIZED || resp.status() == StatusCode::FORBIDDEN {
            let detail = if creds.is_some() {
                "credentials rejected"
            } else {
                "registry requires credentials and none are configured"
            };
            return Err(unauthorized(detail));
        }
        Ok(resp)
    }

    /// Fetches a manifest by tag or digest; the digest is computed over the exact bytes.
    pub async fn manifest(&self, ep: &Endpoint, reference: &str) -> Result<FetchedManifest> {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::ACCEPT, HeaderValue::from_static(MANIFEST_ACCEPT));
        let resp = self.get(ep, &format!("manifests/{reference}"), headers).await?;
        let what = format!("manifest {}:{reference} at {}", ep.repository, ep.base());
        check_status(&resp, &what, ep)?;
        let content_type = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = read_body(resp, MAX_DOCUMENT, &ep.base()).await?;
        let digest = sha256_digest(&body);
        if reference.starts_with("sha256:") && digest != reference {
            return Err(ImageError::DigestMismatch {
                what,
                expected: reference.into(),
                actual: digest,
            });
        }
        Ok(FetchedManifest { body, content_type, digest })
    }

    /// Fetches a small blob (a config) into memory, verified.
    pub async fn small_blob(&self, ep: &Endpoint, desc: &Descriptor) -> Result<Bytes> {
        let what = format!("blob {} at {}", desc.digest, ep.base());
        if desc.size as usize > MAX_DOCUMENT {
            return Err(ImageError::InvalidContent { what, detail: "config too large".into() });
        }
        let resp = self.get(ep, &format!("blobs/{}", desc.digest), HeaderMap::new()).await?;
        check_status(&resp, &what, ep)?;
        let body = read_body(resp, MAX_DOCUMENT, &ep.base()).await?;
        verify(&what, desc, body.len() as u64, &sha256_digest(&body))?;
        Ok(body)
    }

    /// Downloads a blob into `partial`, resuming whatever it already holds; verifies size and
    /// digest. `progress` receives the number of bytes present after each chunk.
    pub async fn blob_to_file(
        &self,
        ep: &Endpoint,
        desc: &Descriptor,
        partial: &Path,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<()> {
        let what = format!("blob {} at {}", desc.digest, ep.base());
        let mut writer = BlobWriter::open(partial.to_path_buf(), desc.size).await?;
        progress(writer.len);
        let mut failures = 0u32;
        let mut backoff = FIRST_BACKOFF;
        while writer.len < desc.size {
            let before = writer.len;
            match self.fetch_range(ep, desc, &mut writer, progress, &what).await {
                Ok(()) => {}
                Err(e) if e.is_transient() => {
                    if writer.len > before {
                        failures = 0;
                        backoff = FIRST_BACKOFF;
                    }
                    failures += 1;
                    if failures >= MAX_ATTEMPTS_WITHOUT_PROGRESS {
                        return Err(e);
                    }
                    tracing::warn!(%what, bytes = writer.len, error = %e, "blob download interrupted; resuming");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(e) => return Err(e),
            }
        }
        let (len, digest) = writer.finish().await?;
        if let Err(e) = verify(&what, desc, len, &digest) {
            let _ = std::fs::remove_file(partial);
            return Err(e);
        }
        Ok(())
    }

    async fn fetch_range(
        &self,
        ep: &Endpoint,
        desc: &Descriptor,
        writer: &mut BlobWriter,
        progress: &(dyn Fn(u64) + Send + Sync),
        what: &str,
    ) -> Result<()> {
        let mut headers = HeaderMap::new();
        if writer.len > 0 {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes={}-", writer.len)) {
                headers.insert(http::header::RANGE, v);
            }
        }
        let resp = self.get(ep, &format!("blobs/{}", desc.digest), headers).await?;
        match resp.status() {
            StatusCode::PARTIAL_CONTENT => {
                let start = resp
                    .headers()
                    .get(http::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("bytes "))
                    .and_then(|v| v.split('-').next())
                    .and_then(|v| v.parse::<u64>().ok());
                if start != Some(writer.len) {
                    writer.reset().await?;
                    return self.fetch_plain(ep, desc, writer, progress, what).await;
                }
            }
            StatusCode::OK => {
                // The registry ignored the Range header: start over.
                if writer.len > 0 {
                    writer.reset().await?;
                    progress(0);
                }
            }
            StatusCode::RANGE_NOT_SATISFIABLE => {
                writer.reset().await?;
                return Err(ImageError::Connect {
                    endpoint: ep.base(),
                    detail: format!("range not satisfiable for {what}; restarting"),
                });
            }
            _ => {
                check_status(&resp, what, ep)?;
            }
        }
        stream_into(resp, writer, desc.size, progress, &ep.base()).await
    }

    async fn fetch_plain(
        &self,
        ep: &Endpoint,
        desc: &Descriptor,
        writer: &mut BlobWriter,
        progress: &(dyn Fn(u64) + Send + Sync),
        what: &str,
    ) -> Result<()> {
        let resp = self.get(ep, &format!("blobs/{}", desc.digest), HeaderMap::new()).await?;
        check_status(&resp, what, ep)?;
        progress(0);
        stream_into(resp, writer, desc.size, progress, &ep.base()).await
    }
}

async fn stream_into(
    resp: Response<Incoming>,
    writer: &mut BlobWriter,
    size: u64,
    progress: &(dyn Fn(u64) + Send + Sync),
    endpoint: &str,
) -> Result<()> {
    let mut body = resp.into_body();
    let conn = |detail: String| ImageError::Connect { endpoint: endpoint.into(), detail };
    loop {
        let frame = tokio::time::timeout(IDLE_TIMEOUT, body.frame())
            .await
            .map_err(|_| conn("download stalled (timed out)".into()))?;
        match frame {
            None => {
                if writer.len < size {
                    return Err(conn(format!(
                        "connection closed at {} of {size} bytes",
                        writer.len
                    )));
                }
                return Ok(());
            }
            Some(Err(e)) => return Err(conn(e.to_string())),
            Some(Ok(f)) => {
                if let Ok(data) = f.into_data() {
                    if writer.len + data.len() as u64 > size {
                        return Err(ImageError::SizeMismatch {
                            what: format!("blob from {endpoint}"),
                            expected: size,
                            actual: writer.len + data.len() as u64,
                        });
                    }
                    writer.write(data).await?;
                    progress(writer.len);
                }
            }
        }
    }
}

fn check_status(resp: &Response<Incoming>, what: &str, ep: &Endpoint) -> Result<()> {
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    Err(match status {
        StatusCode::NOT_FOUND => ImageError::NotFound { what: what.to_string() },
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ImageError::Unauthorized {
            registry: ep.base(),
            repository: ep.repository.clone(),
            detail: format!("{status}"),
        },
        s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => ImageError::Connect {
            endpoint: ep.base(),
            detail: format!("{what}: server answered {s}"),
        },
        s => ImageError::Registry { registry: ep.base(), detail: format!("{what}: {s}") },
    })
}

/// Checks a blob's length and digest against its descriptor.
pub(crate) fn verify(what: &str, desc: &Descriptor, len: u64, digest: &str) -> Result<()> {
    if len != desc.size {
        return Err(ImageError::SizeMismatch {
            what: what.into(),
            expected: desc.size,
            actual: len,
        });
    }
    if digest != desc.digest {
        return Err(ImageError::DigestMismatch {
            what: what.into(),
            expected: desc.digest.clone(),
            actual: digest.into(),
        });
    }
    Ok(())
}

/// `sha256:<hex>` of `data`.
pub(crate) fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

enum WriterMsg {
    Data(Bytes),
    Reset,
}

/// Appends to a partial blob file and hashes it on a blocking thread, off the executor.
struct BlobWriter {
    len: u64,
    tx: Option<tokio::sync::mpsc::Sender<WriterMsg>>,
    task: Option<tokio::task::JoinHandle<Result<String>>>,
}

impl BlobWriter {
    /// Opens `path`, hashing what it already holds (a previous attempt's bytes).
    async fn open(path: PathBuf, size: u64) -> Result<Self> {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<u64>>();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<WriterMsg>(32);
        let task = tokio::task::spawn_blocking(move || -> Result<String> {
            let start = (|| -> Result<(std::fs::File, Sha256, u64)> {
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .read(true)
                    .write(true)
                    .open(&path)
                    .ctx("opening", &path)?;
                let mut hasher = Sha256::new();
                let mut len = 0u64;
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    let n = file.read(&mut buf).ctx("reading", &path)?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                    len += n as u64;
                }
                if len > size {
                    file.set_len(0).ctx("truncating", &path)?;
                    file.rewind().ctx("seeking", &path)?;
                    hasher = Sha256::new();
                    len = 0;
                }
                Ok((file, hasher, len))
            })();
            let (mut file, mut hasher, len) = match start {
                Ok(v) => v,
                Err(e) => {
                    let _ = ready_tx.send(Err(ImageError::Io {
                        context: e.to_string(),
                        source: std::io::Error::other("partial blob"),
                    }));
                    return Err(e);
                }
            };
            let _ = ready_tx.send(Ok(len));
            while let Some(msg) = rx.blocking_recv() {
                match msg {
                    WriterMsg::Data(d) => {
                        hasher.update(&d);
                        file.write_all(&d).ctx("writing", &path)?;
                    }
                    WriterMsg::Reset => {
                        file.set_len(0).ctx("truncating", &path)?;
                        file.rewind().ctx("seeking", &path)?;
                        hasher = Sha256::new();
                    }
                }
            }
            file.sync_all().ctx("syncing", &path)?;
            Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
        });
        let len = match ready_rx.await {
            Ok(Ok(len)) => len,
            Ok(Err(_)) | Err(_) => return Err(join_writer(task).await.err().unwrap_or_else(gone)),
        };
        Ok(BlobWriter { len, tx: Some(tx), task: Some(task) })
    }

    async fn send(&mut self, msg: WriterMsg) -> Result<()> {
        let sent = match &self.tx {
            Some(tx) => tx.send(msg).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The writer thread stopped: report its error (disk full, ...).
        self.tx = None;
        match self.task.take() {
            Some(task) => Err(join_writer(task).await.err().unwrap_or_else(gone)),
            None => Err(gone()),
        }
    }

    async fn write(&mut self, data: Bytes) -> Result<()> {
        let n = data.len() as u64;
        self.send(WriterMsg::Data(data)).await?;
        self.len += n;
        Ok(())
    }

    async fn reset(&mut self) -> Result<()> {
        self.send(WriterMsg::Reset).await?;
        self.len = 0;
        Ok(())
    }

    /// Flushes and returns (length, digest).
    async fn finish(mut self) -> Result<(u64, String)> {
        self.tx = None;
        let task = self.task.take().ok_or_else(gone)?;
        Ok((self.len, join_writer(task).await?))
    }
}

async fn join_writer(task: tokio::task::JoinHandle<Result<String>>) -> Result<String> {
    task.await.map_err(|e| ImageError::Io {
        context: "blob writer thread".into(),
        source: std::io::Error::other(e.to_string()),
    })?
}

fn gone() -> ImageError {
    ImageError::Io {
        context: "blob writer".into(),
        source: std::io::Error::other("writer thread ended early"),
    }
}
