//! `skerry check`: can this node run the agent? It inspects the kernel (release, namespaces,
//! overlayfs, nf_tables, veth/bridge/vxlan, seccomp), cgroups (version and controllers), the
//! clock (boards without an RTC boot in 1970) and the CPU architecture, and returns a [`Report`]:
//! one [`Check`] per item, each `ok`, `warn` or `fail`. A failed *required* check makes the
//! report not ok, and the CLI exits non-zero.
//!
//! Everything is read from files (see [`host`]) and nothing is changed, so the check is safe on a
//! production node and runs unprivileged (some items are then less certain and say so).

pub mod cgroup;
pub mod clock;
pub mod host;
pub mod kernel;
mod render;

use std::time::SystemTime;

use serde::Serialize;

pub use host::Host;

/// Errors of the self-check (only the output can fail; probes turn trouble into statuses).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The report could not be encoded.
    #[error("encoding the report as JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// The outcome of one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Present and usable.
    Ok,
    /// Missing but optional, or not certain.
    Warn,
    /// Missing and required.
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// `kernel`, `namespace`, `feature`, `cgroup`, `clock` or `arch`.
    pub group: &'static str,
    /// What was checked (`net`, `overlayfs`, `memory`, …).
    pub name: String,
    /// The outcome.
    pub status: Status,
    /// Whether a failure here stops the node from working.
    pub required: bool,
    /// What was found, and where, or how to fix it.
    pub detail: String,
}

/// The CPU: the one the binary was built for and the one the kernel reports.
#[derive(Debug, Clone, Serialize)]
pub struct ArchInfo {
    /// The binary's target architecture (`aarch64`, `arm`, `x86_64`).
    pub binary: &'static str,
    /// The binary's C library (`gnu` or `musl`).
    pub libc: &'static str,
    /// `uname -m` (`aarch64`, `armv7l`, `armv6l`, `x86_64`).
    pub machine: String,
}

/// The kernel's identity.
#[derive(Debug, Clone, Serialize)]
pub struct KernelInfo {
    /// `uname -r`.
    pub release: Option<String>,
    /// Where the kernel config came from, if one was found.
    pub config: Option<String>,
}

/// The whole self-check.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// True when no required check failed.
    pub ok: bool,
    /// CPU architecture.
    pub arch: ArchInfo,
    /// Kernel release and config source.
    pub kernel: KernelInfo,
    /// Cgroup version and controllers.
    pub cgroup: cgroup::CgroupInfo,
    /// Clock sanity.
    pub clock: clock::ClockInfo,
    /// Every item, in display order.
    pub checks: Vec<Check>,
}

impl Report {
    /// The report as pretty JSON (`skerry check --json`).
    pub fn to_json(&self) -> Result<String, CheckError> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// The report as an aligned text table with a closing verdict line.
    pub fn to_table(&self) -> String {
        render::table(self)
    }

    /// The failed required checks.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.required && c.status == Status::Fail)
    }
}

/// Checks the running node now.
pub fn run() -> Report {
    inspect(&Host::real(), SystemTime::now())
}

/// Checks the node whose files `host` reads, with the clock reading `now`.
pub fn inspect(host: &Host, now: SystemTime) -> Report {
    let mut checks = Vec::new();
    let arch = arch_info(host);
    checks.push(arch_check(&arch));

    let release = kernel::release(host);
    checks.push(kernel_release_check(release.as_deref()));
    namespace_checks(host, &mut checks);
    let features = kernel::KernelFeatures::load(host, release.as_deref());
    for feature in kernel::FEATURES {
        checks.push(feature_check(feature, features.availability(feature)));
    }
    checks.push(seccomp_check(host, skerry_runtime::seccomp::AVAILABLE));

    let cgroups = cgroup::inspect(host);
    cgroup_checks(&cgroups, &mut checks);

    let clock = clock::inspect(now);
    checks.push(Check {
        group: "clock",
        name: "time".into(),
        status: if clock.sane { Status::Ok } else { Status::Fail },
        required: true,
        detail: if clock.sane {
            format!("year {} (built {})", clock.year, clock.build_year)
        } else {
            format!(
                "clock says {} but this binary was built in {}: no RTC? wait for NTP \
                 (systemd-timesyncd) or set the time",
                clock.year, clock.build_year
            )
        },
    });

    let kernel = KernelInfo { release, config: features.config_source().map(String::from) };
    let ok = !checks.iter().any(|c| c.required && c.status == Status::Fail);
    Report { ok, arch, kernel, cgroup: cgroups, clock, checks }
}

fn arch_info(host: &Host) -> ArchInfo {
    let libc = if cfg!(target_env = "musl") { "musl" } else { "gnu" };
    ArchInfo { binary: std::env::consts::ARCH, libc, machine: host.machine().to_string() }
}

/// The binary must match the CPU; an ARMv7 build on an ARMv6 board (Pi Zero / Pi 1) dies with
/// SIGILL somewhere random, so say it up front.
fn arch_check(arch: &ArchInfo) -> Check {
    let built_for_v7 = cfg!(all(target_arch = "arm", target_feature = "v7"));
    let armv6_cpu = arch.machine.starts_with("armv6") || arch.machine.starts_with("armv5");
    let (status, detail) = if built_for_v7 && armv6_cpu {
        (
            Status::Fail,
            format!(
                "an ARMv7 build on an {} CPU: use the arm-unknown-linux-musleabihf build",
                arch.machine
            ),
        )
    } else {
        (Status::Ok, format!("{}-{} binary on {}", arch.binary, arch.libc, arch.machine))
    };
    Check { group: "arch", name: "cpu".into(), status, required: true, detail }
}

