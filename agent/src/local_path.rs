//! Cleanup of this node's local-path volumes: the agent's half of the provisioner's reclaim.
//!
//! The control plane's local-path provisioner makes hostPath PersistentVolumes
//! `pvc-<uid>` at `<base>/pvc-<uid>_<namespace>_<claim>`, pinned to one node by node affinity
//! and carrying the finalizer [`FINALIZER`]; on reclaim `Delete` it deletes the volume, which
//! then stays `Terminating`. Only this node holds the directory, so [`run`] watches the volumes
//! pinned to it (the field selector the Node authorizer lets a node list with: it sees no other
//! volume) and, for each terminating one with the finalizer, removes the directory and then the
//! finalizer, and the volume is gone.
//!
//! A volume object is input from outside: the directory is removed only when it is exactly
//! `<local_storage_path>/<volume>_<claim namespace>_<claim name>` (the provisioner's layout,
//! from the volume's own name and claimRef), is a real directory (a symlink there is never
//! followed), and no pod on this node still uses the claim. Anything else is left in place,
//! a `VolumeDataLeft` Warning event says where, and the finalizer is taken off all the same
//! (nothing else would ever remove it). A removal that fails is retried on the next pass.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, ObjectReference, PersistentVolume, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use serde_json::json;
use tokio::sync::watch;

use crate::cache::LocalCache;

/// The provisioner's finalizer (spelled as in `skerry_control::controllers::localpath`).
pub const FINALIZER: &str = "skerry.io/local-path-cleanup";
/// The field selector of the volumes pinned to a node (the server's Skerry extension).
pub const PINNED_NODE_FIELD: &str = "skerry.io/pinnedNode";
/// How often the volumes are looked at again without a change (retries failed removals).
const RESCAN: Duration = Duration::from_secs(30);

/// What to do with a terminating volume's directory.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Remove this directory, then the finalizer.
    Remove(PathBuf),
    /// Leave the directory (the reason says why) and remove the finalizer.
    Leave(String),
}

/// The directory of `pv` if it is one of ours under `base` (see the module docs).
pub fn verdict(pv: &PersistentVolume, base: &Path) -> Verdict {
    let name = pv.metadata.name.as_deref().unwrap_or_default();
    let spec = pv.spec.as_ref();
    let Some(path) = spec.and_then(|s| s.host_path.as_ref()).map(|h| PathBuf::from(&h.path)) else {
        return Verdict::Leave("the volume has no hostPath".into());
    };
    let claim = spec.and_then(|s| s.claim_ref.as_ref());
    let (namespace, claim) = match claim.map(|c| (c.namespace.as_deref(), c.name.as_deref())) {
        Some((Some(ns), Some(claim))) => (ns, claim),
        _ => return Verdict::Leave("the volume has no claimRef".into()),
    };
    let plain = |s: &str| !s.is_empty() && !s.contains(['/', '_']) && s != "." && s != "..";
    let expected = base.join(format!("{name}_{namespace}_{claim}"));
    let normal = path.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    let ours = name.starts_with("pvc-") && plain(name) && plain(namespace) && plain(claim);
    if !(ours && base.is_absolute() && normal && path == expected) {
        return Verdict::Leave(format!(
            "{} is not a local-path directory under {} for this volume",
            path.display(),
            base.display()
        ));
    }
    Verdict::Remove(path)
}

/// Removes a volume directory, never through a symlink; a missing one is already done.
pub fn remove_dir(path: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("inspecting {}: {e}", path.display())),
        Ok(meta) if meta.is_dir() => {
            // std's remove_dir_all does not follow symlinks inside the tree either.
            std::fs::remove_dir_all(path).map_err(|e| format!("removing {}: {e}", path.display()))
        }
        Ok(_) => Err(format!("{} is not a directory; not following it", path.display())),
    }
}

