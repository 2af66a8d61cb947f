//! The loop behind [`run`](super::run): watch changes in, proxy / DNS / peer programming and
//! snapshot writes out.
//!
//! Level-triggered: an event only marks what is stale (a service key, "peers", "everything
//! after a re-list"); a flush a short moment later (`COALESCE`) reprograms from the current
//! view, so a burst of events costs one round of netlink work. Failed programming is retried
//! with a full resync after `RETRY`.
//!
//! The current view of each kind is the reflector store once that kind has been listed, and
//! until then the offline snapshot loaded at start (if any). A consumer waits until the kinds it
//! cannot do without are known (the proxy and DNS: Services and EndpointSlices; peers: Nodes), so a restarted agent never programs "services without
//! endpoints" between two lists.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::Event;
use skerry_dns::{DnsHandle, Snapshot, Update};
use skerry_netproxy::podnet::{NodePeer, PodNetwork};
use skerry_netproxy::proxy::model::SERVICE_NAME_LABEL;
use tokio::time::Instant;

use super::peers::node_peers;
use super::proxy_sync::{key_of, ProxySync, ServiceKey};
use super::snapshot::OfflineSnapshot;
use super::watch::{Change, Changes, Stores};
use super::{ServicesConfig, ServicesError};

/// How long a flush waits for more events of the same burst.
const COALESCE: Duration = Duration::from_millis(100);
/// How long before failed programming is retried.
const RETRY: Duration = Duration::from_secs(5);
/// The snapshot is rewritten at most this often (it is the whole cluster's services: spare
/// the SD card), and always at shutdown.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(10);
/// How often the proxy checks that its table is still there (kube-proxy's sync period).
const REPAIR_EVERY: Duration = Duration::from_secs(30);

/// The snapshot's objects, shared like the stores' (`Arc`), standing in for unlisted kinds.
struct OfflineView {
    services: Vec<Arc<Service>>,
    slices: Vec<Arc<EndpointSlice>>,
    nodes: Vec<Arc<Node>>,
}

/// Which kinds have completed a list since start.
#[derive(Default)]
struct Listed {
    services: bool,
    slices: bool,
    nodes: bool,
}

/// What the next flush has to do.
#[derive(Default)]
struct Pending {
    /// Services whose proxy rules may be stale.
    services: BTreeSet<ServiceKey>,
    /// Reprogram the whole proxy table.
    proxy_full: bool,
    /// Replace all DNS data.
    dns_full: bool,
    /// Recompute the pod network's peers.
    peers: bool,
    /// Rewrite the offline snapshot.
    snapshot: bool,
}

/// This node's services, DNS data and peers, and what still has to be programmed.
pub struct NodeServices {
    cfg: ServicesConfig,
    proxy: ProxySync,
    dns: DnsHandle,
    network: Arc<PodNetwork>,
    stores: Option<Stores>,
    offline: Option<OfflineView>,
    listed: Listed,
    pending: Pending,
    last_peers: Option<Vec<NodePeer>>,
    flush_at: Option<Instant>,
    saved_at: Option<Instant>,
}

/// The current view of one kind: the store once listed, else the snapshot's objects.
fn view<K: kube::Resource<DynamicType = ()> + Clone>(
    listed: bool,
    store: Option<&Store<K>>,
    offline: Option<&Vec<Arc<K>>>,
) -> Vec<Arc<K>> {
    match (listed, store, offline) {
        (true, Some(store), _) => store.state(),
        (_, _, Some(objects)) => objects.clone(),
        _ => Vec::new(),
    }
}

fn arcs<K>(objects: Vec<K>) -> Vec<Arc<K>> {
    objects.into_iter().map(Arc::new).collect()
}

fn owned<K: Clone>(objects: &[Arc<K>]) -> Vec<K> {
    objects.iter().map(|o| K::clone(o)).collect()
}

impl NodeServices {
    /// Nothing programmed yet.
    pub fn new(
        cfg: ServicesConfig,
        proxy: ProxySync,
        dns: DnsHandle,
        network: Arc<PodNetwork>,
    ) -> Self {
        NodeServices {
            cfg,
            proxy,
            dns,
            network,
            stores: None,
            offline: None,
            listed: Listed::default(),
            pending: Pending::default(),
            last_peers: None,
            flush_at: None,
            saved_at: None,
        }
    }

