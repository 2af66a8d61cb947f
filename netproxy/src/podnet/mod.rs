//! The pod network of one node: a bridge, a veth per pod, IPAM, and routes to other nodes.
//!
//! Flannel's model without its daemon: the node owns `pod_cidr` (a slice of `cluster_cidr`);
//! the bridge holds the first address as the pods' gateway; each pod gets a veth whose peer is
//! created directly inside the pod's namespace as `eth0`. Other nodes' pod CIDRs are reached
//! over a VXLAN device (VTEP MACs derived from the pod CIDR, so no annotation exchange is
//! needed) or, on one L2 segment, by plain routes via the node address (host-gw). Traffic
//! leaving the cluster CIDR is masqueraded and hostPorts are DNATed in the `skerry-podnet`
//! nftables table (see [`nat`]).

mod links;
pub mod nat;

use std::collections::BTreeMap;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use rtnetlink::packet_route::link::{InfoData, InfoVeth};
use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourFlags};
use rtnetlink::{Handle, LinkBridge, LinkBridgePort, LinkUnspec, LinkVxlan};
use tokio::sync::Mutex;

use crate::ipam::{Ipam, IpamError};
pub use nat::HostPort;

/// Errors from the pod network.
#[derive(Debug, thiserror::Error)]
pub enum PodNetError {
    /// A netlink operation failed.
    #[error("{what}: {source}")]
    Netlink { what: String, source: rtnetlink::Error },
    /// A namespace or socket could not be opened.
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    /// Address allocation failed.
    #[error(transparent)]
    Ipam(#[from] IpamError),
    /// Programming the NAT table failed.
    #[error("pod network NAT rules: {0}")]
    Nft(#[from] crate::nft::NftError),
    /// The configuration cannot work (e.g. pod CIDR outside the cluster CIDR).
    #[error("invalid network configuration: {0}")]
    Config(String),
}

fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> PodNetError {
    let what = what.into();
    move |source| PodNetError::Netlink { what, source }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PodNetError {
    let what = what.into();
    move |source| PodNetError::Io { what, source }
}

/// How pod traffic reaches other nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A VXLAN overlay between node addresses (works across routed networks).
    Vxlan,
    /// Plain routes via the peer node's address (nodes must share an L2 segment).
    HostGw,
}

/// The node's network settings.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// Bridge name (`skerry0`).
    pub bridge: String,
    /// VXLAN device name (`skerry.vxlan` style, at most 15 bytes).
    pub vxlan_device: String,
    /// This node's pod CIDR (`spec.podCIDR`).
    pub pod_cidr: Ipv4Net,
    /// The whole cluster's pod CIDR (10.42.0.0/16).
    pub cluster_cidr: Ipv4Net,
    /// MTU of the node's uplink; pods get 50 bytes less with VXLAN.
    pub mtu: u32,
    /// Cross-node transport.
    pub backend: Backend,
    /// Where IPAM state lives.
    pub state_dir: PathBuf,
    /// This node's address (VXLAN source, host-gw next hop for peers).
    pub node_ip: Ipv4Addr,
    /// VXLAN UDP port (8472, flannel's).
    pub vxlan_port: u16,
    /// VXLAN network identifier.
    pub vni: u32,
    /// nftables table for masquerade and hostPorts.
    pub nat_table: String,
    /// The node's network namespace (`None`: the agent's own).
    pub node_netns: Option<PathBuf>,
}

impl NetworkConfig {
    /// Defaults for a node: `skerry0`, VXLAN on 8472, MTU 1500, table `skerry-podnet`.
    pub fn new(pod_cidr: Ipv4Net, node_ip: Ipv4Addr, state_dir: PathBuf) -> Self {
        NetworkConfig {
            bridge: "skerry0".into(),
            vxlan_device: "skerry.vxlan".into(),
            pod_cidr,
            cluster_cidr: Ipv4Net::new(Ipv4Addr::new(10, 42, 0, 0), 16).expect("valid prefix"),
            mtu: 1500,
            backend: Backend::Vxlan,
            state_dir,
            node_ip,
            vxlan_port: 8472,
            vni: 1,
            nat_table: "skerry-podnet".into(),
            node_netns: None,
        }
    }

