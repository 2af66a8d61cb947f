//! The `kubepods` cgroup hierarchy: where pod and container cgroups live, the pod-level limits,
//! OOM-kill counters and usage stats, on cgroup v1 (one mount per controller) and v2 (one
//! unified tree), chosen at run time.
//!
//! Layout (as the kubelet's cgroupfs driver): `/<root>/pod<uid>` for guaranteed pods,
//! `/<root>/<burstable|besteffort>/pod<uid>` otherwise, and one child per container named by the
//! container id. The container cgroup itself is created and filled by libcontainer from the OCI
//! spec's `linux.resources`; this module writes the pod level and reads counters.

use std::path::{Path, PathBuf};

use libcgroups::common::{CgroupConfig, CgroupManager, CgroupSetup};

use crate::error::{io_err, Error, Result};
use crate::spec::{QosClass, Resources, DEFAULT_CPU_PERIOD};

/// The cgroup filesystem root.
const CGROUP_MOUNT: &str = "/sys/fs/cgroup";

/// Which cgroup version manages resources on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// Legacy or hybrid: one hierarchy per controller.
    V1,
    /// Unified.
    V2,
}

impl CgroupVersion {
    /// Detects the host's setup (hybrid counts as v1, as libcgroups does).
    pub fn detect() -> Result<Self> {
        match libcgroups::common::get_cgroup_setup() {
            Ok(CgroupSetup::Unified) => Ok(CgroupVersion::V2),
            Ok(CgroupSetup::Legacy | CgroupSetup::Hybrid) => Ok(CgroupVersion::V1),
            Err(err) => Err(Error::Cgroup { path: CGROUP_MOUNT.into(), message: err.to_string() }),
        }
    }
}

/// One file write that applies a limit: a controller (v1 only) and a file name and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupWrite {
    /// The v1 controller directory (`cpu`, `memory`, `pids`); empty on v2.
    pub controller: &'static str,
    /// The file inside the cgroup.
    pub file: &'static str,
    /// The value to write.
    pub value: String,
}

/// Converts cgroup v1 cpu shares to a v2 cpu weight (the formula runc and the kubelet use).
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// The file writes that apply `resources` on the given cgroup version.
pub fn limit_writes(version: CgroupVersion, resources: &Resources) -> Vec<CgroupWrite> {
    let mut writes = Vec::new();
    let w = |controller, file, value: String| CgroupWrite { controller, file, value };
    let period = resources.cpu_period.unwrap_or(DEFAULT_CPU_PERIOD);
    match version {
        CgroupVersion::V1 => {
            if let Some(shares) = resources.cpu_shares {
                writes.push(w("cpu", "cpu.shares", shares.to_string()));
            }
            if let Some(quota) = resources.cpu_quota {
                writes.push(w("cpu", "cpu.cfs_period_us", period.to_string()));
                writes.push(w("cpu", "cpu.cfs_quota_us", quota.to_string()));
            }
            if let Some(limit) = resources.memory_limit {
                writes.push(w("memory", "memory.limit_in_bytes", limit.to_string()));
            }
            if let Some(pids) = resources.pids_limit {
                writes.push(w("pids", "pids.max", max_or(pids)));
            }
        }
        CgroupVersion::V2 => {
            if let Some(shares) = resources.cpu_shares {
                writes.push(w("", "cpu.weight", shares_to_weight(shares).to_string()));
            }
            if let Some(quota) = resources.cpu_quota {
                writes.push(w("", "cpu.max", format!("{} {period}", max_or(quota))));
            }
            if let Some(limit) = resources.memory_limit {
                writes.push(w("", "memory.max", max_or(limit)));
            }
            if let Some(pids) = resources.pids_limit {
                writes.push(w("", "pids.max", max_or(pids)));
            }
        }
    }
    writes
}

/// `max` for "no limit" (a negative value), the number otherwise.
fn max_or(value: i64) -> String {
    if value < 0 {
        "max".into()
    } else {
        value.to_string()
    }
}

