//! The SQLite schema and connection setup.
//!
//! - `log`: the MVCC history, one row per key revision (`deleted` marks a tombstone); `sub`
//!   orders the writes of one revision (a txn). Indexed by `(key, rev)` for historic reads and
//!   by `(rev, sub)` for watch replay and compaction.
//! - `current`: the live keys with their metadata and the id of their latest `log` row, so a
//!   current read is one index range plus a rowid lookup per key.
//! - `meta`: the store revision (`rev`) and compaction point (`compact`).
//! - `leases`: granted leases and their TTL (expiry deadlines live in memory and restart
//!   with a full TTL, as etcd's do after a leader change).

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};

use super::read::db;
use crate::store::{Result, StoreError};

/// Takes the exclusive lock on `<path>.lock` that makes the caller the file's only writer:
/// revisions are assigned in the writer's memory, so two writers would hand out the same ones.
/// The kernel drops the lock when the holder exits, even on SIGKILL. Waits up to `wait` for a
/// previous owner (e.g. a store still shutting down).
pub(crate) fn lock_exclusive(path: &Path, wait: Duration) -> Result<File> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| StoreError::Backend(format!("opening {}: {e}", path.display())))?;
    let deadline = Instant::now() + wait;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(TryLockError::WouldBlock) => {
                return Err(StoreError::Unavailable(format!(
                    "{} is in use by another store",
                    path.display()
                )))
            }
            Err(TryLockError::Error(e)) => {
                return Err(StoreError::Backend(format!("locking {}: {e}", path.display())))
            }
        }
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS log (
    id INTEGER PRIMARY KEY,
    key BLOB NOT NULL,
    rev INTEGER NOT NULL,
    sub INTEGER NOT NULL,
    create_rev INTEGER NOT NULL,
    version INTEGER NOT NULL,
    lease INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    value BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS log_key_rev ON log (key, rev);
CREATE INDEX IF NOT EXISTS log_rev ON log (rev, sub);
CREATE TABLE IF NOT EXISTS current (
    key BLOB PRIMARY KEY,
    log_id INTEGER NOT NULL,
    create_rev INTEGER NOT NULL,
    mod_rev INTEGER NOT NULL,
    version INTEGER NOT NULL,
    lease INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS current_lease ON current (lease) WHERE lease != 0;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (name, value) VALUES ('rev', 1), ('compact', 0);
CREATE TABLE IF NOT EXISTS leases (id INTEGER PRIMARY KEY, ttl INTEGER NOT NULL);
";

/// Opens the write connection, creating the schema: WAL with `synchronous=FULL`, so a commit
/// is on disk (WAL fsynced) before it returns; the WAL is checkpointed every ~4 MiB and its
/// file truncated back to at most 64 MiB afterwards.
pub(crate) fn open_writer(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path).map_err(db("opening database"))?;
    conn.busy_timeout(Duration::from_secs(10)).map_err(db("setting busy timeout"))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA wal_autocheckpoint = 1000;
         PRAGMA journal_size_limit = 67108864;
         PRAGMA foreign_keys = OFF;",
    )
    .map_err(db("configuring database"))?;
    // Revision 1 is the empty store, as in etcd, so the first write gets revision 2.
    conn.execute_batch(SCHEMA).map_err(db("creating schema"))?;
    keep_plans(&conn)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Opens a read-only connection for the read pool.
pub(crate) fn open_reader(path: &Path) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(db("opening reader"))?;
    conn.busy_timeout(Duration::from_secs(10)).map_err(db("setting busy timeout"))?;
    keep_plans(&conn)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Turns on the query planner stability guarantee: a cached statement keeps its plan whatever
/// its parameters. Without it SQLite (3.47+) re-prepares a statement on every execution whose
/// `LIMIT ?` parameter is bound anew (the planner may use the value), and every range read
/// binds one: re-parsing the SQL was a fifth of the server's CPU during creates. The store's
/// statements are index lookups and ranges whose best plan does not depend on the values.
fn keep_plans(conn: &Connection) -> Result<()> {
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map_err(db("enabling the query planner stability guarantee"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use rusqlite::StatementStatus;

    use super::*;

    #[test]
    fn a_cached_range_keeps_its_plan_whatever_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        drop(open_writer(&path).unwrap());
        let conn = open_reader(&path).unwrap();
        let sql = "SELECT key FROM current WHERE key >= ?1 ORDER BY key LIMIT ?2";
        for limit in [-1, 500, 1, -1] {
            let mut stmt = conn.prepare_cached(sql).unwrap();
            let mut rows = stmt.query(rusqlite::params![b"/registry/".to_vec(), limit]).unwrap();
            while rows.next().unwrap().is_some() {}
        }
        let stmt = conn.prepare_cached(sql).unwrap();
        assert_eq!(stmt.get_status(StatementStatus::RePrepare), 0, "re-prepared on every bind");
    }
}
