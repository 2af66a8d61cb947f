//! Where a pod's referenced objects come from: ConfigMaps, Secrets, service account tokens and
//! the host paths behind persistentVolumeClaims.
//!
//! `env` and `volumes` read objects only through [`ObjectSource`]; the agent core implements it
//! over the API server and its local cache (so pods keep starting while the server is away).
//! Contract:
//! - `config_map` / `secret` answer `Ok(None)` when the object does not exist (kubelet's
//!   `NotFound`, which `optional: true` references tolerate) and `Err` when the answer is
//!   unknown (server unreachable and nothing cached) — an `Err` is never treated as "absent".
//! - `service_account_token` performs a TokenRequest for the pod (bound to it) and returns the
//!   token; the caller decides when to rotate it.
//! - `persistent_volume` resolves a claim to the hostPath-style source of its bound volume;
//!   the default answers `None` (no local volumes on this node).
//!
//! [`MemoryObjects`] is a plain in-memory source: static pods with inline objects, and tests.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{ConfigMap, HostPathVolumeSource, Pod, Secret};

/// Why an object could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The source could not answer (API server unreachable and no cached copy, …).
    #[error("{0}")]
    Unavailable(String),
    /// The API server refused the request (TokenRequest denied, …); the message is its own.
    #[error("{0}")]
    Refused(String),
}

/// Read access to the objects a pod references. Implemented by the agent core.
#[async_trait]
pub trait ObjectSource: Send + Sync {
    /// The ConfigMap `ns/name`, `None` when it does not exist.
    async fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, ObjectError>;
    /// The Secret `ns/name`, `None` when it does not exist.
    async fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, ObjectError>;
    /// A token for `service_account` bound to `pod` (TokenRequest), valid for
    /// `expiration_seconds`, for `audience` (the API server's default audiences when `None`).
    async fn service_account_token(
        &self,
        pod: &Pod,
        service_account: &str,
        audience: Option<&str>,
        expiration_seconds: i64,
    ) -> Result<String, ObjectError>;
    /// The host directory behind the pod's claim `claim_name` (the bound PersistentVolume's
    /// `hostPath`/`local` path), `None` when the claim is missing or unbound.
    async fn persistent_volume(
        &self,
        _pod: &Pod,
        _claim_name: &str,
    ) -> Result<Option<HostPathVolumeSource>, ObjectError> {
        Ok(None)
    }
}

/// An [`ObjectSource`] over objects held in memory. Tokens are `token:<sa>:<audience>:<n>`
/// with `n` counting the requests, so a caller can see that a token was re-requested.
#[derive(Default)]
pub struct MemoryObjects {
    config_maps: Mutex<HashMap<(String, String), ConfigMap>>,
    secrets: Mutex<HashMap<(String, String), Secret>>,
    claims: Mutex<HashMap<(String, String), HostPathVolumeSource>>,
    tokens_issued: Mutex<u64>,
}

impl MemoryObjects {
    /// An empty source.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a ConfigMap (keyed by its metadata namespace/name).
    pub fn put_config_map(&self, cm: ConfigMap) {
        let key = key_of(&cm.metadata);
        lock(&self.config_maps).insert(key, cm);
    }

    /// Adds or replaces a Secret.
    pub fn put_secret(&self, secret: Secret) {
        let key = key_of(&secret.metadata);
        lock(&self.secrets).insert(key, secret);
    }

    /// Binds claim `ns/name` to a host path.
    pub fn put_claim(&self, ns: &str, name: &str, source: HostPathVolumeSource) {
        lock(&self.claims).insert((ns.to_owned(), name.to_owned()), source);
    }

    /// How many tokens were requested so far.
    pub fn tokens_issued(&self) -> u64 {
        *lock(&self.tokens_issued)
    }
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_else(|| "default".to_owned()),
        meta.name.clone().unwrap_or_default(),
    )
}

// A poisoned lock only means another test thread panicked; the maps stay usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[async_trait]
impl ObjectSource for MemoryObjects {
    async fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, ObjectError> {
        Ok(lock(&self.config_maps).get(&(ns.to_owned(), name.to_owned())).cloned())
    }

    async fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, ObjectError> {
        Ok(lock(&self.secrets).get(&(ns.to_owned(), name.to_owned())).cloned())
    }

    async fn service_account_token(
        &self,
        _pod: &Pod,
        service_account: &str,
        audience: Option<&str>,
        _expiration_seconds: i64,
    ) -> Result<String, ObjectError> {
        let mut n = lock(&self.tokens_issued);
        *n += 1;
        Ok(format!("token:{service_account}:{}:{}", audience.unwrap_or(""), *n))
    }

    async fn persistent_volume(
        &self,
        pod: &Pod,
        claim_name: &str,
    ) -> Result<Option<HostPathVolumeSource>, ObjectError> {
        let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".to_owned());
        Ok(lock(&self.claims).get(&(ns, claim_name.to_owned())).cloned())
    }
}
