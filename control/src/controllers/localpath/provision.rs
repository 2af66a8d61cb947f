//! Provisioning a volume for a claim, deleting a released one, and giving up on the cleanup of
//! one whose node is gone (see the module above).

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::Api;
use serde_json::json;

use super::{volume_dir, FINALIZER, PATH_PARAMETER, PROVISIONER};
use crate::controllers::persistentvolume::{
    annotation, claim_class, claim_volume, is_delayed, volume_phase, PROVISIONED_BY, SELECTED_NODE,
    STORAGE_PROVISIONER,
};
use crate::controllers::ControllerOptions;
use crate::machinery::{Action, Context, ControlError, EventType, ObjectKey};

/// The node label the volumes' node affinity selects on.
const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// Creates the volume of a claim handed to us, once its node is known.
pub async fn sync_claim(
    ctx: &Context<ControllerOptions>,
    key: &ObjectKey,
) -> Result<Action, ControlError> {
    let claims = ctx.informers.get::<PersistentVolumeClaim>();
    let volumes = ctx.informers.get::<PersistentVolume>();
    claims.ready().await;
    volumes.ready().await;
    let Some(claim) = claims.get(Some(&key.namespace), &key.name) else {
        return Ok(Action::Done);
    };
    let ours = annotation(&claim.metadata, STORAGE_PROVISIONER) == Some(PROVISIONER);
    if !ours || claim.metadata.deletion_timestamp.is_some() || !claim_volume(&claim).is_empty() {
        return Ok(Action::Done);
    }
    let Some(class) = ctx.informers.get::<StorageClass>().get(None, claim_class(&claim)) else {
        return Ok(Action::Done);
    };
    if class.provisioner != PROVISIONER {
        return Ok(Action::Done);
    }
    let Some(node) = annotation(&claim.metadata, SELECTED_NODE) else {
        if !is_delayed(Some(&class)) {
            // As rancher's provisioner: a local volume needs a node, which only a consumer's
            // scheduling gives.
            let message = "configuration error, no node was specified; use a StorageClass \
                           with volumeBindingMode WaitForFirstConsumer";
            ctx.events
                .record(claim.as_ref(), EventType::Warning, "ProvisioningFailed", message)
                .await;
        }
        return Ok(Action::Done);
    };
    let uid = claim.metadata.uid.clone().unwrap_or_default();
    let name = format!("pvc-{uid}");
    if volumes.get(None, &name).is_some() {
        // Made already; the binder binds it.
        return Ok(Action::Done);
    }
    let node_object = ctx.informers.get::<Node>().get(None, node);
    let pv = match volume_for(
        &claim,
        &class,
        node,
        node_object.as_deref(),
        &ctx.options.local_storage_path,
    ) {
        Ok(pv) => pv,
        Err(why) => {
            ctx.events.record(claim.as_ref(), EventType::Warning, "ProvisioningFailed", &why).await;
            return Ok(Action::Done);
        }
    };
    let api: Api<PersistentVolume> = Api::all(ctx.client.clone());
    match api.create(&PostParams::default(), &pv).await {
        Ok(_) => {
            let message = format!("Successfully provisioned volume {name}");
            ctx.events
                .record(claim.as_ref(), EventType::Normal, "ProvisioningSucceeded", &message)
                .await;
            Ok(Action::Done)
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(Action::Done),
        Err(error) => Err(error.into()),
    }
}

/// The volume to create for `claim` on `node` (`node_object` gives its hostname label).
pub fn volume_for(
    claim: &PersistentVolumeClaim,
    class: &StorageClass,
    node: &str,
    node_object: Option<&Node>,
    default_base: &Path,
) -> Result<PersistentVolume, String> {
    let namespace = claim.metadata.namespace.as_deref().unwrap_or("");
    let claim_name = claim.metadata.name.as_deref().unwrap_or("");
    let uid = claim.metadata.uid.as_deref().unwrap_or("");
    let spec = claim.spec.as_ref();
    let Some(storage) = spec
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
    else {
        return Err("claim has no storage request (spec.resources.requests.storage)".into());
    };
    if spec.and_then(|s| s.volume_mode.as_deref()) == Some("Block") {
        return Err(
            "local-path volumes are filesystem volumes; volumeMode Block is not supported".into()
        );
    }
    let base = class
        .parameters
        .as_ref()
        .and_then(|p| p.get(PATH_PARAMETER))
        .map(PathBuf::from)
        .unwrap_or_else(|| default_base.to_path_buf());
    if !base.is_absolute() {
        return Err(format!("{PATH_PARAMETER} {} is not an absolute path", base.display()));
    }
    let name = format!("pvc-{uid}");
    let path = volume_dir(&base, &name, namespace, claim_name);
    // The label the scheduler matches; the node's name when the node is not known yet.
    let hostname = node_object
        .and_then(|n| n.metadata.labels.as_ref())
        .and_then(|l| l.get(HOSTNAME_LABEL))
        .map_or(node, String::as_str);
    let access_modes = spec.and_then(|s| s.access_modes.clone()).unwrap_or_default();
    let value = json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "annotations": {PROVISIONED_BY: PROVISIONER},
                     "finalizers": [FINALIZER]},
        "spec": {
            "capacity": {"storage": storage},
            "accessModes": access_modes,
            "persistentVolumeReclaimPolicy": class.reclaim_policy.as_deref().unwrap_or("Delete"),
            "storageClassName": class.metadata.name,
            "volumeMode": "Filesystem",
            "hostPath": {"path": path.to_string_lossy(), "type": "DirectoryOrCreate"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": HOSTNAME_LABEL, "operator": "In", "values": [hostname]}]}]}},
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                         "namespace": namespace, "name": claim_name, "uid": uid,
                         "resourceVersion": claim.metadata.resource_version},
        }
    });
    serde_json::from_value(value).map_err(|e| format!("building the volume: {e}"))
}

