//! `pods/log`, `pods/exec`, `pods/attach` and `pods/portforward`: the API server's checks on
//! the pod (as the reference's `LogLocation`/`ExecLocation`), then the request forwarded over
//! the node's tunnel to its streaming server at the kubelet's path, and the answer relayed:
//! a `101 Switching Protocols` (WebSocket or SPDY/3.1) becomes a byte-for-byte copy both ways,
//! anything else (a log stream, an error `Status`) is streamed back as the response.
//! `nodes/<name>/proxy/<path>` (GET) reaches the node's agent at `/<path>` the same way.

use std::convert::Infallible;

use bytes::Bytes;
use futures::StreamExt;
use http::{header, HeaderName, Method, Response, StatusCode};
use http_body_util::{BodyExt, BodyStream, Empty, StreamBody};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::super::body::ApiBody;
use super::super::request::{Query, ResourcePath};
use super::super::rest;
use super::super::server::ApiServer;
use super::super::status::{ApiError, ApiResult};

/// The streaming subresources of pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PodStream {
    Log,
    Exec,
    Attach,
    PortForward,
}

impl PodStream {
    /// The streaming subresource a path names, if any.
    pub(crate) fn of(path: &ResourcePath) -> Option<PodStream> {
        if !(path.group.is_empty() && path.resource == "pods" && path.name.is_some()) {
            return None;
        }
        match path.subresource.as_deref()? {
            "log" => Some(PodStream::Log),
            "exec" => Some(PodStream::Exec),
            "attach" => Some(PodStream::Attach),
            "portforward" => Some(PodStream::PortForward),
            _ => None,
        }
    }

    fn methods_ok(self, method: &Method) -> bool {
        match self {
            PodStream::Log => method == Method::GET,
            _ => method == Method::GET || method == Method::POST,
        }
    }
}

/// Headers that must not go to the agent.
const DROPPED: [HeaderName; 2] = [header::AUTHORIZATION, header::HOST];

/// Serves one streaming request for `path` by proxying it to the pod's node.
pub(crate) async fn serve(
    server: &ApiServer,
    kind: PodStream,
    path: &ResourcePath,
    parts: http::request::Parts,
) -> ApiResult<Response<ApiBody>> {
    let info =
        server.inner.registry.resolve("", "v1", "pods").ok_or_else(ApiError::path_not_found)?;
    if !kind.methods_ok(&parts.method) {
        return Err(ApiError::method_not_supported(Some(&info), parts.method.as_str()));
    }
    let name = path.name.clone().unwrap_or_default();
    let namespace = path.namespace.clone().unwrap_or_else(|| "default".into());
    let key = info.storage_key(Some(&namespace), &name);
    let (pod, _) =
        rest::read(server, &key).await?.ok_or_else(|| ApiError::not_found(&info, &name))?;
    let query = Query::parse(parts.uri.query());
    let target = kubelet_path(kind, &namespace, &name, &pod, &query)?;
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(format!("pod {name} does not have a host assigned"))
        })?;
    forward(server, node, &target, parts).await
}

/// `nodes/<name>/proxy/<path>`: the request forwarded to the node's agent at `/<path>` (the
/// kubelet's API: `/metrics`, `/metrics/resource`, `/stats/resource`, …). Authorized as
/// `nodes/proxy`, which only cluster admins hold by default.
pub(crate) async fn serve_node(
    server: &ApiServer,
    path: &ResourcePath,
    parts: http::request::Parts,
) -> ApiResult<Response<ApiBody>> {
    let info =
        server.inner.registry.resolve("", "v1", "nodes").ok_or_else(ApiError::path_not_found)?;
    // Request bodies are not relayed: the kubelet paths worth reading are all GETs.
    if parts.method != Method::GET {
        return Err(ApiError::method_not_supported(Some(&info), parts.method.as_str()));
    }
    let name = path.name.clone().unwrap_or_default();
    if rest::read(server, &info.storage_key(None, &name)).await?.is_none() {
        return Err(ApiError::not_found(&info, &name));
    }
    let target = format!("/{}", path.proxy_path.as_deref().unwrap_or(""));
    forward(server, &name, &target, parts).await
}

