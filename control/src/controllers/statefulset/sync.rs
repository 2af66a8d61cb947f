//! Carrying out one sync against the API server: resolving the current and update
//! ControllerRevisions (creating, renumbering and pruning them), keeping claim ownerReferences
//! in line with the retention policy, and taking the [`plan`](super::plan)'s steps in order,
//! stopping at the first failure. Events use the reference's wording
//! (`create Pod web-0 in StatefulSet web successful`).

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, PodTemplateSpec};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::claims::{is_stale, wanted_owners};
use super::history;
use super::identity::{self, claims_for, ordinal_of};
use super::plan::{Policy, Step, Which};
use super::status::Revisions;
use crate::controllers::replicaset::error_message;
use crate::controllers::ControllerOptions;
use crate::machinery::{Context, ControlError, EventType, Informer};

/// How many hash collisions a sync tolerates before giving up on naming a revision.
const MAX_COLLISIONS: i32 = 100;

/// Whether an API error is a 409 AlreadyExists (not a stale resourceVersion).
fn already_exists(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists")
}

fn not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(s) if s.code == 404)
}

/// The two revisions a sync works with, and their templates.
pub struct Resolved {
    pub names: Revisions,
    pub current_template: PodTemplateSpec,
    pub update_template: PodTemplateSpec,
}

/// One StatefulSet's sync.
pub struct Sync<'a> {
    pub ctx: &'a Context<ControllerOptions>,
    pub set: &'a StatefulSet,
    pub claims: &'a Informer<PersistentVolumeClaim>,
}

