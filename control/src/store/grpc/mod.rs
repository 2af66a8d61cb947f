//! The etcd v3 gRPC front: serves any [`Store`] as an etcd v3 server, so etcdctl, client-go and
//! other etcd clients can use the SQLite backend (`skerry etcd`), like kine but speaking etcd's
//! own protocol.
//!
//! The server traits and messages are the ones `etcd-client` generates with `build-server`;
//! each service lives in its own module (`kv`, `watch`, `lease`, `maintenance` — with Cluster —
//! and `auth`) and shares one [`Front`]: the store, the member identity and the request limit.
//! `listen` binds etcd-style client URLs (`http://`, `https://`, `unix://`) and runs one tonic
//! server per listener over the same routes; `exposure` insists on client certificates for any
//! listener other hosts can reach.

mod auth;
mod authority;
mod config;
mod convert;
mod errors;
mod exposure;
mod identity;
mod kv;
mod lease;
mod listen;
mod maintenance;
mod watch;

use std::sync::Arc;

use etcd_client::proto::PbResponseHeader;
use tokio::sync::watch as signal;

use super::{Revision, Store};

pub use config::{
    ListenUrl, ServeConfig, TlsFiles, UrlError, DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_PROGRESS_NOTIFY_INTERVAL,
};
pub use exposure::{secure_exposed, ClientFiles, ExposureError};
pub use identity::{IdentityError, MemberIdentity, IDENTITY_FILE};
pub use listen::{BoundServer, ServeError};

/// The etcd version reported by `Status` when the store reports none in etcd's form. Clients
/// (the Kubernetes apiserver among them) enable features such as watch progress requests by it.
pub const ETCD_VERSION: &str = "3.5.16";

/// etcd's raft term as seen by clients: this server is its own, never-changing leader.
const RAFT_TERM: u64 = 1;

/// Binds every listener of `config` for `store`; call [`BoundServer::run`] to serve.
pub async fn bind(store: Arc<dyn Store>, config: ServeConfig) -> Result<BoundServer, ServeError> {
    listen::bind(store, config).await
}

/// State shared by every service of one server.
pub(crate) struct Front {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) config: ServeConfig,
    /// Client URLs for `MemberList` (the advertised ones, or what was actually bound).
    pub(crate) client_urls: Vec<String>,
    /// Becomes `true` when the server shuts down; streams end on it so shutdown is not held up.
    pub(crate) shutdown: signal::Receiver<bool>,
}

impl Front {
    /// The response header for a response served at `revision`.
    pub(crate) fn header(&self, revision: Revision) -> PbResponseHeader {
        PbResponseHeader {
            cluster_id: self.config.identity.cluster_id,
            member_id: self.config.identity.member_id,
            revision,
            raft_term: RAFT_TERM,
        }
    }

    /// etcd's `ErrGRPCRequestTooLarge` when a request's encoded size is over the limit.
    pub(crate) fn check_size(&self, msg: &impl prost::Message) -> Result<(), tonic::Status> {
        if msg.encoded_len() > self.config.max_request_bytes {
            return Err(tonic::Status::invalid_argument(errors::REQUEST_TOO_LARGE));
        }
        Ok(())
    }

    /// Resolves when the server starts shutting down.
    pub(crate) async fn shutting_down(&self) {
        let mut rx = self.shutdown.clone();
        // An error means the sender is gone, which also means shutdown.
        let _ = rx.wait_for(|down| *down).await;
    }
}
