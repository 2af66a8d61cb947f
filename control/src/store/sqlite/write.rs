//! The writer thread: the one owner of the write connection.
//!
//! Writes from every caller queue on a channel. The writer takes whatever has queued up
//! (up to `max_batch_ops`), applies each request inside its own savepoint of ONE SQLite
//! transaction, commits it (one fsync for the whole batch: group commit), then publishes the
//! batch's events to the watch hub and only then answers the callers. A request that fails rolls
//! back its savepoint and gives its revision back; the others in the batch are unaffected.
//!
//! Revisions are assigned here and only here, so they are dense and ordered exactly as the
//! events the hub sees.

use std::fs::File;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::oneshot;

use super::read::{self, db, KeyRange};
use super::Shared;
use crate::store::{
    Compare, CompareOp, CompareTarget, DeleteRangeRequest, DeleteRangeResponse, Event, EventKind,
    KeyValue, LeaseGrant, LeaseId, PutRequest, PutResponse, RequestOp, ResponseOp, Result,
    Revision, StoreError, TxnRequest, TxnResponse,
};

/// etcd's largest lease TTL, in seconds.
const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// A write request for the writer thread.
#[derive(Debug)]
pub(crate) enum WriteOp {
    Put(PutRequest),
    Delete(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(Revision),
    LeaseGrant { id: LeaseId, ttl: i64 },
    LeaseRevoke(LeaseId),
    Defragment,
}

/// What a `WriteOp` produced.
#[derive(Debug)]
pub(crate) enum WriteOutcome {
    Put(PutResponse),
    Delete(DeleteRangeResponse),
    Txn(TxnResponse),
    /// The store revision after a compaction or revoke.
    Revision(Revision),
    LeaseGrant(LeaseGrant),
    Done,
}

/// One queued write and where to send its result.
#[derive(Debug)]
pub(crate) struct WriteJob {
    pub(crate) op: WriteOp,
    pub(crate) reply: oneshot::Sender<Result<WriteOutcome>>,
}

/// A lease change to mirror into the in-memory lease clocks after commit.
enum LeaseChange {
    Granted(LeaseId, i64),
    Revoked(LeaseId),
}

/// The effects of one request while it is being applied.
struct Pending {
    /// The revision this request's writes get (the store revision + 1).
    rev: Revision,
    /// Position of the next write within the revision.
    sub: i64,
    changed: bool,
    events: Vec<Event>,
    leases: Vec<LeaseChange>,
}

/// The writer thread's state.
pub(crate) struct Writer {
    conn: Connection,
    /// The exclusive lock on the database; declared after `conn` so it is released last.
    _lock: File,
    shared: Arc<Shared>,
    rev: Revision,
    compact: Revision,
    rng: u64,
}

impl Writer {
    /// A writer over `conn`, whose committed revision and compaction point are given.
    pub(crate) fn new(
        conn: Connection,
        lock: File,
        shared: Arc<Shared>,
        rev: Revision,
        compact: Revision,
    ) -> Self {
        let seed = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let rng = seed ^ (u64::from(std::process::id()) << 32) | 1;
        Writer { conn, _lock: lock, shared, rev, compact, rng }
    }

