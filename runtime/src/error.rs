//! The runtime's error type: every failure names the container or sandbox and the step that
//! failed, so an operator can act on the message alone.

use std::path::PathBuf;

/// Errors returned by the runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file system operation on the state dir, a cgroup or a log file failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What the runtime was doing.
        what: &'static str,
        /// The path it was working on.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A system call failed.
    #[error("{what}: {source}")]
    Sys {
        /// What the runtime was doing.
        what: String,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// No container or sandbox with this id or name.
    #[error("no such {kind}: {name}")]
    NotFound {
        /// "container" or "sandbox".
        kind: &'static str,
        /// The id or name that was asked for.
        name: String,
    },
    /// A container or sandbox with this name already exists.
    #[error("{kind} name {name:?} is already in use by {id}")]
    NameInUse {
        /// "container" or "sandbox".
        kind: &'static str,
        /// The requested name.
        name: String,
        /// The id holding it.
        id: String,
    },
    /// The request does not fit the object's current state (e.g. removing a running container).
    #[error("{0}")]
    InvalidState(String),
    /// The spec handed in is not usable (bad name, missing rootfs, bad value).
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// The monitor process failed to create or start the container.
    #[error("container {id}: {message}")]
    Monitor {
        /// The container id.
        id: String,
        /// The monitor's own error message.
        message: String,
    },
    /// A state file could not be parsed.
    #[error("corrupt state file {path}: {source}")]
    State {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The pod network hook failed.
    #[error("sandbox {id}: network: {message}")]
    Network {
        /// The sandbox id.
        id: String,
        /// The hook's error message.
        message: String,
    },
    /// The cgroup library failed.
    #[error("cgroup {path}: {message}")]
    Cgroup {
        /// The cgroup path.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// The runtime's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Wraps an `io::Error` with what was done and where.
pub(crate) fn io_err(
    what: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { what, path, source }
}

/// Wraps a `nix::Error` with what was done.
pub(crate) fn sys_err(what: impl Into<String>) -> impl FnOnce(nix::Error) -> Error {
    let what = what.into();
    move |source| Error::Sys { what, source }
}
