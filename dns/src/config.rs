//! The server's configuration, with the defaults an agent uses.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use crate::error::DnsError;
use crate::resolv_conf::ResolvConf;
use crate::zone::PodRecords;

/// Everything [`ClusterDns::start`](crate::ClusterDns::start) needs.
#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// Where to answer, over UDP and TCP (default `10.43.0.10:53`). Port 0 picks a port free
    /// for both; [`DnsHandle::local_addrs`](crate::DnsHandle::local_addrs) tells which.
    pub listen: Vec<SocketAddr>,
    /// The cluster domain (default `cluster.local`).
    pub cluster_domain: String,
    /// Resolvers for every other name, asked in order (usually from the node's resolv.conf).
    pub upstreams: Vec<SocketAddr>,
    /// TTL of cluster records and of negative answers about them (default 5 s, as CoreDNS).
    pub ttl: u32,
    /// How many upstream answers to cache (default 10,000).
    pub cache_size: usize,
    /// How long to wait for each upstream (default 2 s).
    pub upstream_timeout: Duration,
    /// How long past expiry an upstream answer may still be served when no upstream answers
    /// (default one day: an offline site keeps resolving what it used).
    pub serve_stale_for: Duration,
    /// How pod names are answered (default: insecurely, from the name alone, as k3s's
    /// CoreDNS; the agent then needs no Pod objects).
    pub pod_records: PodRecords,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            listen: vec![SocketAddr::new(IpAddr::from([10, 43, 0, 10]), 53)],
            cluster_domain: "cluster.local".to_string(),
            upstreams: Vec::new(),
            ttl: 5,
            cache_size: 10_000,
            upstream_timeout: Duration::from_secs(2),
            serve_stale_for: Duration::from_secs(24 * 3600),
            pod_records: PodRecords::default(),
        }
    }
}

impl DnsConfig {
    /// Sets the upstreams to the nameservers of the resolv.conf at `path`.
    pub fn with_upstreams_from(mut self, path: &Path) -> Result<Self, DnsError> {
        self.upstreams = ResolvConf::read(path)?.upstreams();
        Ok(self)
    }
}
