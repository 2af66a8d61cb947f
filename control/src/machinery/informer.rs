//! Shared informers: one watch per resource type, however many control loops read it. Each
//! informer keeps a `kube_runtime` reflector store (the cache every loop reads) and fans out
//! changes on a broadcast channel; [`Informer::feed`] turns those changes into queue keys.
//! Loops are level-triggered: a lagging subscriber, or a relist, re-queues every object.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, watch};

use super::queue::WorkQueue;

/// Changes buffered per informer before a slow subscriber lags (and then re-queues all).
const CHANNEL_CAPACITY: usize = 4096;

/// A change seen by an informer.
#[derive(Debug)]
pub enum Change<K> {
    Applied(Arc<K>),
    Deleted(Arc<K>),
    /// The watch (re)listed: every object may have changed.
    Resynced,
}

impl<K> Clone for Change<K> {
    fn clone(&self) -> Self {
        match self {
            Change::Applied(k) => Change::Applied(k.clone()),
            Change::Deleted(k) => Change::Deleted(k.clone()),
            Change::Resynced => Change::Resynced,
        }
    }
}

/// The cache and change feed of one resource type.
pub struct Informer<K: Resource<DynamicType = ()> + 'static> {
    store: Store<K>,
    changes: broadcast::Sender<Change<K>>,
    /// Set once the first list is in the store. (kube-runtime's `Store::wait_until_ready`
    /// wakes only the last of several concurrent waiters; a watch channel wakes them all.)
    listed: watch::Receiver<bool>,
}

impl<K: Resource<DynamicType = ()> + 'static> Clone for Informer<K> {
    fn clone(&self) -> Self {
        Informer {
            store: self.store.clone(),
            changes: self.changes.clone(),
            listed: self.listed.clone(),
        }
    }
}

