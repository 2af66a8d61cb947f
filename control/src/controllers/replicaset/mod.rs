//! The ReplicaSet and ReplicationController controllers (one implementation over
//! [`ReplicaKind`]): each owner claims the active pods its selector picks (adopting orphans,
//! releasing pods that no longer match), creates or deletes pods until their number is
//! `spec.replicas`, and reports what it has in its status. The sync is level-triggered: it
//! reads the owner and the pods from the shared informers, never the event that woke it;
//! [`Expectations`] keep a sync from acting again on a cache that has not yet seen the last one.

mod kind;
mod manage;
mod ranking;
mod status;

use std::collections::{HashMap, HashSet};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use tokio::sync::broadcast::error::RecvError;

pub use kind::ReplicaKind;
pub use manage::{error_message, slow_start_batch};
pub use ranking::pods_to_delete;

use crate::controllers::util::expectations::Expectations;
use crate::controllers::util::{claim, owner, pod};
use crate::controllers::ControllerOptions;
use crate::machinery::{
    run_workers, Action, Change, Context, ControlError, Informer, ObjectKey, WorkQueue,
};

/// Starts the ReplicaSet controller.
pub fn start(ctx: Context<ControllerOptions>) {
    Controller::<ReplicaSet>::start(ctx, "replicaset");
}

/// Starts the ReplicationController controller.
pub fn start_replication_controllers(ctx: Context<ControllerOptions>) {
    Controller::<ReplicationController>::start(ctx, "replicationcontroller");
}

/// One controller: its informers, queue and expectations.
struct Controller<K: ReplicaKind> {
    ctx: Context<ControllerOptions>,
    owners: Informer<K>,
    pods: Informer<Pod>,
    expectations: Expectations,
    kind: PhantomData<K>,
}

impl<K: ReplicaKind> Controller<K> {
    fn start(ctx: Context<ControllerOptions>, name: &'static str) {
        let controller = Arc::new(Controller {
            owners: ctx.informers.get::<K>(),
            pods: ctx.informers.get::<Pod>(),
            expectations: Expectations::default(),
            kind: PhantomData,
            ctx,
        });
        let queue = WorkQueue::new();
        controller.owners.feed(queue.clone(), |o: &K| vec![ObjectKey::of(o)]);
        tokio::spawn(controller.clone().track_pods(queue.clone()));
        let workers = controller.ctx.options.workers;
        run_workers(name, queue, workers, move |key| {
            let controller = controller.clone();
            async move { controller.reconcile(key).await }
        });
    }

    /// The owners a pod change concerns: its controller if that is one of ours, else (an
    /// orphan) every owner in its namespace whose selector picks it.
    fn owners_of(&self, pod: &Pod) -> Vec<ObjectKey> {
        let namespace = pod.namespace().unwrap_or_default();
        match owner::controller_of(&pod.metadata) {
            Some(r) if r.kind == K::kind(&()) => vec![ObjectKey::new(namespace, r.name.clone())],
            Some(_) => Vec::new(),
            None => self
                .owners
                .list_namespace(&namespace)
                .iter()
                .filter(|o| o.selects(pod.metadata.labels.as_ref()))
                .map(|o| ObjectKey::of(o.as_ref()))
                .collect(),
        }
    }

    fn controller_key(pod: &Pod) -> Option<ObjectKey> {
        let reference = owner::controller_of(&pod.metadata)?;
        (reference.kind == K::kind(&()))
            .then(|| ObjectKey::new(pod.namespace().unwrap_or_default(), reference.name.clone()))
    }

    /// Feeds pod changes to the queue and the expectations. The informer does not say whether
    /// a pod is new, so this remembers which pods it has seen (and their controller, so a pod
    /// taken away from an owner wakes that owner too).
    async fn track_pods(self: Arc<Self>, queue: WorkQueue<ObjectKey>) {
        let mut changes = self.pods.subscribe();
        self.pods.ready().await;
        let mut known: HashMap<String, Option<ObjectKey>> = HashMap::new();
        for p in self.pods.list() {
            known.insert(p.uid().unwrap_or_default(), Self::controller_key(&p));
        }
        loop {
            let change = changes.recv().await;
            let applied = match change {
                Ok(Change::Applied(p)) => vec![p],
                Ok(Change::Deleted(p)) => {
                    let uid = p.uid().unwrap_or_default();
                    known.remove(&uid);
                    if let Some(key) = Self::controller_key(&p) {
                        self.expectations.deletion_observed(&key, &uid);
                    }
                    self.owners_of(&p).into_iter().for_each(|k| queue.add(k));
                    continue;
                }
                Ok(Change::Resynced) | Err(RecvError::Lagged(_)) => {
                    // Pods missed while lagging: the cache is the truth now.
                    let current = self.pods.list();
                    let live: HashSet<String> =
                        current.iter().map(|p| p.uid().unwrap_or_default()).collect();
                    for (uid, key) in known.iter().filter(|(uid, _)| !live.contains(*uid)) {
                        if let Some(key) = key {
                            self.expectations.deletion_observed(key, uid);
                            queue.add(key.clone());
                        }
                    }
                    known.retain(|uid, _| live.contains(uid));
                    current
                }
                Err(RecvError::Closed) => return,
            };
            for p in applied {
                let uid = p.uid().unwrap_or_default();
                let key = Self::controller_key(&p);
                let previous = known.insert(uid.clone(), key.clone());
                if let Some(key) = &key {
                    if previous.is_none() {
                        self.expectations.creation_observed(key);
                    }
                    if pod::is_terminating(&p) {
                        self.expectations.deletion_observed(key, &uid);
                    }
                }
                if let Some(Some(old)) = previous.filter(|old| *old != key) {
                    queue.add(old);
                }
                self.owners_of(&p).into_iter().for_each(|k| queue.add(k));
            }
        }
    }

