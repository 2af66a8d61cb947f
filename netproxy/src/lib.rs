//! skerry-netproxy: the node's pod network and its nftables service proxy.
//!
//! Two libraries the agent drives: [`podnet::PodNetwork`] gives pods an address on the node's
//! bridge and routes to other nodes (VXLAN or host-gw), and [`proxy::ServiceProxy`] turns
//! Services and EndpointSlices into one nftables table programmed over nfnetlink ([`nft`]).
//! Every entry point takes an optional network namespace path so tests (and nested setups)
//! can run whole "nodes" inside namespaces.

pub mod ipam;
pub mod netns;
pub mod nft;
pub mod podnet;
pub mod proxy;
