//! A Deployment's status: the replica counts `kubectl rollout status` reads, summed over its
//! ReplicaSets, and the `Available` and `Progressing` conditions with the reference's reasons
//! and messages, including when a rollout has made no progress for `progressDeadlineSeconds`.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;

use super::fenceposts::{max_unavailable, replicas};
use super::replicasets::{total_spec, total_status};

pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";
pub const REPLICA_FAILURE: &str = "ReplicaFailure";

pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
pub const RS_UPDATED: &str = "ReplicaSetUpdated";
pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
pub const FAILED_RS_CREATE: &str = "ReplicaSetCreateError";
pub const PAUSED: &str = "DeploymentPaused";
pub const RESUMED: &str = "DeploymentResumed";

/// A condition stamped `now`.
pub fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// The condition of `type_`.
pub fn get<'a>(status: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    status.conditions.as_ref()?.iter().find(|c| c.type_ == type_)
}

/// Removes the condition of `type_`.
pub fn remove(status: &mut DeploymentStatus, type_: &str) {
    if let Some(conditions) = status.conditions.as_mut() {
        conditions.retain(|c| c.type_ != type_);
    }
}

/// The reference's `SetDeploymentCondition`: same status and reason leaves the old one; same
/// status keeps its transition time.
pub fn set(status: &mut DeploymentStatus, mut next: DeploymentCondition) {
    if let Some(current) = get(status, &next.type_) {
        if current.status == next.status && current.reason == next.reason {
            return;
        }
        if current.status == next.status {
            next.last_transition_time = current.last_transition_time.clone();
        }
    }
    remove(status, &next.type_);
    status.conditions.get_or_insert_with(Vec::new).push(next);
}

/// `progressDeadlineSeconds` is set (and not the "never" value).
pub fn has_progress_deadline(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.progress_deadline_seconds).is_some_and(|s| s != i32::MAX)
}

/// The reference's `calculateStatus`: counts from the ReplicaSets, conditions carried over,
/// `Available` recomputed.
pub fn calculate(
    d: &Deployment,
    all: &[ReplicaSet],
    new_rs: Option<&ReplicaSet>,
    now: Timestamp,
) -> DeploymentStatus {
    let (total, ready, available) = total_status(all);
    let updated = new_rs.map_or(0, |rs| rs.status.as_ref().map_or(0, |s| s.replicas));
    let unavailable = (total_spec(all) - available).max(0);
    let current = d.status.clone().unwrap_or_default();
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(total),
        updated_replicas: Some(updated),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        unavailable_replicas: Some(unavailable),
        collision_count: current.collision_count,
        conditions: current.conditions.clone(),
        terminating_replicas: None,
    };
    let next = if available >= replicas(d) - max_unavailable(d) {
        condition(
            AVAILABLE,
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
            now,
        )
    } else {
        condition(
            AVAILABLE,
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
            now,
        )
    };
    set(&mut status, next);
    status
}

/// Every wanted pod is updated and available, and the status is for the current generation.
pub fn complete(d: &Deployment, status: &DeploymentStatus) -> bool {
    let desired = replicas(d);
    status.updated_replicas == Some(desired)
        && status.replicas == Some(desired)
        && status.available_replicas == Some(desired)
        && status.observed_generation >= d.metadata.generation
}

/// Something moved since the status `d` carries: more updated, fewer old, more ready or
/// available pods.
pub fn progressing(d: &Deployment, next: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let n = |v: Option<i32>| v.unwrap_or(0);
    let old_old = n(old.replicas) - n(old.updated_replicas);
    let next_old = n(next.replicas) - n(next.updated_replicas);
    n(next.updated_replicas) > n(old.updated_replicas)
        || next_old < old_old
        || n(next.ready_replicas) > n(old.ready_replicas)
        || n(next.available_replicas) > n(old.available_replicas)
}

/// How long until the progress deadline of `status` passes (`None` without a running clock:
/// no deadline, no Progressing condition, or already complete or timed out).
pub fn until_deadline(
    d: &Deployment,
    status: &DeploymentStatus,
    now: Timestamp,
) -> Option<SignedDuration> {
    if !has_progress_deadline(d) {
        return None;
    }
    let cond = get(status, PROGRESSING)?;
    if matches!(cond.reason.as_deref(), Some(NEW_RS_AVAILABLE) | Some(TIMED_OUT)) {
        return None;
    }
    let seconds = d.spec.as_ref()?.progress_deadline_seconds?;
    let from = cond.last_update_time.as_ref()?.0;
    let deadline = from.checked_add(SignedDuration::from_secs(i64::from(seconds))).ok()?;
    Some(deadline.duration_since(now))
}

/// The reference's `DeploymentTimedOut`.
pub fn timed_out(d: &Deployment, status: &DeploymentStatus, now: Timestamp) -> bool {
    if get(status, PROGRESSING).and_then(|c| c.reason.as_deref()) == Some(TIMED_OUT) {
        return has_progress_deadline(d);
    }
    until_deadline(d, status, now).is_some_and(|left| left.is_negative())
}

