//! Conformance cases for transactions: the Kubernetes apiserver's create / CAS-update /
//! CAS-delete shapes, every compare target and operator, nesting, and etcd's request checks.

use skerry_control::store::*;

use super::{cmp, del_op, get, get_op, keys, put, put_op, revision, Factory};

fn txn(compare: Vec<Compare>, success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
    TxnRequest { compare, success, failure }
}

/// The apiserver's create: `if mod_revision(key) == 0 then put else get`.
pub async fn txn_create_shape(factory: Factory) {
    let Some(b) = factory().await else { return };
    let s = &b.store;
    let create = || {
        txn(
            vec![cmp("/registry/pods/default/p", CompareTarget::Mod(0), CompareOp::Equal)],
            vec![put_op("/registry/pods/default/p", "obj1")],
            vec![get_op("/registry/pods/default/p")],
        )
    };
    let r = s.txn(create()).await.unwrap();
    assert!(r.succeeded);
    let ResponseOp::Put(p) = &r.responses[0] else { panic!("{r:?}") };
    assert_eq!(p.revision, r.revision);
    let again = s.txn(create()).await.unwrap();
    assert!(!again.succeeded, "the key exists now");
    assert_eq!(again.revision, r.revision, "a failed compare writes nothing");
    let ResponseOp::Range(got) = &again.responses[0] else { panic!("{again:?}") };
    assert_eq!(got.kvs[0].value, b"obj1");
    assert_eq!(got.kvs[0].mod_revision, r.revision);
}

/// The apiserver's update: `if mod_revision(key) == X then put else get`; a stale X fails
/// and returns the current object.
pub async fn txn_cas_update_shape(factory: Factory) {
    let Some(b) = factory().await else { return };
    let s = &b.store;
    let r1 = put(s, "k", "v1").await;
    let update = |rev, v: &str| {
        txn(
            vec![cmp("k", CompareTarget::Mod(rev), CompareOp::Equal)],
            vec![RequestOp::Put(PutRequest {
                key: "k".into(),
                value: v.into(),
                prev_kv: true,
                ..Default::default()
            })],
            vec![get_op("k")],
        )
    };
    let ok = s.txn(update(r1, "v2")).await.unwrap();
    assert!(ok.succeeded);
    assert_eq!(ok.revision, r1 + 1);
    let ResponseOp::Put(p) = &ok.responses[0] else { panic!("{ok:?}") };
    assert_eq!(p.prev_kv.as_ref().unwrap().value, b"v1");
    let stale = s.txn(update(r1, "v3")).await.unwrap();
    assert!(!stale.succeeded);
    let ResponseOp::Range(cur) = &stale.responses[0] else { panic!("{stale:?}") };
    assert_eq!((cur.kvs[0].value.as_slice(), cur.kvs[0].mod_revision), (&b"v2"[..], ok.revision));
}

/// The apiserver's delete: `if mod_revision(key) == X then delete(prev_kv) else get`.
pub async fn txn_cas_delete_shape(factory: Factory) {
    let Some(b) = factory().await else { return };
    let s = &b.store;
    let r1 = put(s, "k", "v1").await;
    let delete = |rev| {
        txn(
            vec![cmp("k", CompareTarget::Mod(rev), CompareOp::Equal)],
            vec![RequestOp::DeleteRange(DeleteRangeRequest {
                key: "k".into(),
                prev_kv: true,
                ..Default::default()
            })],
            vec![get_op("k")],
        )
    };
    let stale = s.txn(delete(r1 - 1)).await.unwrap();
    assert!(!stale.succeeded);
    let ok = s.txn(delete(r1)).await.unwrap();
    assert!(ok.succeeded);
    let ResponseOp::DeleteRange(d) = &ok.responses[0] else { panic!("{ok:?}") };
    assert_eq!((d.deleted, d.prev_kvs[0].value.as_slice()), (1, &b"v1"[..]));
    assert!(get(s, "k").await.is_none());
}

