//! Read paths over one SQLite connection: ranges (current and historic), single-key lookups,
//! the event history that watches replay, and the key-revision hash.
//!
//! Every function takes a plain `&Connection` so that the same code serves the read-only pool
//! (inside a read transaction, for a consistent snapshot) and the writer (inside its write
//! transaction, where a txn must see its own earlier writes).

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};

use crate::store::{
    Event, EventKind, KeyValue, RangeRequest, RangeResponse, Result, Revision, SortOrder,
    SortTarget, StoreError,
};

/// Maps a SQLite error to a `StoreError::Backend` that says which operation failed.
pub(crate) fn db(ctx: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| StoreError::Backend(format!("sqlite {ctx}: {e}"))
}

/// The keys a request covers, after etcd's `range_end` rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyRange {
    /// Empty `range_end`: exactly this key.
    Single(Vec<u8>),
    /// `range_end = [0]`: every key `>=` this one.
    From(Vec<u8>),
    /// `[start, end)`; empty when `end <= start`.
    Between(Vec<u8>, Vec<u8>),
}

impl KeyRange {
    /// The range of `key`/`range_end` as etcd reads them.
    pub(crate) fn new(key: &[u8], range_end: &[u8]) -> Self {
        if range_end.is_empty() {
            KeyRange::Single(key.to_vec())
        } else if range_end == [0] {
            KeyRange::From(key.to_vec())
        } else {
            KeyRange::Between(key.to_vec(), range_end.to_vec())
        }
    }

    /// Whether `k` lies in the range.
    pub(crate) fn contains(&self, k: &[u8]) -> bool {
        match self {
            KeyRange::Single(key) => k == key.as_slice(),
            KeyRange::From(start) => k >= start.as_slice(),
            KeyRange::Between(start, end) => k >= start.as_slice() && k < end.as_slice(),
        }
    }

    /// A SQL condition on column `col`, appending its parameters to `params`.
    fn sql(&self, col: &str, params: &mut Vec<Value>) -> String {
        match self {
            KeyRange::Single(key) => {
                params.push(Value::Blob(key.clone()));
                format!("{col} = ?{}", params.len())
            }
            KeyRange::From(start) => {
                params.push(Value::Blob(start.clone()));
                format!("{col} >= ?{}", params.len())
            }
            KeyRange::Between(start, end) => {
                params.push(Value::Blob(start.clone()));
                params.push(Value::Blob(end.clone()));
                format!("{col} >= ?{} AND {col} < ?{}", params.len() - 1, params.len())
            }
        }
    }
}

/// The store's revision and compaction point as committed in the meta table.
pub(crate) fn read_meta(conn: &Connection) -> Result<(Revision, Revision)> {
    conn.prepare_cached(
        "SELECT (SELECT value FROM meta WHERE name = 'rev'), \
         (SELECT value FROM meta WHERE name = 'compact')",
    )
    .and_then(|mut s| s.query_row([], |r| Ok((r.get(0)?, r.get(1)?))))
    .map_err(db("reading meta"))
}

/// A `KeyValue` from columns (key, create_rev, mod_rev, version, lease, value).
fn kv_from_row(row: &Row<'_>) -> rusqlite::Result<KeyValue> {
    Ok(KeyValue {
        key: row.get(0)?,
        create_revision: row.get(1)?,
        mod_revision: row.get(2)?,
        version: row.get(3)?,
        lease: row.get(4)?,
        value: row.get(5)?,
    })
}

/// A join yielding, as `l`, the latest log row at or before `at` of every key in `range`
/// (tombstones included). The grouping runs on the `(key, rev)` index alone, so only the
/// winning rows are read from the table.
fn latest_at(range: &KeyRange, at: Revision, params: &mut Vec<Value>) -> String {
    let cond = range.sql("key", params);
    params.push(Value::Integer(at));
    format!(
        "(SELECT key AS k, max(rev) AS r FROM log WHERE {cond} AND rev <= ?{} GROUP BY key) m \
         JOIN log l ON l.key = m.k AND l.rev = m.r",
        params.len()
    )
}

