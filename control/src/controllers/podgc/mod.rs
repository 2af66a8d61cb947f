//! The pod garbage collector (the reference's PodGC controller): force-deletes terminated pods
//! beyond `--terminated-pod-gc-threshold` (evicted and oldest first), pods bound to nodes that
//! no longer exist (once a node has been missing from the cache for the quarantine and a read
//! from the API server confirms it), terminating pods that were never scheduled, and
//! terminating pods on nodes tainted out-of-service. A pod that is not terminal yet is first
//! marked `Failed` (with the `DisruptionTarget` condition when its node is gone), as the
//! reference does, so that its controller sees it failed rather than silently vanished.
//!
//! One pass looks at the whole cache; passes run every 20 s (the reference's period), when a
//! pod that may need collecting changes, when a node is deleted, and when a quarantine ends.

mod select;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use self::select::Quarantine;
use crate::controllers::util::pod;
use crate::controllers::ControllerOptions;
use crate::machinery::{run_workers, Action, Change, Context, ControlError, Informer, WorkQueue};

/// The name `--disable-controllers` takes.
pub const NAME: &str = "podgc";
/// The component name in Events.
pub const COMPONENT: &str = "pod-garbage-collector";

/// The reference's `gcCheckPeriod`.
const GC_CHECK_PERIOD: Duration = Duration::from_secs(20);
/// The reference's `quarantineTime`: how long a node may be missing from the cache before its
/// pods are collected (the default of `ControllerOptions::pod_gc_quarantine`).
pub const QUARANTINE: Duration = Duration::from_secs(40);
/// The reference's default `--terminated-pod-gc-threshold`.
pub const DEFAULT_TERMINATED_POD_GC_THRESHOLD: usize = 12500;

/// The condition the reference sets on a pod it collects because its node is gone.
const DISRUPTION_TARGET: &str = "DisruptionTarget";

/// The single key of the work queue: every pass looks at everything.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Pass;

struct Collector {
    ctx: Context<ControllerOptions>,
    pods: Informer<Pod>,
    nodes: Informer<Node>,
    quarantine: Mutex<Quarantine>,
}

/// Starts the pod garbage collector.
pub fn start(ctx: Context<ControllerOptions>) {
    let collector = Arc::new(Collector {
        pods: ctx.informers.get::<Pod>(),
        nodes: ctx.informers.get::<Node>(),
        quarantine: Mutex::new(Quarantine::default()),
        ctx,
    });
    let queue = WorkQueue::new();
    let nodes = collector.nodes.clone();
    collector.pods.feed(queue.clone(), move |p: &Pod| {
        let node = p.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or("");
        let orphan = !node.is_empty() && nodes.get(None, node).is_none();
        if pod::is_terminal(p) || pod::is_terminating(p) || orphan {
            vec![Pass]
        } else {
            Vec::new()
        }
    });
    tokio::spawn(watch_node_deletions(collector.nodes.clone(), queue.clone()));
    // One worker: passes must not overlap (they would delete the same pods twice).
    run_workers(NAME, queue, 1, move |Pass| {
        let collector = collector.clone();
        async move { collector.pass().await }
    });
}

/// Queues a pass when a node is deleted (its pods enter quarantine).
async fn watch_node_deletions(nodes: Informer<Node>, queue: WorkQueue<Pass>) {
    let mut changes = nodes.subscribe();
    loop {
        match changes.recv().await {
            Ok(Change::Deleted(_)) | Ok(Change::Resynced) | Err(RecvError::Lagged(_)) => {
                queue.add(Pass)
            }
            Ok(Change::Applied(_)) => {}
            Err(RecvError::Closed) => return,
        }
    }
}

