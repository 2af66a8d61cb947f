//! The request handler: one [`ApiServer`] value that turns an HTTP request plus the caller's
//! identity into a response. It knows nothing of TLS or sockets, so the HTTPS listener and the
//! in-process client (a [`tower_service::Service`], see [`ApiService`]) share every step:
//! authentication, the in-flight limit, routing, the verbs, admission, metrics, and panics
//! turned into a 500 `Status`.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures::FutureExt;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use super::admission::ServiceRanges;
use super::authn::{TokenAuthenticator, User};
use super::body::{self, ApiBody};
use super::metrics::Metrics;
use super::request::{self, Output, Query, ResourcePath, Route};
use super::resource::{Registry, ResourceInfo};
use super::status::{ApiError, ApiResult};
use super::watch_cache::WatchCaches;
use super::{discovery, openapi, rest};
use crate::store::{RangeRequest, Store};

/// The Kubernetes version the server reports and implements.
pub const KUBERNETES_VERSION: &str = "v1.33.0+skerry";

/// Settings of the request handler.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Service ClusterIP range (`--service-cidr`).
    pub service_cidr: (Ipv4Addr, u8),
    /// NodePort range, inclusive.
    pub node_port_range: (u16, u16),
    /// Mutating requests served at once before 429s.
    pub max_mutating_in_flight: usize,
    /// Read-only requests (not watches) served at once before 429s.
    pub max_readonly_in_flight: usize,
    /// The address other components reach this server at (the `kubernetes` endpoints).
    pub advertise_address: IpAddr,
    /// The HTTPS port (the `kubernetes` service's target port).
    pub secure_port: u16,
    /// The cluster CA certificate (PEM), served on `/cacerts` for joining agents.
    pub ca_pem: String,
    /// Service account tokens: issuer, audiences, signing key, admission.
    pub service_accounts: super::serviceaccount::ServiceAccountConfig,
    /// The audit log (`--audit-log-path`); off by default.
    pub audit: super::audit::AuditConfig,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            service_cidr: (Ipv4Addr::new(10, 43, 0, 0), 16),
            node_port_range: (30000, 32767),
            max_mutating_in_flight: 200,
            max_readonly_in_flight: 400,
            advertise_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            secure_port: 6443,
            ca_pem: String::new(),
            service_accounts: Default::default(),
            audit: Default::default(),
        }
    }
}

/// Shared state of the handler.
pub(crate) struct Inner {
    pub store: Arc<dyn Store>,
    pub registry: Arc<Registry>,
    pub caches: WatchCaches,
    pub tokens: TokenAuthenticator,
    pub config: ApiConfig,
    pub ranges: ServiceRanges,
    pub metrics: Arc<Metrics>,
    /// Rendered OpenAPI documents, re-rendered when the resources they describe change.
    pub openapi: openapi::OpenApi,
    /// Agent tunnels of the connected nodes (logs, exec, attach, port-forward).
    pub tunnels: Arc<super::tunnel::TunnelRegistry>,
    /// The authorization state (the RBAC index).
    pub authz: super::authz::State,
    /// Issues and verifies service account tokens.
    pub service_accounts: super::serviceaccount::TokenIssuer,
    mutating: Semaphore,
    readonly: Semaphore,
}

/// The API server's request handler; cheap to clone.
#[derive(Clone)]
pub struct ApiServer {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer").finish_non_exhaustive()
    }
}

/// One resource request, parsed.
pub(crate) struct Call {
    pub info: Arc<ResourceInfo>,
    pub path: ResourcePath,
    pub query: Query,
    pub output: Output,
    pub headers: HeaderMap,
    pub method: Method,
    pub body: Bytes,
    pub user: User,
}

impl Call {
    /// The namespace of the request, for namespaced resources.
    pub fn namespace(&self) -> Option<&str> {
        if self.info.namespaced {
            self.path.namespace.as_deref()
        } else {
            None
        }
    }
}

