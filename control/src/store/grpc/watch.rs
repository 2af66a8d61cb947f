//! The etcd `Watch` service: one bidirectional stream carries many watches.
//!
//! Each stream is a [`WatchSession`] task, the only writer of the response stream, so responses
//! go out in a well-defined order: a watch's `created` response before its events, a progress
//! response only after every earlier event. Each store [`Watcher`] gets a small forwarding task
//! that feeds its messages into the session's queue tagged with a per-session serial number, so
//! messages of a cancelled watch are never delivered under a reused (client-chosen) watch ID.
//!
//! Stream-level behaviour follows etcd: auto IDs count up from 0, `created`/`canceled` responses,
//! duplicate IDs refused with etcd's cancel reason, progress requests answered with watch ID -1,
//! periodic progress notifications for idle watches that asked for them, fragmenting when the
//! client allows it, and cancellation with the compact revision when history is gone.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::proto::{PbWatchRequest, PbWatchRequestUnion, PbWatchResponse, PbWatchService};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::errors::{to_status, COMPACTED};
use super::{convert, Front};
use crate::store::{Revision, StoreError, WatchMessage, WatchRequest, Watcher};

/// etcd's watch ID for responses that concern the whole stream (progress requests).
const STREAM_WATCH_ID: i64 = -1;
/// etcd's cancel reason for a client-chosen ID already in use on the stream.
const DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
/// etcd's cancel reason for a range that selects nothing (`range_end <= key`).
const EMPTY_RANGE: &str = "mvcc: watcher range is empty";

/// The `etcdserverpb.Watch` service over the store.
pub(crate) struct WatchService {
    pub(crate) front: Arc<Front>,
}

type WatchStream = ReceiverStream<Result<PbWatchResponse, Status>>;

#[tonic::async_trait]
impl PbWatchService for WatchService {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<Streaming<PbWatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (out, rx) = mpsc::channel(128);
        let session = WatchSession::new(self.front.clone(), out);
        tokio::spawn(session.run(req.into_inner()));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// A store message forwarded to the session; `msg` is `None` when the store ended the watch.
struct Forwarded {
    serial: u64,
    watch_id: i64,
    msg: Option<WatchMessage>,
}

/// One watch on the stream.
struct WatchEntry {
    serial: u64,
    fragment: bool,
    progress_notify: bool,
    /// Events were sent since the last progress tick (etcd skips busy watches then).
    had_events: bool,
    /// A tick asked this watcher for progress and the answer is still to come.
    tick_pending: bool,
    /// Dropping this ends the forwarding task and so the store watch; a `()` asks for progress.
    control: mpsc::Sender<()>,
}

/// A stream-wide progress request waiting for every watch to report.
struct ProgressAll {
    /// The store revision when requested: the answer must cover at least this.
    target: Revision,
    waiting: HashSet<i64>,
    /// How many requests this answer covers (one response each).
    requests: usize,
}

/// The sending side is gone: the client left or the server shuts down.
struct Closed;

/// The state of one watch stream.
struct WatchSession {
    front: Arc<Front>,
    out: mpsc::Sender<Result<PbWatchResponse, Status>>,
    watches: HashMap<i64, WatchEntry>,
    next_auto_id: i64,
    next_serial: u64,
    forwarded_tx: mpsc::Sender<Forwarded>,
    forwarded_rx: mpsc::Receiver<Forwarded>,
    progress_all: Option<ProgressAll>,
}

impl WatchSession {
    fn new(front: Arc<Front>, out: mpsc::Sender<Result<PbWatchResponse, Status>>) -> Self {
        let (forwarded_tx, forwarded_rx) = mpsc::channel(256);
        Self {
            front,
            out,
            watches: HashMap::new(),
            next_auto_id: 0,
            next_serial: 0,
            forwarded_tx,
            forwarded_rx,
            progress_all: None,
        }
    }

    async fn run(mut self, mut input: Streaming<PbWatchRequest>) {
        let interval = self.front.config.progress_notify_interval.max(Duration::from_millis(10));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        let front = self.front.clone();
        loop {
            let step = tokio::select! {
                req = input.next() => match req {
                    Some(Ok(req)) => self.on_request(req).await,
                    Some(Err(status)) => {
                        tracing::debug!(%status, "watch stream ended by the client");
                        Err(Closed)
                    }
                    None => Err(Closed),
                },
                Some(fwd) = self.forwarded_rx.recv() => self.on_forwarded(fwd).await,
                _ = tick.tick() => {
                    self.on_tick().await;
                    Ok(())
                }
                () = front.shutting_down() => Err(Closed),
                () = self.out.closed() => Err(Closed),
            };
            if step.is_err() {
                break;
            }
        }
    }

