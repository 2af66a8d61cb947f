//! WATCH: a chunked stream of `{"type","object"}` lines, served from the watch cache.
//!
//! Start points, as in the reference: no resourceVersion or `0` sends the current objects as
//! ADDED first; `resourceVersion=N` replays the events after N (an ERROR event with a 410
//! `Expired` Status when N is older than the cache's window); `sendInitialEvents=true` with
//! `resourceVersionMatch=NotOlderThan` (watch-list) sends the state, then a BOOKMARK annotated
//! `k8s.io/initial-events-end`. Selectors turn modifications into ADDED/DELETED when an object
//! enters or leaves the selection. Bookmarks (`allowWatchBookmarks`) go out periodically.
//! A client that prefers protobuf gets `application/vnd.kubernetes.protobuf;stream=watch`:
//! the same events as length-delimited `WatchEvent` frames ([`super::protobuf::watch_frame`]).

use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use super::body;
use super::list::{store_revision, Filter};
use super::request::Output;
use super::resource::ResourceInfo;
use super::server::{ApiServer, Call, Reply};
use super::status::{ApiError, ApiResult};
use super::table::{self, TableOptions};
use super::watch_cache::{
    prefix_end, CacheEvent, CacheMessage, CachedObject, EventType, Subscription,
};
use super::{meta, protobuf, rest, strategy};
use crate::store::{EventKind, WatchMessage, WatchRequest};

/// The default watch lifetime (the reference's minimum request timeout).
const DEFAULT_TIMEOUT: i64 = 1800;
/// How often a watch that allows bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(15);
/// How long a watch waits for the cache to reach its start revision.
const CACHE_WAIT: Duration = Duration::from_secs(3);

/// How events are written.
struct Encoder {
    info: std::sync::Arc<ResourceInfo>,
    output: Output,
    table: TableOptions,
}

impl Encoder {
    /// The response's content type.
    fn content_type(&self) -> &'static str {
        match self.output {
            Output::Protobuf => protobuf::WATCH_CONTENT_TYPE,
            _ => "application/json",
        }
    }

    fn line(&self, kind: &str, object: Value) -> Bytes {
        if self.output == Output::Protobuf {
            return self.frame(kind, &object);
        }
        let mut line =
            serde_json::to_vec(&json!({ "type": kind, "object": object })).unwrap_or_default();
        line.push(b'\n');
        Bytes::from(line)
    }

    /// A protobuf frame. Objects of kinds with a protobuf form always fit it once validated;
    /// one that does not becomes an ERROR event (a 500 Status), which makes a client re-list
    /// rather than miss the event silently.
    fn frame(&self, kind: &str, object: &Value) -> Bytes {
        self.framed(protobuf::watch_frame(kind, object))
    }

    fn framed(&self, frame: Result<Vec<u8>, String>) -> Bytes {
        match frame {
            Ok(frame) => Bytes::from(frame),
            Err(err) => {
                tracing::warn!(resource = %self.info.plural, "protobuf watch event: {err}");
                let status = ApiError::internal(format!("encoding a watch event: {err}"));
                Bytes::from(protobuf::watch_frame("ERROR", &status.to_status()).unwrap_or_default())
            }
        }
    }

    fn event(&self, kind: EventType, object: &CachedObject) -> Bytes {
        let as_stored = || object.is_as(&self.info.api_version(), &self.info.kind);
        if self.output == Output::Protobuf && as_stored() {
            // The object's protobuf body, encoded once for every protobuf watcher (made on
            // first use, so watches in JSON never pay for it); only the frame is per watcher.
            if let Some(body) = object.protobuf() {
                return self.framed(protobuf::watch_frame_of(kind.as_str(), body));
            }
        }
        if self.output == Output::Json && as_stored() {
            // The shared encoding, spliced in: no per-watcher serialisation.
            let json = object.json();
            let mut line = Vec::with_capacity(json.len() + 32);
            line.extend_from_slice(b"{\"type\":\"");
            line.extend_from_slice(kind.as_str().as_bytes());
            line.extend_from_slice(b"\",\"object\":");
            line.extend_from_slice(json);
            line.extend_from_slice(b"}\n");
            return Bytes::from(line);
        }
        let mut object = Value::clone(object);
        strategy::present(&self.info, &mut object);
        if self.output == Output::Table {
            object = table::to_table(&self.info, std::slice::from_ref(&object), &self.table);
        }
        self.line(kind.as_str(), object)
    }

    fn bookmark(&self, revision: i64, initial_end: bool) -> Bytes {
        let mut metadata = json!({ "resourceVersion": revision.to_string() });
        if initial_end {
            metadata["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
        }
        let object = json!({
            "kind": self.info.kind,
            "apiVersion": self.info.api_version(),
            "metadata": metadata,
        });
        self.line("BOOKMARK", object)
    }
}

