//! The audit log (`skerry server --audit-log-path`, `--audit-policy-file`): one JSON line per
//! request stage in the reference's `audit.k8s.io/v1` `Event` format, written by a buffered
//! writer thread ([`sink`]) so request handling never waits on the disk for long.
//!
//! As in the reference's `WithAudit` filter, a request is audited after authentication and
//! before impersonation and authorization, so impersonation and authorization refusals are
//! logged with the requester as `user`. The [`policy`] picks the level from the requester and
//! the request. Stages: `RequestReceived` when the request arrives, `ResponseComplete` when its
//! answer is ready; a long-running request (watch, logs, exec, attach, port-forward, proxy, the
//! agent tunnel) logs `ResponseStarted` when its headers go out and `ResponseComplete` when its
//! stream ends. Every audited response carries the event's id in the `Audit-Id` header (a
//! client's own `Audit-ID` request header is honoured).
//!
//! `requestObject` (level `Request` and up) is the decoded body of a create, update or patch;
//! `responseObject` (level `RequestResponse`) is a JSON answer that is not a stream.
//!
//! `annotations` carry what later steps learnt about the request, as in the reference: the
//! authorizer's `authorization.k8s.io/decision` (`allow` or `forbid`) and its
//! `authorization.k8s.io/reason` (e.g. `RBAC: allowed by ClusterRoleBinding "x" of ClusterRole
//! "y" to User "z"`). Those steps run deep inside the handler, so they reach the record through
//! a task-local slot that [`annotated`] opens around the handler ([`authorization_decided`]).

pub mod policy;
pub mod rotation;
pub mod sink;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response};
use http_body_util::BodyExt;
use serde_json::{json, Map, Value};

use self::policy::{Level, Policy, RequestFacts};
use self::rotation::Rotation;
use self::sink::Sink;
use super::authn::User;
use super::body::ApiBody;
use super::impersonation::Identity;
use super::request::{Query, Route};

/// The response header carrying the event id.
pub const AUDIT_ID_HEADER: &str = "audit-id";

/// The remote address of a request's connection, put in the request's extensions by the
/// listener (the audit log's `sourceIPs`).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// Audit settings of the API server; the default logs nothing.
#[derive(Debug, Clone, Default)]
pub struct AuditConfig {
    backend: Option<Arc<Backend>>,
}

#[derive(Debug)]
struct Backend {
    policy: Policy,
    sink: Sink,
}

/// Why the audit log could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Policy(#[from] policy::PolicyError),
    #[error("opening the audit log {path}: {source}")]
    Open { path: String, source: std::io::Error },
}

impl AuditConfig {
    /// Logs to `path` by `policy_file` (default: everything at `Metadata`), rotating the file
    /// and keeping its backups by `rotation`.
    pub fn open(
        path: &Path,
        policy_file: Option<&Path>,
        rotation: Rotation,
    ) -> Result<AuditConfig, AuditError> {
        let policy = match policy_file {
            Some(file) => Policy::from_file(file)?,
            None => Policy::default(),
        };
        let sink = Sink::open(path, rotation)
            .map_err(|source| AuditError::Open { path: path.display().to_string(), source })?;
        Ok(AuditConfig { backend: Some(Arc::new(Backend { policy, sink })) })
    }

    /// Whether anything is logged at all.
    pub fn enabled(&self) -> bool {
        self.backend.is_some()
    }
}

/// The annotations key of the authorization decision.
pub const DECISION_ANNOTATION: &str = "authorization.k8s.io/decision";
/// The annotations key of the authorizer's reason.
pub const REASON_ANNOTATION: &str = "authorization.k8s.io/reason";

/// Annotations a request's handler adds to its audit event.
type Annotations = Arc<Mutex<Map<String, Value>>>;

tokio::task_local! {
    /// The annotations of the audited request this task is serving.
    static ANNOTATIONS: Annotations;
}

/// Runs a request's handler so that what it learns is annotated on `record`'s event.
pub(crate) async fn annotated<F: Future>(record: Option<&Record>, handler: F) -> F::Output {
    match record {
        Some(record) => ANNOTATIONS.scope(record.annotations.clone(), handler).await,
        None => handler.await,
    }
}