/// Keeps a volume of ours finalized, deletes it once released under policy Delete (its
/// node's agent then removes the directory and the finalizer), and takes the finalizer off
/// when the volume's node is gone.
pub async fn sync_volume(
    ctx: &Context<ControllerOptions>,
    name: &str,
) -> Result<Action, ControlError> {
    let volumes = ctx.informers.get::<PersistentVolume>();
    let nodes = ctx.informers.get::<Node>();
    volumes.ready().await;
    nodes.ready().await;
    let Some(pv) = volumes.get(None, name) else { return Ok(Action::Done) };
    if annotation(&pv.metadata, PROVISIONED_BY) != Some(PROVISIONER) {
        return Ok(Action::Done);
    }
    let finalizers = pv.metadata.finalizers.clone().unwrap_or_default();
    let finalized = finalizers.iter().any(|f| f == FINALIZER);
    let api: Api<PersistentVolume> = Api::all(ctx.client.clone());
    if pv.metadata.deletion_timestamp.is_some() {
        if !finalized {
            return Ok(Action::Done);
        }
        let node = pinned_node(&pv);
        let node_exists =
            node.as_deref().is_some_and(|pinned| nodes.list().iter().any(|n| is_node(n, pinned)));
        if node_exists {
            // Its agent's to clean up.
            return Ok(Action::Done);
        }
        let message = format!(
            "volume deleted; its node {} is gone, so its directory {} is left in place",
            node.as_deref().unwrap_or("?"),
            pv.spec.as_ref().and_then(|s| s.host_path.as_ref()).map_or("?", |h| h.path.as_str()),
        );
        ctx.events.record(pv.as_ref(), EventType::Warning, "VolumeDataLeft", &message).await;
        let kept: Vec<&String> = finalizers.iter().filter(|f| *f != FINALIZER).collect();
        set_finalizers(&api, &pv, &kept).await?;
        return Ok(Action::Done);
    }
    if !finalized {
        // Made before volumes carried the finalizer: without it, deleting the volume would
        // leave the directory behind.
        let mut all: Vec<&String> = finalizers.iter().collect();
        let ours = FINALIZER.to_string();
        all.push(&ours);
        set_finalizers(&api, &pv, &all).await?;
        return Ok(Action::Done);
    }
    let spec = pv.spec.clone().unwrap_or_default();
    let deleting = spec.persistent_volume_reclaim_policy.as_deref() == Some("Delete");
    if !deleting || volume_phase(&pv) != "Released" {
        return Ok(Action::Done);
    }
    let preconditions = Preconditions { uid: pv.metadata.uid.clone(), resource_version: None };
    let params = DeleteParams { preconditions: Some(preconditions), ..DeleteParams::default() };
    match api.delete(name, &params).await {
        Ok(_) => {
            tracing::info!(volume = %name, "released local-path volume deleted; its node cleans up");
            Ok(Action::Done)
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Action::Done),
        Err(error) => Err(error.into()),
    }
}