/// Keys in `range` as of revision `at` (`historic` when `at` is not the current revision),
/// ordered by key, at most `limit` of them.
fn select_kvs(
    conn: &Connection,
    range: &KeyRange,
    at: Revision,
    historic: bool,
    values: bool,
    limit: Option<i64>,
) -> Result<Vec<KeyValue>> {
    let mut params = Vec::new();
    let sql = if historic {
        let latest = latest_at(range, at, &mut params);
        format!(
            "SELECT l.key, l.create_rev, l.rev, l.version, l.lease, {value} FROM {latest} \
             WHERE l.deleted = 0 ORDER BY l.key",
            value = if values { "l.value" } else { "X''" },
        )
    } else {
        let cond = range.sql("c.key", &mut params);
        if values {
            format!(
                "SELECT c.key, c.create_rev, c.mod_rev, c.version, c.lease, l.value \
                 FROM current c JOIN log l ON l.id = c.log_id WHERE {cond} ORDER BY c.key"
            )
        } else {
            format!(
                "SELECT c.key, c.create_rev, c.mod_rev, c.version, c.lease, X'' \
                 FROM current c WHERE {cond} ORDER BY c.key"
            )
        }
    };
    // A bound parameter (-1 = no limit) keeps one cached statement per query shape.
    params.push(Value::Integer(limit.unwrap_or(-1)));
    let sql = format!("{sql} LIMIT ?{}", params.len());
    let mut stmt = conn.prepare_cached(&sql).map_err(db("preparing range"))?;
    let rows = stmt.query_map(params_from_iter(params), kv_from_row).map_err(db("range"))?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db("range"))
}

/// Number of keys in `range` as of revision `at`.
fn count_keys(conn: &Connection, range: &KeyRange, at: Revision, historic: bool) -> Result<i64> {
    let mut params = Vec::new();
    let sql = if historic {
        let latest = latest_at(range, at, &mut params);
        format!("SELECT count(*) FROM {latest} WHERE l.deleted = 0")
    } else {
        let cond = range.sql("key", &mut params);
        format!("SELECT count(*) FROM current WHERE {cond}")
    };
    let mut stmt = conn.prepare_cached(&sql).map_err(db("preparing count"))?;
    stmt.query_row(params_from_iter(params), |r| r.get(0)).map_err(db("count"))
}

/// Serves a range request against a store at revision `current` compacted at `compact`.
pub(crate) fn range(
    conn: &Connection,
    req: &RangeRequest,
    current: Revision,
    compact: Revision,
) -> Result<RangeResponse> {
    let at = if req.revision <= 0 { current } else { req.revision };
    if at > current {
        return Err(StoreError::FutureRevision);
    }
    if at < compact {
        return Err(StoreError::Compacted { compact_revision: compact });
    }
    let historic = at < current;
    let range = KeyRange::new(&req.key, &req.range_end);
    if req.count_only {
        let count = count_keys(conn, &range, at, historic)?;
        return Ok(RangeResponse { revision: current, kvs: Vec::new(), more: false, count });
    }
    // Like etcd, a non-key sort target without an order sorts ascending.
    let order = match (req.sort_order, req.sort_target) {
        (SortOrder::None, SortTarget::Key) => SortOrder::None,
        (SortOrder::None, _) => SortOrder::Ascend,
        (order, _) => order,
    };
    let key_ordered = order == SortOrder::None
        || (order == SortOrder::Ascend && req.sort_target == SortTarget::Key);
    let filtered = req.min_mod_revision > 0
        || req.max_mod_revision > 0
        || req.min_create_revision > 0
        || req.max_create_revision > 0;
    // Only a key-ordered, unfiltered read can stop early; fetch one extra row to learn `more`.
    let sql_limit = (key_ordered && !filtered && req.limit > 0).then_some(req.limit + 1);
    let values = !req.keys_only || req.sort_target == SortTarget::Value;
    let mut kvs = select_kvs(conn, &range, at, historic, values, sql_limit)?;
    let fetched = kvs.len() as i64;
    let count = match sql_limit {
        Some(n) if fetched >= n => count_keys(conn, &range, at, historic)?,
        _ => fetched,
    };
    if filtered {
        kvs.retain(|kv| {
            (req.min_mod_revision <= 0 || kv.mod_revision >= req.min_mod_revision)
                && (req.max_mod_revision <= 0 || kv.mod_revision <= req.max_mod_revision)
                && (req.min_create_revision <= 0 || kv.create_revision >= req.min_create_revision)
                && (req.max_create_revision <= 0 || kv.create_revision <= req.max_create_revision)
        });
    }
    if !key_ordered {
        sort_kvs(&mut kvs, req.sort_target, order);
    }
    let mut more = false;
    if req.limit > 0 && kvs.len() as i64 > req.limit {
        kvs.truncate(req.limit as usize);
        more = true;
    }
    if req.keys_only {
        kvs.iter_mut().for_each(|kv| kv.value.clear());
    }
    Ok(RangeResponse { revision: current, kvs, more, count })
}

