//! The worker loop: take a key, reconcile it, and requeue it per the outcome.

use std::fmt::{Debug, Display};
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use super::queue::WorkQueue;

/// What a reconcile asks for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing until the next change.
    Done,
    /// Look again after a while (e.g. a deadline or a backoff that is part of the spec).
    RequeueAfter(Duration),
}

/// Why a reconcile failed; the key is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error("{0}")]
    Other(String),
}

impl ControlError {
    /// The HTTP status of an API error, if that is what this is.
    pub fn status(&self) -> Option<u16> {
        match self {
            ControlError::Api(kube::Error::Api(status)) => Some(status.code),
            _ => None,
        }
    }

    /// A 404 from the API server.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// A 409 from the API server (already exists, or a stale resourceVersion).
    pub fn is_conflict(&self) -> bool {
        self.status() == Some(409)
    }
}

/// `namespace/name` of an object (namespace empty for cluster-scoped kinds).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> ObjectKey {
        ObjectKey { namespace: namespace.into(), name: name.into() }
    }

    /// The key of a cluster-scoped object.
    pub fn cluster(name: impl Into<String>) -> ObjectKey {
        ObjectKey { namespace: String::new(), name: name.into() }
    }

    /// The key of any object with metadata.
    pub fn of<K: kube::Resource>(object: &K) -> ObjectKey {
        let meta = object.meta();
        ObjectKey {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
        }
    }

    /// The namespace, or `None` for a cluster-scoped object.
    pub fn namespace(&self) -> Option<&str> {
        (!self.namespace.is_empty()).then_some(self.namespace.as_str())
    }
}

impl Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// Runs `workers` tasks that reconcile keys from `queue` until it is shut down. A failed key is
/// retried with the queue's per-key backoff; a key is never reconciled by two workers at once.
pub fn run_workers<T, F, Fut>(name: &'static str, queue: WorkQueue<T>, workers: usize, reconcile: F)
where
    T: Clone + Eq + Hash + Send + Sync + Debug + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Action, ControlError>> + Send + 'static,
{
    let reconcile = Arc::new(reconcile);
    for _ in 0..workers.max(1) {
        let queue = queue.clone();
        let reconcile = reconcile.clone();
        tokio::spawn(async move {
            while let Some(key) = queue.next().await {
                // A panicking reconcile must not take the worker (or the server) down.
                let outcome = tokio::spawn(reconcile(key.clone())).await;
                match outcome {
                    Ok(Ok(Action::Done)) => queue.forget(&key),
                    Ok(Ok(Action::RequeueAfter(delay))) => {
                        queue.forget(&key);
                        queue.add_after(key.clone(), delay);
                    }
                    Ok(Err(error)) => {
                        // Conflicts are routine (someone else wrote first): retry quietly.
                        if error.is_conflict() {
                            tracing::debug!(controller = name, ?key, %error, "conflict; retrying");
                        } else {
                            tracing::warn!(controller = name, ?key, %error, "reconcile failed");
                        }
                        queue.add_rate_limited(key.clone());
                    }
                    Err(panic) => {
                        tracing::error!(controller = name, ?key, %panic, "reconcile panicked");
                        queue.add_rate_limited(key.clone());
                    }
                }
                queue.done(&key);
            }
        });
    }
}
