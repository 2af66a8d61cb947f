//! The cluster's Services, DNS names and pod-network peers on this node: the agent's
//! kube-proxy, the feed of its node-local DNS, and flannel's peer watch, in one loop.
//!
//! [`run`] is called by `Agent::run` once it has made the node's [`PodNetwork`], started the
//! [`ClusterDns`](skerry_dns::ClusterDns) on `--cluster-dns` and constructed the
//! [`ServiceProxy`] (each knows its own network namespace; nothing here does). It:
//!
//! 1. loads the offline snapshot from `state_dir` (if any) and programs the proxy, DNS and peers
//!    from it before contacting the API server, so a node rebooted without a server still
//!    serves ClusterIPs, names and cross-node routes ([`snapshot`]);
//! 2. watches Services, EndpointSlices (discovery.k8s.io/v1) and Nodes cluster-wide with
//!    kube-runtime watchers and reflectors, re-listing on 410 Gone ([`watch`]); not Pods: pod
//!    names are answered from the name (`pods insecure`), so a node needs no cluster-wide pod
//!    read;
//! 3. after each (re-)list: one full proxy `sync` and a DNS `replace_all`; per event: DNS
//!    `apply` at once, and proxy `update_service`/`remove_service` for the touched services,
//!    coalesced over a 100 ms window; a proxy `repair` every 30 s ([`proxy_sync`], `sync`);
//! 4. keeps `PodNetwork::set_peers` equal to the other Nodes' `spec.podCIDR` + InternalIP
//!    ([`peers`]);
//! 5. rewrites the snapshot after changes (at most every 10 s, and at shutdown).
//!
//! Nothing is cleared when the API server goes away: the stores, the proxy table, the DNS data
//! and the routes stay as last known until a new list replaces them.
//!
//! The Service whose ClusterIP is the node-local DNS address (kube-system/kube-dns) is not
//! given to the proxy, so queries to that address reach the resolver on the node rather than
//! being DNATed away (see [`proxy_sync`]). It still gets its DNS name.
//!
//! Errors: programming failures (netlink, routes, snapshot writes) are logged and retried;
//! watch failures are retried with backoff. [`run`] only returns an error when the state
//! directory cannot be made or a worker task panicked.

pub mod peers;
pub mod proxy_sync;
pub mod snapshot;
mod sync;
pub mod watch;

use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use skerry_dns::DnsHandle;
use skerry_netproxy::podnet::PodNetwork;
use skerry_netproxy::proxy::ServiceProxy;

pub use snapshot::{OfflineSnapshot, SnapshotError};

/// What [`run`] needs besides the components it drives.
#[derive(Debug, Clone)]
pub struct ServicesConfig {
    /// This node's name (it is not its own peer).
    pub node_name: String,
    /// The node-local DNS address (`--cluster-dns`): a Service with this ClusterIP is not
    /// proxied.
    pub cluster_dns: IpAddr,
    /// Where the offline snapshot lives (`DATA_DIR/agent/services` style; created if absent).
    pub state_dir: PathBuf,
}

/// Why [`run`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServicesError {
    /// The state directory could not be created.
    #[error("creating the services state directory {path}: {source}")]
    StateDir { path: PathBuf, source: std::io::Error },
    /// A worker task panicked or the watches ended (a bug, not an outage).
    #[error("services worker failed: {0}")]
    Worker(String),
}

/// Runs until `shutdown` resolves: programs `proxy`, `dns` and `network` from the cluster's
/// Services, EndpointSlices and Nodes as seen through `client` (see the module docs).
pub async fn run(
    client: kube::Client,
    cfg: ServicesConfig,
    proxy: ServiceProxy,
    dns: DnsHandle,
    network: Arc<PodNetwork>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServicesError> {
    std::fs::create_dir_all(&cfg.state_dir)
        .map_err(|source| ServicesError::StateDir { path: cfg.state_dir.clone(), source })?;
    let proxy = proxy_sync::ProxySync::new(proxy, cfg.cluster_dns);
    let mut node = sync::NodeServices::new(cfg, proxy, dns, network);
    node.restore_offline().await?;
    let (stores, changes) = watch::watch_all(&client);
    node.serve(stores, changes, shutdown).await
}
