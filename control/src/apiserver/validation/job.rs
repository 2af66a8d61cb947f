//! The Job spec rules of Indexed completion, per-index backoff, the pod failure policy, the
//! success policy and the pod replacement policy, as the reference's `validateJobSpec`:
//! `backoffLimitPerIndex`, `maxFailedIndexes` and `successPolicy` need `completionMode:
//! Indexed`; `maxFailedIndexes` needs `backoffLimitPerIndex` and stays within `completions`
//! and 100000; a `FailIndex` rule needs `backoffLimitPerIndex`; success policy rules are 1 to
//! 20, each with a count and/or an interval list of indexes below `completions`. Shared by Jobs
//! (`spec`) and CronJob templates (`spec.jobTemplate.spec`).

use std::collections::HashSet;

use serde_json::{json, Value};

use super::errors::Errors;
use super::names;
use super::workloads::non_negative;

const MAX_PARALLELISM_FOR_INDEXED_JOB: i64 = 100_000;
const MAX_FAILED_INDEXES_FOR_INDEXED_JOB: i64 = 100_000;
/// Above this many completions, per-index backoff needs tighter limits.
const COMPLETIONS_SOFT_LIMIT: i64 = 100_000;
const PARALLELISM_LIMIT_FOR_HIGH_COMPLETIONS: i64 = 10_000;
const MAX_FAILED_INDEXES_LIMIT_FOR_HIGH_COMPLETIONS: i64 = 10_000;
const MAX_POD_FAILURE_POLICY_RULES: usize = 20;
const MAX_ON_EXIT_CODES_VALUES: usize = 255;
const MAX_ON_POD_CONDITIONS_PATTERNS: usize = 20;
const MAX_SUCCEEDED_INDEXES_LENGTH: usize = 64 * 1024;
const MAX_SUCCESS_POLICY_RULES: usize = 20;

/// Pod failure policy actions, in the reference's (sorted) order.
const ACTIONS: [&str; 4] = ["Count", "FailIndex", "FailJob", "Ignore"];
const OPERATORS: [&str; 2] = ["In", "NotIn"];
const CONDITION_STATUSES: [&str; 3] = ["False", "True", "Unknown"];
const REPLACEMENT_POLICIES: [&str; 2] = ["Failed", "TerminatingOrFailed"];

/// A field that is set (present and not null).
fn field<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|x| !x.is_null())
}

/// The array at `key` (empty when absent or not an array).
fn array<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
}

/// The `%q` rendering of a Go string slice: `["a" "b"]`.
fn go_list(values: &[&str]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
    format!("[{}]", quoted.join(" "))
}

