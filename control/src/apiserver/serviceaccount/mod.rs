//! Bound service account tokens, as the reference kube-apiserver issues and checks them:
//!
//! - `jwt` and `claims`: ES256 compact JWS and the token's claims (pure, unit-tested);
//! - `token_request`: the `serviceaccounts/<name>/token` subresource (TokenRequest);
//! - `legacy`: the non-expiring tokens of `kubernetes.io/service-account-token` Secrets (made
//!   by the tokens controller, checked against the live Secret);
//! - `authenticator`: bearer JWTs of this issuer → `system:serviceaccount:<ns>:<name>`, checked
//!   against the live service account and the object the token is bound to;
//! - `review`: TokenReview and SelfSubjectReview (`kubectl auth whoami`);
//! - `oidc`: service account issuer discovery (`/.well-known/openid-configuration`, JWKS);
//! - `admission`: the ServiceAccount admission plugin for pods (the `kube-api-access-*`
//!   projected volume).
//!
//! The signing key lives in `DATA_DIR/tls/service-account.key`; [`TokenIssuer`] holds it with
//! the issuer URL and the API audiences for the handler.

pub mod admission;
pub mod authenticator;
pub mod claims;
pub mod jwt;
pub mod legacy;
pub mod oidc;
pub mod review;
pub mod token_request;

use std::sync::Arc;

use jwt::{SigningKey, VerifyingKey};

/// The reference's conventional issuer (`--service-account-issuer`).
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The key file's name in the server's TLS directory.
pub const KEY_FILE: &str = "service-account.key";

/// Service account token settings of the API server.
#[derive(Clone)]
pub struct ServiceAccountConfig {
    /// `iss` of issued tokens; only tokens of this issuer are authenticated.
    pub issuer: String,
    /// `--api-audiences`; empty means `[issuer]`, as in the reference.
    pub api_audiences: Vec<String>,
    /// The signing key; `None` makes a throw-away key (handlers built in unit tests).
    pub key: Option<Arc<SigningKey>>,
    /// `--service-account-max-token-expiration` in seconds (`None`: no cap).
    pub max_token_expiration: Option<i64>,
    /// `--service-account-extend-token-expiration`: pod-bound tokens asked for 3607 s (the
    /// admission's projected volume) are valid for a year but carry a `warnafter`.
    pub extend_token_expiration: bool,
    /// Whether the ServiceAccount admission plugin runs on pod creation. Off in handlers built
    /// without a controller manager (no `default` service account would ever appear).
    pub admission: bool,
}

impl Default for ServiceAccountConfig {
    fn default() -> Self {
        ServiceAccountConfig {
            issuer: DEFAULT_ISSUER.to_string(),
            api_audiences: Vec::new(),
            key: None,
            max_token_expiration: None,
            extend_token_expiration: true,
            admission: false,
        }
    }
}

impl std::fmt::Debug for ServiceAccountConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountConfig")
            .field("issuer", &self.issuer)
            .field("api_audiences", &self.api_audiences)
            .field("max_token_expiration", &self.max_token_expiration)
            .field("admission", &self.admission)
            .finish_non_exhaustive()
    }
}

/// What the handler needs to issue and check tokens.
pub struct TokenIssuer {
    key: Option<Arc<SigningKey>>,
    keys: Vec<VerifyingKey>,
    pub issuer: String,
    /// The API audiences (never empty).
    pub audiences: Vec<String>,
    pub max_token_expiration: Option<i64>,
    pub extend_token_expiration: bool,
    pub admission: bool,
}

impl TokenIssuer {
    /// The issuer of `config`.
    pub fn new(config: &ServiceAccountConfig) -> TokenIssuer {
        let key = match &config.key {
            Some(key) => Some(key.clone()),
            None => match SigningKey::generate() {
                Ok(key) => Some(Arc::new(key)),
                Err(err) => {
                    tracing::error!(%err, "no service account signing key: tokens are disabled");
                    None
                }
            },
        };
        let keys = key.iter().map(|k| k.verifying_key().clone()).collect();
        let audiences = if config.api_audiences.is_empty() {
            vec![config.issuer.clone()]
        } else {
            config.api_audiences.clone()
        };
        TokenIssuer {
            key,
            keys,
            issuer: config.issuer.clone(),
            audiences,
            max_token_expiration: config.max_token_expiration.filter(|m| *m > 0),
            extend_token_expiration: config.extend_token_expiration,
            admission: config.admission,
        }
    }

    /// The public keys tokens are verified with.
    pub fn verifying_keys(&self) -> &[VerifyingKey] {
        &self.keys
    }

    pub(crate) fn signing_key(&self) -> Option<&SigningKey> {
        self.key.as_deref()
    }

    /// The signing key, shared (the tokens controller signs legacy tokens with it).
    pub(crate) fn shared_signing_key(&self) -> Option<Arc<SigningKey>> {
        self.key.clone()
    }
}
