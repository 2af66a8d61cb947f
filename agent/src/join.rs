//! Joining a cluster with a token, like the reference TLS bootstrap: the join token
//! `K10<sha256 of the CA PEM>::<id>.<secret>` (from `DATA_DIR/server/node-token` or
//! `skerry token create`) lets the agent fetch the cluster CA from `/cacerts` and pin it by its
//! hash, then authenticate as `system:bootstrap:<id>` to submit a CertificateSigningRequest for
//! `system:node:<name>` (signer `kubernetes.io/kube-apiserver-client-kubelet`), which the server
//! approves and signs. The agent writes its key, certificate and kubeconfig under its data dir
//! and uses them from then on; a later start with a kubeconfig in place does not join again.
//!
//! Boards without a real-time clock boot in 1970: every certificate looks "not yet valid"
//! then, so the join waits until the clock reaches the binary's build year.
//!
//! `cert_renewal` reuses the request half (a new key and CSR, submitted and awaited) to renew
//! the certificate with the node's own identity, and [`join`] itself when the certificate has
//! expired and only the bootstrap token can get a new one.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::config::AgentConfig;

/// The signer of node client certificates.
const SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// How long to wait for the server to sign.
const SIGN_TIMEOUT: Duration = Duration::from_secs(300);

/// Why joining failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("the join token is malformed (want K10<ca hash>::<id>.<secret>)")]
    Token,
    #[error("joining needs --server")]
    NoServer,
    #[error("fetching the cluster CA from {url}: {message}")]
    CaFetch { url: String, message: String },
    #[error("the CA served by {server} does not match the hash in the join token (wrong server or token)")]
    CaMismatch { server: String },
    #[error("making the node key: {0}")]
    Key(String),
    #[error("the API server refused the bootstrap request: {0}")]
    Api(String),
    #[error("certificate request {name}: {message}")]
    Refused { name: String, message: String },
    #[error("certificate request {name} was not signed within {secs} s")]
    Timeout { name: String, secs: u64 },
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// A parsed join token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// Hex SHA-256 of the cluster CA certificate PEM.
    pub ca_hash: String,
    /// `<id>.<secret>`, the bootstrap bearer token.
    pub bearer: String,
}

impl JoinToken {
    /// Parses `K10<64 hex>::<id>.<secret>`.
    pub fn parse(text: &str) -> Result<JoinToken, JoinError> {
        let rest = text.trim().strip_prefix("K10").ok_or(JoinError::Token)?;
        let (hash, bearer) = rest.split_once("::").ok_or(JoinError::Token)?;
        let hex = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
        let (id, secret) = bearer.split_once('.').ok_or(JoinError::Token)?;
        let token_chars = |s: &str| s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !hex || id.len() != 6 || secret.len() != 16 || !token_chars(id) || !token_chars(secret) {
            return Err(JoinError::Token);
        }
        Ok(JoinToken { ca_hash: hash.to_ascii_lowercase(), bearer: bearer.to_string() })
    }
}

/// Hex SHA-256 of `pem`.
fn sha256_hex(pem: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, pem);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Joins with `token` unless `config.kubeconfig` already exists; afterwards the kubeconfig holds
/// the node's own credentials.
pub async fn ensure_joined(config: &AgentConfig, token: &str) -> Result<(), JoinError> {
    if config.kubeconfig.exists() {
        return Ok(());
    }
    join(config, token).await
}

/// Joins with `token` whether or not a kubeconfig exists (its key, certificate and kubeconfig
/// are replaced).
pub async fn join(config: &AgentConfig, token: &str) -> Result<(), JoinError> {
    let token = JoinToken::parse(token)?;
    let server = config.server.clone().ok_or(JoinError::NoServer)?;
    let server = server.trim_end_matches('/').to_string();
    wait_for_sane_clock().await;

    let url = format!("{server}/cacerts");
    let (status, ca) = crate::probes::http::unverified_get(&url)
        .await
        .map_err(|message| JoinError::CaFetch { url: url.clone(), message })?;
    if status != 200 {
        return Err(JoinError::CaFetch { url, message: format!("HTTP {status}") });
    }
    if sha256_hex(&ca) != token.ca_hash {
        return Err(JoinError::CaMismatch { server });
    }
    let ca_pem = String::from_utf8_lossy(&ca).into_owned();

    let tls_dir = config.data_dir.join("tls");
    let (key_pem, request) = node_request(&config.node_name)?;

    // The bootstrap kubeconfig: the pinned CA and the token (as the reference kubelet's).
    let bootstrap = tls_dir.join("bootstrap.kubeconfig");
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: skerry\n  cluster:\n    server: {server}\n    \
         certificate-authority-data: {ca}\nusers:\n- name: bootstrap\n  user:\n    token: {token}\n\
         contexts:\n- name: bootstrap\n  context:\n    cluster: skerry\n    user: bootstrap\n\
         current-context: bootstrap\n",
        ca = b64(&ca_pem),
        token = token.bearer,
    );
    write_private(&bootstrap, text.as_bytes())?;
    let client = client_from(&bootstrap).await?;
    let cert_pem =
        request_certificate(client, &config.node_name, &request, config.client_cert_duration)
            .await?;
    let _ = std::fs::remove_file(&bootstrap);

    let cert_file = tls_dir.join("node.crt");
    let key_file = tls_dir.join("node.key");
    // As one change: a rejoin replaces a pair the running agent may be reading.
    crate::credentials::write_pair(&cert_file, &key_file, cert_pem.as_bytes(), key_pem.as_bytes())
        .map_err(|source| JoinError::Write { path: cert_file.clone(), source })?;
    let user = format!("system:node:{}", config.node_name);
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: skerry\n  cluster:\n    server: {server}\n    \
         certificate-authority-data: {ca}\nusers:\n- name: {user}\n  user:\n    client-certificate: {cert}\n    \
         client-key: {key}\ncontexts:\n- name: skerry\n  context:\n    cluster: skerry\n    user: {user}\n\
         current-context: skerry\n",
        ca = b64(&ca_pem),
        cert = cert_file.display(),
        key = key_file.display(),
    );
    write_private(&config.kubeconfig, kubeconfig.as_bytes())?;
    tracing::info!(node = %config.node_name, %server, "joined the cluster");
    Ok(())
}

