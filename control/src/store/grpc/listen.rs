//! Listeners and the server lifecycle: binds etcd-style client URLs up front (so bad URLs,
//! busy ports and unreadable certificates are reported before serving), then runs one tonic
//! server per listener over the same routes until shutdown.
//!
//! TLS is rustls with the ring provider, done here rather than by tonic so that every
//! connection, TLS or not, goes through [`AuthorityFix`]. With `client_cert_auth`, clients
//! must present a certificate signed by the trusted CA (etcd's `--client-cert-auth`); without
//! it, a trusted CA only verifies certificates that clients choose to present.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::proto::{
    PbClusterServer, PbKvServer, PbLeaseServer, PbMaintenanceServer, PbWatchServer,
};
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::sync::{mpsc, watch as signal};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tokio_stream::StreamExt;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

use super::auth::AuthService;
use super::authority::AuthorityFix;
use super::kv::KvService;
use super::lease::LeaseService;
use super::maintenance::MaintenanceService;
use super::watch::WatchService;
use super::{Front, ListenUrl, ServeConfig};
use crate::store::Store;

/// Room for gRPC framing on top of the request limit, as etcd allows (512 KiB): a request a
/// little over the limit reaches the handler and gets etcd's "request is too large".
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;
/// How long shutdown waits for open connections before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long a client may take to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("listening on {url}: {source}")]
    Bind { url: String, source: std::io::Error },
    #[error("https:// listener {url} needs --cert-file and --key-file")]
    TlsMissing { url: String },
    #[error("reading {what} {path}: {source}")]
    ReadTls { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{what} {path} holds no PEM {expected}")]
    BadPem { what: &'static str, path: PathBuf, expected: &'static str },
    #[error("--client-cert-auth needs --trusted-ca-file")]
    ClientAuthWithoutCa,
    #[error("TLS configuration: {0}")]
    Tls(#[source] rustls::Error),
    #[error("serving {url}: {source}")]
    Serve { url: String, source: tonic::transport::Error },
}

/// A bound listener.
enum Bound {
    Tcp { url: String, listener: TcpListener, tls: bool },
    Unix { url: String, listener: UnixListener, path: PathBuf },
}

impl Bound {
    fn url(&self) -> &str {
        match self {
            Bound::Tcp { url, .. } | Bound::Unix { url, .. } => url,
        }
    }
}

/// A server whose listeners are bound; [`BoundServer::run`] serves until shutdown.
pub struct BoundServer {
    front: Arc<Front>,
    listeners: Vec<Bound>,
    tls: Option<TlsAcceptor>,
    shutdown: signal::Sender<bool>,
}

/// Binds every listener of `config` and checks the TLS files.
pub(super) async fn bind(
    store: Arc<dyn Store>,
    config: ServeConfig,
) -> Result<BoundServer, ServeError> {
    let needs_tls = config.listen.iter().any(|l| matches!(l, ListenUrl::Https(_)));
    let tls = if needs_tls { Some(tls_config(&config).await?) } else { None };
    let mut listeners = Vec::new();
    for url in &config.listen {
        listeners.push(bind_one(url).await?);
    }
    let client_urls = if config.advertise_client_urls.is_empty() {
        listeners.iter().map(|l| l.url().to_string()).collect()
    } else {
        config.advertise_client_urls.clone()
    };
    let (shutdown, shutdown_rx) = signal::channel(false);
    let front = Arc::new(Front { store, config, client_urls, shutdown: shutdown_rx });
    Ok(BoundServer { front, listeners, tls, shutdown })
}

async fn bind_one(url: &ListenUrl) -> Result<Bound, ServeError> {
    match url {
        ListenUrl::Http(addr) | ListenUrl::Https(addr) => {
            let tls = matches!(url, ListenUrl::Https(_));
            let scheme = if tls { "https" } else { "http" };
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Bind { url: format!("{scheme}://{addr}"), source })?;
            // Report the bound port (port 0 picks one).
            let local = listener.local_addr().unwrap_or(*addr);
            Ok(Bound::Tcp { url: format!("{scheme}://{local}"), listener, tls })
        }
        ListenUrl::Unix(path) => {
            let url = format!("unix://{}", path.display());
            remove_stale_socket(path)
                .map_err(|source| ServeError::Bind { url: url.clone(), source })?;
            let listener = UnixListener::bind(path)
                .map_err(|source| ServeError::Bind { url: url.clone(), source })?;
            Ok(Bound::Unix { url, listener, path: path.clone() })
        }
    }
}

/// A socket file left by a server that did not shut down cleanly is removed; any other file
/// at that path is left alone (binding then fails with "address in use").
fn remove_stale_socket(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path),
        _ => Ok(()),
    }
}

