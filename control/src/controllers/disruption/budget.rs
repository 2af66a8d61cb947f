//! The arithmetic of a PodDisruptionBudget, shared by the disruption controller (which keeps
//! `status`) and the API server's `pods/eviction` (which spends `disruptionsAllowed`): expected
//! and desired healthy pods from `minAvailable`/`maxUnavailable` (integers or percentages,
//! rounded up as the reference's `GetScaledValueFromIntOrPercent(…, true)`), the allowed
//! disruptions, the pruning of `status.disruptedPods` after [`DELETION_TIMEOUT`], the healthy
//! count, and the `DisruptionAllowed` condition (the reference's `pdbhelper`). Pure functions
//! over the typed objects; the current time is always passed in.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{
    PodDisruptionBudget, PodDisruptionBudgetSpec, PodDisruptionBudgetStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::controllers::util::pod as podutil;

/// How long a pod recorded in `status.disruptedPods` (by an eviction) may take to be seen
/// terminating before the controller assumes it will not be deleted and counts it again.
pub const DELETION_TIMEOUT: SignedDuration = SignedDuration::from_secs(120);

/// The condition the controller and the eviction handler keep.
pub const CONDITION_DISRUPTION_ALLOWED: &str = "DisruptionAllowed";
/// Reason: enough healthy pods for at least one disruption.
pub const REASON_SUFFICIENT_PODS: &str = "SufficientPods";
/// Reason: no disruption allowed.
pub const REASON_INSUFFICIENT_PODS: &str = "InsufficientPods";
/// Reason: the controller could not compute the status (then no disruption is allowed).
pub const REASON_SYNC_FAILED: &str = "SyncFailed";

/// `unhealthyPodEvictionPolicy` that lets not-ready pods be evicted whatever the budget.
pub const ALWAYS_ALLOW: &str = "AlwaysAllow";

/// An `IntOrString` scaled against `total`: an integer as is, `"N%"` as N percent of `total`
/// (rounded up or down). Anything else is an error with the reference's wording.
pub fn scaled_value(value: &IntOrString, total: i32, round_up: bool) -> Result<i32, String> {
    let text = match value {
        IntOrString::Int(n) => return Ok(*n),
        IntOrString::String(s) => s,
    };
    let Some(number) = text.strip_suffix('%') else {
        return Err(
            "invalid value for IntOrString: invalid type: string is not a percentage".to_string()
        );
    };
    let percent: i64 = number
        .parse()
        .map_err(|e| format!("invalid value for IntOrString: invalid value {text:?}: {e}"))?;
    let product = percent * i64::from(total);
    let scaled = if round_up {
        product.div_euclid(100) + i64::from(product.rem_euclid(100) != 0)
    } else {
        product.div_euclid(100)
    };
    i32::try_from(scaled)
        .map_err(|_| format!("invalid value for IntOrString: {text:?} is too large"))
}

/// Whether the budget needs the pods' controllers' scale: `maxUnavailable`, or a percentage
/// `minAvailable` (an integer `minAvailable` counts the matching pods instead).
pub fn uses_scale(spec: Option<&PodDisruptionBudgetSpec>) -> bool {
    let Some(spec) = spec else { return false };
    spec.max_unavailable.is_some() || matches!(spec.min_available, Some(IntOrString::String(_)))
}

/// `(expectedPods, desiredHealthy)`: `matching` is the number of pods the selector matches,
/// `scale` the summed `replicas` of their controllers (only read when [`uses_scale`]).
pub fn expected_and_desired(
    spec: Option<&PodDisruptionBudgetSpec>,
    matching: i32,
    scale: i32,
) -> Result<(i32, i32), String> {
    let Some(spec) = spec else { return Ok((0, 0)) };
    if let Some(max_unavailable) = &spec.max_unavailable {
        let unavailable = scaled_value(max_unavailable, scale, true)?;
        return Ok((scale, (scale - unavailable).max(0)));
    }
    match &spec.min_available {
        Some(IntOrString::Int(n)) => Ok((matching, *n)),
        Some(percent @ IntOrString::String(_)) => Ok((scale, scaled_value(percent, scale, true)?)),
        None => Ok((0, 0)),
    }
}