/// Validates the indexed-job, failure-policy and success-policy fields of the job spec `spec`
/// at `path`.
pub fn validate_job_spec(spec: &Value, path: &str, errs: &mut Errors) {
    let at = |key: &str| format!("{path}.{key}");
    let int = |key: &str| field(spec, key).and_then(Value::as_i64);
    for key in ["backoffLimitPerIndex", "maxFailedIndexes"] {
        non_negative(spec, key, path, errs);
    }
    let per_index = field(spec, "backoffLimitPerIndex");
    let max_failed = field(spec, "maxFailedIndexes");
    if max_failed.is_some() && per_index.is_none() {
        errs.required(&at("backoffLimitPerIndex"), "when maxFailedIndexes is specified");
    }
    let mode = field(spec, "completionMode");
    let indexed = mode.and_then(Value::as_str) == Some("Indexed");
    if indexed {
        let completions = int("completions");
        if field(spec, "completions").is_none() {
            errs.required(&at("completions"), "when completion mode is Indexed");
        }
        if let Some(p) = int("parallelism").filter(|p| *p > MAX_PARALLELISM_FOR_INDEXED_JOB) {
            let detail = format!(
                "must be less than or equal to {MAX_PARALLELISM_FOR_INDEXED_JOB} when completion \
                 mode is Indexed"
            );
            errs.invalid(&at("parallelism"), &json!(p), &detail);
        }
        if let (Some(c), Some(m)) = (completions, int("maxFailedIndexes")) {
            if m > c {
                errs.invalid(
                    &at("maxFailedIndexes"),
                    &json!(m),
                    "must be less than or equal to completions",
                );
            }
        }
        if let Some(m) = int("maxFailedIndexes").filter(|m| *m > MAX_FAILED_INDEXES_FOR_INDEXED_JOB)
        {
            let detail =
                format!("must be less than or equal to {MAX_FAILED_INDEXES_FOR_INDEXED_JOB}");
            errs.invalid(&at("maxFailedIndexes"), &json!(m), &detail);
        }
        if completions.is_some_and(|c| c > COMPLETIONS_SOFT_LIMIT) && per_index.is_some() {
            high_completion_limits(spec, path, errs);
        }
    }
    let non_indexed = mode.is_none() || mode.and_then(Value::as_str) == Some("NonIndexed");
    if non_indexed {
        for (key, value) in [("backoffLimitPerIndex", per_index), ("maxFailedIndexes", max_failed)]
        {
            if let Some(value) = value {
                errs.invalid(&at(key), value, "requires indexed completion mode");
            }
        }
    }
    if let Some(policy) = field(spec, "podFailurePolicy") {
        validate_pod_failure_policy(spec, policy, path, errs);
    }
    if let Some(policy) = field(spec, "successPolicy") {
        if indexed {
            validate_success_policy(int("completions"), policy, &at("successPolicy"), errs);
        } else {
            errs.invalid(&at("successPolicy"), policy, "requires indexed completion mode");
        }
    }
    validate_replacement_policy(spec, path, errs);
}

/// The tighter limits of per-index backoff above [`COMPLETIONS_SOFT_LIMIT`] completions.
fn high_completion_limits(spec: &Value, path: &str, errs: &mut Errors) {
    let at = |key: &str| format!("{path}.{key}");
    let int = |key: &str| field(spec, key).and_then(Value::as_i64);
    let high = format!(
        "when completions are above {COMPLETIONS_SOFT_LIMIT} and used with backoff limit per index"
    );
    if field(spec, "maxFailedIndexes").is_none() {
        let detail =
            format!("must be specified when completions is above {COMPLETIONS_SOFT_LIMIT}");
        errs.required(&at("maxFailedIndexes"), &detail);
    }
    if let Some(p) = int("parallelism").filter(|p| *p > PARALLELISM_LIMIT_FOR_HIGH_COMPLETIONS) {
        let detail = format!(
            "must be less than or equal to {PARALLELISM_LIMIT_FOR_HIGH_COMPLETIONS} {high}"
        );
        errs.invalid(&at("parallelism"), &json!(p), &detail);
    }
    let max_failed = int("maxFailedIndexes");
    if let Some(m) = max_failed.filter(|m| *m > MAX_FAILED_INDEXES_LIMIT_FOR_HIGH_COMPLETIONS) {
        let detail = format!(
            "must be less than or equal to {MAX_FAILED_INDEXES_LIMIT_FOR_HIGH_COMPLETIONS} {high}"
        );
        errs.invalid(&at("maxFailedIndexes"), &json!(m), &detail);
    }
}

