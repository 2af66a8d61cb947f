//! Core/v1 Events for what a control loop did, as the reference components write them
//! (`kubectl describe` lists them by `involvedObject`). Repeats of the same reason and message
//! for the same object bump `count` and `lastTimestamp` instead of creating a new Event.
//! Recording never fails the caller: a lost Event is logged, not retried.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

/// Remembered (object, reason, message) triples before the oldest are forgotten.
const DEDUP_CAPACITY: usize = 4096;

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

type DedupKey = (String, String, String, String);

/// Writes Events as one component (`replicaset-controller`, `default-scheduler`, …).
/// An event already written: (namespace, name, count).
type SeenEvent = (String, String, i32);

#[derive(Clone)]
pub struct EventRecorder {
    client: Client,
    component: String,
    /// Last event name and count per (uid, type, reason, message).
    seen: Arc<Mutex<HashMap<DedupKey, SeenEvent>>>,
}

impl EventRecorder {
    pub fn new(client: Client, component: impl Into<String>) -> EventRecorder {
        EventRecorder { client, component: component.into(), seen: Arc::default() }
    }

    /// Records an Event about `object`.
    pub async fn record<K>(&self, object: &K, kind: EventType, reason: &str, message: &str)
    where
        K: Resource<DynamicType = ()>,
    {
        let reference = object_reference(object);
        self.record_for(reference, kind, reason, message).await;
    }

    /// Records an Event about the object `reference` names.
    pub async fn record_for(
        &self,
        reference: ObjectReference,
        kind: EventType,
        reason: &str,
        message: &str,
    ) {
        let namespace = reference.namespace.clone().unwrap_or_else(|| "default".to_string());
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let now = Timestamp::now();
        let key = (
            reference.uid.clone().unwrap_or_default(),
            kind.as_str().to_string(),
            reason.to_string(),
            message.to_string(),
        );
        let previous = self.seen.lock().unwrap_or_else(|p| p.into_inner()).get(&key).cloned();
        if let Some((name, ns, count)) = previous {
            let patch = json!({"count": count + 1, "lastTimestamp": Time(now)});
            let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
            if api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.is_ok() {
                self.remember(key, name, ns, count + 1);
                return;
            }
        }
        let object_name = reference.name.clone().unwrap_or_default();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{object_name}.{:x}", now.as_nanosecond())),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            involved_object: reference,
            reason: Some(reason.to_string()),
            message: Some(message.to_string()),
            type_: Some(kind.as_str().to_string()),
            source: Some(EventSource { component: Some(self.component.clone()), host: None }),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: None::<MicroTime>,
            count: Some(1),
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(self.component.clone()),
            ..Event::default()
        };
        match api.create(&PostParams::default(), &event).await {
            Ok(created) => self.remember(key, created.name_any(), namespace, 1),
            Err(error) => tracing::debug!(%error, reason, "recording an event failed"),
        }
    }

    fn remember(&self, key: DedupKey, name: String, namespace: String, count: i32) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= DEDUP_CAPACITY && !seen.contains_key(&key) {
            // Forgetting everything is cheap and only costs a fresh Event for a repeat.
            seen.clear();
        }
        seen.insert(key, (name, namespace, count));
    }
}

/// The `ObjectReference` of `object`, as `involvedObject` and `ownerReferences` carry it.
pub fn object_reference<K: Resource<DynamicType = ()>>(object: &K) -> ObjectReference {
    let meta = object.meta();
    ObjectReference {
        api_version: Some(K::api_version(&()).to_string()),
        kind: Some(K::kind(&()).to_string()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        field_path: None,
    }
}