/// Sorts key-ordered `kvs` by `target` (ties stay in key order).
fn sort_kvs(kvs: &mut [KeyValue], target: SortTarget, order: SortOrder) {
    let field = |kv: &KeyValue| match target {
        SortTarget::Key => 0,
        SortTarget::Version => kv.version,
        SortTarget::Create => kv.create_revision,
        SortTarget::Mod => kv.mod_revision,
        SortTarget::Value => 0,
    };
    kvs.sort_by(|a, b| {
        let ord = match target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Value => a.value.cmp(&b.value),
            _ => field(a).cmp(&field(b)),
        };
        if order == SortOrder::Descend {
            ord.reverse()
        } else {
            ord
        }
    });
}

/// The current state of one key (with its value) and the id of its log row.
pub(crate) fn get_current(conn: &Connection, key: &[u8]) -> Result<Option<KeyValue>> {
    conn.prepare_cached(
        "SELECT c.key, c.create_rev, c.mod_rev, c.version, c.lease, l.value \
         FROM current c JOIN log l ON l.id = c.log_id WHERE c.key = ?1",
    )
    .map_err(db("preparing get"))?
    .query_row([key], kv_from_row)
    .optional()
    .map_err(db("get"))
}

/// Every live key in `range`, with values, in key order.
pub(crate) fn current_kvs(conn: &Connection, range: &KeyRange) -> Result<Vec<KeyValue>> {
    select_kvs(conn, range, 0, false, true, None)
}

/// Keys attached to lease `id`, in key order.
pub(crate) fn lease_keys(conn: &Connection, id: i64) -> Result<Vec<Vec<u8>>> {
    let mut stmt = conn
        .prepare_cached("SELECT key FROM current WHERE lease = ?1 ORDER BY key")
        .map_err(db("preparing lease keys"))?;
    let rows = stmt.query_map([id], |r| r.get(0)).map_err(db("lease keys"))?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db("lease keys"))
}

