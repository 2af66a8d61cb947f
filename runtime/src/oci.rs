//! Builds the OCI runtime spec (`config.json`) of a container from its plain-data spec and its
//! sandbox, with the security defaults of containerd/runc: the default capability set,
//! `no_new_privs` unless escalation is allowed, masked and read-only `/proc` paths, read-only
//! cgroup mounts (libcontainer leaves v1 cgroup mounts writable: they go to `readonlyPaths`),
//! a RuntimeDefault seccomp profile and a device allow-list.

use std::path::Path;

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::seccomp;
use crate::spec::{ContainerSpec, ProcMount, SeccompProfile};

/// The capabilities containerd gives a container by default.
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability of Linux 6.x, in bit order (`CAP_CHOWN` = bit 0); a privileged container
/// gets those the agent itself holds (`all_current_capabilities`).
const ALL_CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Paths hidden from containers (containerd's list).
pub const MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths made read-only in containers (containerd's list).
pub const READONLY_PATHS: [&str; 5] =
    ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// What the spec needs from the sandbox and the runtime besides the container spec.
#[derive(Debug, Clone)]
pub struct OciContext {
    /// Namespace paths to join: (type, path); a type absent from both lists is the host's.
    pub join_namespaces: Vec<(&'static str, String)>,
    /// Namespaces to create new.
    pub new_namespaces: Vec<&'static str>,
    /// The container's cgroup path.
    pub cgroup_path: String,
    /// Files of the sandbox bind-mounted into the container: (host path, container path, ro).
    pub sandbox_files: Vec<(String, String, bool)>,
    /// Names of the cgroup v1 hierarchies (read-only paths inside the container).
    pub cgroup_hierarchies: Vec<String>,
}

/// Capability name normalised to `CAP_X` upper case.
fn cap_name(name: &str) -> String {
    let upper = name.trim().to_ascii_uppercase();
    if upper.starts_with("CAP_") || upper == "ALL" {
        upper
    } else {
        format!("CAP_{upper}")
    }
}

/// The effective capability set after privileged/add/drop (Kubernetes semantics).
pub fn capabilities(spec: &ContainerSpec) -> Vec<String> {
    let sec = &spec.security;
    if sec.privileged {
        return all_current_capabilities();
    }
    let drop: Vec<String> = sec.capabilities_drop.iter().map(|c| cap_name(c)).collect();
    let add: Vec<String> = sec.capabilities_add.iter().map(|c| cap_name(c)).collect();
    let mut caps: Vec<String> = if drop.iter().any(|c| c == "ALL") {
        Vec::new()
    } else {
        DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).filter(|c| !drop.contains(c)).collect()
    };
    let added: Vec<String> =
        if add.iter().any(|c| c == "ALL") { all_current_capabilities() } else { add };
    for cap in added {
        if !caps.contains(&cap) {
            caps.push(cap);
        }
    }
    caps
}

/// Every capability in this process's bounding set, like containerd's privileged containers:
/// asking for one the agent lacks (a node that itself runs in a restricted container or VM)
/// would make the container fail to start.
fn all_current_capabilities() -> Vec<String> {
    let bounding = std::fs::read_to_string("/proc/self/status").ok().and_then(|status| {
        let hex = status.lines().find_map(|l| l.strip_prefix("CapBnd:"))?;
        u64::from_str_radix(hex.trim(), 16).ok()
    });
    capabilities_in(bounding.unwrap_or(u64::MAX))
}

/// The names of the capabilities whose bits are set in `mask`.
fn capabilities_in(mask: u64) -> Vec<String> {
    ALL_CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(bit, _)| mask & (1u64 << bit) != 0)
        .map(|(_, c)| c.to_string())
        .collect()
}

/// The (uid, gid) the process runs as: securityContext first, then the image's `User`.
pub fn user(spec: &ContainerSpec) -> Result<(u32, u32)> {
    let (mut uid, mut gid) = (0, 0);
    if let Some(user) = spec.image.user.as_deref().filter(|u| !u.is_empty()) {
        let (u, g) = user.split_once(':').unwrap_or((user, ""));
        uid = u.parse().map_err(|_| {
            Error::InvalidSpec(format!(
                "image user {user:?} is not numeric (names are not resolved)"
            ))
        })?;
        if !g.is_empty() {
            gid = g
                .parse()
                .map_err(|_| Error::InvalidSpec(format!("image group {g:?} is not numeric")))?;
        }
    }
    if let Some(u) = spec.security.run_as_user {
        uid = u;
    }
    if let Some(g) = spec.security.run_as_group {
        gid = g;
    }
    if spec.security.run_as_non_root && uid == 0 {
        return Err(Error::InvalidSpec(
            "runAsNonRoot is set but the container would run as root (uid 0)".into(),
        ));
    }
    Ok((uid, gid))
}

/// The device cgroup rules: deny all, then the usual character devices (all for privileged).
fn device_rules(privileged: bool) -> Value {
    if privileged {
        return json!([{ "allow": true, "access": "rwm" }]);
    }
    let allow = |major: i64, minor: Option<i64>| {
        let mut rule = json!({ "allow": true, "type": "c", "major": major, "access": "rwm" });
        // No minor means every minor (the `*` of devices.allow).
        if let Some(minor) = minor {
            rule["minor"] = json!(minor);
        }
        rule
    };
    json!([
        { "allow": false, "access": "rwm" },
        allow(1, Some(3)),
        allow(1, Some(5)),
        allow(1, Some(7)),
        allow(1, Some(8)),
        allow(1, Some(9)),
        allow(5, Some(0)),
        allow(5, Some(1)),
        allow(5, Some(2)),
        allow(136, None),
    ])
}

/// The `linux.resources` object.
fn resources(spec: &ContainerSpec) -> Value {
    let r = &spec.resources;
    let mut out = json!({ "devices": device_rules(spec.security.privileged) });
    let mut cpu = serde_json::Map::new();
    if let Some(shares) = r.cpu_shares {
        cpu.insert("shares".into(), json!(shares));
    }
    if let Some(quota) = r.cpu_quota {
        cpu.insert("quota".into(), json!(quota));
        cpu.insert("period".into(), json!(r.cpu_period.unwrap_or(crate::spec::DEFAULT_CPU_PERIOD)));
    }
    if !cpu.is_empty() {
        out["cpu"] = Value::Object(cpu);
    }
    if let Some(limit) = r.memory_limit {
        out["memory"] = json!({ "limit": limit });
    }
    if let Some(pids) = r.pids_limit {
        out["pids"] = json!({ "limit": pids });
    }
    out
}

/// The standard mounts (proc, dev, sys, cgroup) plus the sandbox's and the caller's.
fn mounts(spec: &ContainerSpec, ctx: &OciContext) -> Vec<Value> {
    let sys_opts = if spec.security.privileged { "rw" } else { "ro" };
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", sys_opts]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", sys_opts]}),
    ];
    for (source, destination, ro) in &ctx.sandbox_files {
        let mode = if *ro { "ro" } else { "rw" };
        mounts.push(json!({"destination": destination, "type": "bind", "source": source, "options": ["rbind", "rprivate", mode]}));
    }
    for m in &spec.mounts {
        let mode = if m.read_only { "ro" } else { "rw" };
        mounts.push(json!({"destination": m.destination, "type": "bind", "source": m.source, "options": ["rbind", "rprivate", mode]}));
    }
    mounts
}

