//! The agent tunnel, agent side: nodes sit behind NAT, so the agent dials the API server and
//! the server's requests for logs, exec, attach and port-forward come back over that one
//! connection.
//!
//! ```text
//! agent ──TLS (node client cert)──▶ GET /skerry/v1/tunnel, Upgrade: skerry-tunnel/1 ──▶ 101
//!       ◀── HTTP/2 over the upgraded bytes: the API server is the client, the agent the server
//!       ◀── one CONNECT per request = one byte stream, carrying HTTP/1.1 to `streaming::serve`
//! ```
//!
//! Both ends send HTTP/2 PINGs every 5 s and drop a link whose ping is not answered in 10 s;
//! the agent then dials again with exponential backoff (1 s doubling to 30 s, back to 1 s once
//! a tunnel is up). The client certificate is read from its files at every dial, so a renewed
//! certificate is used from the next reconnect on.
//!
//! How the agent core starts it (the agent owns the pod → runtime id mapping):
//!
//! ```ignore
//! pub trait PodLookup: Send + Sync {
//!     fn container_id(&self, namespace: &str, pod: &str, container: &str, previous: bool)
//!         -> Option<String>;
//!     fn sandbox_id(&self, namespace: &str, pod: &str) -> Option<String>;
//! }
//! pub async fn run_tunnel(config: TunnelConfig, lookup: Arc<dyn PodLookup>,
//!                         runtime: Arc<Runtime>, shutdown: impl Future<Output = ()>);
//! ```

mod dial;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use skerry_runtime::Runtime;

pub use crate::streaming::PodLookup;
use crate::streaming::Streaming;

/// The path the API server accepts tunnels at (the wire contract with
/// `skerry_control::apiserver::tunnel`).
pub const TUNNEL_PATH: &str = "/skerry/v1/tunnel";
/// The `Upgrade` protocol token of the tunnel.
pub const TUNNEL_PROTOCOL: &str = "skerry-tunnel/1";
/// How often the agent pings the server over the tunnel.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// How long a ping may go unanswered before the link is declared dead.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// The first and the longest wait between two dials.
const BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));

/// Where and as whom the agent dials.
#[derive(Debug, Clone)]
pub struct TunnelConfig {
    /// The API server, `https://host:port`.
    pub server: String,
    /// PEM of the CA that signed the server's certificate.
    pub ca_pem: String,
    /// The node's client certificate (PEM), `system:node:<name>` in `system:nodes`.
    pub cert_file: PathBuf,
    /// Its private key (PEM).
    pub key_file: PathBuf,
}

/// Why one dial failed.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("bad server URL {0:?} (want https://host:port)")]
    Url(String),
    #[error("reading {path}: {source}")]
    Credentials { path: PathBuf, source: std::io::Error },
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("connecting to {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("the API server refused the tunnel: {status} {body}")]
    Refused { status: StatusCode, body: String },
    #[error("tunnel: {0}")]
    Http(#[from] hyper::Error),
}

/// Keeps a tunnel to the API server up until `shutdown` resolves, serving the kubelet
/// streaming API (`streaming`) for the pods `lookup` knows, with `runtime`.
pub async fn run_tunnel(
    config: TunnelConfig,
    lookup: Arc<dyn PodLookup>,
    runtime: Arc<Runtime>,
    shutdown: impl Future<Output = ()>,
) {
    let streaming = Arc::new(Streaming::new(lookup, runtime));
    // Usage readings for `/stats/resource` rates, taken whether or not the tunnel is up.
    let sampler = streaming.usage().run();
    tokio::select! {
        _ = shutdown => {}
        _ = keep_connected(&config, streaming) => {}
        _ = sampler => {}
    }
}

/// Dials, serves until the link dies, waits, dials again; forever.
async fn keep_connected(config: &TunnelConfig, streaming: Arc<Streaming>) {
    let mut wait = BACKOFF.0;
    loop {
        match dial::open(config).await {
            Ok(io) => {
                wait = BACKOFF.0;
                let started = Instant::now();
                tracing::info!(server = %config.server, "tunnel to the API server is up");
                let result = serve(io, streaming.clone()).await;
                tracing::warn!(
                    after = ?started.elapsed(),
                    error = result.err().map(|e| e.to_string()),
                    "tunnel to the API server ended; dialing again"
                );
            }
            Err(err) => {
                tracing::warn!(%err, retry_in = ?wait, "cannot open the tunnel to the API server");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(BACKOFF.1);
            }
        }
    }
}

/// Serves HTTP/2 on an open tunnel: every CONNECT becomes a streaming-API connection.
async fn serve(
    io: hyper::upgrade::Upgraded,
    streaming: Arc<Streaming>,
) -> Result<(), hyper::Error> {
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let streaming = streaming.clone();
        async move { Ok::<_, std::convert::Infallible>(accept_stream(req, streaming)) }
    });
    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .serve_connection(io, service)
        .await
}

/// Answers one CONNECT and serves the streaming API on the byte stream it opens.
fn accept_stream(mut req: Request<Incoming>, streaming: Arc<Streaming>) -> Response<Empty<Bytes>> {
    let mut response = Response::new(Empty::new());
    if req.method() != Method::CONNECT {
        *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        return response;
    }
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(io) => crate::streaming::serve(io, streaming).await,
            Err(err) => tracing::debug!(%err, "tunnel stream did not open"),
        }
    });
    response
}