async fn read_pem(what: &'static str, path: &Path) -> Result<Vec<u8>, ServeError> {
    tokio::fs::read(path).await.map_err(|source| ServeError::ReadTls {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Reads and checks the TLS files and builds the rustls configuration (ring provider, HTTP/2
/// by ALPN), so a wrong path or file is reported by name at startup.
async fn tls_config(config: &ServeConfig) -> Result<TlsAcceptor, ServeError> {
    let url = config
        .listen
        .iter()
        .find(|l| matches!(l, ListenUrl::Https(_)))
        .map(|l| format!("{l:?}"))
        .unwrap_or_default();
    let files = config.tls.as_ref().ok_or(ServeError::TlsMissing { url })?;
    let bad = |what, path: &Path, expected| ServeError::BadPem {
        what,
        path: path.to_path_buf(),
        expected,
    };
    let cert_pem = read_pem("certificate", &files.cert_file).await?;
    let certs = certificates(&cert_pem);
    if certs.is_empty() {
        return Err(bad("certificate", &files.cert_file, "certificate"));
    }
    let key_pem = read_pem("key", &files.key_file).await?;
    let Ok(Some(key)) = rustls_pemfile::private_key(&mut key_pem.as_slice()) else {
        return Err(bad("key", &files.key_file, "private key"));
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(ServeError::Tls)?;
    let builder = match &files.trusted_ca_file {
        Some(ca_file) => {
            let ca_pem = read_pem("trusted CA", ca_file).await?;
            let mut roots = rustls::RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(certificates(&ca_pem));
            if added == 0 {
                return Err(bad("trusted CA", ca_file, "certificate"));
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            // Without --client-cert-auth a presented certificate is still checked.
            let verifier =
                if files.client_cert_auth { verifier } else { verifier.allow_unauthenticated() };
            let verifier = verifier
                .build()
                .map_err(|e| ServeError::Tls(rustls::Error::General(e.to_string())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None if files.client_cert_auth => return Err(ServeError::ClientAuthWithoutCa),
        None => builder.with_no_client_auth(),
    };
    // Also checks that the key matches the certificate.
    let mut tls = builder.with_single_cert(certs, key).map_err(ServeError::Tls)?;
    tls.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(tls)))
}

/// The PEM certificates in `pem` (unparsable entries skipped).
fn certificates(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    let mut reader = pem;
    rustls_pemfile::certs(&mut reader).filter_map(Result::ok).collect()
}

/// Accepted TLS connections: each handshake runs in its own task, so a slow client does not
/// hold up the others. Ends when the server drops the stream.
fn tls_incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
) -> ReceiverStream<std::io::Result<AuthorityFix<tokio_rustls::server::TlsStream<TcpStream>>>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = tx.closed() => return,
            };
            let (tcp, peer) = match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(AuthorityFix::new(tls))).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

impl BoundServer {
    /// The bound listeners as URLs (with the actual port when port 0 was asked for).
    pub fn local_urls(&self) -> Vec<String> {
        self.listeners.iter().map(|l| l.url().to_string()).collect()
    }

    fn routes(&self) -> Routes {
        let max_recv = self.front.config.max_request_bytes.saturating_add(GRPC_OVERHEAD_BYTES);
        let front = &self.front;
        let maintenance = Arc::new(MaintenanceService { front: front.clone() });
        Routes::new(
            PbKvServer::new(KvService { front: front.clone() })
                .max_decoding_message_size(max_recv)
                .max_encoding_message_size(usize::MAX),
        )
        .add_service(
            PbWatchServer::new(WatchService { front: front.clone() })
                .max_decoding_message_size(max_recv)
                .max_encoding_message_size(usize::MAX),
        )
        .add_service(
            PbLeaseServer::new(LeaseService { front: front.clone() })
                .max_decoding_message_size(max_recv),
        )
        .add_service(
            PbMaintenanceServer::from_arc(maintenance.clone())
                .max_decoding_message_size(max_recv)
                .max_encoding_message_size(usize::MAX),
        )
        .add_service(PbClusterServer::from_arc(maintenance).max_decoding_message_size(max_recv))
        .add_service(AuthService)
    }

    /// Serves until `shutdown` resolves, then closes streams and waits briefly for clients.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
        let routes = self.routes();
        let mut servers = tokio::task::JoinSet::new();
        let mut sockets = Vec::new();
        for bound in self.listeners {
            let mut stop = self.shutdown.subscribe();
            let signal = async move {
                let _ = stop.wait_for(|down| *down).await;
            };
            let mut builder = Server::builder()
                .max_concurrent_streams(u32::MAX)
                .http2_keepalive_interval(Some(Duration::from_secs(2 * 60 * 60)));
            let router = builder.add_routes(routes.clone());
            let url = bound.url().to_string();
            match bound {
                Bound::Tcp { listener, tls, .. } => match (&self.tls, tls) {
                    (Some(acceptor), true) => {
                        let incoming = tls_incoming(listener, acceptor.clone());
                        servers.spawn(async move {
                            let res = router.serve_with_incoming_shutdown(incoming, signal).await;
                            res.map_err(|source| ServeError::Serve { url, source })
                        });
                    }
                    _ => {
                        let incoming = TcpIncoming::from(listener)
                            .with_nodelay(Some(true))
                            .map(|conn| conn.map(AuthorityFix::new));
                        servers.spawn(async move {
                            let res = router.serve_with_incoming_shutdown(incoming, signal).await;
                            res.map_err(|source| ServeError::Serve { url, source })
                        });
                    }
                },
                Bound::Unix { listener, path, .. } => {
                    sockets.push(path);
                    let incoming =
                        UnixListenerStream::new(listener).map(|conn| conn.map(AuthorityFix::new));
                    servers.spawn(async move {
                        let res = router.serve_with_incoming_shutdown(incoming, signal).await;
                        res.map_err(|source| ServeError::Serve { url, source })
                    });
                }
            }
        }
        let mut result = Ok(());
        tokio::select! {
            () = shutdown => {}
            Some(joined) = servers.join_next() => {
                // A listener failed: stop the others too.
                result = flatten(joined);
            }
        }
        let _ = self.shutdown.send(true);
        let drain = async {
            while let Some(joined) = servers.join_next().await {
                if let (Ok(()), Err(e)) = (&result, flatten(joined)) {
                    result = Err(e);
                }
            }
        };
        if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
            tracing::warn!("clients still connected after {SHUTDOWN_GRACE:?}; closing anyway");
        }
        for path in sockets {
            let _ = std::fs::remove_file(path);
        }
        result
    }
}

fn flatten(
    joined: Result<Result<(), ServeError>, tokio::task::JoinError>,
) -> Result<(), ServeError> {
    match joined {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "listener task failed");
            Ok(())
        }
    }
}
