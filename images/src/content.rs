//! The content-addressed blob store: `blobs/sha256/<hex>` holds only verified content (every
//! write hashes and checks the size before an atomic rename), `ingest/<hex>` holds partial
//! downloads that a later attempt resumes, and `snapshots/<hex>` holds each layer unpacked.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest as _, Sha256};

use crate::distribution::{sha256_digest, verify};
use crate::error::{ImageError, IoContext, Result};
use crate::manifest::Descriptor;
use crate::reference::validate_digest;

/// Paths and verified writes under the store root.
#[derive(Debug, Clone)]
pub(crate) struct ContentStore {
    root: PathBuf,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name no other writer (thread or process) uses at the same time.
pub(crate) fn unique_tmp_name(stem: &str) -> String {
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(".tmp-{stem}-{}-{n}-{nanos}", std::process::id())
}

/// Writes `data` to `path` atomically (temp file in the same dir, fsync, rename).
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(unique_tmp_name("w"));
    let res = (|| {
        let mut f = File::create(&tmp).ctx("creating", &tmp)?;
        f.write_all(data).ctx("writing", &tmp)?;
        f.sync_all().ctx("syncing", &tmp)?;
        std::fs::rename(&tmp, path).ctx("renaming into", path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

pub(crate) fn hex_of(digest: &str) -> Result<&str> {
    validate_digest(digest)
        .map_err(|detail| ImageError::InvalidContent { what: "digest".into(), detail })?;
    Ok(&digest["sha256:".len()..])
}

impl ContentStore {
    /// Creates the directories below `root`.
    pub fn open(root: &Path) -> Result<Self> {
        for d in ["blobs/sha256", "ingest", "snapshots", "images", "containers", "tmp"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).ctx("creating", &p)?;
        }
        Ok(ContentStore { root: root.to_path_buf() })
    }

    /// The store root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a verified blob lives.
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.root.join("blobs/sha256").join(hex_of(digest)?))
    }

    /// Where a partial download of `digest` lives.
    pub fn ingest_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.root.join("ingest").join(hex_of(digest)?))
    }

    /// Where the unpacked layer `digest` lives.
    pub fn snapshot_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.root.join("snapshots").join(hex_of(digest)?))
    }

    /// Whether the blob is present with the descriptor's size.
    pub fn has(&self, desc: &Descriptor) -> bool {
        self.blob_path(&desc.digest)
            .ok()
            .and_then(|p| std::fs::metadata(p).ok())
            .is_some_and(|m| m.len() == desc.size)
    }

    /// Moves a completed (already verified) ingest file into place.
    pub fn commit_ingest(&self, digest: &str) -> Result<()> {
        let from = self.ingest_path(digest)?;
        let to = self.blob_path(digest)?;
        std::fs::rename(&from, &to).ctx("committing blob", &to)
    }

    /// Stores a small blob after checking it against `desc`.
    pub fn write_blob(&self, desc: &Descriptor, data: &[u8]) -> Result<()> {
        verify(&format!("blob {}", desc.digest), desc, data.len() as u64, &sha256_digest(data))?;
        let path = self.blob_path(&desc.digest)?;
        if path.exists() {
            return Ok(());
        }
        write_atomic(&path, data)
    }

    /// Reads a small blob and re-checks its digest (documents are cheap to hash).
    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let path = self.blob_path(digest)?;
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ImageError::NotFound { what: format!("blob {digest} in the store") })
            }
            Err(e) => return Err(ImageError::io("reading", &path, e)),
        };
        let actual = sha256_digest(&data);
        if actual != digest {
            return Err(ImageError::DigestMismatch {
                what: format!("stored blob {}", path.display()),
                expected: digest.into(),
                actual,
            });
        }
        Ok(data)
    }

    /// Copies a file into the store, verifying it against `desc` (blocking).
    pub fn import_file(&self, src: &Path, desc: &Descriptor) -> Result<()> {
        if self.has(desc) {
            return Ok(());
        }
        let tmp = self.root.join("tmp").join(unique_tmp_name("import"));
        let res = (|| {
            let mut input = File::open(src).ctx("opening", src)?;
            let mut out = File::create(&tmp).ctx("creating", &tmp)?;
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 256 * 1024];
            let mut len = 0u64;
            loop {
                let n = input.read(&mut buf).ctx("reading", src)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n]).ctx("writing", &tmp)?;
                len += n as u64;
            }
            out.sync_all().ctx("syncing", &tmp)?;
            let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
            verify(&format!("{}", src.display()), desc, len, &digest)?;
            let to = self.blob_path(&desc.digest)?;
            std::fs::rename(&tmp, &to).ctx("committing blob", &to)
        })();
        if res.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        res
    }

    /// Hashes a file: (size, digest) (blocking).
    pub fn digest_file(path: &Path) -> Result<(u64, String)> {
        let mut f = File::open(path).ctx("opening", path)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut len = 0u64;
        loop {
            let n = f.read(&mut buf).ctx("reading", path)?;
            if n == 0 {
                return Ok((len, format!("sha256:{}", hex::encode(hasher.finalize()))));
            }
            hasher.update(&buf[..n]);
            len += n as u64;
        }
    }
}
