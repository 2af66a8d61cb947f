//! Network namespaces: running a closure inside one, and opening netlink sockets there.
//!
//! A netlink socket stays bound to the namespace it was created in, so every component here
//! takes an optional namespace path (`None` = the caller's own) and creates its sockets on a
//! short-lived thread that has `setns`-ed into that namespace. The calling thread never
//! changes namespace, which keeps tokio's worker threads where they belong.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Errors from entering a network namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The namespace file could not be opened.
    #[error("opening network namespace {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    /// `setns` refused the file (not a netns, or no CAP_SYS_ADMIN).
    #[error("entering network namespace {path}: {source}")]
    Enter { path: PathBuf, source: std::io::Error },
    /// The helper thread panicked.
    #[error("namespace helper thread for {path} panicked")]
    Thread { path: PathBuf },
}

/// Runs `f` on a fresh thread that has joined the network namespace at `netns` (or stays in the
/// caller's namespace when `None`) and returns its result.
pub fn run_in<T, F>(netns: Option<&Path>, f: F) -> Result<T, NetnsError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let path = netns.map(Path::to_path_buf);
    let shown = path.clone().unwrap_or_else(|| PathBuf::from("(current)"));
    let thread = std::thread::spawn(move || -> Result<T, NetnsError> {
        if let Some(path) = &path {
            enter(path)?;
        }
        Ok(f())
    });
    thread.join().map_err(|_| NetnsError::Thread { path: shown })?
}

/// Moves the calling thread into the network namespace at `path` (for threads made for that).
pub fn enter(path: &Path) -> Result<(), NetnsError> {
    let file =
        File::open(path).map_err(|source| NetnsError::Open { path: path.to_path_buf(), source })?;
    // SAFETY: setns on a valid fd only changes this thread's namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(NetnsError::Enter {
            path: path.to_path_buf(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Opens an rtnetlink connection inside `netns` and spawns its driver on the current runtime.
pub(crate) async fn route_handle(netns: Option<&Path>) -> std::io::Result<rtnetlink::Handle> {
    let rt = tokio::runtime::Handle::current();
    let made = run_in(netns, move || {
        let _guard = rt.enter();
        rtnetlink::new_connection()
    })
    .map_err(std::io::Error::other)??;
    let (conn, handle, _) = made;
    tokio::spawn(conn);
    Ok(handle)
}

/// Writes a sysctl (`net/ipv4/ip_forward` style path under /proc/sys) inside `netns`.
pub fn write_sysctl(netns: Option<&Path>, key: &str, value: &str) -> std::io::Result<()> {
    let path = format!("/proc/sys/{key}");
    let value = value.to_string();
    run_in(netns, move || std::fs::write(&path, value)).map_err(std::io::Error::other)?
}
