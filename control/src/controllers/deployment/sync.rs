//! The steps every sync path of a Deployment shares (the reference's `sync.go`): finding or
//! creating the new ReplicaSet and keeping the revision annotations in step, scaling one
//! ReplicaSet (with its `ScalingReplicaSet` event), proportional scaling while a rollout is in
//! flight, deleting ReplicaSets beyond `revisionHistoryLimit`, the paused/resumed condition,
//! and writing the status.
//!
//! A [`Sync`] holds a working copy of the Deployment and of its ReplicaSets and keeps both
//! current with what its own writes return, so later steps of one sync never act on a version
//! it has already replaced. Every write carries the resourceVersion it was computed from: if
//! someone else wrote first the API server answers 409 and the key is retried.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::annotations::{self, REVISION};
use super::fenceposts::{is_recreate, max_surge, replicas};
use super::hash::{self, POD_TEMPLATE_HASH};
use super::progress::{
    self, FAILED_RS_CREATE, FOUND_NEW_RS, NEW_RS_CREATED, PAUSED, PROGRESSING, RESUMED, TIMED_OUT,
};
use super::replicasets::{self, spec_replicas};
use crate::controllers::replicaset::error_message;
use crate::controllers::util::owner::{controller_of, controller_reference};
use crate::controllers::ControllerOptions;
use crate::machinery::{Action, Context, ControlError, EventType};

/// The reason of the events for every scale of a ReplicaSet.
const SCALING_REPLICA_SET: &str = "ScalingReplicaSet";

/// Now, to the second: what a condition's times can hold once stored, so a status computed
/// from a stored one compares equal to it when nothing changed.
pub fn now() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// One sync of one Deployment: the working copies and the clients that write them.
pub struct Sync<'a> {
    ctx: &'a Context<ControllerOptions>,
    /// The Deployment as last read or written.
    pub d: Deployment,
    /// The ReplicaSets the Deployment controls, as last read or written.
    rs_list: Vec<ReplicaSet>,
    deployments: Api<Deployment>,
    replica_sets: Api<ReplicaSet>,
    /// The revision annotation the stored Deployment carries.
    stored_revision: Option<String>,
}