/// A handler's answer plus `Warning` headers to add.
pub(crate) struct Reply {
    pub response: Response<ApiBody>,
    pub warnings: Vec<String>,
}

impl From<Response<ApiBody>> for Reply {
    fn from(response: Response<ApiBody>) -> Reply {
        Reply { response, warnings: Vec::new() }
    }
}

fn verb_of(method: &Method, route: &Route, query: &Query) -> &'static str {
    let Route::Resource(path) = route else {
        return if method == Method::GET { "get" } else { "other" };
    };
    let named = path.name.is_some();
    match *method {
        Method::GET if path.watch_prefix || query.flag("watch") => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "other",
    }
}

impl ApiServer {
    /// A handler over `store` with the built-in resources registered.
    pub fn new(store: Arc<dyn Store>, config: ApiConfig, tokens: TokenAuthenticator) -> ApiServer {
        let ranges = ServiceRanges::new(config.service_cidr, config.node_port_range);
        let service_accounts = super::serviceaccount::TokenIssuer::new(&config.service_accounts);
        let metrics = Arc::new(Metrics::default());
        // Every store call the server makes is timed for `/metrics`; its writes are marked
        // for the readers of the watch caches that must see them (admission).
        let caches = WatchCaches::default();
        let store = Arc::new(super::write_marks::Marking::new(store, caches.marks().clone()));
        let store = Arc::new(crate::store::metered::Metered::new(store, metrics.clone()));
        ApiServer {
            inner: Arc::new(Inner {
                store,
                registry: Arc::new(Registry::builtin()),
                caches,
                tokens,
                mutating: Semaphore::new(config.max_mutating_in_flight),
                readonly: Semaphore::new(config.max_readonly_in_flight),
                config,
                ranges,
                metrics,
                openapi: openapi::OpenApi::default(),
                tunnels: Arc::default(),
                authz: Default::default(),
                service_accounts,
            }),
        }
    }

