//! The status a ReplicaSet (or ReplicationController) reports about the pods it controls:
//! counts of pods, fully labeled, ready and available ones, the generation it acted on, and the
//! `ReplicaFailure` condition while creating or deleting pods fails.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

use super::kind::ReplicaKind;
use crate::controllers::util::pod;

/// The condition type set while pods cannot be created or deleted.
const REPLICA_FAILURE: &str = "ReplicaFailure";

/// The status `owner` should report for its active `pods`; `manage_error` is what the last
/// attempt to create or delete pods failed with, if it did.
pub fn calculate<K: ReplicaKind>(
    owner: &K,
    pods: &[Arc<Pod>],
    manage_error: Option<&str>,
    now: Timestamp,
) -> ReplicaSetStatus {
    let template_labels: BTreeMap<String, String> = owner
        .template()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let fully_labeled = pods
        .iter()
        .filter(|p| {
            let labels = p.metadata.labels.as_ref();
            template_labels.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        })
        .count();
    let ready = pods.iter().filter(|p| pod::is_ready(p)).count();
    let min_ready = owner.min_ready_seconds();
    let available = pods.iter().filter(|p| pod::is_available(p, min_ready, now)).count();

    let mut status = owner.replica_status();
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    status.replicas = count(pods.len());
    status.fully_labeled_replicas = Some(count(fully_labeled));
    status.ready_replicas = Some(count(ready));
    status.available_replicas = Some(count(available));
    status.observed_generation = owner.meta().generation;
    let mut conditions = status.conditions.take().unwrap_or_default();
    let failing = conditions.iter().any(|c| c.type_ == REPLICA_FAILURE);
    match manage_error {
        Some(message) if !failing => {
            let diff = count(pods.len()) - owner.replicas();
            let reason = match diff {
                d if d < 0 => "FailedCreate",
                d if d > 0 => "FailedDelete",
                _ => "",
            };
            conditions.push(ReplicaSetCondition {
                type_: REPLICA_FAILURE.into(),
                status: "True".into(),
                reason: Some(reason.into()),
                message: Some(message.into()),
                last_transition_time: Some(Time(now)),
            });
        }
        None if failing => conditions.retain(|c| c.type_ != REPLICA_FAILURE),
        _ => {}
    }
    status.conditions = (!conditions.is_empty()).then_some(conditions);
    status
}

/// Whether `next` says something `current` does not (the reference skips equal updates).
pub fn changed(current: &ReplicaSetStatus, next: &ReplicaSetStatus) -> bool {
    let or0 = |v: Option<i32>| v.unwrap_or(0);
    current.replicas != next.replicas
        || or0(current.fully_labeled_replicas) != or0(next.fully_labeled_replicas)
        || or0(current.ready_replicas) != or0(next.ready_replicas)
        || or0(current.available_replicas) != or0(next.available_replicas)
        || current.observed_generation != next.observed_generation
        || current.conditions != next.conditions
}

/// The merge patch that writes `status` (a JSON null removes the conditions when there are none).
pub fn patch(status: &ReplicaSetStatus) -> Value {
    json!({"status": {
        "replicas": status.replicas,
        "fullyLabeledReplicas": status.fully_labeled_replicas,
        "readyReplicas": status.ready_replicas,
        "availableReplicas": status.available_replicas,
        "observedGeneration": status.observed_generation,
        "conditions": status.conditions,
    }})
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetSpec};
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus, PodTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::jiff::SignedDuration;

    fn labels(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    fn ready_pod(
        pod_labels: &[(&str, &str)],
        ready_secs_ago: Option<i64>,
        now: Timestamp,
    ) -> Arc<Pod> {
        let mut p = Pod::default();
        p.metadata.labels = labels(pod_labels);
        p.status = Some(PodStatus {
            conditions: ready_secs_ago.map(|ago| {
                vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_transition_time: Some(Time(
                        now.checked_sub(SignedDuration::from_secs(ago)).unwrap(),
                    )),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        });
        Arc::new(p)
    }

    #[test]
    fn counts_follow_readiness_min_ready_seconds_and_template_labels() {
        let now = Timestamp::now();
        let rs = ReplicaSet {
            metadata: ObjectMeta { generation: Some(4), ..Default::default() },
            spec: Some(ReplicaSetSpec {
                replicas: Some(3),
                min_ready_seconds: Some(10),
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: labels(&[("app", "web"), ("v", "1")]),
                        ..Default::default()
                    }),
                    spec: None,
                }),
                ..Default::default()
            }),
            status: None,
        };
        let pods = vec![
            ready_pod(&[("app", "web"), ("v", "1")], Some(60), now),
            ready_pod(&[("app", "web"), ("v", "1")], Some(1), now),
            ready_pod(&[("app", "web")], None, now),
        ];
        let status = calculate(&rs, &pods, None, now);
        assert_eq!(status.replicas, 3);
        assert_eq!(status.fully_labeled_replicas, Some(2));
        assert_eq!(status.ready_replicas, Some(2));
        assert_eq!(status.available_replicas, Some(1), "ready for 1 s is not available yet");
        assert_eq!(status.observed_generation, Some(4));
        assert!(status.conditions.is_none());

        let failed = calculate(&rs, &pods[..1], Some("quota exceeded"), now);
        let cond = &failed.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (cond.type_.as_str(), cond.reason.as_deref()),
            ("ReplicaFailure", Some("FailedCreate"))
        );
        let mut rs = rs;
        rs.status = Some(failed);
        assert!(calculate(&rs, &pods, None, now).conditions.is_none(), "cleared on success");
    }
}