impl<'a> Sync<'a> {
    pub fn new(
        ctx: &'a Context<ControllerOptions>,
        d: Deployment,
        rs_list: Vec<ReplicaSet>,
    ) -> Sync<'a> {
        let namespace = d.namespace().unwrap_or_default();
        let stored_revision = d.annotations().get(REVISION).cloned();
        Sync {
            deployments: Api::namespaced(ctx.client.clone(), &namespace),
            replica_sets: Api::namespaced(ctx.client.clone(), &namespace),
            ctx,
            d,
            rs_list,
            stored_revision,
        }
    }

    /// Replaces the working copy of `rs` (or adds it, when it was just created).
    fn remember(&mut self, rs: &ReplicaSet) {
        match self.rs_list.iter_mut().find(|known| known.metadata.uid == rs.metadata.uid) {
            Some(known) => *known = rs.clone(),
            None => self.rs_list.push(rs.clone()),
        }
    }

    /// The new ReplicaSet (if there is one) and all the others, from the working copies.
    pub fn split(&self) -> (Option<ReplicaSet>, Vec<ReplicaSet>) {
        let new_rs = replicasets::find_new(&self.d, &self.rs_list).cloned();
        let new_uid = new_rs.as_ref().and_then(|rs| rs.metadata.uid.clone());
        let old = self
            .rs_list
            .iter()
            .filter(|rs| new_uid.is_none() || rs.metadata.uid != new_uid)
            .cloned()
            .collect();
        (new_rs, old)
    }

    /// The reference's `getAllReplicaSetsAndSyncRevision`: the new ReplicaSet (created when
    /// `create` and missing) with its revision raised above every old one, and the old ones.
    pub async fn new_and_old(
        &mut self,
        create: bool,
    ) -> Result<(Option<ReplicaSet>, Vec<ReplicaSet>), ControlError> {
        let (existing, old) = self.split();
        let new_revision = annotations::max_revision(old.iter()) + 1;
        if let Some(existing) = existing {
            self.sync_existing_new(existing, new_revision).await?;
        } else if create {
            self.create_new(&old, new_revision).await?;
        }
        Ok(self.split())
    }

    /// Brings an existing new ReplicaSet's annotations and minReadySeconds up to date, then
    /// the Deployment's revision and (the first time) its Progressing condition.
    async fn sync_existing_new(
        &mut self,
        existing: ReplicaSet,
        new_revision: i64,
    ) -> Result<(), ControlError> {
        let mut copy = existing.clone();
        let changed = annotations::set_new_replica_set_annotations(
            &self.d,
            &mut copy,
            new_revision,
            true,
            0,
            0,
        );
        let min_ready = self.d.spec.as_ref().and_then(|s| s.min_ready_seconds);
        let spec = copy.spec.get_or_insert_with(Default::default);
        if changed || spec.min_ready_seconds.unwrap_or(0) != min_ready.unwrap_or(0) {
            spec.min_ready_seconds = min_ready;
            let updated =
                self.replica_sets.replace(&copy.name_any(), &PostParams::default(), &copy).await?;
            // As the reference: the Deployment's revision follows on the next sync.
            self.remember(&updated);
            return Ok(());
        }
        let revision = copy.annotations().get(REVISION).cloned().unwrap_or_default();
        let mut needs_update = self.set_deployment_revision(&revision);
        let has_deadline = progress::has_progress_deadline(&self.d);
        let status = self.d.status.get_or_insert_with(Default::default);
        if has_deadline && progress::get(status, PROGRESSING).is_none() {
            let message = format!("Found new replica set {:?}", copy.name_any());
            progress::set(
                status,
                progress::condition(PROGRESSING, "True", FOUND_NEW_RS, message, now()),
            );
            needs_update = true;
        }
        if needs_update {
            self.write_status().await?;
        }
        Ok(())
    }

    /// Creates the new ReplicaSet `<deployment>-<hash>`, resolving a hash collision by
    /// bumping `status.collisionCount` (the next sync then tries another name).
    async fn create_new(
        &mut self,
        old: &[ReplicaSet],
        new_revision: i64,
    ) -> Result<(), ControlError> {
        let collision_count = self.d.status.as_ref().and_then(|s| s.collision_count);
        let mut new_rs = new_replica_set(&self.d, collision_count);
        let name = new_rs.name_any();
        let mut all = old.to_vec();
        all.push(new_rs.clone());
        let count = replicasets::new_rs_new_replicas(&self.d, &all, &new_rs);
        new_rs.spec.get_or_insert_with(Default::default).replicas = Some(count);
        let desired = replicas(&self.d);
        let max = desired + max_surge(&self.d);
        annotations::set_new_replica_set_annotations(
            &self.d,
            &mut new_rs,
            new_revision,
            false,
            desired,
            max,
        );
        let mut already_exists = false;
        let created = match self.replica_sets.create(&PostParams::default(), &new_rs).await {
            Ok(created) => created,
            Err(kube::Error::Api(status)) if status.reason == "AlreadyExists" => {
                // A slow cache, or a collision: read what is there now.
                let found = self.replica_sets.get(&name).await?;
                let ours = controller_of(&found.metadata)
                    .is_some_and(|r| Some(&r.uid) == self.d.metadata.uid.as_ref());
                let template = found.spec.as_ref().and_then(|s| s.template.as_ref());
                if !(ours
                    && replicasets::equal_ignore_hash(
                        template,
                        self.d.spec.as_ref().map(|s| &s.template),
                    ))
                {
                    let d_status = self.d.status.get_or_insert_with(Default::default);
                    d_status.collision_count =
                        Some(d_status.collision_count.unwrap_or(0).saturating_add(1));
                    self.write_status().await?;
                    tracing::info!(deployment = %self.d.name_any(), replicaset = %name, "hash collision; bumped collisionCount");
                    return Err(ControlError::Api(kube::Error::Api(status)));
                }
                already_exists = true;
                found
            }
            Err(error) => {
                let error = ControlError::from(error);
                let message =
                    format!("Failed to create new replica set {name:?}: {}", error_message(&error));
                if progress::has_progress_deadline(&self.d) {
                    let status = self.d.status.get_or_insert_with(Default::default);
                    let cond = progress::condition(
                        PROGRESSING,
                        "False",
                        FAILED_RS_CREATE,
                        message.clone(),
                        now(),
                    );
                    progress::set(status, cond);
                    // The creation error is the one to report.
                    let _ = self.write_status().await;
                }
                self.ctx
                    .events
                    .record(&self.d, EventType::Warning, FAILED_RS_CREATE, &message)
                    .await;
                return Err(error);
            }
        };
        self.remember(&created);
        if !already_exists && count > 0 {
            let message = format!("Scaled up replica set {name} from 0 to {count}");
            self.ctx.events.record(&self.d, EventType::Normal, SCALING_REPLICA_SET, &message).await;
        }
        let mut needs_update = self.set_deployment_revision(&new_revision.to_string());
        if !already_exists && progress::has_progress_deadline(&self.d) {
            let status = self.d.status.get_or_insert_with(Default::default);
            let message = format!("Created new replica set {name:?}");
            progress::set(
                status,
                progress::condition(PROGRESSING, "True", NEW_RS_CREATED, message, now()),
            );
            needs_update = true;
        }
        if needs_update {
            self.write_status().await?;
        }
        Ok(())
    }

    /// Sets the Deployment's revision annotation; true if it changed.
    fn set_deployment_revision(&mut self, revision: &str) -> bool {
        let annotations = self.d.metadata.annotations.get_or_insert_with(BTreeMap::new);
        if annotations.get(REVISION).map(String::as_str) == Some(revision) {
            return false;
        }
        annotations.insert(REVISION.to_string(), revision.to_string());
        true
    }

    /// Writes the working copy's revision annotation (if it moved) and status. The reference
    /// writes both through `/status`; here `/status` keeps metadata, so the annotation goes
    /// first as a metadata patch (which leaves `generation` alone).
    pub async fn write_status(&mut self) -> Result<(), ControlError> {
        let name = self.d.name_any();
        let revision = self.d.annotations().get(REVISION).cloned();
        if revision.is_some() && revision != self.stored_revision {
            let patch = json!({"metadata": {
                "annotations": {REVISION: revision},
                "resourceVersion": self.d.metadata.resource_version,
            }});
            let patched = self
                .deployments
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            self.stored_revision = revision;
            self.d.metadata = patched.metadata;
        }
        let written =
            self.deployments.replace_status(&name, &PostParams::default(), &self.d).await?;
        self.d.metadata = written.metadata;
        self.d.status = written.status;
        Ok(())
    }

    /// Writes `status` unless the Deployment already carries it.
    pub async fn write_status_if_changed(
        &mut self,
        status: DeploymentStatus,
    ) -> Result<(), ControlError> {
        if self.d.status.as_ref() == Some(&status) {
            return Ok(());
        }
        self.d.status = Some(status);
        self.write_status().await
    }

    /// Scales `rs` to `size` (and refreshes its replica annotations), recording a
    /// `ScalingReplicaSet` event when the size changes. Returns whether it did and the
    /// ReplicaSet as written.
    pub async fn scale(
        &mut self,
        rs: &ReplicaSet,
        size: i32,
    ) -> Result<(bool, ReplicaSet), ControlError> {
        let current = spec_replicas(rs);
        let desired = replicas(&self.d);
        let mut copy = rs.clone();
        let annotations_changed =
            annotations::set_replicas_annotations(&mut copy, desired, desired + max_surge(&self.d));
        if current == size && !annotations_changed {
            return Ok((false, rs.clone()));
        }
        copy.spec.get_or_insert_with(Default::default).replicas = Some(size);
        let name = copy.name_any();
        let updated = self.replica_sets.replace(&name, &PostParams::default(), &copy).await?;
        self.remember(&updated);
        if current == size {
            return Ok((false, updated));
        }
        let direction = if current < size { "up" } else { "down" };
        let message = format!("Scaled {direction} replica set {name} from {current} to {size}");
        self.ctx.events.record(&self.d, EventType::Normal, SCALING_REPLICA_SET, &message).await;
        Ok((true, updated))
    }

    /// The reference's `isScalingEvent`: an active ReplicaSet was sized for another
    /// `spec.replicas` than the Deployment has now.
    pub async fn is_scaling_event(&mut self) -> Result<bool, ControlError> {
        let (new_rs, old) = self.new_and_old(false).await?;
        let all: Vec<ReplicaSet> = old.into_iter().chain(new_rs).collect();
        let desired = replicas(&self.d);
        Ok(replicasets::active(&all)
            .iter()
            .filter_map(|rs| annotations::int_annotation(rs, annotations::DESIRED_REPLICAS))
            .any(|wanted| wanted != desired))
    }

    /// The reference's `scale`: the only active ReplicaSet takes every replica; a saturated
    /// new one leaves the old ones none; otherwise a rolling Deployment spreads the change
    /// over its active ReplicaSets in proportion to their sizes.
    async fn scale_all(&mut self) -> Result<(), ControlError> {
        let (new_rs, old) = self.split();
        let desired = replicas(&self.d);
        if let Some(target) = replicasets::find_active_or_latest(new_rs.as_ref(), &old) {
            if spec_replicas(&target) != desired {
                self.scale(&target, desired).await?;
            }
            return Ok(());
        }
        if replicasets::is_saturated(&self.d, new_rs.as_ref()) {
            for rs in replicasets::active(&old) {
                self.scale(&rs, 0).await?;
            }
            return Ok(());
        }
        if is_recreate(&self.d) {
            return Ok(());
        }
        let all: Vec<ReplicaSet> = old.into_iter().chain(new_rs).collect();
        for (rs, size) in replicasets::proportional_sizes(&self.d, &replicasets::active(&all)) {
            self.scale(&rs, size).await?;
        }
        Ok(())
    }

    /// The reference's `sync`, for a paused Deployment or a scaling event: scale, clean up
    /// old ReplicaSets while paused, and write the status (no rollout, no progress estimate).
    pub async fn sync_scaling(&mut self) -> Result<Action, ControlError> {
        self.new_and_old(false).await?;
        self.scale_all().await?;
        let paused = self.d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
        if paused {
            let (_, old) = self.split();
            self.cleanup(&old).await?;
        }
        self.sync_status().await?;
        Ok(Action::Done)
    }

    /// The reference's `syncStatusOnly` (a Deployment being deleted).
    pub async fn sync_status_only(&mut self) -> Result<Action, ControlError> {
        self.new_and_old(false).await?;
        self.sync_status().await?;
        Ok(Action::Done)
    }

    /// The reference's `syncDeploymentStatus`: counts and Available, conditions otherwise kept.
    async fn sync_status(&mut self) -> Result<(), ControlError> {
        let (new_rs, old) = self.split();
        let all: Vec<ReplicaSet> = old.into_iter().chain(new_rs.clone()).collect();
        let status = progress::calculate(&self.d, &all, new_rs.as_ref(), now());
        self.write_status_if_changed(status).await
    }

    /// The reference's `syncRolloutStatus`: counts, Available, Progressing (complete,
    /// progressing or timed out) and ReplicaFailure; then, while the rollout runs, a look
    /// again when its progress deadline would pass.
    pub async fn sync_rollout_status(&mut self) -> Result<Action, ControlError> {
        let (new_rs, old) = self.split();
        let all: Vec<ReplicaSet> = old.into_iter().chain(new_rs.clone()).collect();
        let now = now();
        let status = progress::rollout_status(&self.d, &all, new_rs.as_ref(), now);
        let action = requeue_stuck(&self.d, &status, now);
        self.write_status_if_changed(status).await?;
        Ok(action)
    }

    /// The reference's `checkPausedConditions`: Progressing Unknown with DeploymentPaused
    /// or DeploymentResumed when `spec.paused` flips.
    pub async fn check_paused_conditions(&mut self) -> Result<(), ControlError> {
        let Some(cond) = paused_condition(&self.d, now()) else { return Ok(()) };
        progress::set(self.d.status.get_or_insert_with(Default::default), cond);
        self.write_status().await
    }

    /// The reference's `cleanupDeployment`: deletes the oldest revisions of `old` beyond
    /// `revisionHistoryLimit` that run nothing.
    pub async fn cleanup(&mut self, old: &[ReplicaSet]) -> Result<(), ControlError> {
        for rs in cleanup_candidates(&self.d, old) {
            let name = rs.name_any();
            tracing::debug!(deployment = %self.d.name_any(), replicaset = %name, "deleting old replica set");
            match self.replica_sets.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }
}