/// Sends the request to `target` on `node`'s agent over its tunnel (with the client's query)
/// and relays the answer.
async fn forward(
    server: &ApiServer,
    node: &str,
    target: &str,
    mut parts: http::request::Parts,
) -> ApiResult<Response<ApiBody>> {
    let target = match parts.uri.query() {
        Some(q) if !q.is_empty() => format!("{target}?{q}"),
        _ => target.to_string(),
    };
    let client_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    let wants_upgrade = parts.headers.contains_key(header::UPGRADE);
    if wants_upgrade && client_upgrade.is_none() {
        return Err(ApiError::bad_request(
            "streaming needs an HTTP/1.1 connection that can be upgraded (WebSocket or SPDY/3.1)",
        ));
    }
    let stream = server.inner.tunnels.open(node).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(stream)
        .await
        .map_err(|e| ApiError::internal(format!("talking to node {node:?}: {e}")))?;
    tokio::spawn(async move {
        if let Err(err) = connection.with_upgrades().await {
            tracing::debug!(%err, "tunnel stream ended with an error");
        }
    });
    let mut request = http::Request::builder().method(parts.method.clone()).uri(&target);
    for (key, value) in parts.headers.iter().filter(|(k, _)| !DROPPED.contains(k)) {
        request = request.header(key, value);
    }
    let request = request
        .header(header::HOST, "kubelet")
        .body(Empty::<Bytes>::new())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| ApiError::internal(format!("talking to node {node:?}: {e}")))?;
    let (mut head, body) = response.into_parts();
    if head.status == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Err(ApiError::internal(format!("node {node:?} switched protocols unasked")));
        };
        let agent_upgrade = head.extensions.remove::<hyper::upgrade::OnUpgrade>();
        tokio::spawn(splice(client_upgrade, agent_upgrade));
        let mut reply = Response::new(Empty::new().boxed_unsync());
        *reply.status_mut() = head.status;
        *reply.headers_mut() = head.headers;
        return Ok(reply);
    }
    // A log stream or an error: stream it back as it comes; a broken tunnel ends the body.
    let frames = BodyStream::new(body)
        .take_while(|frame| std::future::ready(frame.is_ok()))
        .filter_map(|frame| std::future::ready(frame.ok()))
        .map(Ok::<_, Infallible>);
    let mut reply = Response::new(StreamBody::new(frames).boxed_unsync());
    *reply.status_mut() = head.status;
    for name in [header::CONTENT_TYPE, header::CACHE_CONTROL] {
        if let Some(value) = head.headers.remove(&name) {
            reply.headers_mut().insert(name, value);
        }
    }
    Ok(reply)
}

