//! The watch cache: per storage prefix (one resource type), the current objects and a window of
//! recent events in memory, fed by one store watch. Lists and watches are served from here, so
//! a thousand watchers or a 10k-object list cost one store watch, not a thousand SQLite reads.
//!
//! Consistency: the cache knows the store revision it has caught up to (`revision`). A consistent
//! read (list with no resourceVersion) first asks the store for its current revision, then waits
//! for the cache to reach it (asking the store watch for a progress notification when the
//! resource has been idle), as the reference apiserver's consistent reads from cache do.
//!
//! Events are appended and broadcast while the state lock is held, and a new watcher takes its
//! backlog and subscribes under the same lock: no event is lost or delivered twice.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, watch};

use super::meta;
use super::write_marks::WriteMarks;
use crate::store::{EventKind, RangeRequest, Revision, Store, WatchMessage, WatchRequest};

/// How many past events each resource keeps for watches that start in the past.
const HISTORY: usize = 10_000;
/// Buffer of the live event broadcast; a watcher further behind is ended (it re-watches).
const BROADCAST: usize = 4096;

/// The type of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    /// The wire name (`ADDED`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// A cached object with its JSON encoding, made at most once and shared by every list and
/// watcher that sends the object as stored (the reference's `cachingObject`): a thousand
/// watchers of a pod cost one encoding, not a thousand.
#[derive(Debug)]
pub struct CachedObject {
    value: Value,
    json: OnceLock<Bytes>,
    /// The protobuf body, made only when a protobuf watcher first needs it (`None`: the kind
    /// has no protobuf form).
    protobuf: OnceLock<Option<Bytes>>,
}

impl CachedObject {
    pub fn new(value: Value) -> Arc<CachedObject> {
        Arc::new(CachedObject { value, json: OnceLock::new(), protobuf: OnceLock::new() })
    }

    /// The object's JSON.
    pub fn json(&self) -> &Bytes {
        self.json.get_or_init(|| Bytes::from(serde_json::to_vec(&self.value).unwrap_or_default()))
    }

    /// The object's protobuf body (`k8s\0` envelope), shared like [`json`](Self::json).
    pub fn protobuf(&self) -> Option<&Bytes> {
        self.protobuf.get_or_init(|| super::protobuf::encode(&self.value).map(Bytes::from)).as_ref()
    }

    /// Whether the object is stored as `api_version`/`kind`, so that its stored encoding is
    /// also what a client of that version gets.
    pub fn is_as(&self, api_version: &str, kind: &str) -> bool {
        self.value.get("apiVersion").and_then(Value::as_str) == Some(api_version)
            && self.value.get("kind").and_then(Value::as_str) == Some(kind)
    }
}

impl Deref for CachedObject {
    type Target = Value;

    fn deref(&self) -> &Value {
        &self.value
    }
}

/// One change to one object.
#[derive(Debug)]
pub struct CacheEvent {
    pub kind: EventType,
    pub revision: Revision,
    pub key: String,
    /// The object after the change (for a delete: its last state, at the delete's revision).
    pub object: Arc<CachedObject>,
    /// The object before the change, if it existed.
    pub prev: Option<Arc<CachedObject>>,
}

/// What the live broadcast carries.
#[derive(Debug, Clone)]
pub enum CacheMessage {
    Event(Arc<CacheEvent>),
    /// The cache re-listed (its store watch broke): watchers must end and start over.
    Reset,
}

#[derive(Debug, Default)]
struct CacheState {
    objects: BTreeMap<String, Arc<CachedObject>>,
    revision: Revision,
    history: VecDeque<Arc<CacheEvent>>,
    /// Watches may start at any resourceVersion >= this one.
    oldest: Revision,
    /// The revision of the last change to `objects` (the list's after a re-list): they are the
    /// store's state at every revision from this one to `revision`.
    changed_at: Revision,
    ready: bool,
}

