//! The SQLite backend: the whole store in one SQLite file, with etcd v3 semantics.
//!
//! - Writes go to ONE writer thread ([`write`]) that owns the write connection and commits
//!   whatever has queued up in one transaction (group commit, `synchronous=FULL` in WAL mode), so
//!   a write is on disk before its future resolves, and revisions are assigned in one place.
//! - Reads run on a small pool of read-only connections ([`read`]) on tokio's blocking threads,
//!   each inside a read transaction (a consistent snapshot at one revision).
//! - Watches are fed by the writer after each commit through the [`watch`] hub; a watcher that
//!   starts in the past or falls behind replays from the database.
//! - A maintenance thread revokes expired leases ([`lease`]) and compacts old history
//!   automatically ([`AutoCompaction`]).

mod lease;
mod read;
mod schema;
mod validate;
mod watch;
mod write;

use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::Connection;
use tokio::sync::oneshot;

use self::lease::LeaseClocks;
use self::read::db;
use self::watch::Hub;
use self::write::{WriteJob, WriteOp, WriteOutcome, Writer};
use super::{
    DeleteRangeRequest, DeleteRangeResponse, HashKv, LeaseGrant, LeaseId, LeaseKeepAlive,
    LeaseList, LeaseTimeToLive, PutRequest, PutResponse, RangeRequest, RangeResponse, Result,
    Revision, Store, StoreError, StoreStatus, TxnRequest, TxnResponse, WatchRequest, Watcher,
};

/// How old history is discarded automatically.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoCompaction {
    /// Never; only explicit `compact` calls.
    Disabled,
    /// Like the Kubernetes apiserver: every `interval`, compact to the revision the store had
    /// one interval earlier (so at least `interval` of history is always kept).
    Periodic { interval: Duration },
    /// Every `interval`, keep only the last `retain` revisions.
    Revisions { retain: i64, interval: Duration },
}

/// Tunables of a [`SqliteStore`]; `Default` gives etcd-like limits.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Largest request (keys + values) accepted, like etcd's `--max-request-bytes`.
    pub max_request_bytes: usize,
    /// Most operations per txn level, like etcd's `--max-txn-ops`.
    pub max_txn_ops: usize,
    /// Most requests committed in one SQLite transaction.
    pub max_batch_ops: usize,
    /// Idle read-only connections kept open.
    pub read_connections: usize,
    /// Automatic compaction of old history.
    pub auto_compaction: AutoCompaction,
    /// How often the WAL is checkpointed and truncated.
    pub checkpoint_interval: Duration,
    /// Shortest lease TTL granted, in seconds (etcd's is 2 s with default timings).
    pub min_lease_ttl: i64,
    /// How often expired leases are looked for.
    pub lease_check_interval: Duration,
    /// Messages buffered per watcher before it falls back to replaying from the database.
    pub watch_buffer: usize,
    /// How long `open` waits for another store to release the file before giving up.
    pub lock_timeout: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            max_request_bytes: 1536 * 1024,
            max_txn_ops: 128,
            max_batch_ops: 1024,
            read_connections: 8,
            auto_compaction: AutoCompaction::Periodic { interval: Duration::from_secs(300) },
            checkpoint_interval: Duration::from_secs(10),
            min_lease_ttl: 2,
            lease_check_interval: Duration::from_millis(250),
            watch_buffer: 256,
            lock_timeout: Duration::from_secs(10),
        }
    }
}

/// State shared by the store handle, the writer, the watch tasks and the maintenance thread.
pub(crate) struct Shared {
    options: SqliteOptions,
    path: PathBuf,
    readers: Mutex<Vec<Connection>>,
    hub: Hub,
    leases: LeaseClocks,
}

impl Shared {
    /// Runs `f` on a pooled read-only connection inside a read transaction, off the executor.
    async fn read<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let shared = self.clone();
        tokio::task::spawn_blocking(move || shared.read_blocking(f))
            .await
            .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))?
    }

    fn read_blocking<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let pooled = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => schema::open_reader(&self.path)?,
        };
        let result = {
            let tx = conn.transaction().map_err(db("begin read"))?;
            f(&tx)
        };
        let mut idle = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.options.read_connections {
            idle.push(conn);
        }
        result
    }
}

struct Inner {
    jobs: std_mpsc::Sender<WriteJob>,
    shared: Arc<Shared>,
}

/// The SQLite-backed store. Cheap to clone; the writer stops when the last clone is dropped.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.inner.shared.path).finish()
    }
}

