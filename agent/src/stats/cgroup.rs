//! Reading cumulative usage counters: a container's cgroup (v1: `cpuacct.usage` and
//! `memory.usage_in_bytes` + `memory.stat` in their controller hierarchies; v2: `cpu.stat`
//! `usage_usec` and `memory.current` + `memory.stat` in the unified tree) and the node's
//! `/proc/stat` and `/proc/meminfo`.
//!
//! Memory is reported as the working set, as the kubelet (cAdvisor) computes it: usage minus
//! inactive file pages, which the kernel can drop without OOM-killing anyone. The parsers are
//! pure functions over file text so the formats are tested from fixtures; [`CgroupReader`]
//! only joins paths and reads files.

use std::path::{Path, PathBuf};

use skerry_runtime::CgroupVersion;

/// The clock tick of `/proc/stat` (`USER_HZ`): fixed at 100 in the kernel's user ABI on every
/// architecture Linux supports, whatever the kernel's internal `HZ`.
const USER_HZ: u64 = 100;

/// One reading of a cgroup or of the node: cumulative CPU time and the current working set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU time consumed since the cgroup (or the machine) started, in nanoseconds.
    pub cpu_ns: u64,
    /// Memory usage minus inactive file pages, in bytes.
    pub working_set_bytes: u64,
}

/// Why a counter could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {what}")]
    Format { path: PathBuf, what: String },
}

