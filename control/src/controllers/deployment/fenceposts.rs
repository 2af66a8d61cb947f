//! The rolling-update bounds: `maxSurge` and `maxUnavailable` as absolute numbers of pods,
//! from an int or a percentage of `replicas` (surge rounded up, unavailability down, and never
//! both zero), as the reference's `ResolveFenceposts`.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

pub use crate::controllers::util::intstr::{scaled_value, InvalidIntOrPercent};

/// `(maxSurge, maxUnavailable)` for `desired` replicas; if both come out zero, one pod may be
/// unavailable (otherwise a rollout could never make progress).
pub fn resolve(
    max_surge: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
    desired: i32,
) -> Result<(i32, i32), InvalidIntOrPercent> {
    let zero = IntOrString::Int(0);
    let surge = scaled_value(max_surge.unwrap_or(&zero), desired, true)?;
    let unavailable = scaled_value(max_unavailable.unwrap_or(&zero), desired, false)?;
    Ok(if surge == 0 && unavailable == 0 { (0, 1) } else { (surge, unavailable) })
}

/// `spec.replicas` (the API server defaults it to 1).
pub fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// Whether the strategy is `Recreate` (anything else rolls).
pub fn is_recreate(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.strategy.as_ref()).and_then(|s| s.type_.as_deref())
        == Some("Recreate")
}

fn rolling_bounds(d: &Deployment) -> Option<(i32, i32)> {
    if is_recreate(d) {
        return None;
    }
    let rolling = d.spec.as_ref()?.strategy.as_ref()?.rolling_update.as_ref();
    let surge = rolling.and_then(|r| r.max_surge.as_ref());
    let unavailable = rolling.and_then(|r| r.max_unavailable.as_ref());
    // Validation rejects bad values; should one slip through, roll one pod at a time.
    Some(resolve(surge, unavailable, replicas(d)).unwrap_or((0, 1)))
}

/// How many pods above `replicas` a rolling update may run (0 for Recreate).
pub fn max_surge(d: &Deployment) -> i32 {
    rolling_bounds(d).map_or(0, |(surge, _)| surge)
}

/// How many of `replicas` may be unavailable during a rolling update (0 for Recreate), at
/// most `replicas`.
pub fn max_unavailable(d: &Deployment) -> i32 {
    let desired = replicas(d);
    if desired == 0 {
        return 0;
    }
    rolling_bounds(d).map_or(0, |(_, unavailable)| unavailable.min(desired))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pct(s: &str) -> IntOrString {
        IntOrString::String(s.into())
    }

    #[test]
    fn percentages_round_surge_up_and_unavailability_down() {
        assert_eq!(scaled_value(&pct("25%"), 10, true), Ok(3));
        assert_eq!(scaled_value(&pct("25%"), 10, false), Ok(2));
        assert_eq!(scaled_value(&pct("25%"), 1, true), Ok(1));
        assert_eq!(scaled_value(&pct("25%"), 1, false), Ok(0));
        assert_eq!(scaled_value(&IntOrString::Int(4), 10, true), Ok(4));
        assert!(scaled_value(&pct("x%"), 10, true).is_err());
        assert!(scaled_value(&pct("25"), 10, true).is_err());
    }

    #[test]
    fn fenceposts_are_never_both_zero() {
        // The default 25%/25% on one replica: surge 1, unavailable 0.
        assert_eq!(resolve(Some(&pct("25%")), Some(&pct("25%")), 1), Ok((1, 0)));
        assert_eq!(resolve(Some(&IntOrString::Int(0)), Some(&IntOrString::Int(0)), 5), Ok((0, 1)));
        assert_eq!(resolve(None, None, 3), Ok((0, 1)));
        assert_eq!(resolve(Some(&pct("50%")), Some(&IntOrString::Int(2)), 3), Ok((2, 2)));
    }

    #[test]
    fn bounds_follow_the_strategy() {
        let d: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "d"},
            "spec": {"replicas": 4, "selector": {}, "template": {},
                     "strategy": {"type": "RollingUpdate",
                                  "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 9}}}
        }))
        .unwrap();
        assert_eq!(
            (max_surge(&d), max_unavailable(&d)),
            (1, 4),
            "unavailability capped at replicas"
        );
        let mut recreate = d.clone();
        recreate.spec.as_mut().unwrap().strategy.as_mut().unwrap().type_ = Some("Recreate".into());
        assert_eq!((max_surge(&recreate), max_unavailable(&recreate)), (0, 0));
    }
}
