//! The DaemonSet controller: each DaemonSet runs one pod on every node it is eligible for
//! ([`eligibility`]), records its templates as ControllerRevisions ([`history`]) so that
//! `kubectl rollout history/undo` work, replaces pods of older revisions per its update
//! strategy ([`rolling`]; OnDelete leaves that to the user), and reports the counts `kubectl
//! rollout status` waits on ([`status`]). New pods are pinned to their node by a required node
//! affinity and bound by the scheduler, as in the reference.
//!
//! The sync is level-triggered: it reads the DaemonSet, its revisions, its pods and the nodes
//! from the shared informers. Wake-ups: the DaemonSet changed; a revision or a pod it controls
//! (or could adopt) changed; a node was added, removed, or changed in labels, taints or
//! conditions (every DaemonSet is looked at again then). Expectations keep a sync from acting
//! on a pod cache that has not yet seen its previous creations and deletions.

mod backoff;
mod eligibility;
mod history;
mod nodes;
mod rolling;
mod status;
mod sync;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use self::backoff::Backoff;
use self::eligibility::{placement, Placement};
use self::nodes::PodsByNode;
use crate::controllers::util::expectations::Expectations;
use crate::controllers::util::{claim, owner, pod, selector};
use crate::controllers::ControllerOptions;
use crate::machinery::{
    run_workers, Action, Change, Context, ControlError, EventType, Informer, ObjectKey, WorkQueue,
};

/// The name `--disable-controllers` takes.
pub const NAME: &str = "daemonset";
/// The component name in Events.
pub const COMPONENT: &str = "daemonset-controller";

/// The annotation the reference's API server keeps the template generation in.
const TEMPLATE_GENERATION_ANNOTATION: &str = "deprecated.daemonset.template.generation";

/// Starts the DaemonSet controller.
pub fn start(ctx: Context<ControllerOptions>) {
    let controller = Arc::new(Controller {
        daemon_sets: ctx.informers.get::<DaemonSet>(),
        revisions: ctx.informers.get::<ControllerRevision>(),
        pods: ctx.informers.get::<Pod>(),
        nodes: ctx.informers.get::<Node>(),
        expectations: Expectations::default(),
        backoff: Backoff::default(),
        ctx,
    });
    let queue = WorkQueue::new();
    controller.daemon_sets.feed(queue.clone(), |ds: &DaemonSet| vec![ObjectKey::of(ds)]);
    let daemon_sets = controller.daemon_sets.clone();
    controller.revisions.feed(queue.clone(), move |r: &ControllerRevision| {
        owners_of(&daemon_sets, r.namespace().as_deref(), &r.metadata)
    });
    tokio::spawn(controller.clone().track_pods(queue.clone()));
    tokio::spawn(controller.clone().track_nodes(queue.clone()));
    let workers = controller.ctx.options.workers;
    run_workers(NAME, queue, workers, move |key| {
        let controller = controller.clone();
        async move { controller.reconcile(key).await }
    });
}

/// An empty selector: the reference refuses to act on it (it would claim every pod).
fn selects_everything(ds: &DaemonSet) -> bool {
    ds.spec.as_ref().is_none_or(|s| {
        s.selector.match_labels.as_ref().is_none_or(|l| l.is_empty())
            && s.selector.match_expressions.as_ref().is_none_or(|e| e.is_empty())
    })
}

/// Whether `ds` selects an object with `labels`.
fn selects(ds: &DaemonSet, labels: Option<&BTreeMap<String, String>>) -> bool {
    !selects_everything(ds)
        && ds.spec.as_ref().is_some_and(|s| selector::matches(&s.selector, labels))
}