/// `podFailurePolicy` of the job spec at `job_path`: at most 20 rules, each with a known action
/// and exactly one of `onExitCodes` and `onPodConditions`; the template must not restart
/// containers itself.
fn validate_pod_failure_policy(spec: &Value, policy: &Value, job_path: &str, errs: &mut Errors) {
    let rules_path = format!("{job_path}.podFailurePolicy.rules");
    let rules = array(policy, "rules");
    if rules.len() > MAX_POD_FAILURE_POLICY_RULES {
        errs.too_many(&rules_path, rules.len(), MAX_POD_FAILURE_POLICY_RULES);
    }
    let pod_spec = spec.pointer("/template/spec").unwrap_or(&Value::Null);
    let containers: HashSet<&str> = array(pod_spec, "containers")
        .iter()
        .chain(array(pod_spec, "initContainers"))
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .collect();
    let per_index = field(spec, "backoffLimitPerIndex").is_some();
    for (i, rule) in rules.iter().enumerate() {
        let rule_path = format!("{rules_path}[{i}]");
        let action_path = format!("{rule_path}.action");
        match field(rule, "action") {
            None => errs.required(&action_path, &format!("valid values: {}", go_list(&ACTIONS))),
            Some(Value::String(a)) if a.is_empty() => {
                errs.required(&action_path, &format!("valid values: {}", go_list(&ACTIONS)));
            }
            Some(Value::String(a)) if a == "FailIndex" => {
                if !per_index {
                    errs.invalid_str(
                        &action_path,
                        a,
                        "requires the backoffLimitPerIndex to be set",
                    );
                }
            }
            Some(Value::String(a)) if ACTIONS.contains(&a.as_str()) => {}
            Some(other) => errs.not_supported(&action_path, other, &ACTIONS),
        }
        let exit_codes = field(rule, "onExitCodes");
        let conditions = array(rule, "onPodConditions");
        if let Some(exit_codes) = exit_codes {
            validate_on_exit_codes(
                exit_codes,
                &format!("{rule_path}.onExitCodes"),
                &containers,
                errs,
            );
        }
        if !conditions.is_empty() {
            validate_on_conditions(conditions, &format!("{rule_path}.onPodConditions"), errs);
        }
        match (exit_codes.is_some(), conditions.is_empty()) {
            (true, false) => errs.invalid_omitted(
                &rule_path,
                "specifying both OnExitCodes and OnPodConditions is not supported",
            ),
            (false, true) => errs.invalid_omitted(
                &rule_path,
                "specifying one of OnExitCodes and OnPodConditions is required",
            ),
            _ => {}
        }
    }
    let restart = pod_spec.get("restartPolicy").and_then(Value::as_str);
    if restart == Some("OnFailure") {
        errs.invalid_str(
            &format!("{job_path}.template.spec.restartPolicy"),
            "OnFailure",
            "only \"Never\" is supported when podFailurePolicy is specified",
        );
    }
}

/// One `onExitCodes` requirement: a known operator, a container of the template, 1 to 255
/// distinct values in ascending order, none of them 0 for `In`.
fn validate_on_exit_codes(
    requirement: &Value,
    path: &str,
    containers: &HashSet<&str>,
    errs: &mut Errors,
) {
    let operator_path = format!("{path}.operator");
    let operator = field(requirement, "operator");
    match operator {
        None => errs.required(&operator_path, &format!("valid values: {}", go_list(&OPERATORS))),
        Some(Value::String(o)) if o.is_empty() => {
            errs.required(&operator_path, &format!("valid values: {}", go_list(&OPERATORS)));
        }
        Some(Value::String(o)) if OPERATORS.contains(&o.as_str()) => {}
        Some(other) => errs.not_supported(&operator_path, other, &OPERATORS),
    }
    if let Some(name) = field(requirement, "containerName").and_then(Value::as_str) {
        if !containers.contains(name) {
            errs.invalid_str(
                &format!("{path}.containerName"),
                name,
                "must be one of the container or initContainer names in the pod template",
            );
        }
    }
    let values_path = format!("{path}.values");
    let values = array(requirement, "values");
    if values.is_empty() {
        errs.invalid(&values_path, &json!([]), "at least one value is required");
    } else if values.len() > MAX_ON_EXIT_CODES_VALUES {
        errs.too_many(&values_path, values.len(), MAX_ON_EXIT_CODES_VALUES);
    }
    let is_in = operator.and_then(Value::as_str) == Some("In");
    let mut seen = HashSet::new();
    let mut ordered = true;
    let mut previous: Option<i64> = None;
    for (j, value) in values.iter().enumerate() {
        let Some(code) = value.as_i64() else { continue };
        let value_path = format!("{values_path}[{j}]");
        if is_in && code == 0 {
            errs.invalid(&value_path, value, "must not be 0 for the In operator");
        }
        if !seen.insert(code) {
            errs.duplicate(&value_path, value);
        }
        if previous.is_some_and(|p| p > code) {
            ordered = false;
        }
        previous = Some(code);
    }
    if !ordered {
        errs.invalid(&values_path, &Value::Array(values.to_vec()), "must be ordered");
    }
}

