//! The StatefulSet controller: pods with stable identities (`<set>-<ordinal>`, hostname and
//! subdomain, claims `<template>-<set>-<ordinal>` made from `volumeClaimTemplates`) created
//! and deleted in ordinal order (`OrderedReady`) or all at once (`Parallel`), updated from the
//! highest ordinal down to the partition (`RollingUpdate`) or when deleted (`OnDelete`), with
//! every template kept as a ControllerRevision so `kubectl rollout history/undo` work.
//!
//! A sync is level-triggered: it reads the set, its pods, revisions and claims from the shared
//! informers, claims (adopts or releases) pods and revisions by selector, resolves the current
//! and update revisions ([`sync`]), takes the steps the [`plan`] computes for the observed pods,
//! and writes the [`status`]. Pod names are unique, so a cache that has not yet seen the last
//! creation costs an `AlreadyExists`, never a second pod; no expectations are needed.
//!
//! Wake-ups: the set changed; a pod or ControllerRevision it controls (or could adopt) changed;
//! a claim its selector picks changed (a stale claim collected lets its pod be created).

mod claims;
mod history;
mod identity;
mod plan;
mod status;
mod sync;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use self::sync::Sync;
use crate::controllers::util::{claim, owner, selector};
use crate::controllers::ControllerOptions;
use crate::machinery::{
    run_workers, Action, Context, ControlError, Informer, ObjectKey, WorkQueue,
};

/// The name `--disable-controllers` takes.
pub const NAME: &str = "statefulset";
/// The component name in Events.
pub const COMPONENT: &str = "statefulset-controller";

/// Starts the StatefulSet controller.
pub fn start(ctx: Context<ControllerOptions>) {
    let controller = Arc::new(Controller {
        sets: ctx.informers.get::<StatefulSet>(),
        pods: ctx.informers.get::<Pod>(),
        revisions: ctx.informers.get::<ControllerRevision>(),
        claims: ctx.informers.get::<PersistentVolumeClaim>(),
        ctx,
    });
    let queue = WorkQueue::new();
    controller.sets.feed(queue.clone(), |s: &StatefulSet| vec![ObjectKey::of(s)]);
    let sets = controller.sets.clone();
    controller.pods.feed(queue.clone(), move |p: &Pod| owners_of(&sets, p));
    let sets = controller.sets.clone();
    controller.revisions.feed(queue.clone(), move |r: &ControllerRevision| owners_of(&sets, r));
    // Claims carry the selector's labels; a stale one being collected unblocks its pod.
    let sets = controller.sets.clone();
    controller.claims.feed(queue.clone(), move |c: &PersistentVolumeClaim| owners_of(&sets, c));
    let workers = controller.ctx.options.workers;
    run_workers(NAME, queue, workers, move |key| {
        let controller = controller.clone();
        async move { controller.reconcile(key).await }
    });
}

/// The sets a change of a pod or revision concerns: its controller if that is a StatefulSet,
/// else (an orphan) every set in its namespace whose selector picks it.
fn owners_of<K: Resource>(sets: &Informer<StatefulSet>, object: &K) -> Vec<ObjectKey> {
    let namespace = object.meta().namespace.clone().unwrap_or_default();
    match owner::controller_of(object.meta()) {
        Some(r) if r.kind == "StatefulSet" => vec![ObjectKey::new(namespace, r.name.clone())],
        Some(_) => Vec::new(),
        None => sets
            .list_namespace(&namespace)
            .iter()
            .filter(|s| selects(s, object.meta().labels.as_ref()))
            .map(|s| ObjectKey::of(s.as_ref()))
            .collect(),
    }
}

/// Whether the set's selector picks an object with `labels` (an empty selector picks none:
/// the API server rejects one, and it would claim everything).
fn selects(set: &StatefulSet, labels: Option<&std::collections::BTreeMap<String, String>>) -> bool {
    set.spec.as_ref().is_some_and(|s| {
        let sel = &s.selector;
        let empty = sel.match_labels.as_ref().is_none_or(|l| l.is_empty())
            && sel.match_expressions.as_ref().is_none_or(|e| e.is_empty());
        !empty && selector::matches(sel, labels)
    })
}

