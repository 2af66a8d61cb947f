//! [`CachedPodLookup`]: the streaming API's view of this node's pods (logs, exec, attach,
//! port-forward), from the local cache (namespace/name → UID) and the runtime's own names
//! ([`naming`](super::naming)), so it answers the same after an agent restart or offline.

use std::sync::Arc;

use skerry_runtime::Runtime;

use super::naming;
use crate::cache::LocalCache;
use crate::streaming::PodLookup;

/// Pod names to runtime ids through the local cache and the runtime's state.
pub struct CachedPodLookup {
    cache: LocalCache,
    runtime: Arc<Runtime>,
}

impl CachedPodLookup {
    /// A lookup over `cache` and `runtime`.
    pub fn new(cache: LocalCache, runtime: Arc<Runtime>) -> CachedPodLookup {
        CachedPodLookup { cache, runtime }
    }

    fn uid(&self, namespace: &str, pod: &str) -> Option<String> {
        // One indexed SQLite read: short enough for the stream set-up path that calls it.
        self.cache.pod_uid(namespace, pod).ok().flatten()
    }
}

impl PodLookup for CachedPodLookup {
    fn container_id(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        previous: bool,
    ) -> Option<String> {
        let uid = self.uid(namespace, pod)?;
        let prefix = format!("{uid}_");
        let mut instances: Vec<(u32, String)> = self
            .runtime
            .list_containers_named(|n| n.starts_with(&prefix))
            .into_iter()
            .filter_map(|c| {
                let (c_uid, c_name, attempt) = naming::parse_container_name(&c.name)?;
                (c_uid == uid && c_name == container).then(|| (attempt, c.id.clone()))
            })
            .collect();
        instances.sort();
        // The newest instance is the current one; `previous` is the one before it.
        let skip = usize::from(previous);
        instances.into_iter().rev().nth(skip).map(|(_, id)| id)
    }

    fn sandbox_id(&self, namespace: &str, pod: &str) -> Option<String> {
        let uid = self.uid(namespace, pod)?;
        self.runtime.find_sandbox(&naming::sandbox_name(&uid)).ok().map(|s| s.id)
    }

    fn pod_names(&self) -> crate::stats::PodNames {
        let pods = self.cache.pods().unwrap_or_default();
        pods.into_iter()
            .filter_map(|pod| {
                let meta = pod.metadata;
                Some((meta.uid?, (meta.namespace.unwrap_or_default(), meta.name?)))
            })
            .collect()
    }
}