/// `onPodConditions` patterns: at most 20, each a qualified condition type and a status.
fn validate_on_conditions(patterns: &[Value], path: &str, errs: &mut Errors) {
    if patterns.len() > MAX_ON_POD_CONDITIONS_PATTERNS {
        errs.too_many(path, patterns.len(), MAX_ON_POD_CONDITIONS_PATTERNS);
    }
    for (j, pattern) in patterns.iter().enumerate() {
        let pattern_path = format!("{path}[{j}]");
        let kind = pattern.get("type").and_then(Value::as_str).unwrap_or("");
        for message in names::qualified_name(kind) {
            errs.invalid_str(&format!("{pattern_path}.type"), kind, &message);
        }
        let status_path = format!("{pattern_path}.status");
        match field(pattern, "status") {
            None => errs
                .required(&status_path, &format!("valid values: {}", go_list(&CONDITION_STATUSES))),
            Some(Value::String(s)) if s.is_empty() => errs
                .required(&status_path, &format!("valid values: {}", go_list(&CONDITION_STATUSES))),
            Some(Value::String(s)) if CONDITION_STATUSES.contains(&s.as_str()) => {}
            Some(other) => errs.not_supported(&status_path, other, &CONDITION_STATUSES),
        }
    }
}

/// `successPolicy` of an Indexed job: 1 to 20 rules, each with `succeededIndexes` (an
/// ascending interval list below `completions`) and/or a `succeededCount` that fits both.
fn validate_success_policy(
    completions: Option<i64>,
    policy: &Value,
    path: &str,
    errs: &mut Errors,
) {
    let rules_path = format!("{path}.rules");
    let rules = array(policy, "rules");
    if rules.is_empty() {
        errs.required(
            &rules_path,
            "at least one rules must be specified when the successPolicy is specified",
        );
    }
    if rules.len() > MAX_SUCCESS_POLICY_RULES {
        errs.too_many(&rules_path, rules.len(), MAX_SUCCESS_POLICY_RULES);
    }
    for (i, rule) in rules.iter().enumerate() {
        let rule_path = format!("{rules_path}[{i}]");
        let count = field(rule, "succeededCount");
        let indexes = field(rule, "succeededIndexes");
        if count.is_none() && indexes.is_none() {
            errs.required(
                &rule_path,
                "at least one of succeededCount or succeededIndexes must be specified",
            );
        }
        // Left at 0 when the list does not parse, as the reference does.
        let mut total = 0;
        if let Some(text) = indexes.and_then(Value::as_str) {
            let indexes_path = format!("{rule_path}.succeededIndexes");
            if text.len() > MAX_SUCCEEDED_INDEXES_LENGTH {
                errs.too_long(&indexes_path, MAX_SUCCEEDED_INDEXES_LENGTH);
            }
            // Without completions the Indexed rule above already refused the job.
            if let Some(completions) = completions {
                match count_indexes(text, completions) {
                    Ok(n) => total = n,
                    Err(why) => errs.invalid_str(
                        &indexes_path,
                        text,
                        &format!("error parsing succeededIndexes: {why}"),
                    ),
                }
            }
        }
        if let Some(n) = count.and_then(Value::as_i64) {
            let count_path = format!("{rule_path}.succeededCount");
            if n < 0 {
                errs.invalid(&count_path, &json!(n), "must be greater than or equal to 0");
            }
            if let Some(c) = completions.filter(|c| n > *c) {
                let detail = format!(
                    "must be less than or equal to {c} (the number of specified completions)"
                );
                errs.invalid(&count_path, &json!(n), &detail);
            }
            if indexes.is_some() && n > total {
                let detail = format!(
                    "must be less than or equal to {total} (the number of indexes in the \
                     specified succeededIndexes field)"
                );
                errs.invalid(&count_path, &json!(n), &detail);
            }
        }
    }
}

