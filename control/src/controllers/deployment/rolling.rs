//! The RollingUpdate strategy (the reference's `rolling.go`): each sync first grows the new
//! ReplicaSet as far as `maxSurge` allows; only when it cannot grow does it shrink the old
//! ones, as far as `maxUnavailable` allows given the pods available now. Old ReplicaSets with
//! unavailable pods are shrunk first (their pods add nothing to availability), oldest first.
//! Once the rollout is complete, old revisions beyond `revisionHistoryLimit` are deleted.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};

use super::fenceposts::{max_unavailable, replicas};
use super::progress;
use super::replicasets::{self, spec_replicas, status_replicas, total_spec, total_status};
use super::sync::Sync;
use crate::machinery::{Action, ControlError};

/// One rolling step, then the status.
pub async fn rollout(sync: &mut Sync<'_>) -> Result<Action, ControlError> {
    let (new_rs, _) = sync.new_and_old(true).await?;
    if new_rs.is_none() {
        return Err(ControlError::Other(
            "the new replica set is missing after its creation".into(),
        ));
    }
    if reconcile_new(sync).await? {
        return sync.sync_rollout_status().await;
    }
    if reconcile_old(sync).await? {
        return sync.sync_rollout_status().await;
    }
    let status = sync.d.status.clone().unwrap_or_default();
    if progress::complete(&sync.d, &status) {
        let (_, old) = sync.split();
        sync.cleanup(&old).await?;
    }
    sync.sync_rollout_status().await
}

/// The size the new ReplicaSet should have now, if it differs from its size.
pub fn new_target(d: &Deployment, all: &[ReplicaSet], new_rs: &ReplicaSet) -> Option<i32> {
    let desired = replicas(d);
    let size = spec_replicas(new_rs);
    let target = match size.cmp(&desired) {
        std::cmp::Ordering::Equal => return None,
        std::cmp::Ordering::Greater => desired,
        std::cmp::Ordering::Less => replicasets::new_rs_new_replicas(d, all, new_rs),
    };
    (target != size).then_some(target)
}

/// Grows (or trims) the new ReplicaSet; true if its size changed.
async fn reconcile_new(sync: &mut Sync<'_>) -> Result<bool, ControlError> {
    let (new_rs, old) = sync.split();
    let Some(new_rs) = new_rs else { return Ok(false) };
    let all: Vec<ReplicaSet> = old.into_iter().chain([new_rs.clone()]).collect();
    let Some(target) = new_target(&sync.d, &all, &new_rs) else { return Ok(false) };
    Ok(sync.scale(&new_rs, target).await?.0)
}

/// How many pods the old ReplicaSets may lose now without going below the availability
/// `maxUnavailable` guarantees (counting the new ReplicaSet's unavailable pods as lost).
pub fn max_scaled_down(d: &Deployment, all: &[ReplicaSet], new_rs: &ReplicaSet) -> i32 {
    let min_available = replicas(d) - max_unavailable(d);
    let new_unavailable = spec_replicas(new_rs) - status_replicas(new_rs).2;
    total_spec(all) - min_available - new_unavailable
}

/// The reference's `cleanupUnhealthyReplicas`: new sizes for old ReplicaSets (oldest first)
/// that drop their unavailable pods, at most `limit` pods in all.
pub fn plan_unhealthy_cleanup(old: &[ReplicaSet], limit: i32) -> Vec<(ReplicaSet, i32)> {
    let mut sorted = old.to_vec();
    sorted.sort_by(replicasets::by_creation);
    let mut plan = Vec::new();
    let mut total = 0;
    for rs in sorted {
        if total >= limit {
            break;
        }
        let size = spec_replicas(&rs);
        let available = status_replicas(&rs).2;
        if size == 0 || size <= available {
            continue;
        }
        let count = (limit - total).min(size - available);
        total += count;
        plan.push((rs, size - count));
    }
    plan
}

/// The reference's `scaleDownOldReplicaSetsForRollingUpdate`: new sizes for old ReplicaSets
/// (oldest first) that remove the available pods above `replicas - maxUnavailable`.
pub fn plan_scale_down(
    d: &Deployment,
    all: &[ReplicaSet],
    old: &[ReplicaSet],
) -> Vec<(ReplicaSet, i32)> {
    let min_available = replicas(d) - max_unavailable(d);
    let available = total_status(all).2;
    if available <= min_available {
        return Vec::new();
    }
    let mut sorted = old.to_vec();
    sorted.sort_by(replicasets::by_creation);
    let wanted = available - min_available;
    let mut plan = Vec::new();
    let mut total = 0;
    for rs in sorted {
        if total >= wanted {
            break;
        }
        let size = spec_replicas(&rs);
        if size == 0 {
            continue;
        }
        let count = size.min(wanted - total);
        total += count;
        plan.push((rs, size - count));
    }
    plan
}

