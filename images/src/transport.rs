//! HTTP(S) to registries: one hyper HTTP/1.1 connection per request over TCP or rustls (ring),
//! with per-host TLS settings from the registry config (custom CAs, client certificates,
//! skip-verify), connect and idle timeouts so a stalled edge link fails instead of hanging, and
//! redirect following (registries send blob downloads to object storage).

use std::collections::HashMap;
use std::io::BufReader;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::error::{ImageError, Result};
use crate::registry_config::{RegistryConfig, TlsConfig};

/// How long a TCP+TLS connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the registry may go silent (headers or body) before the link counts as dead.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Redirects followed per request.
const MAX_REDIRECTS: usize = 5;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A parsed `scheme://host[:port]/path?query`.
#[derive(Debug, Clone)]
pub(crate) struct Url {
    pub tls: bool,
    /// `host[:port]` as written (the Host header and the TLS config key).
    pub authority: String,
    pub host: String,
    pub port: u16,
    pub path_and_query: String,
}

impl Url {
    pub fn parse(url: &str) -> Result<Self> {
        let bad = || ImageError::Registry { registry: url.into(), detail: "malformed URL".into() };
        let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
        let tls = match scheme {
            "https" => true,
            "http" => false,
            _ => return Err(bad()),
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(bad)?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad())?,
                None => default_port,
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().map_err(|_| bad())?),
                None => (authority.to_string(), default_port),
            }
        };
        if host.is_empty() {
            return Err(bad());
        }
        let path_and_query =
            if path.starts_with('/') { path.to_string() } else { format!("/{path}") };
        Ok(Url { tls, authority: authority.to_string(), host, port, path_and_query })
    }

    /// Resolves a `Location` header against this URL.
    fn join(&self, location: &str) -> Result<Url> {
        if location.contains("://") {
            Url::parse(location)
        } else if location.starts_with('/') {
            Ok(Url { path_and_query: location.to_string(), ..self.clone() })
        } else {
            let base = self.path_and_query.rsplit_once('/').map(|(b, _)| b).unwrap_or("");
            Ok(Url { path_and_query: format!("{base}/{location}"), ..self.clone() })
        }
    }
}

/// Sends requests; cheap to share.
pub(crate) struct Transport {
    default_tls: Arc<ClientConfig>,
    host_tls: HashMap<String, Arc<ClientConfig>>,
}

impl Transport {
    /// Builds the TLS configurations named in `config`.
    pub fn new(config: &RegistryConfig) -> Result<Self> {
        let default_tls = Arc::new(build_tls(None, "default")?);
        let mut host_tls = HashMap::new();
        for (host, c) in &config.configs {
            if let Some(tls) = &c.tls {
                host_tls.insert(host.clone(), Arc::new(build_tls(Some(tls), host)?));
            }
        }
        Ok(Transport { default_tls, host_tls })
    }

    /// Sends one request and follows redirects; `Authorization` is dropped on a host change.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: Option<Bytes>,
    ) -> Result<Response<Incoming>> {
        let mut url = Url::parse(url)?;
        let mut headers = headers;
        for _ in 0..=MAX_REDIRECTS {
            let resp = self.send_once(&method, &url, &headers, body.clone()).await?;
            let redirect = matches!(
                resp.status(),
                StatusCode::MOVED_PERMANENTLY
                    | StatusCode::FOUND
                    | StatusCode::SEE_OTHER
                    | StatusCode::TEMPORARY_REDIRECT
                    | StatusCode::PERMANENT_REDIRECT
            );
            let location = resp.headers().get(http::header::LOCATION).and_then(|l| l.to_str().ok());
            match (redirect, location) {
                (true, Some(loc)) => {
                    let next = url.join(loc)?;
                    if next.authority != url.authority {
                        headers.remove(http::header::AUTHORIZATION);
                    }
                    url = next;
                }
                _ => return Ok(resp),
            }
        }
        Err(ImageError::Registry {
            registry: url.authority.clone(),
            detail: "too many redirects".into(),
        })
    }

    async fn send_once(
        &self,
        method: &Method,
        url: &Url,
        headers: &HeaderMap,
        body: Option<Bytes>,
    ) -> Result<Response<Incoming>> {
        let endpoint = format!("{}://{}", if url.tls { "https" } else { "http" }, url.authority);
        let conn_err = |detail: String| ImageError::Connect { endpoint: endpoint.clone(), detail };
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect((url.host.as_str(), url.port)),
        )
        .await
        .map_err(|_| conn_err("connect timed out".into()))?
        .map_err(|e| conn_err(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = if url.tls {
            let cfg = self.host_tls.get(&url.authority).unwrap_or(&self.default_tls).clone();
            let name = ServerName::try_from(url.host.clone())
                .map_err(|e| conn_err(format!("bad TLS server name: {e}")))?;
            let tls = tokio::time::timeout(
                CONNECT_TIMEOUT,
                tokio_rustls::TlsConnector::from(cfg).connect(name, tcp),
            )
            .await
            .map_err(|_| conn_err("TLS handshake timed out".into()))?
            .map_err(|e| conn_err(format!("TLS: {e}")))?;
            Box::new(tls)
        } else {
            Box::new(tcp)
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| conn_err(e.to_string()))?;
        tokio::spawn(async move {
            // The connection task ends when the response body is dropped or fully read.
            let _ = conn.await;
        });
        let mut builder = Request::builder().method(method.clone()).uri(&url.path_and_query);
        if let Some(h) = builder.headers_mut() {
            h.extend(headers.clone());
            if let Ok(v) = HeaderValue::from_str(&url.authority) {
                h.insert(http::header::HOST, v);
            }
            h.entry(http::header::USER_AGENT)
                .or_insert(HeaderValue::from_static(concat!("skerry/", env!("CARGO_PKG_VERSION"))));
        }
        let req = builder
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| conn_err(format!("building request: {e}")))?;
        tokio::time::timeout(IDLE_TIMEOUT, sender.send_request(req))
            .await
            .map_err(|_| conn_err("no response (timed out)".into()))?
            .map_err(|e| conn_err(e.to_string()))
    }
}