/// `currentHealthy - desiredHealthy`, never negative, and 0 while no pod is expected (so a
/// budget whose pods appear before the controller has counted them stays safe).
pub fn disruptions_allowed(current_healthy: i32, desired_healthy: i32, expected: i32) -> i32 {
    let allowed = current_healthy.saturating_sub(desired_healthy);
    if expected <= 0 || allowed <= 0 {
        0
    } else {
        allowed
    }
}

/// The still-pending evictions of `status.disruptedPods`.
#[derive(Debug, Default, PartialEq)]
pub struct Disrupted {
    /// Pods evicted less than [`DELETION_TIMEOUT`] ago and not yet terminating.
    pub pending: BTreeMap<String, Time>,
    /// When the earliest pending entry expires (the budget must be looked at again then).
    pub recheck: Option<Timestamp>,
    /// Pods whose eviction expired without them being deleted.
    pub expired: Vec<String>,
}

/// Prunes `recorded` (the budget's `disruptedPods`): entries of pods that are gone or already
/// terminating are dropped, entries older than [`DELETION_TIMEOUT`] expire.
pub fn pending_disruptions(
    recorded: Option<&BTreeMap<String, Time>>,
    pods: &[&Pod],
    now: Timestamp,
) -> Disrupted {
    let mut out = Disrupted::default();
    let Some(recorded) = recorded else { return out };
    for pod in pods {
        if podutil::is_terminating(pod) {
            continue;
        }
        let Some(name) = pod.metadata.name.as_deref() else { continue };
        let Some(at) = recorded.get(name) else { continue };
        let expires = at.0.checked_add(DELETION_TIMEOUT).unwrap_or(at.0);
        if expires < now {
            out.expired.push(name.to_string());
        } else {
            out.recheck = Some(out.recheck.map_or(expires, |r| r.min(expires)));
            out.pending.insert(name.to_string(), at.clone());
        }
    }
    out
}

/// Ready pods that are neither terminating nor about to be deleted by a pending eviction.
pub fn count_healthy(pods: &[&Pod], pending: &BTreeMap<String, Time>, now: Timestamp) -> i32 {
    let evicted = |pod: &Pod| {
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        pending.get(name).is_some_and(|at| at.0.checked_add(DELETION_TIMEOUT).unwrap_or(at.0) > now)
    };
    let healthy = pods
        .iter()
        .filter(|p| !podutil::is_terminating(p) && !evicted(p) && podutil::is_ready(p))
        .count();
    i32::try_from(healthy).unwrap_or(i32::MAX)
}

/// Sets a condition as the reference's `meta.SetStatusCondition`: a new type is appended; an
/// existing one keeps its `lastTransitionTime` unless its status changes.
pub fn set_condition(conditions: &mut Vec<Condition>, new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        None => conditions.push(new),
        Some(existing) => {
            if existing.status != new.status {
                existing.status = new.status;
                existing.last_transition_time = new.last_transition_time;
            }
            existing.reason = new.reason;
            existing.message = new.message;
            existing.observed_generation = new.observed_generation;
        }
    }
}

/// The `DisruptionAllowed` condition that matches `status.disruptionsAllowed`.
pub fn update_disruption_allowed_condition(status: &mut PodDisruptionBudgetStatus, now: Timestamp) {
    let (value, reason) = if status.disruptions_allowed > 0 {
        ("True", REASON_SUFFICIENT_PODS)
    } else {
        ("False", REASON_INSUFFICIENT_PODS)
    };
    let condition = Condition {
        type_: CONDITION_DISRUPTION_ALLOWED.to_string(),
        status: value.to_string(),
        reason: reason.to_string(),
        message: String::new(),
        observed_generation: status.observed_generation,
        last_transition_time: Time(now),
    };
    set_condition(status.conditions.get_or_insert_with(Vec::new), condition);
}

/// Sets `DisruptionAllowed=False` with reason `SyncFailed` and no disruption allowed.
pub fn fail_safe(status: &mut PodDisruptionBudgetStatus, error: &str, now: Timestamp) {
    status.disruptions_allowed = 0;
    let condition = Condition {
        type_: CONDITION_DISRUPTION_ALLOWED.to_string(),
        status: "False".to_string(),
        reason: REASON_SYNC_FAILED.to_string(),
        message: error.to_string(),
        observed_generation: status.observed_generation,
        last_transition_time: Time(now),
    };
    set_condition(status.conditions.get_or_insert_with(Vec::new), condition);
}