/// How many indexes an interval list like `1,3-5,7` names, all below `completions` and in
/// ascending order; the reference's reason when it is malformed.
fn count_indexes(text: &str, completions: i64) -> Result<i64, String> {
    if text.is_empty() {
        return Ok(0);
    }
    let mut last: Option<i64> = None;
    let mut total = 0;
    for interval in text.split(',') {
        let (first, end) = parse_interval(interval, completions)?;
        if let Some(previous) = last.filter(|l| *l >= first) {
            return Err(format!("non-increasing order, previous: {previous}, current: {first}"));
        }
        total += end - first + 1;
        last = Some(end);
    }
    Ok(total)
}

/// `x` or `x-y` with `x < y < completions`.
fn parse_interval(interval: &str, completions: i64) -> Result<(i64, i64), String> {
    let parts: Vec<&str> = interval.split('-').collect();
    if parts.len() > 2 {
        return Err(format!(
            "the fragment {interval:?} violates the requirement that an index interval can have \
             at most two parts separated by '-'"
        ));
    }
    let index = |part: &str| -> Result<i64, String> {
        let n: i64 = part
            .parse()
            .map_err(|_| format!("cannot convert string to integer for index: {part:?}"))?;
        if n >= completions {
            return Err(format!("too large index: {part:?}"));
        }
        Ok(n)
    };
    let first = index(parts[0])?;
    let Some(second) = parts.get(1) else { return Ok((first, first)) };
    let end = index(second)?;
    if first >= end {
        return Err(format!("non-increasing order, previous: {first}, current: {end}"));
    }
    Ok((first, end))
}