impl Sync<'_> {
    fn namespace(&self) -> String {
        self.set.namespace().unwrap_or_default()
    }

    /// Finds or creates the revision of the set's current template (the update revision) and
    /// picks the current one (`status.currentRevision`, else the update revision), as the
    /// reference's `getStatefulSetRevisions`. `revisions` are the set's own, oldest first.
    pub async fn resolve_revisions(
        &self,
        revisions: &mut Vec<ControllerRevision>,
    ) -> Result<Resolved, ControlError> {
        let api: Api<ControllerRevision> =
            Api::namespaced(self.ctx.client.clone(), &self.namespace());
        let status = self.set.status.as_ref();
        let mut collision_count = status.and_then(|s| s.collision_count).unwrap_or(0);
        let next = history::next_number(revisions);
        let wanted = history::new_revision(self.set, next, collision_count);
        let equal: Vec<usize> =
            (0..revisions.len()).filter(|i| history::equal(&revisions[*i], &wanted)).collect();
        let update = match equal.last() {
            // Already the newest: nothing to do.
            Some(&i) if i + 1 == revisions.len() => revisions[i].clone(),
            // An older template came back (a rollback): renumber it as the newest.
            Some(&i) => {
                let patch = json!({"revision": next});
                let name = revisions[i].name_any();
                let renumbered =
                    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
                revisions[i] = renumbered.clone();
                renumbered
            }
            None => {
                let created = self.create_revision(&api, next, &mut collision_count).await?;
                revisions.push(created.clone());
                created
            }
        };
        history::sort(revisions);
        let current_name = status.and_then(|s| s.current_revision.as_deref()).unwrap_or("");
        let current = revisions.iter().find(|r| r.name_any() == current_name).unwrap_or(&update);
        let own_template =
            || self.set.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
        Ok(Resolved {
            names: Revisions {
                current: current.name_any(),
                update: update.name_any(),
                collision_count,
            },
            current_template: history::template_of(current).unwrap_or_else(own_template),
            update_template: own_template(),
        })
    }

    /// Creates revision `number` of the current template; a name taken by another template
    /// bumps the collision count and tries the next name.
    async fn create_revision(
        &self,
        api: &Api<ControllerRevision>,
        number: i64,
        collision_count: &mut i32,
    ) -> Result<ControllerRevision, ControlError> {
        for _ in 0..MAX_COLLISIONS {
            let revision = history::new_revision(self.set, number, *collision_count);
            match api.create(&PostParams::default(), &revision).await {
                Ok(created) => return Ok(created),
                Err(error) if already_exists(&error) => {
                    let existing = api.get(&revision.name_any()).await?;
                    if history::equal(&existing, &revision) {
                        return Ok(existing);
                    }
                    *collision_count = collision_count.saturating_add(1);
                }
                Err(error) => return Err(error.into()),
            }
        }
        Err(ControlError::Other(format!(
            "no free ControllerRevision name for StatefulSet {} after {MAX_COLLISIONS} collisions",
            self.set.name_any()
        )))
    }

    /// Deletes the revisions beyond `revisionHistoryLimit` that no pod runs.
    pub async fn truncate_history(
        &self,
        revisions: &[ControllerRevision],
        pods: &[Arc<Pod>],
        names: &Revisions,
    ) -> Result<(), ControlError> {
        let mut live: HashSet<&str> = pods.iter().map(|p| identity::pod_revision(p)).collect();
        live.insert(&names.current);
        live.insert(&names.update);
        let limit = self.set.spec.as_ref().and_then(|s| s.revision_history_limit).unwrap_or(10);
        let api: Api<ControllerRevision> =
            Api::namespaced(self.ctx.client.clone(), &self.namespace());
        for revision in history::to_truncate(revisions, &live, limit) {
            match api.delete(&revision.name_any(), &DeleteParams::default()).await {
                Ok(_) => {}
                Err(error) if not_found(&error) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }

    /// Brings the ownerReferences of every existing pod's claims in line with the retention
    /// policy (before a scale down deletes a pod, so its claims follow it when they should).
    pub async fn fix_claim_owners(&self, pods: &[Arc<Pod>]) -> Result<(), ControlError> {
        if identity::claim_templates(self.set).is_empty() {
            return Ok(());
        }
        let policy = Policy::of(self.set);
        let range = policy.start..policy.start.saturating_add(policy.replicas);
        let namespace = self.namespace();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.ctx.client.clone(), &namespace);
        for pod in pods {
            let Some(ordinal) = ordinal_of(self.set, pod) else { continue };
            let condemned = !range.contains(&ordinal);
            for (_, wanted) in claims_for(self.set, ordinal) {
                let Some(claim) = self.claims.get(Some(&namespace), &wanted.name_any()) else {
                    continue;
                };
                let current = claim.metadata.owner_references.clone().unwrap_or_default();
                let Some(owners) = wanted_owners(&current, self.set, Some(pod), condemned) else {
                    continue;
                };
                let patch = json!({"metadata": {
                    "ownerReferences": owners,
                    "resourceVersion": claim.resource_version(),
                }});
                let params = PatchParams::default();
                match api.patch(&claim.name_any(), &params, &Patch::Merge(&patch)).await {
                    Ok(_) => {}
                    Err(error) if not_found(&error) => {}
                    Err(error) => return Err(error.into()),
                }
            }
        }
        Ok(())
    }

    /// Takes `steps` in order; stops at the first failure, or when a pod cannot be created
    /// yet (a stale claim, or the cache has not seen the pod it created last time).
    pub async fn run(&self, steps: Vec<Step>, resolved: &Resolved) -> Result<(), ControlError> {
        for step in steps {
            let proceed = match step {
                Step::Create { ordinal, revision } => {
                    let (template, name) = match revision {
                        Which::Current => (&resolved.current_template, &resolved.names.current),
                        Which::Update => (&resolved.update_template, &resolved.names.update),
                    };
                    let pod = identity::new_pod(self.set, template, ordinal, name);
                    self.create_pod(&pod, ordinal).await?
                }
                Step::DeleteFinished(pod)
                | Step::DeleteCondemned(pod)
                | Step::DeleteOutdated(pod) => {
                    self.delete_pod(&pod).await?;
                    true
                }
                Step::CreateMissingClaims(pod) => {
                    if let Some(ordinal) = ordinal_of(self.set, &pod) {
                        self.create_claims(&pod.name_any(), ordinal).await?;
                    }
                    true
                }
                Step::FixIdentity(pod, labels) => {
                    let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.namespace());
                    let patch = json!({"metadata": {"labels": labels}});
                    match api
                        .patch(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                    {
                        Ok(_) => true,
                        Err(error) if not_found(&error) => true,
                        Err(error) => return Err(error.into()),
                    }
                }
            };
            if !proceed {
                break;
            }
        }
        Ok(())
    }

    /// Creates `pod`'s claims, then `pod`. `Ok(false)`: not created and nothing else should be
    /// tried in this sync.
    async fn create_pod(&self, pod: &Pod, ordinal: i32) -> Result<bool, ControlError> {
        let name = pod.name_any();
        let namespace = self.namespace();
        let stale = claims_for(self.set, ordinal).iter().any(|(_, claim)| {
            self.claims
                .get(Some(&namespace), &claim.name_any())
                .is_some_and(|existing| is_stale(self.set, &existing, &name))
        });
        if stale {
            tracing::debug!(pod = %name, "waiting for a stale claim to be collected");
            return Ok(false);
        }
        self.create_claims(&name, ordinal).await?;
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &namespace);
        match api.create(&PostParams::default(), pod).await {
            Ok(_) => {
                self.pod_event(EventType::Normal, "SuccessfulCreate", "create", &name, None).await;
                Ok(true)
            }
            // The cache has not shown the pod created by an earlier sync yet: it will.
            Err(error) if already_exists(&error) => Ok(false),
            Err(error) => {
                let error = ControlError::from(error);
                let message = error_message(&error);
                self.pod_event(EventType::Warning, "FailedCreate", "create", &name, Some(&message))
                    .await;
                Err(error)
            }
        }
    }

    /// Deletes `pod` (this very pod: the uid is a precondition).
    async fn delete_pod(&self, pod: &Pod) -> Result<(), ControlError> {
        let name = pod.name_any();
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.namespace());
        let params = DeleteParams {
            preconditions: Some(Preconditions { uid: pod.uid(), resource_version: None }),
            ..DeleteParams::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => {
                self.pod_event(EventType::Normal, "SuccessfulDelete", "delete", &name, None).await;
                Ok(())
            }
            Err(error) if not_found(&error) => Ok(()),
            Err(error) => {
                let error = ControlError::from(error);
                let message = error_message(&error);
                self.pod_event(EventType::Warning, "FailedDelete", "delete", &name, Some(&message))
                    .await;
                Err(error)
            }
        }
    }

    /// Creates the claims of the pod `pod_name` (ordinal `ordinal`) that do not exist yet.
    async fn create_claims(&self, pod_name: &str, ordinal: i32) -> Result<(), ControlError> {
        let namespace = self.namespace();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.ctx.client.clone(), &namespace);
        let set_name = self.set.name_any();
        for (_, mut claim) in claims_for(self.set, ordinal) {
            let claim_name = claim.name_any();
            if let Some(existing) = self.claims.get(Some(&namespace), &claim_name) {
                if existing.metadata.deletion_timestamp.is_some() {
                    return Err(ControlError::Other(format!("pvc {claim_name} is being deleted")));
                }
                continue;
            }
            claim.metadata.owner_references = wanted_owners(&[], self.set, None, false);
            match api.create(&PostParams::default(), &claim).await {
                Ok(_) => {
                    let message = format!(
                        "create Claim {claim_name} Pod {pod_name} in StatefulSet {set_name} success"
                    );
                    self.ctx
                        .events
                        .record(self.set, EventType::Normal, "SuccessfulCreate", &message)
                        .await;
                }
                Err(error) if already_exists(&error) => {}
                Err(error) => {
                    let error = ControlError::from(error);
                    let message = format!(
                        "create Claim {claim_name} for Pod {pod_name} in StatefulSet {set_name} \
                         failed error: {}",
                        error_message(&error)
                    );
                    self.ctx
                        .events
                        .record(self.set, EventType::Warning, "FailedCreate", &message)
                        .await;
                    return Err(error);
                }
            }
        }
        Ok(())
    }

    /// Records the reference's pod event: `<verb> Pod <pod> in StatefulSet <set> successful`,
    /// or `… failed error: <error>`.
    async fn pod_event(
        &self,
        kind: EventType,
        reason: &str,
        verb: &str,
        pod: &str,
        error: Option<&str>,
    ) {
        let set = self.set.name_any();
        let message = match error {
            None => format!("{verb} Pod {pod} in StatefulSet {set} successful"),
            Some(error) => format!("{verb} Pod {pod} in StatefulSet {set} failed error: {error}"),
        };
        self.ctx.events.record(self.set, kind, reason, &message).await;
    }
}
