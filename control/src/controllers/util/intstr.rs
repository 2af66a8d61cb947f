//! `IntOrString` fields that count pods (`maxSurge`, `maxUnavailable`): an absolute number or a
//! percentage of a total, as the reference's `GetScaledValueFromIntOrPercent` reads them.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// A percentage that is not `N%`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value for IntOrString: invalid value {0:?}: must be an integer or a percentage")]
pub struct InvalidIntOrPercent(pub String);

/// `value` as a number of pods out of `total` (the reference's `GetScaledValueFromIntOrPercent`).
pub fn scaled_value(
    value: &IntOrString,
    total: i32,
    round_up: bool,
) -> Result<i32, InvalidIntOrPercent> {
    match value {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(s) => {
            let percent: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| InvalidIntOrPercent(s.clone()))?;
            let scaled = percent * i64::from(total);
            let value =
                if round_up { (scaled + 99).div_euclid(100) } else { scaled.div_euclid(100) };
            Ok(i32::try_from(value).unwrap_or(i32::MAX))
        }
    }
}
