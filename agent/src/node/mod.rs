//! The agent's Node: registration (capacity, allocatable, nodeInfo, addresses, labels, taints,
//! images), the heartbeat Lease in `kube-node-lease` (every 10 s) and the NodeStatus (on a
//! change of a condition, or every 5 minutes), as the kubelet does. All writes are patches, so
//! fields other writers own (the node controller's podCIDR, other labels) are kept.

pub mod facts;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    ContainerImage, Namespace, Node, NodeAddress, NodeCondition, NodeSpec, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::sync::watch;

use crate::config::AgentConfig;
use facts::{Capacity, Pressure};

/// The Kubernetes version this agent implements (the API server reports the same).
pub const KUBELET_VERSION: &str = "v1.33.0+skerry";
/// How often the Lease is renewed.
pub const LEASE_RENEW: Duration = Duration::from_secs(10);
/// The Lease duration the node controller waits before calling the node unreachable.
pub const LEASE_DURATION_SECONDS: i32 = 40;
/// NodeStatus is written at least this often even without changes.
pub const STATUS_REPORT: Duration = Duration::from_secs(300);
/// The namespace of node Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// `skerry://<version>`, the Node's container runtime.
pub fn runtime_version() -> String {
    format!("skerry://{}", env!("CARGO_PKG_VERSION"))
}

fn quantity(v: impl ToString) -> Quantity {
    Quantity(v.to_string())
}

/// What the Node says about itself at one moment.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    /// The node's size.
    pub capacity: Capacity,
    /// The pressure conditions (from the eviction manager).
    pub pressure: Pressure,
    /// Image names present (with their digests).
    pub images: Vec<(Vec<String>, u64)>,
    /// The node address.
    pub node_ip: Ipv4Addr,
}

/// The standard labels plus the configured ones. Only labels a node may set on itself
/// (NodeRestriction): a server's `node-role.kubernetes.io/control-plane` is applied by the
/// control plane, not by the node's own credentials.
pub fn node_labels(cfg: &AgentConfig) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    labels.insert("kubernetes.io/arch".to_string(), facts::go_arch().to_string());
    labels.insert("kubernetes.io/os".to_string(), "linux".to_string());
    labels.insert("kubernetes.io/hostname".to_string(), cfg.node_name.clone());
    labels.insert("beta.kubernetes.io/arch".to_string(), facts::go_arch().to_string());
    labels.insert("beta.kubernetes.io/os".to_string(), "linux".to_string());
    labels.extend(cfg.node_labels.clone());
    labels
}

/// Capacity and allocatable (capacity minus system-reserved and the eviction thresholds).
pub fn resources(
    cfg: &AgentConfig,
    c: &Capacity,
) -> (BTreeMap<String, Quantity>, BTreeMap<String, Quantity>) {
    let r = cfg.system_reserved;
    let mut capacity = BTreeMap::new();
    capacity.insert("cpu".to_string(), quantity(c.cpus));
    capacity.insert("memory".to_string(), quantity(format!("{}Ki", c.memory_bytes / 1024)));
    capacity.insert("pods".to_string(), quantity(facts::MAX_PODS));
    capacity
        .insert("ephemeral-storage".to_string(), quantity(format!("{}Ki", c.disk_bytes / 1024)));
    let cpu = (c.cpus * 1000).saturating_sub(r.cpu_millis);
    let (memory_threshold, disk_threshold) = cfg.eviction.reservation(c.memory_bytes, c.disk_bytes);
    let memory = c.memory_bytes.saturating_sub(r.memory_bytes).saturating_sub(memory_threshold);
    let disk =
        c.disk_bytes.saturating_sub(r.ephemeral_storage_bytes).saturating_sub(disk_threshold);
    let mut allocatable = BTreeMap::new();
    allocatable.insert(
        "cpu".to_string(),
        quantity(if cpu.is_multiple_of(1000) {
            (cpu / 1000).to_string()
        } else {
            format!("{cpu}m")
        }),
    );
    allocatable.insert("memory".to_string(), quantity(format!("{}Ki", memory / 1024)));
    allocatable.insert("pods".to_string(), quantity(facts::MAX_PODS));
    allocatable.insert("ephemeral-storage".to_string(), quantity(disk.to_string()));
    (capacity, allocatable)
}

/// The condition statuses for the given pressure: (type, status, reason, message).
pub fn condition_values(p: &Pressure) -> Vec<(&'static str, bool, &'static str, &'static str)> {
    let flag = |bad: bool, yes, no, yes_msg, no_msg| {
        if bad {
            (true, yes, yes_msg)
        } else {
            (false, no, no_msg)
        }
    };
    let mem = flag(
        p.memory,
        "KubeletHasInsufficientMemory",
        "KubeletHasSufficientMemory",
        "kubelet has insufficient memory available",
        "kubelet has sufficient memory available",
    );
    let disk = flag(
        p.disk,
        "KubeletHasDiskPressure",
        "KubeletHasNoDiskPressure",
        "kubelet has disk pressure",
        "kubelet has no disk pressure",
    );
    let pid = flag(
        p.pids,
        "KubeletHasInsufficientPID",
        "KubeletHasSufficientPID",
        "kubelet has insufficient PID available",
        "kubelet has sufficient PID available",
    );
    vec![
        ("MemoryPressure", mem.0, mem.1, mem.2),
        ("DiskPressure", disk.0, disk.1, disk.2),
        ("PIDPressure", pid.0, pid.1, pid.2),
        ("Ready", true, "KubeletReady", "kubelet is posting ready status"),
    ]
}

