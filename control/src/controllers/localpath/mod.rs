//! The built-in local-path provisioner (rancher's local-path-provisioner, as k3s ships it):
//! the default StorageClass `local-path` (`WaitForFirstConsumer`, reclaim `Delete`) and, for
//! each claim of that class the binder hands over (`volume.kubernetes.io/storage-provisioner`)
//! once the scheduler's node is known (`volume.kubernetes.io/selected-node`), a hostPath
//! PersistentVolume `pvc-<uid>` at `<base>/pvc-<uid>_<namespace>_<claim>` (type
//! `DirectoryOrCreate`, so the node's agent creates the directory when a pod first mounts it),
//! pinned to that node by node affinity and pre-bound to the claim through `claimRef`.
//!
//! The base path is `--default-local-storage-path`, or the class parameter `nodePath`.
//!
//! Reclaim: every volume of ours carries the finalizer [`FINALIZER`]. One that the binder
//! marked `Released` under policy `Delete` is deleted here, and stays `Terminating`: its
//! directory lives on its node, so the agent of the node the volume is pinned to (which may
//! read and update exactly the volumes pinned to it, see the Node authorizer) removes the
//! directory and then the finalizer, and the volume is gone. One path for every node, the
//! server's own included. Should the node no longer exist, nobody is left to clean up: the
//! finalizer is taken off here and a `VolumeDataLeft` Warning event says where the data was.

mod provision;

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::Api;

use crate::controllers::persistentvolume::{annotation, PROVISIONED_BY, STORAGE_PROVISIONER};
use crate::controllers::ControllerOptions;
use crate::machinery::{run_workers, Context, ObjectKey, WorkQueue};

/// The name `--disable-controllers` takes.
pub const NAME: &str = "local-path-provisioner";
/// The component name in Events.
pub const COMPONENT: &str = "skerry.io/local-path";
/// The provisioner name in StorageClasses and annotations.
pub const PROVISIONER: &str = "skerry.io/local-path";
/// The default class.
pub const CLASS: &str = "local-path";
/// The class parameter that overrides the base path.
const PATH_PARAMETER: &str = "nodePath";
/// The finalizer on our volumes until their node's agent has removed the directory (the
/// agent spells it too: it does not link the control plane).
pub const FINALIZER: &str = crate::apiserver::authz::node::LOCAL_PATH_FINALIZER;

/// Starts the provisioner: makes the default class if missing, then follows claims and
/// volumes.
pub fn start(ctx: Context<ControllerOptions>) {
    let claim_queue: WorkQueue<ObjectKey> = WorkQueue::new();
    let volume_queue: WorkQueue<String> = WorkQueue::new();
    ctx.informers.get::<PersistentVolumeClaim>().feed(claim_queue.clone(), |c| {
        if annotation(&c.metadata, STORAGE_PROVISIONER) == Some(PROVISIONER) {
            vec![ObjectKey::of(c)]
        } else {
            Vec::new()
        }
    });
    let volumes = ctx.informers.get::<PersistentVolume>();
    volumes.feed(volume_queue.clone(), |pv| {
        if annotation(&pv.metadata, PROVISIONED_BY) == Some(PROVISIONER) {
            pv.metadata.name.clone().into_iter().collect()
        } else {
            Vec::new()
        }
    });
    // A node that goes away leaves its terminating volumes to us.
    ctx.informers.get::<Node>().feed(volume_queue.clone(), move |node| {
        volumes
            .list()
            .into_iter()
            .filter(|pv| pv.metadata.deletion_timestamp.is_some())
            .filter(|pv| provision::pinned_node(pv).is_some_and(|n| provision::is_node(node, &n)))
            .filter_map(|pv| pv.metadata.name.clone())
            .collect()
    });
    let class_ctx = ctx.clone();
    tokio::spawn(async move { ensure_default_class(&class_ctx).await });
    let workers = ctx.options.workers;
    let claim_ctx = ctx.clone();
    run_workers("local-path-claims", claim_queue, workers, move |key: ObjectKey| {
        let ctx = claim_ctx.clone();
        async move { provision::sync_claim(&ctx, &key).await }
    });
    run_workers("local-path-volumes", volume_queue, workers, move |name: String| {
        let ctx = ctx.clone();
        async move { provision::sync_volume(&ctx, &name).await }
    });
}

/// The default class as the server creates it.
fn default_class() -> StorageClass {
    StorageClass {
        metadata: ObjectMeta {
            name: Some(CLASS.into()),
            annotations: Some(BTreeMap::from([(
                crate::controllers::persistentvolume::DEFAULT_CLASS.to_string(),
                "true".to_string(),
            )])),
            ..ObjectMeta::default()
        },
        provisioner: PROVISIONER.into(),
        reclaim_policy: Some("Delete".into()),
        volume_binding_mode: Some("WaitForFirstConsumer".into()),
        ..StorageClass::default()
    }
}

/// Creates the default class unless a class of that name exists (a user's edits are kept);
/// retried until the API server answers.
async fn ensure_default_class(ctx: &Context<ControllerOptions>) {
    let api: Api<StorageClass> = Api::all(ctx.client.clone());
    let mut delay = std::time::Duration::from_millis(200);
    loop {
        match api.create(&PostParams::default(), &default_class()).await {
            Ok(_) => {
                tracing::info!(class = CLASS, "created the default StorageClass");
                return;
            }
            Err(kube::Error::Api(s)) if s.code == 409 => return,
            Err(error) => {
                tracing::warn!(%error, "creating the default StorageClass; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(30));
            }
        }
    }
}

/// The directory of a provisioned volume: `<base>/<volume>_<namespace>_<claim>`.
pub fn volume_dir(base: &Path, volume: &str, namespace: &str, claim: &str) -> std::path::PathBuf {
    base.join(format!("{volume}_{namespace}_{claim}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_class_waits_for_consumers_and_deletes() {
        let class = default_class();
        assert_eq!(class.provisioner, PROVISIONER);
        assert_eq!(class.volume_binding_mode.as_deref(), Some("WaitForFirstConsumer"));
        assert_eq!(class.reclaim_policy.as_deref(), Some("Delete"));
        let marked =
            annotation(&class.metadata, crate::controllers::persistentvolume::DEFAULT_CLASS);
        assert_eq!(marked, Some("true"));
    }

    #[test]
    fn directories_follow_the_reference_layout() {
        let dir = volume_dir(Path::new("/var/lib/skerry/storage"), "pvc-1", "default", "data");
        assert_eq!(dir, Path::new("/var/lib/skerry/storage/pvc-1_default_data"));
    }
}