/// Records the authorization decision on the audit event of the request being served (nothing
/// when it is not audited): `allow` or `forbid`, and the authorizer's reason if it gave one.
pub(crate) fn authorization_decided(allowed: bool, reason: &str) {
    let _ = ANNOTATIONS.try_with(|annotations| {
        let mut map = annotations.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        map.insert(DECISION_ANNOTATION.into(), json!(if allowed { "allow" } else { "forbid" }));
        if reason.is_empty() {
            map.remove(REASON_ANNOTATION);
        } else {
            map.insert(REASON_ANNOTATION.into(), json!(reason));
        }
    });
}

/// Adds an annotation to the audit event of the request being served (nothing when it is not
/// audited), e.g. a ValidatingAdmissionPolicy's `validation_failure`; a key already set keeps
/// its first value, as in the reference.
pub(crate) fn annotate(key: &str, value: &str) {
    let _ = ANNOTATIONS.try_with(|annotations| {
        let mut map = annotations.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        map.entry(key.to_string()).or_insert_with(|| json!(value));
    });
}

/// RFC 3339 with microseconds, as the reference's `MicroTime`.
fn micro_time() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.microsecond()
    )
}

/// A random version 4 UUID.
fn new_audit_id() -> String {
    let mut b = [0u8; 16];
    // A failing RNG leaves zeros: the id is then not unique, which breaks nothing else.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

fn user_info(user: &User) -> Value {
    let mut info = json!({"username": user.name, "groups": user.groups});
    if !user.uid.is_empty() {
        info["uid"] = json!(user.uid);
    }
    if !user.extra.is_empty() {
        info["extra"] = json!(user.extra);
    }
    info
}

/// `X-Forwarded-For`, `X-Real-Ip`, then the connection's address, without repeats.
fn source_ips(headers: &HeaderMap, peer: Option<PeerAddr>) -> Vec<String> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mut ips: Vec<String> = text("x-forwarded-for")
        .split(',')
        .chain(std::iter::once(text("x-real-ip")))
        .map(str::trim)
        .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
        .map(String::from)
        .collect();
    if let Some(PeerAddr(addr)) = peer {
        ips.push(addr.ip().to_string());
    }
    let mut seen = std::collections::HashSet::new();
    ips.retain(|ip| seen.insert(ip.clone()));
    ips
}

/// The audit event of one request, built up as the request goes through the server.
pub(crate) struct Record {
    sink: Sink,
    level: Level,
    omit: Vec<String>,
    event: Map<String, Value>,
    verb: String,
    long_running: bool,
    content_type: Option<String>,
    annotations: Annotations,
}

