//! The on-disk state: one directory per sandbox and per container under the runtime's state
//! dir, with JSON records written atomically (write to a temporary file, then rename). It is the
//! only source of truth: a new `Runtime` (after an agent restart) reads it back, and the monitor
//! processes write the exit of their container into it.
//!
//! ```text
//! <state>/sandboxes/<id>/sandbox.json      SandboxRecord
//!                       /ns/{net,ipc,uts}   bind-mounted namespace files
//!                       /etc/{hostname,hosts,resolv.conf}
//!                       /shm                the pod's /dev/shm (tmpfs)
//! <state>/containers/<id>/container.json   ContainerRecord
//!                        /bundle/config.json  the OCI spec
//!                        /lc/                 libcontainer's state
//!                        /monitor.json        MonitorRecord (pids, start time)
//!                        /exit.json           ExitRecord (written once, by the monitor)
//!                        /monitor.sock        the monitor's control socket
//!                        /monitor.lock        held by the monitor until its cleanup is done
//!                        /container.log[.N]   CRI logs (unless the spec names a log path)
//! <state>/removed/<id>/                    a removed container's dir, being deleted
//! ```

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{io_err, Error, Result};
use crate::spec::{ContainerSpec, SandboxSpec};

/// A sandbox as persisted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxRecord {
    /// The sandbox id.
    pub id: String,
    /// The spec it was created from.
    pub spec: SandboxSpec,
    /// The pod cgroup path.
    pub cgroup_path: String,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// The network hook's result (e.g. the pod IP), if it ran.
    pub network: Option<crate::NetworkStatus>,
    /// Creation finished (a record still `false` at startup is a crash leftover).
    pub ready: bool,
}

/// A container as persisted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// The container id.
    pub id: String,
    /// The sandbox it belongs to.
    pub sandbox_id: String,
    /// The spec it was created from.
    pub spec: ContainerSpec,
    /// The container cgroup path.
    pub cgroup_path: String,
    /// The CRI log file.
    pub log_path: PathBuf,
    /// Creation time (RFC 3339).
    pub created_at: String,
}

/// What the monitor reports once the container exists.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MonitorRecord {
    /// The monitor's pid.
    pub monitor_pid: i32,
    /// The container's init pid (host namespace).
    pub init_pid: i32,
    /// Start time of the init process in clock ticks since boot (guards against pid reuse).
    pub init_start_ticks: u64,
    /// When the process was started (RFC 3339), once it was.
    pub started_at: Option<String>,
}

/// How a container ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// The exit code (128 + signal number when killed by a signal).
    pub exit_code: i32,
    /// The signal that killed it, if any.
    pub signal: Option<i32>,
    /// Whether the memory cgroup OOM-killed a process of it.
    pub oom_killed: bool,
    /// `Completed`, `Error` or `OOMKilled` (the Kubernetes reasons).
    pub reason: String,
    /// When the monitor saw the exit (RFC 3339).
    pub finished_at: String,
}

/// The state dir and the paths inside it.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Opens (creates) the state dir; the path is made absolute.
    pub fn open(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root.join("sandboxes"))
            .map_err(io_err("creating state dir", root))?;
        std::fs::create_dir_all(root.join("containers"))
            .map_err(io_err("creating state dir", root))?;
        std::fs::create_dir_all(root.join("removed"))
            .map_err(io_err("creating state dir", root))?;
        let root = std::fs::canonicalize(root).map_err(io_err("resolving state dir", root))?;
        Ok(StateDir { root })
    }

    /// The state dir's root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A sandbox's directory.
    pub fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.root.join("sandboxes").join(id)
    }

    /// A container's directory.
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }

    /// Where a removed container's dir goes until its files are deleted (see `trash.rs`).
    pub fn removed_dir(&self, id: &str) -> PathBuf {
        self.root.join("removed").join(id)
    }

    /// The ids of removed containers whose files are not deleted yet.
    pub fn removed_ids(&self) -> Vec<String> {
        list_dirs(&self.root.join("removed"))
    }

    /// The ids of all sandbox directories.
    pub fn sandbox_ids(&self) -> Vec<String> {
        list_dirs(&self.root.join("sandboxes"))
    }

    /// The ids of all container directories.
    pub fn container_ids(&self) -> Vec<String> {
        list_dirs(&self.root.join("containers"))
    }
}

