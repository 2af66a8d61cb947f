//! Keeps the content volumes of running pods current, as the kubelet's pod sync does:
//! configMap, secret, downwardAPI and projected volumes (service account token, CA bundle,
//! namespace) are rewritten through the atomic writer's `..data` swap when what they project
//! changes ([`VolumeManager::refresh`] compares the wanted files with the written ones and
//! swaps only differences, so every pass is level-triggered).
//!
//! Two triggers:
//! - a sweep every [`SYNC_PERIOD`] (the kubelet's `syncFrequency`) over the pods in the local
//!   cache. ConfigMap and Secret changes reach the volumes here: the kubelet too projects them
//!   only at its next sync of the pod (whatever its object cache strategy). The sweep also
//!   replaces projected tokens past 80 % of their lifetime or older than 24 h with a new
//!   TokenRequest bound to the pod.
//! - a new version of a pod whose labels or annotations changed (from the pod watch, through
//!   [`RefreshHandle::pod_changed`]): its downwardAPI files are rewritten at once, as the
//!   kubelet's pod update does.
//!
//! Offline, object reads answer from the local cache and TokenRequests fail; a volume whose
//! sources cannot be read keeps its content (never emptied). An `optional` source that is gone
//! on the server (404) projects nothing, as the kubelet's `SetUpAt` does. Only volumes a pod
//! worker already set up are touched, and pods being deleted or finished are left alone.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use tokio::sync::{mpsc, watch};

use crate::cache::LocalCache;
use crate::objects::ObjectSource;
use crate::volumes::VolumeManager;

/// The kubelet's default `syncFrequency`.
pub const SYNC_PERIOD: Duration = Duration::from_secs(60);

/// Pods refreshed at once in a sweep (an offline read can wait for a connect timeout).
const PARALLEL: usize = 4;

/// What a downwardAPI volume can project from a pod's metadata and may change while it runs.
type Metadata = (Option<BTreeMap<String, String>>, Option<BTreeMap<String, String>>);

/// Tells the running refresher about new pod versions (cheap to clone).
#[derive(Clone)]
pub struct RefreshHandle {
    tx: mpsc::UnboundedSender<Box<Pod>>,
}

impl RefreshHandle {
    /// A version of a pod from the server (or the cache); its volumes are refreshed when its
    /// labels or annotations differ from the version seen before.
    pub fn pod_changed(&self, pod: &Pod) {
        if has_content_volumes(pod) {
            // A closed channel means the agent is stopping: nothing left to refresh.
            let _ = self.tx.send(Box::new(pod.clone()));
        }
    }
}

/// The refresher task's state.
pub struct VolumeRefresher {
    cache: LocalCache,
    volumes: VolumeManager,
    objects: Arc<dyn ObjectSource>,
    period: Duration,
    /// Labels and annotations last seen, by pod uid.
    seen: HashMap<String, Metadata>,
}

impl VolumeRefresher {
    /// A refresher of the pods in `cache` whose volumes `volumes` set up.
    pub fn new(cache: LocalCache, volumes: VolumeManager, objects: Arc<dyn ObjectSource>) -> Self {
        Self { cache, volumes, objects, period: SYNC_PERIOD, seen: HashMap::new() }
    }

    /// Sweeps every `period` instead of [`SYNC_PERIOD`] (tests).
    pub fn with_period(mut self, period: Duration) -> Self {
        self.period = period;
        self
    }

    /// Runs the refresher until `shutdown` flips; the handle feeds it pod versions.
    pub fn spawn(self, shutdown: watch::Receiver<bool>) -> RefreshHandle {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(self.run(rx, shutdown));
        RefreshHandle { tx }
    }

    async fn run(
        mut self,
        mut pods: mpsc::UnboundedReceiver<Box<Pod>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        // The first sweep one period in: at start the workers are setting volumes up anyway.
        let start = tokio::time::Instant::now() + self.period;
        let mut ticker = tokio::time::interval_at(start, self.period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => self.sweep().await,
                pod = pods.recv() => match pod {
                    Some(pod) => self.pod_changed(&pod).await,
                    None => return,
                },
                _ = shutdown.changed() => return,
            }
        }
    }

    /// One pass over every pod in the local cache.
    pub async fn sweep(&mut self) {
        let pods = match self.cache.run(|c| c.pods()).await {
            Ok(pods) => pods,
            Err(err) => {
                tracing::warn!(%err, "volume refresh: reading pods from the local cache");
                return;
            }
        };
        self.seen.retain(|uid, _| pods.iter().any(|p| p.metadata.uid.as_ref() == Some(uid)));
        for pod in &pods {
            self.remember(pod);
        }
        let this = &*self;
        futures::stream::iter(&pods).for_each_concurrent(PARALLEL, |pod| this.refresh(pod)).await;
    }

    async fn pod_changed(&mut self, pod: &Pod) {
        if self.remember(pod) {
            self.refresh(pod).await;
        }
    }

    /// Records the pod's labels and annotations; true when they differ from the ones seen
    /// before (a pod seen for the first time is being set up by its worker).
    fn remember(&mut self, pod: &Pod) -> bool {
        let Some(uid) = pod.metadata.uid.clone() else { return false };
        let now = (pod.metadata.labels.clone(), pod.metadata.annotations.clone());
        self.seen.insert(uid, now.clone()).is_some_and(|before| before != now)
    }

    async fn refresh(&self, pod: &Pod) {
        if !is_running(pod) || !has_content_volumes(pod) {
            return;
        }
        let m = &pod.metadata;
        let name = format!(
            "{}/{}",
            m.namespace.as_deref().unwrap_or("default"),
            m.name.as_deref().unwrap_or_default()
        );
        match self.volumes.refresh(pod, self.objects.as_ref()).await {
            Ok(changed) if changed.is_empty() => {}
            Ok(changed) => {
                tracing::info!(pod = %name, volumes = ?changed, "volume content updated")
            }
            Err(err) => tracing::warn!(pod = %name, %err, "refreshing volumes"),
        }
    }
}

/// Neither being deleted (its worker tears the volumes down) nor finished.
fn is_running(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

fn has_content_volumes(pod: &Pod) -> bool {
    pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()).any(|v| {
        v.config_map.is_some()
            || v.secret.is_some()
            || v.downward_api.is_some()
            || v.projected.is_some()
    })
}

#[cfg(test)]
mod tests;
