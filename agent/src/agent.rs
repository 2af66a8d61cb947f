//! `Agent::run`: the node agent's composition root. It connects to the API server (HTTPS with
//! the node's kubeconfig), registers the Node, sets up the pod network, the runtime (which
//! re-adopts running containers), the image store and the local cache, and runs the pod
//! manager and the heartbeat until shutdown. The server being away at start is not an error:
//! the agent runs its cached pods and keeps trying.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use skerry_dns::{ClusterDnsSettings, ResolvConf};
use skerry_netproxy::podnet::{NetworkConfig, PodNetwork};
use skerry_runtime::{LoopbackOnly, MonitorCommand, Runtime, RuntimeConfig, SandboxNetwork};
use tokio::sync::watch;

use crate::api_objects::ApiObjects;
use crate::cache::LocalCache;
use crate::config::AgentConfig;
use crate::events::EventRecorder;
use crate::network::PodNetworkHook;
use crate::node::{self, NodeFacts};
use crate::pods::lookup::CachedPodLookup;
use crate::pods::status_writer::StatusWriter;
use crate::pods::{PodContext, PodManager};

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The kubeconfig is unusable.
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A local part failed to start.
    #[error("{what}: {message}")]
    Start {
        /// Which part.
        what: &'static str,
        /// Its error.
        message: String,
    },
}

fn start_err(what: &'static str) -> impl FnOnce(String) -> AgentError {
    move |message| AgentError::Start { what, message }
}

/// How long registration may take before the agent goes on with its cached state.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a new Node may wait for the node IPAM controller's `spec.podCIDR`.
const POD_CIDR_WAIT: Duration = Duration::from_secs(30);

/// The node agent.
pub struct Agent;

impl Agent {
    /// Runs the agent until `shutdown` resolves. Containers keep running after it returns.
    pub async fn run(
        config: AgentConfig,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), AgentError> {
        tracing::info!(node = %config.node_name, data_dir = %config.data_dir.display(), "agent starting");
        let data_dir = config.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|e| AgentError::Start {
            what: "data dir",
            message: format!("{}: {e}", data_dir.display()),
        })?;
        if let Some(token) = &config.token {
            crate::join::ensure_joined(&config, token)
                .await
                .map_err(|e| start_err("joining the cluster")(e.to_string()))?;
        }
        // The API client follows the client certificate as it is renewed (`cert_renewal`).
        crate::cert_renewal::recover(&config);
        let api = Arc::new(crate::api_client::ApiClient::connect(&config).await?);
        let client = api.client();
        let cache = LocalCache::open(&data_dir.join("cache.db"))
            .map_err(|e| start_err("local cache")(e.to_string()))?;
        let node_ip = match config.node_ip {
            Some(ip) => ip,
            None => detect_node_ip(&config),
        };
        let images = skerry_images::ImageStore::open(
            data_dir.join("images"),
            skerry_images::Platform::host(),
        )
        .map_err(|e| start_err("image store")(e.to_string()))?;
        // The eviction manager decides the pressure conditions; the heartbeat reports them.
        let (pressure_tx, pressure_rx) = watch::channel(node::facts::Pressure::default());
        let admission_pressure = pressure_rx.clone();
        let measure = {
            let images = images.clone();
            let dir = data_dir.clone();
            move || measure(&dir, &images, node_ip, *pressure_rx.borrow())
        };

