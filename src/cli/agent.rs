//! `skerry agent`: the node agent. Flags (and the same keys in `/etc/skerry/config.yaml`, or
//! the file given with `--config`) become an [`AgentConfig`]; flags win over the file.
//! `--cleanup` removes what the agent made on this node instead of running it.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use skerry_agent::config::{self, ConfigFile};
use skerry_agent::AgentConfig;

/// The default config file.
const DEFAULT_CONFIG: &str = "/etc/skerry/config.yaml";

/// Arguments of `skerry agent` (names follow k3s where they overlap).
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// The API server, `https://HOST:6443` (default: the kubeconfig's).
    #[arg(long)]
    pub server: Option<String>,
    /// Kubeconfig with this node's credentials (default: DATA_DIR/kubeconfig, written when
    /// joining with --token).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The join token (`DATA_DIR/server/node-token` on the server, or `skerry token create`).
    #[arg(long, env = "SKERRY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The Node's name (default: the hostname).
    #[arg(long)]
    pub node_name: Option<String>,
    /// The node's IPv4 address (default: the source address of the route to the server).
    #[arg(long)]
    pub node_ip: Option<Ipv4Addr>,
    /// A Node label, `KEY=VALUE` (repeatable).
    #[arg(long = "node-label")]
    pub node_label: Vec<String>,
    /// A Node taint, `KEY[=VALUE]:EFFECT` (repeatable).
    #[arg(long = "node-taint")]
    pub node_taint: Vec<String>,
    /// Where the agent keeps containers, images, its cache and pod files.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Resources held back from pods, e.g. `cpu=500m,memory=256Mi`.
    #[arg(long)]
    pub system_reserved: Option<String>,
    /// The cluster DNS address pods get (and the node-local DNS answers on).
    #[arg(long)]
    pub cluster_dns: Option<IpAddr>,
    /// The cluster domain.
    #[arg(long)]
    pub cluster_domain: Option<String>,
    /// This node's pod CIDR when the Node has no `spec.podCIDR`.
    #[arg(long)]
    pub pod_cidr: Option<String>,
    /// The cluster's pod CIDR.
    #[arg(long)]
    pub cluster_cidr: Option<String>,
    /// The top cgroup of this agent's pods.
    #[arg(long, env = "SKERRY_CGROUP_ROOT")]
    pub cgroup_root: Option<String>,
    /// Node-pressure eviction and image garbage collection.
    #[command(flatten)]
    pub eviction: super::eviction::EvictionArgs,
    /// Where the local-path provisioner puts this node's volumes (the server's
    /// `--default-local-storage-path`); the agent removes a deleted volume's directory there.
    #[arg(long)]
    pub default_local_storage_path: Option<PathBuf>,
    /// The validity this node asks for its client certificate (e.g. `24h`, `30d`; at least
    /// `10m`); the agent renews it at 70–90 % of its lifetime. Default: the signer's (a year).
    #[arg(long, env = "SKERRY_CLIENT_CERT_DURATION")]
    pub client_cert_duration: Option<String>,
    /// Renew the client certificate at this fraction of its lifetime (tests).
    #[arg(long, env = "SKERRY_CERT_RENEWAL_FRACTION", hide = true)]
    pub cert_renewal_fraction: Option<String>,
    /// The config file (default /etc/skerry/config.yaml, if it exists).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Remove every container, sandbox, network device, nftables table and state file the
    /// agent made, then exit.
    #[arg(long)]
    pub cleanup: bool,
}

