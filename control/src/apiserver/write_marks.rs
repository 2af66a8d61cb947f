//! Write marks: for each key prefix, the store revision of the last write this API server made
//! under it. Readers of a watch cache (admission's lookups of namespaces, LimitRanges, quotas,
//! …) wait until the cache has caught up with the mark of its prefix, so a client that creates
//! a LimitRange and then a pod sees the LimitRange applied, although the cache itself is
//! fed asynchronously. The reference's plugins read informers with no such guarantee (a write
//! a moment ago may take effect a moment later); this keeps their cost (no store read per
//! request) and adds read-your-writes for everything written through this server. Writes made
//! by other processes sharing an external store remain eventually consistent, as in the
//! reference.
//!
//! [`Marking`] is the [`Store`] wrapper that notes the marks: every successful put, delete and
//! transaction marks the prefixes `/registry/<a>/` and `/registry/<a>/<b>/` of the keys it
//! wrote, which covers every watch cache's storage prefix (core `/registry/pods/`, grouped
//! `/registry/<group>/<plural>/`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::store::*;

/// The last write revision under each prefix.
#[derive(Debug, Default)]
pub struct WriteMarks {
    marks: Mutex<HashMap<Box<[u8]>, Revision>>,
}

impl WriteMarks {
    /// The revision of the last write under the storage prefix `prefix` (0: none since start).
    pub fn get(&self, prefix: &str) -> Revision {
        let marks = self.marks.lock().unwrap_or_else(|e| e.into_inner());
        marks.get(prefix.as_bytes()).copied().unwrap_or(0)
    }

    /// Notes a write of `key` at `revision`.
    fn note(&self, key: &[u8], revision: Revision) {
        let mut marks = self.marks.lock().unwrap_or_else(|e| e.into_inner());
        for prefix in prefixes(key) {
            match marks.get_mut(prefix) {
                Some(mark) => *mark = (*mark).max(revision),
                None => {
                    marks.insert(prefix.into(), revision);
                }
            }
        }
    }

    /// Notes the writes among `ops` (nested transactions included) at `revision`.
    fn note_ops(&self, ops: &[RequestOp], revision: Revision) {
        for op in ops {
            match op {
                RequestOp::Put(put) => self.note(&put.key, revision),
                RequestOp::DeleteRange(delete) => self.note(&delete.key, revision),
                RequestOp::Txn(txn) => {
                    // Either branch may have run: marking both only makes readers wait longer.
                    self.note_ops(&txn.success, revision);
                    self.note_ops(&txn.failure, revision);
                }
                RequestOp::Range(_) => {}
            }
        }
    }
}

/// The prefixes of `key` that end after its second and third `/`-separated segment
/// (`/registry/pods/` and `/registry/pods/ns/` of `/registry/pods/ns/name`).
fn prefixes(key: &[u8]) -> impl Iterator<Item = &[u8]> {
    let slashes = key.iter().enumerate().filter(|(_, b)| **b == b'/').map(|(i, _)| i);
    // The slash at index 0 opens the key; the ones after `registry` and the next segment close
    // the two prefixes.
    slashes.skip(2).take(2).map(move |end| &key[..=end])
}

/// A [`Store`] that notes its writes in [`WriteMarks`].
pub struct Marking {
    inner: Arc<dyn Store>,
    marks: Arc<WriteMarks>,
}

impl Marking {
    /// Wraps `inner`, noting writes in `marks`.
    pub fn new(inner: Arc<dyn Store>, marks: Arc<WriteMarks>) -> Marking {
        Marking { inner, marks }
    }
}

#[async_trait]
impl Store for Marking {
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        self.inner.range(req).await
    }

    async fn put(&self, req: PutRequest) -> Result<PutResponse> {
        let key = req.key.clone();
        let resp = self.inner.put(req).await?;
        self.marks.note(&key, resp.revision);
        Ok(resp)
    }

    async fn delete_range(&self, req: DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        let key = req.key.clone();
        let resp = self.inner.delete_range(req).await?;
        self.marks.note(&key, resp.revision);
        Ok(resp)
    }

    async fn txn(&self, req: TxnRequest) -> Result<TxnResponse> {
        // Only the keys of the branch that ran are written; keep them, not the values.
        let keys = |ops: &[RequestOp]| -> Vec<RequestOp> { ops.iter().map(key_only).collect() };
        let (success, failure) = (keys(&req.success), keys(&req.failure));
        let resp = self.inner.txn(req).await?;
        let ran = if resp.succeeded { &success } else { &failure };
        self.marks.note_ops(ran, resp.revision);
        Ok(resp)
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
        // The keys a lease carries (events, leases) are none that admission reads.
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

/// `op` reduced to the key(s) it writes (values dropped: only the keys are marked).
fn key_only(op: &RequestOp) -> RequestOp {
    match op {
        RequestOp::Put(put) => {
            RequestOp::Put(PutRequest { key: put.key.clone(), ..Default::default() })
        }
        RequestOp::DeleteRange(delete) => RequestOp::DeleteRange(DeleteRangeRequest {
            key: delete.key.clone(),
            ..Default::default()
        }),
        RequestOp::Txn(txn) => RequestOp::Txn(TxnRequest {
            compare: Vec::new(),
            success: txn.success.iter().map(key_only).collect(),
            failure: txn.failure.iter().map(key_only).collect(),
        }),
        RequestOp::Range(_) => RequestOp::Range(RangeRequest::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_the_resource_and_namespace_levels() {
        let got: Vec<&[u8]> = prefixes(b"/registry/pods/ns/name").collect();
        assert_eq!(got, vec![&b"/registry/pods/"[..], &b"/registry/pods/ns/"[..]]);
        let got: Vec<&[u8]> = prefixes(b"/registry/namespaces/default").collect();
        assert_eq!(got, vec![&b"/registry/namespaces/"[..]]);
        assert_eq!(prefixes(b"/registry").count(), 0);
    }

    #[tokio::test]
    async fn writes_mark_their_prefixes_and_failed_branches_do_not() {
        let dir = tempfile::tempdir().expect("temp dir");
        let sqlite = crate::store::sqlite::SqliteStore::open(
            dir.path().join("db"),
            crate::store::sqlite::SqliteOptions::default(),
        )
        .expect("store");
        let marks = Arc::new(WriteMarks::default());
        let store = Marking::new(Arc::new(sqlite), marks.clone());
        let put =
            |key: &str| PutRequest { key: key.into(), value: b"{}".to_vec(), ..Default::default() };
        let rev = store.put(put("/registry/limitranges/a/x")).await.expect("put").revision;
        assert_eq!(marks.get("/registry/limitranges/"), rev);
        assert_eq!(marks.get("/registry/limitranges/a/"), rev);
        assert_eq!(marks.get("/registry/pods/"), 0);
        // A transaction whose compare fails writes only its failure branch.
        let txn = TxnRequest {
            compare: vec![Compare {
                key: b"/registry/limitranges/a/x".to_vec(),
                range_end: vec![],
                target: CompareTarget::Create(0),
                op: CompareOp::Equal,
            }],
            success: vec![RequestOp::Put(put("/registry/resourcequotas/a/q"))],
            failure: vec![RequestOp::Put(put("/registry/pods/a/p"))],
        };
        let resp = store.txn(txn).await.expect("txn");
        assert!(!resp.succeeded);
        assert_eq!(marks.get("/registry/resourcequotas/"), 0);
        assert_eq!(marks.get("/registry/pods/"), resp.revision);
    }
}