/// A new key (PEM) and a certificate signing request (PEM) for `system:node:<node>` in
/// `system:nodes`.
pub(crate) fn node_request(node: &str) -> Result<(String, String), JoinError> {
    let key = rcgen::KeyPair::generate().map_err(|e| JoinError::Key(e.to_string()))?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(rcgen::DnType::CommonName, format!("system:node:{node}"));
    params.distinguished_name.push(rcgen::DnType::OrganizationName, "system:nodes");
    let request = params.serialize_request(&key).map_err(|e| JoinError::Key(e.to_string()))?;
    let request = request.pem().map_err(|e| JoinError::Key(e.to_string()))?;
    Ok((key.serialize_pem(), request))
}

async fn client_from(path: &Path) -> Result<kube::Client, JoinError> {
    let api = |e: String| JoinError::Api(e);
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| api(e.to_string()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| api(e.to_string()))?;
    kube::Client::try_from(cfg).map_err(|e| api(e.to_string()))
}

/// Submits the request (asking for `duration` when given, as `spec.expirationSeconds`) and
/// waits for its certificate (PEM).
pub(crate) async fn request_certificate(
    client: kube::Client,
    node: &str,
    request: &str,
    duration: Option<Duration>,
) -> Result<String, JoinError> {
    let api: Api<CertificateSigningRequest> = Api::all(client);
    let csr = CertificateSigningRequest {
        metadata: kube::api::ObjectMeta {
            generate_name: Some(format!("node-csr-{node}-")),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(request.as_bytes().to_vec()),
            signer_name: SIGNER.into(),
            usages: Some(vec![
                "digital signature".into(),
                "key encipherment".into(),
                "client auth".into(),
            ]),
            expiration_seconds: duration.map(|d| i32::try_from(d.as_secs()).unwrap_or(i32::MAX)),
            ..Default::default()
        },
        status: None,
    };
    let created = api
        .create(&PostParams::default(), &csr)
        .await
        .map_err(|e| JoinError::Api(e.to_string()))?;
    let name = created.metadata.name.unwrap_or_default();
    let deadline = tokio::time::Instant::now() + SIGN_TIMEOUT;
    loop {
        match api.get(&name).await {
            Ok(csr) => {
                let status = csr.status.unwrap_or_default();
                if let Some(cert) = status.certificate.filter(|c| !c.0.is_empty()) {
                    return String::from_utf8(cert.0).map_err(|_| JoinError::Refused {
                        name,
                        message: "the certificate is not PEM".into(),
                    });
                }
                let refused = status.conditions.unwrap_or_default().into_iter().find(|c| {
                    matches!(c.type_.as_str(), "Denied" | "Failed") && c.status != "False"
                });
                if let Some(c) = refused {
                    let message = format!("{}: {}", c.type_, c.message.unwrap_or_default());
                    return Err(JoinError::Refused { name, message });
                }
            }
            Err(err) => tracing::debug!(%err, "reading the certificate request"),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(JoinError::Timeout { name, secs: SIGN_TIMEOUT.as_secs() });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits (logging every minute) while the clock is before the build year.
pub(crate) async fn wait_for_sane_clock() {
    let mut waited = 0u64;
    loop {
        let clock = crate::check::clock::inspect(SystemTime::now());
        if clock.sane {
            return;
        }
        if waited.is_multiple_of(60) {
            tracing::warn!(
                year = clock.year,
                build_year = clock.build_year,
                "the clock is not set; waiting before using certificates"
            );
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        waited += 5;
    }
}

/// Writes `bytes` to `path` (mode 0600) atomically.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), JoinError> {
    crate::credentials::write_private(path, bytes)
        .map_err(|source| JoinError::Write { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_tokens_parse_and_bad_ones_are_refused() {
        let hash = "ab".repeat(32);
        let token = JoinToken::parse(&format!("K10{hash}::abcdef.0123456789abcdef\n")).unwrap();
        assert_eq!(token.ca_hash, hash);
        assert_eq!(token.bearer, "abcdef.0123456789abcdef");
        for bad in [
            format!("{hash}::abcdef.0123456789abcdef"),
            format!("K10{}::abcdef.0123456789abcdef", &hash[1..]),
            format!("K10{hash}:abcdef.0123456789abcdef"),
            format!("K10{hash}::abcdef0123456789abcdef"),
            format!("K10{hash}::ABCDEF.0123456789abcdef"),
            "K10::".to_string(),
        ] {
            assert!(JoinToken::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_ca_hash_is_sha256_hex_of_the_pem() {
        // sha256("abc"), the FIPS 180-2 test vector.
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
