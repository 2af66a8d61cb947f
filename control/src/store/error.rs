//! Store errors. Each variant maps to one etcd error (gRPC code + `etcdserver: …` message) in the
//! gRPC front, so clients such as etcdctl and the Kubernetes apiserver see what etcd would send.

use super::types::{LeaseId, Revision};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The requested revision was compacted away.
    #[error("mvcc: required revision has been compacted (compact revision {compact_revision})")]
    Compacted { compact_revision: Revision },
    /// The requested revision is newer than the store's.
    #[error("mvcc: required revision is a future revision")]
    FutureRevision,
    #[error("requested lease not found (lease {0:x})")]
    LeaseNotFound(LeaseId),
    #[error("lease already exists (lease {0:x})")]
    LeaseExists(LeaseId),
    #[error("too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("key is not provided")]
    EmptyKey,
    #[error("value is provided")]
    ValueProvided,
    #[error("lease is provided")]
    LeaseProvided,
    /// `ignore_value`/`ignore_lease` on a key that does not exist.
    #[error("key not found")]
    KeyNotFound,
    #[error("duplicate key given in txn request")]
    DuplicateKey,
    #[error("too many operations in txn request")]
    TooManyOps,
    #[error("request is too large")]
    RequestTooLarge,
    /// A feature this backend does not offer (e.g. etcd auth).
    #[error("not supported: {0}")]
    NotSupported(&'static str),
    /// The backend is unavailable (disk error, lost connection to etcd, shutting down).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Anything else from the backend, with context.
    #[error("store backend error: {0}")]
    Backend(String),
}

/// Store result.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
