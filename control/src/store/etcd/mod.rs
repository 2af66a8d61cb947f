//! The etcd backend: the `Store` trait over a real etcd cluster (the HA deployment), through
//! the `etcd-client` crate.
//!
//! Requests map field by field onto etcd's; responses are read from the raw protobuf messages
//! so nothing is lost; etcd's errors map onto the matching [`StoreError`] variants (the same
//! ones the SQLite backend raises, so callers and the conformance suite see one behaviour).
//! Each `watch` opens its own etcd watch stream, driven by a task that also forwards
//! progress requests.

mod convert;

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, CompactionOptions, ConnectOptions, Identity, LeaseGrantOptions,
    LeaseTimeToLiveOptions, TlsOptions, WatchOptions,
};

use self::convert::{
    delete_options, event, get_options, key_value, put_options, txn, txn_response, watch_options,
};
use super::{
    DeleteRangeRequest, DeleteRangeResponse, HashKv, LeaseGrant, LeaseId, LeaseKeepAlive,
    LeaseList, LeaseTimeToLive, PutRequest, PutResponse, RangeRequest, RangeResponse, Result,
    Revision, Store, StoreError, StoreStatus, TxnRequest, TxnResponse, WatchMessage, WatchRequest,
    Watcher,
};

/// Largest message accepted from etcd (large ranges exceed tonic's 4 MiB default).
const MAX_MESSAGE: usize = 256 * 1024 * 1024;

/// TLS files for reaching etcd (`--datastore-cafile/-certfile/-keyfile`).
#[derive(Debug, Clone, Default)]
pub struct EtcdTls {
    /// CA bundle that signed the etcd servers' certificates.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (with `key_file`) for etcd's client-certificate auth.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// A store backed by an etcd cluster.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    /// Highest compaction point seen (etcd's range errors do not carry it).
    compacted: Arc<AtomicI64>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore").finish_non_exhaustive()
    }
}

fn read_pem(path: &PathBuf) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| StoreError::Backend(format!("reading {}: {e}", path.display())))
}

impl EtcdStore {
    /// Connects to the etcd cluster at `endpoints` (`http://` or `https://` URLs).
    pub async fn connect(endpoints: &[String], tls: Option<EtcdTls>) -> Result<Self> {
        if endpoints.is_empty() {
            return Err(StoreError::Backend("no etcd endpoints given".into()));
        }
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        if let Some(tls) = tls {
            let mut config = TlsOptions::new();
            if let Some(ca) = &tls.ca_file {
                config = config.ca_certificate(Certificate::from_pem(read_pem(ca)?));
            }
            match (&tls.cert_file, &tls.key_file) {
                (Some(cert), Some(key)) => {
                    config = config.identity(Identity::from_pem(read_pem(cert)?, read_pem(key)?));
                }
                (None, None) => {}
                _ => {
                    return Err(StoreError::Backend(
                        "an etcd client certificate needs both a cert file and a key file".into(),
                    ))
                }
            }
            options = options.with_tls(config);
        }
        let client = Client::connect(endpoints, Some(options)).await.map_err(convert::error)?;
        Ok(EtcdStore { client, compacted: Arc::new(AtomicI64::new(0)) })
    }

    /// Maps an error, filling in the compaction point etcd's message leaves out.
    fn error(&self, e: etcd_client::Error) -> StoreError {
        match convert::error(e) {
            StoreError::Compacted { .. } => {
                StoreError::Compacted { compact_revision: self.compacted.load(Ordering::Relaxed) }
            }
            other => other,
        }
    }

    fn lease_error(&self, id: LeaseId, e: etcd_client::Error) -> StoreError {
        match self.error(e) {
            StoreError::LeaseNotFound(_) => StoreError::LeaseNotFound(id),
            StoreError::LeaseExists(_) => StoreError::LeaseExists(id),
            other => other,
        }
    }

    fn saw_compaction(&self, revision: Revision) {
        self.compacted.fetch_max(revision, Ordering::Relaxed);
    }
}

fn header_revision(header: &Option<etcd_client::proto::PbResponseHeader>) -> Revision {
    header.as_ref().map_or(0, |h| h.revision)
}