    async fn send(&self, resp: PbWatchResponse) -> Result<(), Closed> {
        self.out.send(Ok(resp)).await.map_err(|_| Closed)
    }

    /// The current store revision, for headers of responses that carry no events.
    async fn current_revision(&self) -> Revision {
        match self.front.store.status().await {
            Ok(s) => s.revision,
            Err(e) => {
                tracing::warn!(error = %e, "store status for a watch response header");
                0
            }
        }
    }

    fn response(&self, watch_id: i64, revision: Revision) -> PbWatchResponse {
        PbWatchResponse {
            header: Some(self.front.header(revision)),
            watch_id,
            ..Default::default()
        }
    }

    async fn on_request(&mut self, req: PbWatchRequest) -> Result<(), Closed> {
        match req.request_union {
            Some(PbWatchRequestUnion::CreateRequest(c)) => {
                let filter_put = c.filters.contains(&0);
                let filter_delete = c.filters.contains(&1);
                let create = Create {
                    watch_id: c.watch_id,
                    // etcd: an empty key means "\0", the smallest key.
                    key: if c.key.is_empty() { vec![0] } else { c.key },
                    range_end: c.range_end,
                    start_revision: c.start_revision,
                    prev_kv: c.prev_kv,
                    filter_put,
                    filter_delete,
                    progress_notify: c.progress_notify,
                    fragment: c.fragment,
                };
                self.create(create).await
            }
            Some(PbWatchRequestUnion::CancelRequest(c)) => {
                // etcd ignores cancels of unknown watches.
                if self.watches.remove(&c.watch_id).is_some() {
                    self.forget_progress(c.watch_id).await?;
                    let rev = self.current_revision().await;
                    let resp = PbWatchResponse { canceled: true, ..self.response(c.watch_id, rev) };
                    self.send(resp).await?;
                }
                Ok(())
            }
            Some(PbWatchRequestUnion::ProgressRequest(_)) => self.request_progress_all().await,
            None => Ok(()),
        }
    }

    /// A free auto-assigned watch ID (etcd counts up from 0, skipping IDs in use).
    fn auto_id(&mut self) -> i64 {
        while self.watches.contains_key(&self.next_auto_id) {
            self.next_auto_id += 1;
        }
        let id = self.next_auto_id;
        self.next_auto_id += 1;
        id
    }

    async fn refuse(&self, watch_id: i64, reason: &str) -> Result<(), Closed> {
        let rev = self.current_revision().await;
        let resp = PbWatchResponse {
            created: true,
            canceled: true,
            cancel_reason: reason.to_string(),
            ..self.response(watch_id, rev)
        };
        self.send(resp).await
    }

    async fn create(&mut self, c: Create) -> Result<(), Closed> {
        if c.watch_id != 0 && self.watches.contains_key(&c.watch_id) {
            return self.refuse(STREAM_WATCH_ID, DUPLICATE_ID).await;
        }
        let whole_rest = c.range_end == [0];
        if !c.range_end.is_empty() && !whole_rest && c.key >= c.range_end {
            return self.refuse(STREAM_WATCH_ID, EMPTY_RANGE).await;
        }
        let watch_id = if c.watch_id != 0 { c.watch_id } else { self.auto_id() };
        let request = WatchRequest {
            key: c.key,
            range_end: c.range_end,
            start_revision: c.start_revision,
            prev_kv: c.prev_kv,
            filter_put: c.filter_put,
            filter_delete: c.filter_delete,
        };
        let watcher = match self.front.store.watch(request).await {
            Ok(w) => w,
            Err(StoreError::Compacted { compact_revision }) => {
                let rev = self.current_revision().await;
                self.send(PbWatchResponse { created: true, ..self.response(watch_id, rev) })
                    .await?;
                return self.send(self.compacted(watch_id, rev, compact_revision)).await;
            }
            Err(e) => return self.refuse(watch_id, to_status(e).message()).await,
        };
        let serial = self.next_serial;
        self.next_serial += 1;
        let (control, control_rx) = mpsc::channel(2);
        let entry = WatchEntry {
            serial,
            fragment: c.fragment,
            progress_notify: c.progress_notify,
            had_events: false,
            tick_pending: false,
            control,
        };
        self.watches.insert(watch_id, entry);
        tokio::spawn(forward(watcher, watch_id, serial, self.forwarded_tx.clone(), control_rx));
        let rev = self.current_revision().await;
        self.send(PbWatchResponse { created: true, ..self.response(watch_id, rev) }).await
    }