        // Registration: the pod CIDR comes from the Node; offline, from the cached Node.
        let registered =
            tokio::time::timeout(REGISTER_TIMEOUT, node::register(&client, &config, &measure()))
                .await
                .map_err(|_| "timed out".to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
        let node = match registered {
            Ok(node) => {
                let node = match node::wait_for_pod_cidr(&client, &node, POD_CIDR_WAIT).await {
                    Some(with_cidr) => with_cidr,
                    None => {
                        tracing::warn!(fallback = %config.pod_cidr, "the Node got no spec.podCIDR");
                        node
                    }
                };
                let stored = node.clone();
                let name = config.node_name.clone();
                let _ = cache.run(move |c| c.put_object("Node", "", &name, &stored)).await;
                Some(node)
            }
            Err(err) => {
                tracing::warn!(%err, "registering the node failed; running from the local cache");
                let name = config.node_name.clone();
                cache.run(move |c| c.object::<Node>("Node", "", &name)).await.ok().flatten()
            }
        };
        tracing::info!(registered = node.is_some(), "node registration done");
        let pod_cidr = node
            .as_ref()
            .and_then(|n| n.spec.as_ref()?.pod_cidr.as_deref()?.parse::<Ipv4Net>().ok())
            .unwrap_or(config.pod_cidr);

        let (hook, network): (Arc<dyn SandboxNetwork>, Option<Arc<PodNetwork>>) =
            if config.networking {
                let mut net_cfg = NetworkConfig::new(pod_cidr, node_ip, data_dir.join("network"));
                net_cfg.cluster_cidr = config.cluster_cidr;
                let network = Arc::new(
                    PodNetwork::new(net_cfg)
                        .await
                        .map_err(|e| start_err("pod network")(e.to_string()))?,
                );
                let hook = PodNetworkHook::new(network.clone(), tokio::runtime::Handle::current());
                (Arc::new(hook), Some(network))
            } else {
                (Arc::new(LoopbackOnly), None)
            };
        let runtime_config = RuntimeConfig {
            state_dir: data_dir.join("runtime"),
            monitor: MonitorCommand {
                exe: config.monitor_exe.clone(),
                args: config.monitor_args.clone(),
            },
            cgroup_root: config.cgroup_root.clone(),
            network: hook,
        };
        tracing::info!("pod network ready; opening the runtime");
        let runtime = tokio::task::spawn_blocking(move || Runtime::open(runtime_config))
            .await
            .map_err(|e| start_err("runtime")(e.to_string()))?
            .map_err(|e| start_err("runtime")(e.to_string()))?;
        let runtime = Arc::new(runtime);
        tracing::info!(
            node = %config.node_name, %node_ip, %pod_cidr,
            containers = runtime.list_containers().len(),
            "agent started"
        );

        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        if let Some(network) = &network {
            tasks.extend(
                crate::networking::start(
                    &client,
                    &config,
                    network.clone(),
                    node_ip,
                    stop_rx.clone(),
                )
                .await?,
            );
        }

        let host_resolv = ResolvConf::read(&config.resolv_conf).unwrap_or_else(|err| {
            tracing::warn!(%err, "reading the host resolv.conf");
            ResolvConf::parse("")
        });
        let ctx = Arc::new(PodContext {
            runtime,
            images,
            registry_config: registry_config(),
            client: client.clone(),
            cache: cache.clone(),
            status: StatusWriter::start(client.clone()),
            events: EventRecorder::start(client.clone(), &config.node_name),
            objects: Arc::new(ApiObjects::new(client.clone(), cache.clone())),
            volumes: crate::volumes::VolumeManager::new(data_dir.join("pods")),
            node_ip,
            node_name: config.node_name.clone(),
            data_dir: data_dir.clone(),
            dns: ClusterDnsSettings {
                cluster_dns: vec![config.cluster_dns],
                cluster_domain: config.cluster_domain.clone(),
            },
            host_resolv,
            probes: Mutex::new(Default::default()),
            evictions: crate::eviction::Evictions::default(),
            pressure: admission_pressure,
        });
        // The tunnel carries kubectl's logs/exec/port-forward to this node; a kubeconfig without
        // a client certificate (a token) only loses those, not the pods.
        match crate::credentials::tunnel_config(
            &config.kubeconfig,
            config.server.as_deref(),
            &data_dir,
        ) {
            Ok(tunnel) => {
                let lookup = Arc::new(CachedPodLookup::new(cache.clone(), ctx.runtime.clone()));
                let mut stop = stop_rx.clone();
                tasks.push(tokio::spawn(crate::tunnel::run_tunnel(
                    tunnel,
                    lookup,
                    ctx.runtime.clone(),
                    async move {
                        let _ = stop.wait_for(|s| *s).await;
                    },
                )));
            }
            Err(err) => {
                tracing::warn!(%err, "no tunnel: kubectl logs, exec and port-forward will not reach this node")
            }
        }
        let eviction = crate::eviction::EvictionManager::new(
            ctx.clone(),
            config.eviction.clone(),
            pressure_tx,
        );
        tasks.push(tokio::spawn(eviction.run(stop_rx.clone())));
        tasks.push(tokio::spawn(PodManager::new(ctx).run(stop_rx.clone())));
        tasks.push(tokio::spawn(crate::local_path::run(
            client.clone(),
            config.node_name.clone(),
            config.local_storage_path.clone(),
            cache.clone(),
            stop_rx.clone(),
        )));
        tasks.push(tokio::spawn(crate::cert_renewal::run(config.clone(), api, stop_rx.clone())));
        tasks.push(tokio::spawn(node::heartbeat(client, config.clone(), measure, stop_rx.clone())));
        shutdown.await;
        tracing::info!("agent stopping (containers keep running)");
        let _ = stop_tx.send(true);
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        Ok(())
    }
}

