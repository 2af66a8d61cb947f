//! What one sync of a StatefulSet does to its pods (the reference's `updateStatefulSet`),
//! as a pure plan over the observed pods so the ordering rules can be tested without a server:
//!
//! 1. Every ordinal in `[start, start + replicas)` is a replica slot; pods outside it are
//!    condemned. A finished (Failed/Succeeded) replica is deleted to be recreated; a missing
//!    one is created, from the current revision below the partition and the update revision
//!    from it on.
//! 2. Condemned pods are deleted from the highest ordinal down.
//! 3. With RollingUpdate, the replica with the highest ordinal at or above the partition that
//!    is not at the update revision is deleted (it comes back at the update revision on a later
//!    sync), one at a time, waiting for each to be healthy again; OnDelete stops before this.
//!
//! With `OrderedReady` (monotonic) the plan stops at the first step that must wait: after one
//! creation, at a replica that is not Running and Ready (and available for `minReadySeconds`),
//! at a terminating pod, or after one deletion. With `Parallel` steps 1 and 2 take every
//! action at once; step 3 is one pod at a time either way. (`maxUnavailable` is the alpha
//! `MaxUnavailableStatefulSet` gate, off by default in the reference, and is ignored.)

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;

use super::identity::{self, missing_identity_labels, ordinal_of, pod_revision};
use crate::controllers::util::pod;

/// Which of the two revisions a new pod is made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Current,
    Update,
}

/// One action of a sync.
#[derive(Debug, Clone)]
pub enum Step {
    /// Create the pod of `ordinal` (its claims first) from the `revision` template.
    Create { ordinal: i32, revision: Which },
    /// Delete a replica whose containers finished, so that it is recreated.
    DeleteFinished(Arc<Pod>),
    /// Delete a pod outside the ordinal range (scale down).
    DeleteCondemned(Arc<Pod>),
    /// Delete a replica not at the update revision (rolling update).
    DeleteOutdated(Arc<Pod>),
    /// Create the claims a Pending replica mounts but that are missing.
    CreateMissingClaims(Arc<Pod>),
    /// Add the identity labels a replica lacks.
    FixIdentity(Arc<Pod>, BTreeMap<String, String>),
}

/// The settings of a set the plan depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub replicas: i32,
    /// `spec.ordinals.start`.
    pub start: i32,
    /// `podManagementPolicy: OrderedReady`.
    pub monotonic: bool,
    /// The RollingUpdate partition; `None` for OnDelete.
    pub partition: Option<i32>,
    pub min_ready_seconds: i32,
}

impl Policy {
    /// The policy `set` asks for (the API server has defaulted the spec).
    pub fn of(set: &StatefulSet) -> Policy {
        let spec = set.spec.as_ref();
        let strategy = spec.and_then(|s| s.update_strategy.as_ref());
        let on_delete = strategy.and_then(|s| s.type_.as_deref()) == Some("OnDelete");
        let partition = strategy.and_then(|s| s.rolling_update.as_ref()).and_then(|r| r.partition);
        Policy {
            replicas: spec.and_then(|s| s.replicas).unwrap_or(1).max(0),
            start: spec.and_then(|s| s.ordinals.as_ref()).and_then(|o| o.start).unwrap_or(0).max(0),
            monotonic: spec.and_then(|s| s.pod_management_policy.as_deref()) != Some("Parallel"),
            partition: (!on_delete).then(|| partition.unwrap_or(0).max(0)),
            min_ready_seconds: spec.and_then(|s| s.min_ready_seconds).unwrap_or(0),
        }
    }

    /// The revision a new pod of `ordinal` is made from: below the partition the current one.
    fn revision_for(&self, ordinal: i32) -> Which {
        match self.partition {
            Some(partition) if ordinal < self.start.saturating_add(partition) => Which::Current,
            _ => Which::Update,
        }
    }
}

/// The reference's `isRunningAndReady`.
pub fn running_and_ready(p: &Pod) -> bool {
    pod::phase(p) == "Running" && pod::is_ready(p)
}

/// The reference's `isRunningAndAvailable`.
pub fn running_and_available(p: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    pod::phase(p) == "Running" && pod::is_available(p, min_ready_seconds, now)
}

/// Running, Ready and not terminating (the reference's `isHealthy`).
fn healthy(p: &Pod) -> bool {
    running_and_ready(p) && !pod::is_terminating(p)
}

/// A replica slot: the pod that fills it, or the revision a pod created for it gets.
enum Slot<'a> {
    Pod(&'a Arc<Pod>),
    Missing(Which),
}

