//! The node's eviction signals, measured as the kubelet measures them:
//!
//! - `memory.available` = memory capacity (`MemTotal`) − the root cgroup's working set (v1:
//!   `memory.usage_in_bytes` − `total_inactive_file`; v2: `memory.current` − `inactive_file`
//!   where the root has them, else `/proc/meminfo`'s `MemTotal − MemFree − Inactive(file)`);
//! - `nodefs.*` / `imagefs.*` from `statvfs` of the agent's data dir and of its image store
//!   (the same numbers when both are on one file system, as the kubelet then reports);
//! - `pid.available` = min(`kernel/pid_max`, `kernel/threads-max`) − the tasks counted in
//!   `/proc/loadavg` (the kubelet reads the same files: `sysinfo` truncates large counts).
//!
//! Parsers are pure functions over file text; [`observe`] only reads files.

use std::path::Path;

use skerry_runtime::CgroupVersion;

use super::thresholds::Signal;
use crate::node::facts::meminfo;
use crate::stats::cgroup::{flat_key, meminfo_working_set, single_value, working_set};

/// One signal's reading: how much is left of how much there is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    pub available: i64,
    pub capacity: i64,
}

/// The readings of every signal that could be measured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observations {
    pub memory: Option<Observation>,
    pub nodefs: Option<Observation>,
    pub nodefs_inodes: Option<Observation>,
    pub imagefs: Option<Observation>,
    pub imagefs_inodes: Option<Observation>,
    pub pids: Option<Observation>,
}

impl Observations {
    /// The reading of `signal`, if it was measured.
    pub fn get(&self, signal: Signal) -> Option<Observation> {
        match signal {
            Signal::MemoryAvailable => self.memory,
            Signal::NodeFsAvailable => self.nodefs,
            Signal::NodeFsInodesFree => self.nodefs_inodes,
            Signal::ImageFsAvailable => self.imagefs,
            Signal::ImageFsInodesFree => self.imagefs_inodes,
            Signal::PidAvailable => self.pids,
        }
    }
}

/// Memory from `/proc/meminfo` and, when readable, the root cgroup's usage and `memory.stat`.
pub fn memory(meminfo_text: &str, root_usage: Option<(u64, &str)>) -> Option<Observation> {
    let capacity = meminfo(meminfo_text, "MemTotal")?;
    let working = match root_usage {
        Some((usage, stat)) => working_set(usage, stat),
        None => meminfo_working_set(meminfo_text)?,
    };
    // The summary API clamps at zero: a working set above capacity leaves nothing.
    let available = capacity.saturating_sub(working);
    Some(Observation { available: available as i64, capacity: capacity as i64 })
}

/// PIDs from `kernel/pid_max`, `kernel/threads-max` and `/proc/loadavg` (`r/total` field).
pub fn pids(pid_max: &str, threads_max: Option<&str>, loadavg: &str) -> Option<Observation> {
    let limit =
        [Some(pid_max), threads_max].into_iter().flatten().filter_map(single_value).min()?;
    let running: u64 = loadavg.split_whitespace().nth(3)?.split('/').nth(1)?.parse().ok()?;
    Some(Observation { available: limit as i64 - running as i64, capacity: limit as i64 })
}

/// The root cgroup's memory usage and `memory.stat` (v1: the memory hierarchy's root; v2: the
/// unified root, which has no `memory.current` on most kernels).
fn root_memory(version: CgroupVersion, mount: &Path) -> Option<(u64, String)> {
    let dir = match version {
        CgroupVersion::V1 => mount.join("memory"),
        CgroupVersion::V2 => mount.to_path_buf(),
    };
    let usage_file = match version {
        CgroupVersion::V1 => "memory.usage_in_bytes",
        CgroupVersion::V2 => "memory.current",
    };
    let usage = single_value(&std::fs::read_to_string(dir.join(usage_file)).ok()?)?;
    let stat = std::fs::read_to_string(dir.join("memory.stat")).ok()?;
    // A stat without the inactive-file counter would count page cache as used.
    flat_key(&stat, "total_inactive_file").or_else(|| flat_key(&stat, "inactive_file"))?;
    Some((usage, stat))
}