/// The events of revisions `from..=to` on keys in `range`, in revision order, with the
/// previous version of each key when `prev_kv` is set (absent when compacted away).
pub(crate) fn events(
    conn: &Connection,
    range: &KeyRange,
    from: Revision,
    to: Revision,
    prev_kv: bool,
) -> Result<Vec<Event>> {
    let mut params = vec![Value::Integer(from), Value::Integer(to)];
    let cond = range.sql("key", &mut params);
    let sql = format!(
        "SELECT key, create_rev, rev, version, lease, value, deleted FROM log \
         WHERE rev >= ?1 AND rev <= ?2 AND {cond} ORDER BY rev, sub"
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(db("preparing history"))?;
    let rows = stmt
        .query_map(params_from_iter(params), |r| Ok((kv_from_row(r)?, r.get::<_, bool>(6)?)))
        .map_err(db("history"))?;
    let mut out = Vec::new();
    for row in rows {
        let (kv, deleted) = row.map_err(db("history"))?;
        let prev = if prev_kv { previous(conn, &kv.key, kv.mod_revision)? } else { None };
        out.push(if deleted {
            Event {
                kind: EventKind::Delete,
                kv: KeyValue { key: kv.key, mod_revision: kv.mod_revision, ..Default::default() },
                prev_kv: prev,
            }
        } else {
            Event { kind: EventKind::Put, kv, prev_kv: prev }
        });
    }
    Ok(out)
}

/// The version of `key` just before revision `rev`, if it existed then.
fn previous(conn: &Connection, key: &[u8], rev: Revision) -> Result<Option<KeyValue>> {
    let row = conn
        .prepare_cached(
            "SELECT key, create_rev, rev, version, lease, value, deleted FROM log \
             WHERE key = ?1 AND rev < ?2 ORDER BY rev DESC LIMIT 1",
        )
        .map_err(db("preparing prev"))?
        .query_row(params![key, rev], |r| Ok((kv_from_row(r)?, r.get::<_, bool>(6)?)))
        .optional()
        .map_err(db("prev"))?;
    Ok(row.and_then(|(kv, deleted)| (!deleted).then_some(kv)))
}

/// CRC-32C over every key revision up to `rev`, in revision order.
pub(crate) fn hash_kv(conn: &Connection, rev: Revision) -> Result<u32> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT rev, sub, key, create_rev, version, lease, deleted, value FROM log \
             WHERE rev <= ?1 ORDER BY rev, sub",
        )
        .map_err(db("preparing hash"))?;
    let mut rows = stmt.query([rev]).map_err(db("hash"))?;
    let mut crc = Crc32c::new();
    while let Some(row) = rows.next().map_err(db("hash"))? {
        for i in [0, 1, 3, 4, 5, 6] {
            let n: i64 = row.get(i).map_err(db("hash"))?;
            crc.update(&n.to_be_bytes());
        }
        for i in [2, 7] {
            let b: Vec<u8> = row.get(i).map_err(db("hash"))?;
            crc.update(&(b.len() as u64).to_be_bytes());
            crc.update(&b);
        }
    }
    Ok(crc.finish())
}

/// CRC-32C (Castagnoli), the checksum etcd's hash uses; bitwise, as hashing is rare.
struct Crc32c(u32);

impl Crc32c {
    fn new() -> Self {
        Crc32c(!0)
    }

    fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u32::from(b);
            for _ in 0..8 {
                let mask = (self.0 & 1).wrapping_neg();
                self.0 = (self.0 >> 1) ^ (0x82F6_3B78 & mask);
            }
        }
    }

    fn finish(&self) -> u32 {
        !self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        let mut c = Crc32c::new();
        c.update(b"123456789");
        assert_eq!(c.finish(), 0xE306_9283);
    }

    #[test]
    fn key_range_follows_etcd_range_end_rules() {
        assert!(KeyRange::new(b"a", b"").contains(b"a"));
        assert!(!KeyRange::new(b"a", b"").contains(b"ab"));
        assert!(KeyRange::new(b"a", b"\0").contains(b"zzz"));
        assert!(!KeyRange::new(b"b", b"\0").contains(b"a"));
        assert!(KeyRange::new(b"a", b"c").contains(b"b"));
        assert!(!KeyRange::new(b"a", b"c").contains(b"c"));
        assert!(!KeyRange::new(b"c", b"a").contains(b"c"));
        assert!(KeyRange::new(b"\0", b"\0").contains(b"anything"));
    }
}
