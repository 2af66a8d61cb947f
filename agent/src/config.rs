//! `AgentConfig`: everything `Agent::run` needs, and the parsers for the values people type
//! (`--node-label k=v`, `--node-taint k=v:Effect`, `--system-reserved cpu=…,memory=…`) and for
//! `/etc/skerry/config.yaml` (the same keys as the flags, k3s-style). The CLI only parses flags
//! into this; the file is merged here so both front ends behave the same.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Taint;
use serde::Deserialize;

/// A configuration value that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A flag or config key has a malformed value.
    #[error("{key}: {message}")]
    Invalid {
        /// The flag or key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The config file could not be read or parsed.
    #[error("config file {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.to_string(), message: message.into() }
}

/// Resources kept back from pods (`--system-reserved`), in base units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reserved {
    /// CPU in millicores.
    pub cpu_millis: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Ephemeral storage in bytes.
    pub ephemeral_storage_bytes: u64,
}

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The API server URL (overrides the kubeconfig's `server:` when given).
    pub server: Option<String>,
    /// The kubeconfig with this node's credentials (written by the join when `token` is set).
    pub kubeconfig: PathBuf,
    /// A join token (`K10<ca hash>::<id>.<secret>`): used when `kubeconfig` does not exist yet.
    pub token: Option<String>,
    /// The Node's name (default: the hostname).
    pub node_name: String,
    /// The node's address (default: the address of the route to the server, else the first
    /// non-loopback address).
    pub node_ip: Option<Ipv4Addr>,
    /// Extra Node labels.
    pub node_labels: BTreeMap<String, String>,
    /// Node taints registered with the Node.
    pub node_taints: Vec<Taint>,
    /// Where the runtime, images, cache and pod files live.
    pub data_dir: PathBuf,
    /// Resources held back from pods.
    pub system_reserved: Reserved,
    /// The cluster DNS address pods are given (and the node-local DNS listens on).
    pub cluster_dns: IpAddr,
    /// The cluster domain.
    pub cluster_domain: String,
    /// The pod CIDR used when the Node has no `spec.podCIDR`.
    pub pod_cidr: Ipv4Net,
    /// The cluster-wide pod CIDR.
    pub cluster_cidr: Ipv4Net,
    /// The top cgroup of this agent's pods (one per data dir).
    pub cgroup_root: String,
    /// The program the runtime runs as the per-container monitor (this binary) and its leading
    /// arguments.
    pub monitor_exe: PathBuf,
    /// Leading arguments of the monitor program (`["ctr", "monitor"]`).
    pub monitor_args: Vec<String>,
    /// Whether this node also runs the control plane (the server, not the node, labels it
    /// `node-role…/control-plane`: NodeRestriction forbids nodes that label).
    pub control_plane: bool,
    /// The host resolv.conf pods with `dnsPolicy: Default` get and DNS forwards to.
    pub resolv_conf: PathBuf,
    /// Start the node-local cluster DNS, the service proxy and the pod network.
    pub networking: bool,
    /// Where the local-path provisioner puts this node's volumes: the only place whose
    /// `pvc-…` directories the agent removes when their volume is deleted.
    pub local_storage_path: PathBuf,
    /// Node-pressure eviction: hard thresholds and the pressure transition period.
    pub eviction: crate::eviction::EvictionConfig,
    /// The validity the node asks for its client certificate (`spec.expirationSeconds`);
    /// `None`: the signer's default.
    pub client_cert_duration: Option<Duration>,
    /// Renew the client certificate at this fraction of its lifetime instead of a random
    /// point in 70–90 % (tests).
    pub cert_renewal_fraction: Option<f64>,
}

impl AgentConfig {
    /// Defaults for a node named `node_name` with credentials in `kubeconfig`.
    pub fn new(node_name: &str, kubeconfig: PathBuf, data_dir: PathBuf) -> Self {
        AgentConfig {
            server: None,
            kubeconfig,
            token: None,
            node_name: node_name.to_string(),
            node_ip: None,
            node_labels: BTreeMap::new(),
            node_taints: Vec::new(),
            data_dir,
            system_reserved: Reserved::default(),
            cluster_dns: IpAddr::V4(Ipv4Addr::new(10, 43, 0, 10)),
            cluster_domain: "cluster.local".into(),
            pod_cidr: Ipv4Net::new(Ipv4Addr::new(10, 42, 0, 0), 24).expect("valid prefix"),
            cluster_cidr: Ipv4Net::new(Ipv4Addr::new(10, 42, 0, 0), 16).expect("valid prefix"),
            cgroup_root: "kubepods".into(),
            monitor_exe: PathBuf::from("/proc/self/exe"),
            monitor_args: vec!["ctr".into(), "monitor".into()],
            control_plane: false,
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            networking: true,
            local_storage_path: PathBuf::from("/var/lib/skerry/storage"),
            eviction: crate::eviction::EvictionConfig::default(),
            client_cert_duration: None,
            cert_renewal_fraction: None,
        }
    }
}