    /// The resource catalogue.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.inner.registry
    }

    /// A `tower` service that runs every request as `user` (for in-process clients).
    pub fn service(&self, user: User) -> ApiService {
        ApiService { server: self.clone(), user }
    }

    /// Serves one request. `transport_user` is the identity the transport proved (a verified
    /// client certificate, or the in-process caller); otherwise a bearer token is looked up.
    pub async fn handle<B>(
        &self,
        req: Request<B>,
        transport_user: Option<User>,
    ) -> Response<ApiBody>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let started = Instant::now();
        let (mut parts, body) = req.into_parts();
        let route = request::route(parts.uri.path());
        let query = Query::parse(parts.uri.query());
        let verb = verb_of(&parts.method, &route, &query);
        let resource = match &route {
            Route::Resource(p) => p.resource.clone(),
            _ => String::new(),
        };
        let accept = parts.headers.get(header::ACCEPT).cloned();
        let mut response = match &route {
            Route::Health(_) | Route::Version | Route::CaCerts => {
                self.unauthenticated(&route, &query).await
            }
            _ => match self.authenticate(transport_user, &parts.headers).await {
                None => body::error_response(&ApiError::unauthorized()),
                Some(user) => {
                    // Audited as the requester, before impersonation and authorization.
                    let config = &self.inner.config.audit;
                    let mut audit =
                        super::audit::Record::begin(config, &parts, &route, &query, &user);
                    let body = match audit.as_mut().filter(|a| a.wants_request_body()) {
                        None => http_body_util::Either::Left(body),
                        Some(record) => match body::read_body(body).await {
                            Ok(bytes) => {
                                record.request_body(&bytes);
                                http_body_util::Either::Right(http_body_util::Full::new(bytes))
                            }
                            Err(err) => {
                                let response = body::error_response(&err);
                                return match audit {
                                    Some(record) => record.finish(response).await,
                                    None => response,
                                };
                            }
                        },
                    };
                    let identity =
                        super::impersonation::apply(self, user, &mut parts.headers).await;
                    let response = match identity {
                        Err(err) => body::error_response(&err),
                        Ok(identity) => {
                            if let Some(record) = audit.as_mut() {
                                record.impersonated(&identity);
                            }
                            let serve =
                                self.serve_as(route, query, parts, body, identity.effective, verb);
                            super::audit::annotated(audit.as_ref(), serve).await
                        }
                    };
                    match audit {
                        Some(record) => record.finish(response).await,
                        None => response,
                    }
                }
            },
        };
        body::negotiate_error(&mut response, accept.as_ref().and_then(|a| a.to_str().ok()));
        self.inner.metrics.observe(verb, &resource, response.status().as_u16(), started.elapsed());
        response
    }

    /// Serves an authenticated request as `user`, a panic turned into a 500 `Status`.
    async fn serve_as<B>(
        &self,
        route: Route,
        query: Query,
        parts: http::request::Parts,
        body: B,
        user: User,
        verb: &'static str,
    ) -> Response<ApiBody>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let call = self.limited(route, query, parts, body, user, verb);
        match AssertUnwindSafe(call).catch_unwind().await {
            Ok(response) => response,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(panic = %what, "request handler panicked");
                body::error_response(&ApiError::internal("the request handler failed"))
            }
        }
    }

    /// The transport's user, else the bearer token's: a static token, or a bootstrap token.
    async fn authenticate(
        &self,
        transport_user: Option<User>,
        headers: &HeaderMap,
    ) -> Option<User> {
        if transport_user.is_some() {
            return transport_user;
        }
        let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let token = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer "))?.trim();
        match self.inner.tokens.authenticate(token) {
            Some(user) => Some(user),
            None if super::serviceaccount::authenticator::looks_like_jwt(token) => {
                let audiences = &self.inner.service_accounts.audiences;
                super::serviceaccount::authenticator::authenticate(self, token, audiences)
                    .await
                    .inspect_err(|err| tracing::debug!(%err, "service account token refused"))
                    .ok()
                    .flatten()
                    .map(|found| found.user)
            }
            None => super::bootstrap_token::authenticate(self, token).await,
        }
    }

    async fn limited<B>(
        &self,
        route: Route,
        query: Query,
        parts: http::request::Parts,
        body: B,
        user: User,
        verb: &'static str,
    ) -> Response<ApiBody>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        // Watches are long-running and not counted, as in the reference's max-in-flight filter.
        // The agent tunnel and the streaming subresources are long-running: not counted.
        let mut parts = parts;
        // Authorization before any work, for every authenticated route (the tunnel and
        // discovery as non-resource paths).
        let path = parts.uri.path().to_string();
        if let Err(err) =
            super::authz::check_request(self, &user, &parts.method, &path, &route, &query).await
        {
            return body::error_response(&err);
        }
        if route == Route::Tunnel {
            return super::tunnel::accept(&self.inner.tunnels, &mut parts, &user);
        }
        if let Route::Resource(path) = &route {
            if let Some(kind) = super::tunnel::proxy::PodStream::of(path) {
                return super::tunnel::proxy::serve(self, kind, path, parts)
                    .await
                    .unwrap_or_else(|err| body::error_response(&err));
            }
            if path.group.is_empty() && path.resource == "nodes" && path.proxy_path.is_some() {
                return super::tunnel::proxy::serve_node(self, path, parts)
                    .await
                    .unwrap_or_else(|err| body::error_response(&err));
            }
        }
        // As in the reference's max-in-flight filter, system:masters is never limited (the
        // server's own bootstrap writes run as it).
        let privileged = user.groups.iter().any(|g| g == "system:masters");
        let semaphore = match verb {
            _ if privileged => None,
            "watch" => None,
            "get" | "list" => Some(&self.inner.readonly),
            _ => Some(&self.inner.mutating),
        };
        let _permit = match semaphore.map(Semaphore::try_acquire) {
            Some(Err(_)) => return body::error_response(&ApiError::too_many_requests()),
            Some(Ok(permit)) => Some(permit),
            None => None,
        };
        let result = match route {
            // metrics.k8s.io: computed from the nodes' usage on each request, nothing stored.
            Route::Resource(path) if super::resource_metrics::handles(&path) => {
                let (method, accept) = (&parts.method, parts.headers.get(header::ACCEPT));
                match request::output_format(accept.and_then(|a| a.to_str().ok())) {
                    Ok(output) => {
                        super::resource_metrics::serve(self, &path, &query, method, &user, output)
                            .await
                            .map(Reply::from)
                    }
                    Err(err) => Err(err),
                }
            }
            Route::Resource(path) => self.resource(path, query, parts, body, user).await,
            Route::OpenApi(path) => {
                let (openapi, registry) = (&self.inner.openapi, &self.inner.registry);
                openapi::respond(openapi, registry, &path, &query, &parts.headers)
                    .await
                    .map(Reply::from)
            }
            other => self.discovery(&other, &parts.headers).await.map(Reply::from),
        };
        match result {
            Ok(reply) => {
                let mut response = reply.response;
                for warning in reply.warnings {
                    // A quoted-string (RFC 9110): quotes and backslashes escaped, as the reference does.
                    let escaped = warning.replace('\\', "\\\\").replace('"', "\\\"");
                    let text = format!("299 - \"{escaped}\"");
                    if let Ok(value) = HeaderValue::from_str(&text) {
                        response.headers_mut().append(header::WARNING, value);
                    }
                }
                response
            }
            Err(err) => body::error_response(&err),
        }
    }

    async fn resource<B>(
        &self,
        path: ResourcePath,
        query: Query,
        parts: http::request::Parts,
        body: B,
        user: User,
    ) -> ApiResult<Reply>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let info = self
            .inner
            .registry
            .resolve(&path.group, &path.version, &path.resource)
            .ok_or_else(ApiError::path_not_found)?;
        if path.namespace.is_some() && !info.namespaced {
            return Err(ApiError::path_not_found());
        }
        if let Some(sub) = &path.subresource {
            if !info.subresources.iter().any(|s| s == sub) {
                return Err(ApiError::path_not_found());
            }
        }
        let accept = parts.headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
        let protobuf = super::protobuf::supports(&info.api_version(), &info.kind);
        let output = request::output_format_for(accept, protobuf)?;
        let body = body::read_body(body).await?;
        let call = Call {
            info,
            path,
            query,
            output,
            headers: parts.headers,
            method: parts.method,
            body,
            user,
        };
        rest::dispatch(self, call).await
    }

    async fn unauthenticated(&self, route: &Route, query: &Query) -> Response<ApiBody> {
        match route {
            Route::Version => body::object_response(StatusCode::OK, &version_info(), Output::Json),
            // What a joining agent pins by the hash in its token (k3s serves the same path).
            Route::CaCerts if !self.inner.config.ca_pem.is_empty() => body::text_response(
                StatusCode::OK,
                self.inner.config.ca_pem.clone(),
                "text/plain; charset=utf-8",
            ),
            Route::Health(check) => {
                let ok = check == "ping" || self.store_healthy().await;
                let (sign, word) = if ok { ("+", "ok") } else { ("-", "failed") };
                let text = if query.get("verbose").is_some() {
                    format!("[+]ping ok\n[{sign}]etcd {word}\nhealthz check {word}\n")
                } else if ok {
                    "ok".to_string()
                } else {
                    "[-]etcd failed: reason withheld\nhealthz check failed\n".to_string()
                };
                let code = if ok { StatusCode::OK } else { StatusCode::INTERNAL_SERVER_ERROR };
                body::text_response(code, text, "text/plain; charset=utf-8")
            }
            _ => body::error_response(&ApiError::path_not_found()),
        }
    }

    /// Whether the store answers a read.
    pub async fn store_healthy(&self) -> bool {
        let probe = self.inner.store.range(RangeRequest {
            key: b"/registry/health".to_vec(),
            count_only: true,
            ..Default::default()
        });
        matches!(tokio::time::timeout(std::time::Duration::from_secs(2), probe).await, Ok(Ok(_)))
    }

    async fn discovery(&self, route: &Route, headers: &HeaderMap) -> ApiResult<Response<ApiBody>> {
        let registry = &self.inner.registry;
        let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
        let aggregated = accept.split(',').next().is_some_and(|first| {
            first.contains("as=APIGroupDiscoveryList") && first.contains("v=v2")
        });
        let json = |v: Value| Ok(body::object_response(StatusCode::OK, &v, Output::Json));
        match route {
            Route::LegacyRoot | Route::GroupsRoot if aggregated => {
                let value = discovery::aggregated(registry, matches!(route, Route::LegacyRoot));
                let mut response = body::object_response(StatusCode::OK, &value, Output::Json);
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(
                        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
                    ),
                );
                Ok(response)
            }
            Route::LegacyRoot => json(discovery::api_versions()),
            Route::GroupsRoot => json(discovery::api_group_list(registry)),
            Route::Group(group) => discovery::api_group(registry, group)
                .map_or_else(|| Err(ApiError::path_not_found()), json),
            Route::GroupVersion { group, version } => {
                discovery::api_resource_list(registry, group, version)
                    .map_or_else(|| Err(ApiError::path_not_found()), json)
            }
            Route::OidcConfiguration => {
                let doc = super::serviceaccount::oidc::configuration(&self.inner.service_accounts);
                Ok(super::serviceaccount::oidc::respond(&doc, "application/json"))
            }
            Route::OidcJwks => {
                let keys = super::serviceaccount::oidc::jwks(&self.inner.service_accounts);
                Ok(super::serviceaccount::oidc::respond(&keys, "application/jwk-set+json"))
            }
            Route::Metrics => {
                let watchers = self.inner.metrics.render();
                Ok(body::text_response(StatusCode::OK, watchers, "text/plain; version=0.0.4"))
            }
            _ => Err(ApiError::path_not_found()),
        }
    }
}