/// `podReplacementPolicy`: only `Failed` with a pod failure policy.
fn validate_replacement_policy(spec: &Value, path: &str, errs: &mut Errors) {
    let Some(policy) = field(spec, "podReplacementPolicy") else { return };
    let field_path = format!("{path}.podReplacementPolicy");
    let allowed: &[&str] =
        if field(spec, "podFailurePolicy").is_some() { &["Failed"] } else { &REPLACEMENT_POLICIES };
    if !policy.as_str().is_some_and(|p| allowed.contains(&p)) {
        errs.not_supported(&field_path, policy, allowed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(spec: Value) -> Vec<(String, String, String)> {
        let mut errs = Errors::default();
        validate_job_spec(&spec, "spec", &mut errs);
        errs.triples()
    }

    fn one(reason: &str, field: &str, message: &str) -> Vec<(String, String, String)> {
        vec![(reason.to_string(), field.to_string(), message.to_string())]
    }

    fn indexed(extra: Value) -> Value {
        let mut spec = json!({"completionMode": "Indexed", "completions": 5,
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "main"}]}}});
        crate::scheduler::node_info::testing::merge(&mut spec, extra);
        spec
    }

    #[test]
    fn a_valid_indexed_job_with_every_policy_passes() {
        let spec = indexed(json!({"backoffLimitPerIndex": 1, "maxFailedIndexes": 2,
            "podFailurePolicy": {"rules": [
                {"action": "FailIndex", "onExitCodes": {"containerName": "main",
                 "operator": "In", "values": [1, 42]}},
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget",
                                                          "status": "True"}]}]},
            "successPolicy": {"rules": [{"succeededIndexes": "0,2-4", "succeededCount": 3}]},
            "podReplacementPolicy": "Failed"}));
        assert_eq!(check(spec), []);
    }

    #[test]
    fn per_index_fields_need_indexed_mode() {
        let spec = json!({"backoffLimitPerIndex": 1, "maxFailedIndexes": 1});
        assert_eq!(
            check(spec),
            [
                (
                    "FieldValueInvalid".to_string(),
                    "spec.backoffLimitPerIndex".to_string(),
                    "Invalid value: 1: requires indexed completion mode".to_string()
                ),
                (
                    "FieldValueInvalid".to_string(),
                    "spec.maxFailedIndexes".to_string(),
                    "Invalid value: 1: requires indexed completion mode".to_string()
                ),
            ]
        );
        let success = json!({"completionMode": "NonIndexed", "successPolicy": {"rules": []}});
        assert_eq!(
            check(success),
            one(
                "FieldValueInvalid",
                "spec.successPolicy",
                "Invalid value: {\"rules\":[]}: requires indexed completion mode"
            )
        );
    }

    #[test]
    fn max_failed_indexes_needs_per_index_backoff_and_stays_within_limits() {
        assert_eq!(
            check(indexed(json!({"maxFailedIndexes": 1}))),
            one(
                "FieldValueRequired",
                "spec.backoffLimitPerIndex",
                "Required value: when maxFailedIndexes is specified"
            )
        );
        assert_eq!(
            check(indexed(json!({"backoffLimitPerIndex": 1, "maxFailedIndexes": 6}))),
            one(
                "FieldValueInvalid",
                "spec.maxFailedIndexes",
                "Invalid value: 6: must be less than or equal to completions"
            )
        );
        let huge = indexed(json!({"completions": 200000, "backoffLimitPerIndex": 1,
                                  "maxFailedIndexes": 150000}));
        let fields: Vec<String> = check(huge).into_iter().map(|(_, _, m)| m).collect();
        assert_eq!(
            fields,
            [
                "Invalid value: 150000: must be less than or equal to 100000",
                "Invalid value: 150000: must be less than or equal to 10000 when completions \
                 are above 100000 and used with backoff limit per index",
            ]
        );
        assert_eq!(
            check(json!({"completionMode": "Indexed"})),
            one(
                "FieldValueRequired",
                "spec.completions",
                "Required value: when completion mode is Indexed"
            )
        );
    }

    #[test]
    fn fail_index_needs_per_index_backoff() {
        let spec = indexed(json!({"podFailurePolicy": {"rules": [{"action": "FailIndex",
            "onExitCodes": {"operator": "In", "values": [1]}}]}}));
        assert_eq!(
            check(spec),
            one(
                "FieldValueInvalid",
                "spec.podFailurePolicy.rules[0].action",
                "Invalid value: \"FailIndex\": requires the backoffLimitPerIndex to be set"
            )
        );
    }

    #[test]
    fn pod_failure_policy_rule_shapes() {
        let spec = indexed(json!({"podFailurePolicy": {"rules": [
            {"action": "Explode", "onExitCodes": {"operator": "In", "values": [0, 3, 3, 2],
                                                  "containerName": "nope"}},
            {"action": "Ignore"}]}}));
        let messages: Vec<(String, String)> =
            check(spec).into_iter().map(|(_, f, m)| (f, m)).collect();
        let expected = [
            (
                "spec.podFailurePolicy.rules[0].action",
                "Unsupported value: \"Explode\": supported values: \"Count\", \"FailIndex\", \
                 \"FailJob\", \"Ignore\"",
            ),
            (
                "spec.podFailurePolicy.rules[0].onExitCodes.containerName",
                "Invalid value: \"nope\": must be one of the container or initContainer names \
                 in the pod template",
            ),
            (
                "spec.podFailurePolicy.rules[0].onExitCodes.values[0]",
                "Invalid value: 0: must not be 0 for the In operator",
            ),
            ("spec.podFailurePolicy.rules[0].onExitCodes.values[2]", "Duplicate value: 3"),
            (
                "spec.podFailurePolicy.rules[0].onExitCodes.values",
                "Invalid value: [0,3,3,2]: must be ordered",
            ),
            (
                "spec.podFailurePolicy.rules[1]",
                "Invalid value: specifying one of OnExitCodes and OnPodConditions is required",
            ),
        ];
        let expected: Vec<(String, String)> =
            expected.iter().map(|(f, m)| (f.to_string(), m.to_string())).collect();
        assert_eq!(messages, expected);
        let on_failure = indexed(json!({"template": {"spec": {"restartPolicy": "OnFailure"}},
            "podFailurePolicy": {"rules": [{"action": "Ignore",
                "onPodConditions": [{"type": "DisruptionTarget", "status": "Maybe"}]}]},
            "podReplacementPolicy": "TerminatingOrFailed"}));
        let fields: Vec<String> = check(on_failure).into_iter().map(|(_, f, _)| f).collect();
        assert_eq!(
            fields,
            [
                "spec.podFailurePolicy.rules[0].onPodConditions[0].status",
                "spec.template.spec.restartPolicy",
                "spec.podReplacementPolicy",
            ]
        );
    }

    #[test]
    fn success_policy_rules() {
        let policy = |rules: Value| indexed(json!({"successPolicy": {"rules": rules}}));
        assert_eq!(
            check(policy(json!([]))),
            one(
                "FieldValueRequired",
                "spec.successPolicy.rules",
                "Required value: at least one rules must be specified when the successPolicy is \
                 specified"
            )
        );
        let many: Vec<Value> = (0..21).map(|_| json!({"succeededCount": 1})).collect();
        assert_eq!(
            check(policy(json!(many))),
            one(
                "FieldValueTooMany",
                "spec.successPolicy.rules",
                "Too many: 21: must have at most 20 items"
            )
        );
        assert_eq!(
            check(policy(json!([{}]))),
            one(
                "FieldValueRequired",
                "spec.successPolicy.rules[0]",
                "Required value: at least one of succeededCount or succeededIndexes must be \
                 specified"
            )
        );
        assert_eq!(
            check(policy(json!([{"succeededCount": 6}]))),
            one(
                "FieldValueInvalid",
                "spec.successPolicy.rules[0].succeededCount",
                "Invalid value: 6: must be less than or equal to 5 (the number of specified \
                 completions)"
            )
        );
        assert_eq!(
            check(policy(json!([{"succeededIndexes": "1-2", "succeededCount": 3}]))),
            one(
                "FieldValueInvalid",
                "spec.successPolicy.rules[0].succeededCount",
                "Invalid value: 3: must be less than or equal to 2 (the number of indexes in the \
                 specified succeededIndexes field)"
            )
        );
        let bad = check(policy(json!([{"succeededIndexes": "3,1"}])));
        assert_eq!(
            bad,
            one(
                "FieldValueInvalid",
                "spec.successPolicy.rules[0].succeededIndexes",
                "Invalid value: \"3,1\": error parsing succeededIndexes: non-increasing order, \
                 previous: 3, current: 1"
            )
        );
    }

    #[test]
    fn index_lists_parse_as_the_reference() {
        assert_eq!(count_indexes("", 5), Ok(0));
        assert_eq!(count_indexes("0,2-4", 5), Ok(4));
        assert_eq!(count_indexes("5", 5), Err("too large index: \"5\"".into()));
        assert_eq!(
            count_indexes("a", 5),
            Err("cannot convert string to integer for index: \"a\"".into())
        );
        assert_eq!(
            count_indexes("1-2-3", 5).unwrap_err(),
            "the fragment \"1-2-3\" violates the requirement that an index interval can have \
             at most two parts separated by '-'"
        );
        assert_eq!(
            count_indexes("3-1", 5),
            Err("non-increasing order, previous: 3, current: 1".into())
        );
        assert_eq!(
            count_indexes("1-2,2", 5),
            Err("non-increasing order, previous: 2, current: 2".into())
        );
    }
}
