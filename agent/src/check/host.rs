//! Where the checks look: the host's `/proc`, `/sys`, `/boot` and `/lib/modules`, below a root
//! directory that is `/` on a real node and a prepared tree in tests. Reads never fail a check by
//! themselves: a missing or unreadable file is "no evidence", and each check decides what that means.

use std::io::Read;
use std::path::{Path, PathBuf};

/// The file system a check inspects, plus the kernel identity that only a syscall can tell.
#[derive(Debug, Clone)]
pub struct Host {
    root: PathBuf,
    machine: String,
}

impl Host {
    /// The running node: files under `/`, the machine name from `uname(2)`.
    pub fn real() -> Self {
        Self::at("/")
    }

    /// Files under `root` (a test tree or a mounted board image); the machine name still comes
    /// from `uname(2)`, which under qemu-user reports the emulated CPU.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        let machine = rustix::system::uname().machine().to_string_lossy().into_owned();
        Self { root: root.into(), machine }
    }

    /// The same files with another machine name (tests of the architecture check).
    pub fn with_machine(mut self, machine: &str) -> Self {
        self.machine = machine.to_string();
        self
    }

    /// `uname -m`: `x86_64`, `aarch64`, `armv7l`, `armv6l`, …
    pub fn machine(&self) -> &str {
        &self.machine
    }

    /// An absolute host path (`/proc/filesystems`) below the root.
    pub fn path(&self, absolute: &str) -> PathBuf {
        self.root.join(absolute.trim_start_matches('/'))
    }

    /// A text file's contents, or `None` when it is missing or unreadable.
    pub fn read(&self, absolute: &str) -> Option<String> {
        read_text(&self.path(absolute))
    }

    /// Whether the path exists (a file, directory or symlink, even a dangling one as in /proc/self/ns).
    pub fn exists(&self, absolute: &str) -> bool {
        self.path(absolute).symlink_metadata().is_ok()
    }

    /// A gzip-compressed text file (`/proc/config.gz`), decompressed.
    pub fn read_gz(&self, absolute: &str) -> Option<String> {
        let file = std::fs::File::open(self.path(absolute)).ok()?;
        let mut text = String::new();
        flate2::read::GzDecoder::new(file).read_to_string(&mut text).ok()?;
        Some(text)
    }
}

fn read_text(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}