/// The names of the directories in `dir`, sorted.
fn list_dirs(dir: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

/// The lock a container's monitor holds from its start until its cleanup after the exit is done
/// (an exclusive `flock` on `monitor.lock`; the monitor's end releases it, also when it is
/// killed). Removal takes it before it deletes anything, so that removal and the monitor never
/// work on the container's files at the same time.
pub struct ContainerLock {
    _file: nix::fcntl::Flock<std::fs::File>,
}

impl ContainerLock {
    /// Takes the lock of the container in `dir` without waiting: `Ok(None)` while another
    /// process holds it; an error with `NotFound` if the dir is gone.
    pub fn try_lock(dir: &Path) -> std::io::Result<Option<ContainerLock>> {
        // std opens with O_CLOEXEC: the container's process drops its copy when it execs.
        let file = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("monitor.lock"))?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(file) => Ok(Some(ContainerLock { _file: file })),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, errno)) => Err(std::io::Error::from(errno)),
        }
    }
}

/// Writes `value` as JSON to `path` atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(value)
        .map_err(|source| Error::State { path: path.to_path_buf(), source })?;
    std::fs::write(&tmp, text).map_err(io_err("writing", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err("renaming", path))
}

/// Reads a JSON record; `Ok(None)` when the file does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| Error::State { path: path.to_path_buf(), source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("reading", path)(e)),
    }
}

/// A new random id: 16 hex digits (short enough for socket paths, unique enough per node).
pub fn new_id() -> String {
    let mut bytes = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_err()
    {
        // No /dev/urandom: time and pid still make collisions unlikely on one node.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes = ((nanos as u64) ^ (u64::from(std::process::id()) << 32)).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The start time of a process in clock ticks since boot (field 22 of /proc/PID/stat).
pub fn process_start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

/// Whether the process `pid` is alive and is the one that started at `start_ticks`.
pub fn process_matches(pid: i32, start_ticks: u64) -> bool {
    pid > 0 && process_start_ticks(pid) == Some(start_ticks) && !is_zombie(pid)
}

/// A zombie has exited; only its parent has not reaped it yet.
fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
        .unwrap_or(false)
}

/// Validates a user-given name: non-empty, at most 128 bytes, `[A-Za-z0-9_.-]`.
pub fn validate_name(kind: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidSpec(format!(
            "{kind} name {name:?} must be 1-128 characters of letters, digits, '_', '.', '-'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exit.json");
        assert!(read_json::<ExitRecord>(&path).unwrap().is_none());
        let rec = ExitRecord {
            exit_code: 137,
            signal: Some(9),
            oom_killed: true,
            reason: "OOMKilled".into(),
            finished_at: "t".into(),
        };
        write_json(&path, &rec).unwrap();
        assert_eq!(read_json::<ExitRecord>(&path).unwrap(), Some(rec));
        std::fs::write(&path, "{").unwrap();
        assert!(matches!(read_json::<ExitRecord>(&path), Err(Error::State { .. })));
    }

    #[test]
    fn ids_are_unique_hex_and_names_validated() {
        let a = new_id();
        assert_eq!(a.len(), 16);
        assert_ne!(a, new_id());
        assert!(validate_name("container", "web-1.a_b").is_ok());
        assert!(validate_name("container", "").is_err());
        assert!(validate_name("container", "../x").is_err());
    }

    #[test]
    fn own_process_start_time_is_readable() {
        let me = std::process::id() as i32;
        let ticks = process_start_ticks(me).unwrap();
        assert!(process_matches(me, ticks));
        assert!(!process_matches(me, ticks + 1));
    }
}