/// The ReplicaSet the Deployment's current template runs in, before its size is known:
/// named `<deployment>-<hash>`, the hash label on its labels, template and selector,
/// controlled by the Deployment.
pub fn new_replica_set(d: &Deployment, collision_count: Option<i32>) -> ReplicaSet {
    let spec = d.spec.clone().unwrap_or_default();
    let hash = hash::compute(&spec.template, collision_count);
    let mut template: PodTemplateSpec = spec.template;
    let meta = template.metadata.get_or_insert_with(Default::default);
    meta.labels.get_or_insert_with(BTreeMap::new).insert(POD_TEMPLATE_HASH.into(), hash.clone());
    let labels = meta.labels.clone();
    let mut selector: LabelSelector = spec.selector;
    selector
        .match_labels
        .get_or_insert_with(BTreeMap::new)
        .insert(POD_TEMPLATE_HASH.into(), hash.clone());
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{}-{hash}", d.name_any())),
            namespace: d.namespace(),
            owner_references: Some(vec![controller_reference(d)]),
            labels,
            ..ObjectMeta::default()
        },
        spec: Some(k8s_openapi::api::apps::v1::ReplicaSetSpec {
            replicas: Some(0),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    }
}

/// The Progressing condition a pause or resume calls for, if any (none without a progress
/// deadline, and a timed-out rollout keeps saying so).
pub fn paused_condition(d: &Deployment, now: Timestamp) -> Option<DeploymentCondition> {
    if !progress::has_progress_deadline(d) {
        return None;
    }
    let current = d.status.as_ref().and_then(|s| progress::get(s, PROGRESSING));
    let reason = current.and_then(|c| c.reason.as_deref());
    if reason == Some(TIMED_OUT) {
        return None;
    }
    let paused = d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
    let paused_shown = reason == Some(PAUSED);
    match (paused, paused_shown) {
        (true, false) => Some(progress::condition(
            PROGRESSING,
            "Unknown",
            PAUSED,
            "Deployment is paused".into(),
            now,
        )),
        (false, true) => Some(progress::condition(
            PROGRESSING,
            "Unknown",
            RESUMED,
            "Deployment is resumed".into(),
            now,
        )),
        _ => None,
    }
}

