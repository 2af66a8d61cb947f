//! Air-gapped images: import of OCI image layouts and `docker save` archives (tar, optionally
//! gzip or zstd compressed) and export of an image as an OCI archive. An archive is first
//! extracted into a private temp dir with the same safe unpacker as layers (so a hostile
//! archive cannot write outside it), every blob is verified against its digest on the way into
//! the content store, and records are written last, as for pulls.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::content::{unique_tmp_name, ContentStore};
use crate::error::{ImageError, IoContext, Result};
use crate::manifest::{
    parse_manifest, ConfigFile, Descriptor, Manifest, ManifestDoc, DOCKER_CONFIG,
    DOCKER_LAYER_GZIP, DOCKER_LAYER_TAR, DOCKER_MANIFEST, OCI_LAYER_ZSTD, OCI_MANIFEST,
};
use crate::reference::Reference;
use crate::store::{now_unix, Image, ImageStore};
use crate::unpack::unpack_layer;

/// Annotation containerd uses for the full image name.
const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// OCI annotation for the tag (or, by some tools, the full name).
const OCI_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// An image found in an archive, with its blobs verified into the content store.
struct Staged {
    names: Vec<String>,
    manifest_digest: String,
    manifest_media_type: String,
    manifest: Manifest,
    config: ConfigFile,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerSaveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// What `import_dir` remembers about an archive it imported.
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
struct ImportedArchive {
    /// (size, mtime in ns) when it was imported.
    stamp: (u64, i128),
    /// Names it registered.
    images: Vec<String>,
}

fn file_stamp(path: &Path) -> Option<(u64, i128)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128))
}

fn archive_err(path: &Path, detail: impl Into<String>) -> ImageError {
    ImageError::Archive { path: path.to_path_buf(), detail: detail.into() }
}

