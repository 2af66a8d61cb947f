//! The agent tunnel, server side: nodes sit behind NAT, so the API server never dials a node.
//! Each agent dials in instead — `GET /skerry/v1/tunnel` with `Upgrade: skerry-tunnel/1`, over
//! HTTPS with its node client certificate (user `system:node:<name>`, group `system:nodes`) —
//! and the upgraded connection carries HTTP/2 with the roles reversed: the API server is the
//! HTTP/2 *client*, the agent the *server*. HTTP/2 PINGs every 5 s (10 s timeout) on both sides
//! detect a dead link in seconds; a node that dials again replaces its old session.
//!
//! One tunnel stream is one HTTP/2 `CONNECT` (a plain byte stream, flow-controlled by HTTP/2);
//! over it the API server speaks HTTP/1.1 to the agent's kubelet-style streaming server
//! (`/containerLogs`, `/exec`, `/attach`, `/portForward`), so protocol upgrades (WebSocket,
//! SPDY/3.1) pass through unchanged: [`proxy`] answers `pods/log`, `pods/exec`, `pods/attach`
//! and `pods/portforward` by forwarding the request and then copying bytes both ways.
//!
//! The path and protocol name are the wire contract with `skerry_agent::tunnel` (which cannot
//! link this crate); both ends spell them out.

pub(crate) mod proxy;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::authn::User;
use super::body::{self, ApiBody};
use super::status::ApiError;

/// The path agents open their tunnel at.
pub const TUNNEL_PATH: &str = "/skerry/v1/tunnel";
/// The `Upgrade` protocol token of the tunnel.
pub const TUNNEL_PROTOCOL: &str = "skerry-tunnel/1";
/// How often each end pings the other over an idle tunnel.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// How long a ping may go unanswered before the tunnel is declared dead.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The group every node identity is in.
const NODES_GROUP: &str = "system:nodes";

/// One connected node.
#[derive(Clone)]
struct Session {
    id: u64,
    sender: SendRequest<Empty<Bytes>>,
}

/// Connected nodes: node name → its current tunnel session.
#[derive(Default)]
pub struct TunnelRegistry {
    sessions: Mutex<HashMap<String, Session>>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for TunnelRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelRegistry").field("nodes", &self.nodes()).finish()
    }
}

impl TunnelRegistry {
    /// Names of the nodes with a live tunnel.
    pub fn nodes(&self) -> Vec<String> {
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let mut nodes: Vec<String> = sessions.keys().cloned().collect();
        nodes.sort();
        nodes
    }

    fn session(&self, node: &str) -> Option<Session> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).get(node).cloned()
    }

    /// Runs the HTTP/2 client side of a freshly upgraded tunnel until the link ends.
    async fn serve(self: Arc<Self>, node: String, io: hyper::upgrade::Upgraded) {
        let handshake = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .handshake::<_, Empty<Bytes>>(io)
            .await;
        let (sender, connection) = match handshake {
            Ok(pair) => pair,
            Err(err) => {
                tracing::warn!(%node, %err, "tunnel handshake failed");
                return;
            }
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node.clone(), Session { id, sender });
        tracing::info!(%node, "agent tunnel connected");
        if let Err(err) = connection.await {
            tracing::info!(%node, %err, "agent tunnel ended");
        } else {
            tracing::info!(%node, "agent tunnel closed");
        }
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if sessions.get(&node).is_some_and(|s| s.id == id) {
            sessions.remove(&node);
        }
    }

    /// Opens one byte stream to `node`'s streaming server.
    pub(crate) async fn open(&self, node: &str) -> Result<hyper::upgrade::Upgraded, ApiError> {
        let unreachable = |why: String| {
            ApiError::unavailable(format!("error dialing backend: node {node:?}: {why}"))
        };
        let Some(mut session) = self.session(node) else {
            return Err(unreachable(
                "no tunnel from its agent (the agent is down or cannot reach the API server)"
                    .into(),
            ));
        };
        session.sender.ready().await.map_err(|e| unreachable(format!("tunnel closed: {e}")))?;
        let request = http::Request::builder()
            .method(http::Method::CONNECT)
            .uri("kubelet:10250")
            .body(Empty::new())
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let response = session
            .sender
            .send_request(request)
            .await
            .map_err(|e| unreachable(format!("opening a tunnel stream: {e}")))?;
        if response.status() != StatusCode::OK {
            return Err(unreachable(format!("tunnel stream refused with {}", response.status())));
        }
        hyper::upgrade::on(response)
            .await
            .map_err(|e| unreachable(format!("opening a tunnel stream: {e}")))
    }
}

/// Whether `user` is a node, and which: `system:node:<name>` in group `system:nodes`.
fn node_name(user: &User) -> Option<&str> {
    let name = user.name.strip_prefix("system:node:")?;
    (!name.is_empty() && user.groups.iter().any(|g| g == NODES_GROUP)).then_some(name)
}

/// Answers an agent's tunnel request: checks it is a node and asks for the upgrade, then serves
/// the tunnel on its own task once the connection is switched.
pub(crate) fn accept(
    registry: &Arc<TunnelRegistry>,
    parts: &mut http::request::Parts,
    user: &User,
) -> Response<ApiBody> {
    let Some(node) = node_name(user) else {
        return body::error_response(&ApiError {
            code: 403,
            reason: "Forbidden",
            message: format!(
                "User {:?} cannot open an agent tunnel: only nodes (system:node:<name> in group \
                 system:nodes) may",
                user.name
            ),
            details: None,
            retry_after: None,
        });
    };
    let wants = parts
        .headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(TUNNEL_PROTOCOL));
    let upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    let (true, Some(upgrade)) = (wants, upgrade) else {
        return body::error_response(&ApiError::bad_request(format!(
            "the agent tunnel needs an HTTP/1.1 request with Upgrade: {TUNNEL_PROTOCOL}"
        )));
    };
    let node = node.to_string();
    let registry = registry.clone();
    tokio::spawn(async move {
        match upgrade.await {
            Ok(io) => registry.serve(node, io).await,
            Err(err) => tracing::warn!(%node, %err, "tunnel upgrade failed"),
        }
    });
    let mut response = Response::new(Empty::new().boxed_unsync());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    response.headers_mut().insert(header::UPGRADE, HeaderValue::from_static(TUNNEL_PROTOCOL));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_node_identities_may_open_a_tunnel() {
        let node = User::new("system:node:edge-1", vec![NODES_GROUP.into()]);
        assert_eq!(node_name(&node), Some("edge-1"));
        let not_in_group = User::new("system:node:edge-1", vec![]);
        assert_eq!(node_name(&not_in_group), None);
        let admin = User::new("admin", vec!["system:masters".into(), NODES_GROUP.into()]);
        assert_eq!(node_name(&admin), None);
    }
}
