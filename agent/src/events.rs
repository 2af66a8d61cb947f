//! core/v1 Events about pods (Pulling, Pulled, Created, Started, Killing, BackOff, Unhealthy,
//! Failed…), posted by a background task so a slow or absent server never holds up pod work.
//! A full queue drops events: they are informational, the pod status is the record.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::sync::mpsc;

/// How many events may wait for the server.
const QUEUE: usize = 256;

/// Records events for the node's pods (cheap to clone).
#[derive(Clone, Debug)]
pub struct EventRecorder {
    node: String,
    tx: mpsc::Sender<Event>,
}

impl EventRecorder {
    /// Starts the posting task.
    pub fn start(client: kube::Client, node: &str) -> EventRecorder {
        let (tx, mut rx) = mpsc::channel::<Event>(QUEUE);
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                let ns = event.metadata.namespace.clone().unwrap_or_else(|| "default".into());
                let api: Api<Event> = Api::namespaced(client.clone(), &ns);
                if let Err(err) = api.create(&PostParams::default(), &event).await {
                    tracing::debug!(%err, reason = ?event.reason, "posting an event");
                }
            }
        });
        EventRecorder { node: node.to_string(), tx }
    }

    /// Records a `Normal` event about `pod` (and `container`, as the kubelet's fieldPath).
    pub fn normal(&self, pod: &Pod, container: Option<&str>, reason: &str, message: String) {
        self.record(pod, container, "Normal", reason, message);
    }

    /// Records a `Warning` event.
    pub fn warning(&self, pod: &Pod, container: Option<&str>, reason: &str, message: String) {
        self.record(pod, container, "Warning", reason, message);
    }

    fn record(&self, pod: &Pod, container: Option<&str>, typ: &str, reason: &str, message: String) {
        let m = &pod.metadata;
        let name = m.name.clone().unwrap_or_default();
        let now = Timestamp::now();
        let field_path = container.map(|c| {
            let init = pod
                .spec
                .as_ref()
                .and_then(|s| s.init_containers.as_ref())
                .is_some_and(|ics| ics.iter().any(|ic| ic.name == c));
            if init {
                format!("spec.initContainers{{{c}}}")
            } else {
                format!("spec.containers{{{c}}}")
            }
        });
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{name}.{:x}", now.as_nanosecond())),
                namespace: m.namespace.clone(),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(name),
                namespace: m.namespace.clone(),
                uid: m.uid.clone(),
                resource_version: m.resource_version.clone(),
                field_path,
            },
            reason: Some(reason.into()),
            message: Some(message),
            type_: Some(typ.into()),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            source: Some(EventSource {
                component: Some("kubelet".into()),
                host: Some(self.node.clone()),
            }),
            reporting_component: Some("kubelet".into()),
            reporting_instance: Some(self.node.clone()),
            action: None,
            event_time: None,
            related: None,
            series: None,
        };
        if self.tx.try_send(event).is_err() {
            tracing::debug!(reason, "event queue full: dropping an event");
        }
    }
}
