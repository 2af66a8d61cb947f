//! The watch hub: how committed writes reach watchers without polling.
//!
//! After each commit the writer calls [`Hub::publish`] with the batch's events (in revision
//! order). Every *live* watcher gets the events that match it with a non-blocking `try_send`.
//! A watcher whose buffer is full is switched to *catching up*: its own task replays the
//! missing revisions from the database, then (under the hub lock, so no publish can slip
//! between) switches it back to live. A watcher with a start revision begins in catch-up. So
//! the writer never waits for a consumer, and every watcher sees each revision exactly once and
//! in order. History compacted away before a watcher replays it ends the watch with
//! `WatchMessage::Compacted`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{mpsc, Notify};

use super::read::{self, KeyRange};
use super::Shared;
use crate::store::{Event, EventKind, Result, Revision, StoreError, WatchMessage, WatchRequest};

/// Revisions replayed per database read while catching up.
const REPLAY_CHUNK: Revision = 512;

/// Which events a watcher wants.
#[derive(Debug, Clone)]
struct Filter {
    range: KeyRange,
    /// First revision of interest.
    start: Revision,
    prev_kv: bool,
    filter_put: bool,
    filter_delete: bool,
}

impl Filter {
    /// The event as this watcher should see it, if it wants it at all.
    fn select(&self, ev: &Event) -> Option<Event> {
        let wanted = ev.kv.mod_revision >= self.start
            && self.range.contains(&ev.kv.key)
            && match ev.kind {
                EventKind::Put => !self.filter_put,
                EventKind::Delete => !self.filter_delete,
            };
        wanted.then(|| Event {
            kind: ev.kind,
            kv: ev.kv.clone(),
            prev_kv: if self.prev_kv { ev.prev_kv.clone() } else { None },
        })
    }
}

struct Entry {
    filter: Filter,
    tx: mpsc::Sender<WatchMessage>,
    /// Live: `publish` feeds it. Otherwise its task replays from `resume_from`.
    live: bool,
    resume_from: Revision,
    /// A progress request arrived while catching up; answer it on going live.
    progress_pending: bool,
    wake: Arc<Notify>,
}

struct HubState {
    /// Last revision published (every event up to it has been handed to live watchers).
    committed: Revision,
    compact: Revision,
    next_id: u64,
    watchers: HashMap<u64, Entry>,
    /// The writer has stopped: no more events will come.
    closed: bool,
}

/// Registry of watchers, fed by the writer.
pub(crate) struct Hub {
    state: Mutex<HubState>,
}

/// Where a watcher's task stands.
enum Standing {
    Gone,
    Live,
    CatchUp(Revision),
}

