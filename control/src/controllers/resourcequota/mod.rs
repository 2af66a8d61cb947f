//! The resourcequota controller: keeps each ResourceQuota's `status.hard` equal to its
//! `spec.hard` and its `status.used` equal to what the namespace's objects really use, as the
//! reference's does. The admission plugin charges creates into `status.used` as they happen;
//! this loop recounts from the objects themselves:
//!
//! - when a quota's spec changes (or its status lacks a hard resource), at start, and every
//!   `--resource-quota-sync-period` (5 minutes) for every quota;
//! - when a tracked object goes away (pods, services, claims, config maps and secrets are
//!   watched; a pod that reaches Succeeded or Failed frees its compute too), which is how a
//!   delete gives quota back.
//!
//! The recount is written with the quota's resourceVersion, so a charge made by admission after
//! the quota was read makes the write conflict and the recount start over. A charge made just
//! before, for an object not stored yet, would be lost by a recount that lowers `used`; so a
//! recount that lowers `used` lists again after a short settle delay before writing.

mod count;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, ResourceQuota, Secret, Service,
};
use kube::api::{Api, PostParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;

use crate::apiserver::admission::resource_quota::usage::{self, Evaluator, ResourceList};
use crate::controllers::ControllerOptions;
use crate::machinery::{
    run_workers, Action, Change, Context, ControlError, Informer, ObjectKey, WorkQueue,
};

/// The name `--disable-controllers` takes.
pub const NAME: &str = "resourcequota";
/// The component name on Events.
pub const COMPONENT: &str = "resourcequota-controller";
/// How often every quota is recounted (the reference's `--resource-quota-sync-period`).
pub const SYNC_PERIOD: Duration = Duration::from_secs(300);
/// How long a lowering recount waits for creates already charged to be stored.
const SETTLE: Duration = Duration::from_millis(500);

/// Starts the resourcequota controller.
pub fn start(ctx: Context<ControllerOptions>) {
    let quotas = ctx.informers.get::<ResourceQuota>();
    let queue = WorkQueue::new();
    // Status-only changes are the admission plugin's charges: not a reason to recount.
    quotas.feed(queue.clone(), |quota: &ResourceQuota| {
        let value = serde_json::to_value(quota).unwrap_or_default();
        if needs_sync(&value) {
            vec![ObjectKey::of(quota)]
        } else {
            Vec::new()
        }
    });
    replenish::<Pod>(&ctx, &quotas, &queue, "pods", pod_finished);
    replenish::<Service>(&ctx, &quotas, &queue, "services", |_| false);
    replenish::<PersistentVolumeClaim>(&ctx, &quotas, &queue, "persistentvolumeclaims", |_| false);
    replenish::<ConfigMap>(&ctx, &quotas, &queue, "configmaps", |_| false);
    replenish::<Secret>(&ctx, &quotas, &queue, "secrets", |_| false);
    resync_periodically(quotas.clone(), queue.clone(), SYNC_PERIOD);
    let controller = Arc::new(Controller { counter: count::Counter::new(ctx.client.clone()), ctx });
    let workers = controller.ctx.options.workers;
    run_workers(NAME, queue, workers, move |key| {
        let controller = controller.clone();
        async move { controller.reconcile(key).await }
    });
}

fn pod_finished(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Succeeded" | "Failed"))
}

/// Queues the quotas of a namespace whose `plural` objects went away (or, per `freed`, stopped
/// using compute), and every quota after a relist.
fn replenish<K>(
    ctx: &Context<ControllerOptions>,
    quotas: &Informer<ResourceQuota>,
    queue: &WorkQueue<ObjectKey>,
    plural: &'static str,
    freed: fn(&K) -> bool,
) where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let informer = ctx.informers.get::<K>();
    let mut changes = informer.subscribe();
    let quotas = quotas.clone();
    let queue = queue.clone();
    let evaluator = Evaluator::of("", plural);
    tokio::spawn(async move {
        loop {
            let namespace = match changes.recv().await {
                Ok(Change::Deleted(object)) => object.namespace(),
                Ok(Change::Applied(object)) if freed(&object) => object.namespace(),
                Ok(Change::Applied(_)) => continue,
                Ok(Change::Resynced) | Err(RecvError::Lagged(_)) => None,
                Err(RecvError::Closed) => return,
            };
            for quota in quotas.list() {
                let in_namespace = namespace.is_none() || quota.namespace() == namespace;
                let hard = quota.spec.as_ref().and_then(|s| s.hard.as_ref());
                let tracks = hard.is_some_and(|h| h.keys().any(|name| evaluator.tracks(name)));
                if in_namespace && tracks {
                    queue.add(ObjectKey::of(quota.as_ref()));
                }
            }
        }
    });
}