/// Merges flags over the config file into an [`AgentConfig`].
pub fn agent_config(args: AgentArgs) -> anyhow::Result<(AgentConfig, bool)> {
    let (path, required) = match &args.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    let file = ConfigFile::load(&path, required)?;
    let token = args.token.or(file.token);
    if args.server.is_none()
        && file.server.is_none()
        && args.kubeconfig.is_none()
        && file.kubeconfig.is_none()
        && !args.cleanup
    {
        bail!("give --server and --token, or --kubeconfig (or set them in {})", path.display());
    }
    if token.is_some() && args.server.is_none() && file.server.is_none() {
        bail!("--token needs --server https://HOST:6443");
    }
    if let Some(t) = &token {
        skerry_agent::join::JoinToken::parse(t).context("--token")?;
    }
    let data_dir =
        args.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from("/var/lib/skerry/agent"));
    let kubeconfig =
        args.kubeconfig.or(file.kubeconfig).unwrap_or_else(|| data_dir.join("kubeconfig"));
    let node_name = args.node_name.or(file.node_name).unwrap_or_else(config::hostname);
    let mut cfg = AgentConfig::new(&node_name, kubeconfig, data_dir);
    cfg.server = args.server.or(file.server);
    cfg.token = token;
    cfg.node_ip = args.node_ip.or(file.node_ip);
    let labels = if args.node_label.is_empty() { file.node_label } else { args.node_label };
    for l in labels {
        let (k, v) = config::parse_label(&l)?;
        cfg.node_labels.insert(k, v);
    }
    let taints = if args.node_taint.is_empty() { file.node_taint } else { args.node_taint };
    for t in taints {
        cfg.node_taints.push(config::parse_taint(&t)?);
    }
    if let Some(r) = args.system_reserved.or(file.system_reserved) {
        cfg.system_reserved = config::parse_reserved(&r)?;
    }
    if let Some(dns) = args.cluster_dns.or(file.cluster_dns) {
        cfg.cluster_dns = dns;
    }
    if let Some(domain) = args.cluster_domain.or(file.cluster_domain) {
        cfg.cluster_domain = domain;
    }
    if let Some(c) = args.pod_cidr.or(file.pod_cidr) {
        cfg.pod_cidr = c.parse().with_context(|| format!("--pod-cidr {c:?}"))?;
    }
    if let Some(c) = args.cluster_cidr.or(file.cluster_cidr) {
        cfg.cluster_cidr = c.parse().with_context(|| format!("--cluster-cidr {c:?}"))?;
    }
    if let Some(path) = args.default_local_storage_path.or(file.default_local_storage_path) {
        cfg.local_storage_path = path;
    }
    if let Some(d) = args.client_cert_duration.or(file.client_cert_duration) {
        cfg.client_cert_duration = Some(config::parse_cert_duration(&d)?);
    }
    if let Some(f) = args.cert_renewal_fraction {
        cfg.cert_renewal_fraction = Some(config::parse_renewal_fraction(&f)?);
    }
    if let Some(root) = args.cgroup_root {
        cfg.cgroup_root = root;
    }
    let from_file = super::eviction::EvictionArgs {
        eviction_hard: file.eviction_hard,
        eviction_pressure_transition_period: file.eviction_pressure_transition_period,
        eviction_soft: file.eviction_soft,
        eviction_soft_grace_period: file.eviction_soft_grace_period,
        eviction_max_pod_grace_period: file.eviction_max_pod_grace_period,
        image_gc_high_threshold: file.image_gc_high_threshold,
        image_gc_low_threshold: file.image_gc_low_threshold,
        minimum_image_gc_age: file.minimum_image_gc_age,
    };
    args.eviction.or(from_file).apply(&mut cfg.eviction)?;
    cfg.monitor_exe = std::env::current_exe().context("finding the skerry binary")?;
    Ok((cfg, args.cleanup))
}

/// Runs the agent until SIGTERM or SIGINT (or cleans up with `--cleanup`).
pub fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    let (cfg, cleanup) = agent_config(args)?;
    if !skerry_runtime::terminal::running_as_root() {
        bail!(
            "skerry agent needs root (it creates namespaces, cgroups, mounts and network devices)"
        );
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        if cleanup {
            let report = skerry_agent::cleanup::cleanup(&cfg).await;
            println!(
                "removed {} containers and {} pod sandboxes",
                report.containers, report.sandboxes
            );
            for e in &report.errors {
                eprintln!("skerry: cleanup: {e}");
            }
            if !report.errors.is_empty() {
                bail!("cleanup finished with {} errors", report.errors.len());
            }
            return Ok(());
        }
        skerry_agent::Agent::run(cfg, super::shutdown_signal()).await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