/// One page of a list served from the cache (see [`WatchCache::page`]).
#[derive(Debug)]
pub struct CachePage {
    /// The revision the page shows.
    pub revision: Revision,
    pub objects: Vec<Arc<CachedObject>>,
    /// The key of the page's last object when more keys follow it.
    pub next: Option<String>,
    /// How many keys under the prefix follow the page (whatever the filter).
    pub remaining: usize,
}

/// A watch's starting point: what it must send first, and the live feed after it.
#[derive(Debug)]
pub struct Subscription {
    /// Events to send first, in order.
    pub backlog: Vec<Arc<CacheEvent>>,
    /// The live feed (events after the backlog).
    pub live: broadcast::Receiver<CacheMessage>,
    /// The cache revision when subscribing.
    pub revision: Revision,
}

/// The cache of one resource type's objects (one storage prefix).
#[derive(Debug)]
pub struct WatchCache {
    prefix: String,
    state: Mutex<CacheState>,
    live: broadcast::Sender<CacheMessage>,
    revision: watch::Sender<Revision>,
    progress: mpsc::Sender<()>,
    feeder: std::sync::OnceLock<tokio::task::AbortHandle>,
}

impl Drop for WatchCache {
    fn drop(&mut self) {
        if let Some(feeder) = self.feeder.get() {
            feeder.abort();
        }
    }
}

