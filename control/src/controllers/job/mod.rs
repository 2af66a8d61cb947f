//! The Job controller: runs pods from a Job's template until `completions` of them succeeded
//! (NonIndexed: any pods; Indexed: one per completion index), at most `parallelism` at a time,
//! replacing failed pods after an exponential backoff until `backoffLimit`, `activeDeadlineSeconds`
//! or a pod failure policy fails the Job; honours `suspend`; and reports counts, completed
//! indexes and the conditions `SuccessCriteriaMet`/`Complete` or `FailureTarget`/`Failed` in the
//! status. Indexed Jobs may also limit failures per index ([`per_index`]) and succeed early by
//! a success policy ([`success_policy`]). Finished pods are counted exactly once through the tracking finalizer
//! ([`tracking`]). Level-triggered: each sync reads the Job and its pods from the informers.

pub mod conditions;

mod backoff;
mod failure_policy;
mod indexes;
mod manage;
mod per_index;
mod pods;
mod success_policy;
mod sync;
mod tracking;

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, ResourceExt};
use tokio::sync::broadcast::error::RecvError;

use self::tracking::FinalizerExpectations;
use crate::controllers::util::expectations::Expectations;
use crate::controllers::util::{claim, owner, pod, selector};
use crate::controllers::ControllerOptions;
use crate::machinery::{
    run_workers, Action, Change, Context, ControlError, Informer, ObjectKey, WorkQueue,
};

/// The name `--disable-controllers` takes.
pub const NAME: &str = "job";
/// The component name on Events.
pub const COMPONENT: &str = "job-controller";

/// What the queue holds: a Job to sync, or a pod whose tracking finalizer may be orphaned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Job(ObjectKey),
    Orphan(ObjectKey),
}

/// Starts the Job controller.
pub fn start(ctx: Context<ControllerOptions>) {
    let controller = Arc::new(Controller {
        jobs: ctx.informers.get::<Job>(),
        pods: ctx.informers.get::<Pod>(),
        expectations: Expectations::default(),
        finalizers: FinalizerExpectations::default(),
        ctx,
    });
    let queue = WorkQueue::new();
    controller.jobs.feed(queue.clone(), |job: &Job| vec![Key::Job(ObjectKey::of(job))]);
    tokio::spawn(controller.clone().track_pods(queue.clone()));
    let workers = controller.ctx.options.workers;
    run_workers(NAME, queue, workers, move |key| {
        let controller = controller.clone();
        async move {
            match key {
                Key::Job(key) => controller.sync_job(&key).await,
                Key::Orphan(key) => controller.sync_orphan(&key).await,
            }
        }
    });
}

/// The controller's caches and bookkeeping.
pub(crate) struct Controller {
    ctx: Context<ControllerOptions>,
    jobs: Informer<Job>,
    pods: Informer<Pod>,
    /// Pod creations and deletions not yet seen in the cache.
    expectations: Expectations,
    /// Finalizer removals not yet seen in the cache.
    finalizers: FinalizerExpectations,
}

fn job_key(p: &Pod) -> Option<ObjectKey> {
    let reference = owner::controller_of(&p.metadata)?;
    (reference.kind == "Job")
        .then(|| ObjectKey::new(p.namespace().unwrap_or_default(), reference.name.clone()))
}

impl Controller {
    /// The keys a pod change concerns: its Job (or, for an orphan, every Job whose selector
    /// picks it), and the pod itself when its finalizer may have no live Job to remove it.
    fn keys_of(&self, p: &Pod) -> Vec<Key> {
        let namespace = p.namespace().unwrap_or_default();
        let mut keys = Vec::new();
        match owner::controller_of(&p.metadata) {
            Some(reference) if reference.kind == "Job" => {
                keys.push(Key::Job(ObjectKey::new(namespace.clone(), reference.name.clone())));
                let live = self
                    .jobs
                    .get(Some(&namespace), &reference.name)
                    .filter(|j| j.uid().as_deref() == Some(reference.uid.as_str()));
                if pods::has_tracking_finalizer(p)
                    && live.is_none_or(|j| conditions::is_finished(&j))
                {
                    keys.push(Key::Orphan(ObjectKey::of(p)));
                }
            }
            // Another kind of owner put the finalizer there: not ours to remove.
            Some(_) => {}
            None => {
                if pods::has_tracking_finalizer(p) {
                    keys.push(Key::Orphan(ObjectKey::of(p)));
                }
                let labels = p.metadata.labels.as_ref();
                for job in self.jobs.list_namespace(&namespace) {
                    let picks = job.spec.as_ref().and_then(|s| s.selector.as_ref());
                    if picks.is_some_and(|s| selector::matches(s, labels)) {
                        keys.push(Key::Job(ObjectKey::of(job.as_ref())));
                    }
                }
            }
        }
        keys
    }

