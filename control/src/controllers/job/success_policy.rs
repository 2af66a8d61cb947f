//! `spec.successPolicy` for Indexed Jobs (the reference's KEP-3998): the Job succeeds early
//! when a rule is met — `succeededIndexes` all succeeded (or at least `succeededCount` of them),
//! or, with only `succeededCount`, that many indexes succeeded. The Job then gets
//! `SuccessCriteriaMet` (reason `SuccessPolicy`), its remaining pods are terminated, and
//! `Complete` follows with the same reason once they are gone.

use k8s_openapi::api::batch::v1::SuccessPolicy;

use super::indexes::Intervals;

/// The reason on `SuccessCriteriaMet` and `Complete` when a rule was met.
pub const REASON: &str = "SuccessPolicy";

/// The message of the first rule `succeeded` meets (the reference's `matchSuccessPolicy`).
pub fn matched(
    policy: Option<&SuccessPolicy>,
    completions: i32,
    succeeded: &Intervals,
) -> Option<String> {
    let policy = policy?;
    if succeeded.total() == 0 {
        return None;
    }
    for (index, rule) in policy.rules.iter().enumerate() {
        let met = match &rule.succeeded_indexes {
            Some(text) => {
                let required = Intervals::parse(text, completions);
                // An unparsable rule (the API rejects those) never matches.
                required.total() > 0 && indexes_rule_met(&required, succeeded, rule.succeeded_count)
            }
            None => rule.succeeded_count.is_some_and(|count| succeeded.total() >= count),
        };
        if met {
            return Some(format!("Matched rules at index {index}"));
        }
    }
    None
}

/// Whether the `required` indexes all succeeded, or at least `count` of them did.
fn indexes_rule_met(required: &Intervals, succeeded: &Intervals, count: Option<i32>) -> bool {
    let (rules, done) = (required.ranges(), succeeded.ranges());
    let (mut r, mut s, mut contained) = (0, 0, 0);
    // Both lists are sorted and disjoint: walk them together, adding up the overlaps.
    while r < rules.len() && s < done.len() {
        let overlap = rules[r].1.min(done[s].1) - rules[r].0.max(done[s].0) + 1;
        contained += overlap.max(0);
        match done[s].1.cmp(&rules[r].1) {
            std::cmp::Ordering::Less => s += 1,
            std::cmp::Ordering::Greater => r += 1,
            std::cmp::Ordering::Equal => {
                s += 1;
                r += 1;
            }
        }
    }
    contained == required.total() || count.is_some_and(|c| contained >= c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::SuccessPolicyRule;

    fn policy(rules: &[(Option<&str>, Option<i32>)]) -> SuccessPolicy {
        SuccessPolicy {
            rules: rules
                .iter()
                .map(|(indexes, count)| SuccessPolicyRule {
                    succeeded_indexes: indexes.map(String::from),
                    succeeded_count: *count,
                })
                .collect(),
        }
    }

    #[test]
    fn indexes_rules_need_all_listed_or_the_count_of_them() {
        let done = Intervals::parse("0,2-4,7", 10);
        let p = policy(&[(Some("1,3"), None), (Some("2-5"), Some(3)), (Some("0,2-4"), None)]);
        // Rule 0 misses index 1; rule 1 has 3 of 2-5 (2,3,4).
        assert_eq!(matched(Some(&p), 10, &done).as_deref(), Some("Matched rules at index 1"));
        let p = policy(&[(Some("2-5"), Some(4)), (Some("0,2-4,7"), None)]);
        assert_eq!(matched(Some(&p), 10, &done).as_deref(), Some("Matched rules at index 1"));
        let p = policy(&[(Some("5-6,8"), Some(1))]);
        assert_eq!(matched(Some(&p), 10, &done), None);
        // Indexes beyond completions are dropped from the rule.
        let p = policy(&[(Some("7-20"), None)]);
        assert_eq!(
            matched(Some(&p), 8, &Intervals::parse("7", 8)).as_deref(),
            Some("Matched rules at index 0")
        );
    }

    #[test]
    fn count_rules_count_any_indexes_and_nothing_matches_before_a_success() {
        let p = policy(&[(None, Some(2))]);
        assert_eq!(matched(Some(&p), 5, &Intervals::parse("4", 5)), None);
        assert_eq!(
            matched(Some(&p), 5, &Intervals::parse("1,4", 5)).as_deref(),
            Some("Matched rules at index 0")
        );
        let p = policy(&[(None, Some(0))]);
        assert_eq!(matched(Some(&p), 5, &Intervals::default()), None);
        assert_eq!(matched(None, 5, &Intervals::parse("0-4", 5)), None);
    }
}