    /// The MTU pods and the bridge use.
    pub fn pod_mtu(&self) -> u32 {
        match self.backend {
            Backend::Vxlan => self.mtu.saturating_sub(50),
            Backend::HostGw => self.mtu,
        }
    }
}

/// The address a pod was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodAddress {
    /// The pod's IP.
    pub ip: Ipv4Addr,
    /// Prefix length of the node's pod CIDR.
    pub prefix_len: u8,
    /// The default gateway (the bridge's address).
    pub gateway: Ipv4Addr,
    /// The host-side veth name.
    pub host_veth: String,
}

/// Another node, as read from its Node object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePeer {
    /// Node name (for logs).
    pub name: String,
    /// The node's address.
    pub node_ip: Ipv4Addr,
    /// Its `spec.podCIDR`.
    pub pod_cidr: Ipv4Net,
}

/// The pod network of this node.
pub struct PodNetwork {
    cfg: NetworkConfig,
    ipam: Ipam,
    handle: Handle,
    bridge_index: u32,
    vxlan_index: Option<u32>,
    peers: Mutex<BTreeMap<Ipv4Net, NodePeer>>,
    host_ports: Mutex<Vec<HostPort>>,
}

/// The VTEP MAC of the node owning `pod_cidr`: locally administered, derived from the CIDR so
/// every node can compute every other node's without exchanging it.
pub fn vtep_mac(pod_cidr: Ipv4Net) -> [u8; 6] {
    let o = pod_cidr.network().octets();
    [0x0a, 0x58, o[0], o[1], o[2], o[3]]
}

/// The host-side veth name for a pod: stable, unique per pod id, at most 15 bytes.
pub fn host_veth_name(pod_id: &str) -> String {
    // FNV-1a: a stable hash without a dependency; collisions are checked at creation.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in pod_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("veth{:08x}", h as u32)
}

impl PodNetwork {
    /// Sets up the node side (bridge, VXLAN device, forwarding, NAT table) idempotently.
    pub async fn new(cfg: NetworkConfig) -> Result<Self, PodNetError> {
        if !cfg.cluster_cidr.contains(&cfg.pod_cidr) {
            return Err(PodNetError::Config(format!(
                "pod CIDR {} is outside the cluster CIDR {}",
                cfg.pod_cidr, cfg.cluster_cidr
            )));
        }
        if cfg.pod_cidr.prefix_len() > 30 {
            return Err(PodNetError::Config(format!("pod CIDR {} is too small", cfg.pod_cidr)));
        }
        let netns = cfg.node_netns.as_deref();
        let handle =
            crate::netns::route_handle(netns).await.map_err(io("opening rtnetlink socket"))?;
        let ipam = Ipam::open(&cfg.state_dir.join("ipam"), cfg.pod_cidr)?;
        crate::netns::write_sysctl(netns, "net/ipv4/ip_forward", "1")
            .map_err(io("enabling IPv4 forwarding"))?;

        let bridge_index = match links::link_index(&handle, &cfg.bridge)
            .await
            .map_err(nl("bridge"))?
        {
            Some(i) => i,
            None => {
                let msg = LinkBridge::new(&cfg.bridge).mtu(cfg.pod_mtu()).build();
                handle.link().add(msg).execute().await.map_err(nl("creating the bridge"))?;
                links::link_index(&handle, &cfg.bridge)
                    .await
                    .map_err(nl("bridge"))?
                    .ok_or_else(|| PodNetError::Config("bridge vanished after creation".into()))?
            }
        };
        links::add_address(&handle, bridge_index, ipam.gateway(), cfg.pod_cidr.prefix_len())
            .await
            .map_err(nl("bridge address"))?;
        links::set_up(&handle, bridge_index).await.map_err(nl("bridge up"))?;

        let vxlan_index = match cfg.backend {
            Backend::Vxlan => Some(Self::ensure_vxlan(&handle, &cfg).await?),
            Backend::HostGw => None,
        };
        let net = PodNetwork {
            cfg,
            ipam,
            handle,
            bridge_index,
            vxlan_index,
            peers: Mutex::new(BTreeMap::new()),
            host_ports: Mutex::new(Vec::new()),
        };
        net.program_nat(&[])?;
        Ok(net)
    }

