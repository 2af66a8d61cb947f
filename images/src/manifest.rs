//! OCI and Docker schema 2 documents: indexes / manifest lists, manifests, image configs, and the
//! plain [`ImageConfig`] the runtime receives. Parsing is tolerant of the two dialects; anything
//! else (schema 1, unknown media types) is a clear error.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{ImageError, Result};
use crate::platform::Platform;

/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image config media type.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI layer, uncompressed.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI layer, gzip.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI layer, zstd.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Docker manifest list media type.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker schema 2 manifest media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker image config media type.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker layer (gzip).
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker layer (uncompressed, as in `docker save`).
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// The Accept header for manifest requests: every dialect this crate understands.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// A content descriptor: what a blob is, its digest and its size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: String,
    /// `sha256:<hex>` of the content.
    pub digest: String,
    /// Length in bytes.
    pub size: u64,
    /// Platform of an index entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<IndexPlatform>,
    /// Free-form annotations (e.g. `org.opencontainers.image.ref.name`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The platform object of an index entry (the spelling used in indexes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexPlatform {
    /// GOARCH-style architecture.
    pub architecture: String,
    /// Operating system.
    pub os: String,
    /// CPU variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// An OCI index or Docker manifest list.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2.
    pub schema_version: u32,
    /// Media type, when the document states it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The per-platform manifests.
    pub manifests: Vec<Descriptor>,
}

/// An OCI image manifest or Docker schema 2 manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// Media type, when the document states it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The image config blob.
    pub config: Descriptor,
    /// The layers, base first.
    pub layers: Vec<Descriptor>,
}

/// A manifest document of either kind.
#[derive(Debug, Clone)]
pub enum ManifestDoc {
    /// A multi-platform index.
    Index(Index),
    /// A single-platform manifest.
    Manifest(Manifest),
}

/// Parses a manifest body; `content_type` is the HTTP header (may be absent or generic).
pub fn parse_manifest(content_type: Option<&str>, body: &[u8]) -> Result<ManifestDoc> {
    let invalid = |detail: String| ImageError::InvalidContent { what: "manifest".into(), detail };
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| invalid(format!("not JSON: {e}")))?;
    let declared = value
        .get("mediaType")
        .and_then(|m| m.as_str())
        .map(str::to_string)
        .or_else(|| content_type.map(|c| c.split(';').next().unwrap_or("").trim().to_string()));
    if value.get("schemaVersion").and_then(|v| v.as_u64()) == Some(1) {
        return Err(invalid("Docker schema 1 manifests are not supported".into()));
    }
    let is_index = match declared.as_deref() {
        Some(OCI_INDEX | DOCKER_LIST) => true,
        Some(OCI_MANIFEST | DOCKER_MANIFEST) => false,
        _ => value.get("manifests").is_some(),
    };
    if is_index {
        serde_json::from_value(value).map(ManifestDoc::Index).map_err(|e| invalid(e.to_string()))
    } else {
        serde_json::from_value(value).map(ManifestDoc::Manifest).map_err(|e| invalid(e.to_string()))
    }
}

