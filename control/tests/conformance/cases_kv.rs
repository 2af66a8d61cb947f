//! Conformance cases for the key space: put, range, delete, revisions, compaction, limits,
//! status and hashes.

use skerry_control::store::*;

use super::{get, keys, put, range, revision, Factory};

/// etcd: revision 1 is the empty store; each write bumps the global revision; version counts
/// writes since creation and restarts after a delete; create_revision is the creating write.
pub async fn revisions_and_versions_across_put_delete_recreate(factory: Factory) {
    let Some(b) = factory().await else { return };
    let s = &b.store;
    let r0 = revision(s).await;
    let r1 = put(s, "a", "1").await;
    assert_eq!(r1, r0 + 1);
    let r2 = put(s, "a", "2").await;
    assert_eq!(r2, r1 + 1);
    let kv = get(s, "a").await.unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (r1, r2, 2));
    assert_eq!(kv.value, b"2");
    let del =
        s.delete_range(DeleteRangeRequest { key: "a".into(), ..Default::default() }).await.unwrap();
    assert_eq!((del.deleted, del.revision), (1, r2 + 1));
    assert!(get(s, "a").await.is_none());
    let r4 = put(s, "a", "3").await;
    assert_eq!(r4, r2 + 2);
    let kv = get(s, "a").await.unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (r4, r4, 1));
    assert_eq!(range(s, "a", "").await.revision, r4);
}

/// etcd's range_end rules: empty = one key; `\0` = from key on; `\0`/`\0` = all;
/// `[key, end)`; an end not after the key selects nothing.
pub async fn range_end_rules(factory: Factory) {
    let Some(b) = factory().await else { return };
    let s = &b.store;
    for k in ["a", "ab", "abc", "b", "c"] {
        put(s, k, k).await;
    }
    assert_eq!(keys(&range(s, "ab", "").await.kvs), ["ab"]);
    assert_eq!(keys(&range(s, "ab", "b").await.kvs), ["ab", "abc"]);
    assert_eq!(keys(&range(s, "ab", "\0").await.kvs), ["ab", "abc", "b", "c"]);
    assert_eq!(keys(&range(s, "\0", "\0").await.kvs), ["a", "ab", "abc", "b", "c"]);
    assert_eq!(keys(&range(s, "a", "b").await.kvs), ["a", "ab", "abc"]);
    assert!(range(s, "b", "a").await.kvs.is_empty(), "end before key selects nothing");
    assert!(range(s, "b", "b").await.kvs.is_empty(), "end equal to key selects nothing");
    assert!(range(s, "zz", "").await.kvs.is_empty());
    // Keys are bytes, compared bytewise.
    s.put(PutRequest { key: vec![0xff, 0x00], value: vec![1], ..Default::default() })
        .await
        .unwrap();
    let all = range(s, "\0", "\0").await;
    assert_eq!(all.kvs.last().unwrap().key, vec![0xff, 0x00]);
    assert_eq!(all.count, 6);
}

/// `limit` cuts the result, `more` says so, `count` is the whole range's size.
pub async fn limit_more_and_count(factory: Factory) {
    let Some(b) = factory().await else { return };
    let s = &b.store;
    for i in 0..10 {
        put(s, &format!("k{i}"), "v").await;
    }
    let req = |limit| RangeRequest {
        key: "k".into(),
        range_end: "l".into(),
        limit,
        ..Default::default()
    };
    let r = s.range(req(3)).await.unwrap();
    assert_eq!(
        (keys(&r.kvs), r.more, r.count),
        (vec!["k0".into(), "k1".into(), "k2".into()], true, 10)
    );
    let r = s.range(req(10)).await.unwrap();
    assert_eq!((r.kvs.len(), r.more, r.count), (10, false, 10));
    let r = s.range(req(0)).await.unwrap();
    assert_eq!((r.kvs.len(), r.more, r.count), (10, false, 10));
    let r = s.range(req(20)).await.unwrap();
    assert_eq!((r.kvs.len(), r.more, r.count), (10, false, 10));
}

