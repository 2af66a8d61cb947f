//! What happens to a pod that fits nowhere: it is parked in the queue's unschedulable set
//! (first, so that the status write below cannot wake it), preemption may evict lower-priority
//! pods on one node and nominate the pod there (`status.nominatedNodeName`), and the pod gets
//! the `PodScheduled=False` condition with reason `Unschedulable` and a `FailedScheduling`
//! Warning event, both carrying the reference's `0/3 nodes are available: ...` message.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::Api;
use serde_json::{json, Value};

use super::algorithm::NoFit;
use super::cycle::{Attempt, Scheduler};
use super::framework::ClusterObjects;
use super::node_info::NodeInfo;
use super::preemption::{self, Candidate};
use super::queue::fingerprint;
use super::COMPONENT;
use crate::machinery::{Action, ControlError, EventType, ObjectKey};

/// What a failed attempt does to the pod's `status.nominatedNodeName`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Nomination {
    Keep,
    Set(String),
    Clear,
}

impl Scheduler {
    /// Parks the pod, tries preemption, and reports why it does not fit.
    pub(super) async fn unschedulable(
        &self,
        attempt: Attempt,
        nodes: &[Arc<NodeInfo>],
        objects: &ClusterObjects,
        no_fit: NoFit,
    ) -> Result<Action, ControlError> {
        let Attempt { key, pod, info, seen } = attempt;
        self.queue.park(key.clone(), fingerprint(&pod), info.has_affinity, seen);
        let current = pod.status.as_ref().and_then(|s| s.nominated_node_name.as_deref());
        let (message, nomination, candidate) = match no_fit {
            NoFit::NoNodes => (NoFit::NoNodes.message(), Nomination::Keep, None),
            NoFit::Fit(mut fit) => {
                let mut nomination = Nomination::Keep;
                let mut candidate = None;
                match preemption::eligible(&info, current, nodes) {
                    Err(why) => fit.post_filter = Some(format!("preemption: {why}")),
                    Ok(()) => match preemption::find_candidate(&info, nodes, objects, &fit) {
                        Ok(found) => {
                            nomination = Nomination::Set(found.node.clone());
                            candidate = Some(found);
                        }
                        Err(why) => {
                            fit.post_filter = Some(why);
                            nomination = Nomination::Clear;
                        }
                    },
                }
                (fit.message(), nomination, candidate)
            }
        };
        tracing::debug!(pod = %key, %message, "unschedulable");
        if let Some(candidate) = &candidate {
            self.evict(&pod, candidate).await;
        }
        match self.report(&key, &pod, &message, nomination).await {
            // Gone, or changed since this attempt read it (bound by someone else, say): the
            // change requeues the pod if it still needs scheduling.
            Err(error) if error.is_not_found() || error.is_conflict() => return Ok(Action::Done),
            other => other?,
        }
        self.ctx
            .events
            .record(pod.as_ref(), EventType::Warning, "FailedScheduling", &message)
            .await;
        Ok(Action::Done)
    }

    /// Writes the `PodScheduled=False` condition and the nomination, unless already there.
    async fn report(
        &self,
        key: &ObjectKey,
        pod: &Pod,
        message: &str,
        nomination: Nomination,
    ) -> Result<(), ControlError> {
        let Some(mut patch) = status_patch(pod, message, &nomination, Timestamp::now()) else {
            return Ok(());
        };
        // Only over the pod this attempt saw: a binding that landed meanwhile must not be
        // followed by PodScheduled=False.
        if let Some(rv) = &pod.metadata.resource_version {
            patch["metadata"] = serde_json::json!({ "resourceVersion": rv });
        }
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &key.namespace);
        api.patch_status(&key.name, &PatchParams::default(), &Patch::Strategic(&patch)).await?;
        Ok(())
    }

    /// Deletes the candidate's victims, marking each with the `DisruptionTarget` condition and
    /// a `Preempted` event first, as the reference does. Failures are logged: the next attempt
    /// looks again.
    async fn evict(&self, preemptor: &Pod, candidate: &Candidate) {
        let uid = preemptor.metadata.uid.as_deref().unwrap_or("");
        for victim in &candidate.victims {
            let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &victim.namespace);
            let condition = json!({"status": {"conditions": [{
                "type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
                "message": format!("{COMPONENT}: preempting to accommodate a higher priority pod"),
                "lastTransitionTime": Time(Timestamp::now()),
            }]}});
            let patch = Patch::Strategic(&condition);
            if let Err(error) =
                api.patch_status(&victim.name, &PatchParams::default(), &patch).await
            {
                tracing::debug!(victim = %victim.key(), %error, "marking the preemption victim failed");
            }
            let message = format!("Preempted by pod {uid} on node {}", candidate.node);
            self.ctx
                .events
                .record(victim.pod.as_ref(), EventType::Normal, "Preempted", &message)
                .await;
            match api.delete(&victim.name, &DeleteParams::default()).await {
                Ok(_) => {
                    tracing::info!(victim = %victim.key(), node = %candidate.node, "preempted")
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(error) => tracing::warn!(victim = %victim.key(), %error, "preemption failed"),
            }
        }
    }
}