/// The seccomp object for the container, if any.
fn seccomp_section(spec: &ContainerSpec) -> Result<Option<Value>> {
    if spec.security.privileged {
        return Ok(None);
    }
    seccomp::ensure_available(&spec.security.seccomp)?;
    match &spec.security.seccomp {
        SeccompProfile::Unconfined => Ok(None),
        SeccompProfile::RuntimeDefault => Ok(Some(seccomp::runtime_default())),
        SeccompProfile::Localhost(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Error::InvalidSpec(format!("seccomp profile {}: {e}", path.display()))
            })?;
            let value: Value = serde_json::from_str(&text).map_err(|e| {
                Error::InvalidSpec(format!("seccomp profile {}: {e}", path.display()))
            })?;
            Ok(Some(value))
        }
    }
}

/// Builds the OCI runtime spec document.
pub fn build_spec(spec: &ContainerSpec, ctx: &OciContext, rootfs: &Path) -> Result<Value> {
    let args = spec.process_args();
    if args.is_empty() {
        return Err(Error::InvalidSpec(
            "no command: neither the spec nor the image gives one".into(),
        ));
    }
    let (uid, gid) = user(spec)?;
    let caps = capabilities(spec);
    let no_new_privs =
        !spec.security.privileged && spec.security.allow_privilege_escalation == Some(false);
    let cwd = spec
        .working_dir
        .clone()
        .or_else(|| spec.image.working_dir.clone())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        return Err(Error::InvalidSpec(format!("working dir {cwd:?} is not absolute")));
    }
    let unmasked = spec.security.privileged || spec.security.proc_mount == ProcMount::Unmasked;
    let masked: Vec<&str> = if unmasked { Vec::new() } else { MASKED_PATHS.to_vec() };
    let mut readonly: Vec<String> =
        if unmasked { Vec::new() } else { READONLY_PATHS.iter().map(|p| p.to_string()).collect() };
    if !spec.security.privileged {
        readonly.extend(ctx.cgroup_hierarchies.iter().map(|h| format!("/sys/fs/cgroup/{h}")));
    }
    let mut namespaces: Vec<Value> =
        ctx.new_namespaces.iter().map(|t| json!({ "type": t })).collect();
    namespaces.extend(ctx.join_namespaces.iter().map(|(t, p)| json!({ "type": t, "path": p })));
    let mut linux = json!({
        "namespaces": namespaces,
        "cgroupsPath": ctx.cgroup_path,
        "resources": resources(spec),
        "maskedPaths": masked,
        "readonlyPaths": readonly,
    });
    if let Some(seccomp) = seccomp_section(spec)? {
        linux["seccomp"] = seccomp;
    }
    let mut doc = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": spec.tty,
            "user": { "uid": uid, "gid": gid, "additionalGids": spec.security.supplemental_groups },
            "args": args,
            "env": spec.process_env(),
            "cwd": cwd,
            "capabilities": { "bounding": caps, "effective": caps, "permitted": caps },
        },
        "root": { "path": rootfs, "readonly": spec.security.read_only_root_filesystem },
        "mounts": mounts(spec, ctx),
        "linux": linux,
    });
    // libcontainer loads seccomp late (after dropping capabilities, which fails without
    // no_new_privs) whenever the field is present, even as `false`: only write it when true.
    if no_new_privs {
        doc["process"]["noNewPrivileges"] = json!(true);
    }
    // Validate against the typed spec so a mistake here fails at create, with a clear message.
    serde_json::from_value::<oci_spec::runtime::Spec>(doc.clone())
        .map_err(|e| Error::InvalidSpec(format!("generated OCI spec is invalid: {e}")))?;
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{ImageConfig, SecurityContext};

    fn ctx() -> OciContext {
        OciContext {
            join_namespaces: vec![("network", "/run/ns/net".into())],
            new_namespaces: vec!["pid", "mount"],
            cgroup_path: "/kubepods/podx/c".into(),
            sandbox_files: Vec::new(),
            cgroup_hierarchies: vec!["memory".into()],
        }
    }

    fn spec() -> ContainerSpec {
        ContainerSpec {
            image: ImageConfig {
                cmd: vec!["/bin/sh".into()],
                user: Some("1000:1001".into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn default_spec_has_default_caps_masks_and_readonly_cgroups() {
        let doc = build_spec(&spec(), &ctx(), Path::new("/r")).unwrap();
        assert_eq!(doc["process"]["capabilities"]["bounding"].as_array().unwrap().len(), 14);
        assert_eq!(doc["process"]["user"]["uid"], 1000);
        assert_eq!(doc["process"]["user"]["gid"], 1001);
        assert!(doc["process"]["noNewPrivileges"].is_null());
        let ro = doc["linux"]["readonlyPaths"].as_array().unwrap();
        assert!(ro.contains(&json!("/sys/fs/cgroup/memory")));
        assert!(doc["linux"]["maskedPaths"].as_array().unwrap().contains(&json!("/proc/kcore")));
        assert!(doc["linux"]["seccomp"].is_object());
        assert_eq!(doc["linux"]["namespaces"][2]["path"], "/run/ns/net");
    }

    #[test]
    fn security_context_fields_change_the_spec() {
        let mut s = spec();
        s.security = SecurityContext {
            capabilities_drop: vec!["ALL".into()],
            capabilities_add: vec!["net_admin".into()],
            allow_privilege_escalation: Some(false),
            run_as_user: Some(5),
            seccomp: SeccompProfile::Unconfined,
            proc_mount: ProcMount::Unmasked,
            read_only_root_filesystem: true,
            ..Default::default()
        };
        let doc = build_spec(&s, &ctx(), Path::new("/r")).unwrap();
        assert_eq!(doc["process"]["capabilities"]["effective"], json!(["CAP_NET_ADMIN"]));
        assert_eq!(doc["process"]["noNewPrivileges"], true);
        assert_eq!(doc["process"]["user"]["uid"], 5);
        assert!(doc["linux"]["seccomp"].is_null());
        assert!(doc["linux"]["maskedPaths"].as_array().unwrap().is_empty());
        assert_eq!(doc["root"]["readonly"], true);
    }

    #[test]
    fn capability_masks_map_to_names_in_bit_order() {
        assert_eq!(capabilities_in(0b1), vec!["CAP_CHOWN"]);
        // This machine's bounding set lacks CAP_SYS_RESOURCE (bit 24).
        let caps = capabilities_in(0x01ff_feff_ffff);
        assert_eq!(caps.len(), ALL_CAPABILITIES.len() - 1);
        assert!(!caps.iter().any(|c| c == "CAP_SYS_RESOURCE"));
        assert_eq!(capabilities_in(u64::MAX).len(), ALL_CAPABILITIES.len());
    }

    #[test]
    fn privileged_gets_all_caps_and_devices() {
        let mut s = spec();
        s.security.privileged = true;
        let doc = build_spec(&s, &ctx(), Path::new("/r")).unwrap();
        assert_eq!(
            doc["process"]["capabilities"]["bounding"].as_array().unwrap().len(),
            all_current_capabilities().len()
        );
        assert_eq!(
            doc["linux"]["resources"]["devices"],
            json!([{ "allow": true, "access": "rwm" }])
        );
    }

    #[test]
    fn run_as_non_root_refuses_uid_zero_and_names_are_rejected() {
        let mut s = spec();
        s.image.user = None;
        s.security.run_as_non_root = true;
        assert!(matches!(user(&s), Err(Error::InvalidSpec(_))));
        s.image.user = Some("nobody".into());
        assert!(matches!(user(&s), Err(Error::InvalidSpec(_))));
    }

    #[test]
    fn limits_are_written_to_linux_resources() {
        let mut s = spec();
        s.resources = crate::spec::Resources {
            memory_limit: Some(1 << 20),
            pids_limit: Some(10),
            ..Default::default()
        }
        .with_cpus(0.25);
        let doc = build_spec(&s, &ctx(), Path::new("/r")).unwrap();
        let r = &doc["linux"]["resources"];
        assert_eq!(r["cpu"]["quota"], 25_000);
        assert_eq!(r["cpu"]["period"], 100_000);
        assert_eq!(r["memory"]["limit"], 1 << 20);
        assert_eq!(r["pids"]["limit"], 10);
    }

    #[test]
    fn empty_command_is_a_clear_error() {
        let s = ContainerSpec::default();
        let err = build_spec(&s, &ctx(), Path::new("/r")).unwrap_err();
        assert!(err.to_string().contains("no command"), "{err}");
    }
}
