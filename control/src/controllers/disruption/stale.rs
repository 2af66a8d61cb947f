//! Stale `DisruptionTarget` conditions: an eviction marks its pod `DisruptionTarget=True`
//! just before deleting it; if the pod is still not terminating [`STALE_TIMEOUT`] after that
//! (the delete failed, e.g. a resourceVersion precondition lost a race) the condition is set
//! back to `False`, as the reference's disruption controller does. Conditions written by the
//! node agent (`TerminationByKubelet`) and those of finished pods are left alone.

use k8s_openapi::api::core::v1::{Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};

use super::super::util::pod as podutil;
use super::super::ControllerOptions;
use crate::machinery::{run_workers, Action, Context, ControlError, ObjectKey, WorkQueue};

/// How long a pod may carry `DisruptionTarget=True` without being deleted.
pub const STALE_TIMEOUT: SignedDuration = SignedDuration::from_secs(120);

/// The condition an eviction adds.
pub const DISRUPTION_TARGET: &str = "DisruptionTarget";

/// Subscribes to pods and starts the workers that reset stale conditions.
pub(super) fn start(ctx: Context<ControllerOptions>) {
    let queue = WorkQueue::new();
    ctx.informers.get::<Pod>().feed(queue.clone(), |pod: &Pod| {
        if stale_after(pod, Timestamp::now()).is_some() {
            vec![ObjectKey::of(pod)]
        } else {
            vec![]
        }
    });
    let workers = ctx.options.workers;
    run_workers("disruption-stale-pod", queue, workers, move |key: ObjectKey| {
        let ctx = ctx.clone();
        async move { reconcile(&ctx, &key).await }
    });
}

/// `Some(wait)` when the pod carries a `DisruptionTarget=True` that may go stale: how long
/// until it is (zero: it is stale now).
pub fn stale_after(pod: &Pod, now: Timestamp) -> Option<std::time::Duration> {
    if podutil::is_terminating(pod) || podutil::is_terminal(pod) {
        return None;
    }
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    let condition = conditions.iter().find(|c| c.type_ == DISRUPTION_TARGET)?;
    if condition.status != "True" || condition.reason.as_deref() == Some("TerminationByKubelet") {
        return None;
    }
    let since = condition.last_transition_time.as_ref().map_or(now, |t| t.0);
    let stale_at = since.checked_add(STALE_TIMEOUT).unwrap_or(since);
    let wait = stale_at.duration_since(now);
    Some(std::time::Duration::try_from(wait).unwrap_or_default())
}

async fn reconcile(
    ctx: &Context<ControllerOptions>,
    key: &ObjectKey,
) -> Result<Action, ControlError> {
    let Some(pod) = ctx.informers.get::<Pod>().get(key.namespace(), &key.name) else {
        return Ok(Action::Done);
    };
    let now = Timestamp::now();
    match stale_after(&pod, now) {
        None => return Ok(Action::Done),
        Some(wait) if !wait.is_zero() => return Ok(Action::RequeueAfter(wait)),
        Some(_) => {}
    }
    let mut next = (*pod).clone();
    let Some(conditions) = next.status.as_mut().and_then(|s| s.conditions.as_mut()) else {
        return Ok(Action::Done);
    };
    // The whole condition is replaced (reason and message go), as the reference does.
    for condition in conditions.iter_mut().filter(|c| c.type_ == DISRUPTION_TARGET) {
        *condition = PodCondition {
            type_: DISRUPTION_TARGET.to_string(),
            status: "False".to_string(),
            last_transition_time: Some(Time(now)),
            ..Default::default()
        };
    }
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &key.namespace);
    match api.replace_status(&key.name, &PostParams::default(), &next).await {
        Ok(_) => Ok(Action::Done),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(Action::Done),
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodStatus;

    fn pod(status: &str, reason: &str, since: i64) -> Pod {
        Pod {
            status: Some(PodStatus {
                phase: Some("Running".into()),
                conditions: Some(vec![PodCondition {
                    type_: DISRUPTION_TARGET.into(),
                    status: status.into(),
                    reason: Some(reason.into()),
                    last_transition_time: Some(Time(Timestamp::from_second(since).unwrap())),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_evictions_left_undone_go_stale() {
        let now = Timestamp::from_second(1_000).unwrap();
        let fresh = pod("True", "EvictionByEvictionAPI", 950);
        assert_eq!(stale_after(&fresh, now), Some(std::time::Duration::from_secs(70)));
        let old = pod("True", "EvictionByEvictionAPI", 800);
        assert_eq!(stale_after(&old, now), Some(std::time::Duration::ZERO));
        assert_eq!(stale_after(&pod("False", "", 800), now), None);
        assert_eq!(stale_after(&pod("True", "TerminationByKubelet", 800), now), None);
        let mut done = old.clone();
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        assert_eq!(stale_after(&done, now), None);
    }
}
