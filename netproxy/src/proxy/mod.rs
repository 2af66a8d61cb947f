//! The service proxy: Services and EndpointSlices in, one nftables table out.
//!
//! [`ServiceProxy`] keeps the desired state (per service, the objects [`plan`] derived from
//! it) and programs the kernel in single nfnetlink transactions: [`ServiceProxy::sync`]
//! replaces the whole table, [`ServiceProxy::update_service`] and
//! [`ServiceProxy::remove_service`] touch only one service's chains, sets and map elements.
//! If an incremental transaction is refused (someone edited or deleted our table) the proxy
//! falls back to a full resync; [`ServiceProxy::repair`] does the same when the table is gone.
//!
//! Calls block on netlink for a few milliseconds (a full 10k-service sync: well under a
//! second): async callers run them on `spawn_blocking`.

pub mod model;
pub mod plan;
pub mod slots;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::nft::{NfSocket, NftError, TableTx};
use plan::{Layout, ServiceObjects};

/// Proxy settings.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The nftables table (family ip) the proxy owns: `skerry`.
    pub table: String,
    /// This node's name (endpoints with this `nodeName` are local).
    pub node_name: String,
    /// This node's addresses (NodePorts, LoadBalancer ingress).
    pub node_ips: Vec<Ipv4Addr>,
    /// The cluster's pod CIDR.
    pub cluster_cidr: Ipv4Net,
    /// Mark bit requesting masquerade (kube-proxy's 0x4000).
    pub masquerade_mark: u32,
    /// Network namespace to program (`None`: the agent's own).
    pub netns: Option<PathBuf>,
}

impl ProxyConfig {
    /// Defaults: table `skerry`, cluster CIDR 10.42.0.0/16, mark 0x4000.
    pub fn new(node_name: &str, node_ips: Vec<Ipv4Addr>) -> Self {
        ProxyConfig {
            table: "skerry".into(),
            node_name: node_name.into(),
            node_ips,
            cluster_cidr: Ipv4Net::new(Ipv4Addr::new(10, 42, 0, 0), 16).expect("valid prefix"),
            masquerade_mark: 0x4000,
            netns: None,
        }
    }
}

/// Errors from the proxy.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// nf_tables refused or could not be reached.
    #[error("programming table {table}: {source}")]
    Nft { table: String, source: NftError },
}

/// What a sync did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncStats {
    /// Service ports programmed.
    pub service_ports: usize,
    /// Netlink commands in the transaction.
    pub commands: usize,
}

/// The nftables service proxy of one node.
pub struct ServiceProxy {
    cfg: ProxyConfig,
    layout: Layout,
    sock: NfSocket,
    /// Desired objects per service (`namespace/name`).
    state: BTreeMap<String, Vec<ServiceObjects>>,
    /// How many service ports use each endpoint address (the hairpin set holds those > 0).
    hairpin_refs: BTreeMap<Ipv4Addr, usize>,
    /// Which chain spreads over which slot of the endpoints map.
    slots: slots::Slots,
}

impl ServiceProxy {
    /// Opens the netlink socket; programs nothing until the first [`sync`](Self::sync).
    pub fn new(cfg: ProxyConfig) -> Result<Self, ProxyError> {
        let sock = NfSocket::open(cfg.netns.as_deref())
            .map_err(|source| ProxyError::Nft { table: cfg.table.clone(), source })?;
        let layout =
            Layout { cluster_cidr: cfg.cluster_cidr, masquerade_mark: cfg.masquerade_mark };
        Ok(ServiceProxy {
            cfg,
            layout,
            sock,
            state: BTreeMap::new(),
            hairpin_refs: BTreeMap::new(),
            slots: slots::Slots::default(),
        })
    }

