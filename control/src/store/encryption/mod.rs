//! Encryption at rest (`skerry server --secrets-encryption`): a [`Store`] wrapper that seals the
//! values under the encrypted prefixes (Secrets) on every write path — put and the puts of a
//! transaction — and opens them on every read path — range, the ranges and previous values of
//! a transaction or delete, and watch events. Everything else passes through. The layers above
//! (API server, watch cache) see plaintext; the backend (SQLite file, etcd) never does.
//!
//! Compares on a value (`CompareTarget::Value`) under an encrypted prefix cannot match a
//! sealed value; the API server compares revisions only.

mod keys;

use std::sync::Arc;

use async_trait::async_trait;

pub use keys::{KeyError, KeyRing};

use super::*;

/// Where the Secrets live (the reference layout).
pub const SECRETS_PREFIX: &[u8] = b"/registry/secrets/";

/// `inner`, with the values under [`SECRETS_PREFIX`] sealed by `keys`.
pub struct Encrypted {
    inner: Arc<dyn Store>,
    keys: Arc<KeyRing>,
}

impl Encrypted {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Store>, keys: Arc<KeyRing>) -> Encrypted {
        Encrypted { inner, keys }
    }

    fn covers(key: &[u8]) -> bool {
        key.starts_with(SECRETS_PREFIX)
    }

    fn seal(&self, key: &[u8], value: Vec<u8>) -> Result<Vec<u8>> {
        if !Self::covers(key) {
            return Ok(value);
        }
        self.keys.seal(key, &value).map_err(|e| StoreError::Backend(e.to_string()))
    }

    fn open_kv(&self, kv: &mut KeyValue) -> Result<()> {
        open_kv(&self.keys, kv)
    }

    fn seal_ops(&self, ops: &mut [RequestOp]) -> Result<()> {
        for op in ops {
            match op {
                RequestOp::Put(put) => {
                    let value = std::mem::take(&mut put.value);
                    put.value = self.seal(&put.key, value)?;
                }
                RequestOp::Txn(txn) => {
                    self.seal_ops(&mut txn.success)?;
                    self.seal_ops(&mut txn.failure)?;
                }
                RequestOp::Range(_) | RequestOp::DeleteRange(_) => {}
            }
        }
        Ok(())
    }

    fn open_responses(&self, responses: &mut [ResponseOp]) -> Result<()> {
        for response in responses {
            match response {
                ResponseOp::Range(r) => r.kvs.iter_mut().try_for_each(|kv| self.open_kv(kv))?,
                ResponseOp::Put(p) => p.prev_kv.iter_mut().try_for_each(|kv| self.open_kv(kv))?,
                ResponseOp::DeleteRange(d) => {
                    d.prev_kvs.iter_mut().try_for_each(|kv| self.open_kv(kv))?
                }
                ResponseOp::Txn(t) => self.open_responses(&mut t.responses)?,
            }
        }
        Ok(())
    }

    /// Re-seals every value under the encrypted prefixes that is plaintext or sealed by an
    /// older key (after turning encryption on, or a key rotation). Returns how many were
    /// rewritten; a value changed concurrently is left to its writer, who seals it anew.
    pub async fn reencrypt(&self) -> Result<usize> {
        let mut end = SECRETS_PREFIX.to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let raw = self
            .inner
            .range(RangeRequest {
                key: SECRETS_PREFIX.to_vec(),
                range_end: end,
                ..Default::default()
            })
            .await?;
        let mut rewritten = 0;
        for mut kv in raw.kvs.into_iter().filter(|kv| !self.keys.is_current(&kv.value)) {
            let (key, revision) = (kv.key.clone(), kv.mod_revision);
            self.open_kv(&mut kv)?;
            let sealed = self.seal(&key, kv.value)?;
            let txn = TxnRequest {
                compare: vec![Compare {
                    key: key.clone(),
                    range_end: vec![],
                    target: CompareTarget::Mod(revision),
                    op: CompareOp::Equal,
                }],
                success: vec![RequestOp::Put(PutRequest {
                    key,
                    value: sealed,
                    lease: kv.lease,
                    ..Default::default()
                })],
                failure: vec![],
            };
            if self.inner.txn(txn).await?.succeeded {
                rewritten += 1;
            }
        }
        Ok(rewritten)
    }
}

fn open_kv(keys: &KeyRing, kv: &mut KeyValue) -> Result<()> {
    if !Encrypted::covers(&kv.key) || kv.value.is_empty() {
        return Ok(());
    }
    kv.value = keys.open(&kv.key, &kv.value).map_err(|e| {
        StoreError::Backend(format!("decrypting {}: {e}", String::from_utf8_lossy(&kv.key)))
    })?;
    Ok(())
}

/// Opens the values of a watch's events, in a task between the backend's watcher and ours.
fn open_watch(keys: Arc<KeyRing>, mut inner: Watcher) -> Watcher {
    let (outer, mut sink) = Watcher::channel(64);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                message = inner.recv() => {
                    let Some(mut message) = message else { return };
                    if let WatchMessage::Events { events, .. } = &mut message {
                        for event in events {
                            let opened = open_kv(&keys, &mut event.kv).and_then(|()| {
                                event.prev_kv.iter_mut().try_for_each(|kv| open_kv(&keys, kv))
                            });
                            if let Err(err) = opened {
                                // Ending the watch makes the consumer re-list and see the error.
                                tracing::error!(%err, "watch event does not decrypt");
                                return;
                            }
                        }
                    }
                    if sink.messages.send(message).await.is_err() {
                        return;
                    }
                }
                request = sink.progress_requests.recv() => match request {
                    Some(()) => inner.request_progress(),
                    None => return,
                },
            }
        }
    });
    outer
}

#[async_trait]
impl Store for Encrypted {
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        let mut resp = self.inner.range(req).await?;
        resp.kvs.iter_mut().try_for_each(|kv| self.open_kv(kv))?;
        Ok(resp)
    }

    async fn put(&self, mut req: PutRequest) -> Result<PutResponse> {
        let value = std::mem::take(&mut req.value);
        req.value = self.seal(&req.key, value)?;
        let mut resp = self.inner.put(req).await?;
        resp.prev_kv.iter_mut().try_for_each(|kv| self.open_kv(kv))?;
        Ok(resp)
    }

    async fn delete_range(&self, req: DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        let mut resp = self.inner.delete_range(req).await?;
        resp.prev_kvs.iter_mut().try_for_each(|kv| self.open_kv(kv))?;
        Ok(resp)
    }

    async fn txn(&self, mut req: TxnRequest) -> Result<TxnResponse> {
        self.seal_ops(&mut req.success)?;
        self.seal_ops(&mut req.failure)?;
        let mut resp = self.inner.txn(req).await?;
        self.open_responses(&mut resp.responses)?;
        Ok(resp)
    }

    async fn compact(&self, revision: Revision) -> Result<Revision> {
        self.inner.compact(revision).await
    }

    async fn watch(&self, req: WatchRequest) -> Result<Watcher> {
        let watcher = self.inner.watch(req).await?;
        Ok(open_watch(self.keys.clone(), watcher))
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