/// The address of the route towards the API server (or the default route); 127.0.0.1 when
/// there is none.
fn detect_node_ip(config: &AgentConfig) -> Ipv4Addr {
    let server_host = config
        .server
        .clone()
        .or_else(|| {
            let text = std::fs::read_to_string(&config.kubeconfig).ok()?;
            text.lines().find_map(|l| l.trim().strip_prefix("server: ").map(str::to_string))
        })
        .and_then(|url| {
            let rest = url.split("://").nth(1)?.to_string();
            let host = rest.split('/').next()?.rsplit_once(':').map(|(h, _)| h.to_string())?;
            host.parse::<Ipv4Addr>().ok()
        });
    let probe = |target: Ipv4Addr| -> Option<Ipv4Addr> {
        // connect() on UDP sends nothing: it only asks the kernel for the route's source.
        let socket = UdpSocket::bind("0.0.0.0:0").ok()?;
        socket.connect((target, 53)).ok()?;
        match socket.local_addr().ok()?.ip() {
            IpAddr::V4(ip) if !ip.is_unspecified() => Some(ip),
            _ => None,
        }
    };
    server_host
        .filter(|h| !h.is_loopback())
        .and_then(probe)
        .or_else(|| probe(Ipv4Addr::new(192, 0, 2, 1)))
        .unwrap_or(Ipv4Addr::LOCALHOST)
}

/// `/etc/skerry/registries.yaml`, when present.
fn registry_config() -> Option<Arc<skerry_images::RegistryConfig>> {
    let path = Path::new("/etc/skerry/registries.yaml");
    if !path.exists() {
        return None;
    }
    match skerry_images::RegistryConfig::load(path) {
        Ok(c) => Some(Arc::new(c)),
        Err(err) => {
            tracing::warn!(%err, "ignoring /etc/skerry/registries.yaml");
            None
        }
    }
}

/// The node's measurements now, with the eviction manager's pressure conditions.
fn measure(
    data_dir: &Path,
    images: &skerry_images::ImageStore,
    node_ip: Ipv4Addr,
    pressure: node::facts::Pressure,
) -> NodeFacts {
    let images = images
        .list()
        .unwrap_or_default()
        .into_iter()
        .map(|i| {
            let repo = i
                .name
                .rsplit_once(':')
                .filter(|(_, t)| !t.contains('/'))
                .map_or(i.name.as_str(), |(r, _)| r);
            (vec![format!("{repo}@{}", i.digest), i.name.clone()], i.size)
        })
        .collect();
    NodeFacts { capacity: node::facts::capacity(data_dir), pressure, images, node_ip }
}
