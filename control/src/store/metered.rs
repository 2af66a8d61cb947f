//! A [`Store`] that times its data calls (range, put, delete, txn) and hands each duration to a
//! [`LatencySink`] — the API server's `/metrics` — labelled by operation and by the resource
//! type the key belongs to (`/registry/<type>/…`, `/registry/<group>/<type>/…`), as the
//! reference's `etcd_request_duration_seconds` is.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::*;

/// Where durations go.
pub trait LatencySink: Send + Sync + 'static {
    /// One finished store call.
    fn observe_store(&self, operation: &'static str, resource_type: &str, elapsed: Duration);
}

/// `inner`, timed.
pub struct Metered {
    inner: Arc<dyn Store>,
    sink: Arc<dyn LatencySink>,
}

impl Metered {
    /// Wraps `inner`; every data call is reported to `sink`.
    pub fn new(inner: Arc<dyn Store>, sink: Arc<dyn LatencySink>) -> Metered {
        Metered { inner, sink }
    }

    fn observe(&self, operation: &'static str, key: &[u8], started: Instant) {
        self.sink.observe_store(operation, &resource_type(key), started.elapsed());
    }
}

/// The resource type of a key: the segment after `/registry/` (and after the group, for keys
/// of a named group, whose segment has a dot); other keys are typed by their first segment.
pub fn resource_type(key: &[u8]) -> String {
    let text = String::from_utf8_lossy(key);
    let mut parts = text.trim_start_matches('/').split('/');
    match parts.next() {
        Some("registry") => {
            let first = parts.next().unwrap_or("");
            match parts.next() {
                Some(second) if first.contains('.') => second.to_string(),
                _ => first.to_string(),
            }
        }
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

/// The key a transaction is about: its first compare's or operation's.
fn txn_key(req: &TxnRequest) -> &[u8] {
    if let Some(c) = req.compare.first() {
        return &c.key;
    }
    match req.success.first() {
        Some(RequestOp::Put(p)) => &p.key,
        Some(RequestOp::Range(r)) => &r.key,
        Some(RequestOp::DeleteRange(d)) => &d.key,
        _ => &[],
    }
}

#[async_trait]
impl Store for Metered {
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        let (started, key) = (Instant::now(), req.key.clone());
        let resp = self.inner.range(req).await;
        self.observe("range", &key, started);
        resp
    }

    async fn put(&self, req: PutRequest) -> Result<PutResponse> {
        let (started, key) = (Instant::now(), req.key.clone());
        let resp = self.inner.put(req).await;
        self.observe("put", &key, started);
        resp
    }

    async fn delete_range(&self, req: DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        let (started, key) = (Instant::now(), req.key.clone());
        let resp = self.inner.delete_range(req).await;
        self.observe("delete", &key, started);
        resp
    }

    async fn txn(&self, req: TxnRequest) -> Result<TxnResponse> {
        let (started, key) = (Instant::now(), txn_key(&req).to_vec());
        let resp = self.inner.txn(req).await;
        self.observe("txn", &key, started);
        resp
    }

    async fn compact(&self, revision: Revision) -> Result<Revision> {
        self.inner.compact(revision).await
    }

    async fn watch(&self, req: WatchRequest) -> Result<Watcher> {
        self.inner.watch(req).await
    }

    async fn lease_grant(&self, id: LeaseId, ttl: i64) -> Result<LeaseGrant> {
        self.inner.lease_grant(id, ttl).await
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<Revision> {
        self.inner.lease_revoke(id).await
    }

    async fn lease_keep_alive(&self, id: LeaseId) -> Result<LeaseKeepAlive> {
        self.inner.lease_keep_alive(id).await
    }

    async fn lease_time_to_live(&self, id: LeaseId, keys: bool) -> Result<LeaseTimeToLive> {
        self.inner.lease_time_to_live(id, keys).await
    }

    async fn lease_leases(&self) -> Result<LeaseList> {
        self.inner.lease_leases().await
    }

    async fn status(&self) -> Result<StoreStatus> {
        self.inner.status().await
    }

    async fn defragment(&self) -> Result<()> {
        self.inner.defragment().await
    }

    async fn hash_kv(&self, revision: Revision) -> Result<HashKv> {
        self.inner.hash_kv(revision).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_typed_by_resource() {
        assert_eq!(resource_type(b"/registry/pods/default/web"), "pods");
        assert_eq!(resource_type(b"/registry/deployments/default/web"), "deployments");
        assert_eq!(resource_type(b"/registry/services/specs/default/web"), "services");
        assert_eq!(resource_type(b"/registry/stable.example.com/crontabs/ns/a"), "crontabs");
        assert_eq!(resource_type(b"/registry/namespaces/default"), "namespaces");
        assert_eq!(resource_type(b"/other/key"), "other");
    }
}
