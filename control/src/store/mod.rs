//! The store: a key-value store with etcd v3 semantics (one global revision, MVCC metadata per
//! key, compare-and-swap transactions, watches from a revision, leases, compaction).
//!
//! `Store` is the one interface the rest of the control plane uses, in-process and without gRPC.
//! Two backends implement it: [`sqlite::SqliteStore`] (the default, one SQLite file) and
//! [`etcd::EtcdStore`] (a real etcd cluster, for HA). [`grpc`] serves any `Store` as an etcd v3
//! gRPC endpoint, so `etcdctl` and other etcd clients can use the SQLite backend.

mod error;
mod types;

pub mod config;
pub mod encryption;
pub mod etcd;
pub mod grpc;
pub mod metered;
pub mod sqlite;

pub use error::{Result, StoreError};
pub use types::*;

use async_trait::async_trait;

/// A key-value store with etcd v3 semantics. Every method is safe to call concurrently; writes
/// are durable when they return.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads a key or a range, optionally at a historic revision.
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse>;
    /// Writes one key.
    async fn put(&self, req: PutRequest) -> Result<PutResponse>;
    /// Deletes a key or a range.
    async fn delete_range(&self, req: DeleteRangeRequest) -> Result<DeleteRangeResponse>;
    /// Runs a compare-and-swap transaction atomically.
    async fn txn(&self, req: TxnRequest) -> Result<TxnResponse>;
    /// Discards history before `revision`; returns the store revision.
    async fn compact(&self, revision: Revision) -> Result<Revision>;
    /// Starts a watch; history is replayed from `start_revision` first.
    async fn watch(&self, req: WatchRequest) -> Result<Watcher>;
    /// Grants a lease; `id` 0 lets the store choose one.
    async fn lease_grant(&self, id: LeaseId, ttl: i64) -> Result<LeaseGrant>;
    /// Revokes a lease, deleting the keys attached to it.
    async fn lease_revoke(&self, id: LeaseId) -> Result<Revision>;
    /// Refreshes a lease to its granted TTL.
    async fn lease_keep_alive(&self, id: LeaseId) -> Result<LeaseKeepAlive>;
    /// Remaining TTL of a lease, with its keys when `keys` is set.
    async fn lease_time_to_live(&self, id: LeaseId, keys: bool) -> Result<LeaseTimeToLive>;
    /// Every live lease.
    async fn lease_leases(&self) -> Result<LeaseList>;
    /// Revision, compaction point, sizes and version.
    async fn status(&self) -> Result<StoreStatus>;
    /// Reclaims free space on disk.
    async fn defragment(&self) -> Result<()>;
    /// Hash over all key revisions up to `revision` (0 = current), as etcd's `HashKV`.
    async fn hash_kv(&self, revision: Revision) -> Result<HashKv>;
}