/// The value of `key` in a flat-keyed file (`key value` per line: `memory.stat`, `cpu.stat`).
pub fn flat_key(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .filter_map(|line| line.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
}

/// A single-number file (`cpuacct.usage`, `memory.current`, `memory.usage_in_bytes`).
pub fn single_value(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// Working set from a usage figure and the cgroup's `memory.stat`: v1 reports the hierarchical
/// `total_inactive_file`, v2 (and a v1 leaf without hierarchy totals) `inactive_file`.
pub fn working_set(usage: u64, memory_stat: &str) -> u64 {
    let inactive = flat_key(memory_stat, "total_inactive_file")
        .or_else(|| flat_key(memory_stat, "inactive_file"))
        .unwrap_or(0);
    usage.saturating_sub(inactive)
}

/// Cumulative busy CPU time of the machine from the aggregate `cpu` line of `/proc/stat`:
/// user + nice + system + irq + softirq + steal (idle and iowait are not usage; guest time is
/// already counted in user), in nanoseconds.
pub fn proc_stat_cpu_ns(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> =
        line.split_whitespace().skip(1).map(|f| f.parse().ok()).collect::<Option<_>>()?;
    let field = |i: usize| fields.get(i).copied().unwrap_or(0);
    if fields.len() < 4 {
        return None;
    }
    let ticks = field(0) + field(1) + field(2) + field(5) + field(6) + field(7);
    Some(ticks.saturating_mul(1_000_000_000 / USER_HZ))
}

/// The machine's working set from `/proc/meminfo`: usage (`MemTotal - MemFree`, page cache
/// included, as the root cgroup counts it) minus `Inactive(file)`, in bytes.
pub fn meminfo_working_set(text: &str) -> Option<u64> {
    let kib = |key: &str| {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(key)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    let usage = kib("MemTotal")?.saturating_sub(kib("MemFree")?);
    Some(usage.saturating_sub(kib("Inactive(file)").unwrap_or(0)) * 1024)
}

/// Reads usage files under a cgroup mount and a proc root (real ones, or fixtures in tests).
#[derive(Debug, Clone)]
pub struct CgroupReader {
    version: CgroupVersion,
    cgroup_mount: PathBuf,
    proc_root: PathBuf,
}

impl CgroupReader {
    /// A reader of the host's `/sys/fs/cgroup` and `/proc`.
    pub fn host(version: CgroupVersion) -> CgroupReader {
        CgroupReader::new(version, "/sys/fs/cgroup", "/proc")
    }

    /// A reader of the given roots.
    pub fn new(
        version: CgroupVersion,
        cgroup_mount: impl Into<PathBuf>,
        proc_root: impl Into<PathBuf>,
    ) -> CgroupReader {
        CgroupReader { version, cgroup_mount: cgroup_mount.into(), proc_root: proc_root.into() }
    }

    /// The usage of the cgroup at `path` (relative to the mount, e.g. `/kubepods/pod<uid>/<id>`).
    pub fn cgroup(&self, path: &str) -> Result<Usage, ReadError> {
        let rel = path.trim_start_matches('/');
        match self.version {
            CgroupVersion::V1 => {
                let cpu = self.cgroup_mount.join("cpuacct").join(rel).join("cpuacct.usage");
                let memory = self.cgroup_mount.join("memory").join(rel);
                let cpu_ns = parse(&cpu, single_value, "not a number")?;
                let usage =
                    parse(&memory.join("memory.usage_in_bytes"), single_value, "not a number")?;
                let stat = read(&memory.join("memory.stat"))?;
                Ok(Usage { cpu_ns, working_set_bytes: working_set(usage, &stat) })
            }
            CgroupVersion::V2 => {
                let dir = self.cgroup_mount.join(rel);
                let usec = |text: &str| flat_key(text, "usage_usec");
                let cpu_usec = parse(&dir.join("cpu.stat"), usec, "no usage_usec")?;
                let usage = parse(&dir.join("memory.current"), single_value, "not a number")?;
                let stat = read(&dir.join("memory.stat"))?;
                Ok(Usage {
                    cpu_ns: cpu_usec.saturating_mul(1000),
                    working_set_bytes: working_set(usage, &stat),
                })
            }
        }
    }

    /// The usage of the whole machine.
    pub fn node(&self) -> Result<Usage, ReadError> {
        let cpu_ns = parse(&self.proc_root.join("stat"), proc_stat_cpu_ns, "no cpu line")?;
        let working_set_bytes =
            parse(&self.proc_root.join("meminfo"), meminfo_working_set, "no MemTotal/MemFree")?;
        Ok(Usage { cpu_ns, working_set_bytes })
    }
}

fn read(path: &Path) -> Result<String, ReadError> {
    std::fs::read_to_string(path).map_err(|source| ReadError::Io { path: path.into(), source })
}

fn parse(path: &Path, f: impl Fn(&str) -> Option<u64>, what: &str) -> Result<u64, ReadError> {
    f(&read(path)?).ok_or_else(|| ReadError::Format { path: path.into(), what: what.into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Abridged real files (a cgroup v1 container, a v2 container, the node).
    const V1_MEMORY_STAT: &str = "cache 1208320\nrss 462848\nrss_huge 0\ninactive_file 40960\n\
        active_file 1167360\nhierarchical_memory_limit 9223372036854771712\n\
        total_cache 1208320\ntotal_rss 462848\ntotal_inactive_file 1081344\n\
        total_active_file 126976\n";
    const V2_CPU_STAT: &str = "usage_usec 2513764\nuser_usec 1838502\nsystem_usec 675262\n\
        nr_periods 0\nnr_throttled 0\nthrottled_usec 0\n";
    const V2_MEMORY_STAT: &str = "anon 450560\nfile 1216512\nkernel_stack 16384\n\
        active_anon 442368\ninactive_anon 0\nactive_file 135168\ninactive_file 1081344\n";
    const PROC_STAT: &str = "cpu  10132153 290696 3084719 46828483 16683 0 25195 7 0 0\n\
        cpu0 1393280 32966 572056 13343292 6130 0 17875 0 0 0\nintr 1462898 0 0\n";
    const MEMINFO: &str = "MemTotal:       16303428 kB\nMemFree:         9512644 kB\n\
        MemAvailable:   13158908 kB\nBuffers:          200364 kB\nCached:          3609604 kB\n\
        Active(file):    1650884 kB\nInactive(file):  2063200 kB\n";

    fn write(dir: &Path, rel: &str, text: &str) {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn v1_container_usage_comes_from_cpuacct_and_memory_hierarchies() {
        let root = tempfile::tempdir().unwrap();
        let cg = "kubepods/besteffort/podabc/ctr1";
        write(root.path(), &format!("cpuacct/{cg}/cpuacct.usage"), "4375296617\n");
        write(root.path(), &format!("memory/{cg}/memory.usage_in_bytes"), "2945024\n");
        write(root.path(), &format!("memory/{cg}/memory.stat"), V1_MEMORY_STAT);
        let reader = CgroupReader::new(CgroupVersion::V1, root.path(), "/nonexistent");
        let usage = reader.cgroup(&format!("/{cg}")).unwrap();
        // total_inactive_file (hierarchical), not the leaf's own inactive_file.
        assert_eq!(usage, Usage { cpu_ns: 4_375_296_617, working_set_bytes: 2945024 - 1081344 });
    }

    #[test]
    fn v2_container_usage_comes_from_the_unified_tree() {
        let root = tempfile::tempdir().unwrap();
        let cg = "kubepods/podabc/ctr1";
        write(root.path(), &format!("{cg}/cpu.stat"), V2_CPU_STAT);
        write(root.path(), &format!("{cg}/memory.current"), "1851392\n");
        write(root.path(), &format!("{cg}/memory.stat"), V2_MEMORY_STAT);
        let reader = CgroupReader::new(CgroupVersion::V2, root.path(), "/nonexistent");
        let usage = reader.cgroup(cg).unwrap();
        assert_eq!(
            usage,
            Usage { cpu_ns: 2_513_764_000, working_set_bytes: 1_851_392 - 1_081_344 }
        );
    }

    #[test]
    fn a_missing_or_garbled_file_is_an_error_naming_it() {
        let root = tempfile::tempdir().unwrap();
        let reader = CgroupReader::new(CgroupVersion::V2, root.path(), root.path());
        let err = reader.cgroup("/gone").unwrap_err().to_string();
        assert!(err.contains("gone/cpu.stat"), "{err}");
        write(root.path(), "stat", "intr 1 2 3\n");
        let err = reader.node().unwrap_err().to_string();
        assert!(err.ends_with("stat: no cpu line"), "{err}");
    }

    #[test]
    fn node_usage_from_proc_stat_and_meminfo() {
        let root = tempfile::tempdir().unwrap();
        write(root.path(), "stat", PROC_STAT);
        write(root.path(), "meminfo", MEMINFO);
        let reader = CgroupReader::new(CgroupVersion::V1, "/nonexistent", root.path());
        let usage = reader.node().unwrap();
        // user + nice + system + irq + softirq + steal ticks, at 10 ms each.
        let ticks: u64 = 10132153 + 290696 + 3084719 + 25195 + 7;
        assert_eq!(usage.cpu_ns, ticks * 10_000_000);
        assert_eq!(usage.working_set_bytes, (16303428 - 9512644 - 2063200) * 1024);
    }

    #[test]
    fn working_set_never_goes_below_zero() {
        assert_eq!(working_set(100, "inactive_file 4096\n"), 0);
        assert_eq!(working_set(8192, ""), 8192);
        assert_eq!(flat_key("a 1\nab 2\n", "ab"), Some(2));
    }
}