    fn compacted(
        &self,
        watch_id: i64,
        rev: Revision,
        compact_revision: Revision,
    ) -> PbWatchResponse {
        PbWatchResponse {
            canceled: true,
            compact_revision,
            cancel_reason: COMPACTED.to_string(),
            ..self.response(watch_id, rev)
        }
    }

    async fn on_forwarded(&mut self, fwd: Forwarded) -> Result<(), Closed> {
        let Some(entry) = self.watches.get_mut(&fwd.watch_id) else { return Ok(()) };
        if entry.serial != fwd.serial {
            return Ok(()); // a message from an earlier watch that had the same ID
        }
        match fwd.msg {
            Some(WatchMessage::Events { revision, events }) => {
                entry.had_events = true;
                let fragment = entry.fragment;
                let resp = PbWatchResponse {
                    events: events.into_iter().map(convert::event).collect(),
                    ..self.response(fwd.watch_id, revision)
                };
                if fragment {
                    for part in fragments(resp, self.front.config.max_request_bytes) {
                        self.send(part).await?;
                    }
                    Ok(())
                } else {
                    self.send(resp).await
                }
            }
            Some(WatchMessage::Progress { revision }) => {
                self.on_progress(fwd.watch_id, revision).await
            }
            Some(WatchMessage::Compacted { compact_revision }) => {
                self.watches.remove(&fwd.watch_id);
                self.forget_progress(fwd.watch_id).await?;
                let rev = self.current_revision().await;
                self.send(self.compacted(fwd.watch_id, rev, compact_revision)).await
            }
            None => {
                // The store ended the watch (e.g. it is shutting down): tell the client, which
                // re-creates it, rather than leaving a watch that silently gets nothing.
                self.watches.remove(&fwd.watch_id);
                self.forget_progress(fwd.watch_id).await?;
                let rev = self.current_revision().await;
                let resp = PbWatchResponse {
                    canceled: true,
                    cancel_reason: "etcdserver: watch ended by the store".to_string(),
                    ..self.response(fwd.watch_id, rev)
                };
                self.send(resp).await
            }
        }
    }

    async fn on_progress(&mut self, watch_id: i64, revision: Revision) -> Result<(), Closed> {
        if let Some(entry) = self.watches.get_mut(&watch_id) {
            if entry.tick_pending {
                entry.tick_pending = false;
                self.send(self.response(watch_id, revision)).await?;
            }
        }
        let Some(all) = &mut self.progress_all else { return Ok(()) };
        if !all.waiting.contains(&watch_id) {
            return Ok(());
        }
        if revision >= all.target {
            all.waiting.remove(&watch_id);
            return self.finish_progress_all().await;
        }
        // An answer to an older request: ask again for one that covers the target.
        if let Some(entry) = self.watches.get(&watch_id) {
            let _ = entry.control.try_send(());
        }
        Ok(())
    }

    /// A progress request: answered (watch ID -1) once every watch has delivered all events
    /// up to the revision current now.
    async fn request_progress_all(&mut self) -> Result<(), Closed> {
        if let Some(all) = &mut self.progress_all {
            all.requests += 1;
            return Ok(());
        }
        let target = self.current_revision().await;
        for entry in self.watches.values() {
            let _ = entry.control.try_send(());
        }
        let waiting = self.watches.keys().copied().collect();
        self.progress_all = Some(ProgressAll { target, waiting, requests: 1 });
        self.finish_progress_all().await
    }

    /// Sends the stream-wide progress responses when no watch is outstanding any more.
    async fn finish_progress_all(&mut self) -> Result<(), Closed> {
        let done = self.progress_all.as_ref().is_some_and(|a| a.waiting.is_empty());
        if !done {
            return Ok(());
        }
        let Some(all) = self.progress_all.take() else { return Ok(()) };
        for _ in 0..all.requests {
            self.send(self.response(STREAM_WATCH_ID, all.target)).await?;
        }
        Ok(())
    }