    /// Loads the offline snapshot (if any) and programs proxy, DNS and peers from it, before
    /// any watch has started. A missing or unreadable snapshot is logged, not fatal.
    pub async fn restore_offline(&mut self) -> Result<(), ServicesError> {
        let dir = self.cfg.state_dir.clone();
        let loaded = tokio::task::spawn_blocking(move || OfflineSnapshot::load(&dir))
            .await
            .map_err(|e| ServicesError::Worker(format!("loading the snapshot: {e}")))?;
        let snapshot = match loaded {
            Ok(Some(s)) => s,
            Ok(None) => return Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "offline snapshot unusable; starting without it");
                return Ok(());
            }
        };
        tracing::info!(
            services = snapshot.services.len(),
            endpoint_slices = snapshot.endpoint_slices.len(),
            nodes = snapshot.nodes.len(),
            "restoring services, DNS and peers from the offline snapshot"
        );
        self.offline = Some(OfflineView {
            services: arcs(snapshot.services),
            slices: arcs(snapshot.endpoint_slices),
            nodes: arcs(snapshot.nodes),
        });
        self.pending.proxy_full = true;
        self.pending.dns_full = true;
        self.pending.peers = true;
        self.flush().await
    }

    /// Serves until `shutdown`, then writes the snapshot one last time.
    pub async fn serve(
        mut self,
        stores: Stores,
        mut changes: Changes,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), ServicesError> {
        self.stores = Some(stores);
        tokio::pin!(shutdown);
        let mut repair = tokio::time::interval_at(Instant::now() + REPAIR_EVERY, REPAIR_EVERY);
        repair.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let flush_at = self.flush_at;
            let due = async move {
                match flush_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut shutdown => break,
                change = changes.next() => match change {
                    Some(change) => self.on_change(change),
                    None => return Err(ServicesError::Worker("the watch streams ended".into())),
                },
                _ = due => self.flush().await?,
                _ = repair.tick() => self.repair().await?,
            }
        }
        if self.pending.snapshot {
            self.save_snapshot().await?;
        }
        Ok(())
    }

    fn schedule(&mut self, at: Instant) {
        self.flush_at = Some(self.flush_at.map_or(at, |t| t.min(at)));
    }

    fn on_change(&mut self, change: Change) {
        let relevant = match change {
            Change::Service(event) => match event {
                Event::Apply(svc) => {
                    self.pending.services.insert(key_of(&svc.metadata));
                    self.dns.apply(Update::apply(svc));
                    true
                }
                Event::Delete(svc) => {
                    self.pending.services.insert(key_of(&svc.metadata));
                    self.dns.apply(Update::delete(svc));
                    true
                }
                Event::InitDone => {
                    self.listed_once("Services", |l| &mut l.services);
                    self.pending.proxy_full = true;
                    self.pending.dns_full = true;
                    true
                }
                Event::Init | Event::InitApply(_) => false,
            },
            Change::Slice(event) => match event {
                Event::Apply(slice) => {
                    self.slice_touched(&slice);
                    self.dns.apply(Update::apply(slice));
                    true
                }
                Event::Delete(slice) => {
                    self.slice_touched(&slice);
                    self.dns.apply(Update::delete(slice));
                    true
                }
                Event::InitDone => {
                    self.listed_once("EndpointSlices", |l| &mut l.slices);
                    self.pending.proxy_full = true;
                    self.pending.dns_full = true;
                    true
                }
                Event::Init | Event::InitApply(_) => false,
            },
            Change::Node(event) => match event {
                Event::Apply(_) | Event::Delete(_) => {
                    self.pending.peers = true;
                    true
                }
                Event::InitDone => {
                    self.listed_once("Nodes", |l| &mut l.nodes);
                    self.pending.peers = true;
                    true
                }
                Event::Init | Event::InitApply(_) => false,
            },
        };
        if relevant {
            self.pending.snapshot = true;
            self.schedule(Instant::now() + COALESCE);
        }
    }

    /// Marks a kind listed; the first time, logs it and frees the snapshot once every kind
    /// has a live view.
    fn listed_once(&mut self, kind: &str, flag: impl FnOnce(&mut Listed) -> &mut bool) {
        let flag = flag(&mut self.listed);
        if !*flag {
            tracing::info!(kind, "initial list done");
        }
        *flag = true;
        let l = &self.listed;
        if l.services && l.slices && l.nodes {
            self.offline = None;
        }
    }

    /// A slice changed: its service's rules are stale. (A slice is never moved to another
    /// service by the EndpointSlice controller, so its current label names the only owner.)
    fn slice_touched(&mut self, slice: &EndpointSlice) {
        let owner = slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL));
        if let Some(owner) = owner {
            let namespace = slice.metadata.namespace.clone().unwrap_or_else(|| "default".into());
            self.pending.services.insert((namespace, owner.clone()));
        }
    }

    fn services(&self) -> Vec<Arc<Service>> {
        let store = self.stores.as_ref().map(|s| &s.services);
        view(self.listed.services, store, self.offline.as_ref().map(|o| &o.services))
    }

    fn slices(&self) -> Vec<Arc<EndpointSlice>> {
        let store = self.stores.as_ref().map(|s| &s.slices);
        view(self.listed.slices, store, self.offline.as_ref().map(|o| &o.slices))
    }

    fn nodes(&self) -> Vec<Arc<Node>> {
        let store = self.stores.as_ref().map(|s| &s.nodes);
        view(self.listed.nodes, store, self.offline.as_ref().map(|o| &o.nodes))
    }

    fn service(&self, (namespace, name): &ServiceKey) -> Option<Service> {
        match (self.listed.services, &self.stores, &self.offline) {
            (true, Some(stores), _) => {
                let key = ObjectRef::new(name).within(namespace);
                stores.services.get(&key).map(|s| Service::clone(&s))
            }
            (_, _, Some(offline)) => offline
                .services
                .iter()
                .find(|s| key_of(&s.metadata) == (namespace.clone(), name.clone()))
                .map(|s| Service::clone(s)),
            _ => None,
        }
    }

    fn known_services_and_slices(&self) -> bool {
        (self.listed.services && self.listed.slices) || self.offline.is_some()
    }

    fn known_nodes(&self) -> bool {
        self.listed.nodes || self.offline.is_some()
    }

    /// Programs whatever is pending and known; failures are retried after `RETRY`.
    async fn flush(&mut self) -> Result<(), ServicesError> {
        self.flush_at = None;
        let mut failed = false;
        if self.known_services_and_slices() {
            failed |= !self.flush_proxy().await?;
            if self.pending.dns_full {
                let snapshot = Snapshot {
                    services: owned(&self.services()),
                    endpoint_slices: owned(&self.slices()),
                    ..Snapshot::default()
                };
                self.dns.replace_all(snapshot);
                self.pending.dns_full = false;
            }
        }
        if self.pending.peers && self.known_nodes() {
            failed |= !self.flush_peers().await;
        }
        if self.pending.snapshot {
            match self.saved_at {
                Some(at) if at + SNAPSHOT_EVERY > Instant::now() => {
                    self.schedule(at + SNAPSHOT_EVERY)
                }
                _ => self.save_snapshot().await?,
            }
        }
        if failed {
            self.schedule(Instant::now() + RETRY);
        }
        Ok(())
    }

    /// Full or incremental proxy programming; false if it failed (and is pending again).
    async fn flush_proxy(&mut self) -> Result<bool, ServicesError> {
        if self.pending.proxy_full {
            let services = owned(&self.services());
            let slices = owned(&self.slices());
            return Ok(match self.proxy.full_sync(services, slices).await? {
                Ok(()) => {
                    self.pending.proxy_full = false;
                    self.pending.services.clear();
                    true
                }
                Err(e) => {
                    tracing::warn!(error = %e, "service proxy sync failed; retrying");
                    false
                }
            });
        }
        if self.pending.services.is_empty() {
            return Ok(true);
        }
        let keys = std::mem::take(&mut self.pending.services);
        let slices = self.slices();
        let changes =
            self.proxy.changes_for(&keys, |k| self.service(k), slices.iter().map(|s| &**s));
        Ok(match self.proxy.apply(changes).await? {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "service proxy update failed; full resync");
                self.pending.proxy_full = true;
                false
            }
        })
    }

    /// Installs the peers if they changed; false if that failed (and is pending again).
    async fn flush_peers(&mut self) -> bool {
        let nodes = self.nodes();
        let peers = node_peers(nodes.iter().map(|n| &**n), &self.cfg.node_name);
        self.pending.peers = false;
        if self.last_peers.as_ref() == Some(&peers) {
            return true;
        }
        match self.network.set_peers(&peers).await {
            Ok(()) => {
                tracing::info!(peers = peers.len(), "pod network peers updated");
                self.last_peers = Some(peers);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "setting pod network peers failed; retrying");
                self.pending.peers = true;
                false
            }
        }
    }

    /// Writes the snapshot if every kind it needs is known; a failure is logged and retried.
    async fn save_snapshot(&mut self) -> Result<(), ServicesError> {
        let l = &self.listed;
        // Only live data is worth writing, and only once the proxy's and peers' kinds are
        // complete.
        if !(l.services && l.slices && l.nodes) {
            return Ok(());
        }
        let snapshot = OfflineSnapshot::new(
            owned(&self.services()),
            owned(&self.slices()),
            owned(&self.nodes()),
        );
        let dir = self.cfg.state_dir.clone();
        let saved = tokio::task::spawn_blocking(move || snapshot.save(&dir))
            .await
            .map_err(|e| ServicesError::Worker(format!("saving the snapshot: {e}")))?;
        self.saved_at = Some(Instant::now());
        self.pending.snapshot = false;
        if let Err(e) = saved {
            tracing::warn!(error = %e, "writing the offline snapshot failed; retrying");
            self.pending.snapshot = true;
            self.schedule(Instant::now() + SNAPSHOT_EVERY);
        }
        Ok(())
    }

    async fn repair(&mut self) -> Result<(), ServicesError> {
        match self.proxy.repair().await? {
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "service proxy repair failed; full resync");
                self.pending.proxy_full = true;
                self.schedule(Instant::now() + RETRY);
            }
        }
        Ok(())
    }
}