/// The NodeStatus for `facts`; `previous` keeps lastTransitionTimes of unchanged conditions.
pub fn node_status(cfg: &AgentConfig, f: &NodeFacts, previous: Option<&NodeStatus>) -> NodeStatus {
    let now = Time(Timestamp::now());
    let (capacity, allocatable) = resources(cfg, &f.capacity);
    let old = previous.and_then(|s| s.conditions.as_ref());
    let conditions = condition_values(&f.pressure)
        .into_iter()
        .map(|(typ, status, reason, message)| {
            let status = if status { "True" } else { "False" }.to_string();
            let since = old
                .and_then(|cs| cs.iter().find(|c| c.type_ == typ && c.status == status))
                .and_then(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            NodeCondition {
                type_: typ.to_string(),
                status,
                reason: Some(reason.to_string()),
                message: Some(message.to_string()),
                last_heartbeat_time: Some(now.clone()),
                last_transition_time: Some(since),
            }
        })
        .collect();
    let machine = facts::machine_id();
    NodeStatus {
        capacity: Some(capacity),
        allocatable: Some(allocatable),
        conditions: Some(conditions),
        addresses: Some(vec![
            NodeAddress { type_: "InternalIP".into(), address: f.node_ip.to_string() },
            NodeAddress { type_: "Hostname".into(), address: cfg.node_name.clone() },
        ]),
        node_info: Some(NodeSystemInfo {
            architecture: facts::go_arch().into(),
            boot_id: facts::boot_id(),
            container_runtime_version: runtime_version(),
            kernel_version: facts::kernel_version(),
            kube_proxy_version: String::new(),
            kubelet_version: KUBELET_VERSION.into(),
            machine_id: machine.clone(),
            operating_system: "linux".into(),
            os_image: facts::os_image(),
            system_uuid: machine,
            swap: None,
        }),
        images: Some(
            f.images
                .iter()
                .map(|(names, size)| ContainerImage {
                    names: Some(names.clone()),
                    size_bytes: Some(*size as i64),
                })
                .collect(),
        ),
        ..Default::default()
    }
}

/// Whether two statuses differ in what forces an early report (conditions or capacity).
fn differs(a: &NodeStatus, b: &NodeStatus) -> bool {
    let conds = |s: &NodeStatus| {
        s.conditions
            .iter()
            .flatten()
            .map(|c| (c.type_.clone(), c.status.clone()))
            .collect::<Vec<_>>()
    };
    conds(a) != conds(b)
        || a.allocatable != b.allocatable
        || a.addresses != b.addresses
        || a.images.as_ref().map(Vec::len) != b.images.as_ref().map(Vec::len)
}

/// Creates the Node if it does not exist, otherwise merges our labels in; then writes the
/// status. Returns the Node as the server has it (with `spec.podCIDR` if allocated).
pub async fn register(
    client: &kube::Client,
    cfg: &AgentConfig,
    facts: &NodeFacts,
) -> Result<Node, kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let labels = node_labels(cfg);
    let status = node_status(cfg, facts, None);
    match nodes.get_opt(&cfg.node_name).await? {
        None => {
            let node = Node {
                metadata: ObjectMeta {
                    name: Some(cfg.node_name.clone()),
                    labels: Some(labels),
                    ..Default::default()
                },
                spec: Some(NodeSpec {
                    taints: (!cfg.node_taints.is_empty()).then(|| cfg.node_taints.clone()),
                    ..Default::default()
                }),
                status: Some(status.clone()),
            };
            match nodes.create(&PostParams::default(), &node).await {
                Ok(_) => {}
                // Another instance of us won the race: fine, the patches below apply.
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
        Some(_) => {
            let patch = serde_json::json!({"metadata": {"labels": labels}});
            nodes.patch(&cfg.node_name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        }
    }
    let patch = serde_json::json!({ "status": status });
    nodes.patch_status(&cfg.node_name, &PatchParams::default(), &Patch::Merge(&patch)).await
}

/// The Node once the node IPAM controller has given it `spec.podCIDR` (as the kubelet, the
/// pod network waits for it); `None` after `limit`, for clusters that assign none.
pub async fn wait_for_pod_cidr(
    client: &kube::Client,
    node: &Node,
    limit: std::time::Duration,
) -> Option<Node> {
    let has_cidr = |n: &Node| n.spec.as_ref().and_then(|s| s.pod_cidr.as_ref()).is_some();
    if has_cidr(node) {
        return Some(node.clone());
    }
    let nodes: Api<Node> = Api::all(client.clone());
    let name = node.metadata.name.clone().unwrap_or_default();
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        if let Ok(Some(n)) = nodes.get_opt(&name).await {
            if has_cidr(&n) {
                return Some(n);
            }
        }
    }
    None
}

/// Renews the Lease (creating it, and its namespace, when missing).
pub async fn renew_lease(client: &kube::Client, node: &str) -> Result<(), kube::Error> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let now = MicroTime(Timestamp::now());
    let spec = LeaseSpec {
        holder_identity: Some(node.to_string()),
        lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
        renew_time: Some(now),
        ..Default::default()
    };
    let patch = serde_json::json!({ "spec": spec });
    match leases.patch(node, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(node.to_string()), ..Default::default() },
                spec: Some(spec),
            };
            match leases.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    // The namespace itself is missing (a server without its bootstrap objects).
                    let ns: Api<Namespace> = Api::all(client.clone());
                    let object = Namespace {
                        metadata: ObjectMeta {
                            name: Some(LEASE_NAMESPACE.into()),
                            ..Default::default()
                        },
                        ..Default::default()
                    };
                    let _ = ns.create(&PostParams::default(), &object).await;
                    leases.create(&PostParams::default(), &lease).await.map(|_| ())
                }
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// The heartbeat: Lease every 10 s, NodeStatus on change or every 5 minutes. Errors (the server
/// being away) are logged and retried on the next tick; nothing here stops pods.
pub async fn heartbeat(
    client: kube::Client,
    cfg: AgentConfig,
    measure: impl Fn() -> NodeFacts + Send,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last_sent: Option<NodeStatus> = None;
    let mut last_report = Instant::now();
    let mut tick = tokio::time::interval(LEASE_RENEW);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if let Err(err) = renew_lease(&client, &cfg.node_name).await {
            tracing::warn!(%err, "renewing the node lease");
        }
        let status = node_status(&cfg, &measure(), last_sent.as_ref());
        let due = last_sent.as_ref().is_none_or(|prev| differs(prev, &status))
            || last_report.elapsed() >= STATUS_REPORT;
        if !due {
            continue;
        }
        let nodes: Api<Node> = Api::all(client.clone());
        let patch = serde_json::json!({ "status": status });
        match nodes
            .patch_status(&cfg.node_name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                last_sent = Some(status);
                last_report = Instant::now();
            }
            Err(err) => tracing::warn!(%err, "reporting the node status"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn cfg() -> AgentConfig {
        let mut cfg = AgentConfig::new("n1", PathBuf::from("/k"), PathBuf::from("/d"));
        cfg.system_reserved.cpu_millis = 500;
        cfg.system_reserved.memory_bytes = 100 << 20;
        cfg.node_labels.insert("zone".into(), "a".into());
        cfg
    }

    #[test]
    fn allocatable_is_capacity_minus_reserved_and_eviction_thresholds() {
        let c = Capacity { cpus: 2, memory_bytes: 1 << 30, disk_bytes: 1000 * 1024 };
        let (cap, alloc) = resources(&cfg(), &c);
        assert_eq!(cap["cpu"].0, "2");
        assert_eq!(cap["memory"].0, "1048576Ki");
        assert_eq!(alloc["cpu"].0, "1500m");
        assert_eq!(alloc["memory"].0, format!("{}Ki", ((1u64 << 30) - (200 << 20)) / 1024));
        assert_eq!(alloc["pods"].0, "110");
    }

    #[test]
    fn labels_and_conditions_follow_the_kubelet() {
        let labels = node_labels(&cfg());
        assert_eq!(labels["kubernetes.io/hostname"], "n1");
        assert_eq!(labels["kubernetes.io/os"], "linux");
        assert_eq!(labels["zone"], "a");
        let facts = NodeFacts {
            capacity: Capacity { cpus: 1, memory_bytes: 1 << 30, disk_bytes: 1 << 30 },
            pressure: Pressure { memory: true, disk: false, pids: false },
            images: vec![(vec!["busybox@sha256:x".into(), "busybox:1".into()], 10)],
            node_ip: Ipv4Addr::new(10, 0, 0, 1),
        };
        let s = node_status(&cfg(), &facts, None);
        let conds = s.conditions.clone().unwrap();
        let mem = conds.iter().find(|c| c.type_ == "MemoryPressure").unwrap();
        assert_eq!(
            (mem.status.as_str(), mem.reason.as_deref()),
            ("True", Some("KubeletHasInsufficientMemory"))
        );
        assert!(conds.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let info = s.node_info.clone().unwrap();
        assert!(info.container_runtime_version.starts_with("skerry://"));
        assert_eq!(info.kubelet_version, KUBELET_VERSION);
        // An unchanged condition keeps its transition time.
        let again = node_status(&cfg(), &facts, Some(&s));
        let t = |s: &NodeStatus| s.conditions.as_ref().unwrap()[0].last_transition_time.clone();
        assert_eq!(t(&again), t(&s));
        assert!(!differs(&s, &again));
    }
}
