//! The crate's error type: one enum whose variants are the failures an operator must tell apart
//! (not found, unauthorized, no platform match, digest mismatch, disk full, unsafe layer, ...),
//! each carrying enough context to act on without a debugger.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Everything that can go wrong in the image store.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The reference string is not a valid image reference.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    /// The registry (or the local store) has no such image or blob.
    #[error("{what} not found")]
    NotFound { what: String },
    /// The registry refused the credentials (or demanded some that were not configured).
    #[error("unauthorized: {registry} refused access to {repository}: {detail}")]
    Unauthorized { registry: String, repository: String, detail: String },
    /// A multi-platform index has no entry this node can run.
    #[error("no match for platform {platform} in {reference} (available: {available})")]
    NoMatchingPlatform { reference: String, platform: String, available: String },
    /// Content did not hash to the digest that names it.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch { what: String, expected: String, actual: String },
    /// Content had a different length than its descriptor says.
    #[error("size mismatch for {what}: expected {expected} bytes, got {actual}")]
    SizeMismatch { what: String, expected: u64, actual: u64 },
    /// The disk holding the store is full.
    #[error("disk full while writing {path}")]
    DiskFull { path: PathBuf },
    /// The registry answered with an unexpected status or body.
    #[error("registry {registry}: {detail}")]
    Registry { registry: String, detail: String },
    /// The registry could not be reached (DNS, TCP, TLS, or a dropped connection).
    #[error("connecting to {endpoint}: {detail}")]
    Connect { endpoint: String, detail: String },
    /// A layer tries to write outside its target or is otherwise unsafe to unpack.
    #[error("unsafe layer entry {entry:?}: {reason}")]
    UnsafeLayer { entry: String, reason: String },
    /// A manifest, index or config is malformed or unsupported.
    #[error("invalid {what}: {detail}")]
    InvalidContent { what: String, detail: String },
    /// The registry configuration (registries.yaml, docker config) is unusable.
    #[error("registry configuration {source_name}: {detail}")]
    Config { source_name: String, detail: String },
    /// An archive to import is malformed.
    #[error("archive {path}: {detail}")]
    Archive { path: PathBuf, detail: String },
    /// The image is still used by a container.
    #[error("image {image} is in use by container(s) {containers}")]
    InUse { image: String, containers: String },
    /// Mounting or unmounting a root filesystem failed.
    #[error("{action} {path}: {source}")]
    Mount { action: &'static str, path: PathBuf, source: io::Error },
    /// A file system operation failed.
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    /// The same failure, reported to every caller that waited on one shared pull.
    #[error(transparent)]
    Shared(Arc<ImageError>),
}

/// The crate's result type.
pub type Result<T, E = ImageError> = std::result::Result<T, E>;

impl ImageError {
    /// An I/O error with context; ENOSPC becomes [`ImageError::DiskFull`].
    pub fn io(context: impl Into<String>, path: &Path, source: io::Error) -> Self {
        if source.raw_os_error() == Some(libc_enospc()) {
            return ImageError::DiskFull { path: path.to_path_buf() };
        }
        ImageError::Io { context: format!("{} {}", context.into(), path.display()), source }
    }

    /// The underlying error when this one was shared between waiters.
    pub fn root(&self) -> &ImageError {
        match self {
            ImageError::Shared(inner) => inner.root(),
            other => other,
        }
    }

    /// Whether retrying the same request may succeed (network trouble, 5xx).
    pub(crate) fn is_transient(&self) -> bool {
        matches!(self.root(), ImageError::Connect { .. })
    }
}

fn libc_enospc() -> i32 {
    rustix::io::Errno::NOSPC.raw_os_error()
}

/// Adds path context to `std::io::Result`s.
pub(crate) trait IoContext<T> {
    /// Maps an I/O error to [`ImageError::io`] with `what` and `path`.
    fn ctx(self, what: &str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, what: &str, path: &Path) -> Result<T> {
        self.map_err(|e| ImageError::io(what, path, e))
    }
}
