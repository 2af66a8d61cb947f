//! The node's service networking: the node-local cluster DNS on `--cluster-dns` and the
//! nftables service proxy, fed by the `services` watchers (Services, EndpointSlices, Nodes,
//! Pods), which also keep the pod network's peers current.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use skerry_dns::{ClusterDns, DnsConfig};
use skerry_netproxy::podnet::PodNetwork;
use skerry_netproxy::proxy::{ProxyConfig, ServiceProxy};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::agent::AgentError;
use crate::config::AgentConfig;
use crate::services::{self, ServicesConfig};

fn failed(what: &'static str) -> impl FnOnce(String) -> AgentError {
    move |message| AgentError::Start { what, message }
}

/// Starts DNS and the proxy, and the watch loop that feeds them; returns the task to await at
/// shutdown.
pub async fn start(
    client: &kube::Client,
    config: &AgentConfig,
    network: Arc<PodNetwork>,
    node_ip: std::net::Ipv4Addr,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>, AgentError> {
    // The DNS address lives on the bridge: pods reach the resolver directly (no DNAT, no
    // conntrack race), and it goes away with the bridge on `--cleanup`.
    if let IpAddr::V4(dns_ip) = config.cluster_dns {
        network
            .add_bridge_address(dns_ip)
            .await
            .map_err(|e| failed("cluster DNS address")(e.to_string()))?;
    }
    let mut dns_config = DnsConfig {
        listen: vec![SocketAddr::new(config.cluster_dns, 53)],
        cluster_domain: config.cluster_domain.clone(),
        ..DnsConfig::default()
    };
    match dns_config.clone().with_upstreams_from(&config.resolv_conf) {
        Ok(with_upstreams) => dns_config = with_upstreams,
        Err(err) => tracing::warn!(%err, "no upstream resolvers: only cluster names will resolve"),
    }
    let dns =
        ClusterDns::start(dns_config).await.map_err(|e| failed("cluster DNS")(e.to_string()))?;

    let mut proxy_config = ProxyConfig::new(&config.node_name, vec![node_ip]);
    proxy_config.cluster_cidr = config.cluster_cidr;
    let proxy = tokio::task::spawn_blocking(move || ServiceProxy::new(proxy_config))
        .await
        .map_err(|e| failed("service proxy")(e.to_string()))?
        .map_err(|e| failed("service proxy")(e.to_string()))?;

    let services_config = ServicesConfig {
        node_name: config.node_name.clone(),
        cluster_dns: config.cluster_dns,
        state_dir: config.data_dir.join("services"),
    };
    let client = client.clone();
    let task = tokio::spawn(async move {
        let stop = async move {
            let _ = shutdown.wait_for(|stopped| *stopped).await;
        };
        if let Err(err) = services::run(client, services_config, proxy, dns, network, stop).await {
            tracing::error!(%err, "service networking stopped");
        }
    });
    Ok(vec![task])
}
