//! Pod sandboxes without a pause process: the pod's network, IPC and UTS namespaces are created
//! on a short-lived thread that unshares them, sets the hostname and bind-mounts its
//! `/proc/thread-self/ns/*` files into the sandbox dir; the bind mounts keep the namespaces
//! alive, and containers join them by path. The sandbox also owns the pod's `/dev/shm` (a tmpfs,
//! shared like the IPC namespace), `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf`.
//!
//! The network inside the namespace is someone else's job: a `SandboxNetwork` hook runs after the
//! namespace exists and before it is destroyed.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::CloneFlags;
use serde::{Deserialize, Serialize};

use crate::error::{io_err, sys_err, Error, Result};
use crate::spec::SandboxSpec;

/// What the network hook reports about a pod's network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkStatus {
    /// The pod's IP addresses (first is primary).
    pub ips: Vec<String>,
}

/// Sets up and tears down a pod's network inside its network namespace (netproxy implements it).
pub trait SandboxNetwork: Send + Sync {
    /// Called once the sandbox's network namespace exists at `netns`.
    fn setup(&self, sandbox_id: &str, netns: &Path) -> std::result::Result<NetworkStatus, String>;
    /// Called before the namespace is destroyed (also during garbage collection).
    fn teardown(&self, sandbox_id: &str, netns: &Path) -> std::result::Result<(), String>;
}

/// A network hook that only brings up the loopback interface (`ctr run`, tests).
#[derive(Debug, Default, Clone, Copy)]
pub struct LoopbackOnly;

impl SandboxNetwork for LoopbackOnly {
    fn setup(&self, _sandbox_id: &str, netns: &Path) -> std::result::Result<NetworkStatus, String> {
        let netns = netns.to_path_buf();
        in_netns(&netns, || loopback_up().map_err(|e| format!("bringing up lo: {e}")))?;
        Ok(NetworkStatus { ips: vec!["127.0.0.1".into()] })
    }

    fn teardown(&self, _sandbox_id: &str, _netns: &Path) -> std::result::Result<(), String> {
        Ok(())
    }
}

/// Runs `f` on a fresh thread that has joined the network namespace at `netns`.
pub fn in_netns<T: Send + 'static>(
    netns: &Path,
    f: impl FnOnce() -> std::result::Result<T, String> + Send + 'static,
) -> std::result::Result<T, String> {
    let netns = netns.to_path_buf();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&netns).map_err(|e| format!("{}: {e}", netns.display()))?;
        nix::sched::setns(file, CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns: {e}"))?;
        f()
    })
    .join()
    .map_err(|_| "network thread panicked".to_string())?
}

/// Sets IFF_UP on `lo` in the calling thread's network namespace.
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: plain socket/ioctl calls on a zeroed ifreq with a NUL-terminated name.
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        let mut result = libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req);
        if result == 0 {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            result = libc::ioctl(sock, libc::SIOCSIFFLAGS, &req);
        }
        let err = std::io::Error::last_os_error();
        libc::close(sock);
        if result < 0 {
            return Err(err);
        }
    }
    Ok(())
}

/// The namespaces a sandbox holds, by OCI type name and file name.
pub const SANDBOX_NAMESPACES: [(&str, &str, CloneFlags); 3] = [
    ("network", "net", CloneFlags::CLONE_NEWNET),
    ("ipc", "ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", "uts", CloneFlags::CLONE_NEWUTS),
];

/// Which of the sandbox namespaces a spec asks for (host* flags opt out).
pub fn wanted_namespaces(spec: &SandboxSpec) -> Vec<(&'static str, &'static str, CloneFlags)> {
    SANDBOX_NAMESPACES
        .iter()
        .copied()
        .filter(|(typ, _, _)| match *typ {
            "network" | "uts" => !spec.host_network,
            "ipc" => !spec.host_ipc,
            _ => true,
        })
        .collect()
}

