//! Writes pod statuses to `pods/status` as merge patches, coalesced per pod: a worker hands in
//! its latest status and goes on; the writer sends only the newest one per pod, retries while
//! the server is away (the newest status replaces an unsent older one) and drops statuses of
//! pods the server no longer has.
//!
//! A static pod's status goes to its mirror pod: the one of the same name whose
//! `kubernetes.io/config.mirror` names the static pod's hash (its UID is the patch's
//! precondition). Until that mirror pod exists the status waits; the writer keeps the latest
//! status of every static pod so that a mirror pod (re)created later gets it ([`StatusWriter::resend`]).

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kube::api::{Api, Patch, PatchParams};
use tokio::sync::mpsc;

/// Pause after a failed round before trying again.
const RETRY: Duration = Duration::from_secs(1);

/// One status to write.
#[derive(Debug, Clone)]
struct Pending {
    namespace: String,
    name: String,
    uid: String,
    status: PodStatus,
    /// For a static pod: its hash, which its mirror pod must name.
    mirror_of: Option<String>,
}

/// What the writer is asked to do.
#[derive(Debug)]
enum Msg {
    /// Write this status.
    Status(Box<Pending>),
    /// Write the latest status of static pod `(namespace, name)` again (its mirror pod is new).
    Resend(Key),
}

type Key = (String, String);

/// The writer's handle (cheap to clone).
#[derive(Clone, Debug)]
pub struct StatusWriter {
    tx: mpsc::UnboundedSender<Msg>,
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
        let _ = self.tx.send(Msg::Status(Box::new(Pending {
            namespace: m.namespace.clone().unwrap_or_else(|| "default".into()),
            name: m.name.clone().unwrap_or_default(),
            uid: m.uid.clone().unwrap_or_default(),
            status,
            mirror_of: super::static_pods::static_hash(pod).map(str::to_string),
        })));
    }

    /// Writes the latest status of static pod `namespace/name` again (its mirror pod was just
    /// created and has none).
    pub fn resend(&self, namespace: &str, name: &str) {
        let _ = self.tx.send(Msg::Resend((namespace.to_string(), name.to_string())));
    }
}

/// Files a message: statuses into `pending` (static pods' also into `statics`), resends from
/// `statics` back into `pending`.
fn take(msg: Msg, pending: &mut HashMap<Key, Pending>, statics: &mut HashMap<Key, Pending>) {
    match msg {
        Msg::Status(p) => {
            let key = (p.namespace.clone(), p.name.clone());
            if p.mirror_of.is_some() {
                statics.insert(key.clone(), (*p).clone());
            }
            pending.insert(key, *p);
        }
        Msg::Resend(key) => {
            if let Some(p) = statics.get(&key) {
                pending.insert(key, p.clone());
            }
        }
    }
}

/// The UID the status patch must name: the pod's own, or for a static pod its mirror pod's.
/// `Ok(None)`: there is no matching mirror pod yet (the status waits for a resend).
async fn target_uid(api: &Api<Pod>, p: &Pending) -> Result<Option<String>, kube::Error> {
    let Some(hash) = &p.mirror_of else { return Ok(Some(p.uid.clone())) };
    let mirror = api.get_opt(&p.name).await?;
    Ok(mirror
        .filter(|m| m.metadata.deletion_timestamp.is_none())
        .filter(|m| super::static_pods::mirror_hash(m) == Some(hash.as_str()))
        .and_then(|m| m.metadata.uid))
}

async fn write_loop(client: kube::Client, mut rx: mpsc::UnboundedReceiver<Msg>) {
    let mut pending: HashMap<Key, Pending> = HashMap::new();
    // The latest status of each static pod (entries of removed static pods stay: one small
    // status per manifest name ever seen).
    let mut statics: HashMap<Key, Pending> = HashMap::new();
    loop {
        if pending.is_empty() {
            match rx.recv().await {
                Some(msg) => take(msg, &mut pending, &mut statics),
                None => return,
            }
        }
        // Coalesce whatever else is queued.
        while let Ok(msg) = rx.try_recv() {
            take(msg, &mut pending, &mut statics);
        }
        let mut failed = false;
        for key in pending.keys().cloned().collect::<Vec<_>>() {
            let Some(p) = pending.remove(&key) else { continue };
            let api: Api<Pod> = Api::namespaced(client.clone(), &p.namespace);
            let uid = match target_uid(&api, &p).await {
                Ok(Some(uid)) => uid,
                Ok(None) => {
                    tracing::debug!(pod = %p.name, "no mirror pod yet: status waits");
                    continue;
                }
                Err(err) => {
                    tracing::debug!(pod = %p.name, %err, "finding the mirror pod; will retry");
                    pending.entry(key).or_insert(p);
                    failed = true;
                    continue;
                }
            };
            // The UID makes the patch fail (rather than touch a new pod of the same name).
            let body = serde_json::json!({"metadata": {"uid": uid}, "status": p.status});
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