    /// Serves jobs until every sender is gone; checkpoints the WAL every `checkpoint_interval`.
    pub(crate) fn run(mut self, jobs: Receiver<WriteJob>) {
        let idle = self.shared.options.checkpoint_interval;
        let mut last_checkpoint = Instant::now();
        loop {
            let first = match jobs.recv_timeout(idle) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => {
                    self.checkpoint_busy();
                    last_checkpoint = Instant::now();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            if matches!(first.op, WriteOp::Defragment) {
                let result = self.defragment();
                let _ = first.reply.send(result.map(|()| WriteOutcome::Done));
                continue;
            }
            let mut batch = vec![first];
            let mut defrag = None;
            while batch.len() < self.shared.options.max_batch_ops {
                match jobs.try_recv() {
                    Ok(job) if matches!(job.op, WriteOp::Defragment) => {
                        defrag = Some(job);
                        break;
                    }
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            self.run_batch(batch);
            if let Some(job) = defrag {
                let result = self.defragment();
                let _ = job.reply.send(result.map(|()| WriteOutcome::Done));
            }
            // A busy store never goes idle; keep the WAL bounded anyway.
            if last_checkpoint.elapsed() >= idle {
                self.checkpoint_busy();
                last_checkpoint = Instant::now();
            }
        }
        self.checkpoint();
        self.shared.hub.close();
    }

    /// Applies a batch in one transaction, commits, publishes, answers.
    fn run_batch(&mut self, batch: Vec<WriteJob>) {
        let (start_rev, start_compact) = (self.rev, self.compact);
        if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            let msg = format!("sqlite begin: {e}");
            for job in batch {
                let _ = job.reply.send(Err(StoreError::Unavailable(msg.clone())));
            }
            return;
        }
        let mut results = Vec::with_capacity(batch.len());
        let mut events = Vec::new();
        let mut leases = Vec::new();
        for job in &batch {
            results.push(self.apply_one(&job.op, &mut events, &mut leases));
        }
        let committed = self.finish_batch();
        if let Err(e) = committed {
            let _ = self.conn.execute_batch("ROLLBACK");
            self.rev = start_rev;
            self.compact = start_compact;
            let msg = e.to_string();
            for job in batch {
                let _ = job.reply.send(Err(StoreError::Unavailable(msg.clone())));
            }
            return;
        }
        for change in leases {
            match change {
                LeaseChange::Granted(id, ttl) => self.shared.leases.granted(id, ttl),
                LeaseChange::Revoked(id) => self.shared.leases.revoked(id),
            }
        }
        self.shared.hub.publish(&events, self.rev, self.compact);
        for (job, result) in batch.into_iter().zip(results) {
            let _ = job.reply.send(result);
        }
    }

    /// Records the revision and compaction point, then commits (the fsync).
    fn finish_batch(&mut self) -> Result<()> {
        self.conn
            .prepare_cached("UPDATE meta SET value = ?2 WHERE name = ?1")
            .and_then(|mut s| {
                s.execute(params!["rev", self.rev])?;
                s.execute(params!["compact", self.compact])
            })
            .map_err(db("updating meta"))?;
        self.conn.execute_batch("COMMIT").map_err(db("commit"))
    }

    /// Applies one request inside a savepoint; on error nothing of it remains.
    fn apply_one(
        &mut self,
        op: &WriteOp,
        events: &mut Vec<Event>,
        leases: &mut Vec<LeaseChange>,
    ) -> Result<WriteOutcome> {
        self.conn.execute_batch("SAVEPOINT op").map_err(db("savepoint"))?;
        let mut p = Pending {
            rev: self.rev + 1,
            sub: 0,
            changed: false,
            events: Vec::new(),
            leases: Vec::new(),
        };
        match self.apply(op, &mut p) {
            Ok(mut outcome) => {
                self.conn.execute_batch("RELEASE op").map_err(db("release savepoint"))?;
                if p.changed {
                    self.rev = p.rev;
                }
                set_revision(&mut outcome, self.rev);
                events.append(&mut p.events);
                leases.append(&mut p.leases);
                Ok(outcome)
            }
            Err(e) => {
                self.conn
                    .execute_batch("ROLLBACK TO op; RELEASE op")
                    .map_err(db("rollback savepoint"))?;
                Err(e)
            }
        }
    }

    fn apply(&mut self, op: &WriteOp, p: &mut Pending) -> Result<WriteOutcome> {
        match op {
            WriteOp::Put(req) => self.put(p, req).map(WriteOutcome::Put),
            WriteOp::Delete(req) => self.delete(p, req).map(WriteOutcome::Delete),
            WriteOp::Txn(req) => {
                let mut path = Vec::new();
                self.compare_path(req, &mut path)?;
                path.reverse();
                self.txn(p, req, &mut path).map(WriteOutcome::Txn)
            }
            WriteOp::Compact(rev) => self.compact(*rev).map(WriteOutcome::Revision),
            WriteOp::LeaseGrant { id, ttl } => {
                self.lease_grant(p, *id, *ttl).map(WriteOutcome::LeaseGrant)
            }
            WriteOp::LeaseRevoke(id) => {
                self.lease_revoke(p, *id).map(|()| WriteOutcome::Revision(0))
            }
            WriteOp::Defragment => Err(StoreError::Backend("defragment inside a batch".into())),
        }
    }

    fn put(&mut self, p: &mut Pending, req: &PutRequest) -> Result<PutResponse> {
        let prev = read::get_current(&self.conn, &req.key)?;
        if (req.ignore_value || req.ignore_lease) && prev.is_none() {
            return Err(StoreError::KeyNotFound);
        }
        let value = match (&prev, req.ignore_value) {
            (Some(prev), true) => prev.value.clone(),
            _ => req.value.clone(),
        };
        let lease = match (&prev, req.ignore_lease) {
            (Some(prev), true) => prev.lease,
            _ => req.lease,
        };
        if lease != 0 && !self.lease_exists(lease)? {
            return Err(StoreError::LeaseNotFound(lease));
        }
        let (create_revision, version) = match &prev {
            Some(prev) => (prev.create_revision, prev.version + 1),
            None => (p.rev, 1),
        };
        let kv = KeyValue {
            key: req.key.clone(),
            create_revision,
            mod_revision: p.rev,
            version,
            value,
            lease,
        };
        let log_id = self.insert_log(p, &kv, false)?;
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO current (key, log_id, create_rev, mod_rev, version, lease) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut s| {
                s.execute(params![kv.key, log_id, create_revision, p.rev, version, lease])
            })
            .map_err(db("put"))?;
        p.events.push(Event { kind: EventKind::Put, kv, prev_kv: prev.clone() });
        Ok(PutResponse { revision: p.rev, prev_kv: if req.prev_kv { prev } else { None } })
    }

    /// Appends a row to the log at the pending revision; returns its id.
    fn insert_log(&mut self, p: &mut Pending, kv: &KeyValue, deleted: bool) -> Result<i64> {
        self.conn
            .prepare_cached(
                "INSERT INTO log (key, rev, sub, create_rev, version, lease, deleted, value) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    kv.key,
                    p.rev,
                    p.sub,
                    kv.create_revision,
                    kv.version,
                    kv.lease,
                    deleted,
                    kv.value
                ])
            })
            .map_err(db("appending to log"))?;
        p.sub += 1;
        p.changed = true;
        Ok(self.conn.last_insert_rowid())
    }

    fn delete(&mut self, p: &mut Pending, req: &DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        let range = KeyRange::new(&req.key, &req.range_end);
        let kvs = match &range {
            KeyRange::Single(key) => read::get_current(&self.conn, key)?.into_iter().collect(),
            _ => read::current_kvs(&self.conn, &range)?,
        };
        for kv in &kvs {
            self.tombstone(p, kv)?;
        }
        Ok(DeleteRangeResponse {
            revision: 0,
            deleted: kvs.len() as i64,
            prev_kvs: if req.prev_kv { kvs } else { Vec::new() },
        })
    }

    /// Deletes one live key at the pending revision.
    fn tombstone(&mut self, p: &mut Pending, prev: &KeyValue) -> Result<()> {
        let kv = KeyValue { key: prev.key.clone(), mod_revision: p.rev, ..Default::default() };
        self.insert_log(p, &kv, true)?;
        self.conn
            .prepare_cached("DELETE FROM current WHERE key = ?1")
            .and_then(|mut s| s.execute([&prev.key]))
            .map_err(db("delete"))?;
        p.events.push(Event { kind: EventKind::Delete, kv, prev_kv: Some(prev.clone()) });
        Ok(())
    }

    /// Evaluates every compare of `req` and of the nested txns on the chosen branches against
    /// the state before the txn (as etcd's `compareToPath` does), in depth-first order.
    fn compare_path(&self, req: &TxnRequest, path: &mut Vec<bool>) -> Result<()> {
        let mut ok = true;
        for c in &req.compare {
            if !self.compare(c)? {
                ok = false;
                break;
            }
        }
        path.push(ok);
        for op in if ok { &req.success } else { &req.failure } {
            if let RequestOp::Txn(t) = op {
                self.compare_path(t, path)?;
            }
        }
        Ok(())
    }

    fn compare(&self, c: &Compare) -> Result<bool> {
        let range = KeyRange::new(&c.key, &c.range_end);
        let kvs = match &range {
            KeyRange::Single(key) => read::get_current(&self.conn, key)?.into_iter().collect(),
            _ => read::current_kvs(&self.conn, &range)?,
        };
        if kvs.is_empty() {
            // As in etcd: a value compare on a missing key always fails; the others compare
            // against zero.
            return Ok(
                !matches!(c.target, CompareTarget::Value(_)) && compare_kv(c, &KeyValue::default())
            );
        }
        Ok(kvs.iter().all(|kv| compare_kv(c, kv)))
    }

    /// Runs the branch `path` chose (path is reversed: the next decision is last).
    fn txn(
        &mut self,
        p: &mut Pending,
        req: &TxnRequest,
        path: &mut Vec<bool>,
    ) -> Result<TxnResponse> {
        let succeeded = path.pop().unwrap_or(false);
        let ops = if succeeded { &req.success } else { &req.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            responses.push(match op {
                RequestOp::Range(r) => {
                    let current = if p.changed { p.rev } else { self.rev };
                    ResponseOp::Range(read::range(&self.conn, r, current, self.compact)?)
                }
                RequestOp::Put(r) => ResponseOp::Put(self.put(p, r)?),
                RequestOp::DeleteRange(r) => ResponseOp::DeleteRange(self.delete(p, r)?),
                RequestOp::Txn(t) => ResponseOp::Txn(self.txn(p, t, path)?),
            });
        }
        Ok(TxnResponse { revision: 0, succeeded, responses })
    }

    fn lease_exists(&self, id: LeaseId) -> Result<bool> {
        self.conn
            .prepare_cached("SELECT 1 FROM leases WHERE id = ?1")
            .and_then(|mut s| s.query_row([id], |_| Ok(())).optional())
            .map(|r| r.is_some())
            .map_err(db("lease lookup"))
    }

    fn lease_grant(&mut self, p: &mut Pending, id: LeaseId, ttl: i64) -> Result<LeaseGrant> {
        if ttl > MAX_LEASE_TTL {
            return Err(StoreError::LeaseTtlTooLarge);
        }
        let ttl = ttl.max(self.shared.options.min_lease_ttl);
        let id = if id == 0 { self.fresh_lease_id()? } else { id };
        if self.lease_exists(id)? {
            return Err(StoreError::LeaseExists(id));
        }
        self.conn
            .execute("INSERT INTO leases (id, ttl) VALUES (?1, ?2)", params![id, ttl])
            .map_err(db("lease grant"))?;
        p.leases.push(LeaseChange::Granted(id, ttl));
        Ok(LeaseGrant { revision: 0, id, ttl })
    }

    /// A random positive lease id not in use.
    fn fresh_lease_id(&mut self) -> Result<LeaseId> {
        loop {
            // xorshift64: ids only need to be unlikely to collide, not unpredictable.
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            let id = (self.rng >> 1) as i64;
            if id != 0 && !self.lease_exists(id)? {
                return Ok(id);
            }
        }
    }

    fn lease_revoke(&mut self, p: &mut Pending, id: LeaseId) -> Result<()> {
        if !self.lease_exists(id)? {
            return Err(StoreError::LeaseNotFound(id));
        }
        for key in read::lease_keys(&self.conn, id)? {
            if let Some(kv) = read::get_current(&self.conn, &key)? {
                self.tombstone(p, &kv)?;
            }
        }
        self.conn.execute("DELETE FROM leases WHERE id = ?1", [id]).map_err(db("lease revoke"))?;
        p.leases.push(LeaseChange::Revoked(id));
        Ok(())
    }

    /// Drops every key revision that no read at or above `rev` can see.
    fn compact(&mut self, rev: Revision) -> Result<Revision> {
        if rev <= self.compact {
            return Err(StoreError::Compacted { compact_revision: self.compact });
        }
        if rev > self.rev {
            return Err(StoreError::FutureRevision);
        }
        self.conn
            .execute(
                "DELETE FROM log WHERE rev < ?1 AND EXISTS (SELECT 1 FROM log n \
                 WHERE n.key = log.key AND n.rev > log.rev AND n.rev <= ?1)",
                [rev],
            )
            .and_then(|_| {
                self.conn.execute("DELETE FROM log WHERE rev < ?1 AND deleted = 1", [rev])
            })
            .map_err(db("compaction"))?;
        self.compact = rev;
        Ok(self.rev)
    }

    /// Rewrites the database file without free pages, then empties the WAL.
    fn defragment(&mut self) -> Result<()> {
        self.conn.execute_batch("VACUUM").map_err(db("vacuum"))?;
        self.checkpoint();
        Ok(())
    }

    /// Copies the WAL into the database and truncates it (best effort: readers may hold it);
    /// after a defragment and at shutdown only, as regrowing the file costs every commit a
    /// filesystem-journal flush until it is back to size.
    fn checkpoint(&mut self) {
        self.checkpoint_mode("TRUNCATE");
    }

    /// Copies the WAL back and restarts it from its beginning even if readers never pause
    /// (SQLite's automatic checkpoints can starve then), but keeps the file's size, so later
    /// commits overwrite it in place rather than grow it (the WAL stays bounded by
    /// `wal_autocheckpoint` and `journal_size_limit`).
    fn checkpoint_busy(&mut self) {
        self.checkpoint_mode("RESTART");
    }

    fn checkpoint_mode(&mut self, mode: &str) {
        let sql = format!("PRAGMA wal_checkpoint({mode})");
        let r = self.conn.query_row(&sql, [], |_| Ok(()));
        if let Err(e) = r {
            tracing::warn!(error = %e, mode, "store: WAL checkpoint failed");
        }
    }
}

