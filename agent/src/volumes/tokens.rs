//! Projected service account tokens: requested through the `ObjectSource`, kept in memory and
//! rotated like kubelet's token manager — once 80 % of the token's lifetime has passed, or after
//! 24 h whatever the lifetime. After an agent restart the first refresh requests new tokens
//! (the old ones stay valid until they expire).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

use crate::objects::ObjectSource;

/// kubelet rotates every token at least this often.
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// The API server's default for `expirationSeconds`.
const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;

/// One token file: pod, volume and path within it.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(crate) struct TokenKey {
    pod_uid: String,
    volume: String,
    path: String,
}

impl TokenKey {
    pub(crate) fn new(pod: &Pod, volume: &str, path: &str) -> Self {
        Self {
            pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
            volume: volume.to_owned(),
            path: path.to_owned(),
        }
    }
}

struct Issued {
    token: String,
    at: Instant,
    ttl: Duration,
}

/// Where token ages are measured from: `Instant::now` unless a test injects another clock.
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// Tokens issued to this node's pods, by file.
pub(crate) struct TokenCache {
    issued: Mutex<HashMap<TokenKey, Issued>>,
    clock: Clock,
}

impl Default for TokenCache {
    fn default() -> Self {
        Self::with_clock(Arc::new(Instant::now))
    }
}

/// Whether a token issued at `issued`, valid for `ttl`, is due for rotation at `now`.
pub(crate) fn needs_refresh(issued: Instant, ttl: Duration, now: Instant) -> bool {
    let age = now.saturating_duration_since(issued);
    age >= ttl.mul_f64(0.8) || age >= MAX_TTL
}

impl TokenCache {
    /// A cache reading the time from `clock`.
    pub(crate) fn with_clock(clock: Clock) -> Self {
        Self { issued: Mutex::default(), clock }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TokenKey, Issued>> {
        self.issued.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current token for `key`, requesting a new one when there is none or it is due.
    pub(crate) async fn token(
        &self,
        pod: &Pod,
        key: TokenKey,
        audience: Option<&str>,
        expiration_seconds: Option<i64>,
        objects: &dyn ObjectSource,
    ) -> Result<String, String> {
        let seconds = expiration_seconds.unwrap_or(DEFAULT_EXPIRATION_SECONDS).max(1);
        let ttl = Duration::from_secs(seconds.unsigned_abs());
        if let Some(current) = self.lock().get(&key) {
            if !needs_refresh(current.at, current.ttl, (self.clock)()) {
                return Ok(current.token.clone());
            }
        }
        let account = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.as_deref())
            .filter(|s| !s.is_empty())
            .unwrap_or("default");
        let audience = audience.filter(|a| !a.is_empty());
        let token = objects
            .service_account_token(pod, account, audience, seconds)
            .await
            .map_err(|e| format!("failed to fetch token: {e}"))?;
        self.lock().insert(key, Issued { token: token.clone(), at: (self.clock)(), ttl });
        Ok(token)
    }

    /// Drops the tokens of a pod that is gone.
    pub(crate) fn forget_pod(&self, pod_uid: &str) {
        self.lock().retain(|k, _| k.pod_uid != pod_uid);
    }

    /// Pretends every token was issued `by` earlier (tests of rotation without waiting).
    #[cfg(test)]
    pub(crate) fn age(&self, by: Duration) {
        for issued in self.lock().values_mut() {
            issued.at = issued.at.checked_sub(by).unwrap_or(issued.at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_rotate_at_80_percent_of_their_lifetime_or_after_a_day() {
        let t0 = Instant::now();
        let hour = Duration::from_secs(3600);
        assert!(!needs_refresh(t0, hour, t0 + Duration::from_secs(2879)));
        assert!(needs_refresh(t0, hour, t0 + Duration::from_secs(2880)));
        let week = Duration::from_secs(7 * 24 * 3600);
        assert!(!needs_refresh(t0, week, t0 + Duration::from_secs(23 * 3600)));
        assert!(needs_refresh(t0, week, t0 + MAX_TTL));
    }
}