    /// Syncs one owner: claim, create/delete, status.
    async fn reconcile(self: Arc<Self>, key: ObjectKey) -> Result<Action, ControlError> {
        // Decide only on a complete pod cache: after a restart, pods not yet listed would be
        // created again.
        self.pods.ready().await;
        let namespace = key.namespace.clone();
        let Some(object) = self.owners.get(Some(&namespace), &key.name) else {
            self.expectations.forget(&key);
            return Ok(Action::Done);
        };
        // Expectations first: pods seen after this point are at least as new as the check.
        let needs_sync = self.expectations.satisfied(&key);
        let pods = self.claimed_pods(&object).await?;
        let mut manage_error = None;
        if needs_sync && object.meta().deletion_timestamp.is_none() {
            let related = self.related_pods(&object);
            let result = manage::manage_replicas(
                &self.ctx,
                &self.expectations,
                object.as_ref(),
                &pods,
                &related,
            )
            .await;
            manage_error = result.err();
        }
        let now = Timestamp::now();
        let message = manage_error.as_ref().map(manage::error_message);
        let next = status::calculate(object.as_ref(), &pods, message.as_deref(), now);
        if status::changed(&object.replica_status(), &next) {
            let api: Api<K> = Api::namespaced(self.ctx.client.clone(), &namespace);
            let patch = status::patch(&next);
            api.patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        }
        if let Some(error) = manage_error {
            return Err(error);
        }
        // Pods ready but not yet available become available by the clock alone: look again.
        let min_ready = object.min_ready_seconds();
        let ready = next.ready_replicas.unwrap_or(0);
        if min_ready > 0 && ready == next.replicas && next.available_replicas.unwrap_or(0) != ready
        {
            let wait = u64::try_from(min_ready).unwrap_or(0);
            return Ok(Action::RequeueAfter(Duration::from_secs(wait)));
        }
        Ok(Action::Done)
    }

    /// The active pods `object` controls after adopting and releasing.
    async fn claimed_pods(&self, object: &Arc<K>) -> Result<Vec<Arc<Pod>>, ControlError> {
        let namespace = object.namespace().unwrap_or_default();
        let candidates: Vec<Arc<Pod>> = self
            .pods
            .list_namespace(&namespace)
            .into_iter()
            .filter(|p| pod::is_active(p))
            .collect();
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &namespace);
        let reference = owner::controller_reference(object.as_ref());
        let deleting = object.meta().deletion_timestamp.is_some();
        let selects = |p: &Pod| object.selects(p.metadata.labels.as_ref());
        let recheck = || async {
            // Adopt only for the owner that still exists: a fresh read, not the cache.
            let owners: Api<K> = Api::namespaced(self.ctx.client.clone(), &namespace);
            let fresh = owners.get(&object.name_any()).await?;
            Ok(fresh.uid() == object.uid() && fresh.meta().deletion_timestamp.is_none())
        };
        Ok(claim::claim(&api, &reference, deleting, selects, candidates, recheck).await?)
    }

    /// The active pods of every ReplicaSet controlled by the same owner as `object` (its
    /// Deployment), or of `object` alone: a node running many of them is where a scale-down
    /// should take one away first.
    fn related_pods(&self, object: &Arc<K>) -> Vec<Arc<Pod>> {
        let namespace = object.namespace().unwrap_or_default();
        let mut owners: HashSet<String> = HashSet::from([object.uid().unwrap_or_default()]);
        if let Some(parent) = owner::controller_of(object.meta()) {
            for sibling in self.owners.list_namespace(&namespace) {
                if owner::controller_of(sibling.meta()).is_some_and(|r| r.uid == parent.uid) {
                    owners.insert(sibling.uid().unwrap_or_default());
                }
            }
        }
        self.pods
            .list_namespace(&namespace)
            .into_iter()
            .filter(|p| pod::is_active(p))
            .filter(|p| owner::controller_of(&p.metadata).is_some_and(|r| owners.contains(&r.uid)))
            .collect()
    }
}
