//! SQLite-backend behaviour beyond the conformance suite: persistence across reopen, group
//! commit under concurrency, automatic compaction, defragmentation, slow watchers.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use skerry_control::store::sqlite::{AutoCompaction, SqliteOptions, SqliteStore};
use skerry_control::store::*;

/// Generous bound for background work, so a hang fails instead of blocking the suite.
const PATIENCE: Duration = Duration::from_secs(30);

fn open(path: &Path, options: SqliteOptions) -> Arc<dyn Store> {
    Arc::new(SqliteStore::open(path, options).unwrap())
}

async fn put(s: &Arc<dyn Store>, key: &str, value: &[u8]) -> Revision {
    s.put(PutRequest { key: key.into(), value: value.to_vec(), ..Default::default() })
        .await
        .unwrap()
        .revision
}

async fn get(s: &Arc<dyn Store>, key: &str, revision: Revision) -> Result<Option<KeyValue>> {
    let r = s.range(RangeRequest { key: key.into(), revision, ..Default::default() }).await?;
    Ok(r.kvs.into_iter().next())
}

/// Rows in the MVCC log, read straight from the file.
fn log_rows(path: &Path) -> i64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("SELECT count(*) FROM log", [], |r| r.get(0)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_revisions_leases_and_compaction_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let (rev, lease) = {
        let s = open(&path, SqliteOptions::default());
        put(&s, "a", b"1").await;
        let r2 = put(&s, "a", b"2").await;
        let lease = s.lease_grant(0, 600).await.unwrap().id;
        s.put(PutRequest { key: "l".into(), value: "v".into(), lease, ..Default::default() })
            .await
            .unwrap();
        s.compact(r2).await.unwrap();
        (revision(&s).await, lease)
    };
    let s = open(&path, SqliteOptions::default());
    let status = s.status().await.unwrap();
    assert_eq!(status.revision, rev);
    assert_eq!(status.compact_revision, rev - 1);
    let a = get(&s, "a", 0).await.unwrap().unwrap();
    assert_eq!((a.value.as_slice(), a.version), (&b"2"[..], 2));
    assert!(matches!(get(&s, "a", rev - 2).await, Err(StoreError::Compacted { .. })));
    assert_eq!(s.lease_leases().await.unwrap().ids, vec![lease]);
    assert_eq!(get(&s, "l", 0).await.unwrap().unwrap().lease, lease);
    assert_eq!(put(&s, "b", b"x").await, rev + 1, "revisions continue after reopen");
}