/// The event a watcher with `filter` sees for a cache event, if any.
fn translate<'a>(event: &'a CacheEvent, filter: &Filter) -> Option<(EventType, &'a CachedObject)> {
    if !event.key.starts_with(&filter.key_prefix) {
        return None;
    }
    let now = filter.matches(&event.object);
    let before = event.prev.as_deref().is_some_and(|p| filter.matches(p));
    match event.kind {
        EventType::Added => now.then_some((EventType::Added, &*event.object)),
        EventType::Deleted => now.then_some((EventType::Deleted, &*event.object)),
        EventType::Modified => match (before, now) {
            (true, true) => Some((EventType::Modified, &*event.object)),
            (false, true) => Some((EventType::Added, &*event.object)),
            (true, false) => Some((EventType::Deleted, &*event.object)),
            (false, false) => None,
        },
    }
}

/// `GET …?watch=true`.
pub(crate) async fn watch(server: &ApiServer, call: Call) -> ApiResult<Reply> {
    let filter = Filter::of(&call)?;
    let rv = call.query.get("resourceVersion").unwrap_or("").to_string();
    let parsed_rv = meta::parse_resource_version(Some(&rv)).map_err(ApiError::bad_request)?;
    let rv_match = call.query.get("resourceVersionMatch").unwrap_or("");
    let send_initial = match call.query.get("sendInitialEvents") {
        None | Some("") => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(v) => {
            return Err(ApiError::bad_request(format!("sendInitialEvents: invalid value {v:?}")))
        }
    };
    let bookmarks = call.query.flag("allowWatchBookmarks");
    if send_initial.is_some() {
        if rv_match != "NotOlderThan" {
            return Err(ApiError::bad_request("sendInitialEvents: Forbidden: sendInitialEvents is forbidden for watch unless resourceVersionMatch is set to NotOlderThan"));
        }
        if !bookmarks {
            return Err(ApiError::bad_request("allowWatchBookmarks: Required value: allowWatchBookmarks must be set to true when sendInitialEvents is provided"));
        }
    } else if !rv_match.is_empty() {
        return Err(ApiError::bad_request("resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"));
    }
    let timeout = call.query.int("timeoutSeconds")?.filter(|t| *t > 0).unwrap_or(DEFAULT_TIMEOUT);
    let encoder = Encoder {
        info: call.info.clone(),
        // Protobuf only for kinds that have it (the request's negotiation made sure).
        output: call.output,
        table: rest::table_options(&call),
    };
    let content_type = encoder.content_type();
    let cache = server.inner.caches.get(&server.inner.store, &call.info.storage_prefix);

    // Where the stream starts, and the revision the cache must have reached first.
    let (from, wait_for) = match (send_initial, parsed_rv) {
        (Some(true), None) => (None, store_revision(server).await?),
        (Some(true), Some(n)) => (None, n),
        (Some(false), Some(n)) if n > 0 => (Some(n), 0),
        (_, None | Some(0)) => (None, 0),
        (_, Some(n)) => (Some(n), 0),
    };
    if !cache.wait_for(wait_for, CACHE_WAIT).await {
        return Err(ApiError::timeout(format!(
            "Too large resource version: {wait_for}, current: {}",
            cache.revision()
        )));
    }
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let subscription = match cache.subscribe(from) {
        Ok(s) => s,
        Err(oldest) => {
            // Older than the cache's window (e.g. after a restart): replay from the store,
            // which still has the history unless it was compacted.
            let from = from.unwrap_or(0);
            let server = server.clone();
            tokio::spawn(async move {
                let _counted = server.inner.metrics.watcher();
                let run = from_store(&server, from, oldest, &filter, &encoder, &tx);
                let _ = tokio::time::timeout(Duration::from_secs(timeout as u64), run).await;
            });
            return Ok(body::stream_response(rx, content_type).into());
        }
    };
    let initial_end = send_initial == Some(true);
    let skip_through = from.unwrap_or(0);
    let server = server.clone();
    tokio::spawn(async move {
        let _counted = server.inner.metrics.watcher();
        let run = pump(
            subscription,
            &filter,
            &encoder,
            &tx,
            skip_through,
            bookmarks,
            initial_end,
            &cache,
        );
        // The stream simply ends at the timeout, as the reference's does.
        let _ = tokio::time::timeout(Duration::from_secs(timeout as u64), run).await;
    });
    Ok(body::stream_response(rx, content_type).into())
}

