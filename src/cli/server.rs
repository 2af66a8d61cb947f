//! `skerry server`: the control plane. Today the API server over the store (embedded SQLite in
//! the data directory, or an etcd cluster with `--datastore-endpoint`); the scheduler,
//! controllers and the local agent join in later parts.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use skerry_control::apiserver::serve::{self, ServerOptions};
use skerry_control::apiserver::serviceaccount::ServiceAccountConfig;
use skerry_control::apiserver::ApiConfig;
use skerry_control::controllers::{self, ControlPlaneOptions, ControllerOptions};
use skerry_control::store::config::{self as store_config, StoreConfig};
use skerry_control::store::sqlite::{AutoCompaction, SqliteOptions};

/// Arguments of `skerry server` (names follow k3s where they overlap).
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// Directory for the database, certificates and `admin.kubeconfig`.
    #[arg(long, default_value = "/var/lib/skerry/server")]
    pub data_dir: PathBuf,
    /// HTTPS port of the API server.
    #[arg(long, default_value_t = 6443)]
    pub https_listen_port: u16,
    /// Address the API server listens on.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// Address advertised to cluster members (the `kubernetes` endpoints); default: the bind
    /// address, or 127.0.0.1 when that is unspecified.
    #[arg(long)]
    pub advertise_address: Option<IpAddr>,
    /// Extra hostname or IP for the serving certificate (repeatable).
    #[arg(long = "tls-san")]
    pub tls_san: Vec<String>,
    /// Run the control plane without the local node agent.
    #[arg(long)]
    pub disable_agent: bool,
    /// The local agent's Node name (default: the hostname).
    #[arg(long)]
    pub node_name: Option<String>,
    /// The local agent's node address (default: the source address of the default route).
    #[arg(long)]
    pub node_ip: Option<Ipv4Addr>,
    /// The top cgroup of the local agent's pods (one per data dir).
    #[arg(long, env = "SKERRY_CGROUP_ROOT", default_value = "kubepods")]
    pub cgroup_root: String,
    /// Node-pressure eviction and image garbage collection.
    #[command(flatten)]
    pub eviction: super::eviction::EvictionArgs,
    /// Static bearer tokens: CSV of `token,user,uid[,"group1,group2"]`.
    #[arg(long)]
    pub token_auth_file: Option<PathBuf>,
    /// Write the audit log here: JSON lines of `audit.k8s.io/v1` Events.
    #[arg(long)]
    pub audit_log_path: Option<PathBuf>,
    /// The audit policy (`audit.k8s.io/v1` Policy); default: every request at Metadata.
    #[arg(long)]
    pub audit_policy_file: Option<PathBuf>,
    /// Start a new audit log file past this many megabytes (0: the reference's 100).
    #[arg(long, default_value_t = 0)]
    pub audit_log_maxsize: u64,
    /// Old audit log files kept, `audit-<time>.log` beside the log (0: all).
    #[arg(long, default_value_t = 0)]
    pub audit_log_maxbackup: usize,
    /// Days old audit log files are kept, by the time in their names (0: forever).
    #[arg(long, default_value_t = 0)]
    pub audit_log_maxage: u64,
    /// Range of Service ClusterIPs.
    #[arg(long, default_value = "10.43.0.0/16")]
    pub service_cidr: String,
    /// Range of NodePorts, `FIRST-LAST`.
    #[arg(long, default_value = "30000-32767")]
    pub service_node_port_range: String,
    /// etcd endpoints (comma-separated `https://host:2379`) instead of the embedded SQLite.
    #[arg(long)]
    pub datastore_endpoint: Option<String>,
    /// CA certificate for the etcd endpoints.
    #[arg(long)]
    pub datastore_cafile: Option<PathBuf>,
    /// Client certificate for the etcd endpoints.
    #[arg(long)]
    pub datastore_certfile: Option<PathBuf>,
    /// Client key for the etcd endpoints.
    #[arg(long)]
    pub datastore_keyfile: Option<PathBuf>,
    /// How often the store's history is compacted (`5m`, `30s`, `1h`; `0` = never).
    #[arg(long, default_value = "5m")]
    pub etcd_compaction_interval: String,
    /// Encrypt Secrets at rest (AES-GCM, keys in `DATA_DIR/server/encryption-config.json`,
    /// created on first use; `skerry secrets-encrypt rotate` adds a key).
    #[arg(long)]
    pub secrets_encryption: bool,
    /// Mutating requests served at once before 429 Too Many Requests.
    #[arg(long, default_value_t = 200)]
    pub max_mutating_requests_inflight: usize,
    /// Read-only requests served at once before 429 Too Many Requests.
    #[arg(long, default_value_t = 400)]
    pub max_requests_inflight: usize,
    /// Do not run the scheduler.
    #[arg(long)]
    pub disable_scheduler: bool,
    /// Controllers not to run (comma-separated names, e.g. `deployment,job`).
    #[arg(long, value_delimiter = ',')]
    pub disable_controllers: Vec<String>,
    /// Pod network of the cluster; each node gets a /24 of it as `spec.podCIDR`.
    #[arg(long, default_value = "10.42.0.0/16")]
    pub cluster_cidr: String,
    /// How long a node's Lease may go unrenewed before it is marked Ready=Unknown (`40s`).
    #[arg(long, default_value = "40s")]
    pub node_monitor_grace_period: String,
    /// Terminated pods kept before the oldest are garbage collected (`0`: keep them all).
    #[arg(long, default_value_t = 12500)]
    pub terminated_pod_gc_threshold: usize,
    /// How long a node may be missing before its pods are garbage collected (tests shorten it).
    #[arg(long, default_value = "40s", hide = true)]
    pub pod_gc_orphan_quarantine: String,
    /// Where the local-path provisioner puts volumes on their node.
    #[arg(long, default_value = "/var/lib/skerry/storage")]
    pub default_local_storage_path: PathBuf,
    /// The `iss` of service account tokens (and of the OIDC discovery document).
    #[arg(long, default_value = skerry_control::apiserver::serviceaccount::DEFAULT_ISSUER)]
    pub service_account_issuer: String,
    /// Audiences of the API (comma-separated); default: the service account issuer.
    #[arg(long, value_delimiter = ',')]
    pub api_audiences: Vec<String>,
    /// Longest lifetime of a requested service account token (`0`: no cap; e.g. `24h`).
    #[arg(long, default_value = "0")]
    pub service_account_max_token_expiration: String,
}

