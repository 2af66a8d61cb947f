//! The Recreate strategy (the reference's `recreate.go`): every old ReplicaSet is scaled to
//! zero, and only once none of their pods runs any more (terminating pods included) is the
//! new ReplicaSet created and scaled to `replicas`, so old and new pods never run together.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;

use super::fenceposts::replicas;
use super::progress;
use super::replicasets::{self, spec_replicas, status_replicas};
use super::sync::Sync;
use crate::controllers::util::pod;
use crate::machinery::{Action, ControlError};

/// The Deployment's pods by the uid of the ReplicaSet controlling them.
pub type PodMap = HashMap<String, Vec<Arc<Pod>>>;

/// One Recreate step, then the status.
pub async fn rollout(sync: &mut Sync<'_>, pods: &PodMap) -> Result<Action, ControlError> {
    // The new ReplicaSet is not created yet: nothing may start before the old pods are gone.
    sync.new_and_old(false).await?;
    let (_, old) = sync.split();
    let mut scaled_down = false;
    for rs in replicasets::active(&old) {
        scaled_down |= sync.scale(&rs, 0).await?.0;
    }
    if scaled_down {
        return sync.sync_rollout_status().await;
    }
    let (new_rs, old) = sync.split();
    if old_pods_running(new_rs.as_ref(), &old, pods) {
        return sync.sync_rollout_status().await;
    }
    let (new_rs, old) = match new_rs {
        Some(new_rs) => (new_rs, old),
        None => match sync.new_and_old(true).await? {
            (Some(new_rs), old) => (new_rs, old),
            (None, _) => {
                return Err(ControlError::Other(
                    "the new replica set is missing after its creation".into(),
                ))
            }
        },
    };
    let desired = replicas(&sync.d);
    if spec_replicas(&new_rs) != desired {
        sync.scale(&new_rs, desired).await?;
    }
    let status = sync.d.status.clone().unwrap_or_default();
    if progress::complete(&sync.d, &status) {
        sync.cleanup(&old).await?;
    }
    sync.sync_rollout_status().await
}

/// Whether an old ReplicaSet still reports pods, or any pod of one is not terminal (a pod in
/// phase Unknown counts: it may still run).
pub fn old_pods_running(new_rs: Option<&ReplicaSet>, old: &[ReplicaSet], pods: &PodMap) -> bool {
    if old.iter().map(|rs| status_replicas(rs).0).sum::<i32>() > 0 {
        return true;
    }
    let new_uid = new_rs.and_then(|rs| rs.metadata.uid.as_deref());
    pods.iter()
        .filter(|(uid, _)| Some(uid.as_str()) != new_uid)
        .any(|(_, pods)| pods.iter().any(|p| !pod::is_terminal(p)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rs(uid: &str, status_replicas: i32) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": uid, "uid": uid},
            "spec": {"replicas": 0, "selector": {}},
            "status": {"replicas": status_replicas},
        }))
        .unwrap()
    }

    fn pod(phase: &str, terminating: bool) -> Arc<Pod> {
        let mut p: Pod = serde_json::from_value(json!({"status": {"phase": phase}})).unwrap();
        if terminating {
            p.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::now(),
                ));
        }
        Arc::new(p)
    }

    #[test]
    fn old_pods_count_until_gone_or_terminal() {
        let new = rs("new", 0);
        let old = rs("old", 0);
        let mut pods = PodMap::new();
        assert!(!old_pods_running(Some(&new), std::slice::from_ref(&old), &pods));
        // The old ReplicaSet still reports a pod.
        assert!(old_pods_running(Some(&new), &[rs("old", 1)], &pods));
        // A terminating old pod still runs; a finished one does not; new pods do not count.
        pods.insert("old".into(), vec![pod("Running", true)]);
        assert!(old_pods_running(Some(&new), std::slice::from_ref(&old), &pods));
        pods.insert("old".into(), vec![pod("Succeeded", false), pod("Failed", true)]);
        pods.insert("new".into(), vec![pod("Running", false)]);
        assert!(!old_pods_running(Some(&new), std::slice::from_ref(&old), &pods));
        pods.insert("old".into(), vec![pod("Unknown", false)]);
        assert!(old_pods_running(Some(&new), &[old], &pods));
    }
}