/// The v1 controllers a pod cgroup is created in (the ones limits and stats use).
const V1_POD_CONTROLLERS: [&str; 4] = ["cpu", "cpuacct", "memory", "pids"];

/// The runtime's cgroup tree: its root name and the host's cgroup version.
#[derive(Debug, Clone)]
pub struct CgroupTree {
    root: String,
    version: CgroupVersion,
    mount: PathBuf,
}

impl CgroupTree {
    /// A tree named `root` (e.g. `kubepods`) on the detected cgroup version.
    pub fn new(root: &str) -> Result<Self> {
        let root = root.trim_matches('/').to_string();
        if root.is_empty() || root.contains("..") {
            return Err(Error::InvalidSpec(format!("bad cgroup root {root:?}")));
        }
        Ok(CgroupTree { root, version: CgroupVersion::detect()?, mount: CGROUP_MOUNT.into() })
    }

    /// A tree for reading and removing cgroups by absolute path (no root of its own).
    pub fn host() -> Result<Self> {
        CgroupTree::new("kubepods")
    }

    /// The cgroup version in use.
    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// The pod cgroup path relative to the cgroup mount (`/kubepods/besteffort/pod<uid>`).
    pub fn pod_path(&self, qos: QosClass, uid: &str) -> String {
        match qos.cgroup_dir() {
            Some(dir) => format!("/{}/{dir}/pod{uid}", self.root),
            None => format!("/{}/pod{uid}", self.root),
        }
    }

    /// The container cgroup path inside a pod cgroup.
    pub fn container_path(pod_path: &str, container_id: &str) -> String {
        format!("{pod_path}/{container_id}")
    }

    /// The absolute directories of a cgroup path: one per v1 hierarchy, or one on v2.
    fn dirs(&self, path: &str, controllers: Option<&[&str]>) -> Vec<PathBuf> {
        let rel = path.trim_start_matches('/');
        match self.version {
            CgroupVersion::V2 => vec![self.mount.join(rel)],
            CgroupVersion::V1 => match controllers {
                Some(list) => list.iter().map(|c| self.mount.join(c).join(rel)).collect(),
                None => v1_hierarchies(&self.mount).into_iter().map(|h| h.join(rel)).collect(),
            },
        }
    }

    /// Creates the pod cgroup with its limits.
    pub fn create_pod(&self, path: &str, resources: &Resources) -> Result<()> {
        match self.version {
            CgroupVersion::V1 => {
                for dir in self.dirs(path, Some(&V1_POD_CONTROLLERS)) {
                    std::fs::create_dir_all(&dir).map_err(io_err("creating cgroup", &dir))?;
                }
            }
            CgroupVersion::V2 => {
                // Each level must delegate the controllers to its children.
                let rel = path.trim_start_matches('/');
                let mut dir = self.mount.clone();
                for part in rel.split('/') {
                    enable_v2_controllers(&dir);
                    dir.push(part);
                    std::fs::create_dir_all(&dir).map_err(io_err("creating cgroup", &dir))?;
                }
                enable_v2_controllers(&dir);
            }
        }
        for write in limit_writes(self.version, resources) {
            let dir = match self.version {
                CgroupVersion::V1 => self.mount.join(write.controller),
                CgroupVersion::V2 => self.mount.clone(),
            };
            let file = dir.join(path.trim_start_matches('/')).join(write.file);
            std::fs::write(&file, &write.value).map_err(io_err("writing cgroup limit", &file))?;
        }
        Ok(())
    }

    /// Removes a cgroup and everything below it, in every hierarchy; a missing one is fine.
    pub fn remove(&self, path: &str) -> Result<()> {
        for dir in self.dirs(path, None) {
            remove_cgroup_dir(&dir)?;
        }
        Ok(())
    }

