//! The collector's watches: one dynamic watch per deletable resource (the reference's
//! "monitors"), started and stopped as discovery changes. Discovery runs at start, when a CRD
//! changes, and every [`RESYNC`] otherwise. Each watch feeds the graph; after a relist, objects
//! the list no longer holds are treated as deleted.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::DynamicObject;
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::Api;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::graph::Node;
use super::Collector;
use crate::controllers::util::discovery::{served_resources, ServedResource};
use crate::machinery::Informers;

/// How often discovery runs when no CRD changed.
const RESYNC: Duration = Duration::from_secs(30);
/// Resources the collector never watches (the reference's `DefaultIgnoredResources`).
const IGNORED: &[(&str, &str)] = &[("", "events"), ("events.k8s.io", "events")];

type ResourceKey = (String, String, String);

/// The running watches.
#[derive(Default)]
pub(crate) struct Monitors {
    running: HashMap<ResourceKey, Monitor>,
    /// Discovery has run at least once.
    discovered: bool,
}

struct Monitor {
    synced: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Monitors {
    /// Every watch has listed once: the graph holds every object that existed then.
    pub fn synced(&self) -> bool {
        self.discovered && self.running.values().all(|m| m.synced.load(Ordering::Acquire))
    }
}

impl Collector {
    /// Whether the graph can be trusted to hold every dependent (Orphan and Foreground
    /// processing must not miss one).
    pub(super) fn synced(&self) -> bool {
        self.monitors.lock().unwrap_or_else(|p| p.into_inner()).synced()
    }
}

fn key(resource: &ServedResource) -> ResourceKey {
    let r = &resource.resource;
    (r.group.clone(), r.version.clone(), r.plural.clone())
}

/// Spawns the discovery loop, woken early by CRD changes.
pub(super) fn spawn(collector: Arc<Collector>, informers: &Informers) {
    let wake = Arc::new(Notify::new());
    let mut crds = informers.get::<CustomResourceDefinition>().subscribe();
    {
        let wake = wake.clone();
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match crds.recv().await {
                    Ok(_) | Err(RecvError::Lagged(_)) => wake.notify_one(),
                    Err(RecvError::Closed) => return,
                }
            }
        });
    }
    tokio::spawn(async move {
        loop {
            if let Err(error) = sync(&collector).await {
                tracing::warn!(%error, "garbage collector discovery failed; retrying");
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(RESYNC) => {}
            }
        }
    });
}

/// Runs discovery and starts/stops watches to match.
async fn sync(collector: &Arc<Collector>) -> Result<(), kube::Error> {
    let served: Vec<Arc<ServedResource>> =
        served_resources(&collector.client).await?.into_iter().map(Arc::new).collect();
    let wanted: HashMap<ResourceKey, Arc<ServedResource>> = served
        .iter()
        .filter(|r| r.is_deletable())
        .filter(|r| !IGNORED.contains(&(r.resource.group.as_str(), r.resource.plural.as_str())))
        .map(|r| (key(r), r.clone()))
        .collect();
    *collector.resources.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(served);
    let stopped: Vec<ResourceKey> = {
        let mut monitors = collector.monitors.lock().unwrap_or_else(|p| p.into_inner());
        let stopped: Vec<ResourceKey> =
            monitors.running.keys().filter(|k| !wanted.contains_key(*k)).cloned().collect();
        for k in &stopped {
            if let Some(monitor) = monitors.running.remove(k) {
                monitor.task.abort();
            }
        }
        for (k, resource) in wanted {
            if let Entry::Vacant(slot) = monitors.running.entry(k) {
                tracing::debug!(resource = ?slot.key(), "garbage collector watching");
                let synced = Arc::new(AtomicBool::new(false));
                let task = tokio::spawn(watch(collector.clone(), resource, synced.clone()));
                slot.insert(Monitor { synced, task });
            }
        }
        monitors.discovered = true;
        stopped
    };
    // A resource no longer served takes its objects with it.
    for k in stopped {
        let uids = collector.graph().uids_of(&k);
        uids.iter().for_each(|uid| collector.forget(uid));
    }
    Ok(())
}

/// Watches one resource into the graph until aborted.
async fn watch(collector: Arc<Collector>, resource: Arc<ServedResource>, synced: Arc<AtomicBool>) {
    let api: Api<DynamicObject> = Api::all_with(collector.client.clone(), &resource.resource);
    let mut events = watcher(api, watcher::Config::default()).default_backoff().boxed();
    let mut listing: Option<HashSet<String>> = None;
    let observe = |object: &DynamicObject| {
        let node = Node::from_meta(resource.clone(), &object.metadata)?;
        let uid = node.uid.clone();
        collector.observe(node);
        Some(uid)
    };
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => listing = Some(HashSet::new()),
            Ok(watcher::Event::InitApply(object)) => {
                if let (Some(uid), Some(seen)) = (observe(&object), listing.as_mut()) {
                    seen.insert(uid);
                }
            }
            Ok(watcher::Event::InitDone) => {
                if let Some(seen) = listing.take() {
                    let gone: Vec<String> = collector
                        .graph()
                        .uids_of(&key(&resource))
                        .into_iter()
                        .filter(|uid| !seen.contains(uid))
                        .collect();
                    gone.iter().for_each(|uid| collector.forget(uid));
                }
                synced.store(true, Ordering::Release);
            }
            Ok(watcher::Event::Apply(object)) => _ = observe(&object),
            Ok(watcher::Event::Delete(object)) => {
                if let Some(uid) = object.metadata.uid.as_deref() {
                    collector.forget(uid);
                }
            }
            Err(error) => {
                tracing::debug!(resource = %resource.resource.plural, %error, "watch failed; retrying")
            }
        }
    }
}