impl SqliteStore {
    /// Opens (or creates) the store in the SQLite file at `path` and starts its writer and
    /// maintenance threads.
    pub fn open(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let lock = schema::lock_exclusive(&path, options.lock_timeout)?;
        let conn = schema::open_writer(&path)?;
        let (rev, compact) = read::read_meta(&conn)?;
        let leases = LeaseClocks::default();
        {
            let mut stmt = conn.prepare("SELECT id, ttl FROM leases").map_err(db("leases"))?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
                .map_err(db("leases"))?;
            for row in rows {
                let (id, ttl) = row.map_err(db("leases"))?;
                leases.granted(id, ttl);
            }
        }
        let shared = Arc::new(Shared {
            options,
            path,
            readers: Mutex::new(Vec::new()),
            hub: Hub::new(rev, compact),
            leases,
        });
        let (jobs, queue) = std_mpsc::channel();
        let writer = Writer::new(conn, lock, shared.clone(), rev, compact);
        std::thread::Builder::new()
            .name("skerry-store-writer".into())
            .spawn(move || writer.run(queue))
            .map_err(|e| StoreError::Backend(format!("starting the writer thread: {e}")))?;
        let inner = Arc::new(Inner { jobs, shared });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("skerry-store-maint".into())
            .spawn(move || maintain(weak, rev))
            .map_err(|e| StoreError::Backend(format!("starting the maintenance thread: {e}")))?;
        Ok(SqliteStore { inner })
    }

    /// Queues a write and waits for its commit.
    async fn write(&self, op: WriteOp) -> Result<WriteOutcome> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .jobs
            .send(WriteJob { op, reply })
            .map_err(|_| StoreError::Unavailable("the store writer has stopped".into()))?;
        rx.await.map_err(|_| StoreError::Unavailable("the store writer has stopped".into()))?
    }

    fn check_size(&self, size: usize) -> Result<()> {
        if size > self.inner.shared.options.max_request_bytes {
            return Err(StoreError::RequestTooLarge);
        }
        Ok(())
    }
}

/// An unexpected outcome from the writer (a bug, reported rather than panicking).
fn mismatch(what: &str) -> StoreError {
    StoreError::Backend(format!("store writer answered {what} with the wrong outcome"))
}

/// The maintenance thread: lease expiry and automatic compaction, until the store is dropped.
fn maintain(store: Weak<Inner>, start_rev: Revision) {
    let mut last_compaction = Instant::now();
    let mut previous_rev = start_rev;
    loop {
        let Some(inner) = store.upgrade() else { return };
        let tick = inner.shared.options.lease_check_interval;
        for id in inner.shared.leases.take_expired() {
            match submit_blocking(&inner, WriteOp::LeaseRevoke(id)) {
                Ok(_) | Err(StoreError::LeaseNotFound(_)) => {}
                Err(e) => {
                    tracing::warn!(lease = id, error = %e, "store: revoking an expired lease failed");
                    inner.shared.leases.revoke_failed(id);
                }
            }
        }
        let interval = match inner.shared.options.auto_compaction {
            AutoCompaction::Disabled => None,
            AutoCompaction::Periodic { interval } | AutoCompaction::Revisions { interval, .. } => {
                Some(interval)
            }
        };
        if interval.is_some_and(|i| last_compaction.elapsed() >= i) {
            last_compaction = Instant::now();
            let current = inner.shared.read_blocking(read::read_meta);
            if let Ok((rev, compact)) = current {
                let target = match inner.shared.options.auto_compaction {
                    AutoCompaction::Revisions { retain, .. } => rev - retain.max(1),
                    _ => previous_rev,
                };
                previous_rev = rev;
                if target > compact {
                    match submit_blocking(&inner, WriteOp::Compact(target)) {
                        Ok(_) => tracing::debug!(revision = target, "store: auto-compacted"),
                        Err(e) => tracing::warn!(error = %e, "store: auto-compaction failed"),
                    }
                }
            }
        }
        drop(inner);
        std::thread::sleep(tick);
    }
}

/// Queues a write from a plain thread and waits for it.
fn submit_blocking(inner: &Inner, op: WriteOp) -> Result<WriteOutcome> {
    let (reply, rx) = oneshot::channel();
    inner
        .jobs
        .send(WriteJob { op, reply })
        .map_err(|_| StoreError::Unavailable("the store writer has stopped".into()))?;
    rx.blocking_recv()
        .map_err(|_| StoreError::Unavailable("the store writer has stopped".into()))?
}