/// Whether a pod this node still runs (not finished) uses the claim `namespace/claim`.
fn claim_in_use(pods: &[Pod], namespace: &str, claim: &str) -> bool {
    pods.iter().any(|pod| {
        let finished = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Succeeded" || p == "Failed");
        pod.metadata.namespace.as_deref() == Some(namespace)
            && !finished
            && pod
                .spec
                .iter()
                .flat_map(|s| s.volumes.iter().flatten())
                .any(|v| v.persistent_volume_claim.as_ref().is_some_and(|c| c.claim_name == claim))
    })
}

/// Watches the volumes pinned to `node` and cleans up the terminating ones, until `stop`.
pub async fn run(
    client: kube::Client,
    node: String,
    base: PathBuf,
    cache: LocalCache,
    mut stop: watch::Receiver<bool>,
) {
    let api: Api<PersistentVolume> = Api::all(client.clone());
    let config = watcher::Config::default().fields(&format!("{PINNED_NODE_FIELD}={node}"));
    let (store, writer) = reflector::store();
    let mut events =
        watcher::watcher(api.clone(), config).default_backoff().reflect(writer).boxed();
    let mut rescan = tokio::time::interval(RESCAN);
    let cleaner = Cleaner { client, api, node, base, cache };
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            event = events.next() => match event {
                Some(Ok(_)) => cleaner.pass(&store).await,
                Some(Err(err)) => tracing::debug!(%err, "watching local-path volumes; retrying"),
                None => return,
            },
            _ = rescan.tick() => cleaner.pass(&store).await,
        }
    }
}

struct Cleaner {
    client: kube::Client,
    api: Api<PersistentVolume>,
    node: String,
    base: PathBuf,
    cache: LocalCache,
}

impl Cleaner {
    /// Cleans up every terminating volume of ours in the store (level-triggered).
    async fn pass(&self, store: &Store<PersistentVolume>) {
        for pv in store.state() {
            let finalized = pv.metadata.finalizers.iter().flatten().any(|f| f == FINALIZER);
            if pv.metadata.deletion_timestamp.is_none() || !finalized {
                continue;
            }
            if let Err(err) = self.clean(&pv).await {
                let name = pv.metadata.name.as_deref().unwrap_or_default();
                tracing::warn!(volume = name, %err, "cleaning up a local-path volume; retrying");
            }
        }
    }

    async fn clean(&self, pv: &PersistentVolume) -> Result<(), String> {
        let name = pv.metadata.name.clone().unwrap_or_default();
        match verdict(pv, &self.base) {
            Verdict::Remove(path) => {
                let claim = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
                let (ns, claim) = claim
                    .map(|c| {
                        (
                            c.namespace.clone().unwrap_or_default(),
                            c.name.clone().unwrap_or_default(),
                        )
                    })
                    .unwrap_or_default();
                let pods = self.cache.run(|c| c.pods()).await.map_err(|e| e.to_string())?;
                if claim_in_use(&pods, &ns, &claim) {
                    return Err(format!("claim {ns}/{claim} is still used by a pod on this node"));
                }
                tokio::task::spawn_blocking(move || remove_dir(&path))
                    .await
                    .map_err(|e| e.to_string())??;
                tracing::info!(volume = %name, "local-path volume directory removed");
            }
            Verdict::Leave(why) => {
                tracing::warn!(volume = %name, %why, "leaving a local-path directory in place");
                self.data_left(pv, &why).await;
            }
        }
        self.remove_finalizer(pv).await
    }