    async fn ensure_vxlan(handle: &Handle, cfg: &NetworkConfig) -> Result<u32, PodNetError> {
        let name = &cfg.vxlan_device;
        let index = match links::link_index(handle, name).await.map_err(nl("vxlan"))? {
            Some(i) => i,
            None => {
                let msg = LinkVxlan::new(name, cfg.vni)
                    .port(cfg.vxlan_port)
                    .local(cfg.node_ip)
                    .learning(false)
                    .mtu(cfg.pod_mtu())
                    .address(vtep_mac(cfg.pod_cidr).to_vec())
                    .build();
                handle.link().add(msg).execute().await.map_err(nl("creating the VXLAN device"))?;
                links::link_index(handle, name)
                    .await
                    .map_err(nl("vxlan"))?
                    .ok_or_else(|| PodNetError::Config("VXLAN device vanished".into()))?
            }
        };
        // The VTEP address is the pod CIDR's network address (/32), as flannel does: peers
        // route our pod CIDR via it and resolve it to our VTEP MAC.
        links::add_address(handle, index, cfg.pod_cidr.network(), 32)
            .await
            .map_err(nl("VXLAN address"))?;
        links::set_up(handle, index).await.map_err(nl("VXLAN up"))?;
        Ok(index)
    }

    /// The configuration this network runs with.
    pub fn config(&self) -> &NetworkConfig {
        &self.cfg
    }

    /// The address allocator.
    pub fn ipam(&self) -> &Ipam {
        &self.ipam
    }

    /// Gives the pod in `netns_path` an `eth0` on the bridge with an address, a default route
    /// and `lo` up. Idempotent: retrying after a partial attach keeps the same address.
    pub async fn attach(&self, pod_id: &str, netns_path: &Path) -> Result<PodAddress, PodNetError> {
        let ip = self.ipam.allocate(pod_id)?;
        match self.plumb(pod_id, netns_path, ip).await {
            Ok(addr) => Ok(addr),
            Err(e) => {
                // Leave nothing half-made behind: a retry starts clean.
                let _ = self.remove_host_veth(pod_id).await;
                let _ = self.ipam.release(pod_id);
                Err(e)
            }
        }
    }

