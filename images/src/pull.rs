//! Pulling: resolve the reference on each endpoint in turn (mirrors, then upstream), pick the
//! node's entry from an index, fetch the config, then download the missing layers in parallel
//! (bounded) and unpack each as soon as it is complete. Concurrent pulls of the same image and
//! platform share one flight; concurrent pulls of different images sharing a layer download it
//! once (per-digest lock). The image record is written only when everything is in place.

use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, watch, Semaphore};

use crate::distribution::RegistryClient;
use crate::error::{ImageError, Result};
use crate::manifest::{parse_manifest, ConfigFile, Descriptor, Manifest, ManifestDoc};
use crate::platform::Platform;
use crate::reference::Reference;
use crate::registry_config::{DockerConfig, Endpoint, RegistryConfig};
use crate::store::{now_unix, poisoned, Image, ImageStore};

/// Default number of layers downloaded at once.
pub const DEFAULT_CONCURRENT_DOWNLOADS: usize = 3;

/// How to pull.
#[derive(Clone, Default)]
pub struct PullOptions {
    /// Credentials, e.g. from a pod's `imagePullSecrets` (`.dockerconfigjson`).
    pub credentials: Option<DockerConfig>,
    /// Mirrors, per-endpoint auth and TLS (`registries.yaml`).
    pub registry_config: Option<Arc<RegistryConfig>>,
    /// Override the node's platform (e.g. `linux/arm/v7`).
    pub platform: Option<Platform>,
    /// Receives progress updates.
    pub progress: Option<watch::Sender<PullProgress>>,
    /// Layers downloaded at once (0 means [`DEFAULT_CONCURRENT_DOWNLOADS`]).
    pub max_concurrent_downloads: usize,
}

/// Where a pull is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PullPhase {
    /// Fetching manifests.
    #[default]
    Resolving,
    /// Fetching and unpacking layers.
    Downloading,
    /// Registered.
    Done,
}

/// Progress of one pull: bytes done out of total, layers done out of total.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullProgress {
    /// Phase.
    pub phase: PullPhase,
    /// Compressed bytes to fetch (all layers, including ones already present).
    pub total_bytes: u64,
    /// Bytes present so far.
    pub done_bytes: u64,
    /// Number of layers.
    pub layers_total: usize,
    /// Layers downloaded and unpacked.
    pub layers_done: usize,
}

struct Resolved {
    endpoint: Endpoint,
    index_digest: Option<String>,
    manifest_digest: String,
    manifest_bytes: Vec<u8>,
    manifest: Manifest,
}

/// The more useful of two failures when every endpoint failed: a definite answer (not found,
/// unauthorized, ...) beats "could not connect".
fn better(prev: Option<ImageError>, next: ImageError) -> ImageError {
    match prev {
        Some(p) if next.is_transient() && !p.is_transient() => p,
        _ => next,
    }
}

impl ImageStore {
    /// Pulls `reference` (e.g. `busybox`, `reg:5000/app@sha256:...`) and registers it.
    pub async fn pull(&self, reference: &str, options: PullOptions) -> Result<Image> {
        let r = Reference::parse(reference)?;
        let platform = options.platform.clone().unwrap_or_else(|| self.platform().clone());
        let key = format!("{r} {platform}");
        loop {
            let waiter = {
                let mut map = self.inner.inflight.lock().map_err(|_| poisoned())?;
                match map.get(&key) {
                    Some(tx) => Some(tx.subscribe()),
                    None => {
                        map.insert(key.clone(), broadcast::channel(1).0);
                        None
                    }
                }
            };
            match waiter {
                Some(mut rx) => match rx.recv().await {
                    Ok(res) => return res.map_err(ImageError::Shared),
                    // The leading pull was cancelled: try again (maybe as the leader).
                    Err(_) => continue,
                },
                None => {
                    let guard = FlightGuard { store: self, key: &key };
                    let res = self.pull_uncoalesced(&r, &platform, &options).await;
                    return guard.finish(res);
                }
            }
        }
    }