/// Copies bytes both ways between the switched client and agent connections.
async fn splice(client: hyper::upgrade::OnUpgrade, agent: Option<hyper::upgrade::OnUpgrade>) {
    let Some(agent) = agent else { return };
    let (client, agent) = match tokio::try_join!(client, agent) {
        Ok(pair) => pair,
        Err(err) => {
            tracing::debug!(%err, "streaming upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut agent = TokioIo::new(agent);
    if let Err(err) = tokio::io::copy_bidirectional(&mut client, &mut agent).await {
        tracing::debug!(%err, "streaming connection ended");
    }
}

/// The pod's container names: (regular, init, ephemeral).
fn container_names(pod: &Value) -> [Vec<String>; 3] {
    let names = |field: &str| -> Vec<String> {
        pod.pointer(&format!("/spec/{field}"))
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|c| c.get("name").and_then(Value::as_str).map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    [names("containers"), names("initContainers"), names("ephemeralContainers")]
}

/// The container a request names, or the pod's only container; errors as the reference's.
fn resolve_container(name: &str, pod: &Value, query: &Query) -> ApiResult<String> {
    let [regular, init, ephemeral] = container_names(pod);
    let Some(wanted) = query.get("container").filter(|c| !c.is_empty()) else {
        if regular.len() == 1 {
            return Ok(regular[0].clone());
        }
        let mut message = format!(
            "a container name must be specified for pod {name}, choose one of: [{}]",
            regular.join(" ")
        );
        if !init.is_empty() {
            message.push_str(&format!(" or one of the init containers: [{}]", init.join(" ")));
        }
        return Err(ApiError::bad_request(message));
    };
    if regular.iter().chain(&init).chain(&ephemeral).any(|c| c == wanted) {
        Ok(wanted.to_string())
    } else {
        Err(ApiError::bad_request(format!("container {wanted} is not valid for pod {name}")))
    }
}

/// The status entry of a container, from any of the three status lists.
fn container_status<'a>(pod: &'a Value, container: &str) -> Option<&'a Value> {
    ["containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"]
        .iter()
        .filter_map(|list| pod.pointer(&format!("/status/{list}")).and_then(Value::as_array))
        .flatten()
        .find(|s| s.get("name").and_then(Value::as_str) == Some(container))
}

/// The kubelet path for a request, after the reference apiserver's checks on the pod.
fn kubelet_path(
    kind: PodStream,
    namespace: &str,
    name: &str,
    pod: &Value,
    query: &Query,
) -> ApiResult<String> {
    if kind == PodStream::PortForward {
        return Ok(format!("/portForward/{namespace}/{name}"));
    }
    let container = resolve_container(name, pod, query)?;
    let phase = pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or("");
    match kind {
        PodStream::Log if !query.flag("previous") => {
            let waiting = container_status(pod, &container)
                .and_then(|s| s.pointer("/state/waiting/reason"))
                .and_then(Value::as_str);
            if let Some(reason) = waiting {
                return Err(ApiError::bad_request(format!(
                    "container {container:?} in pod {name:?} is waiting to start: {reason}"
                )));
            }
        }
        PodStream::Exec | PodStream::Attach if matches!(phase, "Succeeded" | "Failed") => {
            let what = if kind == PodStream::Exec { "exec into" } else { "attach to" };
            return Err(ApiError::bad_request(format!(
                "cannot {what} a container in a completed pod; current phase is {phase}"
            )));
        }
        _ => {}
    }
    let prefix = match kind {
        PodStream::Log => "containerLogs",
        PodStream::Exec => "exec",
        _ => "attach",
    };
    Ok(format!("/{prefix}/{namespace}/{name}/{container}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({
            "spec": {"nodeName": "n1", "containers": [{"name": "app"}, {"name": "side"}],
                     "initContainers": [{"name": "init"}]},
            "status": {"phase": "Pending", "containerStatuses": [
                {"name": "app", "state": {"waiting": {"reason": "ContainerCreating"}}},
                {"name": "side", "state": {"running": {}}}]},
        })
    }

    #[test]
    fn paths_follow_the_kubelet_api() {
        let q = Query::parse(Some("container=side&follow=true"));
        let path = kubelet_path(PodStream::Log, "ns", "web", &pod(), &q).unwrap();
        assert_eq!(path, "/containerLogs/ns/web/side");
        let path = kubelet_path(PodStream::Exec, "ns", "web", &pod(), &q).unwrap();
        assert_eq!(path, "/exec/ns/web/side");
        let path = kubelet_path(PodStream::PortForward, "ns", "web", &pod(), &q).unwrap();
        assert_eq!(path, "/portForward/ns/web");
    }

    #[test]
    fn log_of_a_waiting_container_is_refused_with_the_reference_message() {
        let q = Query::parse(Some("container=app"));
        let err = kubelet_path(PodStream::Log, "ns", "web", &pod(), &q).unwrap_err();
        assert_eq!(err.code, 400);
        assert_eq!(
            err.message,
            "container \"app\" in pod \"web\" is waiting to start: ContainerCreating"
        );
    }

    #[test]
    fn container_must_be_named_when_the_pod_has_several() {
        let err = kubelet_path(PodStream::Exec, "ns", "web", &pod(), &Query::parse(None));
        let err = err.unwrap_err();
        assert_eq!(
            err.message,
            "a container name must be specified for pod web, choose one of: [app side] or one \
             of the init containers: [init]"
        );
        let q = Query::parse(Some("container=nope"));
        let err = kubelet_path(PodStream::Log, "ns", "web", &pod(), &q).unwrap_err();
        assert_eq!(err.message, "container nope is not valid for pod web");
        let mut done = pod();
        done["status"]["phase"] = json!("Succeeded");
        let q = Query::parse(Some("container=side"));
        let err = kubelet_path(PodStream::Exec, "ns", "web", &done, &q).unwrap_err();
        assert!(err.message.starts_with("cannot exec into a container in a completed pod"));
    }
}