/// The node's hostname, lower-cased (a Node name is a DNS subdomain).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_ascii_lowercase())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Parses `key=value` (a Node label).
pub fn parse_label(s: &str) -> Result<(String, String), ConfigError> {
    let (k, v) = s.split_once('=').ok_or_else(|| invalid("node-label", "expected KEY=VALUE"))?;
    if k.trim().is_empty() {
        return Err(invalid("node-label", "empty key"));
    }
    Ok((k.trim().to_string(), v.trim().to_string()))
}

/// Parses `key[=value]:Effect` (a Node taint, as `kubectl taint`).
pub fn parse_taint(s: &str) -> Result<Taint, ConfigError> {
    let (kv, effect) =
        s.rsplit_once(':').ok_or_else(|| invalid("node-taint", "expected KEY=VALUE:EFFECT"))?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return Err(invalid(
            "node-taint",
            format!("effect {effect:?} is not NoSchedule, PreferNoSchedule or NoExecute"),
        ));
    }
    let (key, value) = match kv.split_once('=') {
        Some((k, v)) => (k, Some(v.to_string())),
        None => (kv, None),
    };
    if key.is_empty() {
        return Err(invalid("node-taint", "empty key"));
    }
    Ok(Taint { key: key.into(), value, effect: effect.into(), time_added: None })
}

/// Parses a Kubernetes quantity into base units (`500m` CPU → 0.5; `1Gi` → 2^30).
pub fn parse_quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(n * mult).filter(|v| v.is_finite() && *v >= 0.0)
}

/// Parses `cpu=500m,memory=256Mi,ephemeral-storage=1Gi`.
pub fn parse_reserved(s: &str) -> Result<Reserved, ConfigError> {
    let mut r = Reserved::default();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').ok_or_else(|| {
            invalid("system-reserved", format!("{part:?}: expected NAME=QUANTITY"))
        })?;
        let q = parse_quantity(v)
            .ok_or_else(|| invalid("system-reserved", format!("{v:?} is not a quantity")))?;
        match k {
            "cpu" => r.cpu_millis = (q * 1000.0).round() as u64,
            "memory" => r.memory_bytes = q as u64,
            "ephemeral-storage" => r.ephemeral_storage_bytes = q as u64,
            other => return Err(invalid("system-reserved", format!("unknown resource {other:?}"))),
        }
    }
    Ok(r)
}

/// The shortest certificate a signer issues (the reference's `spec.expirationSeconds` minimum).
pub const MIN_CERT_DURATION: Duration = Duration::from_secs(600);

/// Parses a client certificate validity: seconds, or a number with `s`, `m`, `h` or `d`; at
/// least ten minutes.
pub fn parse_cert_duration(s: &str) -> Result<Duration, ConfigError> {
    let key = "client-cert-duration";
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num.parse().map_err(|_| invalid(key, format!("{s:?}: expected e.g. 24h")))?;
    let secs = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => None,
    }
    .ok_or_else(|| invalid(key, format!("{s:?}: expected e.g. 600s, 90m, 24h or 30d")))?;
    let duration = Duration::from_secs(secs);
    if duration < MIN_CERT_DURATION {
        return Err(invalid(key, format!("{s:?}: at least 10m (the signers' minimum)")));
    }
    Ok(duration)
}

/// Parses the renewal fraction override: a number in (0, 1).
pub fn parse_renewal_fraction(s: &str) -> Result<f64, ConfigError> {
    let key = "cert-renewal-fraction";
    let f: f64 = s.trim().parse().map_err(|_| invalid(key, format!("{s:?} is not a number")))?;
    if !(f > 0.0 && f < 1.0) {
        return Err(invalid(key, format!("{s:?}: must lie between 0 and 1")));
    }
    Ok(f)
}