    /// Takes the finalizer off at the resourceVersion read (a conflict waits for the next
    /// event); NodeRestriction lets a node change nothing else.
    async fn remove_finalizer(&self, pv: &PersistentVolume) -> Result<(), String> {
        let name = pv.metadata.name.as_deref().unwrap_or_default();
        let kept: Vec<&String> =
            pv.metadata.finalizers.iter().flatten().filter(|f| *f != FINALIZER).collect();
        let patch = json!({"metadata": {"finalizers": kept,
                                        "resourceVersion": pv.metadata.resource_version}});
        match self.api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(format!("removing the finalizer of {name}: {e}")),
        }
    }

    /// A `VolumeDataLeft` Warning event about `pv` (best effort: the log has it too).
    async fn data_left(&self, pv: &PersistentVolume, why: &str) {
        let name = pv.metadata.name.clone().unwrap_or_default();
        let now = Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{name}.{:x}", now.as_nanosecond())),
                namespace: Some("default".into()),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolume".into()),
                name: Some(name),
                uid: pv.metadata.uid.clone(),
                ..ObjectReference::default()
            },
            reason: Some("VolumeDataLeft".into()),
            message: Some(format!("volume deleted; its directory is left in place: {why}")),
            type_: Some("Warning".into()),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            reporting_component: Some("kubelet".into()),
            reporting_instance: Some(self.node.clone()),
            ..Event::default()
        };
        let events: Api<Event> = Api::namespaced(self.client.clone(), "default");
        if let Err(err) = events.create(&PostParams::default(), &event).await {
            tracing::debug!(%err, "posting a VolumeDataLeft event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pv(path: &str, claim: serde_json::Value) -> PersistentVolume {
        serde_json::from_value(json!({
            "metadata": {"name": "pvc-u1", "finalizers": [FINALIZER]},
            "spec": {"hostPath": {"path": path}, "claimRef": claim},
        }))
        .unwrap()
    }

    fn claim() -> serde_json::Value {
        json!({"namespace": "ns", "name": "data"})
    }

    #[test]
    fn only_the_provisioners_directory_under_the_base_is_removed() {
        let base = Path::new("/srv/storage");
        let ours = pv("/srv/storage/pvc-u1_ns_data", claim());
        assert_eq!(verdict(&ours, base), Verdict::Remove(base.join("pvc-u1_ns_data")));
        for (path, claim) in [
            ("/srv/other/pvc-u1_ns_data", claim()),
            ("/srv/storage/pvc-u1_ns_data/..", claim()),
            ("/srv/storage/../storage/pvc-u1_ns_data", claim()),
            ("/srv/storage/pvc-u1_ns_other", claim()),
            ("/srv/storage/pvc-u1_ns_data", json!({"namespace": "ns", "name": "da_ta"})),
            ("/srv/storage/pvc-u1_ns_data", json!({"name": "data"})),
            ("/srv/storage", claim()),
            ("/etc", claim()),
            ("pvc-u1_ns_data", claim()),
        ] {
            assert!(matches!(verdict(&pv(path, claim.clone()), base), Verdict::Leave(_)), "{path}");
        }
        let mut named = pv("/srv/storage/data_ns_data", json!({"namespace": "ns", "name": "data"}));
        named.metadata.name = Some("data".into());
        assert!(matches!(verdict(&named, base), Verdict::Leave(_)), "not a provisioned name");
    }

    #[test]
    fn removal_never_follows_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let ours = dir.path().join("pvc-u1_ns_data");
        std::fs::create_dir_all(ours.join("sub")).unwrap();
        std::fs::write(ours.join("sub/file"), b"x").unwrap();
        remove_dir(&ours).unwrap();
        assert!(!ours.exists());
        remove_dir(&ours).unwrap();
        let target = dir.path().join("important");
        std::fs::create_dir_all(&target).unwrap();
        std::fs::write(target.join("keep"), b"x").unwrap();
        let link = dir.path().join("pvc-u2_ns_data");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(remove_dir(&link).is_err());
        assert!(target.join("keep").exists());
    }

    #[test]
    fn a_running_pod_keeps_its_claims_directory() {
        let pod = |phase: &str| -> Pod {
            serde_json::from_value(json!({
                "metadata": {"name": "p", "namespace": "ns"},
                "spec": {"containers": [],
                         "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "data"}}]},
                "status": {"phase": phase},
            }))
            .unwrap()
        };
        assert!(claim_in_use(&[pod("Running")], "ns", "data"));
        assert!(!claim_in_use(&[pod("Succeeded")], "ns", "data"));
        assert!(!claim_in_use(&[pod("Running")], "other", "data"));
        assert!(!claim_in_use(&[pod("Running")], "ns", "other"));
    }
}
