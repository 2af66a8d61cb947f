//! The volume loop (the reference's `syncVolume`): `Available` without a claim, `Bound` while
//! its claim holds it, `Released` once that claim is gone, then the reclaim policy.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::Api;
use serde_json::json;

use super::matching::{self, annotation, claim_volume, BOUND_BY_CONTROLLER, PROVISIONED_BY};
use super::Binder;
use crate::machinery::{Action, ControlError, EventType};

impl Binder {
    /// Brings one volume's phase in line with its claim, and reclaims it once released.
    pub(super) async fn sync_volume(&self, name: &str) -> Result<Action, ControlError> {
        self.claims.ready().await;
        self.volumes.ready().await;
        let Some(pv) = self.volumes.get(None, name) else { return Ok(Action::Done) };
        // A terminating volume still follows its claim (`Released` once the claim is gone is
        // what lets pv-protection take its finalizer off), but is not reclaimed again.
        let terminating = pv.metadata.deletion_timestamp.is_some();
        let reference = pv.spec.as_ref().and_then(|s| s.claim_ref.clone());
        let Some(reference) = reference else {
            return self.set_volume_phase(&pv, "Available", None).await;
        };
        let uid = reference.uid.clone().unwrap_or_default();
        if uid.is_empty() {
            // Pre-bound by the user to a claim that has not bound yet.
            return self.set_volume_phase(&pv, "Available", None).await;
        }
        let namespace = reference.namespace.clone().unwrap_or_default();
        let claim_name = reference.name.clone().unwrap_or_default();
        let claim = match self.claims.get(Some(&namespace), &claim_name) {
            Some(claim) => Some(claim),
            // The cache may lag behind a claim created just now: ask the API server before
            // releasing anything (as the reference does).
            None => {
                let api: Api<PersistentVolumeClaim> =
                    Api::namespaced(self.ctx.client.clone(), &namespace);
                api.get_opt(&claim_name).await?.map(Arc::new)
            }
        };
        let claim = claim.filter(|c| c.metadata.uid.as_deref() == Some(uid.as_str()));
        let Some(claim) = claim else {
            if matching::volume_phase(&pv) != "Released" && matching::volume_phase(&pv) != "Failed"
            {
                self.set_volume_phase(&pv, "Released", None).await?;
                // The change brings the volume back for its reclaim.
                return Ok(Action::Done);
            }
            if terminating {
                return Ok(Action::Done);
            }
            return self.reclaim(&pv).await;
        };
        let bound_to = claim_volume(&claim);
        if bound_to.is_empty() || bound_to == name {
            // Bound, or being bound (the claim loop finishes the claim's side).
            return self.set_volume_phase(&pv, "Bound", None).await;
        }
        // The claim went to another volume. Undo our own half-finished binding; a claimRef
        // the user wrote stays as written.
        if annotation(&pv.metadata, BOUND_BY_CONTROLLER).is_some() {
            let mut unbound = pv.as_ref().clone();
            if let Some(spec) = unbound.spec.as_mut() {
                spec.claim_ref = None;
            }
            if let Some(notes) = unbound.metadata.annotations.as_mut() {
                notes.remove(BOUND_BY_CONTROLLER);
            }
            let api: Api<PersistentVolume> = Api::all(self.ctx.client.clone());
            api.replace(name, &PostParams::default(), &unbound).await?;
        }
        Ok(Action::Done)
    }

    /// Applies the reclaim policy of a Released volume.
    async fn reclaim(&self, pv: &Arc<PersistentVolume>) -> Result<Action, ControlError> {
        let policy = pv
            .spec
            .as_ref()
            .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
            .unwrap_or("Retain");
        match policy {
            "Delete" if annotation(&pv.metadata, PROVISIONED_BY).is_none() => {
                // A volume created by hand: only the object goes; its storage is the
                // administrator's (the reference would need a deleter plugin for it).
                let api: Api<PersistentVolume> = Api::all(self.ctx.client.clone());
                let preconditions =
                    Preconditions { uid: pv.metadata.uid.clone(), resource_version: None };
                let params =
                    DeleteParams { preconditions: Some(preconditions), ..DeleteParams::default() };
                let name = pv.metadata.name.clone().unwrap_or_default();
                match api.delete(&name, &params).await {
                    Ok(_) => tracing::info!(volume = %name, "released volume deleted"),
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(error) => return Err(error.into()),
                }
                Ok(Action::Done)
            }
            // Provisioned volumes are deleted by their provisioner, which also frees the
            // storage behind them.
            "Delete" => Ok(Action::Done),
            "Recycle" if matching::volume_phase(pv) != "Failed" => {
                let message = "Recycle is not supported; use Retain or Delete";
                self.ctx
                    .events
                    .record(pv.as_ref(), EventType::Warning, "VolumeFailedRecycle", message)
                    .await;
                self.set_volume_phase(pv, "Failed", Some(message)).await
            }
            _ => Ok(Action::Done),
        }
    }

    /// Sets the volume's phase (and message), when it differs.
    async fn set_volume_phase(
        &self,
        pv: &PersistentVolume,
        phase: &str,
        message: Option<&str>,
    ) -> Result<Action, ControlError> {
        let current = pv.status.as_ref();
        let same = matching::volume_phase(pv) == phase
            && current.and_then(|s| s.message.as_deref()) == message;
        if same {
            return Ok(Action::Done);
        }
        let api: Api<PersistentVolume> = Api::all(self.ctx.client.clone());
        let patch = json!({"status": {"phase": phase, "message": message}});
        let name = pv.metadata.name.clone().unwrap_or_default();
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        Ok(Action::Done)
    }
}
