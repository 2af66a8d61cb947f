//! `StoreError` → gRPC status, with etcd's exact codes and `etcdserver: …` messages (etcd's
//! `api/v3rpc/rpctypes`), so that etcdctl, client-go and the Kubernetes apiserver recognise them:
//! clients match these messages to decide, e.g., that a watch must be re-listed after compaction.

use tonic::Status;

use crate::store::StoreError;

/// etcd's `ErrGRPCCompacted` message, also used as a watch's cancel reason.
pub(crate) const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
/// etcd's `ErrGRPCRequestTooLarge` message.
pub(crate) const REQUEST_TOO_LARGE: &str = "etcdserver: request is too large";
/// etcd's `ErrGRPCNotCapable` message: what this server answers for features it lacks (auth).
pub(crate) const NOT_CAPABLE: &str = "etcdserver: not capable";

/// The gRPC status etcd would send for `err`.
pub(crate) fn to_status(err: StoreError) -> Status {
    #[allow(unreachable_patterns)] // new variants fall back to `Unknown` until mapped here
    match err {
        StoreError::Compacted { .. } => Status::out_of_range(COMPACTED),
        StoreError::FutureRevision => {
            Status::out_of_range("etcdserver: mvcc: required revision is a future revision")
        }
        StoreError::LeaseNotFound(_) => Status::not_found("etcdserver: requested lease not found"),
        StoreError::LeaseExists(_) => {
            Status::failed_precondition("etcdserver: lease already exists")
        }
        StoreError::LeaseTtlTooLarge => Status::out_of_range("etcdserver: too large lease TTL"),
        StoreError::EmptyKey => Status::invalid_argument("etcdserver: key is not provided"),
        StoreError::ValueProvided => Status::invalid_argument("etcdserver: value is provided"),
        StoreError::LeaseProvided => Status::invalid_argument("etcdserver: lease is provided"),
        StoreError::KeyNotFound => Status::invalid_argument("etcdserver: key not found"),
        StoreError::DuplicateKey => {
            Status::invalid_argument("etcdserver: duplicate key given in txn request")
        }
        StoreError::TooManyOps => {
            Status::invalid_argument("etcdserver: too many operations in txn request")
        }
        StoreError::RequestTooLarge => Status::invalid_argument(REQUEST_TOO_LARGE),
        StoreError::NotSupported(what) => {
            tracing::debug!(what, "unsupported etcd feature requested");
            Status::failed_precondition(NOT_CAPABLE)
        }
        StoreError::Unavailable(detail) => {
            tracing::warn!(%detail, "store unavailable");
            Status::unavailable(format!("etcdserver: {detail}"))
        }
        // etcd sends errors it has no name for as `Unknown` with the error text.
        other => {
            tracing::error!(error = %other, "store error");
            Status::unknown(other.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compacted_is_out_of_range_with_etcds_message() {
        let st = to_status(StoreError::Compacted { compact_revision: 5 });
        assert_eq!(st.code(), tonic::Code::OutOfRange);
        assert_eq!(st.message(), COMPACTED);
    }

    #[test]
    fn lease_not_found_is_not_found_with_etcds_message() {
        let st = to_status(StoreError::LeaseNotFound(0x10));
        assert_eq!(st.code(), tonic::Code::NotFound);
        assert_eq!(st.message(), "etcdserver: requested lease not found");
    }

    #[test]
    fn empty_key_is_invalid_argument() {
        let st = to_status(StoreError::EmptyKey);
        assert_eq!(st.code(), tonic::Code::InvalidArgument);
        assert_eq!(st.message(), "etcdserver: key is not provided");
    }
}