    /// Feeds pod changes to the queue and both expectations. The informer does not say whether
    /// a pod is new, so this remembers which pods it has seen and under which Job.
    async fn track_pods(self: Arc<Self>, queue: WorkQueue<Key>) {
        let mut changes = self.pods.subscribe();
        self.pods.ready().await;
        let mut known: HashMap<String, Option<ObjectKey>> = HashMap::new();
        for p in self.pods.list() {
            known.insert(p.uid().unwrap_or_default(), job_key(&p));
        }
        loop {
            let applied = match changes.recv().await {
                Ok(Change::Applied(p)) => vec![p],
                Ok(Change::Deleted(p)) => {
                    let uid = p.uid().unwrap_or_default();
                    known.remove(&uid);
                    self.finalizers.observed(&uid);
                    if let Some(key) = job_key(&p) {
                        self.expectations.deletion_observed(&key, &uid);
                    }
                    self.keys_of(&p)
                        .into_iter()
                        .filter(|k| matches!(k, Key::Job(_)))
                        .for_each(|k| queue.add(k));
                    continue;
                }
                Ok(Change::Resynced) | Err(RecvError::Lagged(_)) => {
                    // The cache is the truth now: forget what vanished while lagging.
                    let current = self.pods.list();
                    let live: HashMap<String, &Arc<Pod>> =
                        current.iter().map(|p| (p.uid().unwrap_or_default(), p)).collect();
                    for (uid, key) in known.iter().filter(|(uid, _)| !live.contains_key(*uid)) {
                        self.finalizers.observed(uid);
                        if let Some(key) = key {
                            self.expectations.deletion_observed(key, uid);
                            queue.add(Key::Job(key.clone()));
                        }
                    }
                    for uid in self.finalizers.all() {
                        if live.get(&uid).is_none_or(|p| !pods::has_tracking_finalizer(p)) {
                            self.finalizers.observed(&uid);
                        }
                    }
                    known.retain(|uid, _| live.contains_key(uid));
                    current
                }
                Err(RecvError::Closed) => return,
            };
            for p in applied {
                let uid = p.uid().unwrap_or_default();
                let key = job_key(&p);
                let previous = known.insert(uid.clone(), key.clone());
                if !pods::has_tracking_finalizer(&p) {
                    self.finalizers.observed(&uid);
                }
                if let Some(key) = &key {
                    if previous.is_none() {
                        self.expectations.creation_observed(key);
                    }
                    if pod::is_terminating(&p) {
                        self.expectations.deletion_observed(key, &uid);
                    }
                }
                if let Some(Some(old)) = previous.filter(|old| *old != key) {
                    queue.add(Key::Job(old));
                }
                self.keys_of(&p).into_iter().for_each(|k| queue.add(k));
            }
        }
    }

    /// Every pod `job` controls after adopting and releasing, finished ones included.
    async fn claimed_pods(&self, job: &Arc<Job>) -> Result<Vec<Arc<Pod>>, ControlError> {
        let namespace = job.namespace().unwrap_or_default();
        let candidates = self.pods.list_namespace(&namespace);
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &namespace);
        let reference = owner::controller_reference(job.as_ref());
        let deleting = job.metadata.deletion_timestamp.is_some();
        let picks = job.spec.as_ref().and_then(|s| s.selector.clone());
        let selects = |p: &Pod| {
            picks.as_ref().is_some_and(|s| selector::matches(s, p.metadata.labels.as_ref()))
        };
        let recheck = || async {
            // Adopt only for the Job that still exists: a fresh read, not the cache.
            let jobs: Api<Job> = Api::namespaced(self.ctx.client.clone(), &namespace);
            let fresh = jobs.get(&job.name_any()).await?;
            Ok(fresh.uid() == job.uid() && fresh.metadata.deletion_timestamp.is_none())
        };
        Ok(claim::claim(&api, &reference, deleting, selects, candidates, recheck).await?)
    }

    /// Removes the tracking finalizer from a pod whose Job is gone or finished, or that has no
    /// controller at all.
    async fn sync_orphan(&self, key: &ObjectKey) -> Result<Action, ControlError> {
        let Some(p) = self.pods.get(key.namespace(), &key.name) else { return Ok(Action::Done) };
        if !pods::has_tracking_finalizer(&p) {
            return Ok(Action::Done);
        }
        if let Some(reference) = owner::controller_of(&p.metadata) {
            if reference.kind != "Job" {
                return Ok(Action::Done);
            }
            let job = self.jobs.get(key.namespace(), &reference.name);
            let live = job.filter(|j| j.uid().as_deref() == Some(reference.uid.as_str()));
            if live.is_some_and(|j| !conditions::is_finished(&j)) {
                // Its Job will count it.
                return Ok(Action::Done);
            }
        }
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &key.namespace);
        pods::remove_finalizer(&api, &p).await?;
        Ok(Action::Done)
    }
}