/// Whether the `DisruptionAllowed` condition agrees with the status and the status with the
/// budget's generation (the reference's `ConditionsAreUpToDate`).
pub fn conditions_up_to_date(pdb: &PodDisruptionBudget) -> bool {
    let Some(status) = &pdb.status else { return false };
    let condition =
        status.conditions.iter().flatten().find(|c| c.type_ == CONDITION_DISRUPTION_ALLOWED);
    let Some(condition) = condition else { return false };
    if status.observed_generation != pdb.metadata.generation {
        return false;
    }
    if status.disruptions_allowed > 0 {
        condition.status == "True" && condition.reason == REASON_SUFFICIENT_PODS
    } else {
        condition.status == "False" && condition.reason == REASON_INSUFFICIENT_PODS
    }
}

/// The status the controller wants, or `None` when the current one already says it.
pub fn next_status(
    pdb: &PodDisruptionBudget,
    current_healthy: i32,
    desired_healthy: i32,
    expected: i32,
    disrupted: BTreeMap<String, Time>,
    now: Timestamp,
) -> Option<PodDisruptionBudgetStatus> {
    let allowed = disruptions_allowed(current_healthy, desired_healthy, expected);
    let current = pdb.status.clone().unwrap_or_default();
    let recorded = current.disrupted_pods.clone().unwrap_or_default();
    if current.current_healthy == current_healthy
        && current.desired_healthy == desired_healthy
        && current.expected_pods == expected
        && current.disruptions_allowed == allowed
        && recorded == disrupted
        && current.observed_generation == pdb.metadata.generation
        && conditions_up_to_date(pdb)
    {
        return None;
    }
    let mut status = PodDisruptionBudgetStatus {
        current_healthy,
        desired_healthy,
        expected_pods: expected,
        disruptions_allowed: allowed,
        disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
        observed_generation: pdb.metadata.generation,
        conditions: current.conditions,
    };
    update_disruption_allowed_condition(&mut status, now);
    Some(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn percent(s: &str) -> IntOrString {
        IntOrString::String(s.to_string())
    }

    fn spec(min: Option<IntOrString>, max: Option<IntOrString>) -> PodDisruptionBudgetSpec {
        PodDisruptionBudgetSpec { min_available: min, max_unavailable: max, ..Default::default() }
    }

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    fn pod(name: &str, ready: bool, terminating: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                deletion_timestamp: terminating.then(|| Time(ts(1))),
                ..Default::default()
            },
            status: Some(PodStatus {
                phase: Some("Running".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn percentages_round_up_and_integers_pass_through() {
        assert_eq!(scaled_value(&IntOrString::Int(3), 10, true), Ok(3));
        assert_eq!(scaled_value(&percent("50%"), 3, true), Ok(2));
        assert_eq!(scaled_value(&percent("50%"), 3, false), Ok(1));
        assert_eq!(scaled_value(&percent("34%"), 3, true), Ok(2));
        assert_eq!(scaled_value(&percent("100%"), 7, true), Ok(7));
        assert_eq!(scaled_value(&percent("0%"), 7, true), Ok(0));
        assert!(scaled_value(&percent("5"), 7, true).unwrap_err().contains("not a percentage"));
        assert!(scaled_value(&percent("x%"), 7, true).is_err());
    }

    #[test]
    fn expected_and_desired_follow_the_spec_kind() {
        // Integer minAvailable counts the matching pods, whatever the controllers' scale.
        let s = spec(Some(IntOrString::Int(2)), None);
        assert!(!uses_scale(Some(&s)));
        assert_eq!(expected_and_desired(Some(&s), 3, 10), Ok((3, 2)));
        // Percentage minAvailable scales against the controllers, rounding up.
        let s = spec(Some(percent("50%")), None);
        assert!(uses_scale(Some(&s)));
        assert_eq!(expected_and_desired(Some(&s), 2, 5), Ok((5, 3)));
        // maxUnavailable: desired = scale - ceil(max), never negative.
        let s = spec(None, Some(IntOrString::Int(1)));
        assert!(uses_scale(Some(&s)));
        assert_eq!(expected_and_desired(Some(&s), 2, 3), Ok((3, 2)));
        let s = spec(None, Some(percent("30%")));
        assert_eq!(expected_and_desired(Some(&s), 2, 5), Ok((5, 3)));
        let s = spec(None, Some(IntOrString::Int(9)));
        assert_eq!(expected_and_desired(Some(&s), 2, 3), Ok((3, 0)));
        // Neither set: nothing expected, nothing desired.
        assert_eq!(expected_and_desired(Some(&spec(None, None)), 4, 4), Ok((0, 0)));
        assert!(expected_and_desired(Some(&spec(None, Some(percent("x")))), 1, 1).is_err());
    }

    #[test]
    fn allowed_disruptions_are_never_negative_and_need_expected_pods() {
        assert_eq!(disruptions_allowed(3, 2, 3), 1);
        assert_eq!(disruptions_allowed(2, 2, 2), 0);
        assert_eq!(disruptions_allowed(1, 2, 2), 0);
        assert_eq!(disruptions_allowed(2, 0, 0), 0);
    }

    #[test]
    fn disrupted_pods_are_pruned_and_excluded_from_the_healthy_count() {
        let now = ts(1_000);
        let recorded: BTreeMap<String, Time> = [
            ("fresh".to_string(), Time(ts(950))),
            ("stale".to_string(), Time(ts(1_000 - 121))),
            ("terminating".to_string(), Time(ts(990))),
            ("gone".to_string(), Time(ts(990))),
        ]
        .into_iter()
        .collect();
        let pods = [
            pod("fresh", true, false),
            pod("stale", true, false),
            pod("terminating", true, true),
            pod("other", true, false),
            pod("unready", false, false),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let d = pending_disruptions(Some(&recorded), &refs, now);
        assert_eq!(d.pending.keys().collect::<Vec<_>>(), ["fresh"]);
        assert_eq!(d.expired, ["stale"]);
        assert_eq!(d.recheck, Some(ts(950 + 120)));
        // "fresh" is about to go, "terminating" is going, "unready" is not ready.
        assert_eq!(count_healthy(&refs, &d.pending, now), 2);
    }

    #[test]
    fn condition_tracks_allowed_disruptions_and_keeps_transition_time() {
        let mut status = PodDisruptionBudgetStatus {
            disruptions_allowed: 1,
            observed_generation: Some(3),
            ..Default::default()
        };
        update_disruption_allowed_condition(&mut status, ts(10));
        let c = &status.conditions.as_ref().unwrap()[0];
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", REASON_SUFFICIENT_PODS));
        assert_eq!((c.observed_generation, c.last_transition_time.0), (Some(3), ts(10)));
        // Same status later: the transition time stays.
        update_disruption_allowed_condition(&mut status, ts(20));
        assert_eq!(status.conditions.as_ref().unwrap()[0].last_transition_time.0, ts(10));
        status.disruptions_allowed = 0;
        update_disruption_allowed_condition(&mut status, ts(30));
        let c = &status.conditions.as_ref().unwrap()[0];
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", REASON_INSUFFICIENT_PODS));
        assert_eq!(c.last_transition_time.0, ts(30));
        fail_safe(&mut status, "found no controllers for pod \"p\"", ts(40));
        let c = &status.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (c.reason.as_str(), c.message.as_str()),
            (REASON_SYNC_FAILED, "found no controllers for pod \"p\"")
        );
        assert_eq!(status.conditions.as_ref().unwrap().len(), 1);
    }

    #[test]
    fn next_status_is_none_once_written() {
        let mut pdb = PodDisruptionBudget {
            metadata: ObjectMeta { generation: Some(2), ..Default::default() },
            ..Default::default()
        };
        let status = next_status(&pdb, 3, 2, 3, BTreeMap::new(), ts(5)).unwrap();
        assert_eq!(
            (status.disruptions_allowed, status.expected_pods, status.observed_generation),
            (1, 3, Some(2))
        );
        pdb.status = Some(status);
        assert_eq!(next_status(&pdb, 3, 2, 3, BTreeMap::new(), ts(6)), None);
        // A new generation must be observed even with the same numbers.
        pdb.metadata.generation = Some(3);
        assert!(next_status(&pdb, 3, 2, 3, BTreeMap::new(), ts(7)).is_some());
    }
}
