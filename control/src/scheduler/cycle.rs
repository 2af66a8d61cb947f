//! The scheduling cycle of one pod: read it from the informer (level-triggered: the queue key
//! is only a name), make the decision over a cache snapshot, assume the pod onto the chosen
//! node and bind it through `pods/{name}/binding` in the background, so the next pod is
//! decided while this one is written. A failed binding undoes the assumption and retries the
//! pod after its backoff. A pod that fits nowhere goes to [`super::failure`].
//!
//! A pod placed with an unbound `WaitForFirstConsumer` claim counts on a volume on its node
//! that the binder only binds once the pod is bound. Until then that volume is promised to the
//! claim, so the next pod's claim does not count on it too (the reference's assumed bindings).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    Binding, Namespace, Node, ObjectReference, PersistentVolume, PersistentVolumeClaim, Pod,
};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::Api;

use super::algorithm::{self, Rotation};
use super::cache::{is_terminal_phase, Cache};
use super::filters::volume_binding::{self, claim_names};
use super::framework::ClusterObjects;
use super::node_info::{NodeInfo, PodInfo};
use super::queue::{Moves, SchedulingQueue};
use super::SchedulerOptions;
use crate::machinery::{Action, Context, ControlError, EventType, Informer, ObjectKey};

/// The `schedulerName`s this scheduler serves (absent means the default).
const SCHEDULER_NAMES: &[&str] = &["", "default-scheduler", "skerry"];

/// How long a volume stays promised to a claim whose binding has not followed (a pod binding
/// that failed, a binder that chose otherwise).
const PROMISE_TTL: Duration = Duration::from_secs(60);

/// A volume counted on for a delayed claim (`(namespace, name)`) of a placed pod.
#[derive(Debug, Clone)]
struct Promise {
    claim: (String, String),
    at: Instant,
}

/// Whether `pod` is waiting for this scheduler: unassigned, ours, not leaving, not finished.
pub fn is_ours(pod: &Pod) -> bool {
    let Some(spec) = &pod.spec else { return false };
    spec.node_name.as_deref().unwrap_or("").is_empty()
        && SCHEDULER_NAMES.contains(&spec.scheduler_name.as_deref().unwrap_or(""))
        && pod.metadata.deletion_timestamp.is_none()
        && !is_terminal_phase(phase(pod))
}

/// The pod's `status.phase`.
pub fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref().and_then(|s| s.phase.as_deref())
}

/// One attempt at scheduling a pod: what it was started with.
pub struct Attempt {
    pub key: ObjectKey,
    pub pod: Arc<Pod>,
    pub info: PodInfo,
    /// The queue's wake-ups when the attempt started.
    pub seen: Moves,
}

/// The scheduler: its caches, queue and client.
pub struct Scheduler {
    pub ctx: Context<SchedulerOptions>,
    pub pods: Informer<Pod>,
    pub nodes: Informer<Node>,
    namespaces: Informer<Namespace>,
    pub claims: Informer<PersistentVolumeClaim>,
    pub volumes: Informer<PersistentVolume>,
    pub storage_classes: Informer<StorageClass>,
    priority_classes: Informer<PriorityClass>,
    cache: Mutex<Cache>,
    /// Volume name → the claim it is promised to.
    promises: Mutex<HashMap<String, Promise>>,
    pub queue: SchedulingQueue,
    rotation: Mutex<Rotation>,
}

impl Scheduler {
    pub fn new(ctx: Context<SchedulerOptions>) -> Scheduler {
        let informers = &ctx.informers;
        Scheduler {
            pods: informers.get(),
            nodes: informers.get(),
            namespaces: informers.get(),
            claims: informers.get(),
            volumes: informers.get(),
            storage_classes: informers.get(),
            priority_classes: informers.get(),
            cache: Mutex::default(),
            promises: Mutex::default(),
            queue: SchedulingQueue::default(),
            rotation: Mutex::default(),
            ctx,
        }
    }

