//! The controller manager: the reference controllers as level-triggered loops on the shared
//! machinery (`crate::machinery`). Each controller has a `start(ctx)` that subscribes its work
//! queue to the informers it needs and spawns its workers; it acts as
//! `system:kube-controller-manager` through the in-process client.

mod certificates;
mod cronjob;
mod daemonset;
mod deployment;
pub(crate) mod disruption;
mod endpoints;
mod endpointslice;
mod garbagecollector;
mod job;
mod localpath;
mod namespace;
mod nodeipam;
mod nodelifecycle;
pub(crate) mod persistentvolume;
mod podgc;
mod pvprotection;
mod replicaset;
mod resourcequota;
mod rootcacertpublisher;
mod serviceaccount;
mod statefulset;
mod ttlafterfinished;
pub mod util;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use crate::apiserver::ApiServer;
use crate::machinery::{Context, Identity, Informers};

/// The `skerry server` settings the controllers read.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// Pod network of the cluster (`--cluster-cidr`), split into per-node ranges.
    pub cluster_cidr: (Ipv4Addr, u8),
    /// Prefix length of each node's `spec.podCIDR`.
    pub node_cidr_mask_size: u8,
    /// How long a node's Lease may go unrenewed before the node is Ready=Unknown.
    pub node_monitor_grace_period: Duration,
    /// Workers per controller.
    pub workers: usize,
    /// The cluster CA, for signing approved client certificate requests (`None`: not signed).
    pub ca: Option<Arc<crate::pki::ClusterCa>>,
    /// Terminated pods kept before the pod GC deletes the oldest (`--terminated-pod-gc-threshold`;
    /// 0 keeps them all).
    pub terminated_pod_gc_threshold: usize,
    /// How long a node may be missing before the pod GC deletes the pods bound to it.
    pub pod_gc_quarantine: Duration,
    /// Where local-path volumes go on their node (`--default-local-storage-path`).
    pub local_storage_path: std::path::PathBuf,
    /// The service account signing key, for legacy token Secrets (`None`: the API server's).
    pub service_account_key: Option<Arc<crate::apiserver::serviceaccount::jwt::SigningKey>>,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        ControllerOptions {
            cluster_cidr: (Ipv4Addr::new(10, 42, 0, 0), 16),
            node_cidr_mask_size: 24,
            node_monitor_grace_period: Duration::from_secs(40),
            workers: 4,
            ca: None,
            terminated_pod_gc_threshold: podgc::DEFAULT_TERMINATED_POD_GC_THRESHOLD,
            pod_gc_quarantine: podgc::QUARANTINE,
            local_storage_path: std::path::PathBuf::from("/var/lib/skerry/storage"),
            service_account_key: None,
        }
    }
}

/// A controller's entry point: subscribe and spawn, then return.
type Start = fn(Context<ControllerOptions>);

/// Every controller: the name `--disable-controllers` takes, its component name in Events, and
/// its entry point.
const CONTROLLERS: &[(&str, &str, Start)] = &[
    ("replicaset", "replicaset-controller", replicaset::start),
    ("replicationcontroller", "replication-controller", replicaset::start_replication_controllers),
    (endpoints::NAME, endpoints::COMPONENT, endpoints::start),
    (endpointslice::NAME, endpointslice::COMPONENT, endpointslice::start),
    (namespace::NAME, namespace::COMPONENT, namespace::start),
    (garbagecollector::NAME, garbagecollector::COMPONENT, garbagecollector::start),
    (serviceaccount::NAME, serviceaccount::COMPONENT, serviceaccount::start),
    (
        serviceaccount::tokens::NAME,
        serviceaccount::tokens::COMPONENT,
        serviceaccount::tokens::start,
    ),
    (nodeipam::NAME, nodeipam::COMPONENT, nodeipam::start),
    (nodelifecycle::NAME, nodelifecycle::COMPONENT, nodelifecycle::start),
    ("deployment", "deployment-controller", deployment::start),
    (certificates::NAME, certificates::COMPONENT, certificates::start),
    (job::NAME, job::COMPONENT, job::start),
    (cronjob::NAME, cronjob::COMPONENT, cronjob::start),
    (ttlafterfinished::NAME, ttlafterfinished::COMPONENT, ttlafterfinished::start),
    (rootcacertpublisher::NAME, rootcacertpublisher::COMPONENT, rootcacertpublisher::start),
    (disruption::NAME, disruption::COMPONENT, disruption::start),
    (statefulset::NAME, statefulset::COMPONENT, statefulset::start),
    (daemonset::NAME, daemonset::COMPONENT, daemonset::start),
    (podgc::NAME, podgc::COMPONENT, podgc::start),
    (resourcequota::NAME, resourcequota::COMPONENT, resourcequota::start),
    (persistentvolume::NAME, persistentvolume::COMPONENT, persistentvolume::start),
    (localpath::NAME, localpath::COMPONENT, localpath::start),
    (pvprotection::CLAIM_NAME, pvprotection::CLAIM_COMPONENT, pvprotection::start_claims),
    (pvprotection::VOLUME_NAME, pvprotection::VOLUME_COMPONENT, pvprotection::start_volumes),
];

/// The names `--disable-controllers` accepts.
pub fn names() -> Vec<&'static str> {
    CONTROLLERS.iter().map(|(name, _, _)| *name).collect()
}

/// Why the control loops could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("unknown controller {0:?} in --disable-controllers (known: {1})")]
    UnknownController(String, String),
}

/// What runs besides the API server, and how.
#[derive(Debug, Clone, Default)]
pub struct ControlPlaneOptions {
    pub disable_scheduler: bool,
    pub disabled_controllers: Vec<String>,
    pub controllers: ControllerOptions,
}

/// Starts the scheduler and the enabled controllers over `server`, sharing one set of
/// informers. Must run inside the tokio runtime that serves `server`.
pub fn start(server: &ApiServer, options: ControlPlaneOptions) -> Result<Informers, StartError> {
    for name in &options.disabled_controllers {
        if !CONTROLLERS.iter().any(|(known, _, _)| known == name) {
            return Err(StartError::UnknownController(name.clone(), names().join(", ")));
        }
    }
    let reader = crate::machinery::in_process_client(server, Identity::ControllerManager);
    let informers = Informers::new(reader);
    let mut controller_options = options.controllers.clone();
    if controller_options.service_account_key.is_none() {
        // In-process, the tokens controller signs with the API server's own key.
        controller_options.service_account_key = server.inner.service_accounts.shared_signing_key();
    }
    let controller_options = Arc::new(controller_options);
    for (name, component, start) in CONTROLLERS {
        if options.disabled_controllers.iter().any(|d| d == name) {
            tracing::info!(controller = name, "disabled");
            continue;
        }
        let ctx = Context::new(
            server,
            Identity::ControllerManager,
            informers.clone(),
            component,
            controller_options.clone(),
        );
        start(ctx);
        tracing::debug!(controller = name, "started");
    }
    if !options.disable_scheduler {
        let ctx = Context::new(
            server,
            Identity::Scheduler,
            informers.clone(),
            crate::scheduler::COMPONENT,
            Arc::new(crate::scheduler::SchedulerOptions::default()),
        );
        crate::scheduler::start(ctx);
    }
    Ok(informers)
}
