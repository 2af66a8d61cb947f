//! `spec.podFailurePolicy`: the first rule matching a failed pod decides what its failure means
//! — `FailJob` fails the whole Job at once, `Ignore` does not count it against `backoffLimit`,
//! `Count` counts it as usual (as does a pod no rule matches), `FailIndex` (only with
//! `backoffLimitPerIndex`; skipped otherwise, as the reference does) counts it and fails its
//! index at once. A rule matches on the exit code of a terminated (init) container (`In`/`NotIn`,
//! never exit code 0) or on a pod condition.

use k8s_openapi::api::batch::v1::{Job, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

/// What the policy makes of one failed pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The Job must fail with this message (a `FailJob` rule matched).
    pub fail_job: Option<String>,
    /// The failure counts towards `backoffLimit`.
    pub counts: bool,
    /// The action of the matching rule, if any.
    pub action: Option<String>,
}

/// The action of a rule that fails the pod's index.
pub const FAIL_INDEX: &str = "FailIndex";

/// [`evaluate`] with `job`'s policy, `FailIndex` rules applying when it has
/// `backoffLimitPerIndex`.
pub fn evaluate_for(job: &Job, pod: &Pod) -> Verdict {
    let spec = job.spec.as_ref();
    let per_index = spec.is_some_and(|s| s.backoff_limit_per_index.is_some());
    evaluate(spec.and_then(|s| s.pod_failure_policy.as_ref()), per_index, pod)
}

/// The reference's `matchPodFailurePolicy` for a failed `pod` (`fail_index`: whether
/// `FailIndex` rules apply).
pub fn evaluate(policy: Option<&PodFailurePolicy>, fail_index: bool, pod: &Pod) -> Verdict {
    let unmatched = Verdict { fail_job: None, counts: true, action: None };
    let Some(policy) = policy else { return unmatched };
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let status = pod.status.as_ref();
    for (index, rule) in policy.rules.iter().enumerate() {
        let message = if let Some(requirement) = &rule.on_exit_codes {
            let containers =
                status.and_then(|s| s.container_statuses.as_deref()).unwrap_or_default();
            let init =
                status.and_then(|s| s.init_container_statuses.as_deref()).unwrap_or_default();
            let Some((container, code)) = matching_container(containers, requirement)
                .or_else(|| matching_container(init, requirement))
            else {
                continue;
            };
            format!(
                "Container {container} for pod {namespace}/{name} failed with exit code {code} \
                 matching {} rule at index {index}",
                rule.action
            )
        } else if let Some(patterns) = &rule.on_pod_conditions {
            let conditions = status.and_then(|s| s.conditions.as_deref()).unwrap_or_default();
            let matched = conditions.iter().find(|c| {
                patterns.iter().any(|p| {
                    let wanted = if p.status.is_empty() { "True" } else { p.status.as_str() };
                    c.type_ == p.type_ && c.status == wanted
                })
            });
            let Some(condition) = matched else { continue };
            format!(
                "Pod {namespace}/{name} has condition {} matching {} rule at index {index}",
                condition.type_, rule.action
            )
        } else {
            continue;
        };
        let action = Some(rule.action.clone());
        match rule.action.as_str() {
            "Ignore" => return Verdict { fail_job: None, counts: false, action },
            "Count" => return Verdict { fail_job: None, counts: true, action },
            "FailJob" => return Verdict { fail_job: Some(message), counts: true, action },
            FAIL_INDEX if fail_index => {
                return Verdict { fail_job: None, counts: true, action };
            }
            // FailIndex without backoffLimitPerIndex (or an unknown action): the rule is
            // skipped, as the reference skips it.
            _ => continue,
        }
    }
    unmatched
}