    /// The cache (never held across an await).
    pub fn cache(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `spec.priority`, else the value of its PriorityClass, else 0.
    pub fn priority_of(&self, pod: &Pod) -> i32 {
        let spec = pod.spec.as_ref();
        if let Some(priority) = spec.and_then(|s| s.priority) {
            return priority;
        }
        spec.and_then(|s| s.priority_class_name.as_deref())
            .and_then(|name| self.priority_classes.get(None, name))
            .map_or(0, |class| class.value)
    }

    /// The pod's scheduling facts.
    pub fn pod_info(&self, pod: Arc<Pod>) -> PodInfo {
        let priority = self.priority_of(&pod);
        PodInfo::new(pod, priority)
    }

    /// Schedules the pod `key` names, if it still waits for us.
    pub async fn schedule_one(self: Arc<Self>, key: ObjectKey) -> Result<Action, ControlError> {
        let Some(pod) = self.pods.get(Some(&key.namespace), &key.name) else {
            self.queue.forget(&key);
            return Ok(Action::Done);
        };
        if !is_ours(&pod) {
            self.queue.forget(&key);
            return Ok(Action::Done);
        }
        // Before the snapshot: a wake-up after this point may concern what the snapshot missed.
        let seen = self.queue.moves();
        let info = self.pod_info(pod.clone());
        let nodes = {
            let cache = self.cache();
            if cache.is_assumed(&info.uid) {
                // Being bound already; the informer has not caught up.
                return Ok(Action::Done);
            }
            cache.snapshot_for(&info)
        };
        let objects = self.cluster_objects(&pod);
        let decision = {
            let mut rotation = self.rotation.lock().unwrap_or_else(|p| p.into_inner());
            algorithm::schedule(&info, &nodes, &objects, &mut rotation)
        };
        match decision {
            Ok(node) => {
                self.promise_volumes(&pod, &objects, &nodes, &node);
                self.cache().assume(info.clone(), &node);
                tokio::spawn(self.clone().bind(key, info, node));
                Ok(Action::Done)
            }
            Err(no_fit) => {
                let attempt = Attempt { key, pod, info, seen };
                self.unschedulable(attempt, &nodes, &objects, no_fit).await
            }
        }
    }

    /// Writes the binding; on failure undoes the assumption and retries after the backoff.
    async fn bind(self: Arc<Self>, key: ObjectKey, pod: PodInfo, node: String) {
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &key.namespace);
        let binding = Binding {
            metadata: ObjectMeta {
                name: Some(key.name.clone()),
                namespace: Some(key.namespace.clone()),
                uid: Some(pod.uid.clone()),
                ..ObjectMeta::default()
            },
            target: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(node.clone()),
                ..ObjectReference::default()
            },
        };
        let result: Result<serde_json::Value, kube::Error> =
            api.create_subresource("binding", &key.name, &PostParams::default(), &binding).await;
        match result {
            Ok(_) => {
                self.queue.forget(&key);
                let message = format!("Successfully assigned {key} to {node}");
                self.ctx
                    .events
                    .record(pod.pod.as_ref(), EventType::Normal, "Scheduled", &message)
                    .await;
            }
            Err(error) => {
                self.cache().forget(&pod.uid);
                let gone = matches!(&error, kube::Error::Api(s) if s.code == 404);
                if gone {
                    self.queue.forget(&key);
                } else {
                    // A conflict (assigned or deleted meanwhile) is settled by the next look,
                    // which reads the pod afresh from the informer.
                    tracing::warn!(pod = %key, %node, %error, "binding failed; retrying");
                    self.queue.retry(key);
                }
            }
        }
    }

    /// Namespaces, and the claims, volumes and storage classes `pod` uses.
    fn cluster_objects(&self, pod: &Pod) -> ClusterObjects {
        let mut objects = ClusterObjects {
            namespace_labels: self
                .namespaces
                .list()
                .iter()
                .map(|ns| {
                    let name = ns.metadata.name.clone().unwrap_or_default();
                    (name, ns.metadata.labels.clone().unwrap_or_default())
                })
                .collect(),
            ..ClusterObjects::default()
        };
        let claims = claim_names(pod);
        if claims.is_empty() {
            return objects;
        }
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        for name in claims {
            let Some(claim) = self.claims.get(Some(&namespace), &name) else { continue };
            let volume = claim.spec.as_ref().and_then(|s| s.volume_name.clone());
            if let Some(pv) = volume.and_then(|v| self.volumes.get(None, &v)) {
                objects.volumes.insert(pv.metadata.name.clone().unwrap_or_default(), pv);
            }
            objects.claims.insert((namespace.clone(), name), claim);
        }
        for class in self.storage_classes.list() {
            objects.classes.insert(class.metadata.name.clone().unwrap_or_default(), class);
        }
        let delayed = objects.claims.values().any(|claim| {
            let spec = claim.spec.as_ref();
            let unbound = spec.and_then(|s| s.volume_name.as_deref()).is_none_or(str::is_empty);
            let class = spec.and_then(|s| s.storage_class_name.as_deref()).unwrap_or("");
            let mode = objects.classes.get(class).and_then(|c| c.volume_binding_mode.as_deref());
            unbound && mode == Some("WaitForFirstConsumer")
        });
        if delayed {
            let own: HashSet<(String, String)> = objects.claims.keys().cloned().collect();
            objects.unbound_volumes = self.unpromised_volumes(&own);
        }
        objects
    }

    /// Every volume except those promised to claims other than `own`; forgets promises that
    /// are settled (the claim bound or gone, the volume taken or gone) or too old.
    fn unpromised_volumes(&self, own: &HashSet<(String, String)>) -> Vec<Arc<PersistentVolume>> {
        let mut promises = self.promises.lock().unwrap_or_else(|p| p.into_inner());
        promises.retain(|volume, promise| {
            let (namespace, name) = &promise.claim;
            let claim_pending = self.claims.get(Some(namespace), name).is_some_and(|c| {
                c.spec.as_ref().and_then(|s| s.volume_name.as_deref()).is_none_or(str::is_empty)
            });
            let volume_free = self
                .volumes
                .get(None, volume)
                .is_some_and(|pv| pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).is_none());
            claim_pending && volume_free && promise.at.elapsed() < PROMISE_TTL
        });
        self.volumes
            .list()
            .into_iter()
            .filter(|pv| {
                let name = pv.metadata.name.as_deref().unwrap_or("");
                promises.get(name).is_none_or(|p| own.contains(&p.claim))
            })
            .collect()
    }

    /// Promises the volumes the pod's delayed claims count on at `node` to those claims.
    fn promise_volumes(
        &self,
        pod: &Pod,
        objects: &ClusterObjects,
        nodes: &[Arc<NodeInfo>],
        node: &str,
    ) {
        let Ok(state) = volume_binding::pre_filter(pod, objects) else { return };
        if state.delayed_claims.is_empty() {
            return;
        }
        let Some(info) = nodes.iter().find(|n| n.name == node) else { return };
        let Some(plan) = volume_binding::delayed_volumes(&state, &info.node) else { return };
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let mut promises = self.promises.lock().unwrap_or_else(|p| p.into_inner());
        for (claim, volume) in plan {
            if let Some(volume) = volume {
                let promise = Promise { claim: (namespace.clone(), claim), at: Instant::now() };
                promises.insert(volume, promise);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(extra: serde_json::Value) -> Pod {
        let mut value = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}});
        crate::scheduler::node_info::testing::merge(&mut value, extra);
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn which_pods_are_ours() {
        assert!(is_ours(&pod(json!({}))));
        assert!(is_ours(&pod(json!({"spec": {"schedulerName": "default-scheduler"}}))));
        assert!(is_ours(&pod(json!({"spec": {"schedulerName": "skerry"}}))));
        assert!(!is_ours(&pod(json!({"spec": {"schedulerName": "other"}}))));
        assert!(!is_ours(&pod(json!({"spec": {"nodeName": "n1"}}))));
        assert!(!is_ours(&pod(json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"}}))));
        assert!(!is_ours(&pod(json!({"status": {"phase": "Failed"}}))));
    }
}