impl Record {
    /// Starts the record of a request authenticated as `user`, or `None` when the policy logs
    /// nothing of it. Logs `RequestReceived`.
    pub(crate) fn begin(
        config: &AuditConfig,
        parts: &http::request::Parts,
        route: &Route,
        query: &Query,
        user: &User,
    ) -> Option<Record> {
        let backend = config.backend.as_ref()?;
        let path = parts.uri.path();
        let attrs =
            super::authz::request_attributes(user, &parts.method, path, route, query).remove(0);
        let facts = RequestFacts {
            user: &user.name,
            groups: &user.groups,
            verb: &attrs.verb,
            resource_request: attrs.resource_request,
            group: &attrs.group,
            resource: &attrs.resource,
            subresource: &attrs.subresource,
            namespace: &attrs.namespace,
            name: &attrs.name,
            path,
        };
        let (level, omit) = backend.policy.evaluate(&facts);
        if level == Level::None {
            return None;
        }
        let audit_id = parts
            .headers
            .get("audit-id")
            .and_then(|v| v.to_str().ok())
            .filter(|id| !id.trim().is_empty())
            .map(|id| id.trim().to_string())
            .unwrap_or_else(new_audit_id);
        let request_uri = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or(path);
        let mut event = Map::new();
        event.insert("kind".into(), json!("Event"));
        event.insert("apiVersion".into(), json!("audit.k8s.io/v1"));
        event.insert("level".into(), json!(level.as_str()));
        event.insert("auditID".into(), json!(audit_id));
        event.insert("stage".into(), json!("RequestReceived"));
        event.insert("requestURI".into(), json!(request_uri));
        event.insert("verb".into(), json!(attrs.verb));
        event.insert("user".into(), user_info(user));
        let peer = parts.extensions.get::<PeerAddr>().copied();
        event.insert("sourceIPs".into(), json!(source_ips(&parts.headers, peer)));
        if let Some(agent) = parts.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()) {
            event.insert("userAgent".into(), json!(agent));
        }
        if attrs.resource_request {
            let mut object = Map::new();
            let mut put = |key: &str, value: &str| {
                if !value.is_empty() {
                    object.insert(key.into(), json!(value));
                }
            };
            put("resource", &attrs.resource);
            put("namespace", &attrs.namespace);
            put("name", &attrs.name);
            put("apiGroup", &attrs.group);
            put("apiVersion", &attrs.version);
            put("subresource", &attrs.subresource);
            event.insert("objectRef".into(), Value::Object(object));
        }
        event.insert("requestReceivedTimestamp".into(), json!(micro_time()));
        let long_running = matches!(route, Route::Tunnel)
            || matches!(attrs.verb.as_str(), "watch" | "proxy")
            || matches!(
                attrs.subresource.as_str(),
                "exec" | "attach" | "portforward" | "log" | "proxy"
            );
        let content_type =
            parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(String::from);
        let record = Record {
            sink: backend.sink.clone(),
            level,
            omit,
            event,
            verb: attrs.verb,
            long_running,
            content_type,
            annotations: Annotations::default(),
        };
        record.emit_now("RequestReceived");
        Some(record)
    }

    /// The event's id (the `Audit-Id` header).
    pub(crate) fn audit_id(&self) -> &str {
        self.event.get("auditID").and_then(Value::as_str).unwrap_or_default()
    }

    /// Whether the request body should be read up front: a create (its object's name belongs
    /// in `objectRef`), or any write at level `Request` and up (`requestObject`).
    pub(crate) fn wants_request_body(&self) -> bool {
        !self.long_running
            && (self.verb == "create"
                || (self.level >= Level::Request
                    && matches!(self.verb.as_str(), "update" | "patch")))
    }

    /// Records the request body read up front.
    pub(crate) fn request_body(&mut self, bytes: &Bytes) {
        if bytes.is_empty() {
            return;
        }
        let format = super::request::body_format(self.content_type.as_deref());
        let object = match format {
            Ok(format) => match super::body::decode_object(bytes, format) {
                Ok(object) => object,
                // A patch document is logged as sent, as the reference does.
                Err(_) => match serde_json::from_slice::<Value>(bytes) {
                    Ok(value) => value,
                    Err(_) => return,
                },
            },
            Err(_) => return,
        };
        if self.verb == "create" {
            if let (Some(Value::Object(reference)), Some(name)) =
                (self.event.get_mut("objectRef"), object.pointer("/metadata/name"))
            {
                reference.entry("name").or_insert_with(|| name.clone());
            }
        }
        if self.level >= Level::Request {
            self.event.insert("requestObject".into(), object);
        }
    }

    /// Records who the request was served as, when it impersonated someone.
    pub(crate) fn impersonated(&mut self, identity: &Identity) {
        if identity.requester.is_some() {
            self.event.insert("impersonatedUser".into(), user_info(&identity.effective));
        }
    }

    /// Logs the response (`ResponseComplete`, or `ResponseStarted` and later `ResponseComplete`
    /// for a stream) and adds the `Audit-Id` header.
    pub(crate) async fn finish(mut self, response: Response<ApiBody>) -> Response<ApiBody> {
        let code = response.status().as_u16();
        let mut status = json!({"metadata": {}, "code": code});
        let (mut parts, body) = response.into_parts();
        if let Ok(value) = HeaderValue::from_str(self.audit_id()) {
            parts.headers.insert(AUDIT_ID_HEADER, value);
        }
        if self.long_running && code < 400 {
            self.event.insert("responseStatus".into(), status);
            self.emit_now("ResponseStarted");
            let body = CompleteOnDrop { inner: body, record: Some(self) };
            return Response::from_parts(parts, BodyExt::boxed_unsync(body));
        }
        let json_body = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/json"));
        let keep_body = json_body && (code >= 400 || self.level >= Level::RequestResponse);
        let body = if keep_body {
            // A whole object or a `Status`, never a stream: reading it here costs a copy.
            let bytes = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(never) => match never {},
            };
            if let Ok(value) = serde_json::from_slice::<Value>(&bytes) {
                if code >= 400 {
                    for key in ["status", "message", "reason", "details"] {
                        if let Some(field) = value.get(key) {
                            status[key] = field.clone();
                        }
                    }
                }
                if self.level >= Level::RequestResponse {
                    self.event.insert("responseObject".into(), value);
                }
            }
            BodyExt::boxed_unsync(http_body_util::Full::new(bytes))
        } else {
            body
        };
        self.event.insert("responseStatus".into(), status);
        self.emit("ResponseComplete").await;
        Response::from_parts(parts, body)
    }

    fn line(&self, stage: &str) -> Option<String> {
        if self.omit.iter().any(|s| s == stage) {
            return None;
        }
        let mut event = self.event.clone();
        event.insert("stage".into(), json!(stage));
        event.insert("stageTimestamp".into(), json!(micro_time()));
        if stage == "RequestReceived" {
            event.remove("responseStatus");
        }
        let annotations = self.annotations.lock().map(|a| a.clone()).unwrap_or_default();
        if !annotations.is_empty() {
            event.insert("annotations".into(), Value::Object(annotations));
        }
        Some(Value::Object(event).to_string())
    }

    fn emit_now(&self, stage: &str) {
        if let Some(line) = self.line(stage) {
            self.sink.send_now(line);
        }
    }

    async fn emit(&self, stage: &str) {
        if let Some(line) = self.line(stage) {
            self.sink.send(line).await;
        }
    }
}

