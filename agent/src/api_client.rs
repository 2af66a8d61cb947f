//! The agent's API client: one `kube::Client` handed to every part of the agent, whose
//! requests go to an inner client built from the kubeconfig that [`ApiClient::reload`] swaps.
//! kube reads the client certificate once, when a client is built, so a renewed certificate
//! needs a new inner client; swapping it behind a stable facade spares every holder (pod
//! workers, watchers, the heartbeat) from being rebuilt. Requests already under way (long
//! watches) finish on the old client's connections, which close when it is dropped; each
//! new request opens its connections with the new certificate.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::agent::AgentError;
use crate::config::AgentConfig;

/// The swappable API client.
pub struct ApiClient {
    current: Arc<RwLock<kube::Client>>,
    facade: kube::Client,
}

impl ApiClient {
    /// Builds the client from `config`'s kubeconfig.
    pub async fn connect(config: &AgentConfig) -> Result<ApiClient, AgentError> {
        let inner = build(config).await?;
        let namespace = inner.default_namespace().to_string();
        let current = Arc::new(RwLock::new(inner));
        let facade = kube::Client::new(Swap(current.clone()), namespace);
        Ok(ApiClient { current, facade })
    }

    /// The client to use (and clone): it always sends through the latest inner client.
    pub fn client(&self) -> kube::Client {
        self.facade.clone()
    }

    /// Rebuilds the inner client from the kubeconfig (re-reading its certificate files) and
    /// sends every later request through it.
    pub async fn reload(&self, config: &AgentConfig) -> Result<(), AgentError> {
        let inner = build(config).await?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = inner;
        Ok(())
    }
}

/// The API client from the kubeconfig (its server replaced by `--server` when given).
pub async fn build(config: &AgentConfig) -> Result<kube::Client, AgentError> {
    let path = config.kubeconfig.display().to_string();
    let bad = |message: String| AgentError::Kubeconfig { path: path.clone(), message };
    let kubeconfig = Kubeconfig::read_from(&config.kubeconfig).map_err(|e| bad(e.to_string()))?;
    let mut cfg = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| bad(e.to_string()))?;
    if let Some(server) = &config.server {
        cfg.cluster_url = server.parse().map_err(|e| bad(format!("--server {server:?}: {e}")))?;
    }
    // A dead server must be noticed quickly; watches still get their long reads.
    cfg.connect_timeout = Some(Duration::from_secs(5));
    kube::Client::try_from(cfg).map_err(|e| bad(e.to_string()))
}

/// The facade's service: each request goes to the inner client current at its call. Its
/// errors are kube's own, which `kube::Client` unboxes again, so callers see the same errors
/// as from a plain client.
#[derive(Clone)]
struct Swap(Arc<RwLock<kube::Client>>);

impl tower_service::Service<Request<Body>> for Swap {
    type Response = Response<Body>;
    type Error = kube::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, kube::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The inner client queues (kube buffers its service); readiness is its business.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let inner = self.0.read().unwrap_or_else(|e| e.into_inner()).clone();
        Box::pin(async move { inner.send(request).await })
    }
}
