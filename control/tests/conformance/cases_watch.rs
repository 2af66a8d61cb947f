//! Conformance cases for watches: live, from history with prev_kv, filters, ranges,
//! compaction, progress, and txn events.

use skerry_control::store::*;

use super::{del_op, events, next, put, put_op, revision, Factory};

fn watch_req(key: &str, end: &str, start: Revision) -> WatchRequest {
    WatchRequest {
        key: key.into(),
        range_end: end.into(),
        start_revision: start,
        ..Default::default()
    }
}

/// A watch without a start revision sees writes after it was created, in order.
pub async fn watch_live(factory: Factory) {
    let Some(b) = factory().await else { return };
    let s = &b.store;
    put(s, "k", "before").await;
    let mut w = s.watch(watch_req("k", "", 0)).await.unwrap();
    let r1 = put(s, "k", "v1").await;
    put(s, "other", "x").await;
    let r2 = s
        .delete_range(DeleteRangeRequest { key: "k".into(), ..Default::default() })
        .await
        .unwrap()
        .revision;
    let evs = events(&mut w, 2).await;
    assert_eq!(evs[0].kind, EventKind::Put);
    assert_eq!((evs[0].kv.value.as_slice(), evs[0].kv.mod_revision), (&b"v1"[..], r1));
    assert_eq!(evs[0].kv.version, 2);
    assert_eq!(evs[0].prev_kv, None, "prev_kv only when asked for");
    assert_eq!(evs[1].kind, EventKind::Delete);
    assert_eq!((evs[1].kv.key.as_slice(), evs[1].kv.mod_revision), (&b"k"[..], r2));
}

/// A watch from a past revision replays history (with prev_kv), then continues live with no
/// gap and no duplicate.
pub async fn watch_from_past_revision_with_prev_kv(factory: Factory) {
    let Some(b) = factory().await else { return };
    let s = &b.store;
    let r1 = put(s, "k", "v1").await;
    put(s, "k", "v2").await;
    s.delete_range(DeleteRangeRequest { key: "k".into(), ..Default::default() }).await.unwrap();
    let mut w = s.watch(WatchRequest { prev_kv: true, ..watch_req("k", "", r1) }).await.unwrap();
    let r4 = put(s, "k", "v3").await;
    let evs = events(&mut w, 4).await;
    let kinds: Vec<_> = evs.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EventKind::Put, EventKind::Put, EventKind::Delete, EventKind::Put]);
    assert_eq!(evs[0].kv.mod_revision, r1);
    assert_eq!(evs[0].prev_kv, None, "the key did not exist before r1");
    assert_eq!(evs[1].prev_kv.as_ref().unwrap().value, b"v1");
    assert_eq!(evs[2].prev_kv.as_ref().unwrap().value, b"v2");
    assert_eq!(evs[3].kv.mod_revision, r4);
    assert_eq!(evs[3].prev_kv, None, "deleted before r4");
    let revs: Vec<_> = evs.iter().map(|e| e.kv.mod_revision).collect();
    assert!(revs.windows(2).all(|w| w[0] < w[1]), "in revision order: {revs:?}");
}

/// Range watches, and filter_put / filter_delete.
pub async fn watch_filters_and_ranges(factory: Factory) {
    let Some(b) = factory().await else { return };
    let s = &b.store;
    let start = revision(s).await + 1;
    let mut prefix = s.watch(watch_req("p/", "p0", start)).await.unwrap();
    let mut no_put =
        s.watch(WatchRequest { filter_put: true, ..watch_req("p/", "p0", start) }).await.unwrap();
    let mut no_delete = s
        .watch(WatchRequest { filter_delete: true, ..watch_req("p/", "p0", start) })
        .await
        .unwrap();
    let mut from_key = s.watch(watch_req("q", "\0", start)).await.unwrap();
    put(s, "p/a", "1").await;
    put(s, "pz", "outside").await;
    put(s, "q1", "1").await;
    s.delete_range(DeleteRangeRequest { key: "p/a".into(), ..Default::default() }).await.unwrap();
    put(s, "p/b", "1").await;
    put(s, "zzz", "1").await;
    let keys = |evs: &[Event]| -> Vec<(EventKind, String)> {
        evs.iter().map(|e| (e.kind, String::from_utf8_lossy(&e.kv.key).into_owned())).collect()
    };
    use EventKind::*;
    assert_eq!(
        keys(&events(&mut prefix, 3).await),
        [(Put, "p/a".into()), (Delete, "p/a".into()), (Put, "p/b".into())]
    );
    assert_eq!(keys(&events(&mut no_put, 1).await), [(Delete, "p/a".into())]);
    assert_eq!(keys(&events(&mut no_delete, 2).await), [(Put, "p/a".into()), (Put, "p/b".into())]);
    assert_eq!(keys(&events(&mut from_key, 2).await), [(Put, "q1".into()), (Put, "zzz".into())]);
}