/// Every compare target with every operator; a missing key compares as zero, except that a
/// value compare on a missing key always fails.
pub async fn txn_compare_targets_and_ops(factory: Factory) {
    let Some(b) = factory().await else { return };
    let s = &b.store;
    let lease = s.lease_grant(0, 60).await.unwrap().id;
    let r1 = put(s, "k", "m").await;
    let r2 = s
        .put(PutRequest { key: "k".into(), value: "m".into(), lease, ..Default::default() })
        .await
        .unwrap()
        .revision;
    let holds = |c: Compare| {
        let s = s.clone();
        async move { s.txn(txn(vec![c], vec![], vec![])).await.unwrap().succeeded }
    };
    use CompareOp::*;
    use CompareTarget as T;
    assert!(holds(cmp("k", T::Value("m".into()), Equal)).await);
    assert!(holds(cmp("k", T::Value("a".into()), Greater)).await);
    assert!(holds(cmp("k", T::Value("z".into()), Less)).await);
    assert!(holds(cmp("k", T::Value("x".into()), NotEqual)).await);
    assert!(!holds(cmp("k", T::Value("m".into()), NotEqual)).await);
    assert!(holds(cmp("k", T::Version(2), Equal)).await);
    assert!(holds(cmp("k", T::Version(1), Greater)).await);
    assert!(!holds(cmp("k", T::Version(2), Less)).await);
    assert!(holds(cmp("k", T::Create(r1), Equal)).await);
    assert!(holds(cmp("k", T::Create(r2), Less)).await);
    assert!(holds(cmp("k", T::Mod(r2), Equal)).await);
    assert!(holds(cmp("k", T::Mod(r1), Greater)).await);
    assert!(holds(cmp("k", T::Mod(r1), NotEqual)).await);
    assert!(holds(cmp("k", T::Lease(lease), Equal)).await);
    assert!(holds(cmp("k", T::Lease(0), Greater)).await);
    assert!(holds(cmp("missing", T::Version(0), Equal)).await);
    assert!(holds(cmp("missing", T::Create(0), Equal)).await);
    assert!(holds(cmp("missing", T::Mod(1), Less)).await);
    assert!(holds(cmp("missing", T::Lease(0), Equal)).await);
    assert!(!holds(cmp("missing", T::Value(Vec::new()), Equal)).await);
    assert!(!holds(cmp("missing", T::Value("x".into()), NotEqual)).await);
    // All compares must hold.
    let both = txn(
        vec![cmp("k", T::Version(2), Equal), cmp("k", T::Value("m".into()), NotEqual)],
        vec![],
        vec![],
    );
    assert!(!s.txn(both).await.unwrap().succeeded);
}

/// A compare with a range end must hold for every key in the range.
pub async fn txn_compare_over_a_range(factory: Factory) {
    let Some(b) = factory().await else { return };
    let s = &b.store;
    put(s, "p/a", "1").await;
    put(s, "p/b", "1").await;
    let all_one = || Compare {
        key: "p/".into(),
        range_end: "p0".into(),
        target: CompareTarget::Value("1".into()),
        op: CompareOp::Equal,
    };
    assert!(s.txn(txn(vec![all_one()], vec![], vec![])).await.unwrap().succeeded);
    put(s, "p/c", "2").await;
    assert!(!s.txn(txn(vec![all_one()], vec![], vec![])).await.unwrap().succeeded);
}

/// All writes of a txn share one revision, ranges in a txn see its earlier writes, and the
/// versions of keys written by the txn advance by one.
pub async fn txn_writes_share_one_revision(factory: Factory) {
    let Some(b) = factory().await else { return };
    let s = &b.store;
    put(s, "old", "v").await;
    let before = revision(s).await;
    let r = s
        .txn(txn(
            vec![],
            vec![put_op("a", "1"), put_op("b", "2"), del_op("old"), get_op("a")],
            vec![],
        ))
        .await
        .unwrap();
    assert!(r.succeeded);
    assert_eq!(r.revision, before + 1);
    let ResponseOp::Range(seen) = &r.responses[3] else { panic!("{r:?}") };
    assert_eq!(seen.kvs[0].value, b"1", "a txn reads its own writes");
    for k in ["a", "b"] {
        let kv = get(s, k).await.unwrap();
        assert_eq!((kv.mod_revision, kv.create_revision, kv.version), (r.revision, r.revision, 1));
    }
    assert!(get(s, "old").await.is_none());
    // A txn that only reads does not bump the revision.
    let read = s.txn(txn(vec![], vec![get_op("a")], vec![])).await.unwrap();
    assert_eq!(read.revision, r.revision);
    assert_eq!(revision(s).await, r.revision);
}

/// Nested txns: the inner compare picks the inner branch; all writes share the outer revision.
pub async fn nested_txn(factory: Factory) {
    let Some(b) = factory().await else { return };
    let s = &b.store;
    put(s, "flag", "on").await;
    let before = revision(s).await;
    let inner = txn(
        vec![cmp("flag", CompareTarget::Value("on".into()), CompareOp::Equal)],
        vec![put_op("inner-then", "1")],
        vec![put_op("inner-else", "1")],
    );
    let outer = txn(
        vec![cmp("flag", CompareTarget::Version(1), CompareOp::Equal)],
        vec![put_op("outer", "1"), RequestOp::Txn(inner)],
        vec![],
    );
    let r = s.txn(outer).await.unwrap();
    assert!(r.succeeded);
    assert_eq!(r.revision, before + 1);
    let ResponseOp::Txn(inner) = &r.responses[1] else { panic!("{r:?}") };
    assert!(inner.succeeded);
    assert_eq!(get(s, "inner-then").await.unwrap().mod_revision, before + 1);
    assert_eq!(get(s, "outer").await.unwrap().mod_revision, before + 1);
    assert!(get(s, "inner-else").await.is_none());
}