/// The reference's `syncRolloutStatus` conditions: complete, progressing, or timed out; and
/// the first `ReplicaFailure` of the ReplicaSets (the new one first) carried over.
pub fn rollout_status(
    d: &Deployment,
    all: &[ReplicaSet],
    new_rs: Option<&ReplicaSet>,
    now: Timestamp,
) -> DeploymentStatus {
    let mut status = calculate(d, all, new_rs, now);
    if !has_progress_deadline(d) {
        remove(&mut status, PROGRESSING);
    }
    let current = d.status.as_ref().and_then(|s| get(s, PROGRESSING)).cloned();
    let is_complete = status.replicas == status.updated_replicas
        && current.as_ref().and_then(|c| c.reason.as_deref()) == Some(NEW_RS_AVAILABLE);
    if has_progress_deadline(d) && !is_complete {
        let subject = match new_rs {
            Some(rs) => format!("ReplicaSet {:?}", rs.name_any()),
            None => format!("Deployment {:?}", d.name_any()),
        };
        if complete(d, &status) {
            let message = format!("{subject} has successfully progressed.");
            set(&mut status, condition(PROGRESSING, "True", NEW_RS_AVAILABLE, message, now));
        } else if progressing(d, &status) {
            let message = format!("{subject} is progressing.");
            let mut next = condition(PROGRESSING, "True", RS_UPDATED, message, now);
            // Progress moves lastUpdateTime even with the same reason (that is the deadline's
            // clock); lastTransitionTime stays while the status stays True.
            if let Some(current) = &current {
                if current.status == "True" {
                    next.last_transition_time = current.last_transition_time.clone();
                }
                remove(&mut status, PROGRESSING);
            }
            set(&mut status, next);
        } else if timed_out(d, &status, now) {
            let message = format!("{subject} has timed out progressing.");
            set(&mut status, condition(PROGRESSING, "False", TIMED_OUT, message, now));
        }
    }
    let failure = new_rs.into_iter().chain(all.iter()).find_map(|rs| {
        let cond =
            rs.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == REPLICA_FAILURE)?;
        Some(DeploymentCondition {
            type_: REPLICA_FAILURE.into(),
            status: cond.status.clone(),
            reason: cond.reason.clone(),
            message: cond.message.clone(),
            last_update_time: cond.last_transition_time.clone(),
            last_transition_time: cond.last_transition_time.clone(),
        })
    });
    match failure {
        Some(failure) => set(&mut status, failure),
        None => remove(&mut status, REPLICA_FAILURE),
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(deadline: i32, progressing_since: i64, now: Timestamp) -> Deployment {
        let since = Time(now.checked_sub(SignedDuration::from_secs(progressing_since)).unwrap());
        let mut d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "d", "generation": 1},
            "spec": {"replicas": 2, "selector": {}, "template": {}, "progressDeadlineSeconds": deadline},
        }))
        .unwrap();
        d.status = Some(DeploymentStatus {
            conditions: Some(vec![DeploymentCondition {
                last_update_time: Some(since.clone()),
                last_transition_time: Some(since),
                ..condition(PROGRESSING, "True", RS_UPDATED, "x".into(), now)
            }]),
            ..Default::default()
        });
        d
    }

    #[test]
    fn no_progress_past_the_deadline_times_out() {
        let now = Timestamp::now();
        let d = deployment(10, 30, now);
        let status = rollout_status(&d, &[], None, now);
        let cond = get(&status, PROGRESSING).unwrap();
        assert_eq!((cond.status.as_str(), cond.reason.as_deref()), ("False", Some(TIMED_OUT)));
        assert_eq!(
            get(&status, AVAILABLE).unwrap().reason.as_deref(),
            Some("MinimumReplicasUnavailable")
        );

        let d = deployment(60, 30, now);
        let status = rollout_status(&d, &[], None, now);
        assert_eq!(get(&status, PROGRESSING).unwrap().reason.as_deref(), Some(RS_UPDATED));
        let left = until_deadline(&d, &status, now).unwrap();
        assert!(left.as_secs() > 0 && left.as_secs() <= 30);
    }

    #[test]
    fn set_keeps_the_transition_time_when_the_status_stays() {
        let t0 = Timestamp::from_second(1_000).unwrap();
        let t1 = Timestamp::from_second(2_000).unwrap();
        let mut status = DeploymentStatus::default();
        set(&mut status, condition(PROGRESSING, "True", RS_UPDATED, "a".into(), t0));
        set(&mut status, condition(PROGRESSING, "True", NEW_RS_AVAILABLE, "b".into(), t1));
        let cond = get(&status, PROGRESSING).unwrap();
        assert_eq!(cond.last_transition_time, Some(Time(t0)));
        assert_eq!(cond.reason.as_deref(), Some(NEW_RS_AVAILABLE));
    }
}