impl<K> Informer<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// The cached objects.
    pub fn store(&self) -> &Store<K> {
        &self.store
    }

    /// Waits until the first list has filled the cache.
    pub async fn ready(&self) {
        // The sender lives as long as the watch task, which never ends on its own.
        let _ = self.listed.clone().wait_for(|listed| *listed).await;
    }

    /// Every cached object.
    pub fn list(&self) -> Vec<Arc<K>> {
        self.store.state()
    }

    /// The cached object `namespace/name` (`namespace` `None` for cluster-scoped kinds).
    pub fn get(&self, namespace: Option<&str>, name: &str) -> Option<Arc<K>> {
        let mut key = reflector::ObjectRef::<K>::new(name);
        if let Some(ns) = namespace {
            key = key.within(ns);
        }
        self.store.get(&key)
    }

    /// Cached objects in `namespace`.
    pub fn list_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        self.store.state_filter(|o| o.meta().namespace.as_deref() == Some(namespace))
    }

    /// Subscribes to changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Change<K>> {
        self.changes.subscribe()
    }

    /// Feeds `queue` with the keys `keys` maps each changed object to, starting with every
    /// cached object once the cache is ready, and every object again after a relist or a lag.
    pub fn feed<T, F>(&self, queue: WorkQueue<T>, keys: F)
    where
        T: Clone + Eq + Hash + Send + 'static,
        F: Fn(&K) -> Vec<T> + Send + Sync + 'static,
    {
        let mut changes = self.subscribe();
        let informer = self.clone();
        tokio::spawn(async move {
            informer.ready().await;
            let requeue_all = |queue: &WorkQueue<T>| {
                for object in informer.list() {
                    keys(&object).into_iter().for_each(|k| queue.add(k));
                }
            };
            requeue_all(&queue);
            loop {
                match changes.recv().await {
                    Ok(Change::Applied(o)) | Ok(Change::Deleted(o)) => {
                        keys(&o).into_iter().for_each(|k| queue.add(k))
                    }
                    Ok(Change::Resynced) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        requeue_all(&queue)
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }
}

/// The informers of one client, created on first use and shared by every caller.
#[derive(Clone)]
pub struct Informers {
    client: Client,
    by_type: Arc<Mutex<HashMap<TypeId, Box<dyn Any + Send + Sync>>>>,
}

impl Informers {
    pub fn new(client: Client) -> Informers {
        Informers { client, by_type: Arc::default() }
    }

    /// The informer of `K`, starting its watch the first time it is asked for.
    pub fn get<K>(&self) -> Informer<K>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    {
        let mut by_type = self.by_type.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = by_type.get(&TypeId::of::<K>()) {
            if let Some(informer) = existing.downcast_ref::<Informer<K>>() {
                return informer.clone();
            }
        }
        let informer = self.start::<K>();
        by_type.insert(TypeId::of::<K>(), Box::new(informer.clone()));
        informer
    }

    fn start<K>(&self) -> Informer<K>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    {
        let (store, mut writer) = reflector::store::<K>();
        let (changes, _) = broadcast::channel(CHANNEL_CAPACITY);
        let (listed_tx, listed) = watch::channel(false);
        let informer = Informer { store, changes: changes.clone(), listed };
        let api: Api<K> = Api::all(self.client.clone());
        tokio::spawn(async move {
            let mut events = watcher(api, watcher::Config::default()).default_backoff().boxed();
            while let Some(event) = events.next().await {
                let event = match event {
                    Ok(event) => event,
                    Err(error) => {
                        tracing::warn!(kind = %K::kind(&()), %error, "watch failed; retrying");
                        continue;
                    }
                };
                writer.apply_watcher_event(&event);
                let change = match event {
                    watcher::Event::Apply(o) => Change::Applied(Arc::new(o)),
                    watcher::Event::Delete(o) => Change::Deleted(Arc::new(o)),
                    watcher::Event::InitDone => {
                        listed_tx.send_replace(true);
                        Change::Resynced
                    }
                    watcher::Event::Init | watcher::Event::InitApply(_) => continue,
                };
                // No subscribers yet is fine: they start from the cache.
                let _ = changes.send(change);
            }
        });
        informer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::authn::TokenAuthenticator;
    use crate::apiserver::{ApiConfig, ApiServer};
    use crate::machinery::{in_process_client, Identity};
    use crate::store::sqlite::{SqliteOptions, SqliteStore};
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{DeleteParams, PostParams};

    #[tokio::test]
    async fn informer_caches_and_feeds_keys_through_the_in_process_client() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            SqliteStore::open(dir.path().join("state.db"), SqliteOptions::default()).unwrap();
        let server =
            ApiServer::new(Arc::new(store), ApiConfig::default(), TokenAuthenticator::default());
        crate::apiserver::serve::bootstrap(&server).await.unwrap();
        let client = in_process_client(&server, Identity::ControllerManager);
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        let mut before = ConfigMap::default();
        before.metadata.name = Some("before".into());
        api.create(&PostParams::default(), &before).await.unwrap();

        let informers = Informers::new(client);
        let informer = informers.get::<ConfigMap>();
        let queue = WorkQueue::new();
        informer.feed(queue.clone(), |cm: &ConfigMap| vec![cm.metadata.name.clone().unwrap()]);
        // The object that existed before the watch comes from the initial list.
        assert_eq!(queue.next().await.as_deref(), Some("before"));
        assert!(informer.get(Some("default"), "before").is_some());
        // A second `get` shares the watch: same cache.
        assert_eq!(informers.get::<ConfigMap>().list().len(), informer.list().len());

        let mut after = ConfigMap::default();
        after.metadata.name = Some("after".into());
        api.create(&PostParams::default(), &after).await.unwrap();
        let key = queue.next().await;
        assert_eq!(key.as_deref(), Some("after"));
        queue.done(&"after".to_string());
        api.delete("after", &DeleteParams::default()).await.unwrap();
        assert_eq!(queue.next().await.as_deref(), Some("after"));
        assert!(informer.get(Some("default"), "after").is_none());
    }

    #[tokio::test]
    async fn every_concurrent_waiter_sees_the_informer_ready() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            SqliteStore::open(dir.path().join("state.db"), SqliteOptions::default()).unwrap();
        let server =
            ApiServer::new(Arc::new(store), ApiConfig::default(), TokenAuthenticator::default());
        crate::apiserver::serve::bootstrap(&server).await.unwrap();
        let informers = Informers::new(in_process_client(&server, Identity::ControllerManager));
        let informer = informers.get::<ConfigMap>();
        // Several loops wait at once before the first list (as controllers do at start).
        let waiters: Vec<_> = (0..8)
            .map(|_| {
                let informer = informer.clone();
                tokio::spawn(async move { informer.ready().await })
            })
            .collect();
        for waiter in waiters {
            tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
                .await
                .expect("a waiter was never woken")
                .unwrap();
        }
    }
}