/// Queues every quota once the cache is filled, then every `period`.
fn resync_periodically(
    quotas: Informer<ResourceQuota>,
    queue: WorkQueue<ObjectKey>,
    period: Duration,
) {
    tokio::spawn(async move {
        quotas.ready().await;
        loop {
            for quota in quotas.list() {
                queue.add(ObjectKey::of(quota.as_ref()));
            }
            tokio::time::sleep(period).await;
        }
    });
}

/// Whether a quota's status is not yet in line with its spec: `status.hard` differs, or a
/// hard resource has no `used` entry.
fn needs_sync(quota: &Value) -> bool {
    let spec = usage::from_json_map(quota.pointer("/spec/hard"));
    let status = usage::from_json_map(quota.pointer("/status/hard"));
    let used = quota.pointer("/status/used").and_then(Value::as_object);
    spec != status || !spec.keys().all(|name| used.is_some_and(|u| u.contains_key(name)))
}

/// The new `status.used` of `quota`: `counted` for what the evaluators measured, the previous
/// value for hard resources no evaluator knows, and nothing outside `spec.hard`.
fn new_used(quota: &Value, counted: &ResourceList) -> ResourceList {
    let hard = usage::from_json_map(quota.pointer("/spec/hard"));
    let previous = usage::from_json_map(quota.pointer("/status/used"));
    hard.keys()
        .filter_map(|name| {
            let value = counted.get(name).or_else(|| previous.get(name))?;
            Some((name.clone(), *value))
        })
        .collect()
}

/// Whether `new` lowers some amount of `old` (or drops an entry).
fn lowers(old: &ResourceList, new: &ResourceList) -> bool {
    old.iter().any(|(name, value)| new.get(name).is_none_or(|n| n < value))
}

struct Controller {
    ctx: Context<ControllerOptions>,
    counter: count::Counter,
}

impl Controller {
    async fn reconcile(self: Arc<Self>, key: ObjectKey) -> Result<Action, ControlError> {
        let api: Api<ResourceQuota> = Api::namespaced(self.ctx.client.clone(), &key.namespace);
        let Some(quota) = api.get_opt(&key.name).await? else { return Ok(Action::Done) };
        let mut value = serde_json::to_value(&quota)
            .map_err(|e| ControlError::Other(format!("encoding quota {key}: {e}")))?;
        let old_used = usage::from_json_map(value.pointer("/status/used"));
        let mut used = new_used(&value, &self.counter.count(&key.namespace, &value).await?);
        if lowers(&old_used, &used) {
            // A create charged just before the read may not be stored yet: let it land.
            tokio::time::sleep(SETTLE).await;
            used = new_used(&value, &self.counter.count(&key.namespace, &value).await?);
        }
        if !needs_sync(&value) && used == old_used {
            return Ok(Action::Done);
        }
        let hard = value.pointer("/spec/hard").cloned().unwrap_or_else(|| serde_json::json!({}));
        value["status"] = serde_json::json!({"hard": hard, "used": usage::to_json_map(&used)});
        let updated: ResourceQuota = serde_json::from_value(value)
            .map_err(|e| ControlError::Other(format!("decoding quota {key}: {e}")))?;
        // Carries the resourceVersion read above: a charge since then is a conflict (retried).
        api.replace_status(&key.name, &PostParams::default(), &updated).await?;
        tracing::debug!(quota = %key, used = %usage::pretty(&used), "quota recounted");
        Ok(Action::Done)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::apiserver::admission::resource_quota::quantity::Quantity;

    #[test]
    fn a_quota_needs_sync_until_its_status_covers_its_spec() {
        let mut quota = json!({"spec": {"hard": {"pods": "2", "cpu": "1000m"}}});
        assert!(needs_sync(&quota));
        quota["status"] = json!({"hard": {"pods": "2", "cpu": "1"}, "used": {"pods": "0"}});
        assert!(needs_sync(&quota), "cpu has no used entry");
        quota["status"]["used"]["cpu"] = json!("0");
        assert!(!needs_sync(&quota), "1000m is 1");
        quota["spec"]["hard"]["pods"] = json!("3");
        assert!(needs_sync(&quota));
    }

    #[test]
    fn used_follows_the_spec_and_keeps_unknown_resources() {
        let quota = json!({"spec": {"hard": {"pods": "2", "example.com/thing": "3"}},
            "status": {"used": {"example.com/thing": "1", "secrets": "4"}}});
        let counted = ResourceList::from([
            ("pods".to_string(), Quantity::count(1)),
            ("count/pods".to_string(), Quantity::count(1)),
        ]);
        let used = new_used(&quota, &counted);
        assert_eq!(usage::pretty(&used), "example.com/thing=1,pods=1");
        assert!(lowers(&usage::from_json_map(quota.pointer("/status/used")), &used));
        assert!(!lowers(&used, &used));
    }
}