/// etcd's `compareKV`: the key's field against the compare's value.
fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    let ord = match &c.target {
        CompareTarget::Version(v) => kv.version.cmp(v),
        CompareTarget::Create(r) => kv.create_revision.cmp(r),
        CompareTarget::Mod(r) => kv.mod_revision.cmp(r),
        CompareTarget::Value(v) => kv.value.as_slice().cmp(v.as_slice()),
        CompareTarget::Lease(l) => kv.lease.cmp(l),
    };
    match c.op {
        CompareOp::Equal => ord.is_eq(),
        CompareOp::NotEqual => ord.is_ne(),
        CompareOp::Greater => ord.is_gt(),
        CompareOp::Less => ord.is_lt(),
    }
}

/// Stamps the store revision after a request into its response (and nested responses).
fn set_revision(outcome: &mut WriteOutcome, rev: Revision) {
    fn txn(t: &mut TxnResponse, rev: Revision) {
        t.revision = rev;
        for r in &mut t.responses {
            match r {
                ResponseOp::Range(x) => x.revision = rev,
                ResponseOp::Put(x) => x.revision = rev,
                ResponseOp::DeleteRange(x) => x.revision = rev,
                ResponseOp::Txn(x) => txn(x, rev),
            }
        }
    }
    match outcome {
        WriteOutcome::Put(x) => x.revision = rev,
        WriteOutcome::Delete(x) => x.revision = rev,
        WriteOutcome::Txn(x) => txn(x, rev),
        WriteOutcome::Revision(x) => *x = rev,
        WriteOutcome::LeaseGrant(x) => x.revision = rev,
        WriteOutcome::Done => {}
    }
}
