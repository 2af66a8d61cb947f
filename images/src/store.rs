//! [`ImageStore`]: the public face of the crate. It owns a directory (`<data-dir>/images`) with
//! the content store, unpacked layer snapshots, one JSON record per image name, and one lease
//! per container root filesystem. An image record is written last, atomically, after every blob
//! it names is verified and every layer unpacked, so an interrupted pull or import registers
//! nothing; leftovers are unreferenced and removed by [`ImageStore::prune`].

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::sync::broadcast;

use crate::content::{unique_tmp_name, write_atomic, ContentStore};
use crate::error::{ImageError, IoContext, Result};
use crate::manifest::{ConfigFile, Descriptor, ImageConfig};
use crate::platform::Platform;
use crate::reference::Reference;
use crate::unpack::unpack_layer;

/// A registered image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// Normalised reference it is known by, e.g. `docker.io/library/busybox:latest`.
    pub name: String,
    /// Digest of the platform manifest.
    pub digest: String,
    /// Digest of the multi-platform index it was resolved from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_digest: Option<String>,
    /// Media type of the manifest.
    pub media_type: String,
    /// The config blob.
    pub config: Descriptor,
    /// The layers, base first.
    pub layers: Vec<Descriptor>,
    /// Uncompressed digests of the layers, verified while unpacking.
    pub diff_ids: Vec<String>,
    /// The platform of the image.
    pub platform: Platform,
    /// Compressed size (config + layers).
    pub size: u64,
    /// When it was registered (seconds since the epoch).
    pub created_unix: u64,
    /// When a root filesystem was last prepared from it (seconds since the epoch).
    #[serde(default)]
    pub last_used_unix: u64,
}

/// `inspect` output: the record plus its configuration.
#[derive(Debug, Clone, Serialize)]
pub struct ImageInspect {
    /// The record.
    pub image: Image,
    /// What the runtime uses.
    pub config: ImageConfig,
    /// The raw config blob, parsed as JSON.
    pub raw_config: serde_json::Value,
}

