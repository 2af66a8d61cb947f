//! The disruption controller: keeps the `status` of every PodDisruptionBudget — how many pods
//! are expected ([`scale`]), healthy and desired healthy, how many disruptions are allowed,
//! which evicted pods are still pending (`disruptedPods`), the `DisruptionAllowed` condition
//! and `observedGeneration` ([`budget`]). The API server's `pods/eviction` spends
//! `disruptionsAllowed` and this controller recomputes it from the pods. When the status
//! cannot be computed (a pod's controller is missing), no disruption is allowed and the
//! condition says why (`SyncFailed`), as in the reference. It also resets stale
//! `DisruptionTarget` pod conditions ([`stale`]).

pub(crate) mod budget;
mod scale;
mod stale;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::Resource;

use super::util::selector;
use super::ControllerOptions;
use crate::machinery::{
    run_workers, Action, Context, ControlError, EventType, Informer, ObjectKey, WorkQueue,
};

/// The name `--disable-controllers` takes.
pub const NAME: &str = "disruption";
/// The component in its Events (the reference's disruption controller records as this).
pub const COMPONENT: &str = "controllermanager";

/// Budgets a pod matched when last seen, so a pod whose labels change still updates the
/// budgets it left.
type Matched = Arc<Mutex<HashMap<ObjectKey, Vec<ObjectKey>>>>;

/// Subscribes to budgets, pods and the workload controllers, and starts the workers.
pub fn start(ctx: Context<ControllerOptions>) {
    let queue = WorkQueue::new();
    let budgets = ctx.informers.get::<PodDisruptionBudget>();
    budgets.feed(queue.clone(), |pdb: &PodDisruptionBudget| vec![ObjectKey::of(pdb)]);
    {
        let budgets = budgets.clone();
        let pods = ctx.informers.get::<Pod>();
        let matched = Matched::default();
        pods.clone().feed(queue.clone(), move |pod: &Pod| {
            let key = ObjectKey::of(pod);
            let now = matching_budgets(&budgets, pod);
            let mut matched = matched.lock().unwrap_or_else(|p| p.into_inner());
            // A deleted pod is gone from the cache by the time its change arrives.
            let present = pods.get(key.namespace(), &key.name).is_some();
            let before = if present && !now.is_empty() {
                matched.insert(key, now.clone())
            } else {
                matched.remove(&key)
            };
            let mut keys = now;
            keys.extend(before.unwrap_or_default());
            keys.sort();
            keys.dedup();
            keys
        });
    }
    // A workload's scale is part of `expectedPods`: its changes concern its namespace's budgets.
    feed_namespace::<ReplicaSet>(&ctx, &budgets, &queue);
    feed_namespace::<Deployment>(&ctx, &budgets, &queue);
    feed_namespace::<StatefulSet>(&ctx, &budgets, &queue);
    feed_namespace::<ReplicationController>(&ctx, &budgets, &queue);
    stale::start(ctx.clone());
    let workers = ctx.options.workers;
    run_workers(NAME, queue, workers, move |key: ObjectKey| {
        let ctx = ctx.clone();
        async move { reconcile(&ctx, &key).await }
    });
}

/// Queues every budget of an object's namespace when an object of kind `K` changes.
fn feed_namespace<K>(
    ctx: &Context<ControllerOptions>,
    budgets: &Informer<PodDisruptionBudget>,
    queue: &WorkQueue<ObjectKey>,
) where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let budgets = budgets.clone();
    ctx.informers.get::<K>().feed(queue.clone(), move |object: &K| {
        let ns = object.meta().namespace.as_deref().unwrap_or_default();
        budgets.list_namespace(ns).iter().map(|b| ObjectKey::of(b.as_ref())).collect()
    });
}

/// Whether the budget's selector selects the pod: a missing selector selects nothing, an
/// empty one every pod of the namespace (policy/v1).
pub(crate) fn selects(pdb: &PodDisruptionBudget, pod: &Pod) -> bool {
    if pdb.metadata.namespace != pod.metadata.namespace {
        return false;
    }
    match pdb.spec.as_ref().and_then(|s| s.selector.as_ref()) {
        Some(sel) => selector::matches(sel, pod.metadata.labels.as_ref()),
        None => false,
    }
}

fn matching_budgets(budgets: &Informer<PodDisruptionBudget>, pod: &Pod) -> Vec<ObjectKey> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    budgets
        .list_namespace(ns)
        .iter()
        .filter(|b| selects(b, pod))
        .map(|b| ObjectKey::of(b.as_ref()))
        .collect()
}