    /// The pod cgroups that exist under the root, as paths relative to the mount.
    pub fn list_pods(&self) -> Vec<String> {
        let base = match self.version {
            CgroupVersion::V1 => self.mount.join("memory"),
            CgroupVersion::V2 => self.mount.clone(),
        };
        let mut pods = Vec::new();
        let root = base.join(&self.root);
        for parent in [root.clone(), root.join("burstable"), root.join("besteffort")] {
            let Ok(entries) = std::fs::read_dir(&parent) else { continue };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with("pod") && entry.path().is_dir() {
                    if let Ok(rel) = entry.path().strip_prefix(&base) {
                        pods.push(format!("/{}", rel.display()));
                    }
                }
            }
        }
        pods
    }

    /// Removes the runtime's whole tree if nothing is left in it (tests use a private root).
    pub fn remove_root_if_empty(&self) {
        for dir in self.dirs(&self.root, None) {
            for sub in ["burstable", "besteffort"] {
                let _ = std::fs::remove_dir(dir.join(sub));
            }
            let _ = std::fs::remove_dir(&dir);
        }
    }

    /// The number of OOM kills recorded in a cgroup (0 if it is gone or the kernel is too old).
    pub fn oom_kills(&self, path: &str) -> u64 {
        let rel = path.trim_start_matches('/');
        let (file, key) = match self.version {
            CgroupVersion::V1 => {
                (self.mount.join("memory").join(rel).join("memory.oom_control"), "oom_kill")
            }
            CgroupVersion::V2 => (self.mount.join(rel).join("memory.events"), "oom_kill"),
        };
        std::fs::read_to_string(file).map(|text| parse_flat_key(&text, key)).unwrap_or(0)
    }

    /// Reads a limit file of a cgroup (e.g. `cpu`, `cpu.cfs_quota_us`); empty controller on v2.
    pub fn read_file(&self, path: &str, controller: &str, file: &str) -> Result<String> {
        let rel = path.trim_start_matches('/');
        let full = match self.version {
            CgroupVersion::V1 => self.mount.join(controller).join(rel).join(file),
            CgroupVersion::V2 => self.mount.join(rel).join(file),
        };
        std::fs::read_to_string(&full)
            .map(|s| s.trim().to_string())
            .map_err(io_err("reading", &full))
    }

    /// The pids in a cgroup (from the pids hierarchy on v1).
    pub fn pids(&self, path: &str) -> Vec<i32> {
        let rel = path.trim_start_matches('/');
        let file = match self.version {
            CgroupVersion::V1 => self.mount.join("pids").join(rel).join("cgroup.procs"),
            CgroupVersion::V2 => self.mount.join(rel).join("cgroup.procs"),
        };
        std::fs::read_to_string(file)
            .map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// CPU and memory usage of a cgroup, read by libcgroups.
    pub fn stats(&self, path: &str) -> Result<Stats> {
        let cgroup_err = |message: String| Error::Cgroup { path: path.to_string(), message };
        let manager = libcgroups::common::create_cgroup_manager(CgroupConfig {
            cgroup_path: PathBuf::from(path),
            systemd_cgroup: false,
            container_name: String::new(),
        })
        .map_err(|e| cgroup_err(e.to_string()))?;
        let stats = manager.stats().map_err(|e| cgroup_err(e.to_string()))?;
        Ok(Stats {
            cpu_usage_ns: stats.cpu.usage.usage_total,
            memory_usage_bytes: stats.memory.memory.usage,
            memory_working_set_bytes: working_set(&stats.memory),
            memory_limit_bytes: stats.memory.memory.limit,
            pids: stats.pids.current,
        })
    }
}

/// Usage numbers of one cgroup (what the kubelet's summary API reports).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Total CPU time in nanoseconds.
    pub cpu_usage_ns: u64,
    /// Memory usage in bytes (page cache included).
    pub memory_usage_bytes: u64,
    /// Usage minus inactive file pages: what the OOM killer looks at.
    pub memory_working_set_bytes: u64,
    /// The memory limit in bytes.
    pub memory_limit_bytes: u64,
    /// Number of processes.
    pub pids: u64,
}

/// The kubelet's working set: usage minus inactive file cache.
fn working_set(memory: &libcgroups::stats::MemoryStats) -> u64 {
    let inactive = ["total_inactive_file", "inactive_file"]
        .iter()
        .find_map(|k| memory.stats.get(*k).copied())
        .unwrap_or(0);
    memory.memory.usage.saturating_sub(inactive)
}