/// A watch from a compacted revision is cancelled with the compaction point.
pub async fn watch_compacted_revision(factory: Factory) {
    let Some(b) = factory().await else { return };
    let s = &b.store;
    let r1 = put(s, "k", "1").await;
    put(s, "k", "2").await;
    let r3 = put(s, "k", "3").await;
    s.compact(r3).await.unwrap();
    let mut w = s.watch(watch_req("k", "", r1)).await.unwrap();
    match next(&mut w).await {
        WatchMessage::Compacted { compact_revision } => assert_eq!(compact_revision, r3),
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert!(w.recv().await.is_none(), "the watch ends");
    // Watching from the compaction point itself works.
    let mut ok = s.watch(watch_req("k", "", r3)).await.unwrap();
    let evs = events(&mut ok, 1).await;
    assert_eq!(evs[0].kv.mod_revision, r3);
}

/// A progress request is answered with a revision up to which every event was sent.
pub async fn watch_progress(factory: Factory) {
    let Some(b) = factory().await else { return };
    let s = &b.store;
    let mut w = s.watch(watch_req("k", "", 0)).await.unwrap();
    let r1 = put(s, "k", "1").await;
    let r2 = put(s, "other", "1").await;
    let evs = events(&mut w, 1).await;
    assert_eq!(evs[0].kv.mod_revision, r1);
    w.request_progress();
    match next(&mut w).await {
        WatchMessage::Progress { revision } => {
            assert!(revision >= r2, "progress {revision} must cover {r2}");
        }
        other => panic!("expected progress, got {other:?}"),
    }
}

/// The events of one txn arrive with one revision, in the txn's order.
pub async fn watch_txn_events_share_a_revision(factory: Factory) {
    let Some(b) = factory().await else { return };
    let s = &b.store;
    put(s, "t/c", "old").await;
    let mut w = s.watch(watch_req("t/", "t0", 0)).await.unwrap();
    let r = s
        .txn(TxnRequest {
            compare: vec![],
            success: vec![put_op("t/b", "1"), del_op("t/c"), put_op("t/a", "1")],
            failure: vec![],
        })
        .await
        .unwrap();
    let evs = events(&mut w, 3).await;
    let got: Vec<_> = evs.iter().map(|e| (e.kind, e.kv.key.clone(), e.kv.mod_revision)).collect();
    assert_eq!(
        got,
        [
            (EventKind::Put, b"t/b".to_vec(), r.revision),
            (EventKind::Delete, b"t/c".to_vec(), r.revision),
            (EventKind::Put, b"t/a".to_vec(), r.revision),
        ]
    );
}

/// A watch may start at a future revision: it sees events from that revision on only.
pub async fn watch_future_start_revision(factory: Factory) {
    let Some(b) = factory().await else { return };
    let s = &b.store;
    let now = revision(s).await;
    let mut w = s.watch(watch_req("f/", "f0", now + 2)).await.unwrap();
    put(s, "f/a", "1").await;
    let rb = put(s, "f/b", "1").await;
    let rc = put(s, "f/c", "1").await;
    let revs: Vec<_> = events(&mut w, 2).await.iter().map(|e| e.kv.mod_revision).collect();
    assert_eq!(revs, [rb, rc]);
}