/// The old ReplicaSets to delete: the lowest revisions beyond `revisionHistoryLimit` among
/// those not being deleted, skipping any that still has or wants pods or whose status is
/// behind its spec.
pub fn cleanup_candidates(d: &Deployment, old: &[ReplicaSet]) -> Vec<ReplicaSet> {
    let Some(limit) = d.spec.as_ref().and_then(|s| s.revision_history_limit) else {
        return Vec::new();
    };
    let mut alive: Vec<&ReplicaSet> =
        old.iter().filter(|rs| rs.metadata.deletion_timestamp.is_none()).collect();
    let excess = usize::try_from(i64::try_from(alive.len()).unwrap_or(i64::MAX) - i64::from(limit))
        .unwrap_or(0);
    alive.sort_by(|a, b| replicasets::by_revision(a, b));
    alive
        .into_iter()
        .take(excess)
        .filter(|rs| {
            let observed = rs.status.as_ref().and_then(|s| s.observed_generation).unwrap_or(0);
            replicasets::status_replicas(rs).0 == 0
                && spec_replicas(rs) == 0
                && rs.metadata.generation.unwrap_or(0) <= observed
        })
        .cloned()
        .collect()
}

/// The reference's `requeueStuckDeployment`: when a rollout is under way, look again just
/// after its progress deadline would pass (the clock alone can time it out).
pub fn requeue_stuck(d: &Deployment, next: &DeploymentStatus, now: Timestamp) -> Action {
    let Some(status) = d.status.as_ref() else { return Action::Done };
    if progress::complete(d, next) {
        return Action::Done;
    }
    match progress::until_deadline(d, status, now) {
        None => Action::Done,
        Some(left) if left.as_secs() < 1 => Action::RequeueAfter(std::time::Duration::from_secs(1)),
        Some(left) => {
            Action::RequeueAfter(std::time::Duration::from_secs(left.as_secs().unsigned_abs() + 1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::SignedDuration;

    fn deployment(extra: serde_json::Value) -> Deployment {
        let mut value = json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "d-uid", "generation": 1},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                     "progressDeadlineSeconds": 600, "revisionHistoryLimit": 1,
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}}
        });
        json_patch_merge(&mut value, extra);
        serde_json::from_value(value).unwrap()
    }

    fn json_patch_merge(target: &mut serde_json::Value, patch: serde_json::Value) {
        match (target, patch) {
            (serde_json::Value::Object(t), serde_json::Value::Object(p)) => {
                for (k, v) in p {
                    json_patch_merge(t.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (t, p) => *t = p,
        }
    }

    #[test]
    fn the_new_replica_set_is_named_and_labelled_by_the_template_hash() {
        let d = deployment(json!({}));
        let rs = new_replica_set(&d, None);
        let hash = hash::compute(&d.spec.as_ref().unwrap().template, None);
        assert_eq!(rs.metadata.name.as_deref(), Some(format!("web-{hash}").as_str()));
        let spec = rs.spec.as_ref().unwrap();
        assert_eq!(spec.selector.match_labels.as_ref().unwrap()[POD_TEMPLATE_HASH], hash);
        assert_eq!(spec.selector.match_labels.as_ref().unwrap()["app"], "web");
        let template_labels =
            spec.template.as_ref().unwrap().metadata.as_ref().unwrap().labels.as_ref().unwrap();
        assert_eq!(template_labels[POD_TEMPLATE_HASH], hash);
        assert_eq!(rs.metadata.labels.as_ref().unwrap()[POD_TEMPLATE_HASH], hash);
        let owner = &rs.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("Deployment", "d-uid", Some(true))
        );
        // Still the Deployment's template, hash aside: it is found as the new one.
        assert!(replicasets::find_new(&d, std::slice::from_ref(&rs)).is_some());
        // A collision moves the name.
        assert_ne!(new_replica_set(&d, Some(1)).metadata.name, rs.metadata.name);
    }

    #[test]
    fn pausing_and_resuming_set_progressing_unknown() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let paused = deployment(json!({"spec": {"paused": true}}));
        let cond = paused_condition(&paused, now).unwrap();
        assert_eq!((cond.status.as_str(), cond.reason.as_deref()), ("Unknown", Some(PAUSED)));
        let mut shown = paused.clone();
        shown.status =
            Some(DeploymentStatus { conditions: Some(vec![cond]), ..Default::default() });
        assert!(paused_condition(&shown, now).is_none(), "already shown");
        shown.spec.as_mut().unwrap().paused = Some(false);
        assert_eq!(paused_condition(&shown, now).unwrap().reason.as_deref(), Some(RESUMED));
        let mut timed_out = paused.clone();
        timed_out.status = Some(DeploymentStatus {
            conditions: Some(vec![progress::condition(
                PROGRESSING,
                "False",
                TIMED_OUT,
                "x".into(),
                now,
            )]),
            ..Default::default()
        });
        assert!(paused_condition(&timed_out, now).is_none(), "a timeout is not overwritten");
    }

    fn old_rs(name: &str, revision: i64, spec: i32, status: i32) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": name, "generation": 2, "annotations": {REVISION: revision.to_string()}},
            "spec": {"replicas": spec, "selector": {}},
            "status": {"replicas": status, "observedGeneration": 2},
        }))
        .unwrap()
    }

    #[test]
    fn cleanup_deletes_the_lowest_idle_revisions_beyond_the_limit() {
        let d = deployment(json!({}));
        let old = [old_rs("r3", 3, 0, 0), old_rs("r1", 1, 0, 0), old_rs("r2", 2, 0, 1)];
        // Limit 1 of 3: two to go, lowest first; r2 still has a pod, so only r1 goes.
        let names: Vec<String> =
            cleanup_candidates(&d, &old).into_iter().map(|rs| rs.name_any()).collect();
        assert_eq!(names, ["r1"]);
        let unlimited = deployment(json!({"spec": {"revisionHistoryLimit": null}}));
        assert!(cleanup_candidates(&unlimited, &old).is_empty());
    }

    #[test]
    fn a_running_rollout_is_looked_at_again_after_its_deadline() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let since = now.checked_sub(SignedDuration::from_secs(100)).unwrap();
        let mut d = deployment(json!({}));
        d.status = Some(DeploymentStatus {
            conditions: Some(vec![progress::condition(
                PROGRESSING,
                "True",
                progress::RS_UPDATED,
                "x".into(),
                since,
            )]),
            ..Default::default()
        });
        let running =
            DeploymentStatus { replicas: Some(3), updated_replicas: Some(1), ..Default::default() };
        assert_eq!(
            requeue_stuck(&d, &running, now),
            Action::RequeueAfter(std::time::Duration::from_secs(501))
        );
        let done = DeploymentStatus {
            replicas: Some(3),
            updated_replicas: Some(3),
            available_replicas: Some(3),
            observed_generation: Some(1),
            ..Default::default()
        };
        assert_eq!(requeue_stuck(&d, &done, now), Action::Done);
    }
}