fn parse_cidr(s: &str) -> anyhow::Result<(Ipv4Addr, u8)> {
    let (ip, prefix) = s.split_once('/').context("expected ADDRESS/PREFIX")?;
    let ip: Ipv4Addr = ip.parse().context("not an IPv4 address")?;
    let prefix: u8 = prefix.parse().context("bad prefix length")?;
    if !(8..=30).contains(&prefix) {
        bail!("prefix length must be between 8 and 30");
    }
    Ok((ip, prefix))
}

fn parse_port_range(s: &str) -> anyhow::Result<(u16, u16)> {
    let (a, b) = s.split_once('-').context("expected FIRST-LAST")?;
    let (a, b): (u16, u16) = (a.trim().parse()?, b.trim().parse()?);
    if a == 0 || a > b {
        bail!("FIRST must be positive and not above LAST");
    }
    Ok((a, b))
}

/// `0`, or a number with `s`, `m` or `h`.
pub(super) fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let (num, unit) = s.split_at(s.len().saturating_sub(1));
    let n: u64 = num.parse().context("expected e.g. 30s, 5m or 1h")?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => bail!("expected e.g. 30s, 5m or 1h"),
    };
    Ok(Duration::from_secs(secs))
}

/// The scheduler and controller settings from the flags.
fn control_plane_options(args: &ServerArgs) -> anyhow::Result<ControlPlaneOptions> {
    let cluster_cidr = parse_cidr(&args.cluster_cidr)
        .with_context(|| format!("--cluster-cidr {:?}", args.cluster_cidr))?;
    if cluster_cidr.1 > 24 {
        bail!("--cluster-cidr {:?}: must hold at least one /24 per node", args.cluster_cidr);
    }
    let grace = parse_duration(&args.node_monitor_grace_period).with_context(|| {
        format!("--node-monitor-grace-period {:?}", args.node_monitor_grace_period)
    })?;
    if grace.is_zero() {
        bail!("--node-monitor-grace-period must be positive");
    }
    Ok(ControlPlaneOptions {
        disable_scheduler: args.disable_scheduler,
        disabled_controllers: args.disable_controllers.clone(),
        controllers: ControllerOptions {
            cluster_cidr,
            node_monitor_grace_period: grace,
            terminated_pod_gc_threshold: args.terminated_pod_gc_threshold,
            pod_gc_quarantine: parse_duration(&args.pod_gc_orphan_quarantine)
                .context("--pod-gc-orphan-quarantine")?,
            local_storage_path: args.default_local_storage_path.clone(),
            ..ControllerOptions::default()
        },
    })
}