/// The value of `key` in a flat-keyed cgroup file (`key value` lines).
pub fn parse_flat_key(text: &str, key: &str) -> u64 {
    text.lines()
        .filter_map(|line| line.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Every cgroup v1 hierarchy mounted under the cgroup root (each is a directory there).
fn v1_hierarchies(mount: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(mount) else { return Vec::new() };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && !p.ends_with("unified") && !p.is_symlink())
        .collect()
}

/// Lets the children of a v2 cgroup use cpu, memory and pids (errors mean "already" or "absent").
fn enable_v2_controllers(dir: &Path) {
    let _ = std::fs::write(dir.join("cgroup.subtree_control"), "+cpu +memory +pids");
}

/// Removes a cgroup directory tree bottom-up (cgroup dirs are removed with rmdir only).
fn remove_cgroup_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_dir(&entry.path())?;
            }
        }
    }
    // A cgroup whose last process just exited can be busy for a moment.
    let mut last = None;
    for _ in 0..50 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    match last {
        Some(e) => Err(io_err("removing cgroup", dir)(e)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Resources {
        Resources {
            cpu_shares: Some(512),
            cpu_quota: Some(50_000),
            cpu_period: None,
            memory_limit: Some(64 << 20),
            pids_limit: Some(100),
        }
    }

    #[test]
    fn v1_limits_go_to_per_controller_files() {
        let writes = limit_writes(CgroupVersion::V1, &limits());
        let files: Vec<_> =
            writes.iter().map(|w| (w.controller, w.file, w.value.as_str())).collect();
        assert_eq!(
            files,
            [
                ("cpu", "cpu.shares", "512"),
                ("cpu", "cpu.cfs_period_us", "100000"),
                ("cpu", "cpu.cfs_quota_us", "50000"),
                ("memory", "memory.limit_in_bytes", "67108864"),
                ("pids", "pids.max", "100"),
            ]
        );
    }

    #[test]
    fn v2_limits_use_unified_files_and_weight() {
        let writes = limit_writes(CgroupVersion::V2, &limits());
        let files: Vec<_> = writes.iter().map(|w| (w.file, w.value.as_str())).collect();
        assert_eq!(
            files,
            [
                ("cpu.weight", "20"),
                ("cpu.max", "50000 100000"),
                ("memory.max", "67108864"),
                ("pids.max", "100"),
            ]
        );
        let unlimited =
            Resources { cpu_quota: Some(-1), pids_limit: Some(-1), ..Default::default() };
        let files: Vec<_> = limit_writes(CgroupVersion::V2, &unlimited)
            .into_iter()
            .map(|w| (w.file, w.value))
            .collect();
        assert_eq!(files, [("cpu.max", "max 100000".into()), ("pids.max", "max".into())]);
    }

    #[test]
    fn shares_map_to_weight_like_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(0), 1);
    }

    #[test]
    fn oom_kill_counter_is_read_from_flat_keyed_files() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(parse_flat_key(v1, "oom_kill"), 3);
        let v2 = "low 0\nhigh 0\nmax 5\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(parse_flat_key(v2, "oom_kill"), 1);
        assert_eq!(parse_flat_key("", "oom_kill"), 0);
    }

    #[test]
    fn pod_paths_follow_the_qos_layout() {
        let tree =
            CgroupTree { root: "kubepods".into(), version: CgroupVersion::V2, mount: "/x".into() };
        assert_eq!(tree.pod_path(QosClass::Guaranteed, "u1"), "/kubepods/podu1");
        assert_eq!(tree.pod_path(QosClass::Burstable, "u1"), "/kubepods/burstable/podu1");
        assert_eq!(tree.pod_path(QosClass::BestEffort, "u1"), "/kubepods/besteffort/podu1");
        assert_eq!(tree.dirs("/kubepods/podu1", None), [PathBuf::from("/x/kubepods/podu1")]);
    }
}