struct Controller {
    ctx: Context<ControllerOptions>,
    sets: Informer<StatefulSet>,
    pods: Informer<Pod>,
    revisions: Informer<ControllerRevision>,
    claims: Informer<PersistentVolumeClaim>,
}

impl Controller {
    /// Syncs one set: claim pods and revisions, resolve revisions, act, report.
    async fn reconcile(self: Arc<Self>, key: ObjectKey) -> Result<Action, ControlError> {
        let Some(set) = self.sets.get(key.namespace(), &key.name) else {
            return Ok(Action::Done);
        };
        // A sync on a cache not yet listed would see no pods, revisions or claims.
        self.pods.ready().await;
        self.revisions.ready().await;
        self.claims.ready().await;
        let mut revisions: Vec<ControllerRevision> =
            self.claimed(&set, &self.revisions).await?.into_iter().map(|r| (*r).clone()).collect();
        history::sort(&mut revisions);
        let pods = self.claimed(&set, &self.pods).await?;

        let sync = Sync { ctx: &self.ctx, set: &set, claims: &self.claims };
        let resolved = sync.resolve_revisions(&mut revisions).await?;
        let mut outcome = Ok(());
        if set.meta().deletion_timestamp.is_none() {
            outcome = sync.fix_claim_owners(&pods).await;
            if outcome.is_ok() {
                let steps = plan::plan(&set, &pods, &resolved.names.update, Timestamp::now());
                outcome = sync.run(steps, &resolved).await;
            }
        }
        let next = status::calculate(&set, &pods, &resolved.names, Timestamp::now());
        if status::changed(&set, &next) {
            let api: Api<StatefulSet> = Api::namespaced(self.ctx.client.clone(), &key.namespace);
            let patch = status::patch(&next);
            api.patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        }
        outcome?;
        sync.truncate_history(&revisions, &pods, &resolved.names).await?;
        // Ready pods become available by the clock alone: look again then.
        let min_ready = plan::Policy::of(&set).min_ready_seconds;
        if min_ready > 0 && next.ready_replicas != next.available_replicas {
            let wait = u64::try_from(min_ready).unwrap_or(0);
            return Ok(Action::RequeueAfter(Duration::from_secs(wait)));
        }
        Ok(Action::Done)
    }

    /// The objects of `informer` in the set's namespace that the set controls after adopting
    /// the orphans its selector picks and releasing the ones it no longer picks.
    async fn claimed<K>(
        &self,
        set: &Arc<StatefulSet>,
        informer: &Informer<K>,
    ) -> Result<Vec<Arc<K>>, ControlError>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug
            + Send
            + std::marker::Sync
            + 'static,
    {
        let namespace = set.namespace().unwrap_or_default();
        let name = set.name_any();
        let candidates = informer.list_namespace(&namespace);
        let api: Api<K> = Api::namespaced(self.ctx.client.clone(), &namespace);
        let reference = owner::controller_reference(set.as_ref());
        let deleting = set.meta().deletion_timestamp.is_some();
        // Pods must also be named as members of the set to be adopted.
        let member = |object: &K| {
            K::kind(&()) != "Pod"
                || object
                    .meta()
                    .name
                    .as_deref()
                    .and_then(identity::parse_name)
                    .is_some_and(|(parent, _)| parent == name)
        };
        let selects = |object: &K| selects(set, object.meta().labels.as_ref()) && member(object);
        let recheck = || async {
            // Adopt only for the set that still exists: a fresh read, not the cache.
            let sets: Api<StatefulSet> = Api::namespaced(self.ctx.client.clone(), &namespace);
            let fresh = sets.get(&name).await?;
            Ok(fresh.uid() == set.uid() && fresh.meta().deletion_timestamp.is_none())
        };
        Ok(claim::claim(&api, &reference, deleting, selects, candidates, recheck).await?)
    }
}
