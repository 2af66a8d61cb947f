//! skerry-dns: the node-local cluster DNS every agent runs.
//!
//! It answers on the cluster DNS address (10.43.0.10 by default, bound on the node itself, the
//! NodeLocal DNSCache idea) over UDP and TCP: authoritatively for the cluster domain, from
//! records derived from Services and EndpointSlices the agent watches, pod names answered from
//! the name itself (or, in [`PodRecords::Verified`] mode, from watched Pods) ([`zone`]), and by
//! forwarding everything else to the node's resolvers through a cache ([`ClusterDns`]).
//! [`pod_resolv_conf`] writes the resolv.conf a pod gets for its `dnsPolicy`.
//!
//! Built on `hickory-proto` for the wire format only (plus a direct encoder for local answers,
//! `wire`, the hot path). hickory-server's catalogue/authority framework would own the flags
//! (AA/RA/TC) and the forwarding path, and hickory-resolver rebuilds upstream answers rather
//! than replaying them; the zone here is a small index over Kubernetes objects, and the
//! forwarder a cache of replayed upstream answers, with serve-stale for offline sites.
//!
//! How the agent uses it: start it with [`ClusterDns::start`], run watches on Services and
//! EndpointSlices (and Pods only for `PodRecords::Verified`), call [`DnsHandle::apply`] per event and
//! [`DnsHandle::replace_all`] after each (re-)list. On a disconnect, do nothing: the data stays.

mod cache;
pub mod config;
pub mod error;
mod forward;
mod handler;
mod names;
pub mod objects;
pub mod resolv_conf;
mod server;
mod stats;
mod udp_batch;
mod wire;
pub mod zone;

pub use config::DnsConfig;
pub use error::DnsError;
pub use objects::{Kind, Object, ObjectRef, Snapshot, Update};
pub use resolv_conf::{pod_resolv_conf, ClusterDnsSettings, ResolvConf};
pub use server::{ClusterDns, DnsHandle};
pub use stats::DnsStats;
pub use zone::{ClusterZone, PodRecords};