    async fn plumb(
        &self,
        pod_id: &str,
        netns_path: &Path,
        ip: Ipv4Addr,
    ) -> Result<PodAddress, PodNetError> {
        let host_veth = host_veth_name(pod_id);
        self.remove_host_veth(pod_id).await?;
        let ns = File::open(netns_path)
            .map_err(io(format!("opening pod network namespace {}", netns_path.display())))?;
        let mtu = self.cfg.pod_mtu();
        let peer = LinkUnspec::new_with_name("eth0").mtu(mtu).setns_by_fd(ns.as_raw_fd()).build();
        let msg = rtnetlink::LinkVeth::new(&host_veth, "eth0")
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .mtu(mtu)
            .controller(self.bridge_index)
            .up()
            .build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(nl(format!("creating veth {host_veth} for pod {pod_id}")))?;
        let index = links::link_index(&self.handle, &host_veth)
            .await
            .map_err(nl("host veth"))?
            .ok_or_else(|| PodNetError::Config(format!("veth {host_veth} vanished")))?;
        // Hairpin lets a frame leave by the port it came in on (a pod reaching itself through
        // a service when the bridge does the NAT).
        let port = LinkBridgePort::new(index).hairpin(true).build();
        self.handle.link().set_port(port).execute().await.map_err(nl("hairpin mode"))?;

        let gateway = self.ipam.gateway();
        let prefix_len = self.cfg.pod_cidr.prefix_len();
        let pod = crate::netns::route_handle(Some(netns_path))
            .await
            .map_err(io("rtnetlink in the pod namespace"))?;
        if let Some(lo) = links::link_index(&pod, "lo").await.map_err(nl("pod lo"))? {
            links::set_up(&pod, lo).await.map_err(nl("pod lo up"))?;
        }
        let eth0 = links::link_index(&pod, "eth0")
            .await
            .map_err(nl("pod eth0"))?
            .ok_or_else(|| PodNetError::Config("eth0 missing in the pod namespace".into()))?;
        links::add_address(&pod, eth0, ip, prefix_len).await.map_err(nl("pod address"))?;
        links::set_up(&pod, eth0).await.map_err(nl("pod eth0 up"))?;
        let default = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gateway)
            .output_interface(eth0)
            .build();
        pod.route().add(default).replace().execute().await.map_err(nl("pod default route"))?;
        Ok(PodAddress { ip, prefix_len, gateway, host_veth })
    }

    async fn remove_host_veth(&self, pod_id: &str) -> Result<(), PodNetError> {
        let name = host_veth_name(pod_id);
        if let Some(i) = links::link_index(&self.handle, &name).await.map_err(nl("host veth"))? {
            links::delete_link(&self.handle, i).await.map_err(nl(format!("deleting {name}")))?;
        }
        Ok(())
    }

    /// Removes the pod's veth (if its namespace still exists) and releases its address.
    pub async fn detach(&self, pod_id: &str) -> Result<(), PodNetError> {
        self.remove_host_veth(pod_id).await?;
        self.ipam.release(pod_id)?;
        Ok(())
    }

    /// Frees addresses and veths of pods not in `live` (called at agent start).
    pub async fn gc(&self, live: &[&str]) -> Result<Vec<Ipv4Addr>, PodNetError> {
        let mut freed = Vec::new();
        for (ip, pod) in self.ipam.gc(live)? {
            self.remove_host_veth(&pod).await?;
            tracing::info!(%ip, pod, "released a leaked pod address");
            freed.push(ip);
        }
        Ok(freed)
    }

    /// Makes routes (and VXLAN forwarding entries) match exactly `peers`; our own node and
    /// peers with a pod CIDR outside the cluster CIDR are skipped with a log.
    pub async fn set_peers(&self, peers: &[NodePeer]) -> Result<(), PodNetError> {
        let mut wanted = BTreeMap::new();
        for p in peers {
            if p.pod_cidr == self.cfg.pod_cidr {
                continue;
            }
            if !self.cfg.cluster_cidr.contains(&p.pod_cidr) {
                tracing::warn!(node = p.name, cidr = %p.pod_cidr, "peer pod CIDR outside the cluster CIDR; skipped");
                continue;
            }
            wanted.insert(p.pod_cidr.trunc(), p.clone());
        }
        let mut current = self.peers.lock().await;
        for peer in wanted.values() {
            if current.get(&peer.pod_cidr.trunc()) != Some(peer) {
                self.add_peer(peer).await?;
            }
        }
        // Routes are the source of truth for what we installed (they survive our restarts).
        let installed = links::owned_routes(&self.handle).await.map_err(nl("listing routes"))?;
        for (dst, msg) in installed {
            if !wanted.contains_key(&dst) {
                match self.handle.route().del(msg).execute().await {
                    Err(e) if !links::is_errno(&e, libc::ESRCH) => {
                        return Err(nl(format!("deleting route to {dst}"))(e))
                    }
                    _ => {}
                }
            }
        }
        for (cidr, old) in current.iter() {
            if !wanted.contains_key(cidr) {
                self.remove_vxlan_entries(old).await?;
            }
        }
        *current = wanted;
        Ok(())
    }

    async fn add_peer(&self, peer: &NodePeer) -> Result<(), PodNetError> {
        let what = format!("route to node {} ({})", peer.name, peer.pod_cidr);
        match (self.cfg.backend, self.vxlan_index) {
            (Backend::Vxlan, Some(vx)) => {
                let vtep = peer.pod_cidr.network();
                let mac = vtep_mac(peer.pod_cidr);
                self.handle
                    .neighbours()
                    .add(vx, vtep.into())
                    .link_layer_address(&mac)
                    .replace()
                    .execute()
                    .await
                    .map_err(nl(format!("VTEP neighbour of {}", peer.name)))?;
                let mut fdb = self.handle.neighbours().add_bridge(vx, &mac).replace();
                fdb.message_mut().header.flags = NeighbourFlags::Own;
                fdb.message_mut()
                    .attributes
                    .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(peer.node_ip)));
                fdb.execute().await.map_err(nl(format!("VXLAN FDB entry of {}", peer.name)))?;
                let r = links::route(peer.pod_cidr, vtep, Some(vx), true);
                links::replace_route(&self.handle, r).await.map_err(nl(what))?;
            }
            _ => {
                let r = links::route(peer.pod_cidr, peer.node_ip, None, false);
                links::replace_route(&self.handle, r).await.map_err(nl(what))?;
            }
        }
        tracing::debug!(node = peer.name, cidr = %peer.pod_cidr, "peer route installed");
        Ok(())
    }

    async fn remove_vxlan_entries(&self, peer: &NodePeer) -> Result<(), PodNetError> {
        let Some(vx) = self.vxlan_index else { return Ok(()) };
        let mut msgs = Vec::new();
        let mut neigh = self.handle.neighbours().add(vx, peer.pod_cidr.network().into());
        msgs.push(neigh.message_mut().clone());
        let mut fdb = self.handle.neighbours().add_bridge(vx, &vtep_mac(peer.pod_cidr));
        fdb.message_mut().header.flags = NeighbourFlags::Own;
        fdb.message_mut()
            .attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(peer.node_ip)));
        msgs.push(fdb.message_mut().clone());
        for m in msgs {
            match self.handle.neighbours().del(m).execute().await {
                Err(e) if !links::is_errno(&e, libc::ENOENT) => {
                    return Err(nl(format!("removing VXLAN entries of {}", peer.name))(e))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Replaces the hostPort mappings (DNAT from the node's addresses to pods).
    pub async fn set_host_ports(&self, ports: &[HostPort]) -> Result<(), PodNetError> {
        let mut current = self.host_ports.lock().await;
        self.program_nat(ports)?;
        *current = ports.to_vec();
        Ok(())
    }

    /// Re-applies the NAT table (after drift: someone deleted it).
    pub async fn resync_nat(&self) -> Result<(), PodNetError> {
        let current = self.host_ports.lock().await;
        self.program_nat(&current)
    }

    fn program_nat(&self, ports: &[HostPort]) -> Result<(), PodNetError> {
        let mut sock = crate::nft::NfSocket::open(self.cfg.node_netns.as_deref())?;
        let mut batch = sock.batch();
        nat::write_table(&mut batch, &self.cfg, ports);
        sock.commit(batch)?;
        Ok(())
    }

    /// Removes the bridge, the VXLAN device, our routes and the NAT table (`--cleanup`).
    pub async fn cleanup(&self) -> Result<(), PodNetError> {
        self.set_peers(&[]).await?;
        if let Some(vx) = self.vxlan_index {
            links::delete_link(&self.handle, vx).await.map_err(nl("deleting VXLAN device"))?;
        }
        links::delete_link(&self.handle, self.bridge_index).await.map_err(nl("deleting bridge"))?;
        let mut sock = crate::nft::NfSocket::open(self.cfg.node_netns.as_deref())?;
        let mut batch = sock.batch();
        let mut tx = crate::nft::TableTx::new(&mut batch, &self.cfg.nat_table);
        tx.add_table();
        tx.del_table();
        sock.commit(batch)?;
        Ok(())
    }

    /// Puts `ip`/32 on the bridge: a node-local service address (the cluster DNS) that pods
    /// reach without a Service hop, and that goes away with the bridge on cleanup.
    pub async fn add_bridge_address(&self, ip: Ipv4Addr) -> Result<(), PodNetError> {
        links::add_address(&self.handle, self.bridge_index, ip, 32)
            .await
            .map_err(nl("bridge service address"))
    }

    /// The link index of `bridge` (for tests and diagnostics).
    pub fn bridge_index(&self) -> u32 {
        self.bridge_index
    }

    /// The MAC of the VXLAN device, if any.
    pub async fn vxlan_mac(&self) -> Result<Option<Vec<u8>>, PodNetError> {
        match self.vxlan_index {
            Some(i) => links::link_mac(&self.handle, i).await.map_err(nl("VXLAN MAC")),
            None => Ok(None),
        }
    }
}