/// A name for an image without one: `localhost/<archive stem>` with `tag` or the digest.
fn fallback_name(archive: &Path, tag: Option<&str>, digest: &str) -> String {
    let stem =
        archive.file_name().map(|s| s.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    let stem = stem.split('.').next().unwrap_or("");
    let clean: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' })
        .collect();
    let clean = clean.trim_matches(['-', '_']);
    let repo = if clean.is_empty() { "imported" } else { clean };
    match tag {
        Some(t) => format!("localhost/{repo}:{t}"),
        None => format!("localhost/{repo}@{digest}"),
    }
}

fn normalise_name(name: &str, archive: &Path, digest: &str) -> String {
    let looks_full = name.contains('/') || name.contains(':') || name.contains('.');
    let candidate =
        if looks_full { name.to_string() } else { fallback_name(archive, Some(name), digest) };
    match Reference::parse(&candidate) {
        Ok(r) => r.to_string(),
        Err(_) => fallback_name(archive, None, digest),
    }
}

impl ImageStore {
    /// Imports every image in an OCI layout or `docker save` archive; returns them.
    pub async fn import(&self, archive: &Path) -> Result<Vec<Image>> {
        let _shared = self.lock_store(false).await?;
        let work = self.root().join("tmp").join(unique_tmp_name("import"));
        let result = self.import_in(archive, &work).await;
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(work)).await;
        result
    }

    async fn import_in(&self, archive: &Path, work: &Path) -> Result<Vec<Image>> {
        let content = self.content().clone();
        let platform = self.platform().clone();
        let (archive_owned, work_owned) = (archive.to_path_buf(), work.to_path_buf());
        let staged = tokio::task::spawn_blocking(move || -> Result<Vec<Staged>> {
            std::fs::create_dir_all(&work_owned).ctx("creating", &work_owned)?;
            let file = std::fs::File::open(&archive_owned).ctx("opening", &archive_owned)?;
            unpack_layer(file, &work_owned).map_err(|e| match e {
                ImageError::Io { .. } | ImageError::DiskFull { .. } => e,
                other => archive_err(&archive_owned, other.to_string()),
            })?;
            if work_owned.join("manifest.json").is_file() {
                stage_docker_save(&content, &archive_owned, &work_owned)
            } else if work_owned.join("index.json").is_file() {
                stage_oci_layout(&content, &archive_owned, &work_owned, &platform)
            } else {
                Err(archive_err(&archive_owned, "neither an OCI layout nor a docker save archive"))
            }
        })
        .await
        .map_err(|e| ImageError::Io {
            context: "import thread".into(),
            source: std::io::Error::other(e.to_string()),
        })??;
        let mut out = Vec::new();
        for s in staged {
            for (layer, diff_id) in s.manifest.layers.iter().zip(&s.config.rootfs.diff_ids) {
                let _lock = self.lock_blob(&layer.digest).await?;
                self.ensure_snapshot(layer, diff_id).await?;
            }
            for name in &s.names {
                let image = Image {
                    name: name.clone(),
                    digest: s.manifest_digest.clone(),
                    index_digest: None,
                    media_type: s.manifest_media_type.clone(),
                    config: s.manifest.config.clone(),
                    layers: s.manifest.layers.clone(),
                    diff_ids: s.config.rootfs.diff_ids.clone(),
                    platform: s.config.platform(),
                    size: s.manifest.config.size
                        + s.manifest.layers.iter().map(|l| l.size).sum::<u64>(),
                    created_unix: now_unix(),
                    last_used_unix: 0,
                };
                self.register(&image)?;
                out.push(image);
            }
        }
        Ok(out)
    }

    /// Imports every regular file in `dir` (the agent's `DATA_DIR/agent/images/` at start).
    /// One bad archive does not stop the others; each file gets its own result. An archive
    /// imported before (same path, size and mtime) whose images are all still registered is
    /// not unpacked again, so a board does not re-hash its air-gap bundle at every boot.
    pub async fn import_dir(&self, dir: &Path) -> Result<Vec<(PathBuf, Result<Vec<Image>>)>> {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(rd) => rd.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ImageError::io("listing", dir, e)),
        };
        files.sort();
        let state_path = self.root().join("imported.json");
        let mut state: BTreeMap<String, ImportedArchive> = std::fs::read(&state_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let mut out = Vec::new();
        for f in files {
            let key = f.to_string_lossy().into_owned();
            let stamp = file_stamp(&f);
            if let Some(prev) = state.get(&key).filter(|p| Some(p.stamp) == stamp) {
                let images: Option<Vec<Image>> =
                    prev.images.iter().map(|n| self.get(n).ok()).collect();
                if let Some(images) = images {
                    out.push((f, Ok(images)));
                    continue;
                }
            }
            let res = self.import(&f).await;
            match (&res, stamp) {
                (Ok(images), Some(stamp)) => {
                    let images = images.iter().map(|i| i.name.clone()).collect();
                    state.insert(key, ImportedArchive { stamp, images });
                }
                (Err(e), _) => {
                    tracing::warn!(archive = %f.display(), error = %e, "image import failed")
                }
                _ => {}
            }
            out.push((f, res));
        }
        if let Ok(data) = serde_json::to_vec(&state) {
            if let Err(e) = crate::content::write_atomic(&state_path, &data) {
                tracing::warn!(error = %e, "could not record imported archives");
            }
        }
        Ok(out)
    }

    /// Writes `reference` as an OCI archive (uncompressed tar of an OCI image layout).
    pub async fn export(&self, reference: &str, path: &Path) -> Result<()> {
        let image = self.get(reference)?;
        let content = self.content().clone();
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || export_blocking(&content, &image, &path))
            .await
            .map_err(|e| ImageError::Io {
                context: "export thread".into(),
                source: std::io::Error::other(e.to_string()),
            })?
    }
}