/// Sets a volume's finalizers, at the resourceVersion it was read at (a conflict retries the
/// whole reconcile).
async fn set_finalizers(
    api: &Api<PersistentVolume>,
    pv: &PersistentVolume,
    finalizers: &[&String],
) -> Result<(), ControlError> {
    let name = pv.metadata.name.as_deref().unwrap_or_default();
    let patch = json!({"metadata": {"finalizers": finalizers,
                                    "resourceVersion": pv.metadata.resource_version}});
    match api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// The node a volume of ours is pinned to (the single value of its hostname term).
pub(super) fn pinned_node(pv: &PersistentVolume) -> Option<String> {
    let affinity = pv.spec.as_ref()?.node_affinity.as_ref()?.required.as_ref()?;
    let term = affinity.node_selector_terms.first()?;
    let expression = term.match_expressions.as_ref()?.iter().find(|e| e.key == HOSTNAME_LABEL)?;
    expression.values.as_ref()?.first().cloned()
}

/// Whether `node` is the one a volume pinned to `pinned` (a hostname label value) is on.
pub(super) fn is_node(node: &Node, pinned: &str) -> bool {
    let label = node.metadata.labels.as_ref().and_then(|l| l.get(HOSTNAME_LABEL));
    node.metadata.name.as_deref() == Some(pinned) || label.is_some_and(|l| l == pinned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim() -> PersistentVolumeClaim {
        serde_json::from_value(json!({
            "metadata": {"name": "data", "namespace": "ns", "uid": "u1",
                         "annotations": {SELECTED_NODE: "n1"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "local-path",
                     "resources": {"requests": {"storage": "2Gi"}}}
        }))
        .unwrap()
    }

    fn class(parameters: serde_json::Value) -> StorageClass {
        serde_json::from_value(
            json!({"metadata": {"name": "local-path"}, "provisioner": PROVISIONER,
            "reclaimPolicy": "Retain", "parameters": parameters}),
        )
        .unwrap()
    }

    #[test]
    fn a_volume_is_pinned_to_the_node_and_pre_bound() {
        let node: Node = serde_json::from_value(json!({"metadata": {"name": "n1",
            "labels": {HOSTNAME_LABEL: "host-1"}}}))
        .unwrap();
        let pv =
            volume_for(&claim(), &class(json!({})), "n1", Some(&node), Path::new("/srv")).unwrap();
        assert_eq!(pv.metadata.name.as_deref(), Some("pvc-u1"));
        assert_eq!(annotation(&pv.metadata, PROVISIONED_BY), Some(PROVISIONER));
        let spec = pv.spec.as_ref().unwrap();
        let host = spec.host_path.as_ref().unwrap();
        assert_eq!(host.path, "/srv/pvc-u1_ns_data");
        assert_eq!(host.type_.as_deref(), Some("DirectoryOrCreate"));
        assert_eq!(spec.capacity.as_ref().unwrap()["storage"].0, "2Gi");
        assert_eq!(spec.persistent_volume_reclaim_policy.as_deref(), Some("Retain"));
        let reference = spec.claim_ref.as_ref().unwrap();
        assert_eq!(
            (reference.name.as_deref(), reference.uid.as_deref()),
            (Some("data"), Some("u1"))
        );
        assert_eq!(pinned_node(&pv).as_deref(), Some("host-1"));
        assert_eq!(pv.metadata.finalizers.as_deref(), Some(&[FINALIZER.to_string()][..]));
        // Exactly the narrow pin the Node authorizer lets that node's agent reach.
        let value = serde_json::to_value(&pv).unwrap();
        assert_eq!(crate::apiserver::authz::node::pinned_node(&value), Some("host-1"));
    }

    #[test]
    fn a_class_parameter_moves_the_base_and_bad_claims_are_refused() {
        let pv = volume_for(
            &claim(),
            &class(json!({"nodePath": "/data"})),
            "n1",
            None,
            Path::new("/srv"),
        )
        .unwrap();
        assert_eq!(pv.spec.unwrap().host_path.unwrap().path, "/data/pvc-u1_ns_data");
        let relative = volume_for(
            &claim(),
            &class(json!({"nodePath": "data"})),
            "n1",
            None,
            Path::new("/srv"),
        );
        assert!(relative.is_err());
        let mut no_size = claim();
        no_size.spec.as_mut().unwrap().resources = None;
        assert!(volume_for(&no_size, &class(json!({})), "n1", None, Path::new("/srv")).is_err());
    }
}
