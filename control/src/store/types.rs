//! The store's request and response types: the etcd v3 data model in plain Rust, independent of
//! gRPC so that the API server and both backends share one vocabulary. Field meanings are
//! etcd's (see `etcdserverpb/rpc.proto`); every response carries the store revision at which it
//! was served (`revision`), which the gRPC front puts into the response header.

use tokio::sync::mpsc;

/// A store revision: the global, monotonically increasing write counter.
pub type Revision = i64;

/// A lease ID. `0` means "no lease".
pub type LeaseId = i64;

/// One key with its value and MVCC metadata, as etcd's `mvccpb.KeyValue`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Vec<u8>,
    /// Revision of the write that created this key (since its last deletion).
    pub create_revision: Revision,
    /// Revision of the last write to this key.
    pub mod_revision: Revision,
    /// Number of writes since creation; 1 right after creation.
    pub version: i64,
    pub value: Vec<u8>,
    pub lease: LeaseId,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SortOrder {
    #[default]
    None,
    Ascend,
    Descend,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SortTarget {
    #[default]
    Key,
    Version,
    Create,
    Mod,
    Value,
}

/// etcd `RangeRequest`.
///
/// Which keys it covers follows etcd's `range_end` rules (also for deletes, compares and
/// watches): empty = the single `key`; `[0]` = every key `>= key`; otherwise `[key, range_end)`.
/// (`key = [0], range_end = [0]` is the whole keyspace.)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeRequest {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    /// Maximum number of keys returned; 0 = no limit.
    pub limit: i64,
    /// Read at this historic revision; 0 = the current one.
    pub revision: Revision,
    pub sort_order: SortOrder,
    pub sort_target: SortTarget,
    pub keys_only: bool,
    pub count_only: bool,
    /// Filters; 0 = no filter.
    pub min_mod_revision: Revision,
    pub max_mod_revision: Revision,
    pub min_create_revision: Revision,
    pub max_create_revision: Revision,
}

/// etcd `RangeResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeResponse {
    pub revision: Revision,
    pub kvs: Vec<KeyValue>,
    /// True when `limit` cut the result short.
    pub more: bool,
    /// Number of keys in the range (before `limit`).
    pub count: i64,
}

/// etcd `PutRequest`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutRequest {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub lease: LeaseId,
    pub prev_kv: bool,
    pub ignore_value: bool,
    pub ignore_lease: bool,
}

/// etcd `PutResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutResponse {
    pub revision: Revision,
    pub prev_kv: Option<KeyValue>,
}

/// etcd `DeleteRangeRequest`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteRangeRequest {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    pub prev_kv: bool,
}

/// etcd `DeleteRangeResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteRangeResponse {
    pub revision: Revision,
    pub deleted: i64,
    pub prev_kvs: Vec<KeyValue>,
}

/// What a `Compare` looks at, with the value to compare against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompareTarget {
    Version(i64),
    Create(Revision),
    Mod(Revision),
    Value(Vec<u8>),
    Lease(LeaseId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Greater,
    Less,
}

/// etcd `Compare`: holds for every key in the range (a missing key has version, create and mod
/// revision 0 and no value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    pub target: CompareTarget,
    pub op: CompareOp,
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestOp {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
}

/// The result of one transaction operation; the `revision` fields inside are the txn's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseOp {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
}

/// etcd `TxnRequest`: if every compare holds, run `success`, else `failure`; atomically, and all
/// writes of one txn share one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TxnRequest {
    pub compare: Vec<Compare>,
    pub success: Vec<RequestOp>,
    pub failure: Vec<RequestOp>,
}

/// etcd `TxnResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TxnResponse {
    pub revision: Revision,
    pub succeeded: bool,
    pub responses: Vec<ResponseOp>,
}

/// etcd `WatchCreateRequest`, less the stream-level parts (watch IDs, fragmenting, periodic
/// progress), which the gRPC front owns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchRequest {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    /// Replay history from this revision, then go live; 0 = from the next write on.
    pub start_revision: Revision,
    pub prev_kv: bool,
    pub filter_put: bool,
    pub filter_delete: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// etcd `mvccpb.Event`. For a delete, `kv` has the key, `mod_revision` = the delete's revision and
/// everything else zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
    pub prev_kv: Option<KeyValue>,
}

/// What a watcher receives, in revision order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchMessage {
    /// Events of one or more consecutive revisions; `revision` is the store revision when sent
    /// (at least the last event's mod revision).
    Events { revision: Revision, events: Vec<Event> },
    /// Every event up to `revision` has been delivered (answer to `Watcher::request_progress`).
    Progress { revision: Revision },
    /// The start revision is below the compaction point; the watch is over.
    Compacted { compact_revision: Revision },
}

/// A live watch. Dropping it cancels the watch.
#[derive(Debug)]
pub struct Watcher {
    /// Messages in order; `None` once the backend ended the watch.
    pub messages: mpsc::Receiver<WatchMessage>,
    progress: mpsc::Sender<()>,
}

/// The backend's end of a `Watcher`.
#[derive(Debug)]
pub struct WatcherSink {
    pub messages: mpsc::Sender<WatchMessage>,
    /// A `()` arrives for each `Watcher::request_progress` call.
    pub progress_requests: mpsc::Receiver<()>,
}

impl Watcher {
    /// A connected watcher/sink pair whose message buffer holds `capacity` messages.
    pub fn channel(capacity: usize) -> (Watcher, WatcherSink) {
        let (msg_tx, msg_rx) = mpsc::channel(capacity);
        let (prog_tx, prog_rx) = mpsc::channel(4);
        (
            Watcher { messages: msg_rx, progress: prog_tx },
            WatcherSink { messages: msg_tx, progress_requests: prog_rx },
        )
    }

    /// Ask for a `WatchMessage::Progress` once everything up to the current revision is sent.
    pub fn request_progress(&self) {
        // A full queue already has a request pending, which answers this one too.
        let _ = self.progress.try_send(());
    }

    /// The next message, or `None` when the watch has ended.
    pub async fn recv(&mut self) -> Option<WatchMessage> {
        self.messages.recv().await
    }
}

/// Lease grant result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseGrant {
    pub revision: Revision,
    pub id: LeaseId,
    pub ttl: i64,
}

/// Lease keep-alive result: the lease's TTL after the refresh.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseKeepAlive {
    pub revision: Revision,
    pub id: LeaseId,
    pub ttl: i64,
}

/// etcd `LeaseTimeToLiveResponse`; `ttl` is -1 when the lease has expired or never existed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseTimeToLive {
    pub revision: Revision,
    pub id: LeaseId,
    pub ttl: i64,
    pub granted_ttl: i64,
    pub keys: Vec<Vec<u8>>,
}

/// etcd `LeaseLeasesResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseList {
    pub revision: Revision,
    pub ids: Vec<LeaseId>,
}

/// What `Maintenance.Status` reports about the data, without the cluster fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStatus {
    pub revision: Revision,
    pub compact_revision: Revision,
    /// Bytes the backend occupies on disk (file + WAL for SQLite).
    pub db_size: i64,
    /// Bytes actually in use (without free pages).
    pub db_size_in_use: i64,
    /// Version string reported as etcd's `version`.
    pub version: String,
}

/// etcd `HashKVResponse`: a hash over every key revision up to `hash_revision`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HashKv {
    pub revision: Revision,
    pub hash: u32,
    pub compact_revision: Revision,
    pub hash_revision: Revision,
}