/// The end of a prefix range (`prefix` with its last byte incremented).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl WatchCache {
    /// Starts the cache of `prefix`: an initial list, then a store watch (on the current runtime).
    pub fn start(store: Arc<dyn Store>, prefix: String) -> Arc<WatchCache> {
        let (progress_tx, progress_rx) = mpsc::channel(1);
        let (live, _) = broadcast::channel(BROADCAST);
        let (revision, _) = watch::channel(0);
        let cache = Arc::new(WatchCache {
            prefix: prefix.clone(),
            state: Mutex::new(CacheState::default()),
            live,
            revision,
            progress: progress_tx,
            feeder: std::sync::OnceLock::new(),
        });
        // Spawned only once the cache exists, so the feeder can always reach it.
        let weak = Arc::downgrade(&cache);
        let task = tokio::spawn(async move { feed(store, prefix, weak, progress_rx).await });
        let _ = cache.feeder.set(task.abort_handle());
        cache
    }

    fn lock(&self) -> MutexGuard<'_, CacheState> {
        // Updates under the lock keep the state consistent even if a holder panicked.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The store revision the cache has caught up to (0 before its first list).
    pub fn revision(&self) -> Revision {
        *self.revision.borrow()
    }

    /// Waits until the cache has seen the store up to `rev`; false on timeout.
    pub async fn wait_for(&self, rev: Revision, timeout: Duration) -> bool {
        let mut rx = self.revision.subscribe();
        let wait = async {
            loop {
                if *rx.borrow_and_update() >= rev && self.lock().ready {
                    return;
                }
                // An idle resource gets no events: ask the store watch to confirm progress.
                let _ = self.progress.try_send(());
                let _ = tokio::time::timeout(Duration::from_millis(50), rx.changed()).await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }

    /// The objects under `key_prefix` (key order) and the cache revision they are current at.
    pub fn snapshot(&self, key_prefix: &str) -> (Revision, Vec<Arc<CachedObject>>) {
        let state = self.lock();
        let objects = state
            .objects
            .range(key_prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(key_prefix))
            .map(|(_, v)| v.clone())
            .collect();
        (state.revision, objects)
    }

    /// The object at `key` as the cache has it (`None` also before the first list).
    pub fn get(&self, key: &str) -> Option<Arc<CachedObject>> {
        self.lock().objects.get(key).cloned()
    }

    /// One page of the objects under `key_prefix`, from key `start` on: the first `limit` (0: all)
    /// that `keep` accepts, as the store had them at revision `at` (`None`: the cache's
    /// current revision). `None` when the cache cannot show that revision: not ready yet, not
    /// there yet, or its objects changed since (the page must then come from the store).
    pub fn page(
        &self,
        at: Option<Revision>,
        key_prefix: &str,
        start: &str,
        limit: usize,
        keep: impl Fn(&Value) -> bool,
    ) -> Option<CachePage> {
        let state = self.lock();
        let revision = match at {
            _ if !state.ready => return None,
            None => state.revision,
            Some(at) if state.changed_at <= at && at <= state.revision => at,
            Some(_) => return None,
        };
        let mut keys = state
            .objects
            .range::<str, _>((std::ops::Bound::Included(start), std::ops::Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(key_prefix));
        let mut objects = Vec::new();
        let mut last = None;
        for (key, object) in keys.by_ref() {
            if keep(object) {
                objects.push(object.clone());
                if objects.len() == limit {
                    last = Some(key.clone());
                    break;
                }
            }
        }
        let remaining = keys.count();
        let next = last.filter(|_| remaining > 0);
        Some(CachePage { revision, objects, next, remaining })
    }

    /// The events after revision `after` and the cache revision they bring it to, for an index
    /// kept up to date from this cache (the Node authorizer's graph). `None` when they are no
    /// longer all in the window (too old, or the cache re-listed since): the index must be
    /// rebuilt from a [`snapshot`](Self::snapshot).
    pub fn events_since(&self, after: Revision) -> Option<(Revision, Vec<Arc<CacheEvent>>)> {
        let state = self.lock();
        if !state.ready || after < state.oldest {
            return None;
        }
        // The window is in revision order: skip what the index has without scanning it all.
        let first = state.history.partition_point(|e| e.revision <= after);
        Some((state.revision, state.history.range(first..).cloned().collect()))
    }

    /// Subscribes from `from` (events after that revision), or with the current objects as a
    /// synthetic ADDED backlog when `from` is `None`. `Err(oldest)` when `from` is too old.
    pub fn subscribe(&self, from: Option<Revision>) -> Result<Subscription, Revision> {
        let state = self.lock();
        let backlog = match from {
            Some(rv) if rv < state.oldest => return Err(state.oldest),
            Some(rv) => state.history.iter().filter(|e| e.revision > rv).cloned().collect(),
            None => state
                .objects
                .iter()
                .map(|(key, obj)| {
                    Arc::new(CacheEvent {
                        kind: EventType::Added,
                        revision: state.revision,
                        key: key.clone(),
                        object: obj.clone(),
                        prev: None,
                    })
                })
                .collect(),
        };
        Ok(Subscription { backlog, live: self.live.subscribe(), revision: state.revision })
    }

    /// The storage prefix this cache covers.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether the initial list has completed.
    pub fn is_ready(&self) -> bool {
        self.lock().ready
    }
}

/// The feeder: list, then watch from the list's revision; on a broken watch, start over.
async fn feed(
    store: Arc<dyn Store>,
    prefix: String,
    cache: std::sync::Weak<WatchCache>,
    mut progress: mpsc::Receiver<()>,
) {
    let end = prefix_end(&prefix);
    loop {
        let listed = store
            .range(RangeRequest {
                key: prefix.as_bytes().to_vec(),
                range_end: end.clone(),
                ..Default::default()
            })
            .await;
        let listed = match listed {
            Ok(listed) => listed,
            Err(err) => {
                tracing::warn!(%prefix, %err, "watch cache: list failed, retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut watcher = match store
            .watch(WatchRequest {
                key: prefix.as_bytes().to_vec(),
                range_end: end.clone(),
                start_revision: listed.revision + 1,
                ..Default::default()
            })
            .await
        {
            Ok(w) => w,
            Err(err) => {
                tracing::warn!(%prefix, %err, "watch cache: watch failed, retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        {
            let Some(cache) = cache.upgrade() else { return };
            let mut state = cache.lock();
            state.objects = listed
                .kvs
                .iter()
                .filter_map(|kv| {
                    let key = String::from_utf8(kv.key.clone()).ok()?;
                    Some((key, CachedObject::new(meta::decode(kv)?)))
                })
                .collect();
            state.revision = listed.revision;
            state.history.clear();
            state.oldest = listed.revision;
            state.changed_at = listed.revision;
            state.ready = true;
            let _ = cache.live.send(CacheMessage::Reset);
            drop(state);
            cache.revision.send_replace(listed.revision);
        }
        loop {
            tokio::select! {
                message = watcher.recv() => {
                    let Some(cache) = cache.upgrade() else { return };
                    match message {
                        Some(WatchMessage::Events { revision, events }) => {
                            apply(&cache, revision, events);
                        }
                        Some(WatchMessage::Progress { revision }) => {
                            let mut state = cache.lock();
                            state.revision = state.revision.max(revision);
                            let rev = state.revision;
                            drop(state);
                            cache.revision.send_replace(rev);
                        }
                        Some(WatchMessage::Compacted { .. }) | None => {
                            tracing::warn!(%prefix, "watch cache: store watch ended, re-listing");
                            break;
                        }
                    }
                }
                Some(()) = progress.recv() => watcher.request_progress(),
            }
        }
    }
}

fn apply(cache: &WatchCache, revision: Revision, events: Vec<crate::store::Event>) {
    let mut state = cache.lock();
    for event in events {
        let Ok(key) = String::from_utf8(event.kv.key.clone()) else { continue };
        let rev = event.kv.mod_revision;
        let cache_event = match event.kind {
            EventKind::Put => {
                let Some(obj) = meta::decode(&event.kv) else {
                    tracing::warn!(%key, "watch cache: undecodable object skipped");
                    continue;
                };
                let obj = CachedObject::new(obj);
                let prev = state.objects.insert(key.clone(), obj.clone());
                let kind = if prev.is_some() { EventType::Modified } else { EventType::Added };
                CacheEvent { kind, revision: rev, key, object: obj, prev }
            }
            EventKind::Delete => {
                let Some(prev) = state.objects.remove(&key) else { continue };
                let mut last = Value::clone(&prev);
                meta::set_resource_version(&mut last, rev);
                CacheEvent {
                    kind: EventType::Deleted,
                    revision: rev,
                    key,
                    object: CachedObject::new(last),
                    prev: Some(prev),
                }
            }
        };
        let cache_event = Arc::new(cache_event);
        state.changed_at = rev;
        if state.history.len() >= HISTORY {
            if let Some(dropped) = state.history.pop_front() {
                state.oldest = dropped.revision;
            }
        }
        state.history.push_back(cache_event.clone());
        // No receivers is fine: nobody is watching this resource.
        let _ = cache.live.send(CacheMessage::Event(cache_event));
    }
    state.revision = state.revision.max(revision);
    let rev = state.revision;
    drop(state);
    cache.revision.send_replace(rev);
}

/// Every watch cache, by storage prefix.
#[derive(Debug, Default)]
pub struct WatchCaches {
    caches: Mutex<HashMap<String, Arc<WatchCache>>>,
    /// This server's last write under each prefix, for readers that must see their own writes.
    marks: Arc<WriteMarks>,
}

impl WatchCaches {
    /// The write marks of the store the caches follow (see [`WriteMarks`]).
    pub fn marks(&self) -> &Arc<WriteMarks> {
        &self.marks
    }

    /// The cache of `prefix`, started on first use.
    pub fn get(&self, store: &Arc<dyn Store>, prefix: &str) -> Arc<WatchCache> {
        let mut caches = self.caches.lock().unwrap_or_else(|e| e.into_inner());
        caches
            .entry(prefix.to_string())
            .or_insert_with(|| WatchCache::start(store.clone(), prefix.to_string()))
            .clone()
    }

    /// Stops and forgets the cache of `prefix` (a deleted CRD).
    pub fn remove(&self, prefix: &str) {
        self.caches.lock().unwrap_or_else(|e| e.into_inner()).remove(prefix);
    }

    /// How many caches run.
    pub fn len(&self) -> usize {
        self.caches.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when no cache runs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
#[path = "watch_cache_tests.rs"]
mod tests;
