//! What the node measures about itself: capacity (CPUs, memory, disk, pods) and system info
//! (kernel, OS image, architecture). Reads `/proc`, `/etc/os-release` and `statvfs`. The
//! pressure conditions come from the eviction manager (`crate::eviction`), which measures the
//! eviction signals against the configured thresholds.

use std::path::Path;

/// Pods per node (the kubelet's default `--max-pods`).
pub const MAX_PODS: u64 = 110;

/// The node's size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capacity {
    /// Logical CPUs.
    pub cpus: u64,
    /// Physical memory in bytes.
    pub memory_bytes: u64,
    /// Size of the file system holding the data dir, in bytes.
    pub disk_bytes: u64,
}

/// The pressure conditions now (True while an eviction threshold is crossed, and for the
/// pressure transition period after).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pressure {
    /// MemoryPressure.
    pub memory: bool,
    /// DiskPressure.
    pub disk: bool,
    /// PIDPressure.
    pub pids: bool,
}

/// A `/proc/meminfo` field in bytes.
pub fn meminfo(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb * 1024)
    })
}

/// Size and free space of the file system at `path`.
pub fn disk(path: &Path) -> (u64, u64) {
    match rustix::fs::statvfs(path) {
        Ok(s) => (s.f_blocks * s.f_frsize, s.f_bavail * s.f_frsize),
        Err(_) => (0, 0),
    }
}

/// Measures capacity (`data_dir` names the file system for ephemeral storage).
pub fn capacity(data_dir: &Path) -> Capacity {
    let meminfo_text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    Capacity {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
        memory_bytes: meminfo(&meminfo_text, "MemTotal").unwrap_or(0),
        disk_bytes: disk(data_dir).0,
    }
}

/// `PRETTY_NAME` from `/etc/os-release` (the Node's `osImage`).
pub fn os_image() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string())
            })
        })
        .unwrap_or_else(|| "Linux".into())
}

/// The kernel release (`uname -r`).
pub fn kernel_version() -> String {
    rustix::system::uname().release().to_string_lossy().into_owned()
}

/// The Go-style architecture name of this build (`amd64`, `arm64`, `arm`).
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "riscv64" => "riscv64",
        "x86" => "386",
        other => other,
    }
}

/// `/etc/machine-id` (the Node's `machineID`/`systemUUID` when nothing better is known).
pub fn machine_id() -> String {
    std::fs::read_to_string("/etc/machine-id").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// The boot ID (changes on reboot; the Node's `bootID`).
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_fields_are_bytes() {
        let t = "MemTotal:        8000000 kB\nMemAvailable:    100 kB\n";
        assert_eq!(meminfo(t, "MemTotal"), Some(8_000_000 * 1024));
        assert_eq!(meminfo(t, "MemAvailable"), Some(102_400));
        assert_eq!(meminfo(t, "MemFree"), None);
    }

    #[test]
    fn measurements_of_this_machine_are_plausible() {
        let c = capacity(Path::new("/"));
        assert!(c.cpus >= 1 && c.memory_bytes > 0 && c.disk_bytes > 0);
        assert!(!kernel_version().is_empty());
    }
}