async fn revision(s: &Arc<dyn Store>) -> Revision {
    s.status().await.unwrap().revision
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_get_distinct_monotonic_durable_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let s = open(&path, SqliteOptions::default());
    let start = revision(&s).await;
    let (writers, per_writer) = (64, 25);
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut revs = Vec::new();
                for i in 0..per_writer {
                    revs.push((
                        format!("w{w:02}/{i:02}"),
                        put(&s, &format!("w{w:02}/{i:02}"), b"v").await,
                    ));
                }
                revs
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        let revs = tokio::time::timeout(PATIENCE, t).await.unwrap().unwrap();
        assert!(revs.windows(2).all(|p| p[0].1 < p[1].1), "one writer's revisions increase");
        all.extend(revs);
    }
    let distinct: HashSet<_> = all.iter().map(|(_, r)| *r).collect();
    assert_eq!(distinct.len(), writers * per_writer, "every write has its own revision");
    let expected: HashSet<_> = (start + 1..=start + (writers * per_writer) as i64).collect();
    assert_eq!(distinct, expected, "revisions are dense");
    drop(s);
    // Every acknowledged write is in the file, at the revision it was acknowledged with.
    let s = open(&path, SqliteOptions::default());
    for (key, rev) in &all {
        let kv = get(&s, key, 0).await.unwrap().expect("acknowledged write present");
        assert_eq!(kv.mod_revision, *rev);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_compaction_by_revisions_bounds_history() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let options = SqliteOptions {
        auto_compaction: AutoCompaction::Revisions {
            retain: 10,
            interval: Duration::from_millis(100),
        },
        ..Default::default()
    };
    let s = open(&path, options);
    let mut last = 0;
    for i in 0..200 {
        last = put(&s, "hot", format!("{i}").as_bytes()).await;
    }
    let deadline = Instant::now() + PATIENCE;
    while s.status().await.unwrap().compact_revision < last - 10 {
        assert!(Instant::now() < deadline, "auto-compaction did not run");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(matches!(get(&s, "hot", last - 50).await, Err(StoreError::Compacted { .. })));
    assert_eq!(get(&s, "hot", last - 10).await.unwrap().unwrap().mod_revision, last - 10);
    assert!(log_rows(&path) <= 12, "history is bounded: {} rows", log_rows(&path));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_auto_compaction_keeps_one_interval_of_history() {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions {
        auto_compaction: AutoCompaction::Periodic { interval: Duration::from_millis(200) },
        ..Default::default()
    };
    let s = open(&dir.path().join("store.db"), options);
    let written = put(&s, "k", b"1").await;
    put(&s, "k", b"2").await;
    // The first tick notes the revision; a later tick compacts to it.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let compact = s.status().await.unwrap().compact_revision;
        if compact >= written {
            break;
        }
        assert!(Instant::now() < deadline, "periodic compaction did not run");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(&s, "k", 0).await.unwrap().unwrap().value, b"2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defragment_shrinks_the_file_after_mass_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions { auto_compaction: AutoCompaction::Disabled, ..Default::default() };
    let s = open(&dir.path().join("store.db"), options);
    let value = vec![7u8; 4096];
    for chunk in 0..20 {
        let ops = (0..100)
            .map(|i| {
                RequestOp::Put(PutRequest {
                    key: format!("bulk/{chunk:02}/{i:03}").into(),
                    value: value.clone(),
                    ..Default::default()
                })
            })
            .collect();
        s.txn(TxnRequest { compare: vec![], success: ops, failure: vec![] }).await.unwrap();
    }
    put(&s, "keep", b"me").await;
    s.delete_range(DeleteRangeRequest {
        key: "bulk/".into(),
        range_end: "bulk0".into(),
        prev_kv: false,
    })
    .await
    .unwrap();
    s.compact(revision(&s).await).await.unwrap();
    let before = s.status().await.unwrap();
    assert!(before.db_size > 8 * 1024 * 1024, "{before:?}");
    assert!(before.db_size_in_use < before.db_size / 2, "deleted pages are free: {before:?}");
    s.defragment().await.unwrap();
    let after = s.status().await.unwrap();
    assert!(after.db_size < before.db_size / 4, "before {before:?}, after {after:?}");
    assert_eq!(get(&s, "keep", 0).await.unwrap().unwrap().value, b"me");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_watcher_does_not_block_writes_and_gets_every_event_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions { watch_buffer: 2, ..Default::default() };
    let s = open(&dir.path().join("store.db"), options);
    let mut slow = s
        .watch(WatchRequest {
            key: "w/".into(),
            range_end: "w0".into(),
            prev_kv: true,
            ..Default::default()
        })
        .await
        .unwrap();
    // Nobody reads the watcher while 300 writes go through: they must all complete.
    let mut revs = Vec::new();
    let writes = async {
        for i in 0..300 {
            revs.push(put(&s, &format!("w/{}", i % 7), format!("{i}").as_bytes()).await);
        }
    };
    tokio::time::timeout(PATIENCE, writes).await.expect("writes are not held up by the watcher");
    let mut seen = Vec::new();
    while seen.len() < revs.len() {
        match tokio::time::timeout(PATIENCE, slow.recv()).await.unwrap().unwrap() {
            WatchMessage::Events { events, .. } => seen.extend(events),
            other => panic!("unexpected {other:?}"),
        }
    }
    let seen_revs: Vec<_> = seen.iter().map(|e| e.kv.mod_revision).collect();
    assert_eq!(seen_revs, revs, "every event once, in order");
    for (i, ev) in seen.iter().enumerate() {
        assert_eq!(ev.kv.value, format!("{i}").into_bytes());
        if i >= 7 {
            assert_eq!(ev.prev_kv.as_ref().unwrap().value, format!("{}", i - 7).into_bytes());
        }
    }
    // After catching up it is live again.
    let more = put(&s, "w/x", b"live").await;
    match tokio::time::timeout(PATIENCE, slow.recv()).await.unwrap().unwrap() {
        WatchMessage::Events { events, .. } => assert_eq!(events[0].kv.mod_revision, more),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_watchers_from_many_start_points_see_the_same_history() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir.path().join("store.db"), SqliteOptions::default());
    let first = put(&s, "h/0", b"0").await;
    let mut watchers = Vec::new();
    for i in 1..40 {
        // Watchers join while writes are going on, each replaying from the first revision.
        watchers.push(
            s.watch(WatchRequest {
                key: "h/".into(),
                range_end: "h0".into(),
                start_revision: first,
                ..Default::default()
            })
            .await
            .unwrap(),
        );
        put(&s, &format!("h/{i}"), b"v").await;
    }
    let last = revision(&s).await;
    for mut w in watchers {
        let mut revs = Vec::new();
        while revs.last() != Some(&last) {
            match tokio::time::timeout(PATIENCE, w.recv()).await.unwrap().unwrap() {
                WatchMessage::Events { events, .. } => {
                    revs.extend(events.iter().map(|e| e.kv.mod_revision))
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(revs, (first..=last).collect::<Vec<_>>(), "no gap, no duplicate");
    }
}

#[tokio::test]
async fn opening_an_impossible_path_is_an_error() {
    let r = SqliteStore::open("/nonexistent-dir/sub/store.db", SqliteOptions::default());
    assert!(matches!(r, Err(StoreError::Backend(_))), "got {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_store_ends_its_watches() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir.path().join("store.db"), SqliteOptions::default());
    let mut live = s.watch(WatchRequest { key: "k".into(), ..Default::default() }).await.unwrap();
    let rev = put(&s, "k", b"v").await;
    drop(s);
    match tokio::time::timeout(PATIENCE, live.recv()).await.unwrap() {
        Some(WatchMessage::Events { events, .. }) => assert_eq!(events[0].kv.mod_revision, rev),
        other => panic!("unexpected {other:?}"),
    }
    assert!(tokio::time::timeout(PATIENCE, live.recv()).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_store_on_the_same_file_is_refused_while_the_first_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let first = open(&path, SqliteOptions::default());
    let rev = put(&first, "k", b"v").await;
    let impatient =
        SqliteOptions { lock_timeout: Duration::from_millis(100), ..Default::default() };
    let second = SqliteStore::open(&path, impatient.clone());
    assert!(matches!(second, Err(StoreError::Unavailable(_))), "got {second:?}");
    drop(first);
    // Once the first store is gone (its writer finishing in the background), the file is free.
    let s = open(&path, SqliteOptions::default());
    assert_eq!(get(&s, "k", 0).await.unwrap().unwrap().mod_revision, rev);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_watcher_whose_history_was_compacted_is_told_so() {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions { watch_buffer: 2, ..Default::default() };
    let s = open(&dir.path().join("store.db"), options);
    let mut w = s.watch(WatchRequest { key: "k".into(), ..Default::default() }).await.unwrap();
    let first = put(&s, "k", b"0").await;
    let mut last = first;
    // More revisions than one replay chunk plus the buffer, so replay must read again later.
    for i in 1..1200 {
        last = put(&s, "k", format!("{i}").as_bytes()).await;
    }
    s.compact(last).await.unwrap();
    let mut expected = first;
    loop {
        match tokio::time::timeout(PATIENCE, w.recv()).await.unwrap() {
            Some(WatchMessage::Events { events, .. }) => {
                for e in events {
                    assert_eq!(e.kv.mod_revision, expected, "in order, no gap");
                    expected += 1;
                }
            }
            Some(WatchMessage::Compacted { compact_revision }) => {
                assert_eq!(compact_revision, last);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(expected < last, "the watch ended before the compacted part");
    assert!(tokio::time::timeout(PATIENCE, w.recv()).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_switching_between_live_and_replay_under_concurrent_writes_miss_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions { watch_buffer: 1, ..Default::default() };
    let s = open(&dir.path().join("store.db"), options);
    let first = put(&s, "c/start", b"0").await;
    let (writers, per_writer) = (8, 100);
    let total = (writers * per_writer) as i64;
    let last = first + total;
    // Readers of different speeds, from the first revision or live from now.
    let mut readers = Vec::new();
    for i in 0..6u64 {
        let start_revision = if i % 2 == 0 { first } else { 0 };
        let mut w = s
            .watch(WatchRequest {
                key: "c/".into(),
                range_end: "c0".into(),
                start_revision,
                ..Default::default()
            })
            .await
            .unwrap();
        readers.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            while revs.last() != Some(&last) {
                match tokio::time::timeout(PATIENCE, w.recv()).await.unwrap().unwrap() {
                    WatchMessage::Events { events, .. } => {
                        revs.extend(events.iter().map(|e| e.kv.mod_revision))
                    }
                    other => panic!("unexpected {other:?}"),
                }
                if i > 0 && revs.len() % (i as usize * 7) == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            (start_revision, revs)
        }));
    }
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let s = s.clone();
            tokio::spawn(async move {
                for i in 0..per_writer {
                    put(&s, &format!("c/{w}/{i}"), b"v").await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(revision(&s).await, last);
    for r in readers {
        let (start, revs) = tokio::time::timeout(PATIENCE, r).await.unwrap().unwrap();
        let from = revs[0];
        if start > 0 {
            assert_eq!(from, first);
        }
        assert_eq!(revs, (from..=last).collect::<Vec<_>>(), "contiguous, each revision once");
    }
}
