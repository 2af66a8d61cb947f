//! Control groups: which version the host mounts (v1 "legacy", v2 "unified", or both: "hybrid")
//! and which controllers the runtime can use. The runtime (libcgroups) manages v1 controllers on
//! legacy and hybrid hosts and the v2 tree on unified ones, so that is where controllers are looked up.

use std::collections::BTreeMap;

use serde::Serialize;

use super::host::Host;

/// Where cgroups live, as the runtime will use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupMode {
    /// Only v2, mounted at /sys/fs/cgroup.
    Unified,
    /// v1 controllers plus a v2 tree elsewhere (systemd's hybrid layout).
    Hybrid,
    /// Only v1.
    Legacy,
    /// No cgroup file system is mounted.
    None,
}

/// Controllers the agent cannot run pods without (limits and pid caps).
pub const REQUIRED_CONTROLLERS: &[&str] = &["cpu", "memory", "pids"];
/// Controllers the agent uses when present.
pub const OPTIONAL_CONTROLLERS: &[&str] = &["cpuset", "io", "hugetlb"];

/// The host's cgroup layout.
#[derive(Debug, Clone, Serialize)]
pub struct CgroupInfo {
    /// v1, v2 or both.
    pub mode: CgroupMode,
    /// Each usable controller and the version it is used through ("v1" / "v2").
    pub controllers: BTreeMap<String, String>,
    /// Controllers the kernel has but were disabled on the command line (`cgroup_disable=`, or
    /// the Raspberry Pi default for memory).
    pub disabled: Vec<String>,
}

struct Mount {
    point: String,
    fstype: String,
    options: Vec<String>,
}

/// `/proc/self/mountinfo` lines: mount point (field 5), and after ` - `: type, source, options.
fn mounts(mountinfo: &str) -> Vec<Mount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let point = left.split_whitespace().nth(4)?.to_string();
            let mut right = right.split_whitespace();
            let fstype = right.next()?.to_string();
            let options = right.nth(1).unwrap_or("").split(',').map(String::from).collect();
            Some(Mount { point, fstype, options })
        })
        .collect()
}

/// v1 names the v2 `io` controller `blkio`.
fn v2_name(v1: &str) -> &str {
    if v1 == "blkio" {
        "io"
    } else {
        v1
    }
}

/// Reads the mount table and controller lists.
pub fn inspect(host: &Host) -> CgroupInfo {
    let mounts = mounts(&host.read("/proc/self/mountinfo").unwrap_or_default());
    let v2 = mounts.iter().find(|m| m.fstype == "cgroup2");
    let v1: Vec<&Mount> = mounts.iter().filter(|m| m.fstype == "cgroup").collect();
    let mode = match (v2, v1.is_empty()) {
        (Some(_), true) => CgroupMode::Unified,
        (Some(_), false) => CgroupMode::Hybrid,
        (None, false) => CgroupMode::Legacy,
        (None, true) => CgroupMode::None,
    };
    // /proc/cgroups: "name hierarchy num_cgroups enabled"; enabled=0 means disabled at boot.
    let disabled: Vec<String> = host
        .read("/proc/cgroups")
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 4 && f[3] == "0").then(|| v2_name(f[0]).to_string())
        })
        .collect();
    let mut controllers = BTreeMap::new();
    match mode {
        CgroupMode::Unified => {
            if let Some(m) = v2 {
                let list =
                    host.read(&format!("{}/cgroup.controllers", m.point)).unwrap_or_default();
                for c in list.split_whitespace() {
                    controllers.insert(c.to_string(), "v2".to_string());
                }
            }
        }
        CgroupMode::Hybrid | CgroupMode::Legacy => {
            for m in &v1 {
                for opt in &m.options {
                    let name = v2_name(opt);
                    let known = REQUIRED_CONTROLLERS.contains(&name)
                        || OPTIONAL_CONTROLLERS.contains(&name)
                        || matches!(name, "cpuacct" | "devices" | "freezer");
                    if known && !disabled.iter().any(|d| d == name) {
                        controllers.insert(name.to_string(), "v1".to_string());
                    }
                }
            }
        }
        CgroupMode::None => {}
    }
    CgroupInfo { mode, controllers, disabled }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_give_point_type_and_options() {
        let m = mounts(
            "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
             40 31 0:35 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw\n",
        );
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].point, "/sys/fs/cgroup/cpu");
        assert_eq!(m[0].options, vec!["rw", "cpu"]);
        assert_eq!(m[1].fstype, "cgroup2");
    }
}
