//! The status a StatefulSet reports (the reference's `computeReplicaStatus` and
//! `completeRollingUpdate`): pods created, Running and Ready, available for
//! `minReadySeconds`, at the current and at the update revision; the two revision names, the
//! collision count and the generation acted on. Once a RollingUpdate has every pod updated and
//! ready, the update revision becomes the current one — what `kubectl rollout status` waits for.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

use super::identity::pod_revision;
use super::plan::{running_and_available, running_and_ready, Policy};
use crate::controllers::util::pod;

/// The revisions a status names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revisions {
    pub current: String,
    pub update: String,
    pub collision_count: i32,
}

/// The status `set` should report for its claimed `pods` (terminating ones included).
pub fn calculate(
    set: &StatefulSet,
    pods: &[Arc<Pod>],
    revisions: &Revisions,
    now: Timestamp,
) -> StatefulSetStatus {
    let policy = Policy::of(set);
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    // The API server gives every pod a phase on creation; one without has not been written.
    let created: Vec<&Arc<Pod>> = pods.iter().filter(|p| !pod::phase(p).is_empty()).collect();
    let ready: Vec<&&Arc<Pod>> = created.iter().filter(|p| running_and_ready(p)).collect();
    let available =
        ready.iter().filter(|p| running_and_available(p, policy.min_ready_seconds, now)).count();
    let live = || created.iter().filter(|p| !pod::is_terminating(p));
    let at = |revision: &str| live().filter(|p| pod_revision(p) == revision).count();
    let mut status = StatefulSetStatus {
        replicas: count(created.len()),
        ready_replicas: Some(count(ready.len())),
        available_replicas: Some(count(available)),
        current_replicas: Some(count(at(&revisions.current))),
        updated_replicas: Some(count(at(&revisions.update))),
        current_revision: Some(revisions.current.clone()),
        update_revision: Some(revisions.update.clone()),
        collision_count: Some(revisions.collision_count),
        observed_generation: set.metadata.generation,
        conditions: set.status.as_ref().and_then(|s| s.conditions.clone()),
    };
    let complete = policy.partition.is_some()
        && status.updated_replicas == Some(status.replicas)
        && status.ready_replicas == Some(status.replicas);
    if complete {
        status.current_replicas = status.updated_replicas;
        status.current_revision = status.update_revision.clone();
    }
    status
}

/// Whether `next` differs from what the set reports now.
pub fn changed(set: &StatefulSet, next: &StatefulSetStatus) -> bool {
    set.status.as_ref() != Some(next)
}

/// The merge patch that writes `status`.
pub fn patch(status: &StatefulSetStatus) -> Value {
    json!({"status": {
        "replicas": status.replicas,
        "readyReplicas": status.ready_replicas,
        "availableReplicas": status.available_replicas,
        "currentReplicas": status.current_replicas,
        "updatedReplicas": status.updated_replicas,
        "currentRevision": status.current_revision,
        "updateRevision": status.update_revision,
        "collisionCount": status.collision_count,
        "observedGeneration": status.observed_generation,
    }})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::statefulset::identity::REVISION_LABEL;
    use k8s_openapi::api::apps::v1::StatefulSetSpec;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use std::collections::BTreeMap;

    fn pod(revision: &str, phase: &str, ready: bool) -> Arc<Pod> {
        let mut p = Pod::default();
        p.metadata.labels = Some(BTreeMap::from([(REVISION_LABEL.into(), revision.into())]));
        p.status = Some(PodStatus {
            phase: Some(phase.into()),
            conditions: ready.then(|| {
                vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_transition_time: Some(Time(Timestamp::UNIX_EPOCH)),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        });
        Arc::new(p)
    }

    fn set(replicas: i32) -> StatefulSet {
        let mut set = StatefulSet::default();
        set.metadata.generation = Some(3);
        set.spec = Some(StatefulSetSpec { replicas: Some(replicas), ..Default::default() });
        set
    }

    fn revisions() -> Revisions {
        Revisions { current: "old".into(), update: "new".into(), collision_count: 0 }
    }

    #[test]
    fn counts_pods_by_readiness_and_revision() {
        let pods =
            [pod("old", "Running", true), pod("new", "Running", false), pod("new", "", false)];
        let s = calculate(&set(3), &pods, &revisions(), Timestamp::now());
        assert_eq!(s.replicas, 2, "a pod without a phase is not counted");
        assert_eq!((s.ready_replicas, s.available_replicas), (Some(1), Some(1)));
        assert_eq!((s.current_replicas, s.updated_replicas), (Some(1), Some(1)));
        assert_eq!(s.current_revision.as_deref(), Some("old"));
        assert_eq!(s.update_revision.as_deref(), Some("new"));
        assert_eq!(s.observed_generation, Some(3));
    }

    #[test]
    fn a_finished_rolling_update_makes_the_update_revision_current() {
        let pods = [pod("new", "Running", true), pod("new", "Running", true)];
        let s = calculate(&set(2), &pods, &revisions(), Timestamp::now());
        assert_eq!(s.current_revision.as_deref(), Some("new"));
        assert_eq!(s.current_replicas, Some(2));
        // Not while a pod is unready.
        let pods = [pod("new", "Running", true), pod("new", "Running", false)];
        let s = calculate(&set(2), &pods, &revisions(), Timestamp::now());
        assert_eq!(s.current_revision.as_deref(), Some("old"));
    }
}