impl Hub {
    /// A hub for a store at revision `committed`, compacted at `compact`.
    pub(crate) fn new(committed: Revision, compact: Revision) -> Self {
        Hub {
            state: Mutex::new(HubState {
                committed,
                compact,
                next_id: 1,
                watchers: HashMap::new(),
                closed: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands a committed batch's events to the live watchers; called by the writer only.
    pub(crate) fn publish(&self, events: &[Event], committed: Revision, compact: Revision) {
        let mut st = self.lock();
        st.committed = committed;
        st.compact = compact;
        if events.is_empty() {
            return;
        }
        let mut closed = Vec::new();
        for (id, entry) in st.watchers.iter_mut().filter(|(_, e)| e.live) {
            let selected: Vec<Event> =
                events.iter().filter_map(|ev| entry.filter.select(ev)).collect();
            let Some(first) = selected.first().map(|ev| ev.kv.mod_revision) else { continue };
            match entry.tx.try_send(WatchMessage::Events { revision: committed, events: selected })
            {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    // Never wait for a slow consumer: it replays from the database instead.
                    entry.live = false;
                    entry.resume_from = first;
                    entry.wake.notify_one();
                }
                Err(mpsc::error::TrySendError::Closed(_)) => closed.push(*id),
            }
        }
        for id in closed {
            st.watchers.remove(&id);
        }
    }

    /// Ends every watch (the store is shutting down) and refuses new ones.
    pub(crate) fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        for (_, entry) in st.watchers.drain() {
            entry.wake.notify_one();
        }
    }

    fn remove(&self, id: u64) {
        self.lock().watchers.remove(&id);
    }

    fn standing(&self, id: u64) -> Standing {
        match self.lock().watchers.get(&id) {
            None => Standing::Gone,
            Some(e) if e.live => Standing::Live,
            Some(e) => Standing::CatchUp(e.resume_from),
        }
    }
}

/// Starts a watch on `shared`'s hub; the returned watcher's messages come from `tx`.
pub(crate) fn start(
    shared: &Arc<Shared>,
    req: &WatchRequest,
    tx: mpsc::Sender<WatchMessage>,
    progress: mpsc::Receiver<()>,
) {
    let wake = Arc::new(Notify::new());
    let filter = Filter {
        range: KeyRange::new(&req.key, &req.range_end),
        start: 0,
        prev_kv: req.prev_kv,
        filter_put: req.filter_put,
        filter_delete: req.filter_delete,
    };
    let id = {
        let mut st = shared.hub.lock();
        if st.closed {
            // Dropping `tx` ends the watch at once.
            return;
        }
        if req.start_revision > 0 && req.start_revision < st.compact {
            let compact_revision = st.compact;
            drop(st);
            // The buffer is new and empty, so this cannot fail for lack of room.
            let _ = tx.try_send(WatchMessage::Compacted { compact_revision });
            return;
        }
        let start = if req.start_revision > 0 { req.start_revision } else { st.committed + 1 };
        let id = st.next_id;
        st.next_id += 1;
        let live = start > st.committed;
        let entry = Entry {
            filter: Filter { start, ..filter },
            tx: tx.clone(),
            live,
            resume_from: start,
            progress_pending: false,
            wake: wake.clone(),
        };
        st.watchers.insert(id, entry);
        id
    };
    let shared = shared.clone();
    tokio::spawn(async move {
        run(&shared, id, tx, progress, wake).await;
        shared.hub.remove(id);
    });
}

/// A watcher's task: replays history when needed and answers progress requests; returns when
/// the watch is over.
async fn run(
    shared: &Arc<Shared>,
    id: u64,
    tx: mpsc::Sender<WatchMessage>,
    mut progress: mpsc::Receiver<()>,
    wake: Arc<Notify>,
) {
    loop {
        match shared.hub.standing(id) {
            Standing::Gone => return,
            Standing::Live => {}
            Standing::CatchUp(from) => {
                if catch_up(shared, id, from, &tx).await.is_none() {
                    return;
                }
            }
        }
        tokio::select! {
            _ = tx.closed() => return,
            request = progress.recv() => {
                if request.is_none() {
                    return;
                }
                let answer = {
                    let mut st = shared.hub.lock();
                    let committed = st.committed;
                    match st.watchers.get_mut(&id) {
                        None => return,
                        Some(e) if e.live => Some(committed),
                        Some(e) => {
                            e.progress_pending = true;
                            None
                        }
                    }
                };
                if let Some(revision) = answer {
                    if tx.send(WatchMessage::Progress { revision }).await.is_err() {
                        return;
                    }
                }
            }
            _ = wake.notified() => {}
        }
    }
}

/// Replays revisions `from..` from the database until the watcher has caught up with the hub,
/// then makes it live. `None` when the watch is over.
async fn catch_up(
    shared: &Arc<Shared>,
    id: u64,
    mut from: Revision,
    tx: &mpsc::Sender<WatchMessage>,
) -> Option<()> {
    let filter = shared.hub.lock().watchers.get(&id)?.filter.clone();
    loop {
        let progress = {
            let mut st = shared.hub.lock();
            let committed = st.committed;
            if from > committed {
                // Caught up, and the hub lock keeps the next publish from slipping in between.
                let entry = st.watchers.get_mut(&id)?;
                entry.live = true;
                entry.resume_from = from;
                Some(std::mem::take(&mut entry.progress_pending).then_some(committed))
            } else {
                None
            }
        };
        if let Some(progress) = progress {
            if let Some(revision) = progress {
                tx.send(WatchMessage::Progress { revision }).await.ok()?;
            }
            return Some(());
        }
        let committed = shared.hub.lock().committed;
        let to = committed.min(from + REPLAY_CHUNK - 1);
        let (range, prev_kv) = (filter.range.clone(), filter.prev_kv);
        let replayed: Result<Vec<Event>> = shared
            .read(move |conn| {
                let (_, compact) = read::read_meta(conn)?;
                if from < compact {
                    return Err(StoreError::Compacted { compact_revision: compact });
                }
                read::events(conn, &range, from, to, prev_kv)
            })
            .await;
        match replayed {
            Ok(events) => {
                let events: Vec<Event> = events.iter().filter_map(|ev| filter.select(ev)).collect();
                if !events.is_empty() {
                    tx.send(WatchMessage::Events { revision: to, events }).await.ok()?;
                }
                from = to + 1;
            }
            Err(StoreError::Compacted { compact_revision }) => {
                let _ = tx.send(WatchMessage::Compacted { compact_revision }).await;
                return None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "store: watch replay failed; ending the watch");
                return None;
            }
        }
    }
}