    /// A watch went away: it no longer holds up a pending progress request.
    async fn forget_progress(&mut self, watch_id: i64) -> Result<(), Closed> {
        if let Some(all) = &mut self.progress_all {
            all.waiting.remove(&watch_id);
        }
        self.finish_progress_all().await
    }

    /// Periodic progress notification: idle watches created with `progress_notify` get an
    /// empty response with their own ID once their watcher confirms it is up to date.
    async fn on_tick(&mut self) {
        for entry in self.watches.values_mut().filter(|e| e.progress_notify) {
            if !entry.had_events && !entry.tick_pending {
                entry.tick_pending = true;
                let _ = entry.control.try_send(());
            }
            entry.had_events = false;
        }
    }
}

/// A parsed create request.
struct Create {
    watch_id: i64,
    key: Vec<u8>,
    range_end: Vec<u8>,
    start_revision: Revision,
    prev_kv: bool,
    filter_put: bool,
    filter_delete: bool,
    progress_notify: bool,
    fragment: bool,
}

/// Moves one store watcher's messages into its session; ends (dropping the watcher, which
/// cancels it in the store) when the session drops the control sender.
async fn forward(
    mut watcher: Watcher,
    watch_id: i64,
    serial: u64,
    to_session: mpsc::Sender<Forwarded>,
    mut control: mpsc::Receiver<()>,
) {
    loop {
        tokio::select! {
            msg = watcher.recv() => {
                let ended = msg.is_none();
                if to_session.send(Forwarded { serial, watch_id, msg }).await.is_err() || ended {
                    return;
                }
            }
            ctl = control.recv() => match ctl {
                Some(()) => watcher.request_progress(),
                None => return,
            },
        }
    }
}

/// Splits an events response into parts under `limit` bytes, every part but the last marked
/// `fragment`, as etcd does for clients that set `fragment`. A single event is never split.
fn fragments(resp: PbWatchResponse, limit: usize) -> Vec<PbWatchResponse> {
    if resp.events.len() < 2 || resp.encoded_len() < limit {
        return vec![resp];
    }
    let mut template = resp.clone();
    template.events.clear();
    let base = template.encoded_len();
    let mut parts = Vec::new();
    let mut current = template.clone();
    let mut size = base;
    for ev in resp.events {
        // Each event costs its length plus a tag and a length prefix (at most 1 + 10 bytes).
        let cost = ev.encoded_len() + 11;
        if !current.events.is_empty() && size + cost >= limit {
            let full = std::mem::replace(&mut current, template.clone());
            parts.push(full);
            size = base;
        }
        size += cost;
        current.events.push(ev);
    }
    parts.push(current);
    let last = parts.len() - 1;
    for (i, part) in parts.iter_mut().enumerate() {
        part.fragment = i != last;
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_client::proto::{PbEvent, PbKeyValue};

    fn event(size: usize) -> PbEvent {
        PbEvent {
            r#type: 0,
            kv: Some(PbKeyValue {
                key: b"k".to_vec(),
                value: vec![b'x'; size],
                ..Default::default()
            }),
            prev_kv: None,
        }
    }

    #[test]
    fn large_responses_are_fragmented_under_the_limit() {
        let resp = PbWatchResponse {
            watch_id: 3,
            events: (0..10).map(|_| event(100)).collect(),
            ..Default::default()
        };
        let parts = fragments(resp, 350);
        assert!(parts.len() > 1);
        assert_eq!(parts.iter().map(|p| p.events.len()).sum::<usize>(), 10);
        for (i, p) in parts.iter().enumerate() {
            assert!(p.encoded_len() < 350 || p.events.len() == 1);
            assert_eq!(p.fragment, i + 1 != parts.len());
            assert_eq!(p.watch_id, 3);
        }
    }

    #[test]
    fn small_responses_and_single_events_are_not_fragmented() {
        let small = PbWatchResponse { events: vec![event(10), event(10)], ..Default::default() };
        assert_eq!(fragments(small, 1000).len(), 1);
        let one_big = PbWatchResponse { events: vec![event(5000)], ..Default::default() };
        let parts = fragments(one_big, 100);
        assert_eq!(parts.len(), 1);
        assert!(!parts[0].fragment);
    }
}