impl Index {
    /// The entry best suited to `platform`, or a [`ImageError::NoMatchingPlatform`].
    pub fn select(&self, platform: &Platform, reference: &str) -> Result<&Descriptor> {
        self.manifests
            .iter()
            .filter(|d| d.media_type != "application/vnd.in-toto+json")
            .filter_map(|d| {
                let p = d.platform.as_ref()?;
                let rank = platform.match_rank(&Platform::new(
                    &p.os,
                    &p.architecture,
                    p.variant.as_deref(),
                ))?;
                Some((rank, d))
            })
            .min_by_key(|(rank, _)| *rank)
            .map(|(_, d)| d)
            .ok_or_else(|| ImageError::NoMatchingPlatform {
                reference: reference.to_string(),
                platform: platform.to_string(),
                available: self
                    .manifests
                    .iter()
                    .filter_map(|d| d.platform.as_ref())
                    .map(|p| {
                        Platform::new(&p.os, &p.architecture, p.variant.as_deref()).to_string()
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// The image config blob (only the parts the node needs).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConfigFile {
    /// Architecture the image was built for.
    #[serde(default)]
    pub architecture: String,
    /// Operating system.
    #[serde(default)]
    pub os: String,
    /// CPU variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// The run configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<RunConfig>,
    /// The uncompressed layer digests.
    #[serde(default)]
    pub rootfs: RootFs,
}

/// `rootfs` in an image config.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// sha256 of each uncompressed layer tar, base first.
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// `config` in an image config (Docker's PascalCase field names).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    /// User (name, uid, or uid:gid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Exposed ports as `"80/tcp": {}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    /// Environment as `KEY=value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// Entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Default arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// Working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Signal that stops the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

/// What the runtime needs from an image config, as plain data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// Entrypoint (may be empty).
    pub entrypoint: Vec<String>,
    /// Default arguments (may be empty).
    pub cmd: Vec<String>,
    /// Environment as `KEY=value`.
    pub env: Vec<String>,
    /// Working directory (empty means `/`).
    pub working_dir: String,
    /// User (empty means root).
    pub user: String,
    /// Exposed ports, e.g. `80/tcp`.
    pub exposed_ports: Vec<String>,
    /// Stop signal name, e.g. `SIGTERM` (empty means the default).
    pub stop_signal: String,
    /// Image labels.
    pub labels: BTreeMap<String, String>,
}

impl ConfigFile {
    /// Parses a config blob.
    pub fn parse(body: &[u8]) -> Result<Self> {
        serde_json::from_slice(body).map_err(|e| ImageError::InvalidContent {
            what: "image config".into(),
            detail: e.to_string(),
        })
    }

    /// The platform the image was built for.
    pub fn platform(&self) -> Platform {
        Platform::new(&self.os, &self.architecture, self.variant.as_deref())
    }

    /// The runtime-facing view.
    pub fn image_config(&self) -> ImageConfig {
        let c = self.config.clone().unwrap_or_default();
        ImageConfig {
            entrypoint: c.entrypoint.unwrap_or_default(),
            cmd: c.cmd.unwrap_or_default(),
            env: c.env.unwrap_or_default(),
            working_dir: c.working_dir.unwrap_or_default(),
            user: c.user.unwrap_or_default(),
            exposed_ports: c.exposed_ports.unwrap_or_default().into_keys().collect(),
            stop_signal: c.stop_signal.unwrap_or_default(),
            labels: c.labels.unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_list_and_oci_manifest_parse() {
        let list = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json",
          "manifests":[{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"sha256:aa","size":1,
          "platform":{"architecture":"arm","os":"linux","variant":"v7"}},
          {"mediaType":"x","digest":"sha256:bb","size":1,"platform":{"architecture":"arm64","os":"linux"}}]}"#;
        let ManifestDoc::Index(idx) = parse_manifest(None, list).unwrap() else { panic!() };
        let armv7 = Platform::parse("linux/arm/v7").unwrap();
        assert_eq!(idx.select(&armv7, "x").unwrap().digest, "sha256:aa");
        let arm64 = Platform::parse("linux/arm64/v8").unwrap();
        assert_eq!(idx.select(&arm64, "x").unwrap().digest, "sha256:bb");
        let err = idx.select(&Platform::parse("linux/amd64").unwrap(), "x").unwrap_err();
        assert!(err.to_string().contains("no match for platform linux/amd64"), "{err}");

        let m = br#"{"schemaVersion":2,"config":{"mediaType":"a","digest":"sha256:c","size":2},"layers":[]}"#;
        assert!(matches!(parse_manifest(Some(OCI_MANIFEST), m).unwrap(), ManifestDoc::Manifest(_)));
        assert!(parse_manifest(None, br#"{"schemaVersion":1}"#).is_err());
    }

    #[test]
    fn config_maps_to_runtime_view() {
        let c = ConfigFile::parse(br#"{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/bin/sh"],
          "Cmd":["-c","true"],"Env":["A=1"],"WorkingDir":"/w","User":"1000","ExposedPorts":{"80/tcp":{}},
          "StopSignal":"SIGINT"},"rootfs":{"type":"layers","diff_ids":[]}}"#).unwrap();
        let ic = c.image_config();
        assert_eq!(ic.entrypoint, vec!["/bin/sh"]);
        assert_eq!(ic.exposed_ports, vec!["80/tcp"]);
        assert_eq!(ic.stop_signal, "SIGINT");
        assert_eq!(ic.working_dir, "/w");
    }
}
