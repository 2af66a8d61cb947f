//! Writes pod statuses to `pods/status` as merge patches, coalesced per pod: a worker hands in
//! its latest status and goes on; the writer sends only the newest one per pod, retries while
//! the server is away (the newest status replaces an unsent older one) and drops statuses of
//! pods the server no longer has.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kube::api::{Api, Patch, PatchParams};
use tokio::sync::mpsc;

/// Pause after a failed round before trying again.
const RETRY: Duration = Duration::from_secs(1);

/// One status to write.
#[derive(Debug)]
struct Pending {
    namespace: String,
    name: String,
    uid: String,
    status: PodStatus,
}

/// The writer's handle (cheap to clone).
#[derive(Clone, Debug)]
pub struct StatusWriter {
    tx: mpsc::UnboundedSender<Pending>,
}

impl StatusWriter {
    /// Starts the writing task.
    pub fn start(client: kube::Client) -> StatusWriter {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(client, rx));
        StatusWriter { tx }
    }

    /// Queues `status` for `pod` (replacing any unsent status of the same pod).
    pub fn send(&self, pod: &Pod, status: PodStatus) {
        let m = &pod.metadata;
        let _ = self.tx.send(Pending {
            namespace: m.namespace.clone().unwrap_or_else(|| "default".into()),
            name: m.name.clone().unwrap_or_default(),
            uid: m.uid.clone().unwrap_or_default(),
            status,
        });
    }
}

async fn write_loop(client: kube::Client, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let mut pending: HashMap<(String, String), Pending> = HashMap::new();
    loop {
        if pending.is_empty() {
            match rx.recv().await {
                Some(p) => {
                    pending.insert((p.namespace.clone(), p.name.clone()), p);
                }
                None => return,
            }
        }
        // Coalesce whatever else is queued.
        while let Ok(p) = rx.try_recv() {
            pending.insert((p.namespace.clone(), p.name.clone()), p);
        }
        let mut failed = false;
        for key in pending.keys().cloned().collect::<Vec<_>>() {
            let Some(p) = pending.remove(&key) else { continue };
            let api: Api<Pod> = Api::namespaced(client.clone(), &p.namespace);
            // The UID makes the patch fail (rather than touch a new pod of the same name).
            let body = serde_json::json!({"metadata": {"uid": p.uid}, "status": p.status});
            match api.patch_status(&p.name, &PatchParams::default(), &Patch::Merge(&body)).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if matches!(e.code, 404 | 409 | 422) => {
                    tracing::debug!(pod = %p.name, code = e.code, "status not written: {}", e.message);
                }
                Err(err) => {
                    tracing::debug!(pod = %p.name, %err, "status write failed; will retry");
                    // Keep it unless a newer one has arrived meanwhile.
                    pending.entry(key).or_insert(p);
                    failed = true;
                }
            }
        }
        if failed {
            tokio::time::sleep(RETRY).await;
        }
    }
}