fn kernel_release_check(release: Option<&str>) -> Check {
    let (min_major, min_minor) = kernel::MIN_KERNEL;
    let (status, detail) = match release.map(|r| (r, kernel::parse_release(r))) {
        Some((r, Some((major, minor, _)))) if (major, minor) >= (min_major, min_minor) => {
            (Status::Ok, format!("{r} (need {min_major}.{min_minor} or later)"))
        }
        Some((r, Some(_))) => (Status::Fail, format!("{r} is older than {min_major}.{min_minor}")),
        Some((r, None)) => (Status::Warn, format!("cannot parse release {r:?}")),
        None => (Status::Warn, "/proc/sys/kernel/osrelease is unreadable".into()),
    };
    Check { group: "kernel", name: "release".into(), status, required: true, detail }
}

/// Namespaces the runtime unshares: required ones, then those it uses when present.
const NAMESPACES: &[(&str, &str, bool)] = &[
    ("mnt", "mount", true),
    ("uts", "uts", true),
    ("ipc", "ipc", true),
    ("pid", "pid", true),
    ("net", "net", true),
    ("cgroup", "cgroup", false),
    ("user", "user", false),
];

fn namespace_checks(host: &Host, checks: &mut Vec<Check>) {
    for &(file, name, required) in NAMESPACES {
        let present = host.exists(&format!("/proc/self/ns/{file}"));
        let mut status = match (present, required) {
            (true, _) => Status::Ok,
            (false, true) => Status::Fail,
            (false, false) => Status::Warn,
        };
        let mut detail =
            if present { format!("/proc/self/ns/{file}") } else { "not in this kernel".into() };
        if present && name == "user" {
            let max = host.read("/proc/sys/user/max_user_namespaces");
            if max.as_deref().map(str::trim) == Some("0") {
                status = Status::Warn;
                detail = "disabled (user.max_user_namespaces = 0)".into();
            }
        }
        checks.push(Check { group: "namespace", name: name.into(), status, required, detail });
    }
}

fn feature_check(feature: &kernel::Feature, availability: kernel::Availability) -> Check {
    use kernel::Availability::*;
    let missing = if feature.required { Status::Fail } else { Status::Warn };
    let (status, detail) = match availability {
        BuiltIn(why) => (Status::Ok, format!("built in ({why})")),
        Loaded => (Status::Ok, "module loaded".into()),
        Loadable(why) => (Status::Ok, format!("module, loaded on first use ({why})")),
        Missing(why) => (missing, format!("{why}; needed for {}", feature.used_for)),
        Unknown => (
            Status::Warn,
            format!(
                "no kernel config or module list to tell (enable CONFIG_IKCONFIG_PROC); \
                 needed for {}",
                feature.used_for
            ),
        ),
    };
    Check {
        group: "feature",
        name: feature.name.into(),
        status,
        required: feature.required,
        detail,
    }
}

/// Seccomp needs both the kernel's support and a binary built with it (`built_in`: the runtime's
/// `seccomp` feature, left out of the static musl builds).
fn seccomp_check(host: &Host, built_in: bool) -> Check {
    let present = host
        .read("/proc/self/status")
        .is_some_and(|s| s.lines().any(|l| l.starts_with("Seccomp:")));
    let detail = match (present, built_in) {
        (true, true) => "Seccomp in /proc/self/status".into(),
        (false, _) => "kernel without CONFIG_SECCOMP: pods run without syscall filters".into(),
        (true, false) => "this build has no seccomp support (no libseccomp, as in the static musl \
            builds): containers asking for a RuntimeDefault or Localhost profile fail to start"
            .into(),
    };
    Check {
        group: "feature",
        name: "seccomp".into(),
        status: if present && built_in { Status::Ok } else { Status::Warn },
        required: false,
        detail,
    }
}

fn cgroup_checks(info: &cgroup::CgroupInfo, checks: &mut Vec<Check>) {
    let mode = match info.mode {
        cgroup::CgroupMode::Unified => (Status::Ok, "v2 (unified)"),
        cgroup::CgroupMode::Hybrid => (Status::Ok, "hybrid: v1 controllers, v2 tree beside them"),
        cgroup::CgroupMode::Legacy => (Status::Ok, "v1 (legacy)"),
        cgroup::CgroupMode::None => (Status::Fail, "no cgroup file system mounted"),
    };
    checks.push(Check {
        group: "cgroup",
        name: "version".into(),
        status: mode.0,
        required: true,
        detail: mode.1.into(),
    });
    let wanted = cgroup::REQUIRED_CONTROLLERS.iter().map(|c| (c, true));
    let optional = cgroup::OPTIONAL_CONTROLLERS.iter().map(|c| (c, false));
    for (&name, required) in wanted.chain(optional) {
        let (status, detail) = match info.controllers.get(name) {
            Some(version) => (Status::Ok, format!("via cgroup {version}")),
            None if info.disabled.iter().any(|d| d == name) => (
                if required { Status::Fail } else { Status::Warn },
                format!("disabled at boot: add cgroup_enable={name} to the kernel command line"),
            ),
            None => {
                (if required { Status::Fail } else { Status::Warn }, "not available".to_string())
            }
        };
        checks.push(Check { group: "cgroup", name: name.into(), status, required, detail });
    }
}

#[cfg(test)]
mod tests;