    fn err(&self) -> impl FnOnce(NftError) -> ProxyError + '_ {
        move |source| ProxyError::Nft { table: self.cfg.table.clone(), source }
    }

    fn objects(&mut self, svc: &Service, slices: &[&EndpointSlice]) -> Vec<ServiceObjects> {
        let slots = &mut self.slots;
        model::service_ports(svc, slices, &self.cfg.node_name, &self.cfg.node_ips)
            .iter()
            .map(|p| plan::service_objects(p, &self.layout, &mut |chain| slots.get(chain)))
            .collect()
    }

    /// Replaces the whole table with the given services, in one transaction.
    pub fn sync(
        &mut self,
        services: &[Service],
        slices: &[EndpointSlice],
    ) -> Result<SyncStats, ProxyError> {
        // Index slices by service so each service only scans its own.
        let mut by_service: BTreeMap<String, Vec<&EndpointSlice>> = BTreeMap::new();
        for s in slices {
            let owner = s.metadata.labels.as_ref().and_then(|l| l.get(model::SERVICE_NAME_LABEL));
            if let Some(owner) = owner {
                let id = model::service_id(s.metadata.namespace.as_deref(), Some(owner));
                by_service.entry(id).or_default().push(s);
            }
        }
        let mut state = BTreeMap::new();
        // The whole table is rewritten: slots are handed out afresh.
        self.slots.clear();
        for svc in services {
            let id =
                model::service_id(svc.metadata.namespace.as_deref(), svc.metadata.name.as_deref());
            let own = by_service.get(&id).map(Vec::as_slice).unwrap_or_default();
            let objs = self.objects(svc, own);
            if !objs.is_empty() {
                state.insert(id, objs);
            }
        }
        self.state = state;
        self.resync()
    }

    /// Reprograms the whole table from the remembered state.
    pub fn resync(&mut self) -> Result<SyncStats, ProxyError> {
        let all: Vec<&ServiceObjects> = self.state.values().flatten().collect();
        self.hairpin_refs.clear();
        for ip in all.iter().flat_map(|o| o.endpoint_ips.iter()) {
            *self.hairpin_refs.entry(*ip).or_default() += 1;
        }
        let mut batch = self.sock.batch();
        plan::write_full(&mut batch, &self.cfg.table, &self.layout, &self.cfg.node_ips, &all);
        let commands = batch.len();
        self.sock.commit(batch).map_err(self.err())?;
        Ok(SyncStats { service_ports: all.len(), commands })
    }

    /// Programs one service (added or changed) with its EndpointSlices, in one transaction.
    pub fn update_service(
        &mut self,
        svc: &Service,
        slices: &[EndpointSlice],
    ) -> Result<(), ProxyError> {
        let id = model::service_id(svc.metadata.namespace.as_deref(), svc.metadata.name.as_deref());
        let refs: Vec<&EndpointSlice> = slices.iter().collect();
        let new = self.objects(svc, &refs);
        self.apply(id, new)
    }

    /// Removes one service, in one transaction.
    pub fn remove_service(&mut self, namespace: &str, name: &str) -> Result<(), ProxyError> {
        self.apply(model::service_id(Some(namespace), Some(name)), Vec::new())
    }

    fn apply(&mut self, id: String, new: Vec<ServiceObjects>) -> Result<(), ProxyError> {
        let old = self.state.get(&id).cloned().unwrap_or_default();
        if old == new {
            return Ok(());
        }
        let (add, del) = self.count_endpoints(&old, &new);
        let mut batch = self.sock.batch();
        let mut tx = TableTx::new(&mut batch, &self.cfg.table);
        plan::write_update(&mut tx, &old, &new);
        plan::write_hairpin(&mut tx, &add, &del);
        let result = self.sock.commit(batch);
        // Slots of chains that are gone (or no longer spread by slot) are free again.
        for (chain, _) in old.iter().flat_map(|o| o.slots.iter()) {
            if !new.iter().flat_map(|o| o.slots.iter()).any(|(c, _)| c == chain) {
                self.slots.release(chain);
            }
        }
        if new.is_empty() {
            self.state.remove(&id);
        } else {
            self.state.insert(id.clone(), new);
        }
        if let Err(e) = result {
            // Our view of the kernel was wrong (drift): rebuild everything from desired state.
            tracing::warn!(service = id, error = %e, "incremental update refused; full resync");
            self.resync()?;
        }
        Ok(())
    }

    /// Moves endpoint reference counts from `old` to `new`; returns the hairpin set's
    /// (additions, deletions).
    fn count_endpoints(
        &mut self,
        old: &[ServiceObjects],
        new: &[ServiceObjects],
    ) -> (Vec<Ipv4Addr>, Vec<Ipv4Addr>) {
        let mut add = Vec::new();
        let mut del = Vec::new();
        for ip in new.iter().flat_map(|o| o.endpoint_ips.iter()) {
            let n = self.hairpin_refs.entry(*ip).or_default();
            *n += 1;
            if *n == 1 {
                add.push(*ip);
            }
        }
        for ip in old.iter().flat_map(|o| o.endpoint_ips.iter()) {
            if let Some(n) = self.hairpin_refs.get_mut(ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.hairpin_refs.remove(ip);
                    // Re-added above and gone again: no change on the kernel side.
                    match add.iter().position(|a| a == ip) {
                        Some(i) => {
                            add.swap_remove(i);
                        }
                        None => del.push(*ip),
                    }
                }
            }
        }
        (add, del)
    }

    /// Resyncs when the table has disappeared; returns whether it had to.
    pub fn repair(&mut self) -> Result<bool, ProxyError> {
        if self.sock.table_exists(&self.cfg.table).map_err(self.err())? {
            return Ok(false);
        }
        tracing::warn!(table = self.cfg.table, "proxy table missing; resyncing");
        self.resync()?;
        Ok(true)
    }

    /// Removes the proxy's table (`skerry agent --cleanup`); absent is fine.
    pub fn cleanup(&mut self) -> Result<(), ProxyError> {
        let mut batch = self.sock.batch();
        let mut tx = TableTx::new(&mut batch, &self.cfg.table);
        tx.add_table();
        tx.del_table();
        self.sock.commit(batch).map_err(self.err())?;
        self.state.clear();
        Ok(())
    }

    /// Number of services currently programmed.
    pub fn service_count(&self) -> usize {
        self.state.len()
    }
}