/// The DaemonSets a change of a pod or revision concerns: its controller if that is a
/// DaemonSet, else (an orphan) every DaemonSet in its namespace that selects it.
fn owners_of(
    daemon_sets: &Informer<DaemonSet>,
    namespace: Option<&str>,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Vec<ObjectKey> {
    let namespace = namespace.unwrap_or_default();
    match owner::controller_of(meta) {
        Some(r) if r.kind == "DaemonSet" => vec![ObjectKey::new(namespace, r.name.clone())],
        Some(_) => Vec::new(),
        None => daemon_sets
            .list_namespace(namespace)
            .iter()
            .filter(|ds| selects(ds, meta.labels.as_ref()))
            .map(|ds| ObjectKey::of(ds.as_ref()))
            .collect(),
    }
}

/// The DaemonSet controlling `pod`, if any.
fn controller_key(pod: &Pod) -> Option<ObjectKey> {
    let reference = owner::controller_of(&pod.metadata).filter(|r| r.kind == "DaemonSet")?;
    Some(ObjectKey::new(pod.namespace().unwrap_or_default(), reference.name.clone()))
}

/// What of a node decides where daemon pods go: labels, taints, cordon and the condition
/// statuses (heartbeats alone change nothing).
fn node_fingerprint(node: &Node) -> Value {
    let spec = node.spec.as_ref();
    let conditions: Vec<(&str, &str)> = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .map(|c| (c.type_.as_str(), c.status.as_str()))
        .collect();
    json!({
        "labels": node.metadata.labels,
        "taints": spec.and_then(|s| s.taints.as_ref()),
        "unschedulable": spec.and_then(|s| s.unschedulable),
        "conditions": conditions,
    })
}

/// The template generation a pod of `ds` is labelled with: the reference API server's
/// annotation, else the DaemonSet's generation.
fn template_generation(ds: &DaemonSet) -> Option<String> {
    ds.annotations()
        .get(TEMPLATE_GENERATION_ANNOTATION)
        .cloned()
        .or_else(|| ds.metadata.generation.map(|g| g.to_string()))
}

struct Controller {
    ctx: Context<ControllerOptions>,
    daemon_sets: Informer<DaemonSet>,
    revisions: Informer<ControllerRevision>,
    pods: Informer<Pod>,
    nodes: Informer<Node>,
    expectations: Expectations,
    backoff: Backoff,
}

/// The per-sync view of one DaemonSet.
struct View<'a> {
    ds: &'a DaemonSet,
    key: &'a ObjectKey,
    placed: Vec<(&'a Node, Placement)>,
    hash: String,
    generation: Option<String>,
    min_ready_seconds: i32,
    now: Timestamp,
}

impl Controller {
    /// Feeds pod changes to the queue and the expectations (remembering which pods it has seen,
    /// since the informer does not say whether a pod is new).
    async fn track_pods(self: Arc<Self>, queue: WorkQueue<ObjectKey>) {
        let mut changes = self.pods.subscribe();
        self.pods.ready().await;
        let mut known: HashMap<String, Option<ObjectKey>> = HashMap::new();
        for p in self.pods.list() {
            known.insert(p.uid().unwrap_or_default(), controller_key(&p));
        }
        loop {
            let applied = match changes.recv().await {
                Ok(Change::Applied(p)) => vec![p],
                Ok(Change::Deleted(p)) => {
                    let uid = p.uid().unwrap_or_default();
                    known.remove(&uid);
                    if let Some(key) = controller_key(&p) {
                        self.expectations.deletion_observed(&key, &uid);
                    }
                    let owners =
                        owners_of(&self.daemon_sets, p.namespace().as_deref(), &p.metadata);
                    owners.into_iter().for_each(|k| queue.add(k));
                    continue;
                }
                Ok(Change::Resynced) | Err(RecvError::Lagged(_)) => {
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
                let key = controller_key(&p);
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
                let owners = owners_of(&self.daemon_sets, p.namespace().as_deref(), &p.metadata);
                owners.into_iter().for_each(|k| queue.add(k));
            }
        }
    }

    /// Queues every DaemonSet when a node appears, goes, or changes in what placement reads.
    async fn track_nodes(self: Arc<Self>, queue: WorkQueue<ObjectKey>) {
        let mut changes = self.nodes.subscribe();
        self.nodes.ready().await;
        let mut seen: HashMap<String, Value> =
            self.nodes.list().iter().map(|n| (n.name_any(), node_fingerprint(n))).collect();
        let requeue_all = |queue: &WorkQueue<ObjectKey>| {
            for ds in self.daemon_sets.list() {
                queue.add(ObjectKey::of(ds.as_ref()));
            }
        };
        loop {
            match changes.recv().await {
                Ok(Change::Applied(n)) => {
                    let fingerprint = node_fingerprint(&n);
                    if seen.get(&n.name_any()) != Some(&fingerprint) {
                        seen.insert(n.name_any(), fingerprint);
                        requeue_all(&queue);
                    }
                }
                Ok(Change::Deleted(n)) => {
                    seen.remove(&n.name_any());
                    requeue_all(&queue);
                }
                Ok(Change::Resynced) | Err(RecvError::Lagged(_)) => {
                    seen = self
                        .nodes
                        .list()
                        .iter()
                        .map(|n| (n.name_any(), node_fingerprint(n)))
                        .collect();
                    requeue_all(&queue);
                }
                Err(RecvError::Closed) => return,
            }
        }
    }

    /// Syncs one DaemonSet: history, pods per node, rolling update, status.
    async fn reconcile(self: Arc<Self>, key: ObjectKey) -> Result<Action, ControlError> {
        // A cache still filling would show no pods (and create duplicates) or no nodes.
        self.pods.ready().await;
        self.nodes.ready().await;
        self.revisions.ready().await;
        let Some(ds) = self.daemon_sets.get(key.namespace(), &key.name) else {
            self.expectations.forget(&key);
            return Ok(Action::Done);
        };
        if selects_everything(&ds) {
            let message =
                "This daemon set is selecting all pods. A non-empty selector is required.";
            self.ctx.events.record(ds.as_ref(), EventType::Warning, "SelectingAll", message).await;
            return Ok(Action::Done);
        }
        if ds.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        // Expectations first: pods seen after this point are at least as new as the check.
        let satisfied = self.expectations.satisfied(&key);
        let pods = self.claimed_pods(&ds).await?;
        let history = history::construct(&self.ctx, &self.revisions, &ds, &pods).await?;
        let nodes = self.nodes.list();
        let view = View {
            ds: &ds,
            key: &key,
            placed: nodes.iter().map(|n| (n.as_ref(), placement(&ds, n))).collect(),
            hash: history::hash_of(&history.current),
            generation: template_generation(&ds),
            min_ready_seconds: ds.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0),
            now: Timestamp::now(),
        };
        let by_node = nodes::by_node(&pods, false);
        if !satisfied {
            // The pod events still to come wake this DaemonSet again.
            self.write_status(&view, &by_node, None).await?;
            return Ok(Action::Done);
        }
        let mut requeue: Option<Duration> = None;
        let mut outcome = self.manage(&view, &by_node, &mut requeue).await;
        if outcome.is_ok() && rolling::is_rolling_update(&ds) && self.expectations.satisfied(&key) {
            outcome = self.rolling_update(&view, &by_node).await;
        }
        if outcome.is_ok() {
            outcome = history::cleanup(&self.ctx, &ds, &history.old, &pods).await;
        }
        let written = self.write_status(&view, &by_node, ds.metadata.generation).await;
        outcome?;
        let next = written?;
        // Ready pods become available by the clock alone: look again then.
        if view.min_ready_seconds > 0 && next.number_ready != next.number_available.unwrap_or(0) {
            let wait = Duration::from_secs(u64::try_from(view.min_ready_seconds).unwrap_or(0));
            requeue = Some(requeue.map_or(wait, |r| r.min(wait)));
        }
        Ok(requeue.map_or(Action::Done, Action::RequeueAfter))
    }

    /// The pods `ds` controls after adopting and releasing (terminal ones included: failed
    /// pods must be seen to be replaced).
    async fn claimed_pods(&self, ds: &Arc<DaemonSet>) -> Result<Vec<Arc<Pod>>, ControlError> {
        let namespace = ds.namespace().unwrap_or_default();
        let candidates = self.pods.list_namespace(&namespace);
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &namespace);
        let reference = owner::controller_reference(ds.as_ref());
        let deleting = ds.metadata.deletion_timestamp.is_some();
        let selects = |p: &Pod| selects(ds, p.metadata.labels.as_ref());
        let recheck = || async {
            // Adopt only for the DaemonSet that still exists: a fresh read, not the cache.
            let daemon_sets: Api<DaemonSet> = Api::namespaced(self.ctx.client.clone(), &namespace);
            let fresh = daemon_sets.get(&ds.name_any()).await?;
            Ok(fresh.uid() == ds.uid() && fresh.metadata.deletion_timestamp.is_none())
        };
        Ok(claim::claim(&api, &reference, deleting, selects, candidates, recheck).await?)
    }

    /// Creates the missing pods and deletes the ones that must go, node by node.
    async fn manage(
        &self,
        view: &View<'_>,
        by_node: &PodsByNode,
        requeue: &mut Option<Duration>,
    ) -> Result<(), ControlError> {
        let ds = view.ds;
        let surge = rolling::allows_surge(ds);
        let observed = ds.status.as_ref().and_then(|s| s.observed_generation).unwrap_or(0);
        let (mut create_on, mut delete) = (Vec::new(), Vec::new());
        for (node, placement) in &view.placed {
            let name = node.metadata.name.as_deref().unwrap_or("");
            let decision = nodes::decide(
                *placement,
                by_node.get(name).map(Vec::as_slice),
                &view.hash,
                view.generation.as_deref(),
                surge,
                view.min_ready_seconds,
                view.now,
            );
            if decision.needs_pod {
                create_on.push(name.to_string());
            }
            delete.extend(decision.delete);
            for failed in decision.failed {
                let backoff_key = format!("{}/{observed}/{name}", ds.uid().unwrap_or_default());
                let now = Instant::now();
                if let Some(wait) = self.backoff.remaining(&backoff_key, now) {
                    *requeue = Some(requeue.map_or(wait, |r| r.min(wait)));
                    continue;
                }
                self.backoff.next(&backoff_key, now);
                let message = format!(
                    "Found failed daemon pod {}/{} on node {name}, will try to kill it",
                    failed.namespace().unwrap_or_default(),
                    failed.name_any()
                );
                self.ctx.events.record(ds, EventType::Warning, "FailedDaemonPod", &message).await;
                delete.push(failed);
            }
        }
        let known: HashSet<&str> =
            view.placed.iter().filter_map(|(n, _)| n.metadata.name.as_deref()).collect();
        delete.extend(nodes::unscheduled_without_node(by_node, |n| known.contains(n)).cloned());
        if create_on.is_empty() && delete.is_empty() {
            return Ok(());
        }
        let generation = view.generation.as_deref();
        sync::sync_nodes(
            &self.ctx,
            &self.expectations,
            ds,
            &delete,
            &create_on,
            &view.hash,
            generation,
        )
        .await
    }

    /// One step of a RollingUpdate.
    async fn rolling_update(
        &self,
        view: &View<'_>,
        by_node: &PodsByNode,
    ) -> Result<(), ControlError> {
        let mut by_node = by_node.clone();
        let should_run: HashMap<&str, bool> = view
            .placed
            .iter()
            .map(|(n, p)| (n.metadata.name.as_deref().unwrap_or(""), p.should_run))
            .collect();
        let mut desired = 0;
        for (name, run) in &should_run {
            if *run {
                desired += 1;
                by_node.entry(name.to_string()).or_default();
            }
        }
        let (max_surge, max_unavailable) = rolling::bounds(view.ds, desired)
            .map_err(|e| ControlError::Other(format!("invalid rolling update strategy: {e}")))?;
        let is_updated = |p: &Pod| nodes::is_updated(p, &view.hash, view.generation.as_deref());
        let runs = |n: &str| should_run.get(n).copied().unwrap_or(false);
        let plan = rolling::plan(
            &by_node,
            &rolling::Rollout {
                max_surge,
                max_unavailable,
                desired,
                min_ready_seconds: view.min_ready_seconds,
                now: view.now,
                is_updated: &is_updated,
                should_run: &runs,
            },
        );
        if plan.delete.is_empty() && plan.create_on.is_empty() {
            return Ok(());
        }
        let generation = view.generation.as_deref();
        sync::sync_nodes(
            &self.ctx,
            &self.expectations,
            view.ds,
            &plan.delete,
            &plan.create_on,
            &view.hash,
            generation,
        )
        .await
    }

    /// Writes the status if it changed; returns it.
    async fn write_status(
        &self,
        view: &View<'_>,
        by_node: &PodsByNode,
        observed_generation: Option<i64>,
    ) -> Result<k8s_openapi::api::apps::v1::DaemonSetStatus, ControlError> {
        let current = view.ds.status.clone().unwrap_or_default();
        let observed = status::Observed {
            nodes: &view.placed,
            by_node,
            hash: &view.hash,
            generation: view.generation.as_deref(),
            min_ready_seconds: view.min_ready_seconds,
            now: view.now,
        };
        let next = status::calculate(&current, &observed, observed_generation);
        if status::changed(&current, &next) {
            let api: Api<DaemonSet> = Api::namespaced(self.ctx.client.clone(), &view.key.namespace);
            let patch = status::patch(&next);
            api.patch_status(&view.key.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        Ok(next)
    }
}
