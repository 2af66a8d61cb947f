//! Plain-data descriptions of what to run: a pod sandbox, a container, its image config, its
//! resources and its security context. The agent maps Kubernetes objects onto these; the runtime
//! turns them into OCI runtime specs (see `oci`). Everything here is serialisable because it is
//! persisted in the state dir for re-adoption.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The pod's quality-of-service class: which `kubepods` sub-tree its cgroup lives in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QosClass {
    /// Every container has equal requests and limits.
    Guaranteed,
    /// Some requests or limits are set.
    Burstable,
    /// No requests or limits at all.
    #[default]
    BestEffort,
}

impl QosClass {
    /// The cgroup directory name for the class (guaranteed pods sit directly under the root).
    pub fn cgroup_dir(self) -> Option<&'static str> {
        match self {
            QosClass::Guaranteed => None,
            QosClass::Burstable => Some("burstable"),
            QosClass::BestEffort => Some("besteffort"),
        }
    }
}

/// A pod sandbox: the namespaces and files that a pod's containers share.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// Human name, unique among the runtime's sandboxes (e.g. `namespace_pod_uid_attempt`).
    pub name: String,
    /// The pod's UID (names the pod cgroup); defaults to the sandbox id.
    pub uid: Option<String>,
    /// The hostname the pod's containers see (ignored with `host_network`).
    pub hostname: String,
    /// Share the host's network namespace (`hostNetwork`).
    pub host_network: bool,
    /// Share the host's PID namespace (`hostPID`).
    pub host_pid: bool,
    /// Share the host's IPC namespace (`hostIPC`).
    pub host_ipc: bool,
    /// One PID namespace for all containers of the pod (`shareProcessNamespace`).
    pub share_process_namespace: bool,
    /// The pod's QoS class.
    pub qos: QosClass,
    /// Pod-level limits written to the pod cgroup.
    pub resources: Resources,
    /// Contents of the pod's /etc/resolv.conf; `None` copies the host's.
    pub resolv_conf: Option<String>,
    /// Extra /etc/hosts lines (`hostAliases`), after the localhost entries.
    pub extra_hosts: Vec<String>,
}

/// An image's runtime config (the OCI image config fields the runtime needs).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env` as `KEY=VALUE`.
    pub env: Vec<String>,
    /// `WorkingDir`.
    pub working_dir: Option<String>,
    /// `User`: `uid[:gid]` (names are not resolved: numeric only).
    pub user: Option<String>,
    /// `StopSignal`, e.g. `SIGQUIT` (default SIGTERM).
    pub stop_signal: Option<String>,
}

/// A bind mount handed over by the caller (volumes, secrets, …).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Mount {
    /// Path on the host.
    pub source: PathBuf,
    /// Path inside the container.
    pub destination: String,
    /// Mount read-only.
    pub read_only: bool,
}

/// Resource limits (a container's or a pod's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CPU shares (cgroup v1 units, 2..=262144; v2 converts to a weight).
    pub cpu_shares: Option<u64>,
    /// CPU quota in microseconds per `cpu_period`.
    pub cpu_quota: Option<i64>,
    /// CPU period in microseconds (default 100000).
    pub cpu_period: Option<u64>,
    /// Memory limit in bytes.
    pub memory_limit: Option<i64>,
    /// Maximum number of processes.
    pub pids_limit: Option<i64>,
}

impl Resources {
    /// A quota of `cpus` CPUs over the default period (e.g. 0.5 → 50000/100000).
    pub fn with_cpus(mut self, cpus: f64) -> Self {
        let period = self.cpu_period.unwrap_or(DEFAULT_CPU_PERIOD);
        self.cpu_period = Some(period);
        self.cpu_quota = Some((cpus * period as f64).round() as i64);
        self
    }
}

/// The CFS period used when none is given (Kubernetes' default).
pub const DEFAULT_CPU_PERIOD: u64 = 100_000;

/// The seccomp profile to apply (`seccompProfile`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeccompProfile {
    /// The runtime's default profile.
    #[default]
    RuntimeDefault,
    /// No filtering.
    Unconfined,
    /// An OCI `linux.seccomp` JSON document from this file.
    Localhost(PathBuf),
}

/// Which /proc paths are masked (`procMount`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProcMount {
    /// Mask and make read-only the usual paths.
    #[default]
    Default,
    /// Leave /proc as is.
    Unmasked,
}

/// A container's security context (the Kubernetes fields, as plain data).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SecurityContext {
    /// `runAsUser` (overrides the image's user).
    pub run_as_user: Option<u32>,
    /// `runAsGroup`.
    pub run_as_group: Option<u32>,
    /// `runAsNonRoot`: refuse to start as uid 0.
    pub run_as_non_root: bool,
    /// `supplementalGroups`.
    pub supplemental_groups: Vec<u32>,
    /// `readOnlyRootFilesystem`.
    pub read_only_root_filesystem: bool,
    /// `privileged`: all capabilities, no masking, no seccomp, all devices.
    pub privileged: bool,
    /// `capabilities.add` (with or without the `CAP_` prefix; `ALL` for all).
    pub capabilities_add: Vec<String>,
    /// `capabilities.drop` (`ALL` drops all, then `add` applies).
    pub capabilities_drop: Vec<String>,
    /// `allowPrivilegeEscalation`; `None` means true unless non-root… as Kubernetes: only
    /// `Some(false)` sets no_new_privs, like containerd.
    pub allow_privilege_escalation: Option<bool>,
    /// `seccompProfile`.
    pub seccomp: SeccompProfile,
    /// `procMount`.
    pub proc_mount: ProcMount,
}