/// The strategic merge patch for `pods/status` that records the failure, or `None` when the
/// pod already says so. The transition time moves only when the condition's status changes.
fn status_patch(
    pod: &Pod,
    message: &str,
    nomination: &Nomination,
    now: Timestamp,
) -> Option<Value> {
    let status = pod.status.as_ref();
    let existing = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"));
    let current_nomination =
        status.and_then(|s| s.nominated_node_name.clone()).filter(|n| !n.is_empty());
    let same_condition = existing.is_some_and(|c| {
        c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
            && c.message.as_deref() == Some(message)
    });
    let nominated = match nomination {
        Nomination::Keep => None,
        Nomination::Set(node) if current_nomination.as_deref() != Some(node) => Some(json!(node)),
        Nomination::Clear if current_nomination.is_some() => Some(Value::Null),
        _ => None,
    };
    if same_condition && nominated.is_none() {
        return None;
    }
    let transition = existing
        .filter(|c| c.status == "False")
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    let mut patch = json!({"status": {"conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
        "lastProbeTime": null, "lastTransitionTime": transition,
    }]}});
    if let Some(nominated) = nominated {
        patch["status"]["nominatedNodeName"] = nominated;
    }
    Some(patch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(status: Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "status": status})).unwrap()
    }

    #[test]
    fn the_condition_is_written_once_per_message() {
        let now = Timestamp::UNIX_EPOCH;
        let fresh = pod(json!({}));
        let patch =
            status_patch(&fresh, "0/1 nodes are available.", &Nomination::Keep, now).unwrap();
        let condition = &patch["status"]["conditions"][0];
        assert_eq!(condition["reason"], "Unschedulable");
        assert_eq!(condition["status"], "False");
        assert!(patch["status"].get("nominatedNodeName").is_none());
        let written = pod(json!({"conditions": [{"type": "PodScheduled", "status": "False",
            "reason": "Unschedulable", "message": "0/1 nodes are available.",
            "lastTransitionTime": "2024-01-01T00:00:00Z"}]}));
        assert!(
            status_patch(&written, "0/1 nodes are available.", &Nomination::Keep, now).is_none()
        );
        let changed =
            status_patch(&written, "0/2 nodes are available.", &Nomination::Keep, now).unwrap();
        assert_eq!(
            changed["status"]["conditions"][0]["lastTransitionTime"], "2024-01-01T00:00:00Z",
            "same status: the transition time stays"
        );
    }

    #[test]
    fn nominations_are_set_and_cleared() {
        let now = Timestamp::UNIX_EPOCH;
        let fresh = pod(json!({}));
        let set = status_patch(&fresh, "m", &Nomination::Set("n1".into()), now).unwrap();
        assert_eq!(set["status"]["nominatedNodeName"], "n1");
        let nominated =
            pod(json!({"nominatedNodeName": "n1", "conditions": [{"type": "PodScheduled",
            "status": "False", "reason": "Unschedulable", "message": "m"}]}));
        assert!(status_patch(&nominated, "m", &Nomination::Set("n1".into()), now).is_none());
        let cleared = status_patch(&nominated, "m", &Nomination::Clear, now).unwrap();
        assert_eq!(cleared["status"]["nominatedNodeName"], Value::Null);
    }
}
