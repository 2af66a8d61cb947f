//! Conformance cases for leases: grant, keep-alive, time-to-live, list, revoke, expiry.

use std::time::{Duration, Instant};

use skerry_control::store::*;

use super::{events, get, put, Factory, PATIENCE};

fn leased_put(key: &str, lease: LeaseId) -> PutRequest {
    PutRequest { key: key.into(), value: "v".into(), lease, ..Default::default() }
}

/// Grant with a chosen or a store-picked id; keep-alive refreshes to the granted TTL;
/// time-to-live lists the attached keys; leases lists every lease.
pub async fn lease_grant_keep_alive_ttl_list(factory: Factory) {
    let Some(b) = factory().await else { return };
    let s = &b.store;
    let chosen = s.lease_grant(4242, 60).await.unwrap();
    assert_eq!((chosen.id, chosen.ttl), (4242, 60));
    let picked = s.lease_grant(0, 30).await.unwrap();
    assert!(picked.id > 0 && picked.id != 4242);
    assert_eq!(picked.ttl, 30);
    s.put(leased_put("a", 4242)).await.unwrap();
    s.put(leased_put("b", 4242)).await.unwrap();
    assert_eq!(get(s, "a").await.unwrap().lease, 4242);
    let ttl = s.lease_time_to_live(4242, true).await.unwrap();
    assert_eq!((ttl.id, ttl.granted_ttl), (4242, 60));
    assert!(ttl.ttl > 0 && ttl.ttl <= 60, "{ttl:?}");
    let mut attached = ttl.keys.clone();
    attached.sort();
    assert_eq!(attached, [b"a".to_vec(), b"b".to_vec()]);
    let without = s.lease_time_to_live(4242, false).await.unwrap();
    assert!(without.keys.is_empty());
    let kept = s.lease_keep_alive(4242).await.unwrap();
    assert_eq!((kept.id, kept.ttl), (4242, 60));
    let mut ids = s.lease_leases().await.unwrap().ids;
    ids.sort();
    let mut expected = vec![4242, picked.id];
    expected.sort();
    assert_eq!(ids, expected);
}

/// Revoking a lease deletes its keys at one revision, with delete events.
pub async fn lease_revoke_deletes_keys_with_events(factory: Factory) {
    let Some(b) = factory().await else { return };
    let s = &b.store;
    let id = s.lease_grant(0, 60).await.unwrap().id;
    s.put(leased_put("l/a", id)).await.unwrap();
    s.put(leased_put("l/b", id)).await.unwrap();
    put(s, "l/c", "unleased").await;
    let mut w = s
        .watch(WatchRequest {
            key: "l/".into(),
            range_end: "l0".into(),
            prev_kv: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let rev = s.lease_revoke(id).await.unwrap();
    let evs = events(&mut w, 2).await;
    assert!(evs.iter().all(|e| e.kind == EventKind::Delete && e.kv.mod_revision == rev));
    let mut deleted: Vec<_> = evs.iter().map(|e| e.kv.key.clone()).collect();
    deleted.sort();
    assert_eq!(deleted, [b"l/a".to_vec(), b"l/b".to_vec()]);
    assert!(evs.iter().all(|e| e.prev_kv.as_ref().is_some_and(|p| p.lease == id)));
    assert!(get(s, "l/a").await.is_none());
    assert!(get(s, "l/c").await.is_some());
    assert!(!s.lease_leases().await.unwrap().ids.contains(&id));
    assert_eq!(s.lease_time_to_live(id, false).await.unwrap().ttl, -1);
}

/// An expired lease is revoked by the store: its keys go away with delete events.
pub async fn lease_expiry_deletes_keys(factory: Factory) {
    let Some(b) = factory().await else { return };
    let s = &b.store;
    let id = s.lease_grant(0, 2).await.unwrap().id;
    s.put(leased_put("e/k", id)).await.unwrap();
    let mut w = s.watch(WatchRequest { key: "e/k".into(), ..Default::default() }).await.unwrap();
    let granted = Instant::now();
    let evs = events(&mut w, 1).await;
    assert_eq!(evs[0].kind, EventKind::Delete);
    assert!(granted.elapsed() >= Duration::from_secs(1), "not before the TTL ran out");
    assert!(get(s, "e/k").await.is_none());
    let deadline = Instant::now() + PATIENCE;
    while s.lease_leases().await.unwrap().ids.contains(&id) {
        assert!(Instant::now() < deadline, "expired lease still listed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kept = s.lease_keep_alive(id).await;
    assert!(matches!(kept, Err(StoreError::LeaseNotFound(_))), "got {kept:?}");
}

/// etcd's lease errors.
pub async fn lease_errors(factory: Factory) {
    let Some(b) = factory().await else { return };
    let s = &b.store;
    let r = s.lease_revoke(777).await;
    assert!(matches!(r, Err(StoreError::LeaseNotFound(777))), "got {r:?}");
    let r = s.lease_keep_alive(777).await;
    assert!(matches!(r, Err(StoreError::LeaseNotFound(777))), "got {r:?}");
    assert_eq!(s.lease_time_to_live(777, true).await.unwrap().ttl, -1);
    s.lease_grant(777, 10).await.unwrap();
    let r = s.lease_grant(777, 10).await;
    assert!(matches!(r, Err(StoreError::LeaseExists(777))), "got {r:?}");
    let r = s.lease_grant(0, 9_000_000_001).await;
    assert!(matches!(r, Err(StoreError::LeaseTtlTooLarge)), "got {r:?}");
}

/// A TTL below etcd's minimum (2 s with default timings) is raised to it.
pub async fn lease_short_ttl_is_raised_to_the_minimum(factory: Factory) {
    let Some(b) = factory().await else { return };
    let s = &b.store;
    let g = s.lease_grant(0, 1).await.unwrap();
    assert_eq!(g.ttl, 2);
    let ttl = s.lease_time_to_live(g.id, false).await.unwrap();
    assert_eq!(ttl.granted_ttl, 2);
}
