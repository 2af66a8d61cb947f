//! The HTTPS listener: rustls (ring) with HTTP/2 and HTTP/1.1 via ALPN, client certificates
//! verified against the cluster CA but optional (bearer tokens and the health endpoints need
//! none). Each connection's verified certificate becomes the request's [`User`]; everything else
//! is the [`ApiServer`]'s job.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ResolvesServerCert, WebPkiClientVerifier};
use rustls::RootCertStore;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::authn::{user_from_certificate, User};
use super::server::ApiServer;

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("bad {what} PEM: {reason}")]
    Pem { what: &'static str, reason: String },
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("listening on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

fn pem_certs(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, ListenError> {
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut pem.as_bytes()).collect();
    let certs = certs.map_err(|e| ListenError::Pem { what, reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(ListenError::Pem { what, reason: "no certificate found".into() });
    }
    Ok(certs)
}

/// The serving certificate and key as rustls serves them.
pub fn certified_key(
    cert_pem: &str,
    key_pem: &str,
) -> Result<rustls::sign::CertifiedKey, ListenError> {
    let provider = rustls::crypto::ring::default_provider();
    let certs = pem_certs(cert_pem, "serving certificate")?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .map_err(|e| ListenError::Pem { what: "serving key", reason: e.to_string() })?
        .ok_or_else(|| ListenError::Pem { what: "serving key", reason: "no key found".into() })?;
    // Also checks that the key matches the certificate.
    rustls::sign::CertifiedKey::from_der(certs, key, &provider)
        .map_err(|e| ListenError::Tls(e.to_string()))
}

/// The rustls server configuration: the serving certificate from `serving` (asked on every
/// handshake, so it can be renewed while serving), optional client certs from `client_ca_pem`.
pub fn tls_config(
    serving: Arc<dyn ResolvesServerCert>,
    client_ca_pem: &str,
) -> Result<rustls::ServerConfig, ListenError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in pem_certs(client_ca_pem, "client CA")? {
        roots.add(ca).map_err(|e| ListenError::Tls(e.to_string()))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| ListenError::Tls(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ListenError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(serving);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Binds `addr`; returns the listener (its local address tells the port when `addr` had 0).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ListenError> {
    TcpListener::bind(addr).await.map_err(|source| ListenError::Bind { addr, source })
}

/// Accepts connections forever, serving each on its own task.
pub async fn serve(listener: TcpListener, tls: rustls::ServerConfig, server: ApiServer) {
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(err) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%err, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let server = server.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(err) => {
                    tracing::debug!(%peer, %err, "TLS handshake failed");
                    return;
                }
            };
            let user: Option<User> = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(|cert| user_from_certificate(cert));
            let service = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
                // The audit log's `sourceIPs`.
                req.extensions_mut().insert(super::audit::PeerAddr(peer));
                let server = server.clone();
                let user = user.clone();
                async move { Ok::<_, std::convert::Infallible>(server.handle(req, user).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(err) =
                builder.serve_connection_with_upgrades(TokioIo::new(tls), service).await
            {
                tracing::debug!(%peer, %err, "connection ended with an error");
            }
        });
    }
}