/// etcd refuses a txn that writes a key twice in one branch, or puts into a range it deletes.
pub async fn txn_duplicate_keys(factory: Factory) {
    let Some(b) = factory().await else { return };
    let s = &b.store;
    let before = revision(s).await;
    let dup = |ops| async { s.txn(txn(vec![], ops, vec![])).await };
    let r = dup(vec![put_op("a", "1"), put_op("a", "2")]).await;
    assert!(matches!(r, Err(StoreError::DuplicateKey)), "got {r:?}");
    let r = dup(vec![
        RequestOp::DeleteRange(DeleteRangeRequest {
            key: "a".into(),
            range_end: "c".into(),
            prev_kv: false,
        }),
        put_op("b", "1"),
    ])
    .await;
    assert!(matches!(r, Err(StoreError::DuplicateKey)), "got {r:?}");
    let nested = RequestOp::Txn(txn(vec![], vec![put_op("a", "1")], vec![]));
    let r = dup(vec![put_op("a", "1"), nested]).await;
    assert!(matches!(r, Err(StoreError::DuplicateKey)), "got {r:?}");
    // The two branches of one txn are alternatives: the same key in both is fine.
    let ok = txn(vec![], vec![put_op("a", "1")], vec![put_op("a", "2")]);
    assert!(s.txn(ok).await.unwrap().succeeded);
    // Two deletes of the same key are fine too.
    let r = dup(vec![del_op("a"), del_op("a")]).await.unwrap();
    assert!(r.succeeded);
    assert_eq!(revision(s).await, before + 2);
}

/// More than 128 operations in one branch (etcd's default `--max-txn-ops`) is refused.
pub async fn txn_too_many_ops(factory: Factory) {
    let Some(b) = factory().await else { return };
    let s = &b.store;
    let ops = |n| (0..n).map(|i| put_op(&format!("k{i:03}"), "v")).collect::<Vec<_>>();
    let r = s.txn(txn(vec![], ops(129), vec![])).await;
    assert!(matches!(r, Err(StoreError::TooManyOps)), "got {r:?}");
    let r = s.txn(txn(vec![], ops(128), vec![])).await.unwrap();
    assert!(r.succeeded);
    assert_eq!(super::range(s, "k", "l").await.count, 128);
}

/// A txn with an invalid operation (an unknown lease) applies nothing.
pub async fn txn_failed_op_applies_nothing(factory: Factory) {
    let Some(b) = factory().await else { return };
    let s = &b.store;
    let before = revision(s).await;
    let bad = RequestOp::Put(PutRequest {
        key: "b".into(),
        value: "v".into(),
        lease: 999_999,
        ..Default::default()
    });
    let r = s.txn(txn(vec![], vec![put_op("a", "1"), bad], vec![])).await;
    assert!(matches!(r, Err(StoreError::LeaseNotFound(_))), "got {r:?}");
    assert!(get(s, "a").await.is_none());
    assert_eq!(revision(s).await, before);
    let empty_key = txn(vec![], vec![put_op("", "1")], vec![]);
    assert!(matches!(s.txn(empty_key).await, Err(StoreError::EmptyKey)));
    assert!(keys(&super::range(s, "\0", "\0").await.kvs).is_empty());
}

/// etcd evaluates the compares of nested txns against the state before the txn ran, not
/// after the outer txn's earlier writes.
pub async fn nested_compares_see_the_state_before_the_txn(factory: Factory) {
    let Some(b) = factory().await else { return };
    let s = &b.store;
    let inner = txn(
        vec![cmp("x", CompareTarget::Version(0), CompareOp::Equal)],
        vec![put_op("inner-saw-no-x", "1")],
        vec![put_op("inner-saw-x", "1")],
    );
    let r =
        s.txn(txn(vec![], vec![put_op("x", "1"), RequestOp::Txn(inner)], vec![])).await.unwrap();
    let ResponseOp::Txn(inner) = &r.responses[1] else { panic!("{r:?}") };
    assert!(inner.succeeded);
    assert!(get(s, "inner-saw-no-x").await.is_some());
    assert!(get(s, "inner-saw-x").await.is_none());
}