/// Reads a whole (small) body with the idle timeout; `limit` guards against huge documents.
pub(crate) async fn read_body(
    resp: Response<Incoming>,
    limit: usize,
    endpoint: &str,
) -> Result<Bytes> {
    let mut body = resp.into_body();
    let mut out = Vec::new();
    loop {
        let frame = tokio::time::timeout(IDLE_TIMEOUT, body.frame()).await.map_err(|_| {
            ImageError::Connect { endpoint: endpoint.into(), detail: "read timed out".into() }
        })?;
        match frame {
            None => return Ok(Bytes::from(out)),
            Some(Err(e)) => {
                return Err(ImageError::Connect {
                    endpoint: endpoint.into(),
                    detail: e.to_string(),
                })
            }
            Some(Ok(f)) => {
                if let Ok(data) = f.into_data() {
                    out.extend_from_slice(&data);
                    if out.len() > limit {
                        return Err(ImageError::Registry {
                            registry: endpoint.into(),
                            detail: format!("response larger than {limit} bytes"),
                        });
                    }
                }
            }
        }
    }
}

fn build_tls(tls: Option<&TlsConfig>, host: &str) -> Result<ClientConfig> {
    let cfg_err =
        |detail: String| ImageError::Config { source_name: format!("configs.{host}.tls"), detail };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| cfg_err(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    match tls.and_then(|t| t.ca_file.as_deref()) {
        Some(ca) => {
            for cert in read_certs(ca).map_err(cfg_err)? {
                roots.add(cert).map_err(|e| cfg_err(format!("{ca}: {e}")))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let builder = if tls.is_some_and(|t| t.insecure_skip_verify) {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(SkipVerify(provider)))
    } else {
        builder.with_root_certificates(roots)
    };
    let mut config = match tls.and_then(|t| t.cert_file.as_deref().zip(t.key_file.as_deref())) {
        Some((cert, key)) => {
            let certs = read_certs(cert).map_err(cfg_err)?;
            let key = read_key(key).map_err(cfg_err)?;
            builder.with_client_auth_cert(certs, key).map_err(|e| cfg_err(e.to_string()))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn read_certs(path: &str) -> std::result::Result<Vec<CertificateDer<'static>>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
    let certs = rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| format!("{path}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{path}: no PEM certificates"));
    }
    Ok(certs)
}

fn read_key(path: &str) -> std::result::Result<PrivateKeyDer<'static>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
    rustls_pemfile::private_key(&mut BufReader::new(file))
        .map_err(|e| format!("{path}: {e}"))?
        .ok_or_else(|| format!("{path}: no PEM private key"))
}

/// `insecure_skip_verify` (registries) and kubelet's HTTPS probes: accepts any certificate but
/// still checks the handshake signatures (the peer must hold the certificate's key).
#[derive(Debug)]
pub struct SkipVerify(pub Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for SkipVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_join() {
        let u = Url::parse("https://[::1]:5000/v2/x?a=b").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.tls), ("::1", 5000, true));
        let u = Url::parse("http://reg.local/v2/").unwrap();
        assert_eq!((u.port, u.authority.as_str()), (80, "reg.local"));
        assert_eq!(u.join("/blob").unwrap().path_and_query, "/blob");
        assert_eq!(u.join("https://s3/x").unwrap().authority, "s3");
        assert!(Url::parse("ftp://x").is_err());
        assert!(Url::parse("http://:80/").is_err());
    }
}