impl Collector {
    /// One garbage collection pass over the cache.
    async fn pass(self: Arc<Self>) -> Result<Action, ControlError> {
        self.pods.ready().await;
        self.nodes.ready().await;
        let pods = self.pods.list();
        let nodes = self.nodes.list();
        let options = &self.ctx.options;
        let mut errors = Vec::new();

        let terminated = select::terminated_beyond(&pods, options.terminated_pod_gc_threshold);
        if !terminated.is_empty() {
            tracing::info!(count = terminated.len(), "garbage collecting terminated pods");
        }
        errors.extend(self.collect_all(&terminated, None).await);

        let by_name: HashMap<&str, &Node> = nodes
            .iter()
            .filter_map(|n| n.metadata.name.as_deref().map(|name| (name, n.as_ref())))
            .collect();
        let out_of_service = select::terminating_out_of_service(&pods, &by_name);
        errors.extend(self.collect_all(&out_of_service, None).await);

        let existing: HashSet<&str> = by_name.keys().copied().collect();
        let (due, next_due) = {
            let mut quarantine = self.quarantine.lock().unwrap_or_else(|p| p.into_inner());
            quarantine.observe(&pods, &existing, options.pod_gc_quarantine, Instant::now())
        };
        let gone = self.confirm_gone(due).await;
        let orphans = select::orphaned(&pods, &gone);
        for orphan in &orphans {
            tracing::info!(pod = %orphan.name_any(), node = ?orphan.spec.as_ref().and_then(|s| s.node_name.as_deref()),
                "collecting a pod whose node no longer exists");
        }
        let condition = json!({
            "type": DISRUPTION_TARGET,
            "status": "True",
            "reason": "DeletionByPodGC",
            "message": "PodGC: node no longer exists",
            "lastTransitionTime": Time(Timestamp::now()),
        });
        errors.extend(self.collect_all(&orphans, Some(&condition)).await);

        let unscheduled = select::unscheduled_terminating(&pods);
        errors.extend(self.collect_all(&unscheduled, None).await);

        if let Some(error) = errors.into_iter().next() {
            return Err(error);
        }
        let wait = next_due
            .map(|at| at.saturating_duration_since(Instant::now()).max(Duration::from_millis(100)))
            .map_or(GC_CHECK_PERIOD, |d| d.min(GC_CHECK_PERIOD));
        Ok(Action::RequeueAfter(wait))
    }

    /// The nodes among `candidates` the API server confirms are gone (a fresh read, not the
    /// cache); one that exists starts its quarantine over, one that cannot be read stays.
    async fn confirm_gone(&self, candidates: Vec<String>) -> HashSet<String> {
        let api: Api<Node> = Api::all(self.ctx.client.clone());
        let mut gone = HashSet::new();
        for name in candidates {
            match api.get_opt(&name).await {
                Ok(None) => {
                    gone.insert(name);
                }
                Ok(Some(_)) => {
                    self.quarantine.lock().unwrap_or_else(|p| p.into_inner()).release(&name);
                }
                Err(error) => {
                    tracing::warn!(node = %name, %error, "checking whether a node exists")
                }
            }
        }
        gone
    }

    /// Collects every pod of `pods` in parallel; returns the errors.
    async fn collect_all(
        &self,
        pods: &[Arc<Pod>],
        condition: Option<&serde_json::Value>,
    ) -> Vec<ControlError> {
        let results = join_all(pods.iter().map(|p| self.collect(p, condition))).await;
        results.into_iter().filter_map(Result::err).collect()
    }

    /// Marks `pod` Failed (with `condition`) unless it is terminal, then deletes it at once
    /// (the reference's `markFailedAndDeletePodWithCondition`). A pod already gone is fine.
    async fn collect(
        &self,
        p: &Pod,
        condition: Option<&serde_json::Value>,
    ) -> Result<(), ControlError> {
        let namespace = p.namespace().unwrap_or_default();
        let name = p.name_any();
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &namespace);
        let gone = |e: &kube::Error| matches!(e, kube::Error::Api(s) if s.code == 404);
        if !pod::is_terminal(p) {
            let mut status = json!({"phase": "Failed"});
            if let Some(condition) = condition {
                // Conditions merge by type under a strategic merge patch.
                status["conditions"] = json!([condition]);
            }
            let patch = json!({"metadata": {"uid": p.metadata.uid}, "status": status});
            let params = PatchParams::default();
            match api.patch_status(&name, &params, &Patch::Strategic(&patch)).await {
                Ok(_) => {}
                Err(e) if gone(&e) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        // The uid precondition spares a namesake created meanwhile (a StatefulSet's pod).
        let preconditions = Preconditions { uid: p.metadata.uid.clone(), resource_version: None };
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(preconditions),
            ..DeleteParams::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => {
                tracing::info!(pod = %format!("{namespace}/{name}"), "pod garbage collected");
                Ok(())
            }
            Err(e) if gone(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
