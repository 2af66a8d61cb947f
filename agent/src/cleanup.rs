//! `skerry agent --cleanup`: removes what the agent made on this node — every pod sandbox and
//! container of its runtime (with their root filesystems), the pod network (bridge, VXLAN
//! device, routes, NAT table), the service proxy's nftables table, and its state (runtime
//! records, local cache, pod logs, IPAM). Images are kept: they are a cache, and
//! `skerry ctr images rm`/`prune` removes them.

use std::path::Path;
use std::sync::Arc;

use skerry_netproxy::podnet::{NetworkConfig, PodNetwork};
use skerry_netproxy::proxy::{ProxyConfig, ServiceProxy};
use skerry_runtime::{LoopbackOnly, MonitorCommand, Runtime, RuntimeConfig};

use crate::config::AgentConfig;

/// What the cleanup removed and what it could not.
#[derive(Debug, Default)]
pub struct CleanupReport {
    /// Containers removed.
    pub containers: usize,
    /// Sandboxes removed.
    pub sandboxes: usize,
    /// Steps that failed, with their errors.
    pub errors: Vec<String>,
}

/// What the runtime part removed.
#[derive(Default)]
struct Removed {
    names: Vec<String>,
    sandboxes: usize,
    errors: Vec<String>,
}

/// Removes the agent's pods, network and state below `config.data_dir`.
pub async fn cleanup(config: &AgentConfig) -> CleanupReport {
    let mut report = CleanupReport::default();
    let dir = config.data_dir.clone();
    let runtime_config = RuntimeConfig {
        state_dir: dir.join("runtime"),
        monitor: MonitorCommand {
            exe: config.monitor_exe.clone(),
            args: config.monitor_args.clone(),
        },
        cgroup_root: config.cgroup_root.clone(),
        // The pod network goes away as a whole below; veths die with their namespaces.
        network: Arc::new(LoopbackOnly),
    };
    if dir.join("runtime").exists() {
        let images =
            skerry_images::ImageStore::open(dir.join("images"), skerry_images::Platform::host())
                .ok();
        let removed = tokio::task::spawn_blocking(move || -> Result<Removed, String> {
            let runtime = Runtime::open(runtime_config).map_err(|e| e.to_string())?;
            let mut removed = Removed {
                names: runtime.list_containers().into_iter().map(|c| c.name).collect(),
                ..Default::default()
            };
            for s in runtime.list_sandboxes() {
                removed.sandboxes += 1;
                if let Err(e) = runtime.remove_sandbox(&s.id) {
                    removed.errors.push(format!("sandbox {}: {e}", s.spec.name));
                }
            }
            // Containers outside any sandbox (`skerry ctr` leftovers of a broken sandbox).
            for c in runtime.list_containers() {
                if let Err(e) = runtime.remove_container(&c.id, true) {
                    removed.errors.push(format!("container {}: {e}", c.name));
                }
            }
            Ok(removed)
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r);
        match removed {
            Ok(removed) => {
                report.containers = removed.names.len();
                report.sandboxes = removed.sandboxes;
                report.errors.extend(removed.errors);
                if let Some(store) = &images {
                    for name in &removed.names {
                        let _ = store.release_rootfs(name).await;
                    }
                }
            }
            Err(e) => report.errors.push(format!("runtime: {e}")),
        }
    }
    let mut net_cfg =
        NetworkConfig::new(config.pod_cidr, std::net::Ipv4Addr::LOCALHOST, dir.join("network"));
    net_cfg.cluster_cidr = config.cluster_cidr;
    match PodNetwork::new(net_cfg).await {
        Ok(net) => {
            if let Err(e) = net.cleanup().await {
                report.errors.push(format!("pod network: {e}"));
            }
        }
        Err(e) => report.errors.push(format!("pod network: {e}")),
    }
    let proxy_cfg = ProxyConfig::new(&config.node_name, Vec::new());
    let proxy = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let mut proxy = ServiceProxy::new(proxy_cfg).map_err(|e| e.to_string())?;
        proxy.cleanup().map_err(|e| e.to_string())
    })
    .await;
    match proxy {
        Ok(Ok(())) => {}
        Ok(Err(e)) => report.errors.push(format!("service proxy: {e}")),
        Err(e) => report.errors.push(format!("service proxy: {e}")),
    }
    for leftover in
        ["runtime", "rootfs", "pods", "network", "cache.db", "cache.db-wal", "cache.db-shm"]
    {
        remove(&dir.join(leftover), &mut report);
    }
    report
}

fn remove(path: &Path, report: &mut CleanupReport) {
    let result =
        if path.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
    match result {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => report.errors.push(format!("{}: {e}", path.display())),
    }
}
