//! Starting the API server process: certificates and the admin kubeconfig in the data
//! directory (the serving certificate kept fresh by [`super::serving_cert`]), the store, the
//! bootstrap objects (system namespaces, the `kubernetes` service), the watch caches, and the
//! HTTPS listener.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{json, Value};

use super::admission::SYSTEM_NAMESPACES;
use super::authn::{TokenAuthenticator, TokenFileError, User};
use super::listener::{self, ListenError};
use super::server::{ApiConfig, ApiServer};
use super::status::ApiError;
use crate::pki::{self, ClusterCa, PkiError};
use crate::store::Store;

/// What `skerry server` needs to start the API server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub data_dir: PathBuf,
    pub bind_address: IpAddr,
    pub port: u16,
    /// Extra serving-certificate SANs.
    pub tls_sans: Vec<String>,
    pub token_auth_file: Option<PathBuf>,
    pub api: ApiConfig,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Tokens(#[from] TokenFileError),
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error("the serving certificate: {0}")]
    ServingCert(#[from] super::serving_cert::ServingCertError),
    #[error(transparent)]
    ServiceAccountKey(#[from] super::serviceaccount::jwt::KeyError),
    #[error("bootstrapping the cluster objects: {0}")]
    Bootstrap(ApiError),
}

/// A started API server: its handler and the address it listens on.
pub struct Started {
    pub server: ApiServer,
    pub addr: SocketAddr,
    pub kubeconfig: PathBuf,
    serving: tokio::task::JoinHandle<()>,
}

impl Started {
    /// Serves until the listener task ends (it does not, short of a panic or abort).
    pub async fn wait(self) {
        let _ = self.serving.await;
    }
}

/// The host's name, for the serving certificate.
fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

/// The host's interface addresses, for serving certificates (the etcd endpoint's too).
pub fn host_addresses() -> Vec<IpAddr> {
    let mut ips = Vec::new();
    let mut addrs: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `addrs` with a list we free with freeifaddrs; we only read
    // sockaddr fields whose family we check first.
    unsafe {
        if libc::getifaddrs(&mut addrs) != 0 {
            return ips;
        }
        let mut cur = addrs;
        while !cur.is_null() {
            let sa = (*cur).ifa_addr;
            if !sa.is_null() {
                match i32::from((*sa).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(sa as *const libc::sockaddr_in);
                        ips.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(sa as *const libc::sockaddr_in6);
                        let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                        // Link-local addresses need a scope id no client puts in a URL.
                        if ip.segments()[0] & 0xffc0 != 0xfe80 {
                            ips.push(IpAddr::V6(ip));
                        }
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(addrs);
    }
    ips
}

/// The serving certificate's SANs.
fn serving_sans(opts: &ServerOptions, service_ip: Ipv4Addr) -> Vec<String> {
    let mut sans: Vec<String> = [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "127.0.0.1",
        "::1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    sans.push(service_ip.to_string());
    sans.extend(hostname());
    sans.extend(host_addresses().iter().map(IpAddr::to_string));
    if !opts.bind_address.is_unspecified() {
        sans.push(opts.bind_address.to_string());
    }
    sans.extend(opts.tls_sans.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    sans.retain(|s| seen.insert(s.clone()));
    sans
}

/// Starts the API server over `store` and returns once it accepts connections.
pub async fn start(opts: ServerOptions, store: Arc<dyn Store>) -> Result<Started, ServeError> {
    let tls_dir = opts.data_dir.join("tls");
    let ca = ClusterCa::load_or_create(&tls_dir)?;
    let service_ip =
        super::admission::ServiceRanges::new(opts.api.service_cidr, opts.api.node_port_range)
            .first_ip();
    // The SANs are computed again on every check: a new node address gets a new certificate.
    let sans_opts = opts.clone();
    let serving = super::serving_cert::ServingCert::load(tls_dir.clone(), move || {
        serving_sans(&sans_opts, service_ip)
    })?;
    let admin = pki::load_or_issue(&tls_dir, "admin", "admin:system:masters", || {
        ca.issue_client("admin", Some("system:masters"))
    })?;
    let tokens = match &opts.token_auth_file {
        Some(path) => TokenAuthenticator::from_file(path)?,
        None => TokenAuthenticator::default(),
    };
    let listener = listener::bind(SocketAddr::new(opts.bind_address, opts.port)).await?;
    let addr = listener.local_addr().map_err(|source| ListenError::Bind {
        addr: SocketAddr::new(opts.bind_address, opts.port),
        source,
    })?;
    let host = match opts.bind_address {
        ip if ip.is_unspecified() => "127.0.0.1".to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    let kubeconfig = opts.data_dir.join("admin.kubeconfig");
    let text =
        pki::kubeconfig(&format!("https://{host}:{}", addr.port()), &ca.cert_pem, &admin, "admin");
    pki::write_private(&kubeconfig, &text)?;

    let mut api = opts.api.clone();
    api.secure_port = addr.port();
    api.ca_pem = ca.cert_pem.clone();
    let key_path = tls_dir.join(super::serviceaccount::KEY_FILE);
    let key = super::serviceaccount::jwt::SigningKey::load_or_create(&key_path)?;
    api.service_accounts.key = Some(Arc::new(key));
    let server = ApiServer::new(store, api, tokens);
    bootstrap(&server).await.map_err(ServeError::Bootstrap)?;
    super::bootstrap_token::ensure_node_token(&server, &opts.data_dir, &ca.cert_pem)
        .await
        .map_err(ServeError::Bootstrap)?;
    let tls = listener::tls_config(serving.clone(), &ca.cert_pem)?;
    serving.keep_fresh(super::serving_cert::CHECK_EVERY);
    let serving = tokio::spawn(listener::serve(listener, tls, server.clone()));
    tracing::info!(%addr, kubeconfig = %kubeconfig.display(), "API server listening");
    Ok(Started { server, addr, kubeconfig, serving })
}

/// The label that marks a server's Node.
pub const CONTROL_PLANE_LABEL: &str = "node-role.kubernetes.io/control-plane";

/// Keeps the server's own Node labelled [`CONTROL_PLANE_LABEL`]: the node's credentials may
/// not set `node-role.kubernetes.io/` labels (NodeRestriction), so the control plane does, as
/// k3s does. Level-triggered: looks every second until the label is on, then every 30 s (a Node
/// deleted and registered again gets it back).
pub fn label_control_plane_node(server: &ApiServer, node: &str) -> tokio::task::JoinHandle<()> {
    let (server, path) = (server.clone(), format!("/api/v1/nodes/{node}"));
    tokio::spawn(async move {
        loop {
            let labelled = match ensure_label(&server, &path).await {
                Ok(labelled) => labelled,
                Err(err) => {
                    tracing::warn!(%err, "labelling the server's Node");
                    false
                }
            };
            let pause = if labelled { 30 } else { 1 };
            tokio::time::sleep(std::time::Duration::from_secs(pause)).await;
        }
    })
}

/// Adds the control-plane label to the Node at `path`; false while there is no such Node.
async fn ensure_label(server: &ApiServer, path: &str) -> Result<bool, ApiError> {
    let call = |method: http::Method, body: Option<Value>| {
        let mut request = http::Request::builder().method(method).uri(path);
        if body.is_some() {
            request = request.header(http::header::CONTENT_TYPE, "application/merge-patch+json");
        }
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        request
            .body(http_body_util::Full::new(bytes::Bytes::from(bytes)))
            .map_err(|e| ApiError::internal(e.to_string()))
    };
    let response = server.handle(call(http::Method::GET, None)?, Some(User::system_admin())).await;
    if response.status() == http::StatusCode::NOT_FOUND {
        return Ok(false);
    }
    let code = response.status();
    let bytes = super::body::read_body(response.into_body()).await.unwrap_or_default();
    let node: Value = serde_json::from_slice(&bytes).unwrap_or_default();
    if !code.is_success() {
        return Err(ApiError::internal(format!("GET {path}: {code}")));
    }
    if node.pointer("/metadata/labels").and_then(|l| l.get(CONTROL_PLANE_LABEL)).is_some() {
        return Ok(true);
    }
    let patch = json!({"metadata": {"labels": {CONTROL_PLANE_LABEL: "true"}}});
    let response =
        server.handle(call(http::Method::PATCH, Some(patch))?, Some(User::system_admin())).await;
    if !response.status().is_success() {
        return Err(ApiError::internal(format!("PATCH {path}: {}", response.status())));
    }
    Ok(true)
}

/// Sends one request through the handler as the system user; 409 AlreadyExists is fine.
pub(crate) async fn ensure(server: &ApiServer, path: &str, body: Value) -> Result<(), ApiError> {
    let request = http::Request::post(path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body.to_string())))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let response = server.handle(request, Some(User::system_admin())).await;
    let code = response.status().as_u16();
    if code == 201 || code == 409 {
        return Ok(());
    }
    let bytes = super::body::read_body(response.into_body()).await.unwrap_or_default();
    Err(ApiError::internal(format!("POST {path}: {code} {}", String::from_utf8_lossy(&bytes))))
}

/// Creates what every cluster has: the system namespaces, the `kubernetes` service and its
/// endpoints; then starts a watch cache per built-in resource.
pub async fn bootstrap(server: &ApiServer) -> Result<(), ApiError> {
    for ns in SYSTEM_NAMESPACES {
        ensure(
            server,
            "/api/v1/namespaces",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .await?;
    }
    let config = &server.inner.config;
    let service_ip = server.inner.ranges.first_ip().to_string();
    ensure(server, "/api/v1/namespaces/default/services", json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"type": "ClusterIP", "clusterIP": service_ip, "sessionAffinity": "None",
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": config.secure_port}]},
    })).await?;
    ensure(server, "/api/v1/namespaces/default/endpoints", json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": config.advertise_address.to_string()}],
                     "ports": [{"name": "https", "port": config.secure_port, "protocol": "TCP"}]}],
    })).await?;
    for class in super::admission::priority::system_classes() {
        ensure(server, "/apis/scheduling.k8s.io/v1/priorityclasses", class).await?;
    }
    super::crd::load_all(server).await.map_err(ApiError::from)?;
    for info in server.inner.registry.all() {
        server.inner.caches.get(&server.inner.store, &info.storage_prefix);
    }
    // The default RBAC policy, aggregated and in the authorizer's index before serving.
    super::authz::start(server).await?;
    Ok(())
}
