//! The RuntimeDefault seccomp profile.
//!
//! Docker's and containerd's default profile is an allow-list of ~350 system calls. Ours is the
//! complement for the calls that matter: everything is allowed except the system calls that
//! profile refuses to a container without extra capabilities (kernel modules, kexec, reboot,
//! mount, namespace creation, keyrings, BPF, perf, clock setting, ptrace-like memory access…),
//! which fail with EPERM. Most are already refused by the default capability set; the profile
//! is the second wall, as in the reference runtimes. Names unknown on an architecture are skipped
//! by libseccomp.
//!
//! Filters are loaded by libcontainer through libseccomp, behind this crate's `seccomp` feature
//! (default on). A build without it (the static musl builds in `cross/`) cannot filter: libcontainer
//! would then skip `linux.seccomp` with only a warning inside the container's init, so
//! [`ensure_available`] refuses such containers instead, as containerd does on a kernel without
//! seccomp. Unconfined containers (the default when a pod names no profile) are unaffected.

use serde_json::{json, Value};

use crate::spec::SeccompProfile;
use crate::{Error, Result};

/// Whether this build can apply seccomp profiles (the `seccomp` feature links libseccomp).
pub const AVAILABLE: bool = cfg!(feature = "seccomp");

/// Refuses a confining `profile` when this build cannot apply it, rather than starting the
/// container unconfined behind the pod's back.
pub fn ensure_available(profile: &SeccompProfile) -> Result<()> {
    if AVAILABLE || matches!(profile, SeccompProfile::Unconfined) {
        return Ok(());
    }
    let name = match profile {
        SeccompProfile::RuntimeDefault => "RuntimeDefault".to_string(),
        SeccompProfile::Localhost(path) => format!("Localhost {}", path.display()),
        SeccompProfile::Unconfined => "Unconfined".to_string(),
    };
    Err(Error::InvalidSpec(format!(
        "seccomp profile {name} requested, but this skerry build has no seccomp support (built \
         without the `seccomp` feature, as the static musl builds are); use a glibc build of the \
         agent on this node, or run the pod Unconfined"
    )))
}

/// System calls refused with EPERM under RuntimeDefault.
pub const BLOCKED_SYSCALLS: [&str; 46] = [
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "init_module",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mount",
    "mount_setattr",
    "move_mount",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "query_module",
    "quotactl",
    "reboot",
    "request_key",
    "setns",
    "settimeofday",
    "swapoff",
    "swapon",
    "sysfs",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
];

/// The OCI `linux.seccomp` object of the RuntimeDefault profile.
pub fn runtime_default() -> Value {
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": [
            "SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32",
            "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"
        ],
        "syscalls": [{
            "names": BLOCKED_SYSCALLS.as_slice(),
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": libc::EPERM,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unconfined_needs_no_seccomp_support() {
        assert!(ensure_available(&SeccompProfile::Unconfined).is_ok());
    }

    #[cfg(feature = "seccomp")]
    #[test]
    fn profiles_are_accepted_when_built_with_seccomp() {
        assert!(ensure_available(&SeccompProfile::RuntimeDefault).is_ok());
        assert!(ensure_available(&SeccompProfile::Localhost("/p.json".into())).is_ok());
    }

    #[cfg(not(feature = "seccomp"))]
    #[test]
    fn profiles_are_refused_without_seccomp_support() {
        for profile in [SeccompProfile::RuntimeDefault, SeccompProfile::Localhost("/p.json".into())]
        {
            let err = ensure_available(&profile).unwrap_err().to_string();
            assert!(err.contains("no seccomp support"), "{err}");
        }
    }

    #[test]
    fn profile_parses_as_an_oci_seccomp_object() {
        let parsed: oci_spec::runtime::LinuxSeccomp =
            serde_json::from_value(runtime_default()).unwrap();
        assert_eq!(parsed.syscalls().as_ref().unwrap()[0].names().len(), BLOCKED_SYSCALLS.len());
    }
}