/// Parses the arguments, starts the API server and serves until SIGTERM or SIGINT.
pub fn run(args: ServerArgs) -> anyhow::Result<ExitCode> {
    let service_cidr = parse_cidr(&args.service_cidr)
        .with_context(|| format!("--service-cidr {:?}", args.service_cidr))?;
    let node_port_range = parse_port_range(&args.service_node_port_range)
        .with_context(|| format!("--service-node-port-range {:?}", args.service_node_port_range))?;
    let interval = parse_duration(&args.etcd_compaction_interval).with_context(|| {
        format!("--etcd-compaction-interval {:?}", args.etcd_compaction_interval)
    })?;
    // Like the reference apiserver: every interval, compact to where the store was one
    // interval earlier.
    let compaction = if interval.is_zero() {
        AutoCompaction::Disabled
    } else {
        AutoCompaction::Periodic { interval }
    };
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data directory {}", args.data_dir.display()))?;
    let store = match &args.datastore_endpoint {
        Some(endpoints) => StoreConfig::Etcd {
            endpoints: endpoints
                .split(',')
                .map(|e| e.trim().to_string())
                .filter(|e| !e.is_empty())
                .collect(),
            ca_file: args.datastore_cafile.clone(),
            cert_file: args.datastore_certfile.clone(),
            key_file: args.datastore_keyfile.clone(),
        },
        None => StoreConfig::Sqlite {
            path: args.data_dir.join("state.db"),
            options: SqliteOptions { auto_compaction: compaction, ..SqliteOptions::default() },
        },
    };
    let mut control_plane = control_plane_options(&args)?;
    let max_token_expiration = parse_duration(&args.service_account_max_token_expiration)
        .with_context(|| {
            format!(
                "--service-account-max-token-expiration {:?}",
                args.service_account_max_token_expiration
            )
        })?
        .as_secs() as i64;
    let advertise = args.advertise_address.unwrap_or(if args.bind_address.is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        args.bind_address
    });
    let audit = match &args.audit_log_path {
        Some(path) => skerry_control::apiserver::audit::AuditConfig::open(
            path,
            args.audit_policy_file.as_deref(),
            skerry_control::apiserver::audit::rotation::Rotation::from_flags(
                args.audit_log_maxsize,
                args.audit_log_maxbackup,
                args.audit_log_maxage,
            ),
        )
        .context("--audit-log-path")?,
        None => Default::default(),
    };
    let options = ServerOptions {
        data_dir: args.data_dir.clone(),
        bind_address: args.bind_address,
        port: args.https_listen_port,
        tls_sans: args.tls_san.clone(),
        token_auth_file: args.token_auth_file.clone(),
        api: ApiConfig {
            service_cidr,
            node_port_range,
            max_mutating_in_flight: args.max_mutating_requests_inflight.max(1),
            max_readonly_in_flight: args.max_requests_inflight.max(1),
            advertise_address: advertise,
            secure_port: args.https_listen_port,
            // Filled in by `serve::start` from the cluster CA.
            ca_pem: String::new(),
            service_accounts: ServiceAccountConfig {
                issuer: args.service_account_issuer.clone(),
                api_audiences: args.api_audiences.clone(),
                max_token_expiration: (max_token_expiration > 0).then_some(max_token_expiration),
                // The controller manager runs alongside and makes the `default` accounts.
                admission: true,
                ..ServiceAccountConfig::default()
            },
            audit,
        },
    };
    if args.disable_agent {
        tracing::info!("--disable-agent: running the control plane only");
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let mut store = store_config::open(store).await.context("opening the store")?;
        if args.secrets_encryption {
            store = super::secrets_encrypt::encrypted_store(&args.data_dir, store).await?;
        }
        let started = serve::start(options, store).await?;
        // The CA exists once the server started; the certificate controller signs with it.
        let ca = skerry_control::pki::ClusterCa::load_or_create(&args.data_dir.join("tls"))
            .context("loading the cluster CA")?;
        control_plane.controllers.ca = Some(std::sync::Arc::new(ca));
        controllers::start(&started.server, control_plane)?;
        let (agent_stop, agent_stopped) = tokio::sync::watch::channel(false);
        let agent = if args.disable_agent {
            None
        } else {
            let cfg = embedded_agent_config(&args, started.addr.port())?;
            serve::label_control_plane_node(&started.server, &cfg.node_name);
            let mut stop = agent_stopped.clone();
            Some(tokio::spawn(async move {
                let shutdown = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                if let Err(err) = skerry_agent::Agent::run(cfg, shutdown).await {
                    tracing::error!(%err, "the local agent failed; the control plane keeps running");
                }
            }))
        };
        tracing::info!(addr = %started.addr, kubeconfig = %started.kubeconfig.display(), "skerry server ready");
        tokio::select! {
            _ = started.wait() => bail!("the API listener stopped"),
            _ = super::shutdown_signal() => {}
        }
        let _ = agent_stop.send(true);
        if let Some(agent) = agent {
            let _ = tokio::time::timeout(Duration::from_secs(10), agent).await;
        }
        tracing::info!("stopped");
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The embedded agent: a client certificate for `system:node:<name>` (group `system:nodes`)
/// signed by the cluster CA, `DATA_DIR/agent/kubeconfig` pointing at this server over HTTPS,
/// and the agent's data under `DATA_DIR/agent`. The agent talks to the server like any other
/// node; it does not link the control plane's internals.
fn embedded_agent_config(
    args: &ServerArgs,
    port: u16,
) -> anyhow::Result<skerry_agent::AgentConfig> {
    use skerry_control::pki;
    let node_name = args.node_name.clone().unwrap_or_else(skerry_agent::config::hostname);
    let agent_dir = args.data_dir.join("agent");
    std::fs::create_dir_all(&agent_dir)
        .with_context(|| format!("creating {}", agent_dir.display()))?;
    let tls_dir = args.data_dir.join("tls");
    let ca = pki::ClusterCa::load_or_create(&tls_dir).context("loading the cluster CA")?;
    let user = format!("system:node:{node_name}");
    let cert = pki::load_or_issue(&tls_dir, "node", &format!("{user}:system:nodes"), || {
        ca.issue_client(&user, Some("system:nodes"))
    })
    .context("issuing the node certificate")?;
    let kubeconfig = agent_dir.join("kubeconfig");
    let text = pki::kubeconfig(&format!("https://127.0.0.1:{port}"), &ca.cert_pem, &cert, &user);
    pki::write_private(&kubeconfig, &text).context("writing the agent kubeconfig")?;
    let mut cfg = skerry_agent::AgentConfig::new(&node_name, kubeconfig, agent_dir);
    cfg.node_ip = args.node_ip;
    cfg.control_plane = true;
    cfg.cgroup_root = args.cgroup_root.clone();
    args.eviction.apply(&mut cfg.eviction)?;
    cfg.cluster_cidr = args
        .cluster_cidr
        .parse()
        .with_context(|| format!("--cluster-cidr {:?}", args.cluster_cidr))?;
    cfg.monitor_exe = std::env::current_exe().context("finding the skerry binary")?;
    // Where the local-path provisioner puts this node's volumes, which the agent cleans up.
    cfg.local_storage_path = args.default_local_storage_path.clone();
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_and_port_range_flags() {
        assert_eq!(parse_cidr("10.43.0.0/16").unwrap(), (Ipv4Addr::new(10, 43, 0, 0), 16));
        assert!(parse_cidr("10.43.0.0").is_err());
        assert!(parse_cidr("10.43.0.0/31").is_err());
        assert_eq!(parse_port_range("30000-32767").unwrap(), (30000, 32767));
        assert!(parse_port_range("5-1").is_err());
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("5x").is_err());
    }
}
