//! What the node measures about itself: capacity (CPUs, memory, disk, pods), system info
//! (kernel, OS image, architecture) and the pressure signals behind the MemoryPressure,
//! DiskPressure and PIDPressure conditions. Reads `/proc`, `/etc/os-release` and `statvfs`;
//! the thresholds are the kubelet's default hard eviction thresholds.

use std::path::Path;

/// The kubelet's default `memory.available<100Mi`.
pub const MEMORY_EVICTION_BYTES: u64 = 100 * 1024 * 1024;
/// The kubelet's default `nodefs.available<10%`.
pub const DISK_EVICTION_PERCENT: u64 = 10;
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

/// Current pressure measurements.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pressure {
    /// `MemAvailable` in bytes.
    pub memory_available: u64,
    /// Free bytes of the data dir's file system (for unprivileged users).
    pub disk_available: u64,
    /// Size of the data dir's file system in bytes.
    pub disk_total: u64,
    /// Processes and threads running.
    pub pids_in_use: u64,
    /// `kernel/pid_max`.
    pub pid_max: u64,
}

impl Pressure {
    /// Below 100Mi of available memory.
    pub fn memory(&self) -> bool {
        self.memory_available < MEMORY_EVICTION_BYTES
    }

    /// Below 10% of free disk.
    pub fn disk(&self) -> bool {
        self.disk_total > 0 && self.disk_available * 100 < self.disk_total * DISK_EVICTION_PERCENT
    }

    /// More than 90% of pid_max in use.
    pub fn pids(&self) -> bool {
        self.pid_max > 0 && self.pids_in_use * 10 > self.pid_max * 9
    }
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

/// Measures the pressure signals now.
pub fn pressure(data_dir: &Path) -> Pressure {
    let meminfo_text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let (disk_total, disk_available) = disk(data_dir);
    // /proc/loadavg's fourth field is "running/total" scheduling entities (threads).
    let pids_in_use = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().nth(3)?.split('/').nth(1)?.parse().ok())
        .unwrap_or(0);
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    Pressure {
        memory_available: meminfo(&meminfo_text, "MemAvailable").unwrap_or(u64::MAX),
        disk_available,
        disk_total,
        pids_in_use,
        pid_max,
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
    fn pressure_follows_the_kubelet_default_thresholds() {
        let ok = Pressure {
            memory_available: 1 << 30,
            disk_available: 50,
            disk_total: 100,
            pids_in_use: 10,
            pid_max: 100,
        };
        assert!(!ok.memory() && !ok.disk() && !ok.pids());
        let bad = Pressure { memory_available: 1 << 20, disk_available: 5, pids_in_use: 95, ..ok };
        assert!(bad.memory() && bad.disk() && bad.pids());
    }

    #[test]
    fn measurements_of_this_machine_are_plausible() {
        let c = capacity(Path::new("/"));
        assert!(c.cpus >= 1 && c.memory_bytes > 0 && c.disk_bytes > 0);
        assert!(!kernel_version().is_empty());
    }
}