/// Size-based rotation of a container's CRI log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRotation {
    /// Rotate when the current file reaches this many bytes.
    pub max_size: u64,
    /// Keep at most this many files, the current one included.
    pub max_files: u32,
}

impl Default for LogRotation {
    /// The kubelet's defaults: 10 MiB, 5 files.
    fn default() -> Self {
        LogRotation { max_size: 10 * 1024 * 1024, max_files: 5 }
    }
}

/// A container to create inside a sandbox.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Human name, unique among the runtime's containers.
    pub name: String,
    /// The root filesystem (an unpacked image or an overlay prepared by the caller).
    pub rootfs: PathBuf,
    /// The image's config.
    pub image: ImageConfig,
    /// `command`: replaces the image's entrypoint.
    pub command: Option<Vec<String>>,
    /// `args`: replaces the image's cmd.
    pub args: Option<Vec<String>>,
    /// Extra environment, after the image's (later entries win).
    pub env: Vec<(String, String)>,
    /// `workingDir`: replaces the image's.
    pub working_dir: Option<String>,
    /// Volumes and other bind mounts.
    pub mounts: Vec<Mount>,
    /// Container-level limits.
    pub resources: Resources,
    /// The security context.
    pub security: SecurityContext,
    /// Keep stdin open for `attach`.
    pub stdin: bool,
    /// Allocate a terminal for the main process.
    pub tty: bool,
    /// Where `terminationMessagePath` lives inside the container, if anywhere.
    pub termination_message_path: Option<String>,
    /// Log rotation settings.
    pub log_rotation: LogRotation,
    /// The CRI log file (the kubelet's `/var/log/pods/…`); default: in the container's state dir.
    pub log_path: Option<PathBuf>,
}

impl ContainerSpec {
    /// The process arguments, following Kubernetes' rules for command/args vs entrypoint/cmd.
    pub fn process_args(&self) -> Vec<String> {
        match (&self.command, &self.args) {
            (Some(command), Some(args)) => command.iter().chain(args).cloned().collect(),
            (Some(command), None) => command.clone(),
            (None, Some(args)) => self.image.entrypoint.iter().chain(args).cloned().collect(),
            (None, None) => self.image.entrypoint.iter().chain(&self.image.cmd).cloned().collect(),
        }
    }

    /// The environment: image env first, then the container's (a later key replaces).
    pub fn process_env(&self) -> Vec<String> {
        let mut env: Vec<(String, String)> = Vec::new();
        let image = self.image.env.iter().map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.clone(), String::new()),
        });
        for (k, v) in image.chain(self.env.iter().cloned()) {
            match env.iter_mut().find(|(key, _)| *key == k) {
                Some(slot) => slot.1 = v,
                None => env.push((k, v)),
            }
        }
        if !env.iter().any(|(k, _)| k == "PATH") {
            env.insert(0, ("PATH".into(), DEFAULT_PATH.into()));
        }
        env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
    }
}

/// The PATH given when neither the image nor the container sets one (as containerd).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> ImageConfig {
        ImageConfig {
            entrypoint: vec!["/ep".into()],
            cmd: vec!["c1".into()],
            env: vec!["A=1".into(), "PATH=/x".into()],
            ..Default::default()
        }
    }

    #[test]
    fn args_follow_kubernetes_command_and_args_rules() {
        let mut spec = ContainerSpec { image: image(), ..Default::default() };
        assert_eq!(spec.process_args(), ["/ep", "c1"]);
        spec.args = Some(vec!["a".into()]);
        assert_eq!(spec.process_args(), ["/ep", "a"]);
        spec.command = Some(vec!["/cmd".into()]);
        assert_eq!(spec.process_args(), ["/cmd", "a"]);
        spec.args = None;
        assert_eq!(spec.process_args(), ["/cmd"]);
    }

    #[test]
    fn container_env_overrides_image_env_and_path_defaults() {
        let mut spec = ContainerSpec { image: image(), ..Default::default() };
        spec.env = vec![("A".into(), "2".into()), ("B".into(), "3".into())];
        assert_eq!(spec.process_env(), ["A=2", "PATH=/x", "B=3"]);
        spec.image.env.clear();
        assert_eq!(spec.process_env()[0], format!("PATH={DEFAULT_PATH}"));
    }

    #[test]
    fn cpus_become_a_quota_over_the_default_period() {
        let r = Resources::default().with_cpus(0.5);
        assert_eq!((r.cpu_quota, r.cpu_period), (Some(50_000), Some(100_000)));
    }
}
