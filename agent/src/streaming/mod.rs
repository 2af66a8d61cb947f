//! The kubelet streaming API, served on the byte streams the tunnel opens (HTTP/1.1 with
//! upgrades), so the API server's `pods/log|exec|attach|portforward` reach the node:
//!
//! - `GET /containerLogs/{ns}/{pod}/{container}` — `follow`, `tailLines`, `sinceSeconds`,
//!   `sinceTime`, `timestamps`, `previous`, `limitBytes` (`logs`);
//! - `/exec/{ns}/{pod}/{container}?command=…&stdin&stdout&stderr&tty` and `/attach/…` over
//!   WebSocket (`v5.channel.k8s.io`, `v4.channel.k8s.io`) or SPDY/3.1 (`v4.channel.k8s.io`)
//!   (`remotecommand`, `websocket`, `spdy`);
//! - `/portForward/{ns}/{pod}` over SPDY/3.1 (`portforward.k8s.io`), or SPDY tunnelled in
//!   WebSocket (`SPDY/3.1+portforward.k8s.io`, what kubectl 1.32 tries first) (`portforward`).
//!
//! - `GET /stats/resource` (JSON) and `GET /metrics`, `/metrics/resource` (Prometheus text):
//!   node and container usage (`resource_stats`, [`crate::stats`]).
//!
//! Pods and containers are found through [`PodLookup`], which the agent core implements.

mod http_util;
mod logs;
mod portforward;
mod remotecommand;
mod resource_stats;
pub mod spdy;
pub mod websocket;

use std::convert::Infallible;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use skerry_runtime::Runtime;

use http_util::{refusal, status_response, Body, Params, Refusal};

/// What the streaming API needs from the agent core: which runtime objects a pod's names map to.
pub trait PodLookup: Send + Sync {
    /// The runtime container id of `container` in pod `namespace/pod` on this node; with
    /// `previous`, the instance that ran before the current one (`kubectl logs --previous`).
    fn container_id(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        previous: bool,
    ) -> Option<String>;

    /// The runtime sandbox id of pod `namespace/pod` (its network namespace for port-forward).
    fn sandbox_id(&self, namespace: &str, pod: &str) -> Option<String>;

    /// Namespace and name of this node's pods by UID (names the pods in usage reports).
    fn pod_names(&self) -> crate::stats::PodNames {
        crate::stats::PodNames::new()
    }
}

/// The shared state of the streaming server.
pub struct Streaming {
    lookup: Arc<dyn PodLookup>,
    runtime: Arc<Runtime>,
    usage: Arc<crate::stats::UsageCollector>,
}

impl Streaming {
    /// A streaming server over `lookup` and `runtime`.
    pub fn new(lookup: Arc<dyn PodLookup>, runtime: Arc<Runtime>) -> Streaming {
        let usage = Arc::new(crate::stats::UsageCollector::new(runtime.clone()));
        Streaming { lookup, runtime, usage }
    }

    /// The usage collector behind `/stats/resource` and `/metrics` (its sampler is run by the
    /// owner of the server).
    pub fn usage(&self) -> Arc<crate::stats::UsageCollector> {
        self.usage.clone()
    }

    /// The container a request names, or a 404 `Status`.
    fn container(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        previous: bool,
    ) -> Result<String, Refusal> {
        self.lookup.container_id(namespace, pod, container, previous).ok_or_else(|| {
            if previous {
                refusal(
                    StatusCode::BAD_REQUEST,
                    format!("previous terminated container {container:?} in pod {pod:?} not found"),
                )
            } else {
                refusal(
                    StatusCode::NOT_FOUND,
                    format!("container {container:?} in pod {pod:?} not found on this node"),
                )
            }
        })
    }
}

impl std::fmt::Debug for Streaming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streaming").finish_non_exhaustive()
    }
}

/// Serves the streaming API on one connection (a tunnel stream, or any byte stream in tests).
pub async fn serve<I>(io: I, streaming: Arc<Streaming>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let streaming = streaming.clone();
        async move { Ok::<_, Infallible>(route(req, streaming).await) }
    });
    let connection = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
    if let Err(err) = connection.with_upgrades().await {
        tracing::debug!(%err, "streaming connection ended with an error");
    }
}

/// Dispatches one request by its path.
async fn route(req: Request<Incoming>, streaming: Arc<Streaming>) -> Response<Body> {
    let path: Vec<String> =
        req.uri().path().split('/').filter(|s| !s.is_empty()).map(http_util::decode).collect();
    let params = Params::parse(req.uri().query());
    let parts: Vec<&str> = path.iter().map(String::as_str).collect();
    let method = req.method().clone();
    match (parts.as_slice(), method) {
        (["containerLogs", ns, pod, container], Method::GET) => {
            logs::serve(&streaming, ns, pod, container, &params).await
        }
        ([kind @ ("exec" | "attach"), ns, pod, container], Method::GET | Method::POST) => {
            let attach = *kind == "attach";
            match streaming.container(ns, pod, container, false) {
                Ok(id) => remotecommand::serve(req, &streaming, id, attach, &params),
                Err(response) => *response,
            }
        }
        (["portForward", ns, pod], Method::GET | Method::POST) => {
            let sandbox = streaming.lookup.sandbox_id(ns, pod);
            let netns = sandbox.and_then(|id| streaming.runtime.sandbox_namespace(&id, "net"));
            match netns {
                Some(netns) => portforward::serve(req, netns, format!("{ns}/{pod}")),
                None => status_response(
                    StatusCode::NOT_FOUND,
                    format!("pod {ns}/{pod} has no network namespace on this node"),
                ),
            }
        }
        (["stats", "resource"], Method::GET) => resource_stats::json(&streaming).await,
        (["metrics"] | ["metrics", "resource"], Method::GET) => {
            resource_stats::prometheus(&streaming).await
        }
        _ => status_response(StatusCode::NOT_FOUND, "the streaming server has no such path"),
    }
}