/// The first terminated container the requirement matches, with its exit code.
fn matching_container(
    statuses: &[ContainerStatus],
    requirement: &PodFailurePolicyOnExitCodesRequirement,
) -> Option<(String, i32)> {
    statuses.iter().find_map(|c| {
        let code = c.state.as_ref()?.terminated.as_ref()?.exit_code;
        let named = requirement.container_name.as_ref().is_none_or(|n| *n == c.name);
        let listed = requirement.values.contains(&code);
        let operator_matches = match requirement.operator.as_str() {
            "In" => listed,
            "NotIn" => !listed,
            _ => false,
        };
        (named && code != 0 && operator_matches).then(|| (c.name.clone(), code))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{
        PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
    };
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, PodCondition, PodStatus,
    };

    fn failed(exit_codes: &[(&str, i32)], conditions: &[&str]) -> Pod {
        let mut p = Pod::default();
        p.metadata.namespace = Some("ns".into());
        p.metadata.name = Some("p".into());
        p.status = Some(PodStatus {
            phase: Some("Failed".into()),
            container_statuses: Some(
                exit_codes
                    .iter()
                    .map(|(name, code)| ContainerStatus {
                        name: name.to_string(),
                        state: Some(ContainerState {
                            terminated: Some(ContainerStateTerminated {
                                exit_code: *code,
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .collect(),
            ),
            conditions: Some(
                conditions
                    .iter()
                    .map(|t| PodCondition {
                        type_: t.to_string(),
                        status: "True".into(),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        });
        p
    }

    fn exit_rule(
        action: &str,
        container: Option<&str>,
        operator: &str,
        values: &[i32],
    ) -> PodFailurePolicyRule {
        PodFailurePolicyRule {
            action: action.into(),
            on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                container_name: container.map(String::from),
                operator: operator.into(),
                values: values.to_vec(),
            }),
            on_pod_conditions: None,
        }
    }

    fn condition_rule(action: &str, type_: &str) -> PodFailurePolicyRule {
        PodFailurePolicyRule {
            action: action.into(),
            on_exit_codes: None,
            on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                type_: type_.into(),
                status: "True".into(),
            }]),
        }
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let policy = PodFailurePolicy {
            rules: vec![
                condition_rule("Ignore", "DisruptionTarget"),
                exit_rule("FailJob", Some("main"), "In", &[42]),
                exit_rule("Count", None, "NotIn", &[1, 2]),
            ],
        };
        let v = evaluate(Some(&policy), false, &failed(&[("main", 42)], &[]));
        assert_eq!(
            v.fail_job.as_deref(),
            Some("Container main for pod ns/p failed with exit code 42 matching FailJob rule at index 1")
        );
        // A disrupted pod is ignored whatever its exit code.
        let v = evaluate(Some(&policy), false, &failed(&[("main", 42)], &["DisruptionTarget"]));
        assert_eq!((v.fail_job, v.counts, v.action.as_deref()), (None, false, Some("Ignore")));
        // Exit code 42 in another container: not the FailJob rule; NotIn [1,2] counts it.
        let v = evaluate(Some(&policy), false, &failed(&[("side", 42)], &[]));
        assert_eq!((v.counts, v.action.as_deref()), (true, Some("Count")));
        // Exit code 1: no rule matches, it counts.
        let v = evaluate(Some(&policy), false, &failed(&[("main", 1)], &[]));
        assert_eq!((v.fail_job, v.counts, v.action), (None, true, None));
    }

    #[test]
    fn fail_index_applies_only_with_a_per_index_limit() {
        let policy = PodFailurePolicy {
            rules: vec![
                exit_rule("FailIndex", None, "In", &[42]),
                exit_rule("Ignore", None, "In", &[42, 43]),
            ],
        };
        let pod = failed(&[("main", 42)], &[]);
        let v = evaluate(Some(&policy), true, &pod);
        assert_eq!((v.fail_job, v.counts, v.action.as_deref()), (None, true, Some("FailIndex")));
        // Without backoffLimitPerIndex the rule is skipped: the next one decides.
        let v = evaluate(Some(&policy), false, &pod);
        assert_eq!((v.counts, v.action.as_deref()), (false, Some("Ignore")));
    }

    #[test]
    fn exit_code_zero_never_matches_and_conditions_name_themselves() {
        let policy = PodFailurePolicy { rules: vec![exit_rule("FailJob", None, "NotIn", &[5])] };
        assert_eq!(evaluate(Some(&policy), false, &failed(&[("c", 0)], &[])).fail_job, None);
        let policy = PodFailurePolicy { rules: vec![condition_rule("FailJob", "ConfigIssue")] };
        let v = evaluate(Some(&policy), false, &failed(&[], &["ConfigIssue"]));
        assert_eq!(
            v.fail_job.as_deref(),
            Some("Pod ns/p has condition ConfigIssue matching FailJob rule at index 0")
        );
        assert!(evaluate(None, false, &failed(&[("c", 3)], &[])).counts);
    }
}
