//! The store conformance suite: etcd v3 semantics written against `Arc<dyn Store>` only.
//!
//! Each backend's test file defines an async factory and invokes `conformance_tests!(factory)`,
//! which generates one `#[tokio::test]` per case, so no case can run against one backend only.
//! The cases follow etcd's documented behaviour and are arbitrated by a real etcd (the
//! `store_etcd` instantiation): where etcd disagrees with a case, the case is wrong.

#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use skerry_control::store::*;

mod cases_kv;
mod cases_lease;
mod cases_txn;
mod cases_watch;

pub use cases_kv::*;
pub use cases_lease::*;
pub use cases_txn::*;
pub use cases_watch::*;

/// A store under test and whatever keeps it alive (temp dir, etcd process).
pub struct Backend {
    pub store: Arc<dyn Store>,
    pub guard: Box<dyn Send + Sync>,
}

/// Makes a fresh, empty store, or `None` to skip (a missing program, reported by testkit).
pub type Factory = fn() -> Pin<Box<dyn Future<Output = Option<Backend>> + Send>>;

/// One `#[tokio::test]` per conformance case, each with a fresh store from `$factory`.
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr) => {
        $crate::conformance_tests!(@cases $factory;
            revisions_and_versions_across_put_delete_recreate,
            range_end_rules,
            limit_more_and_count,
            sort_targets_and_orders,
            mod_and_create_revision_filters,
            keys_only_and_count_only,
            historic_reads,
            historic_sorted_limited_and_in_txn,
            compaction_errors,
            put_prev_kv_ignore_value_ignore_lease,
            bad_input_errors,
            delete_range_prev_kv_and_revisions,
            request_too_large,
            txn_create_shape,
            txn_cas_update_shape,
            txn_cas_delete_shape,
            txn_compare_targets_and_ops,
            txn_compare_over_a_range,
            txn_writes_share_one_revision,
            nested_txn,
            nested_compares_see_the_state_before_the_txn,
            txn_duplicate_keys,
            txn_too_many_ops,
            txn_failed_op_applies_nothing,
            watch_live,
            watch_from_past_revision_with_prev_kv,
            watch_filters_and_ranges,
            watch_compacted_revision,
            watch_progress,
            watch_txn_events_share_a_revision,
            watch_future_start_revision,
            lease_grant_keep_alive_ttl_list,
            lease_revoke_deletes_keys_with_events,
            lease_expiry_deletes_keys,
            lease_errors,
            lease_short_ttl_is_raised_to_the_minimum,
            status_and_defragment,
            hash_kv_equal_after_identical_writes,
        );
    };
    (@cases $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                conformance::$case($factory).await
            }
        )*
    };
}

/// How long a case waits for something the store does in the background.
pub const PATIENCE: Duration = Duration::from_secs(15);

pub async fn put(s: &Arc<dyn Store>, key: &str, value: &str) -> Revision {
    s.put(PutRequest { key: key.into(), value: value.into(), ..Default::default() })
        .await
        .unwrap()
        .revision
}

pub async fn get(s: &Arc<dyn Store>, key: &str) -> Option<KeyValue> {
    s.range(RangeRequest { key: key.into(), ..Default::default() }).await.unwrap().kvs.pop()
}

pub async fn range(s: &Arc<dyn Store>, key: &str, end: &str) -> RangeResponse {
    s.range(RangeRequest { key: key.into(), range_end: end.into(), ..Default::default() })
        .await
        .unwrap()
}

pub fn keys(kvs: &[KeyValue]) -> Vec<String> {
    kvs.iter().map(|kv| String::from_utf8_lossy(&kv.key).into_owned()).collect()
}

pub async fn revision(s: &Arc<dyn Store>) -> Revision {
    s.status().await.unwrap().revision
}

/// The next message of a watch, failing the test if none comes in time.
pub async fn next(w: &mut Watcher) -> WatchMessage {
    tokio::time::timeout(PATIENCE, w.recv())
        .await
        .expect("watch message in time")
        .expect("watch still open")
}

/// Events from a watch until `n` have arrived (messages may group several).
pub async fn events(w: &mut Watcher, n: usize) -> Vec<Event> {
    let mut out = Vec::new();
    while out.len() < n {
        match next(w).await {
            WatchMessage::Events { events, .. } => out.extend(events),
            WatchMessage::Progress { .. } => {}
            other => panic!("unexpected watch message {other:?}"),
        }
    }
    out
}

pub fn put_op(key: &str, value: &str) -> RequestOp {
    RequestOp::Put(PutRequest { key: key.into(), value: value.into(), ..Default::default() })
}

pub fn get_op(key: &str) -> RequestOp {
    RequestOp::Range(RangeRequest { key: key.into(), ..Default::default() })
}

pub fn del_op(key: &str) -> RequestOp {
    RequestOp::DeleteRange(DeleteRangeRequest { key: key.into(), ..Default::default() })
}

pub fn cmp(key: &str, target: CompareTarget, op: CompareOp) -> Compare {
    Compare { key: key.into(), range_end: Vec::new(), target, op }
}