/// Every sort target in both orders (a non-key target without an order sorts ascending).
pub async fn sort_targets_and_orders(factory: Factory) {
    let Some(b) = factory().await else { return };
    let s = &b.store;
    // Creation order c, a, b; values z, y, x; versions: b=3, a=2, c=1.
    put(s, "c", "z").await;
    put(s, "a", "y").await;
    put(s, "b", "x").await;
    put(s, "a", "y").await;
    put(s, "b", "x").await;
    put(s, "b", "x").await;
    let sorted = |target, order| {
        let s = s.clone();
        async move {
            let r = s
                .range(RangeRequest {
                    key: "a".into(),
                    range_end: "d".into(),
                    sort_target: target,
                    sort_order: order,
                    ..Default::default()
                })
                .await
                .unwrap();
            keys(&r.kvs)
        }
    };
    use SortOrder::*;
    use SortTarget::*;
    assert_eq!(sorted(Key, None).await, ["a", "b", "c"]);
    assert_eq!(sorted(Key, Ascend).await, ["a", "b", "c"]);
    assert_eq!(sorted(Key, Descend).await, ["c", "b", "a"]);
    assert_eq!(sorted(Version, Ascend).await, ["c", "a", "b"]);
    assert_eq!(sorted(Version, Descend).await, ["b", "a", "c"]);
    assert_eq!(sorted(Version, None).await, ["c", "a", "b"]);
    assert_eq!(sorted(Create, Ascend).await, ["c", "a", "b"]);
    assert_eq!(sorted(Create, Descend).await, ["b", "a", "c"]);
    assert_eq!(sorted(Mod, Ascend).await, ["c", "a", "b"]);
    assert_eq!(sorted(Mod, Descend).await, ["b", "a", "c"]);
    assert_eq!(sorted(Value, Ascend).await, ["b", "a", "c"]);
    assert_eq!(sorted(Value, Descend).await, ["c", "a", "b"]);
    // Sorting happens before the limit.
    let r = s
        .range(RangeRequest {
            key: "a".into(),
            range_end: "d".into(),
            sort_target: Key,
            sort_order: Descend,
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((keys(&r.kvs), r.more, r.count), (vec!["c".to_string()], true, 3));
}

/// min/max mod and create revision filters; `count` ignores them.
pub async fn mod_and_create_revision_filters(factory: Factory) {
    let Some(b) = factory().await else { return };
    let s = &b.store;
    let ra = put(s, "a", "1").await;
    let rb = put(s, "b", "1").await;
    let rc = put(s, "c", "1").await;
    let ra2 = put(s, "a", "2").await;
    let req = RangeRequest { key: "a".into(), range_end: "d".into(), ..Default::default() };
    let r = s.range(RangeRequest { min_mod_revision: rc, ..req.clone() }).await.unwrap();
    assert_eq!(keys(&r.kvs), ["a", "c"]);
    assert_eq!(r.count, 3, "count is the whole range, before filters");
    let r = s.range(RangeRequest { max_mod_revision: rb, ..req.clone() }).await.unwrap();
    assert_eq!(keys(&r.kvs), ["b"]);
    let r = s.range(RangeRequest { min_create_revision: rb, ..req.clone() }).await.unwrap();
    assert_eq!(keys(&r.kvs), ["b", "c"]);
    let r = s.range(RangeRequest { max_create_revision: ra, ..req.clone() }).await.unwrap();
    assert_eq!(keys(&r.kvs), ["a"]);
    assert_eq!(r.kvs[0].mod_revision, ra2);
    let r = s
        .range(RangeRequest { min_mod_revision: rb, max_mod_revision: rc, limit: 1, ..req })
        .await
        .unwrap();
    assert_eq!((keys(&r.kvs), r.more), (vec!["b".to_string()], true));
}

/// keys_only drops values; count_only returns just the count.
pub async fn keys_only_and_count_only(factory: Factory) {
    let Some(b) = factory().await else { return };
    let s = &b.store;
    let r1 = put(s, "a", "value-a").await;
    put(s, "b", "value-b").await;
    let req = RangeRequest { key: "a".into(), range_end: "c".into(), ..Default::default() };
    let r = s.range(RangeRequest { keys_only: true, ..req.clone() }).await.unwrap();
    assert_eq!(keys(&r.kvs), ["a", "b"]);
    assert!(r.kvs.iter().all(|kv| kv.value.is_empty()));
    assert_eq!(r.kvs[0].mod_revision, r1, "keys_only keeps the metadata");
    let r = s.range(RangeRequest { count_only: true, ..req }).await.unwrap();
    assert!(r.kvs.is_empty());
    assert_eq!(r.count, 2);
}

/// A read at a past revision sees the key space as it was then.
pub async fn historic_reads(factory: Factory) {
    let Some(b) = factory().await else { return };
    let s = &b.store;
    let r1 = put(s, "a", "1").await;
    let r2 = put(s, "b", "1").await;
    let r3 = put(s, "a", "2").await;
    s.delete_range(DeleteRangeRequest { key: "b".into(), ..Default::default() }).await.unwrap();
    put(s, "c", "1").await;
    let at = |rev| RangeRequest {
        key: "a".into(),
        range_end: "z".into(),
        revision: rev,
        ..Default::default()
    };
    let r = s.range(at(r1)).await.unwrap();
    assert_eq!(keys(&r.kvs), ["a"]);
    assert_eq!(r.kvs[0].value, b"1");
    let r = s.range(at(r2)).await.unwrap();
    assert_eq!(keys(&r.kvs), ["a", "b"]);
    let r = s.range(at(r3)).await.unwrap();
    assert_eq!(r.kvs[0].value, b"2");
    assert_eq!((r.kvs[0].version, r.kvs[0].create_revision), (2, r1));
    let now = s.range(at(0)).await.unwrap();
    assert_eq!(keys(&now.kvs), ["a", "c"]);
    assert!(now.revision > r3, "a response carries the current revision");
    let r = s.range(RangeRequest { limit: 1, ..at(r2) }).await.unwrap();
    assert_eq!((keys(&r.kvs), r.more, r.count), (vec!["a".to_string()], true, 2));
    let r = s.range(RangeRequest { count_only: true, ..at(r2) }).await.unwrap();
    assert_eq!(r.count, 2);
    let future = s.range(at(now.revision + 10)).await;
    assert!(matches!(future, Err(StoreError::FutureRevision)), "got {future:?}");
}

/// Reads below the compaction point fail with Compacted; compacting again at or below it too;
/// compacting beyond the head is a future revision. Data at and above it stays readable.
pub async fn compaction_errors(factory: Factory) {
    let Some(b) = factory().await else { return };
    let s = &b.store;
    let r1 = put(s, "a", "1").await;
    let r2 = put(s, "a", "2").await;
    let r3 = put(s, "a", "3").await;
    s.compact(r2).await.unwrap();
    let at = |rev| RangeRequest { key: "a".into(), revision: rev, ..Default::default() };
    let below = s.range(at(r1)).await;
    assert!(matches!(below, Err(StoreError::Compacted { .. })), "got {below:?}");
    assert_eq!(s.range(at(r2)).await.unwrap().kvs[0].value, b"2");
    assert_eq!(s.range(at(r3)).await.unwrap().kvs[0].value, b"3");
    let again = s.compact(r2).await;
    assert!(matches!(again, Err(StoreError::Compacted { .. })), "got {again:?}");
    let older = s.compact(r1).await;
    assert!(matches!(older, Err(StoreError::Compacted { .. })), "got {older:?}");
    let future = s.compact(r3 + 100).await;
    assert!(matches!(future, Err(StoreError::FutureRevision)), "got {future:?}");
    assert_eq!(get(s, "a").await.unwrap().version, 3);
}

/// Put with prev_kv returns the old pair; ignore_value keeps the value, ignore_lease the lease.
pub async fn put_prev_kv_ignore_value_ignore_lease(factory: Factory) {
    let Some(b) = factory().await else { return };
    let s = &b.store;
    let first = s
        .put(PutRequest {
            key: "k".into(),
            value: "v1".into(),
            prev_kv: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(first.prev_kv, None);
    let second = s
        .put(PutRequest {
            key: "k".into(),
            value: "v2".into(),
            prev_kv: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let prev = second.prev_kv.unwrap();
    assert_eq!(
        (prev.value.as_slice(), prev.mod_revision, prev.version),
        (&b"v1"[..], first.revision, 1)
    );
    let lease = s.lease_grant(0, 60).await.unwrap().id;
    s.put(PutRequest { key: "k".into(), value: "v3".into(), lease, ..Default::default() })
        .await
        .unwrap();
    s.put(PutRequest {
        key: "k".into(),
        ignore_value: true,
        ignore_lease: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let kv = get(s, "k").await.unwrap();
    assert_eq!((kv.value.as_slice(), kv.lease, kv.version), (&b"v3"[..], lease, 4));
    s.put(PutRequest { key: "k".into(), ignore_value: true, ..Default::default() }).await.unwrap();
    let kv = get(s, "k").await.unwrap();
    assert_eq!((kv.value.as_slice(), kv.lease), (&b"v3"[..], 0), "lease 0 detaches the key");
    s.put(PutRequest {
        key: "k".into(),
        value: "v4".into(),
        ignore_lease: true,
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(get(s, "k").await.unwrap().value, b"v4");
}

/// etcd's request errors: empty keys, ignore flags misused, missing keys for ignore flags,
/// unknown leases. None of them changes the store.
pub async fn bad_input_errors(factory: Factory) {
    let Some(b) = factory().await else { return };
    let s = &b.store;
    let before = revision(s).await;
    let r = s.put(PutRequest { value: "v".into(), ..Default::default() }).await;
    assert!(matches!(r, Err(StoreError::EmptyKey)), "got {r:?}");
    let r = s.range(RangeRequest::default()).await;
    assert!(matches!(r, Err(StoreError::EmptyKey)), "got {r:?}");
    let r = s.delete_range(DeleteRangeRequest::default()).await;
    assert!(matches!(r, Err(StoreError::EmptyKey)), "got {r:?}");
    let r = s
        .put(PutRequest {
            key: "k".into(),
            value: "v".into(),
            ignore_value: true,
            ..Default::default()
        })
        .await;
    assert!(matches!(r, Err(StoreError::ValueProvided)), "got {r:?}");
    let r = s
        .put(PutRequest { key: "k".into(), lease: 7, ignore_lease: true, ..Default::default() })
        .await;
    assert!(matches!(r, Err(StoreError::LeaseProvided)), "got {r:?}");
    let r = s.put(PutRequest { key: "k".into(), ignore_value: true, ..Default::default() }).await;
    assert!(matches!(r, Err(StoreError::KeyNotFound)), "got {r:?}");
    let r = s
        .put(PutRequest { key: "k".into(), value: "v".into(), lease: 12345, ..Default::default() })
        .await;
    assert!(matches!(r, Err(StoreError::LeaseNotFound(12345))), "got {r:?}");
    assert_eq!(revision(s).await, before, "failed requests change nothing");
    assert!(get(s, "k").await.is_none());
}

/// Delete returns the count and prev_kvs; deleting nothing does not bump the revision.
pub async fn delete_range_prev_kv_and_revisions(factory: Factory) {
    let Some(b) = factory().await else { return };
    let s = &b.store;
    for k in ["a1", "a2", "a3", "b"] {
        put(s, k, "v").await;
    }
    let before = revision(s).await;
    let nothing = s
        .delete_range(DeleteRangeRequest { key: "zz".into(), ..Default::default() })
        .await
        .unwrap();
    assert_eq!((nothing.deleted, nothing.revision), (0, before));
    let del = s
        .delete_range(DeleteRangeRequest { key: "a".into(), range_end: "b".into(), prev_kv: true })
        .await
        .unwrap();
    assert_eq!((del.deleted, del.revision), (3, before + 1), "one revision for the whole range");
    assert_eq!(keys(&del.prev_kvs), ["a1", "a2", "a3"]);
    assert!(del.prev_kvs.iter().all(|kv| kv.value == b"v"));
    assert_eq!(keys(&range(s, "\0", "\0").await.kvs), ["b"]);
}

/// Requests over the size limit (1.5 MiB by default, like etcd) are refused.
pub async fn request_too_large(factory: Factory) {
    let Some(b) = factory().await else { return };
    let s = &b.store;
    let big = vec![b'x'; 2 * 1024 * 1024];
    let r = s.put(PutRequest { key: "big".into(), value: big, ..Default::default() }).await;
    assert!(matches!(r, Err(StoreError::RequestTooLarge)), "got {r:?}");
    let ok = vec![b'x'; 1024 * 1024];
    s.put(PutRequest { key: "ok".into(), value: ok.clone(), ..Default::default() }).await.unwrap();
    assert_eq!(get(s, "ok").await.unwrap().value, ok);
}

/// Status reports the revision and non-zero sizes; defragment keeps the data.
pub async fn status_and_defragment(factory: Factory) {
    let Some(b) = factory().await else { return };
    let s = &b.store;
    for i in 0..50 {
        put(s, &format!("k{i:02}"), &"v".repeat(1000)).await;
    }
    let rev = put(s, "last", "v").await;
    let st = s.status().await.unwrap();
    assert_eq!(st.revision, rev);
    assert!(st.db_size > 0 && st.db_size_in_use > 0 && st.db_size_in_use <= st.db_size, "{st:?}");
    assert!(!st.version.is_empty());
    s.delete_range(DeleteRangeRequest { key: "k".into(), range_end: "l".into(), prev_kv: false })
        .await
        .unwrap();
    s.compact(revision(s).await).await.unwrap();
    s.defragment().await.unwrap();
    assert_eq!(get(s, "last").await.unwrap().mod_revision, rev);
    assert_eq!(range(s, "k", "l").await.count, 0);
}

/// Two stores given the same writes hash the same; a different write changes the hash.
pub async fn hash_kv_equal_after_identical_writes(factory: Factory) {
    let (Some(a), Some(b)) = (factory().await, factory().await) else { return };
    for s in [&a.store, &b.store] {
        put(s, "x", "1").await;
        put(s, "y", "2").await;
        s.delete_range(DeleteRangeRequest { key: "x".into(), ..Default::default() }).await.unwrap();
    }
    let ha = a.store.hash_kv(0).await.unwrap();
    let hb = b.store.hash_kv(0).await.unwrap();
    assert_eq!(ha.hash, hb.hash);
    assert_eq!(ha.revision, hb.revision);
    put(&b.store, "z", "3").await;
    let hb2 = b.store.hash_kv(0).await.unwrap();
    assert_ne!(ha.hash, hb2.hash);
    // A hash at an earlier revision ignores later writes.
    let hb_old = b.store.hash_kv(ha.revision).await.unwrap();
    assert_eq!(hb_old.hash, ha.hash);
}

/// Sort, limit and filters also apply to historic reads, and inside a txn.
pub async fn historic_sorted_limited_and_in_txn(factory: Factory) {
    let Some(b) = factory().await else { return };
    let s = &b.store;
    put(s, "a", "1").await;
    put(s, "b", "1").await;
    let r = put(s, "c", "1").await;
    put(s, "d", "1").await;
    s.delete_range(DeleteRangeRequest { key: "a".into(), ..Default::default() }).await.unwrap();
    let req = RangeRequest {
        key: "a".into(),
        range_end: "z".into(),
        revision: r,
        sort_order: SortOrder::Descend,
        sort_target: SortTarget::Key,
        limit: 2,
        ..Default::default()
    };
    let got = s.range(req.clone()).await.unwrap();
    assert_eq!((keys(&got.kvs), got.more, got.count), (vec!["c".into(), "b".into()], true, 3));
    let t = s
        .txn(TxnRequest { compare: vec![], success: vec![RequestOp::Range(req)], failure: vec![] })
        .await
        .unwrap();
    let ResponseOp::Range(in_txn) = &t.responses[0] else { panic!("{t:?}") };
    assert_eq!(keys(&in_txn.kvs), ["c", "b"]);
}
