//! The claim loop (the reference's `syncClaim`): default class, the chosen node of a delayed
//! claim, binding to a volume (both sides), asking a provisioner, and `Lost` / `Pending` /
//! `Bound` in the claim's status.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimStatus,
};
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;

use super::matching::{self, annotation, claim_volume, SELECTED_NODE};
use super::{Binder, BETA_STORAGE_PROVISIONER, BIND_COMPLETED, STORAGE_PROVISIONER};
use crate::controllers::util::pod;
use crate::machinery::{Action, ControlError, EventType, ObjectKey};
use crate::scheduler::filters::volume_binding::claim_names;

/// `"yes"`, the value of the reference's boolean annotations.
const YES: &str = "yes";

/// The claim's `status.phase`.
fn claim_phase(claim: &PersistentVolumeClaim) -> &str {
    claim.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

impl Binder {
    /// Brings one claim towards Bound.
    pub(super) async fn sync_claim(&self, key: &ObjectKey) -> Result<Action, ControlError> {
        self.claims.ready().await;
        self.volumes.ready().await;
        let Some(claim) = self.claims.get(Some(&key.namespace), &key.name) else {
            return Ok(Action::Done);
        };
        if claim.metadata.deletion_timestamp.is_some() {
            // Its volume is released by the volume loop once the claim is gone.
            return Ok(Action::Done);
        }
        let api: Api<PersistentVolumeClaim> =
            Api::namespaced(self.ctx.client.clone(), &key.namespace);
        let unclassed = claim.spec.as_ref().is_some_and(|s| s.storage_class_name.is_none());
        if unclassed {
            if let Some(class) = matching::default_class(&self.classes.list()) {
                let name = class.metadata.name.clone().unwrap_or_default();
                let patch = json!({"metadata": {"resourceVersion": claim.metadata.resource_version},
                                   "spec": {"storageClassName": name}});
                api.patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
                return Ok(Action::Done);
            }
        }
        let volume = claim_volume(&claim);
        if volume.is_empty() {
            self.sync_unbound(&api, &claim).await
        } else {
            self.sync_named(&api, &claim, volume).await
        }
    }

    /// A claim without `volumeName`: find its volume, or ask for one.
    async fn sync_unbound(
        &self,
        api: &Api<PersistentVolumeClaim>,
        claim: &Arc<PersistentVolumeClaim>,
    ) -> Result<Action, ControlError> {
        let class = self.class_of(claim);
        let delayed = matching::is_delayed(class.as_deref());
        let selected = annotation(&claim.metadata, SELECTED_NODE).map(str::to_string);
        if delayed && selected.is_none() {
            if let Some(node) = self.consumer_node(claim) {
                let patch = json!({"metadata": {"annotations": {SELECTED_NODE: node}}});
                let name = claim.metadata.name.clone().unwrap_or_default();
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
            }
            // Without a consumer there is nothing to do; with one, the patch brings us back.
            return Ok(Action::Done);
        }
        let node = selected.as_deref().and_then(|n| self.nodes.get(None, n));
        if delayed && node.is_none() {
            // The chosen node is not (yet) in the cache; its arrival does not requeue claims.
            return Ok(Action::RequeueAfter(std::time::Duration::from_secs(5)));
        }
        let volumes = self.volumes.list();
        if let Some(pv) = matching::best_volume(claim, &volumes, delayed, node.as_deref()) {
            return self.bind(api, claim, &pv).await;
        }
        let provisioner = class.as_ref().map(|c| c.provisioner.as_str()).unwrap_or("");
        let asked = annotation(&claim.metadata, STORAGE_PROVISIONER) == Some(provisioner);
        if !provisioner.is_empty() && provisioner != "kubernetes.io/no-provisioner" && !asked {
            let patch = json!({"metadata": {"annotations": {
                STORAGE_PROVISIONER: provisioner, BETA_STORAGE_PROVISIONER: provisioner}}});
            let name = claim.metadata.name.clone().unwrap_or_default();
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
            let message = format!(
                "Waiting for a volume to be created either by the external provisioner \
                 '{provisioner}' or manually by the system administrator."
            );
            self.ctx
                .events
                .record(claim.as_ref(), EventType::Normal, "ExternalProvisioning", &message)
                .await;
        }
        self.set_phase(api, claim, "Pending").await
    }

    /// The node of a placed, running pod that uses the claim.
    fn consumer_node(&self, claim: &PersistentVolumeClaim) -> Option<String> {
        let namespace = claim.metadata.namespace.as_deref().unwrap_or("");
        let name = claim.metadata.name.as_deref().unwrap_or("");
        self.pods.list_namespace(namespace).into_iter().find_map(|p| {
            let node = p.spec.as_ref()?.node_name.clone().filter(|n| !n.is_empty())?;
            let uses = claim_names(&p).iter().any(|c| c == name);
            (uses && !pod::is_terminal(&p)).then_some(node)
        })
    }

    /// A claim with `volumeName`: bind it to that volume, or note why not.
    async fn sync_named(
        &self,
        api: &Api<PersistentVolumeClaim>,
        claim: &Arc<PersistentVolumeClaim>,
        volume: &str,
    ) -> Result<Action, ControlError> {
        let was_bound =
            annotation(&claim.metadata, BIND_COMPLETED).is_some() || claim_phase(claim) == "Bound";
        let Some(pv) = self.volumes.get(None, volume) else {
            if was_bound {
                if claim_phase(claim) != "Lost" {
                    let message = "Bound claim has lost reference to PersistentVolume. Data on \
                                   the volume is lost!";
                    self.ctx
                        .events
                        .record(claim.as_ref(), EventType::Warning, "ClaimLost", message)
                        .await;
                }
                return self.set_phase(api, claim, "Lost").await;
            }
            // Pre-bound to a volume that does not exist yet.
            return self.set_phase(api, claim, "Pending").await;
        };
        let reference = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
        if reference.is_none() || matching::points_at(&pv, claim) {
            if reference.is_none() {
                if let Some(why) = matching::unsatisfied(&pv, claim) {
                    let message = format!("Cannot bind to requested volume \"{volume}\": {why}");
                    self.ctx
                        .events
                        .record(claim.as_ref(), EventType::Warning, "VolumeMismatch", &message)
                        .await;
                    return self.set_phase(api, claim, "Pending").await;
                }
            }
            return self.bind(api, claim, &pv).await;
        }
        // The volume belongs to another claim.
        if was_bound {
            return self.set_phase(api, claim, "Lost").await;
        }
        let message = format!("volume \"{volume}\" already bound to a different claim.");
        self.ctx.events.record(claim.as_ref(), EventType::Warning, "FailedBinding", &message).await;
        self.set_phase(api, claim, "Pending").await
    }

    /// Binds `pv` and `claim` to each other (the reference's `bind`): the volume's `claimRef`
    /// and phase, then the claim's `volumeName`, annotations and status. Each step is skipped
    /// when already done, so a retry after a failure continues where it stopped.
    async fn bind(
        &self,
        api: &Api<PersistentVolumeClaim>,
        claim: &Arc<PersistentVolumeClaim>,
        pv: &Arc<PersistentVolume>,
    ) -> Result<Action, ControlError> {
        let pv_name = pv.metadata.name.clone().unwrap_or_default();
        let claim_name = claim.metadata.name.clone().unwrap_or_default();
        let volumes: Api<PersistentVolume> = Api::all(self.ctx.client.clone());
        let params = PostParams::default();

        let mut pv = pv.as_ref().clone();
        let reference = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
        let complete = reference.is_some_and(|r| r.uid.as_deref() == claim.metadata.uid.as_deref());
        if !complete {
            let unset = reference.is_none();
            let spec = pv.spec.get_or_insert_with(Default::default);
            spec.claim_ref = Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                namespace: claim.metadata.namespace.clone(),
                name: claim.metadata.name.clone(),
                uid: claim.metadata.uid.clone(),
                resource_version: claim.metadata.resource_version.clone(),
                ..ObjectReference::default()
            });
            if unset {
                annotations(&mut pv.metadata)
                    .insert(super::matching::BOUND_BY_CONTROLLER.into(), YES.into());
            }
            pv = volumes.replace(&pv_name, &params, &pv).await?;
        }
        if matching::volume_phase(&pv) != "Bound" {
            let status = pv.status.get_or_insert_with(Default::default);
            status.phase = Some("Bound".into());
            status.message = None;
            pv = volumes.replace_status(&pv_name, &params, &pv).await?;
        }

        let mut claim = claim.as_ref().clone();
        let named = claim_volume(&claim) == pv_name;
        let marked = annotation(&claim.metadata, BIND_COMPLETED).is_some();
        if !named || !marked {
            let spec = claim.spec.get_or_insert_with(Default::default);
            let by_us = spec.volume_name.as_deref().is_none_or(str::is_empty);
            spec.volume_name = Some(pv_name.clone());
            let notes = annotations(&mut claim.metadata);
            notes.insert(BIND_COMPLETED.into(), YES.into());
            if by_us {
                notes.insert(super::matching::BOUND_BY_CONTROLLER.into(), YES.into());
            }
            claim = api.replace(&claim_name, &params, &claim).await?;
        }
        let pv_spec = pv.spec.clone().unwrap_or_default();
        let status = claim.status.clone().unwrap_or_default();
        let wanted = PersistentVolumeClaimStatus {
            phase: Some("Bound".into()),
            access_modes: pv_spec.access_modes.clone(),
            capacity: pv_spec.capacity.clone(),
            ..status.clone()
        };
        if status != wanted {
            claim.status = Some(wanted);
            api.replace_status(&claim_name, &params, &claim).await?;
            let namespace = claim.metadata.namespace.as_deref().unwrap_or("");
            tracing::info!(claim = %format!("{namespace}/{claim_name}"), volume = %pv_name, "bound");
        }
        Ok(Action::Done)
    }

    /// Sets the claim's phase, when it differs.
    async fn set_phase(
        &self,
        api: &Api<PersistentVolumeClaim>,
        claim: &PersistentVolumeClaim,
        phase: &str,
    ) -> Result<Action, ControlError> {
        if claim_phase(claim) == phase {
            return Ok(Action::Done);
        }
        let patch = json!({"status": {"phase": phase}});
        let name = claim.metadata.name.clone().unwrap_or_default();
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        Ok(Action::Done)
    }
}

/// The object's annotations, created empty when absent.
pub(super) fn annotations(
    meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> &mut BTreeMap<String, String> {
    meta.annotations.get_or_insert_with(BTreeMap::new)
}