async fn reconcile(
    ctx: &Context<ControllerOptions>,
    key: &ObjectKey,
) -> Result<Action, ControlError> {
    // The finders read these caches: a budget computed from a half-filled cache would report
    // missing controllers.
    ctx.informers.get::<Pod>().ready().await;
    ctx.informers.get::<ReplicaSet>().ready().await;
    ctx.informers.get::<Deployment>().ready().await;
    ctx.informers.get::<StatefulSet>().ready().await;
    ctx.informers.get::<ReplicationController>().ready().await;
    let Some(pdb) = ctx.informers.get::<PodDisruptionBudget>().get(key.namespace(), &key.name)
    else {
        return Ok(Action::Done);
    };
    match sync(ctx, &pdb).await {
        // Someone else wrote the budget (an eviction, typically): look again.
        Err(error) if error.is_conflict() => Err(error),
        Err(error) => {
            tracing::warn!(budget = %key, %error, "failed to sync PodDisruptionBudget");
            let mut failed = (*pdb).clone();
            let status = failed.status.get_or_insert_with(Default::default);
            budget::fail_safe(status, &error.to_string(), Timestamp::now());
            write_status(ctx, &failed).await?;
            Ok(Action::Done)
        }
        ok => ok,
    }
}

/// Computes the budget's status from the cached pods and writes it if it changed.
async fn sync(
    ctx: &Context<ControllerOptions>,
    pdb: &PodDisruptionBudget,
) -> Result<Action, ControlError> {
    let namespace = pdb.metadata.namespace.clone().unwrap_or_default();
    let all = ctx.informers.get::<Pod>().list_namespace(&namespace);
    let pods: Vec<&Pod> = all.iter().map(Arc::as_ref).filter(|p| selects(pdb, p)).collect();
    if pods.is_empty() {
        ctx.events.record(pdb, EventType::Normal, "NoPods", "No matching pods found").await;
    }
    let spec = pdb.spec.as_ref();
    let (scale, unmanaged) = if budget::uses_scale(spec) {
        match scale::expected_scale(ctx, &namespace, &pods).await {
            Ok(found) => found,
            Err(error) => return Err(expected_count_failed(ctx, pdb, error).await),
        }
    } else {
        (0, Vec::new())
    };
    let count = i32::try_from(pods.len()).unwrap_or(i32::MAX);
    let (expected, desired) = match budget::expected_and_desired(spec, count, scale) {
        Ok(numbers) => numbers,
        Err(why) => return Err(expected_count_failed(ctx, pdb, ControlError::Other(why)).await),
    };
    if !unmanaged.is_empty() {
        tracing::debug!(budget = ?pdb.metadata.name, ?unmanaged, "unmanaged pods");
        let selector = spec.and_then(|s| s.selector.as_ref());
        let message = format!(
            "Pods selected by this PodDisruptionBudget (selector: {selector:?}) were found to be \
             unmanaged. As a result, the status of the PDB cannot be calculated correctly, which \
             may result in undefined behavior. To account for these pods please set \
             \".spec.minAvailable\" field of the PDB to an integer value."
        );
        ctx.events.record(pdb, EventType::Warning, "UnmanagedPods", &message).await;
    }
    let now = Timestamp::now();
    let recorded = pdb.status.as_ref().and_then(|s| s.disrupted_pods.as_ref());
    let disrupted = budget::pending_disruptions(recorded, &pods, now);
    for name in &disrupted.expired {
        let Some(pod) = pods.iter().find(|p| p.metadata.name.as_deref() == Some(name)) else {
            continue;
        };
        // The reference names the budget's namespace twice here; kept for identical Events.
        let message =
            format!("Pod was expected by PDB {namespace}/{namespace} to be deleted but it wasn't");
        ctx.events.record(*pod, EventType::Warning, "NotDeleted", &message).await;
    }
    let healthy = budget::count_healthy(&pods, &disrupted.pending, now);
    if let Some(status) =
        budget::next_status(pdb, healthy, desired, expected, disrupted.pending, now)
    {
        let mut next = pdb.clone();
        next.status = Some(status);
        write_status(ctx, &next).await?;
    }
    Ok(match disrupted.recheck {
        Some(at) => {
            let wait = std::time::Duration::try_from(at.duration_since(now)).unwrap_or_default();
            Action::RequeueAfter(wait)
        }
        None => Action::Done,
    })
}

async fn expected_count_failed(
    ctx: &Context<ControllerOptions>,
    pdb: &PodDisruptionBudget,
    error: ControlError,
) -> ControlError {
    let message = format!("Failed to calculate the number of expected pods: {error}");
    ctx.events.record(pdb, EventType::Warning, "CalculateExpectedPodCountFailed", &message).await;
    error
}

/// `PUT …/status` at the cached resourceVersion: a budget changed meanwhile (an eviction
/// spent a disruption) is a conflict, and the budget is computed again.
async fn write_status(
    ctx: &Context<ControllerOptions>,
    pdb: &PodDisruptionBudget,
) -> Result<(), ControlError> {
    let namespace = pdb.metadata.namespace.as_deref().unwrap_or_default();
    let name = pdb.metadata.name.as_deref().unwrap_or_default();
    let api: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), namespace);
    match api.replace_status(name, &PostParams::default(), pdb).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error.into()),
    }
}