fn export_blocking(content: &ContentStore, image: &Image, path: &Path) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(unique_tmp_name("export"));
    let res = (|| {
        let file = std::fs::File::create(&tmp).ctx("creating", &tmp)?;
        let mut b = tar::Builder::new(std::io::BufWriter::new(file));
        let add = |b: &mut tar::Builder<_>, name: &str, data: &[u8]| -> Result<()> {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(image.created_unix);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, name, data).ctx("writing", &tmp)
        };
        add(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        let manifest = content.read_blob(&image.digest)?;
        let mut annotations = BTreeMap::new();
        annotations.insert(CONTAINERD_NAME.to_string(), image.name.clone());
        if let Ok(r) = Reference::parse(&image.name) {
            if let Some(t) = r.tag {
                annotations.insert(OCI_REF_NAME.to_string(), t);
            }
        }
        let desc = Descriptor {
            media_type: image.media_type.clone(),
            digest: image.digest.clone(),
            size: manifest.len() as u64,
            platform: None,
            annotations,
        };
        let index = serde_json::json!({ "schemaVersion": 2, "manifests": [desc] });
        let index = serde_json::to_vec(&index).map_err(|e| ImageError::InvalidContent {
            what: "index".into(),
            detail: e.to_string(),
        })?;
        add(&mut b, "index.json", &index)?;
        add(&mut b, &format!("blobs/sha256/{}", &image.digest[7..]), &manifest)?;
        for d in std::iter::once(&image.config).chain(&image.layers) {
            let src = content.blob_path(&d.digest)?;
            let name = format!("blobs/sha256/{}", &d.digest[7..]);
            b.append_path_with_name(&src, &name).ctx("adding", &src)?;
        }
        let mut w = b.into_inner().ctx("finishing", &tmp)?;
        std::io::Write::flush(&mut w).ctx("writing", &tmp)?;
        w.get_ref().sync_all().ctx("syncing", &tmp)?;
        std::fs::rename(&tmp, path).ctx("renaming to", path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// Resolves a path inside the extracted archive, refusing escapes.
fn inside(work: &Path, archive: &Path, rel: &str) -> Result<PathBuf> {
    let rel = rel.trim_start_matches("./");
    if rel.is_empty() || rel.starts_with('/') || rel.split('/').any(|c| c == "..") {
        return Err(archive_err(archive, format!("bad path {rel:?} in archive metadata")));
    }
    Ok(work.join(rel))
}

fn blob_in_layout(work: &Path, archive: &Path, digest: &str) -> Result<PathBuf> {
    crate::reference::validate_digest(digest).map_err(|d| archive_err(archive, d))?;
    let p = work.join("blobs/sha256").join(&digest[7..]);
    if !p.is_file() {
        return Err(archive_err(archive, format!("blob {digest} missing from the layout")));
    }
    Ok(p)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path, archive: &Path) -> Result<T> {
    let data = std::fs::read(path).ctx("reading", path)?;
    serde_json::from_slice(&data).map_err(|e| {
        archive_err(
            archive,
            format!("{}: {e}", path.file_name().unwrap_or_default().to_string_lossy()),
        )
    })
}

fn stage_oci_layout(
    content: &ContentStore,
    archive: &Path,
    work: &Path,
    platform: &crate::platform::Platform,
) -> Result<Vec<Staged>> {
    #[derive(Deserialize)]
    struct OciIndex {
        manifests: Vec<Descriptor>,
    }
    let index: OciIndex = read_json(&work.join("index.json"), archive)?;
    let mut out: Vec<Staged> = Vec::new();
    for top in &index.manifests {
        let name = top
            .annotations
            .get(CONTAINERD_NAME)
            .or_else(|| top.annotations.get(OCI_REF_NAME))
            .map(|n| normalise_name(n, archive, &top.digest))
            .unwrap_or_else(|| fallback_name(archive, None, &top.digest));
        let bytes =
            std::fs::read(blob_in_layout(work, archive, &top.digest)?).ctx("reading", work)?;
        let (desc, bytes) = match parse_manifest(Some(&top.media_type), &bytes)? {
            ManifestDoc::Manifest(_) => (top.clone(), bytes),
            ManifestDoc::Index(idx) => {
                let entry = idx.select(platform, &name)?.clone();
                let b = std::fs::read(blob_in_layout(work, archive, &entry.digest)?)
                    .ctx("reading", work)?;
                (entry, b)
            }
        };
        if let Some(s) = out.iter_mut().find(|s| s.manifest_digest == desc.digest) {
            s.names.push(name);
            continue;
        }
        out.push(stage_manifest(content, archive, work, desc, &bytes, name)?);
    }
    Ok(out)
}

fn stage_manifest(
    content: &ContentStore,
    archive: &Path,
    work: &Path,
    desc: Descriptor,
    bytes: &[u8],
    name: String,
) -> Result<Staged> {
    let ManifestDoc::Manifest(manifest) = parse_manifest(Some(&desc.media_type), bytes)? else {
        return Err(archive_err(archive, "nested index"));
    };
    let manifest_desc = Descriptor { size: bytes.len() as u64, platform: None, ..desc };
    content.write_blob(&manifest_desc, bytes)?;
    content
        .import_file(&blob_in_layout(work, archive, &manifest.config.digest)?, &manifest.config)?;
    for l in &manifest.layers {
        content.import_file(&blob_in_layout(work, archive, &l.digest)?, l)?;
    }
    let config = ConfigFile::parse(&content.read_blob(&manifest.config.digest)?)?;
    check_layers(archive, &manifest, &config)?;
    Ok(Staged {
        names: vec![name],
        manifest_digest: manifest_desc.digest,
        manifest_media_type: manifest.media_type.clone().unwrap_or_else(|| OCI_MANIFEST.into()),
        manifest,
        config,
    })
}

fn check_layers(archive: &Path, manifest: &Manifest, config: &ConfigFile) -> Result<()> {
    if manifest.layers.len() != config.rootfs.diff_ids.len() {
        return Err(archive_err(
            archive,
            format!(
                "{} layers but {} diff_ids in the config",
                manifest.layers.len(),
                config.rootfs.diff_ids.len()
            ),
        ));
    }
    Ok(())
}

fn layer_media_type(path: &Path) -> Result<&'static str> {
    let mut magic = [0u8; 4];
    let mut f = std::fs::File::open(path).ctx("opening", path)?;
    let n = std::io::Read::read(&mut f, &mut magic).ctx("reading", path)?;
    Ok(match &magic[..n] {
        [0x1f, 0x8b, ..] => DOCKER_LAYER_GZIP,
        [0x28, 0xb5, 0x2f, 0xfd] => OCI_LAYER_ZSTD,
        _ => DOCKER_LAYER_TAR,
    })
}

fn stage_docker_save(content: &ContentStore, archive: &Path, work: &Path) -> Result<Vec<Staged>> {
    let entries: Vec<DockerSaveEntry> = read_json(&work.join("manifest.json"), archive)?;
    let mut out = Vec::new();
    for e in entries {
        let config_path = inside(work, archive, &e.config)?;
        let (size, digest) = ContentStore::digest_file(&config_path)?;
        let config_desc = Descriptor {
            media_type: DOCKER_CONFIG.into(),
            digest,
            size,
            platform: None,
            annotations: BTreeMap::new(),
        };
        content.import_file(&config_path, &config_desc)?;
        let mut layers = Vec::new();
        for l in &e.layers {
            let p = inside(work, archive, l)?;
            let (size, digest) = ContentStore::digest_file(&p)?;
            let desc = Descriptor {
                media_type: layer_media_type(&p)?.into(),
                digest,
                size,
                platform: None,
                annotations: BTreeMap::new(),
            };
            content.import_file(&p, &desc)?;
            layers.push(desc);
        }
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(DOCKER_MANIFEST.into()),
            config: config_desc,
            layers,
        };
        let bytes =
            serde_json::to_vec(&manifest).map_err(|err| archive_err(archive, err.to_string()))?;
        let digest = crate::distribution::sha256_digest(&bytes);
        let desc = Descriptor {
            media_type: DOCKER_MANIFEST.into(),
            digest: digest.clone(),
            size: bytes.len() as u64,
            platform: None,
            annotations: BTreeMap::new(),
        };
        content.write_blob(&desc, &bytes)?;
        let config = ConfigFile::parse(&content.read_blob(&manifest.config.digest)?)?;
        check_layers(archive, &manifest, &config)?;
        let names: Vec<String> = match e.repo_tags.filter(|t| !t.is_empty()) {
            Some(tags) => tags.iter().map(|t| normalise_name(t, archive, &digest)).collect(),
            None => vec![fallback_name(archive, None, &digest)],
        };
        out.push(Staged {
            names,
            manifest_digest: digest,
            manifest_media_type: DOCKER_MANIFEST.into(),
            manifest,
            config,
        });
    }
    Ok(out)
}