/// A streamed response body that logs `ResponseComplete` when the stream is done with.
struct CompleteOnDrop {
    inner: ApiBody,
    record: Option<Record>,
}

impl http_body::Body for CompleteOnDrop {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for CompleteOnDrop {
    fn drop(&mut self) {
        if let Some(record) = self.record.take() {
            record.emit_now("ResponseComplete");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_times_and_source_ips_have_the_reference_shape() {
        let id = new_audit_id();
        assert_eq!(id.len(), 36);
        assert_eq!(id.as_bytes()[14], b'4');
        assert_ne!(id, new_audit_id());
        let time = micro_time();
        assert_eq!(time.len(), "2024-01-02T03:04:05.123456Z".len(), "{time}");
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "10.0.0.1, 10.0.0.2".parse().unwrap());
        let peer = PeerAddr("10.0.0.2:5000".parse().unwrap());
        assert_eq!(source_ips(&headers, Some(peer)), vec!["10.0.0.1", "10.0.0.2"]);
    }

    #[tokio::test]
    async fn authorization_is_annotated_only_inside_an_audited_handler() {
        let annotations = Annotations::default();
        // Outside any audited request: nothing to annotate, and no panic.
        authorization_decided(true, "ignored");
        ANNOTATIONS
            .scope(annotations.clone(), async {
                authorization_decided(true, "RBAC: allowed by ClusterRoleBinding \"x\"");
            })
            .await;
        let seen = annotations.lock().unwrap().clone();
        assert_eq!(seen[DECISION_ANNOTATION], "allow");
        assert_eq!(seen[REASON_ANNOTATION], "RBAC: allowed by ClusterRoleBinding \"x\"");
        // A later refusal without a reason replaces both.
        ANNOTATIONS.scope(annotations.clone(), async { authorization_decided(false, "") }).await;
        let seen = annotations.lock().unwrap().clone();
        assert_eq!(seen[DECISION_ANNOTATION], "forbid");
        assert!(seen.get(REASON_ANNOTATION).is_none());
    }
}