    async fn pull_uncoalesced(
        &self,
        r: &Reference,
        platform: &Platform,
        options: &PullOptions,
    ) -> Result<Image> {
        let _shared = self.lock_store(false).await?;
        let config = options.registry_config.clone().unwrap_or_default();
        let client = Arc::new(RegistryClient::new(
            config.clone(),
            options.credentials.clone(),
            &r.registry,
        )?);
        let progress = options.progress.clone();
        let report = |f: &dyn Fn(&mut PullProgress)| {
            if let Some(p) = &progress {
                p.send_modify(|v| f(v));
            }
        };
        report(&|p| *p = PullProgress::default());
        let endpoints = config.endpoints(r);
        let mut last: Option<ImageError> = None;
        let mut resolved = None;
        for ep in &endpoints {
            match self.resolve(&client, ep, r, platform).await {
                Ok(res) => {
                    resolved = Some(res);
                    break;
                }
                Err(e) => {
                    tracing::warn!(endpoint = %ep.base(), reference = %r, error = %e, "endpoint failed; trying the next");
                    last = Some(better(last, e));
                }
            }
        }
        let Some(res) = resolved else {
            return Err(last.unwrap_or(ImageError::NotFound { what: format!("image {r}") }));
        };
        // Blobs are fetched from the endpoint that answered first, then the others.
        let mut order = vec![res.endpoint.clone()];
        order.extend(endpoints.iter().filter(|e| **e != res.endpoint).cloned());

        let config_bytes = if self.content().has(&res.manifest.config) {
            self.content().read_blob(&res.manifest.config.digest)?
        } else {
            let mut got = None;
            let mut last = None;
            for ep in &order {
                match client.small_blob(ep, &res.manifest.config).await {
                    Ok(b) => {
                        got = Some(b);
                        break;
                    }
                    Err(e) => last = Some(better(last, e)),
                }
            }
            let bytes = got.ok_or_else(|| last.unwrap_or_else(|| not_found(r)))?;
            self.content().write_blob(&res.manifest.config, &bytes)?;
            bytes.to_vec()
        };
        let cfg = ConfigFile::parse(&config_bytes)?;
        if res.index_digest.is_none()
            && !cfg.architecture.is_empty()
            && platform.match_rank(&cfg.platform()).is_none()
        {
            return Err(ImageError::NoMatchingPlatform {
                reference: r.to_string(),
                platform: platform.to_string(),
                available: cfg.platform().to_string(),
            });
        }
        let layers = res.manifest.layers.clone();
        if cfg.rootfs.diff_ids.len() != layers.len() {
            return Err(ImageError::InvalidContent {
                what: format!("image {r}"),
                detail: format!(
                    "{} layers but {} diff_ids in the config",
                    layers.len(),
                    cfg.rootfs.diff_ids.len()
                ),
            });
        }
        report(&|p| {
            p.phase = PullPhase::Downloading;
            p.total_bytes = layers.iter().map(|l| l.size).sum();
            p.layers_total = layers.len();
        });

        let limit = match options.max_concurrent_downloads {
            0 => DEFAULT_CONCURRENT_DOWNLOADS,
            n => n,
        };
        let semaphore = Arc::new(Semaphore::new(limit));
        let per_layer = Arc::new(Mutex::new(vec![0u64; layers.len()]));
        let order = Arc::new(order);
        let mut tasks = tokio::task::JoinSet::new();
        for (i, (layer, diff_id)) in
            layers.iter().cloned().zip(cfg.rootfs.diff_ids.clone()).enumerate()
        {
            let store = self.clone();
            let client = client.clone();
            let order = order.clone();
            let semaphore = semaphore.clone();
            let per_layer = per_layer.clone();
            let progress = progress.clone();
            tasks.spawn(async move {
                let on_bytes = move |n: u64| {
                    if let Ok(mut v) = per_layer.lock() {
                        v[i] = n;
                        let done: u64 = v.iter().sum();
                        if let Some(p) = &progress {
                            p.send_modify(|p| p.done_bytes = done);
                        }
                    }
                };
                store.fetch_layer(&client, &order, &layer, &diff_id, &semaphore, &on_bytes).await?;
                on_bytes(layer.size);
                Ok::<(), ImageError>(())
            });
        }
        let mut first_err = None;
        while let Some(joined) = tasks.join_next().await {
            let outcome = joined.map_err(|e| ImageError::Io {
                context: "layer task".into(),
                source: std::io::Error::other(e.to_string()),
            });
            match outcome.and_then(|r| r) {
                Ok(()) => report(&|p| p.layers_done += 1),
                Err(e) => {
                    if first_err.is_none() {
                        first_err = Some(e);
                        tasks.abort_all();
                    }
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }

        let manifest_desc = Descriptor {
            media_type: res
                .manifest
                .media_type
                .clone()
                .unwrap_or_else(|| crate::manifest::OCI_MANIFEST.into()),
            digest: res.manifest_digest.clone(),
            size: res.manifest_bytes.len() as u64,
            platform: None,
            annotations: Default::default(),
        };
        self.content().write_blob(&manifest_desc, &res.manifest_bytes)?;
        let image = Image {
            name: r.to_string(),
            digest: res.manifest_digest.clone(),
            index_digest: res.index_digest.clone(),
            media_type: manifest_desc.media_type.clone(),
            config: res.manifest.config.clone(),
            size: res.manifest.config.size + layers.iter().map(|l| l.size).sum::<u64>(),
            layers,
            diff_ids: cfg.rootfs.diff_ids.clone(),
            platform: cfg.platform(),
            created_unix: now_unix(),
            last_used_unix: 0,
        };
        self.register(&image)?;
        report(&|p| p.phase = PullPhase::Done);
        Ok(image)
    }

    async fn resolve(
        &self,
        client: &RegistryClient,
        ep: &Endpoint,
        r: &Reference,
        platform: &Platform,
    ) -> Result<Resolved> {
        let top = client.manifest(ep, r.manifest_reference()).await?;
        match parse_manifest(top.content_type.as_deref(), &top.body)? {
            ManifestDoc::Manifest(manifest) => Ok(Resolved {
                endpoint: ep.clone(),
                index_digest: None,
                manifest_digest: top.digest,
                manifest_bytes: top.body.to_vec(),
                manifest,
            }),
            ManifestDoc::Index(index) => {
                let entry = index.select(platform, &r.to_string())?;
                let child = client.manifest(ep, &entry.digest).await?;
                match parse_manifest(child.content_type.as_deref(), &child.body)? {
                    ManifestDoc::Manifest(manifest) => Ok(Resolved {
                        endpoint: ep.clone(),
                        index_digest: Some(top.digest),
                        manifest_digest: child.digest,
                        manifest_bytes: child.body.to_vec(),
                        manifest,
                    }),
                    ManifestDoc::Index(_) => Err(ImageError::InvalidContent {
                        what: format!("index {}", top.digest),
                        detail: "nested indexes are not supported".into(),
                    }),
                }
            }
        }
    }

    /// Makes one layer present and unpacked.
    async fn fetch_layer(
        &self,
        client: &RegistryClient,
        order: &[Endpoint],
        layer: &Descriptor,
        diff_id: &str,
        semaphore: &Semaphore,
        on_bytes: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<()> {
        let _lock = self.lock_blob(&layer.digest).await?;
        if self.content().snapshot_path(&layer.digest)?.is_dir() && self.content().has(layer) {
            return Ok(());
        }
        if !self.content().has(layer) {
            let _permit = semaphore.acquire().await.map_err(|_| poisoned())?;
            let partial = self.content().ingest_path(&layer.digest)?;
            let mut last = None;
            let mut done = false;
            for ep in order {
                match client.blob_to_file(ep, layer, &partial, on_bytes).await {
                    Ok(()) => {
                        done = true;
                        break;
                    }
                    // A corrupt blob is a fact about the content, not the link: stop here.
                    Err(
                        e @ (ImageError::DigestMismatch { .. } | ImageError::SizeMismatch { .. }),
                    ) => return Err(e),
                    Err(e) => {
                        tracing::warn!(endpoint = %ep.base(), digest = %layer.digest, error = %e, "blob download failed");
                        last = Some(better(last, e));
                    }
                }
            }
            if !done {
                return Err(last.unwrap_or_else(|| ImageError::NotFound {
                    what: format!("blob {}", layer.digest),
                }));
            }
            self.content().commit_ingest(&layer.digest)?;
        }
        self.ensure_snapshot(layer, diff_id).await
    }
}

fn not_found(r: &Reference) -> ImageError {
    ImageError::NotFound { what: format!("image {r}") }
}

/// Removes the in-flight entry even when the leading pull is cancelled, and shares the result.
struct FlightGuard<'a> {
    store: &'a ImageStore,
    key: &'a str,
}

impl FlightGuard<'_> {
    fn finish(self, res: Result<Image>) -> Result<Image> {
        let tx = match self.store.inner.inflight.lock() {
            Ok(mut m) => m.remove(self.key),
            Err(_) => None,
        };
        std::mem::forget(self);
        let Some(tx) = tx.filter(|t| t.receiver_count() > 0) else { return res };
        match res {
            Ok(img) => {
                let _ = tx.send(Ok(img.clone()));
                Ok(img)
            }
            Err(e) => {
                let shared = Arc::new(e);
                let _ = tx.send(Err(shared.clone()));
                Err(ImageError::Shared(shared))
            }
        }
    }
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.store.inner.inflight.lock() {
            m.remove(self.key);
        }
    }
}
