//! The garbage collector: deletes objects whose owners are gone, and carries out the
//! Foreground and Orphan propagation policies. It watches every served resource that can be
//! listed, watched and deleted (built-ins and custom resources, found by discovery and
//! re-discovered as CRDs come and go) through dynamic watches of its own ([`monitors`]), keeps
//! an ownerReference graph ([`graph`]), and reconciles one object uid at a time
//! ([`attempt`], deciding with the pure [`decide`]):
//!
//! - a dependent all of whose owners are gone (by uid) is deleted (Background, or the policy
//!   its own finalizers ask for); references to a missing owner are checked with a live GET,
//!   so an owner the watches have not seen yet is never taken for dead;
//! - an owner deleted with `propagationPolicy=Foreground` (the API server adds the
//!   `foregroundDeletion` finalizer) has its dependents deleted, and loses the finalizer once
//!   no dependent with `blockOwnerDeletion` remains;
//! - an owner deleted with `Orphan` (the `orphan` finalizer) has its reference removed from
//!   every dependent, then loses the finalizer.
//!
//! Events are ignored, as in the reference (`DefaultIgnoredResources`).

mod attempt;
mod decide;
mod graph;
mod monitors;

use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use kube::Client;

use super::util::discovery::ServedResource;
use super::ControllerOptions;
use crate::machinery::{run_workers, Context, WorkQueue};
use graph::{Graph, Node};

/// The name `--disable-controllers` takes.
pub const NAME: &str = "garbagecollector";
/// The component in its Events.
pub const COMPONENT: &str = "garbage-collector-controller";

/// The collector's shared state: the graph, the queue of uids, and what discovery found.
pub(crate) struct Collector {
    client: Client,
    queue: WorkQueue<String>,
    graph: Mutex<Graph>,
    /// Every served resource (for resolving an owner's apiVersion/kind).
    resources: RwLock<Arc<Vec<Arc<ServedResource>>>>,
    monitors: Mutex<monitors::Monitors>,
}

impl Collector {
    fn graph(&self) -> MutexGuard<'_, Graph> {
        // The graph stays consistent across a panic elsewhere: every mutation is one call.
        self.graph.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records an object seen by a watch and queues what its change may affect.
    fn observe(&self, node: Node) {
        let mut keys = Vec::new();
        {
            let mut graph = self.graph();
            let deletion_changed = |old: &Node| {
                old.is_deleting_dependents() != node.is_deleting_dependents()
                    || old.is_orphaning() != node.is_orphaning()
            };
            let previous = graph.upsert(node.clone());
            if !node.owners.is_empty() || node.is_deleting_dependents() || node.is_orphaning() {
                keys.push(node.uid.clone());
            }
            // An owner waiting for its dependents looks again when one of them changes.
            let owners = node.owners.iter().chain(previous.iter().flat_map(|p| p.owners.iter()));
            for owner in owners {
                if graph.get(&owner.uid).is_some_and(Node::is_deleting_dependents) {
                    keys.push(owner.uid.clone());
                }
            }
            // A new object may be the owner dependents were waiting to see; a change of
            // deletion mode concerns every dependent.
            if previous.as_ref().is_none_or(deletion_changed) {
                keys.extend(graph.dependents(&node.uid).into_iter().map(|d| d.uid.clone()));
            }
        }
        keys.into_iter().for_each(|k| self.queue.add(k));
    }

    /// Forgets a deleted object and queues its dependents (their owner is gone) and its
    /// owners (one may be waiting for it).
    fn forget(&self, uid: &str) {
        let mut keys = Vec::new();
        {
            let mut graph = self.graph();
            if let Some(node) = graph.remove(uid) {
                keys.extend(node.owners.iter().map(|o| o.uid.clone()));
            }
            keys.extend(graph.dependents(uid).into_iter().map(|d| d.uid.clone()));
        }
        keys.into_iter().for_each(|k| self.queue.add(k));
    }

    /// The served resource of `api_version`/`kind` (another version of the same group if
    /// that one is not served).
    fn resolve(&self, api_version: &str, kind: &str) -> Option<Arc<ServedResource>> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let resources = self.resources.read().unwrap_or_else(|p| p.into_inner()).clone();
        let same_group =
            |r: &&Arc<ServedResource>| r.resource.group == group && r.resource.kind == kind;
        resources
            .iter()
            .filter(same_group)
            .find(|r| r.resource.version == version)
            .or_else(|| resources.iter().find(same_group))
            .cloned()
    }
}

/// Starts the monitors and the workers.
pub fn start(ctx: Context<ControllerOptions>) {
    let collector = Arc::new(Collector {
        client: ctx.client.clone(),
        queue: WorkQueue::new(),
        graph: Mutex::default(),
        resources: RwLock::default(),
        monitors: Mutex::default(),
    });
    monitors::spawn(collector.clone(), &ctx.informers);
    let queue = collector.queue.clone();
    run_workers(NAME, queue, ctx.options.workers, move |uid: String| {
        let collector = collector.clone();
        async move { attempt::reconcile(&collector, &uid).await }
    });
}
