//! The Deployment controller: each Deployment claims the ReplicaSets its selector picks
//! (adopting orphans, releasing the ones it no longer selects), runs its current pod template
//! in the ReplicaSet `<deployment>-<pod-template-hash>`, and moves pods from the old
//! ReplicaSets to that one per its strategy ([`rolling`] or [`recreate`]), keeping the
//! revision annotations `kubectl rollout history/undo` read and the status `kubectl rollout
//! status` reads. A paused Deployment is only scaled. The sync is level-triggered: it reads the
//! Deployment, its ReplicaSets and pods from the shared informers, never the event that woke
//! it, and its writes carry the resourceVersion they were computed from.
//!
//! Wake-ups: a Deployment changed; a ReplicaSet it controls (or could adopt) changed; a pod
//! of a Recreate Deployment went away (the new pods wait for that).

mod annotations;
mod fenceposts;
pub(crate) mod hash;
mod progress;
mod recreate;
mod replicasets;
mod rolling;
mod sync;

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::PostParams;
use kube::{Api, ResourceExt};
use tokio::sync::broadcast::error::RecvError;

use self::recreate::PodMap;
use self::sync::Sync;
use crate::controllers::util::{claim, owner, selector};
use crate::controllers::ControllerOptions;
use crate::machinery::{
    run_workers, Action, Change, Context, ControlError, EventType, Informer, ObjectKey, WorkQueue,
};

/// Starts the Deployment controller.
pub fn start(ctx: Context<ControllerOptions>) {
    let controller = Arc::new(Controller {
        deployments: ctx.informers.get::<Deployment>(),
        replica_sets: ctx.informers.get::<ReplicaSet>(),
        pods: ctx.informers.get::<Pod>(),
        ctx,
    });
    let queue = WorkQueue::new();
    controller.deployments.feed(queue.clone(), |d: &Deployment| vec![ObjectKey::of(d)]);
    let deployments = controller.deployments.clone();
    controller.replica_sets.feed(queue.clone(), move |rs: &ReplicaSet| owners_of(&deployments, rs));
    tokio::spawn(controller.clone().track_pods(queue.clone()));
    let workers = controller.ctx.options.workers;
    run_workers("deployment", queue, workers, move |key| {
        let controller = controller.clone();
        async move { controller.reconcile(key).await }
    });
}

/// The Deployments a ReplicaSet change concerns: its controller if that is a Deployment, else
/// (an orphan) every Deployment in its namespace whose selector picks it.
fn owners_of(deployments: &Informer<Deployment>, rs: &ReplicaSet) -> Vec<ObjectKey> {
    let namespace = rs.namespace().unwrap_or_default();
    match owner::controller_of(&rs.metadata) {
        Some(r) if r.kind == "Deployment" => vec![ObjectKey::new(namespace, r.name.clone())],
        Some(_) => Vec::new(),
        None => deployments
            .list_namespace(&namespace)
            .iter()
            .filter(|d| selects(d, rs.metadata.labels.as_ref()))
            .map(|d| ObjectKey::of(d.as_ref()))
            .collect(),
    }
}

/// Whether the Deployment's selector picks an object with `labels` (an empty one picks none).
fn selects(d: &Deployment, labels: Option<&std::collections::BTreeMap<String, String>>) -> bool {
    d.spec
        .as_ref()
        .is_some_and(|s| !selects_everything(&s.selector) && selector::matches(&s.selector, labels))
}

/// An empty selector: the reference refuses to act on it (it would claim everything).
fn selects_everything(selector: &LabelSelector) -> bool {
    selector.match_labels.as_ref().is_none_or(|l| l.is_empty())
        && selector.match_expressions.as_ref().is_none_or(|e| e.is_empty())
}

struct Controller {
    ctx: Context<ControllerOptions>,
    deployments: Informer<Deployment>,
    replica_sets: Informer<ReplicaSet>,
    pods: Informer<Pod>,
}