#[async_trait]
impl Store for SqliteStore {
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        validate::check_range(&req)?;
        self.inner
            .shared
            .read(move |conn| {
                let (rev, compact) = read::read_meta(conn)?;
                read::range(conn, &req, rev, compact)
            })
            .await
    }

    async fn put(&self, req: PutRequest) -> Result<PutResponse> {
        validate::check_put(&req)?;
        self.check_size(validate::put_size(&req))?;
        match self.write(WriteOp::Put(req)).await? {
            WriteOutcome::Put(r) => Ok(r),
            _ => Err(mismatch("put")),
        }
    }

    async fn delete_range(&self, req: DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        validate::check_delete(&req)?;
        match self.write(WriteOp::Delete(req)).await? {
            WriteOutcome::Delete(r) => Ok(r),
            _ => Err(mismatch("delete")),
        }
    }

    async fn txn(&self, req: TxnRequest) -> Result<TxnResponse> {
        validate::check_txn(&req, self.inner.shared.options.max_txn_ops)?;
        self.check_size(validate::txn_size(&req))?;
        match self.write(WriteOp::Txn(req)).await? {
            WriteOutcome::Txn(r) => Ok(r),
            _ => Err(mismatch("txn")),
        }
    }

    async fn compact(&self, revision: Revision) -> Result<Revision> {
        match self.write(WriteOp::Compact(revision)).await? {
            WriteOutcome::Revision(r) => Ok(r),
            _ => Err(mismatch("compact")),
        }
    }

    async fn watch(&self, req: WatchRequest) -> Result<Watcher> {
        let (watcher, sink) = Watcher::channel(self.inner.shared.options.watch_buffer.max(1));
        watch::start(&self.inner.shared, &req, sink.messages, sink.progress_requests);
        Ok(watcher)
    }

    async fn lease_grant(&self, id: LeaseId, ttl: i64) -> Result<LeaseGrant> {
        match self.write(WriteOp::LeaseGrant { id, ttl }).await? {
            WriteOutcome::LeaseGrant(r) => Ok(r),
            _ => Err(mismatch("lease grant")),
        }
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<Revision> {
        match self.write(WriteOp::LeaseRevoke(id)).await? {
            WriteOutcome::Revision(r) => Ok(r),
            _ => Err(mismatch("lease revoke")),
        }
    }

    async fn lease_keep_alive(&self, id: LeaseId) -> Result<LeaseKeepAlive> {
        let ttl = self.inner.shared.leases.keep_alive(id).ok_or(StoreError::LeaseNotFound(id))?;
        let revision = self.inner.shared.read(|c| Ok(read::read_meta(c)?.0)).await?;
        Ok(LeaseKeepAlive { revision, id, ttl })
    }

    async fn lease_time_to_live(&self, id: LeaseId, keys: bool) -> Result<LeaseTimeToLive> {
        let clock = self.inner.shared.leases.remaining(id);
        let (revision, attached) = self
            .inner
            .shared
            .read(move |c| {
                let rev = read::read_meta(c)?.0;
                let attached = match (keys, clock) {
                    (true, Some(_)) => read::lease_keys(c, id)?,
                    _ => Vec::new(),
                };
                Ok((rev, attached))
            })
            .await?;
        Ok(match clock {
            Some((ttl, granted_ttl)) => {
                LeaseTimeToLive { revision, id, ttl, granted_ttl, keys: attached }
            }
            None => LeaseTimeToLive { revision, id, ttl: -1, granted_ttl: 0, keys: Vec::new() },
        })
    }

    async fn lease_leases(&self) -> Result<LeaseList> {
        let revision = self.inner.shared.read(|c| Ok(read::read_meta(c)?.0)).await?;
        Ok(LeaseList { revision, ids: self.inner.shared.leases.ids() })
    }

    async fn status(&self) -> Result<StoreStatus> {
        let path = self.inner.shared.path.clone();
        self.inner
            .shared
            .read(move |c| {
                let (revision, compact_revision) = read::read_meta(c)?;
                let pragma = |name: &str| -> Result<i64> {
                    c.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0)).map_err(db("pragma"))
                };
                let page_size = pragma("page_size")?;
                let in_use = (pragma("page_count")? - pragma("freelist_count")?) * page_size;
                let file_len = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len() as i64);
                let mut wal = path.clone().into_os_string();
                wal.push("-wal");
                let db_size = file_len(&path) + file_len(Path::new(&wal));
                Ok(StoreStatus {
                    revision,
                    compact_revision,
                    db_size,
                    db_size_in_use: in_use,
                    version: ETCD_VERSION.to_string(),
                })
            })
            .await
    }

    async fn defragment(&self) -> Result<()> {
        match self.write(WriteOp::Defragment).await? {
            WriteOutcome::Done => Ok(()),
            _ => Err(mismatch("defragment")),
        }
    }

    async fn hash_kv(&self, revision: Revision) -> Result<HashKv> {
        self.inner
            .shared
            .read(move |c| {
                let (rev, compact) = read::read_meta(c)?;
                let at = if revision <= 0 { rev } else { revision };
                if at > rev {
                    return Err(StoreError::FutureRevision);
                }
                if at < compact {
                    return Err(StoreError::Compacted { compact_revision: compact });
                }
                let hash = read::hash_kv(c, at)?;
                Ok(HashKv { revision: rev, hash, compact_revision: compact, hash_revision: at })
            })
            .await
    }
}

/// The etcd server version this backend reports (the v3 API level it implements). A Kubernetes
/// apiserver uses watch progress requests only from etcd 3.5.13 on, and this backend answers them.
const ETCD_VERSION: &str = "3.5.16";