/// Creates the namespaces of a sandbox and bind-mounts them under `dir/ns`.
pub fn create_namespaces(dir: &Path, spec: &SandboxSpec) -> Result<()> {
    let wanted = wanted_namespaces(spec);
    if wanted.is_empty() {
        return Ok(());
    }
    let ns_dir = dir.join("ns");
    std::fs::create_dir_all(&ns_dir).map_err(io_err("creating", &ns_dir))?;
    for (_, file, _) in &wanted {
        let target = ns_dir.join(file);
        std::fs::File::create(&target).map_err(io_err("creating", &target))?;
    }
    let hostname = spec.hostname.clone();
    let flags = wanted.iter().fold(CloneFlags::empty(), |acc, (_, _, f)| acc | *f);
    let files: Vec<&'static str> = wanted.iter().map(|(_, f, _)| *f).collect();
    // unshare() on a dedicated thread changes only that thread's namespaces, never the agent's.
    std::thread::spawn(move || -> Result<()> {
        nix::sched::unshare(flags).map_err(sys_err("unshare sandbox namespaces"))?;
        if flags.contains(CloneFlags::CLONE_NEWUTS) && !hostname.is_empty() {
            nix::unistd::sethostname(&hostname).map_err(sys_err("sethostname"))?;
        }
        for file in files {
            let source = PathBuf::from(format!("/proc/thread-self/ns/{file}"));
            let target = ns_dir.join(file);
            mount(Some(&source), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
                .map_err(sys_err(format!("bind-mounting {}", target.display())))?;
        }
        Ok(())
    })
    .join()
    .map_err(|_| Error::InvalidState("namespace thread panicked".into()))?
}

/// Creates the pod's /dev/shm tmpfs and its /etc files.
pub fn create_files(dir: &Path, spec: &SandboxSpec) -> Result<()> {
    let shm = dir.join("shm");
    std::fs::create_dir_all(&shm).map_err(io_err("creating", &shm))?;
    if !spec.host_ipc {
        mount(
            Some("shm"),
            &shm,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("mode=1777,size=65536k"),
        )
        .map_err(sys_err(format!("mounting tmpfs on {}", shm.display())))?;
    }
    let etc = dir.join("etc");
    std::fs::create_dir_all(&etc).map_err(io_err("creating", &etc))?;
    let hostname = if spec.host_network {
        nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default()
    } else {
        spec.hostname.clone()
    };
    let write = |name: &str, text: &str| {
        let path = etc.join(name);
        std::fs::write(&path, text).map_err(io_err("writing", &path))
    };
    write("hostname", &format!("{hostname}\n"))?;
    let mut hosts =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    if !hostname.is_empty() {
        hosts.push_str(&format!("127.0.1.1\t{hostname}\n"));
    }
    for line in &spec.extra_hosts {
        hosts.push_str(line);
        hosts.push('\n');
    }
    write("hosts", &hosts)?;
    let resolv = match &spec.resolv_conf {
        Some(text) => text.clone(),
        None => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    };
    write("resolv.conf", &resolv)
}

/// The sandbox files bind-mounted into each container: (host, container, read-only).
pub fn container_files(dir: &Path) -> Vec<(String, String, bool)> {
    let p = |rel: &str| dir.join(rel).display().to_string();
    vec![
        (p("etc/hostname"), "/etc/hostname".into(), false),
        (p("etc/hosts"), "/etc/hosts".into(), false),
        (p("etc/resolv.conf"), "/etc/resolv.conf".into(), false),
        (p("shm"), "/dev/shm".into(), false),
    ]
}

/// Unmounts everything a sandbox holds and removes its directory (idempotent).
pub fn destroy(dir: &Path) -> Result<()> {
    for (_, file, _) in SANDBOX_NAMESPACES {
        unmount_if_mounted(&dir.join("ns").join(file))?;
    }
    unmount_if_mounted(&dir.join("shm"))?;
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("removing sandbox dir", dir)(e)),
    }
}

/// Lazily unmounts `path` if something is mounted there.
fn unmount_if_mounted(path: &Path) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(sys_err(format!("unmounting {}", path.display()))(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_flags_opt_out_of_namespaces() {
        let mut spec = SandboxSpec::default();
        let names = |s: &SandboxSpec| wanted_namespaces(s).iter().map(|n| n.0).collect::<Vec<_>>();
        assert_eq!(names(&spec), ["network", "ipc", "uts"]);
        spec.host_network = true;
        assert_eq!(names(&spec), ["ipc"]);
        spec.host_ipc = true;
        assert!(names(&spec).is_empty());
    }
}