impl ImageInspect {
    /// Pretty JSON for `skerry ctr images inspect`.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}

type FlightResult = std::result::Result<Image, Arc<ImageError>>;

pub(crate) struct Inner {
    pub content: ContentStore,
    pub platform: Platform,
    /// Pulls in progress by key, so concurrent pulls of one image share one download.
    pub inflight: Mutex<HashMap<String, broadcast::Sender<FlightResult>>>,
    /// Per-digest locks: one download or unpack of a blob at a time.
    pub blob_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Serialises record and lease writes within the process.
    pub records: Mutex<()>,
}

/// The node's image store. Cheap to clone; all clones share state.
#[derive(Clone)]
pub struct ImageStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl ImageStore {
    /// Opens (creating) a store at `root` for a node of `platform`.
    pub fn open(root: impl AsRef<Path>, platform: Platform) -> Result<Self> {
        let content = ContentStore::open(root.as_ref())?;
        // Temp files of a dead process are garbage (they never hold registered content); those
        // of a live one (the agent while `skerry ctr` runs) are left alone.
        let tmp = content.root().join("tmp");
        if let Ok(rd) = std::fs::read_dir(&tmp) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let pid = name.split('-').nth(2).and_then(|p| p.parse::<u32>().ok());
                if pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists()) {
                    continue;
                }
                let p = e.path();
                let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
            }
        }
        Ok(ImageStore {
            inner: Arc::new(Inner {
                content,
                platform,
                inflight: Mutex::new(HashMap::new()),
                blob_locks: Mutex::new(HashMap::new()),
                records: Mutex::new(()),
            }),
        })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        self.inner.content.root()
    }

    /// The node platform images are resolved for by default.
    pub fn platform(&self) -> &Platform {
        &self.inner.platform
    }

    pub(crate) fn content(&self) -> &ContentStore {
        &self.inner.content
    }

    fn record_path(&self, name: &str) -> PathBuf {
        let key = hex::encode(Sha256::digest(name.as_bytes()));
        self.root().join("images").join(format!("{key}.json"))
    }

    /// Every registered image, sorted by name.
    pub fn list(&self) -> Result<Vec<Image>> {
        let dir = self.root().join("images");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).ctx("listing", &dir)? {
            let e = e.ctx("listing", &dir)?;
            let p = e.path();
            if p.extension().is_some_and(|x| x == "json") {
                match std::fs::read(&p).map(|b| serde_json::from_slice::<Image>(&b)) {
                    Ok(Ok(img)) => out.push(img),
                    Ok(Err(err)) => tracing::warn!(path = %p.display(), %err, "bad image record"),
                    Err(err) => {
                        tracing::warn!(path = %p.display(), %err, "unreadable image record")
                    }
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Finds an image by reference (`busybox`, `reg/x:tag`), manifest digest or digest prefix.
    pub fn get(&self, reference: &str) -> Result<Image> {
        let not_found = || ImageError::NotFound { what: format!("image {reference}") };
        let hexish = reference.strip_prefix("sha256:").unwrap_or(reference);
        if hexish.len() >= 12 && hexish.chars().all(|c| c.is_ascii_hexdigit()) {
            let found: Vec<Image> = self
                .list()?
                .into_iter()
                .filter(|i| i.digest["sha256:".len()..].starts_with(hexish))
                .collect();
            if let Some(first) = found.into_iter().next() {
                return Ok(first);
            }
        }
        let r = Reference::parse(reference)?;
        let name = r.to_string();
        match std::fs::read(self.record_path(&name)) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| ImageError::InvalidContent {
                what: format!("image record {name}"),
                detail: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // `name@digest` also matches a record registered under the same digest.
                if let Some(d) = &r.digest {
                    if let Some(img) = self.list()?.into_iter().find(|i| &i.digest == d) {
                        return Ok(img);
                    }
                }
                Err(not_found())
            }
            Err(e) => Err(ImageError::io("reading image record", &self.record_path(&name), e)),
        }
    }

    /// Writes an image record (the commit point of a pull or import).
    pub(crate) fn register(&self, image: &Image) -> Result<()> {
        let data = serde_json::to_vec_pretty(image).map_err(|e| ImageError::InvalidContent {
            what: "image record".into(),
            detail: e.to_string(),
        })?;
        let _guard = self.inner.records.lock().map_err(|_| poisoned())?;
        write_atomic(&self.record_path(&image.name), &data)
    }

    /// The image with its runtime configuration.
    pub fn inspect(&self, reference: &str) -> Result<ImageInspect> {
        let image = self.get(reference)?;
        let raw = self.content().read_blob(&image.config.digest)?;
        let config = ConfigFile::parse(&raw)?.image_config();
        let raw_config = serde_json::from_slice(&raw).unwrap_or(serde_json::Value::Null);
        Ok(ImageInspect { image, config, raw_config })
    }

    /// The runtime configuration of a registered image.
    pub fn image_config(&self, image: &Image) -> Result<ImageConfig> {
        let raw = self.content().read_blob(&image.config.digest)?;
        Ok(ConfigFile::parse(&raw)?.image_config())
    }

    /// Removes an image name; content no other image uses is pruned. Refuses while a container
    /// root filesystem made from it exists (and no other name keeps the same manifest).
    pub async fn remove(&self, reference: &str) -> Result<()> {
        let image = self.get(reference)?;
        let others_share =
            self.list()?.iter().any(|i| i.name != image.name && i.digest == image.digest);
        if !others_share {
            let users: Vec<String> = self
                .leases()?
                .into_iter()
                .filter(|l| l.image_digest == image.digest)
                .map(|l| l.container_id)
                .collect();
            if !users.is_empty() {
                return Err(ImageError::InUse { image: image.name, containers: users.join(", ") });
            }
        }
        {
            let _guard = self.inner.records.lock().map_err(|_| poisoned())?;
            let p = self.record_path(&image.name);
            std::fs::remove_file(&p).ctx("removing", &p)?;
        }
        self.prune().await?;
        Ok(())
    }

    /// Takes the store-wide lock: shared for pulls, imports and mounts, exclusive for pruning,
    /// which deletes unreferenced content (what an unfinished pull's content looks like). It is
    /// an `flock` on `<root>/lock`, so it also orders the agent and `skerry ctr` processes.
    pub(crate) async fn lock_store(&self, exclusive: bool) -> Result<StoreLock> {
        flock(self.root().join("lock"), exclusive).await
    }

    /// Locks one blob digest for download/unpack: in this process (a mutex per digest) and
    /// across processes (an `flock` on `<root>/locks/<hex>`), so the agent and `skerry ctr`
    /// pulling the same layer at once download it once instead of racing on its ingest file.
    pub(crate) async fn lock_blob(&self, digest: &str) -> Result<BlobLock> {
        let m = {
            let mut map = match self.inner.blob_locks.lock() {
                Ok(m) => m,
                Err(p) => p.into_inner(),
            };
            map.retain(|_, v| Arc::strong_count(v) > 1);
            map.entry(digest.to_string()).or_default().clone()
        };
        let in_process = m.lock_owned().await;
        let dir = self.root().join("locks");
        std::fs::create_dir_all(&dir).ctx("creating", &dir)?;
        let file = flock(dir.join(crate::content::hex_of(digest)?), true).await?;
        Ok(BlobLock { _file: file, _in_process: in_process })
    }

    /// Unpacks the layer blob into its snapshot unless present; verifies the diff ID.
    /// Callers hold the blob lock.
    pub(crate) async fn ensure_snapshot(&self, layer: &Descriptor, diff_id: &str) -> Result<()> {
        let snap = self.content().snapshot_path(&layer.digest)?;
        if snap.is_dir() {
            return Ok(());
        }
        let blob = self.content().blob_path(&layer.digest)?;
        let tmp = self.root().join("tmp").join(unique_tmp_name("snap"));
        let diff_id = diff_id.to_string();
        let layer_digest = layer.digest.clone();
        let res = tokio::task::spawn_blocking(move || -> Result<()> {
            std::fs::create_dir(&tmp).ctx("creating", &tmp)?;
            let outcome = (|| {
                let file = std::fs::File::open(&blob).ctx("opening", &blob)?;
                let stats = unpack_layer(file, &tmp)?;
                if stats.diff_id != diff_id {
                    return Err(ImageError::DigestMismatch {
                        what: format!("uncompressed layer {layer_digest}"),
                        expected: diff_id.clone(),
                        actual: stats.diff_id,
                    });
                }
                std::fs::rename(&tmp, &snap).ctx("committing snapshot", &snap)
            })();
            if outcome.is_err() {
                let _ = std::fs::remove_dir_all(&tmp);
            }
            outcome
        })
        .await
        .map_err(|e| ImageError::Io {
            context: "unpack thread".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        res
    }

    /// Reads every container lease.
    pub(crate) fn leases(&self) -> Result<Vec<crate::rootfs::Lease>> {
        let dir = self.root().join("containers");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).ctx("listing", &dir)?.flatten() {
            let p = e.path().join("lease.json");
            if let Ok(b) = std::fs::read(&p) {
                if let Ok(l) = serde_json::from_slice(&b) {
                    out.push(l);
                }
            }
        }
        Ok(out)
    }

    /// Deletes blobs, snapshots and partial downloads no image or container references.
    pub async fn prune(&self) -> Result<PruneReport> {
        let _exclusive = self.lock_store(true).await?;
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.prune_blocking()).await.map_err(|e| {
            ImageError::Io {
                context: "prune thread".into(),
                source: std::io::Error::other(e.to_string()),
            }
        })?
    }

    fn prune_blocking(&self) -> Result<PruneReport> {
        let images = self.list()?;
        let mut blobs = BTreeSet::new();
        let mut snaps = BTreeSet::new();
        for i in &images {
            blobs.insert(i.digest.clone());
            blobs.insert(i.config.digest.clone());
            for l in &i.layers {
                blobs.insert(l.digest.clone());
                snaps.insert(l.digest.clone());
            }
        }
        let mut report = PruneReport::default();
        let root = self.root().to_path_buf();
        let sweep = |dir: &Path, keep: &BTreeSet<String>, count: &mut usize, freed: &mut u64| {
            let Ok(rd) = std::fs::read_dir(dir) else { return };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if keep.contains(&format!("sha256:{name}")) {
                    continue;
                }
                let p = e.path();
                *freed += du(&p);
                let removed =
                    if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
                match removed {
                    Ok(()) => *count += 1,
                    Err(err) => tracing::warn!(path = %p.display(), %err, "prune failed"),
                }
            }
        };
        let mut freed = 0;
        sweep(&root.join("blobs/sha256"), &blobs, &mut report.blobs, &mut freed);
        sweep(&root.join("snapshots"), &snaps, &mut report.snapshots, &mut freed);
        sweep(&root.join("ingest"), &BTreeSet::new(), &mut report.partial, &mut freed);
        report.freed_bytes = freed;
        Ok(report)
    }
}