#[async_trait]
impl Store for EtcdStore {
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        let mut kv = self.client.kv_client().max_decoding_message_size(MAX_MESSAGE);
        let key = req.key.clone();
        let resp = kv.get(key, Some(get_options(&req))).await.map_err(|e| self.error(e))?;
        Ok(convert::range_response(resp.0))
    }

    async fn put(&self, req: PutRequest) -> Result<PutResponse> {
        let lease = req.lease;
        let resp = self
            .client
            .kv_client()
            .put(req.key.clone(), req.value.clone(), Some(put_options(&req)))
            .await
            .map_err(|e| self.lease_error(lease, e))?;
        Ok(PutResponse {
            revision: header_revision(&resp.0.header),
            prev_kv: resp.0.prev_kv.map(key_value),
        })
    }

    async fn delete_range(&self, req: DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        let resp = self
            .client
            .kv_client()
            .delete(req.key.clone(), Some(delete_options(&req)))
            .await
            .map_err(|e| self.error(e))?;
        Ok(DeleteRangeResponse {
            revision: header_revision(&resp.0.header),
            deleted: resp.0.deleted,
            prev_kvs: resp.0.prev_kvs.into_iter().map(key_value).collect(),
        })
    }

    async fn txn(&self, req: TxnRequest) -> Result<TxnResponse> {
        let mut kv = self.client.kv_client().max_decoding_message_size(MAX_MESSAGE);
        let resp = kv.txn(txn(&req)).await.map_err(|e| self.error(e))?;
        Ok(txn_response(resp.0))
    }

    async fn compact(&self, revision: Revision) -> Result<Revision> {
        let resp = self
            .client
            .kv_client()
            .compact(revision, Some(CompactionOptions::new().with_physical()))
            .await
            .map_err(|e| self.error(e))?;
        self.saw_compaction(revision);
        Ok(header_revision(&resp.0.header))
    }

    async fn watch(&self, req: WatchRequest) -> Result<Watcher> {
        let mut client = self.client.watch_client().max_decoding_message_size(MAX_MESSAGE);
        let options: WatchOptions = watch_options(&req);
        let mut stream =
            client.watch(req.key.clone(), Some(options)).await.map_err(|e| self.error(e))?;
        // Wait for etcd to confirm the watch, so that writes made after `watch` returns are
        // seen by it.
        let created = stream.message().await.map_err(|e| self.error(e))?;
        let (watcher, sink) = Watcher::channel(256);
        match created {
            Some(resp) if resp.0.created => {}
            Some(resp) if resp.0.canceled && resp.0.compact_revision > 0 => {
                self.saw_compaction(resp.0.compact_revision);
                let compact_revision = resp.0.compact_revision;
                let _ = sink.messages.try_send(WatchMessage::Compacted { compact_revision });
                return Ok(watcher);
            }
            Some(resp) => {
                return Err(StoreError::Backend(format!(
                    "etcd did not create the watch: {}",
                    resp.0.cancel_reason
                )))
            }
            None => return Err(StoreError::Unavailable("etcd closed the watch stream".into())),
        }
        let compacted = self.compacted.clone();
        tokio::spawn(async move {
            let tx = sink.messages;
            let mut progress = sink.progress_requests;
            let mut progress_open = true;
            loop {
                tokio::select! {
                    _ = tx.closed() => break,
                    request = progress.recv(), if progress_open => match request {
                        Some(()) => {
                            if stream.request_progress().await.is_err() {
                                break;
                            }
                        }
                        None => progress_open = false,
                    },
                    message = stream.message() => {
                        let Ok(Some(resp)) = message else { break };
                        let resp = resp.0;
                        let revision = header_revision(&resp.header);
                        if resp.canceled {
                            if resp.compact_revision > 0 {
                                compacted.fetch_max(resp.compact_revision, Ordering::Relaxed);
                                let compact_revision = resp.compact_revision;
                                let _ = tx.send(WatchMessage::Compacted { compact_revision }).await;
                            }
                            break;
                        }
                        let msg = if !resp.events.is_empty() {
                            WatchMessage::Events {
                                revision,
                                events: resp.events.into_iter().map(event).collect(),
                            }
                        } else {
                            WatchMessage::Progress { revision }
                        };
                        if tx.send(msg).await.is_err() {
                            break;
                        }
                    }
                }
            }
            // Dropping the stream closes the etcd watch.
        });
        Ok(watcher)
    }

    async fn lease_grant(&self, id: LeaseId, ttl: i64) -> Result<LeaseGrant> {
        let options = LeaseGrantOptions::new().with_id(id);
        let resp = self
            .client
            .lease_client()
            .grant(ttl, Some(options))
            .await
            .map_err(|e| self.lease_error(id, e))?;
        if !resp.0.error.is_empty() {
            return Err(StoreError::Backend(format!("etcd lease grant: {}", resp.0.error)));
        }
        Ok(LeaseGrant { revision: header_revision(&resp.0.header), id: resp.0.id, ttl: resp.0.ttl })
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<Revision> {
        let resp =
            self.client.lease_client().revoke(id).await.map_err(|e| self.lease_error(id, e))?;
        Ok(header_revision(&resp.0.header))
    }

    async fn lease_keep_alive(&self, id: LeaseId) -> Result<LeaseKeepAlive> {
        let (mut keeper, mut stream) =
            self.client.lease_client().keep_alive(id).await.map_err(|e| self.lease_error(id, e))?;
        keeper.keep_alive().await.map_err(|e| self.lease_error(id, e))?;
        loop {
            let resp =
                stream.message().await.map_err(|e| self.lease_error(id, e))?.ok_or_else(|| {
                    StoreError::Unavailable("etcd closed the keep-alive stream".into())
                })?;
            // The client sends one keep-alive when the stream opens and one more above; either
            // answer will do.
            if resp.0.id != id {
                continue;
            }
            // etcd answers a keep-alive for an unknown or expired lease with TTL 0.
            if resp.0.ttl <= 0 {
                return Err(StoreError::LeaseNotFound(id));
            }
            return Ok(LeaseKeepAlive {
                revision: header_revision(&resp.0.header),
                id,
                ttl: resp.0.ttl,
            });
        }
    }

    async fn lease_time_to_live(&self, id: LeaseId, keys: bool) -> Result<LeaseTimeToLive> {
        let options = if keys {
            LeaseTimeToLiveOptions::new().with_keys()
        } else {
            LeaseTimeToLiveOptions::new()
        };
        let resp = self
            .client
            .lease_client()
            .time_to_live(id, Some(options))
            .await
            .map_err(|e| self.lease_error(id, e))?;
        Ok(LeaseTimeToLive {
            revision: header_revision(&resp.0.header),
            id,
            ttl: resp.0.ttl,
            granted_ttl: resp.0.granted_ttl,
            keys: resp.0.keys,
        })
    }

    async fn lease_leases(&self) -> Result<LeaseList> {
        let resp = self.client.lease_client().leases().await.map_err(|e| self.error(e))?;
        let mut ids: Vec<LeaseId> = resp.0.leases.iter().map(|l| l.id).collect();
        ids.sort_unstable();
        Ok(LeaseList { revision: header_revision(&resp.0.header), ids })
    }

    async fn status(&self) -> Result<StoreStatus> {
        let resp = self.client.maintenance_client().status().await.map_err(|e| self.error(e))?;
        Ok(StoreStatus {
            revision: header_revision(&resp.0.header),
            compact_revision: self.compacted.load(Ordering::Relaxed),
            db_size: resp.0.db_size,
            db_size_in_use: resp.0.db_size_in_use,
            version: resp.0.version,
        })
    }

    async fn defragment(&self) -> Result<()> {
        self.client.maintenance_client().defragment().await.map_err(|e| self.error(e))?;
        Ok(())
    }

    async fn hash_kv(&self, revision: Revision) -> Result<HashKv> {
        let resp =
            self.client.maintenance_client().hash_kv(revision).await.map_err(|e| self.error(e))?;
        let current = header_revision(&resp.0.header);
        self.saw_compaction(resp.0.compact_revision);
        Ok(HashKv {
            revision: current,
            hash: resp.0.hash,
            compact_revision: resp.0.compact_revision,
            hash_revision: if revision > 0 { revision } else { current },
        })
    }
}