/// The steps one sync takes for `set` with its claimed `pods` (terminating ones included),
/// given the name of its update revision.
pub fn plan(
    set: &StatefulSet,
    pods: &[Arc<Pod>],
    update_revision: &str,
    now: Timestamp,
) -> Vec<Step> {
    let policy = Policy::of(set);
    let end = policy.start.saturating_add(policy.replicas);
    let mut slots: BTreeMap<i32, &Arc<Pod>> = BTreeMap::new();
    let mut condemned: Vec<(i32, &Arc<Pod>)> = Vec::new();
    for p in pods {
        match ordinal_of(set, p) {
            Some(ordinal) if (policy.start..end).contains(&ordinal) => {
                slots.insert(ordinal, p);
            }
            Some(ordinal) => condemned.push((ordinal, p)),
            None => {}
        }
    }
    condemned.sort_by_key(|(ordinal, _)| std::cmp::Reverse(*ordinal));
    let replicas: Vec<(i32, Slot)> = (policy.start..end)
        .map(|ordinal| match slots.get(&ordinal) {
            Some(p) => (ordinal, Slot::Pod(p)),
            None => (ordinal, Slot::Missing(policy.revision_for(ordinal))),
        })
        .collect();
    // The first unhealthy pod may be scaled down even in monotonic mode: replicas in order
    // (a missing one counts), else condemned pods from the lowest ordinal.
    let first_unhealthy = replicas
        .iter()
        .find_map(|(ordinal, slot)| match slot {
            Slot::Pod(p) if healthy(p) => None,
            _ => Some(*ordinal),
        })
        .or_else(|| condemned.iter().rev().find(|(_, p)| !healthy(p)).map(|(o, _)| *o));

    let mut steps = Vec::new();
    let min_ready = policy.min_ready_seconds;
    for (ordinal, slot) in &replicas {
        let p = match slot {
            Slot::Missing(revision) => {
                steps.push(Step::Create { ordinal: *ordinal, revision: *revision });
                if policy.monotonic {
                    return steps;
                }
                continue;
            }
            Slot::Pod(p) => *p,
        };
        if pod::is_terminal(p) {
            if !pod::is_terminating(p) {
                steps.push(Step::DeleteFinished(p.clone()));
            }
            if policy.monotonic {
                return steps;
            }
            continue;
        }
        if pod::phase(p) == "Pending" && !identity::claim_templates(set).is_empty() {
            steps.push(Step::CreateMissingClaims(p.clone()));
        }
        if policy.monotonic
            && (pod::is_terminating(p)
                || !running_and_ready(p)
                || !running_and_available(p, min_ready, now))
        {
            return steps;
        }
        if let Some(labels) = missing_identity_labels(p, *ordinal) {
            steps.push(Step::FixIdentity(p.clone(), labels));
        }
    }

    for (ordinal, p) in &condemned {
        if pod::is_terminating(p) {
            if policy.monotonic {
                return steps;
            }
            continue;
        }
        let first = first_unhealthy == Some(*ordinal);
        if policy.monotonic && !first && !running_and_available(p, min_ready, now) {
            return steps;
        }
        steps.push(Step::DeleteCondemned((*p).clone()));
        if policy.monotonic {
            return steps;
        }
    }

    let Some(partition) = policy.partition else { return steps };
    for (_, slot) in replicas.iter().rev().take_while(|(o, _)| *o >= policy.start + partition) {
        let p = match slot {
            // Created in this sync (Parallel): not healthy yet, so the update waits.
            Slot::Missing(_) => return steps,
            Slot::Pod(p) => *p,
        };
        if pod_revision(p) != update_revision && !pod::is_terminating(p) {
            steps.push(Step::DeleteOutdated(p.clone()));
            return steps;
        }
        if !healthy(p) {
            return steps;
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{
        RollingUpdateStatefulSetStrategy, StatefulSetOrdinals, StatefulSetSpec,
        StatefulSetUpdateStrategy,
    };
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    const NEW: &str = "web-new";
    const OLD: &str = "web-old";

    fn set(replicas: i32, policy: &str, partition: Option<i32>) -> StatefulSet {
        StatefulSet {
            metadata: ObjectMeta { name: Some("web".into()), ..Default::default() },
            spec: Some(StatefulSetSpec {
                replicas: Some(replicas),
                pod_management_policy: Some(policy.into()),
                update_strategy: Some(match partition {
                    Some(p) => StatefulSetUpdateStrategy {
                        type_: Some("RollingUpdate".into()),
                        rolling_update: Some(RollingUpdateStatefulSetStrategy {
                            partition: Some(p),
                            max_unavailable: None,
                        }),
                    },
                    None => StatefulSetUpdateStrategy {
                        type_: Some("OnDelete".into()),
                        rolling_update: None,
                    },
                }),
                ..Default::default()
            }),
            status: None,
        }
    }

    /// A pod `web-<ordinal>` at `revision` in `phase`, Ready when `ready`.
    fn pod(ordinal: i32, revision: &str, phase: &str, ready: bool) -> Arc<Pod> {
        let mut p = Pod::default();
        let name = format!("web-{ordinal}");
        p.metadata.labels = Some(BTreeMap::from([
            (identity::REVISION_LABEL.to_string(), revision.to_string()),
            (identity::POD_NAME_LABEL.to_string(), name.clone()),
            (identity::POD_INDEX_LABEL.to_string(), ordinal.to_string()),
        ]));
        p.metadata.name = Some(name);
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

    fn ready(ordinal: i32, revision: &str) -> Arc<Pod> {
        pod(ordinal, revision, "Running", true)
    }

    fn terminating(p: Arc<Pod>) -> Arc<Pod> {
        let mut p = (*p).clone();
        p.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        Arc::new(p)
    }

    /// The steps as short strings: `create 1 update`, `delete-condemned web-3`, …
    fn show(steps: &[Step]) -> Vec<String> {
        let name = |p: &Arc<Pod>| p.metadata.name.clone().unwrap_or_default();
        steps
            .iter()
            .map(|s| match s {
                Step::Create { ordinal, revision } => format!("create {ordinal} {revision:?}"),
                Step::DeleteFinished(p) => format!("delete-finished {}", name(p)),
                Step::DeleteCondemned(p) => format!("delete-condemned {}", name(p)),
                Step::DeleteOutdated(p) => format!("delete-outdated {}", name(p)),
                Step::CreateMissingClaims(p) => format!("claims {}", name(p)),
                Step::FixIdentity(p, _) => format!("identity {}", name(p)),
            })
            .collect()
    }

    fn run(set: &StatefulSet, pods: &[Arc<Pod>]) -> Vec<String> {
        show(&plan(set, pods, NEW, Timestamp::now()))
    }

    #[test]
    fn ordered_ready_creates_one_pod_after_its_predecessors_are_ready() {
        let s = set(3, "OrderedReady", Some(0));
        assert_eq!(run(&s, &[]), ["create 0 Update"]);
        // web-0 exists but is not Ready yet: nothing to do.
        assert!(run(&s, &[pod(0, NEW, "Pending", false)]).is_empty());
        assert!(run(&s, &[pod(0, NEW, "Running", false)]).is_empty());
        assert_eq!(run(&s, &[ready(0, NEW)]), ["create 1 Update"]);
        assert_eq!(run(&s, &[ready(0, NEW), ready(1, NEW)]), ["create 2 Update"]);
        assert!(run(&s, &[ready(0, NEW), ready(1, NEW), ready(2, NEW)]).is_empty());
    }

    #[test]
    fn ordered_ready_honours_min_ready_seconds_and_ordinal_start() {
        let mut s = set(2, "OrderedReady", Some(0));
        let spec = s.spec.as_mut().unwrap();
        spec.ordinals = Some(StatefulSetOrdinals { start: Some(5) });
        assert_eq!(run(&s, &[]), ["create 5 Update"]);
        // web-0 is outside [5, 7): condemned, and deleted once the replicas are fine.
        assert_eq!(
            run(&s, &[ready(0, NEW), ready(5, NEW), ready(6, NEW)]),
            ["delete-condemned web-0"]
        );
        s.spec.as_mut().unwrap().min_ready_seconds = Some(10);
        // Ready since just now: not available for 10 s, so web-6 waits.
        let mut fresh = (*ready(5, NEW)).clone();
        fresh.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].last_transition_time =
            Some(Time(Timestamp::now()));
        assert!(run(&s, &[Arc::new(fresh)]).is_empty());
        assert_eq!(run(&s, &[ready(5, NEW)]), ["create 6 Update"]);
    }

    #[test]
    fn parallel_creates_every_missing_pod_at_once() {
        let s = set(3, "Parallel", Some(0));
        assert_eq!(run(&s, &[]), ["create 0 Update", "create 1 Update", "create 2 Update"]);
        assert_eq!(
            run(&s, &[pod(1, NEW, "Pending", false)]),
            ["create 0 Update", "create 2 Update"]
        );
    }

    #[test]
    fn failed_pods_are_deleted_to_be_recreated() {
        let s = set(2, "OrderedReady", Some(0));
        let failed = pod(0, NEW, "Failed", false);
        assert_eq!(run(&s, &[failed.clone(), ready(1, NEW)]), ["delete-finished web-0"]);
        // Already being deleted: wait for it to be gone.
        assert!(run(&s, &[terminating(failed), ready(1, NEW)]).is_empty());
        assert_eq!(run(&s, &[ready(1, NEW)]), ["create 0 Update"]);
    }

    #[test]
    fn scale_down_removes_the_highest_ordinal_first_one_at_a_time() {
        let s = set(1, "OrderedReady", Some(0));
        let pods = [ready(0, NEW), ready(1, NEW), ready(2, NEW)];
        assert_eq!(run(&s, &pods), ["delete-condemned web-2"]);
        // web-2 terminating: web-1 waits for it.
        let pods = [ready(0, NEW), ready(1, NEW), terminating(ready(2, NEW))];
        assert!(run(&s, &pods).is_empty());
        assert_eq!(run(&s, &[ready(0, NEW), ready(1, NEW)]), ["delete-condemned web-1"]);
        // An unhealthy replica blocks the scale down.
        assert!(run(&s, &[pod(0, NEW, "Running", false), ready(1, NEW)]).is_empty());
        // Parallel deletes every condemned pod at once.
        let p = set(1, "Parallel", Some(0));
        let pods = [ready(0, NEW), ready(1, NEW), ready(2, NEW)];
        assert_eq!(run(&p, &pods), ["delete-condemned web-2", "delete-condemned web-1"]);
    }

    #[test]
    fn an_unhealthy_condemned_pod_blocks_unless_it_is_the_first_unhealthy() {
        let s = set(1, "OrderedReady", Some(0));
        // web-2 is healthy and goes first; web-1 (unready) is the first unhealthy one.
        let pods = [ready(0, NEW), pod(1, NEW, "Running", false), ready(2, NEW)];
        assert_eq!(run(&s, &pods), ["delete-condemned web-2"]);
        let pods = [ready(0, NEW), pod(1, NEW, "Running", false)];
        assert_eq!(run(&s, &pods), ["delete-condemned web-1"]);
        // web-2 unready but web-1 is the first unhealthy: web-2 blocks.
        let pods = [ready(0, NEW), pod(1, NEW, "Running", false), pod(2, NEW, "Pending", false)];
        assert!(run(&s, &pods).is_empty());
    }

    #[test]
    fn rolling_update_goes_from_the_highest_ordinal_down_to_the_partition() {
        let s = set(4, "OrderedReady", Some(2));
        let old = [ready(0, OLD), ready(1, OLD), ready(2, OLD), ready(3, OLD)];
        assert_eq!(run(&s, &old), ["delete-outdated web-3"]);
        // web-3 gone: it is recreated at the update revision.
        assert_eq!(run(&s, &old[..3]), ["create 3 Update"]);
        // web-3 new but not ready: the update waits.
        let pods = [ready(0, OLD), ready(1, OLD), ready(2, OLD), pod(3, NEW, "Running", false)];
        assert!(run(&s, &pods).is_empty());
        let pods = [ready(0, OLD), ready(1, OLD), ready(2, OLD), ready(3, NEW)];
        assert_eq!(run(&s, &pods), ["delete-outdated web-2"]);
        // Below the partition nothing is touched, and a recreated pod there stays old.
        let pods = [ready(0, OLD), ready(1, OLD), ready(2, NEW), ready(3, NEW)];
        assert!(run(&s, &pods).is_empty());
        assert_eq!(run(&s, &pods[1..]), ["create 0 Current"]);
    }

    #[test]
    fn parallel_updates_one_pod_at_a_time_too_and_on_delete_never() {
        let s = set(2, "Parallel", Some(0));
        assert_eq!(run(&s, &[ready(0, OLD), ready(1, OLD)]), ["delete-outdated web-1"]);
        assert!(run(&s, &[ready(0, OLD), pod(1, NEW, "Running", false)]).is_empty());
        let s = set(2, "OrderedReady", None);
        assert!(run(&s, &[ready(0, OLD), ready(1, OLD)]).is_empty());
        // OnDelete: a deleted pod comes back at the update revision.
        assert_eq!(run(&s, &[ready(1, OLD)]), ["create 0 Update"]);
    }

    #[test]
    fn pods_lacking_identity_labels_are_fixed_and_pending_ones_get_their_claims() {
        let s = set(1, "OrderedReady", Some(0));
        let mut p = (*ready(0, NEW)).clone();
        p.metadata.labels.as_mut().unwrap().remove(identity::POD_INDEX_LABEL);
        assert_eq!(run(&s, &[Arc::new(p)]), ["identity web-0"]);
        let mut with_claims = set(1, "OrderedReady", Some(0));
        let mut template = k8s_openapi::api::core::v1::PersistentVolumeClaim::default();
        template.metadata.name = Some("www".into());
        with_claims.spec.as_mut().unwrap().volume_claim_templates = Some(vec![template]);
        assert_eq!(run(&with_claims, &[pod(0, NEW, "Pending", false)]), ["claims web-0"]);
    }
}