/// A held store lock; released when dropped (closing the file drops the `flock`).
pub(crate) struct StoreLock {
    _file: std::fs::File,
}

/// A held per-blob lock (see `ImageStore::lock_blob`); released on drop.
pub(crate) struct BlobLock {
    _file: StoreLock,
    _in_process: tokio::sync::OwnedMutexGuard<()>,
}

/// Takes an `flock` on `path` (created if missing) on a blocking thread.
async fn flock(path: std::path::PathBuf, exclusive: bool) -> Result<StoreLock> {
    tokio::task::spawn_blocking(move || -> Result<StoreLock> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .ctx("opening", &path)?;
        let op = if exclusive {
            rustix::fs::FlockOperation::LockExclusive
        } else {
            rustix::fs::FlockOperation::LockShared
        };
        rustix::fs::flock(&file, op).map_err(|e| ImageError::io("locking", &path, e.into()))?;
        Ok(StoreLock { _file: file })
    })
    .await
    .map_err(|e| ImageError::Io {
        context: "lock thread".into(),
        source: std::io::Error::other(e.to_string()),
    })?
}

/// What a prune removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Blobs deleted.
    pub blobs: usize,
    /// Layer snapshots deleted.
    pub snapshots: usize,
    /// Partial downloads deleted.
    pub partial: usize,
    /// Approximate bytes freed.
    pub freed_bytes: u64,
}

/// Disk usage of a path (files counted once per inode is not attempted: an estimate).
pub(crate) fn du(p: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(p) else { return 0 };
    if meta.is_dir() {
        std::fs::read_dir(p).map(|rd| rd.flatten().map(|e| du(&e.path())).sum()).unwrap_or(0)
    } else {
        meta.len()
    }
}

pub(crate) fn poisoned() -> ImageError {
    ImageError::Io { context: "image store lock".into(), source: std::io::Error::other("poisoned") }
}