/// Space and inodes of the file system at `path`.
fn file_system(path: &Path) -> (Option<Observation>, Option<Observation>) {
    let Ok(s) = rustix::fs::statvfs(path) else { return (None, None) };
    let bytes = Observation {
        available: (s.f_bavail * s.f_frsize) as i64,
        capacity: (s.f_blocks * s.f_frsize) as i64,
    };
    // Some file systems (btrfs) report no inode counts: no inode signal there.
    let inodes = (s.f_files > 0)
        .then_some(Observation { available: s.f_ffree as i64, capacity: s.f_files as i64 });
    (Some(bytes), inodes)
}

/// Measures every signal now. Blocking (reads files).
pub fn observe(version: CgroupVersion, data_dir: &Path, images_dir: &Path) -> Observations {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let meminfo_text = read("/proc/meminfo").unwrap_or_default();
    let root = root_memory(version, Path::new("/sys/fs/cgroup"));
    let memory = memory(&meminfo_text, root.as_ref().map(|(u, s)| (*u, s.as_str())));
    let (nodefs, nodefs_inodes) = file_system(data_dir);
    let images = if images_dir.exists() { images_dir } else { data_dir };
    let (imagefs, imagefs_inodes) = file_system(images);
    let pids = read("/proc/sys/kernel/pid_max")
        .zip(read("/proc/loadavg"))
        .and_then(|(max, avg)| pids(&max, read("/proc/sys/kernel/threads-max").as_deref(), &avg));
    Observations { memory, nodefs, nodefs_inodes, imagefs, imagefs_inodes, pids }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = "MemTotal:       1048576 kB\nMemFree:         262144 kB\n\
        MemAvailable:    700000 kB\nInactive(file):  131072 kB\n";

    #[test]
    fn memory_available_is_capacity_minus_the_root_working_set() {
        // v1 root: usage 600Mi, of which 100Mi inactive file pages.
        let stat = "cache 1\ntotal_inactive_file 104857600\n";
        let o = memory(MEMINFO, Some((600 << 20, stat))).unwrap();
        assert_eq!(o, Observation { available: (1 << 30) - (500 << 20), capacity: 1 << 30 });
        // No root cgroup counters: MemTotal − MemFree − Inactive(file) from meminfo.
        let o = memory(MEMINFO, None).unwrap();
        assert_eq!(o.available, (262_144 + 131_072) * 1024);
        // A working set above capacity leaves nothing, not a negative amount.
        assert_eq!(memory(MEMINFO, Some((2 << 30, ""))).unwrap().available, 0);
        assert_eq!(memory("", None), None);
    }

    #[test]
    fn pids_left_are_the_smaller_limit_minus_running_tasks() {
        let loadavg = "0.52 0.58 0.59 2/1234 56789\n";
        let o = pids("4194304\n", Some("127000\n"), loadavg).unwrap();
        assert_eq!(o, Observation { available: 127_000 - 1234, capacity: 127_000 });
        assert_eq!(pids("32768\n", None, loadavg).unwrap().capacity, 32768);
        assert_eq!(pids("32768\n", None, "garbage"), None);
    }

    #[test]
    fn this_machine_is_measured() {
        let Ok(version) = CgroupVersion::detect() else { return };
        let o = observe(version, Path::new("/"), Path::new("/nonexistent"));
        let memory = o.memory.expect("memory measured");
        assert!(memory.available > 0 && memory.available <= memory.capacity);
        let nodefs = o.nodefs.expect("nodefs measured");
        assert_eq!(o.imagefs.map(|i| i.capacity), Some(nodefs.capacity));
        assert!(o.pids.expect("pids measured").available > 0);
    }
}