#[allow(clippy::too_many_arguments)]
async fn pump(
    subscription: Subscription,
    filter: &Filter,
    encoder: &Encoder,
    tx: &mpsc::Sender<Bytes>,
    skip_through: i64,
    bookmarks: bool,
    initial_end: bool,
    cache: &super::watch_cache::WatchCache,
) {
    let Subscription { backlog, mut live, revision } = subscription;
    let mut last = skip_through.max(0);
    for event in &backlog {
        if let Some((kind, obj)) = translate(event, filter) {
            if tx.send(encoder.event(kind, obj)).await.is_err() {
                return;
            }
        }
        last = last.max(event.revision);
    }
    if initial_end {
        let at = revision.max(last);
        if tx.send(encoder.bookmark(at, true)).await.is_err() {
            return;
        }
    }
    let mut ticker = tokio::time::interval(BOOKMARK_EVERY);
    ticker.tick().await;
    loop {
        tokio::select! {
            message = live.recv() => match message {
                Ok(CacheMessage::Event(event)) => {
                    if event.revision <= skip_through {
                        continue;
                    }
                    last = last.max(event.revision);
                    if let Some((kind, obj)) = translate(&event, filter) {
                        if tx.send(encoder.event(kind, obj)).await.is_err() {
                            return;
                        }
                    }
                }
                // Too slow, or the cache started over: end; the client re-watches from its RV.
                Ok(CacheMessage::Reset) | Err(broadcast::error::RecvError::Lagged(_)) => return,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = ticker.tick(), if bookmarks => {
                // The cache revision is safe to promise only if every event up to it has been
                // taken from the feed (events are broadcast before the revision moves).
                let cached = cache.revision();
                let at = if live.is_empty() { cached.max(last) } else { last };
                if tx.send(encoder.bookmark(at, false)).await.is_err() {
                    return;
                }
            }
            _ = tx.closed() => return,
        }
    }
}

/// A watch served straight from a store watch (for start points older than the cache's window).
async fn from_store(
    server: &ApiServer,
    from: i64,
    oldest: i64,
    filter: &Filter,
    encoder: &Encoder,
    tx: &mpsc::Sender<Bytes>,
) {
    let gone = || {
        let status = ApiError::gone(format!("too old resource version: {from} ({oldest})"));
        encoder.line("ERROR", status.to_status())
    };
    let request = WatchRequest {
        key: filter.key_prefix.as_bytes().to_vec(),
        range_end: prefix_end(&filter.key_prefix),
        start_revision: from + 1,
        prev_kv: true,
        ..Default::default()
    };
    let mut watcher = match server.inner.store.watch(request).await {
        Ok(w) => w,
        Err(_) => {
            let _ = tx.send(gone()).await;
            return;
        }
    };
    loop {
        tokio::select! {
            message = watcher.recv() => match message {
                Some(WatchMessage::Events { events, .. }) => {
                    for event in events {
                        let Some(cache_event) = cache_event(event) else { continue };
                        if let Some((kind, obj)) = translate(&cache_event, filter) {
                            if tx.send(encoder.event(kind, obj)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                Some(WatchMessage::Progress { .. }) => {}
                Some(WatchMessage::Compacted { .. }) => {
                    let _ = tx.send(gone()).await;
                    return;
                }
                None => return,
            },
            _ = tx.closed() => return,
        }
    }
}

/// A store event as a cache event (the previous state comes from `prev_kv`).
fn cache_event(event: crate::store::Event) -> Option<CacheEvent> {
    let key = String::from_utf8(event.kv.key.clone()).ok()?;
    let prev = event.prev_kv.as_ref().and_then(meta::decode).map(CachedObject::new);
    let revision = event.kv.mod_revision;
    match event.kind {
        EventKind::Put => {
            let object = CachedObject::new(meta::decode(&event.kv)?);
            let kind = if prev.is_some() { EventType::Modified } else { EventType::Added };
            Some(CacheEvent { kind, revision, key, object, prev })
        }
        EventKind::Delete => {
            let mut last = Value::clone(prev.as_deref()?);
            meta::set_resource_version(&mut last, revision);
            Some(CacheEvent {
                kind: EventType::Deleted,
                revision,
                key,
                object: CachedObject::new(last),
                prev,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use serde_json::json;

    use super::*;
    use crate::apiserver::resource::Registry;

    fn encoder(output: Output) -> Encoder {
        let info = Registry::builtin().resolve("", "v1", "pods").expect("pods are served");
        Encoder { info, output, table: TableOptions::default() }
    }

    fn encodings() -> usize {
        protobuf::ENCODED.with(Cell::get)
    }

    #[test]
    fn protobuf_watchers_share_one_encoding_of_each_object() {
        let pod = CachedObject::new(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default", "resourceVersion": "5"},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}
        }));
        let (a, b) = (encoder(Output::Protobuf), encoder(Output::Protobuf));
        let before = encodings();
        let first = a.event(EventType::Added, &pod);
        let second = b.event(EventType::Added, &pod);
        // Another watcher's selector may turn the same change into another event type: the
        // object's body is still the shared one.
        let third = b.event(EventType::Deleted, &pod);
        assert_eq!(encodings() - before, 1, "one encoding for three frames");
        assert_eq!(first, second, "two watchers get byte-identical frames");
        let body = pod.protobuf().expect("pods have a protobuf form");
        assert!(first.windows(body.len()).any(|w| w == body.as_ref()));
        assert_eq!(encodings() - before, 1);

        // What a client reads back is the pod, once per frame.
        let stream = [first.as_ref(), third.as_ref()].concat();
        let events = protobuf::decode_watch_stream(&stream).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!((events[0].0.as_str(), events[1].0.as_str()), ("ADDED", "DELETED"));
        assert_eq!(events[0].1["metadata"]["name"], "web");
        assert_eq!(events[1].1["spec"]["containers"][0]["image"], "nginx");
    }

    #[test]
    fn json_watchers_never_encode_protobuf() {
        let pod = CachedObject::new(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default", "resourceVersion": "5"}
        }));
        let before = encodings();
        let line = encoder(Output::Json).event(EventType::Added, &pod);
        let event: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(event["object"]["metadata"]["name"], "web");
        assert_eq!(encodings(), before, "a JSON watch made a protobuf encoding");
    }

    #[test]
    fn objects_stored_as_another_version_are_encoded_per_watcher() {
        // A core Event read through events.k8s.io is re-labelled for that version first, so
        // the stored object's encoding is not what this watcher sends.
        let registry = Registry::builtin();
        let info = registry.resolve("events.k8s.io", "v1", "events").expect("events are served");
        let watcher = Encoder { info, output: Output::Protobuf, table: TableOptions::default() };
        let event = CachedObject::new(json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "default", "resourceVersion": "3"},
            "reason": "Started"
        }));
        let frame = watcher.event(EventType::Added, &event);
        let events = protobuf::decode_watch_stream(&frame).unwrap();
        assert_eq!(events[0].1["apiVersion"], "events.k8s.io/v1");
        assert_eq!(events[0].1["kind"], "Event");
    }
}