/// Shrinks the old ReplicaSets; true if any shrank.
async fn reconcile_old(sync: &mut Sync<'_>) -> Result<bool, ControlError> {
    let (new_rs, old) = sync.split();
    let Some(new_rs) = new_rs else { return Ok(false) };
    let old_active = replicasets::active(&old);
    if total_spec(&old_active) == 0 {
        return Ok(false);
    }
    let all: Vec<ReplicaSet> = old.into_iter().chain([new_rs.clone()]).collect();
    let limit = max_scaled_down(&sync.d, &all, &new_rs);
    if limit <= 0 {
        return Ok(false);
    }
    let mut scaled_down = false;
    for (rs, size) in plan_unhealthy_cleanup(&old_active, limit) {
        scaled_down |= sync.scale(&rs, size).await?.0;
    }
    // The sizes as just written.
    let (new_rs, old) = sync.split();
    let old_active = replicasets::active(&old);
    let all: Vec<ReplicaSet> = old_active.iter().cloned().chain(new_rs).collect();
    for (rs, size) in plan_scale_down(&sync.d, &all, &old_active) {
        scaled_down |= sync.scale(&rs, size).await?.0;
    }
    Ok(scaled_down)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;
    use kube::ResourceExt;
    use serde_json::json;

    fn deployment(replicas: i32, surge: i32, unavailable: i32) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "d"},
            "spec": {"replicas": replicas, "selector": {}, "template": {},
                     "strategy": {"type": "RollingUpdate",
                                  "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}}
        }))
        .unwrap()
    }

    fn rs(name: &str, created: i64, size: i32, available: i32) -> ReplicaSet {
        let mut rs: ReplicaSet = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"replicas": size, "selector": {}},
            "status": {"replicas": size, "availableReplicas": available},
        }))
        .unwrap();
        rs.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created).unwrap()));
        rs
    }

    fn sizes(plan: Vec<(ReplicaSet, i32)>) -> Vec<(String, i32)> {
        plan.into_iter().map(|(rs, n)| (rs.name_any(), n)).collect()
    }

    #[test]
    fn the_new_replica_set_grows_by_the_surge_and_is_trimmed_to_replicas() {
        let d = deployment(3, 1, 0);
        let old = rs("old", 1, 3, 3);
        let new = rs("new", 2, 0, 0);
        assert_eq!(new_target(&d, &[old.clone(), new.clone()], &new), Some(1));
        let new_full = rs("new", 2, 1, 0);
        assert_eq!(
            new_target(&d, &[old, new_full.clone()], &new_full),
            None,
            "4 pods = 3 + surge 1"
        );
        let too_big = rs("new", 2, 5, 0);
        assert_eq!(new_target(&d, std::slice::from_ref(&too_big), &too_big), Some(3));
    }

    #[test]
    fn old_pods_go_only_as_fast_as_availability_allows() {
        // 3 replicas, surge 1, unavailable 0: old 3 available + new 1 not yet available.
        let d = deployment(3, 1, 0);
        let old = rs("old", 1, 3, 3);
        let new = rs("new", 2, 1, 0);
        let all = [old.clone(), new.clone()];
        // 4 pods - 3 needed - 1 unavailable new one: nothing may go.
        assert_eq!(max_scaled_down(&d, &all, &new), 0);
        // The new pod became available: one old pod may go.
        let new = rs("new", 2, 1, 1);
        let all = [old.clone(), new.clone()];
        assert_eq!(max_scaled_down(&d, &all, &new), 1);
        assert_eq!(sizes(plan_scale_down(&d, &all, &[old])), [("old".to_string(), 2)]);
    }

    #[test]
    fn unhealthy_old_pods_go_first_oldest_replica_set_first() {
        let older = rs("older", 1, 2, 0);
        let old = rs("old", 5, 3, 1);
        let plan = sizes(plan_unhealthy_cleanup(&[old.clone(), older.clone()], 3));
        assert_eq!(plan, [("older".to_string(), 0), ("old".to_string(), 2)]);
        assert!(plan_unhealthy_cleanup(&[rs("fine", 1, 2, 2)], 5).is_empty(), "all available");
    }

    #[test]
    fn scale_down_stops_at_the_minimum_available() {
        // 4 replicas, unavailable 1: at least 3 available; 5 are available now -> 2 may go,
        // from the oldest replica set first.
        let d = deployment(4, 1, 1);
        let a = rs("a", 1, 1, 1);
        let b = rs("b", 2, 2, 2);
        let new = rs("new", 3, 2, 2);
        let plan = sizes(plan_scale_down(&d, &[a.clone(), b.clone(), new], &[b, a]));
        assert_eq!(plan, [("a".to_string(), 0), ("b".to_string(), 1)]);
    }
}
