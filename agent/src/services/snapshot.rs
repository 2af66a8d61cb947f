//! The offline snapshot: the last Services, EndpointSlices and Nodes this node saw, on
//! disk, so that a node rebooted while the API server is unreachable still serves ClusterIPs,
//! cluster names and cross-node pod routes from the moment it starts.
//!
//! One JSON file, `services-snapshot.json` in the state directory, replaced atomically (write
//! to a temporary file, fsync, rename, fsync the directory): a crash leaves either the old or
//! the new snapshot, never a torn one. The objects are stored as they were watched, already
//! stripped of what the node does not need (see `watch::strip_*`).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::{Deserialize, Serialize};

/// The snapshot's file name inside the state directory.
pub const SNAPSHOT_FILE: &str = "services-snapshot.json";

/// Bumped when the layout changes incompatibly; an unknown version is ignored, not misread.
const FORMAT_VERSION: u32 = 1;

/// Errors reading or writing the snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The file could not be read, written or renamed.
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    /// The file is not a snapshot we can read (corrupt, or written by another version).
    #[error("decoding {path}: {source}")]
    Decode { path: PathBuf, source: serde_json::Error },
    /// The objects could not be encoded (not expected for API objects).
    #[error("encoding the snapshot: {0}")]
    Encode(serde_json::Error),
}

/// What the node last knew of the cluster's services and nodes.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OfflineSnapshot {
    /// Layout version ([`FORMAT_VERSION`]).
    pub version: u32,
    /// Every Service.
    pub services: Vec<Service>,
    /// Every EndpointSlice.
    pub endpoint_slices: Vec<EndpointSlice>,
    /// Every Node (name, pod CIDR and addresses only).
    pub nodes: Vec<Node>,
    // Snapshots written before pod names were answered insecurely also hold `pods`: serde
    // skips the unknown field, so they still load.
}

impl OfflineSnapshot {
    /// A snapshot of the given objects in the current format.
    pub fn new(
        services: Vec<Service>,
        endpoint_slices: Vec<EndpointSlice>,
        nodes: Vec<Node>,
    ) -> Self {
        OfflineSnapshot { version: FORMAT_VERSION, services, endpoint_slices, nodes }
    }

    /// Reads the snapshot in `dir`; `Ok(None)` when there is none yet or it has another
    /// format version.
    pub fn load(dir: &Path) -> Result<Option<Self>, SnapshotError> {
        let path = dir.join(SNAPSHOT_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(SnapshotError::Io { what: "reading", path, source }),
        };
        let snapshot: OfflineSnapshot = serde_json::from_slice(&bytes)
            .map_err(|source| SnapshotError::Decode { path: path.clone(), source })?;
        if snapshot.version != FORMAT_VERSION {
            tracing::warn!(path = %path.display(), version = snapshot.version, "ignoring a snapshot of another format version");
            return Ok(None);
        }
        Ok(Some(snapshot))
    }

    /// Replaces the snapshot in `dir` atomically (blocking: call from `spawn_blocking`).
    pub fn save(&self, dir: &Path) -> Result<(), SnapshotError> {
        let path = dir.join(SNAPSHOT_FILE);
        let tmp = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
        let io = |what: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| SnapshotError::Io { what, path, source }
        };
        let bytes = serde_json::to_vec(self).map_err(SnapshotError::Encode)?;
        let mut file = File::create(&tmp).map_err(io("creating", &tmp))?;
        file.write_all(&bytes).map_err(io("writing", &tmp))?;
        file.sync_all().map_err(io("syncing", &tmp))?;
        drop(file);
        std::fs::rename(&tmp, &path).map_err(io("renaming into", &path))?;
        // The rename itself must reach the disk, or a power cut could bring back the old file.
        File::open(dir).and_then(|d| d.sync_all()).map_err(io("syncing", dir))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(name: &str, ip: &str) -> Service {
        serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": name},
            "spec": {"clusterIP": ip, "ports": [{"port": 80}]},
        }))
        .unwrap()
    }

    #[test]
    fn a_saved_snapshot_loads_back_and_a_new_save_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        assert!(OfflineSnapshot::load(dir.path()).unwrap().is_none(), "nothing saved yet");
        let first = OfflineSnapshot::new(vec![service("a", "10.43.0.5")], vec![], vec![]);
        first.save(dir.path()).unwrap();
        let second = OfflineSnapshot::new(vec![service("b", "10.43.0.6")], vec![], vec![]);
        second.save(dir.path()).unwrap();
        let loaded = OfflineSnapshot::load(dir.path()).unwrap().unwrap();
        let names: Vec<_> =
            loaded.services.iter().map(|s| s.metadata.name.clone().unwrap()).collect();
        assert_eq!(names, vec!["b"]);
        // No temporary file is left behind.
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(files.len(), 1);
    }

    #[test]
    fn a_snapshot_that_still_holds_pods_loads() {
        let dir = tempfile::tempdir().unwrap();
        let old = json!({"version": 1, "services": [], "endpointSlices": [], "nodes": [],
                         "pods": [{"metadata": {"name": "p"}}]});
        std::fs::write(dir.path().join(SNAPSHOT_FILE), old.to_string()).unwrap();
        assert!(OfflineSnapshot::load(dir.path()).unwrap().is_some());
    }

    #[test]
    fn a_corrupt_snapshot_is_an_error_and_another_version_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SNAPSHOT_FILE), b"{\"version\": 1, \"services\": [")
            .unwrap();
        assert!(matches!(OfflineSnapshot::load(dir.path()), Err(SnapshotError::Decode { .. })));
        let other =
            json!({"version": 99, "services": [], "endpointSlices": [], "nodes": [], "pods": []});
        std::fs::write(dir.path().join(SNAPSHOT_FILE), other.to_string()).unwrap();
        assert!(OfflineSnapshot::load(dir.path()).unwrap().is_none());
    }
}