/// `/etc/skerry/config.yaml`: the flags' long names as keys (lists for repeatable flags).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ConfigFile {
    pub server: Option<String>,
    pub kubeconfig: Option<PathBuf>,
    pub token: Option<String>,
    pub node_name: Option<String>,
    pub node_ip: Option<Ipv4Addr>,
    #[serde(default)]
    pub node_label: Vec<String>,
    #[serde(default)]
    pub node_taint: Vec<String>,
    pub data_dir: Option<PathBuf>,
    pub system_reserved: Option<String>,
    pub cluster_dns: Option<IpAddr>,
    pub cluster_domain: Option<String>,
    pub pod_cidr: Option<String>,
    pub cluster_cidr: Option<String>,
    pub default_local_storage_path: Option<PathBuf>,
    pub eviction_hard: Option<String>,
    pub eviction_soft: Option<String>,
    pub eviction_soft_grace_period: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    pub eviction_max_pod_grace_period: Option<String>,
    pub eviction_pressure_transition_period: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    pub image_gc_high_threshold: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    pub image_gc_low_threshold: Option<String>,
    pub minimum_image_gc_age: Option<String>,
    pub client_cert_duration: Option<String>,
}

/// A key that reads as text whether YAML typed it as a number or a string (`30`, `"30"`).
fn scalar<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Integer(i64),
        Number(f64),
    }
    Ok(Option::<Scalar>::deserialize(d)?.map(|s| match s {
        Scalar::Text(t) => t,
        Scalar::Integer(i) => i.to_string(),
        Scalar::Number(n) => n.to_string(),
    }))
}

impl ConfigFile {
    /// Reads the file; a missing file at the default path is an empty config.
    pub fn load(path: &Path, required: bool) -> Result<ConfigFile, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(ConfigFile::default())
            }
            Err(e) => return Err(ConfigError::File { path: path.into(), message: e.to_string() }),
        };
        if text.trim().is_empty() {
            return Ok(ConfigFile::default());
        }
        serde_yaml::from_str(&text)
            .map_err(|e| ConfigError::File { path: path.into(), message: e.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_taints_and_reservations_parse_like_kubelet_flags() {
        assert_eq!(parse_label("zone=a").unwrap(), ("zone".into(), "a".into()));
        assert!(parse_label("zone").is_err());
        let t = parse_taint("dedicated=edge:NoSchedule").unwrap();
        assert_eq!(
            (t.key.as_str(), t.value.as_deref(), t.effect.as_str()),
            ("dedicated", Some("edge"), "NoSchedule")
        );
        assert!(parse_taint("gpu:NoExecute").unwrap().value.is_none());
        assert!(parse_taint("x=y:Sometimes").is_err());
        let r = parse_reserved("cpu=250m,memory=128Mi").unwrap();
        assert_eq!((r.cpu_millis, r.memory_bytes), (250, 128 << 20));
        assert!(parse_reserved("gpu=1").is_err());
        assert_eq!(parse_quantity("1.5Gi"), Some(1.5 * 1024.0 * 1024.0 * 1024.0));
    }

    #[test]
    fn certificate_durations_and_fractions_parse_and_short_ones_are_refused() {
        assert_eq!(parse_cert_duration("600").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_cert_duration("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_cert_duration("30d").unwrap(), Duration::from_secs(30 * 86_400));
        for bad in ["599s", "5m", "1y", "h", "-10m"] {
            assert!(parse_cert_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_renewal_fraction("0.05").unwrap(), 0.05);
        for bad in ["0", "1", "1.5", "x", "NaN"] {
            assert!(parse_renewal_fraction(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn config_file_uses_flag_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "node-name: pi1\nnode-label: [a=b]\ncluster-dns: 10.43.0.10\n")
            .unwrap();
        let f = ConfigFile::load(&path, true).unwrap();
        assert_eq!(f.node_name.as_deref(), Some("pi1"));
        assert_eq!(f.node_label, ["a=b"]);
        std::fs::write(
            &path,
            "eviction-soft: memory.available<1Gi\neviction-soft-grace-period: memory.available=1m\n\
             eviction-max-pod-grace-period: 30\nimage-gc-high-threshold: \"90\"\n\
             image-gc-low-threshold: 70\nminimum-image-gc-age: 5m\n",
        )
        .unwrap();
        let f = ConfigFile::load(&path, true).unwrap();
        assert_eq!(f.eviction_soft.as_deref(), Some("memory.available<1Gi"));
        assert_eq!(f.eviction_soft_grace_period.as_deref(), Some("memory.available=1m"));
        assert_eq!(f.eviction_max_pod_grace_period.as_deref(), Some("30"));
        assert_eq!(f.image_gc_high_threshold.as_deref(), Some("90"));
        assert_eq!(f.image_gc_low_threshold.as_deref(), Some("70"));
        assert_eq!(f.minimum_image_gc_age.as_deref(), Some("5m"));
        std::fs::write(&path, "nodename: x\n").unwrap();
        assert!(ConfigFile::load(&path, true).is_err());
        assert!(ConfigFile::load(&dir.path().join("none.yaml"), false).is_ok());
    }
}