impl Controller {
    /// Wakes a Recreate Deployment when one of its pods is deleted: its new ReplicaSet waits
    /// for the old pods to be gone.
    async fn track_pods(self: Arc<Self>, queue: WorkQueue<ObjectKey>) {
        let mut changes = self.pods.subscribe();
        loop {
            match changes.recv().await {
                Ok(Change::Deleted(p)) => {
                    if let Some(key) = self.recreate_owner_of(&p) {
                        queue.add(key);
                    }
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            }
        }
    }

    /// The Recreate Deployment whose ReplicaSet controls `pod`, if any.
    fn recreate_owner_of(&self, pod: &Pod) -> Option<ObjectKey> {
        let namespace = pod.namespace().unwrap_or_default();
        let rs_ref = owner::controller_of(&pod.metadata).filter(|r| r.kind == "ReplicaSet")?;
        let rs = self.replica_sets.get(Some(&namespace), &rs_ref.name)?;
        let d_ref = owner::controller_of(&rs.metadata).filter(|r| r.kind == "Deployment")?;
        let d = self.deployments.get(Some(&namespace), &d_ref.name)?;
        fenceposts::is_recreate(&d).then(|| ObjectKey::of(d.as_ref()))
    }

    /// The reference's `syncDeployment`.
    async fn reconcile(self: Arc<Self>, key: ObjectKey) -> Result<Action, ControlError> {
        // Decide only on complete caches: after a restart, a ReplicaSet not yet listed would
        // be created again.
        self.replica_sets.ready().await;
        self.pods.ready().await;
        let Some(cached) = self.deployments.get(key.namespace(), &key.name) else {
            return Ok(Action::Done);
        };
        let d = (*cached).clone();
        let Some(spec) = d.spec.as_ref() else { return Ok(Action::Done) };
        if selects_everything(&spec.selector) {
            return self.refuse_selecting_all(d).await;
        }
        let rs_list = self.claimed_replica_sets(&d).await?;
        let pods =
            if fenceposts::is_recreate(&d) { self.pod_map(&d, &rs_list) } else { PodMap::new() };
        let deleting = d.metadata.deletion_timestamp.is_some();
        let paused = spec.paused.unwrap_or(false);
        let mut sync = Sync::new(&self.ctx, d, rs_list);
        if deleting {
            return sync.sync_status_only().await;
        }
        sync.check_paused_conditions().await?;
        if paused {
            return sync.sync_scaling().await;
        }
        if sync.is_scaling_event().await? {
            return sync.sync_scaling().await;
        }
        if fenceposts::is_recreate(&sync.d) {
            recreate::rollout(&mut sync, &pods).await
        } else {
            rolling::rollout(&mut sync).await
        }
    }

    /// A Deployment selecting every pod: warn, and only acknowledge its generation.
    async fn refuse_selecting_all(&self, mut d: Deployment) -> Result<Action, ControlError> {
        let message = "This deployment is selecting all pods. A non-empty selector is required.";
        self.ctx.events.record(&d, EventType::Warning, "SelectingAll", message).await;
        let status = d.status.get_or_insert_with(Default::default);
        if status.observed_generation < d.metadata.generation {
            status.observed_generation = d.metadata.generation;
            let api: Api<Deployment> =
                Api::namespaced(self.ctx.client.clone(), &d.namespace().unwrap_or_default());
            api.replace_status(&d.name_any(), &PostParams::default(), &d).await?;
        }
        Ok(Action::Done)
    }

    /// The ReplicaSets `d` controls after adopting and releasing.
    async fn claimed_replica_sets(&self, d: &Deployment) -> Result<Vec<ReplicaSet>, ControlError> {
        let namespace = d.namespace().unwrap_or_default();
        let api: Api<ReplicaSet> = Api::namespaced(self.ctx.client.clone(), &namespace);
        let reference = owner::controller_reference(d);
        let deleting = d.metadata.deletion_timestamp.is_some();
        let candidates = self.replica_sets.list_namespace(&namespace);
        let recheck = || async {
            // Adopt only for the Deployment that still exists: a fresh read, not the cache.
            let deployments: Api<Deployment> = Api::namespaced(self.ctx.client.clone(), &namespace);
            let fresh = deployments.get(&d.name_any()).await?;
            Ok(fresh.uid() == d.uid() && fresh.metadata.deletion_timestamp.is_none())
        };
        let selects = |rs: &ReplicaSet| selects(d, rs.metadata.labels.as_ref());
        let claimed =
            claim::claim(&api, &reference, deleting, selects, candidates, recheck).await?;
        Ok(claimed.into_iter().map(Arc::unwrap_or_clone).collect())
    }

    /// The pods `d` selects, by the uid of the ReplicaSet (one of `rs_list`) controlling them;
    /// terminating and finished pods included (Recreate must see them).
    fn pod_map(&self, d: &Deployment, rs_list: &[ReplicaSet]) -> PodMap {
        let mut map: PodMap =
            rs_list.iter().map(|rs| (rs.uid().unwrap_or_default(), Vec::new())).collect();
        for p in self.pods.list_namespace(&d.namespace().unwrap_or_default()) {
            if !selects(d, p.metadata.labels.as_ref()) {
                continue;
            }
            if let Some(list) = owner::controller_of(&p.metadata).and_then(|r| map.get_mut(&r.uid))
            {
                list.push(p);
            }
        }
        map
    }
}