/// The `/version` document.
pub fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": KUBERNETES_VERSION,
        "gitCommit": env!("CARGO_PKG_VERSION"),
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": format!("linux/{}", match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "arm" => "arm",
            other => other,
        }),
    })
}

/// The handler as a `tower` service with a fixed caller: the in-process client of the
/// scheduler and controllers (no TCP hop, same authn/admission/validation path).
#[derive(Clone, Debug)]
pub struct ApiService {
    server: ApiServer,
    user: User,
}

impl<B> tower_service::Service<Request<B>> for ApiService
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<ApiBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ApiBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let server = self.server.clone();
        let user = self.user.clone();
        Box::pin(async move { Ok(server.handle(req, Some(user)).await) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::{SqliteOptions, SqliteStore};
    use http_body_util::{BodyExt, Full};

    #[tokio::test]
    async fn in_process_service_takes_the_same_path_as_https() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            SqliteStore::open(dir.path().join("state.db"), SqliteOptions::default()).unwrap();
        let server =
            ApiServer::new(Arc::new(store), ApiConfig::default(), TokenAuthenticator::default());
        super::super::serve::bootstrap(&server).await.unwrap();

        let mut service = server.service(User::system_admin());
        let request =
            Request::get("/api/v1/namespaces/default").body(Full::new(Bytes::new())).unwrap();
        let response = tower_service::Service::call(&mut service, request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let ns: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(ns["metadata"]["name"], "default");
        assert_eq!(ns["status"]["phase"], "Active");

        // Without a user from the transport and without a token: 401.
        let request = Request::get("/api/v1/namespaces").body(Full::new(Bytes::new())).unwrap();
        let response = server.handle(request, None).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
}
