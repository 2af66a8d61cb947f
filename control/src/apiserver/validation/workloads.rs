//! Workload validation: deployments, replicasets, replication controllers, statefulsets,
//! daemonsets, jobs and cronjobs — selectors (required, non-empty, matching the template's
//! labels, immutable), replica counts, strategies, template restart policies.

use serde_json::{json, Value};

use super::errors::Errors;
use super::meta::validate_labels;
use super::pod::{self, supported};

fn int_at<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|x| !x.is_null())
}

/// A non-negative integer field, when set.
pub fn non_negative(spec: &Value, key: &str, path: &str, errs: &mut Errors) {
    if let Some(v) = int_at(spec, key) {
        if v.as_i64().is_none_or(|n| n < 0) {
            errs.invalid(&format!("{path}.{key}"), v, "must be greater than or equal to 0");
        }
    }
}

/// Whether a `metav1.LabelSelector` selects the given labels (matchLabels and expressions).
fn selector_matches(selector: &Value, labels: &Value) -> bool {
    let label = |k: &str| labels.get(k).and_then(Value::as_str);
    let labels_ok = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .is_none_or(|m| m.iter().all(|(k, v)| label(k) == v.as_str()));
    let exprs = selector.get("matchExpressions").and_then(Value::as_array);
    let exprs_ok = exprs.is_none_or(|list| {
        list.iter().all(|e| {
            let key = e.get("key").and_then(Value::as_str).unwrap_or("");
            let values: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|v| v.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            match e.get("operator").and_then(Value::as_str) {
                Some("In") => label(key).is_some_and(|v| values.contains(&v)),
                Some("NotIn") => label(key).is_none_or(|v| !values.contains(&v)),
                Some("Exists") => label(key).is_some(),
                Some("DoesNotExist") => label(key).is_none(),
                _ => false,
            }
        })
    });
    labels_ok && exprs_ok
}

fn selector_is_empty(selector: &Value) -> bool {
    let empty = |k: &str| match selector.get(k) {
        None | Some(Value::Null) => true,
        Some(Value::Object(m)) => m.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        _ => false,
    };
    empty("matchLabels") && empty("matchExpressions")
}

/// Validates a `metav1.LabelSelector`'s syntax.
fn validate_selector(selector: &Value, path: &str, errs: &mut Errors) {
    validate_labels(selector.get("matchLabels"), &format!("{path}.matchLabels"), errs);
    let exprs = selector.get("matchExpressions").and_then(Value::as_array);
    for (i, e) in exprs.map(Vec::as_slice).unwrap_or(&[]).iter().enumerate() {
        let field = format!("{path}.matchExpressions[{i}]");
        let values = e.get("values").and_then(Value::as_array).map(Vec::len).unwrap_or(0);
        match e.get("operator").and_then(Value::as_str) {
            Some("In" | "NotIn") if values == 0 => errs.required(
                &format!("{field}.values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            ),
            Some("Exists" | "DoesNotExist") if values > 0 => errs.forbidden(
                &format!("{field}.values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            ),
            Some("In" | "NotIn" | "Exists" | "DoesNotExist") => {}
            other => errs.not_supported(
                &format!("{field}.operator"),
                &json!(other.unwrap_or("")),
                &["In", "NotIn", "Exists", "DoesNotExist"],
            ),
        }
    }
}

/// A controller spec: `selector` required, non-empty, matching `template.metadata.labels`;
/// the template's pod spec valid with one of `restart_policies`.
pub fn validate_controller(
    spec: Option<&Value>,
    kind: &str,
    restart_policies: &[&str],
    errs: &mut Errors,
) {
    let Some(spec) = spec.filter(|s| s.is_object()) else {
        errs.required("spec.selector", "");
        errs.required("spec.template", "");
        return;
    };
    non_negative(spec, "replicas", "spec", errs);
    non_negative(spec, "minReadySeconds", "spec", errs);
    non_negative(spec, "revisionHistoryLimit", "spec", errs);
    let template_labels = spec.pointer("/template/metadata/labels").cloned().unwrap_or(json!({}));
    match spec.get("selector").filter(|s| !s.is_null()) {
        None => errs.required("spec.selector", ""),
        Some(selector) if !selector.is_object() => {
            errs.invalid("spec.selector", selector, "must be a label selector")
        }
        Some(selector) => {
            validate_selector(selector, "spec.selector", errs);
            if selector_is_empty(selector) {
                errs.invalid(
                    "spec.selector",
                    selector,
                    &format!("empty selector is invalid for {kind}"),
                );
            } else if !selector_matches(selector, &template_labels) {
                errs.invalid(
                    "spec.template.metadata.labels",
                    &template_labels,
                    "`selector` does not match template `labels`",
                );
            }
        }
    }
    validate_template(spec.get("template"), restart_policies, errs);
}

/// A pod template at `spec.template`, whose restart policy must be one of `policies`.
fn validate_template(template: Option<&Value>, policies: &[&str], errs: &mut Errors) {
    let Some(template) = template.filter(|t| t.is_object()) else {
        errs.required("spec.template", "");
        return;
    };
    validate_labels(template.pointer("/metadata/labels"), "spec.template.metadata.labels", errs);
    let spec = template.get("spec");
    pod::validate_spec(spec, "spec.template.spec", errs);
    let policy = spec.and_then(|s| s.get("restartPolicy")).cloned().unwrap_or(json!(""));
    if !policy.as_str().is_some_and(|p| policies.contains(&p)) {
        errs.not_supported("spec.template.spec.restartPolicy", &policy, policies);
    }
}

const PERCENT_MSG: &str = "a valid percent string must be a numeric string followed by an \
     ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')";

/// A percentage (`"25%"`) or a non-negative integer; returns whether it is zero.
fn int_or_percent(v: Option<&Value>, field: &str, errs: &mut Errors) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Number(n)) => match n.as_i64() {
            Some(i) if i >= 0 => i == 0,
            _ => {
                errs.invalid(
                    field,
                    &Value::Number(n.clone()),
                    "must be greater than or equal to 0",
                );
                false
            }
        },
        Some(Value::String(s)) => match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
            Some(p) if (0..=100).contains(&p) => p == 0,
            Some(p) if p > 100 => {
                errs.invalid_str(field, s, "must not be greater than 100%");
                false
            }
            _ => {
                errs.invalid_str(field, s, PERCENT_MSG);
                false
            }
        },
        Some(other) => {
            errs.invalid(field, other, "must be an integer or percentage (e.g '5%')");
            false
        }
    }
}

/// Deployment-specific rules: strategy and progress deadline.
pub fn validate_deployment(obj: &Value, errs: &mut Errors) {
    validate_controller(obj.get("spec"), "deployment", &["Always"], errs);
    let Some(spec) = obj.get("spec").filter(|s| s.is_object()) else { return };
    non_negative(spec, "progressDeadlineSeconds", "spec", errs);
    if let (Some(deadline), Some(min_ready)) = (
        spec.get("progressDeadlineSeconds").and_then(Value::as_i64),
        spec.get("minReadySeconds").and_then(Value::as_i64),
    ) {
        if deadline <= min_ready {
            errs.invalid(
                "spec.progressDeadlineSeconds",
                &json!(deadline),
                "must be greater than minReadySeconds",
            );
        }
    }
    let Some(strategy) = spec.get("strategy").filter(|s| s.is_object()) else { return };
    let kind = strategy.get("type");
    supported(kind, "spec.strategy.type", &["Recreate", "RollingUpdate"], errs);
    let rolling = strategy.get("rollingUpdate").filter(|r| !r.is_null());
    if kind.and_then(Value::as_str) == Some("Recreate") && rolling.is_some() {
        errs.forbidden(
            "spec.strategy.rollingUpdate",
            "may not be specified when strategy `type` is 'Recreate'",
        );
    }
    if let Some(rolling) = rolling {
        validate_rolling(rolling, "spec.strategy.rollingUpdate", errs);
    }
}

/// maxUnavailable / maxSurge: valid, and not both zero.
fn validate_rolling(rolling: &Value, path: &str, errs: &mut Errors) {
    let unavailable_field = format!("{path}.maxUnavailable");
    let unavailable_zero = int_or_percent(rolling.get("maxUnavailable"), &unavailable_field, errs);
    let surge_zero = int_or_percent(rolling.get("maxSurge"), &format!("{path}.maxSurge"), errs);
    if unavailable_zero && surge_zero {
        let value = rolling.get("maxUnavailable").cloned().unwrap_or(json!(0));
        errs.invalid(&unavailable_field, &value, "may not be 0 when `maxSurge` is 0");
    }
}

/// StatefulSet-specific rules.
pub fn validate_statefulset(obj: &Value, errs: &mut Errors) {
    validate_controller(obj.get("spec"), "statefulset", &["Always"], errs);
    let Some(spec) = obj.get("spec").filter(|s| s.is_object()) else { return };
    supported(
        spec.get("podManagementPolicy"),
        "spec.podManagementPolicy",
        &["OrderedReady", "Parallel"],
        errs,
    );
    let strategy = spec.get("updateStrategy").filter(|s| s.is_object());
    if let Some(strategy) = strategy {
        supported(
            strategy.get("type"),
            "spec.updateStrategy.type",
            &["RollingUpdate", "OnDelete"],
            errs,
        );
    }
}

/// DaemonSet-specific rules.
pub fn validate_daemonset(obj: &Value, errs: &mut Errors) {
    validate_controller(obj.get("spec"), "daemonset", &["Always"], errs);
    let Some(strategy) = obj.pointer("/spec/updateStrategy").filter(|s| s.is_object()) else {
        return;
    };
    supported(
        strategy.get("type"),
        "spec.updateStrategy.type",
        &["RollingUpdate", "OnDelete"],
        errs,
    );
    if let Some(rolling) = strategy.get("rollingUpdate").filter(|r| r.is_object()) {
        validate_rolling(rolling, "spec.updateStrategy.rollingUpdate", errs);
    }
}

/// Job rules: counts, completion mode, a template with OnFailure or Never.
pub fn validate_job(obj: &Value, errs: &mut Errors) {
    let Some(spec) = obj.get("spec").filter(|s| s.is_object()) else {
        errs.required("spec.template", "");
        return;
    };
    for key in [
        "parallelism",
        "completions",
        "backoffLimit",
        "activeDeadlineSeconds",
        "ttlSecondsAfterFinished",
    ] {
        non_negative(spec, key, "spec", errs);
    }
    supported(spec.get("completionMode"), "spec.completionMode", &["NonIndexed", "Indexed"], errs);
    // The selector is generated from the uid unless manualSelector; when present it must
    // match the template.
    if let Some(selector) = spec.get("selector").filter(|s| s.is_object()) {
        validate_selector(selector, "spec.selector", errs);
        let labels = spec.pointer("/template/metadata/labels").cloned().unwrap_or(json!({}));
        if !selector_matches(selector, &labels) {
            errs.invalid(
                "spec.template.metadata.labels",
                &labels,
                "`selector` does not match template `labels`",
            );
        }
    }
    super::job::validate_job_spec(spec, "spec", errs);
    validate_template(spec.get("template"), &["OnFailure", "Never"], errs);
}

/// CronJob rules: schedule, concurrency policy, history limits, the job template.
pub fn validate_cronjob(obj: &Value, errs: &mut Errors) {
    // The job names derived from it (name + 11-digit suffix) must stay within 63 characters.
    if let Some(name) = obj.pointer("/metadata/name").and_then(Value::as_str) {
        if name.len() > 52 {
            errs.invalid_str("metadata.name", name, "must be no more than 52 characters");
        }
    }
    let Some(spec) = obj.get("spec").filter(|s| s.is_object()) else {
        errs.required("spec.schedule", "");
        return;
    };
    match spec.get("schedule").and_then(Value::as_str) {
        None | Some("") => errs.required("spec.schedule", ""),
        Some(schedule) => {
            if let Err(why) = check_schedule(schedule) {
                errs.invalid_str("spec.schedule", schedule, &why);
            }
        }
    }
    supported(
        spec.get("concurrencyPolicy"),
        "spec.concurrencyPolicy",
        &["Allow", "Forbid", "Replace"],
        errs,
    );
    for key in ["successfulJobsHistoryLimit", "failedJobsHistoryLimit", "startingDeadlineSeconds"] {
        non_negative(spec, key, "spec", errs);
    }
    if let Some(job_spec) = spec.pointer("/jobTemplate/spec").filter(|s| s.is_object()) {
        super::job::validate_job_spec(job_spec, "spec.jobTemplate.spec", errs);
    }
    let Some(template) = spec.pointer("/jobTemplate/spec/template").filter(|t| t.is_object())
    else {
        errs.required("spec.jobTemplate.spec.template", "");
        return;
    };
    let pod_spec = template.get("spec");
    pod::validate_spec(pod_spec, "spec.jobTemplate.spec.template.spec", errs);
    let policy = pod_spec.and_then(|s| s.get("restartPolicy")).cloned().unwrap_or(json!(""));
    if !matches!(policy.as_str(), Some("OnFailure" | "Never")) {
        errs.not_supported(
            "spec.jobTemplate.spec.template.spec.restartPolicy",
            &policy,
            &["OnFailure", "Never"],
        );
    }
}

/// A standard 5-field cron expression or a `@`-descriptor, as robfig/cron parses them.
fn check_schedule(schedule: &str) -> Result<(), String> {
    let schedule = schedule.trim();
    let schedule = match schedule.strip_prefix("TZ=").or_else(|| schedule.strip_prefix("CRON_TZ="))
    {
        Some(_) => {
            return Err("cannot use TZ or CRON_TZ in schedule, use timeZone field instead".into())
        }
        None => schedule,
    };
    if let Some(descriptor) = schedule.strip_prefix('@') {
        let known = ["yearly", "annually", "monthly", "weekly", "daily", "midnight", "hourly"];
        return if known.contains(&descriptor) || descriptor.starts_with("every ") {
            Ok(())
        } else {
            Err(format!("unrecognized descriptor: {schedule}"))
        };
    }
    let fields: Vec<&str> = schedule.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "expected exactly 5 fields, found {}: [{}]",
            fields.len(),
            fields.join(" ")
        ));
    }
    let ranges = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)];
    for (field, (lo, hi)) in fields.iter().zip(ranges) {
        for part in field.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((r, s)) => (r, Some(s)),
                None => (part, None),
            };
            if let Some(step) = step {
                if step.parse::<u32>().map_or(true, |s| s == 0) {
                    return Err(format!("failed to parse int from {step}"));
                }
            }
            if range == "*" || range == "?" {
                continue;
            }
            let bounds: Vec<&str> = range.splitn(2, '-').collect();
            for b in &bounds {
                // Month and weekday names (jan, mon, ...) are accepted by the reference parser.
                if b.len() == 3 && b.bytes().all(|c| c.is_ascii_alphabetic()) {
                    continue;
                }
                match b.parse::<u32>() {
                    Ok(n) if (lo..=hi).contains(&n) => {}
                    Ok(n) => {
                        return Err(format!("end of range ({n}) above maximum ({hi}): {part}"))
                    }
                    Err(_) => return Err(format!("failed to parse int from {b}")),
                }
            }
        }
    }
    Ok(())
}

/// Fields of a StatefulSet spec that an update may change.
const STATEFULSET_MUTABLE: &[&str] = &[
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "revisionHistoryLimit",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
];

/// The immutable parts of workload updates.
pub fn validate_update(kind: &str, old: &Value, new: &Value, errs: &mut Errors) {
    let old_selector = old.pointer("/spec/selector");
    let new_selector = new.pointer("/spec/selector");
    let selector_kind =
        matches!(kind, "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet" | "Job");
    if selector_kind && old_selector.is_some_and(|s| !s.is_null()) && old_selector != new_selector {
        errs.immutable("spec.selector", new_selector.unwrap_or(&Value::Null));
    }
    match kind {
        "StatefulSet" => {
            let strip = |v: Option<&Value>| {
                let mut spec = v.cloned().unwrap_or(json!({}));
                if let Some(map) = spec.as_object_mut() {
                    map.retain(|k, _| !STATEFULSET_MUTABLE.contains(&k.as_str()));
                }
                spec
            };
            if strip(old.get("spec")) != strip(new.get("spec")) {
                errs.forbidden(
                    "spec",
                    "updates to statefulset spec for fields other than 'replicas', 'ordinals', \
                     'template', 'updateStrategy', 'revisionHistoryLimit', \
                     'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
                );
            }
        }
        "Job" => {
            for key in ["completions", "completionMode"] {
                let (before, after) =
                    (old.pointer(&format!("/spec/{key}")), new.pointer(&format!("/spec/{key}")));
                if before != after {
                    errs.immutable(&format!("spec.{key}"), after.unwrap_or(&Value::Null));
                }
            }
            let (before, after) = (old.pointer("/spec/template"), new.pointer("/spec/template"));
            if before != after {
                errs.immutable("spec.template", after.unwrap_or(&Value::Null));
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment() -> Value {
        json!({"metadata": {"name": "web", "namespace": "d"}, "spec": {"replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"restartPolicy": "Always", "containers": [{"name": "a", "image": "x"}]}}}})
    }

    fn check(f: fn(&Value, &mut Errors), obj: &Value) -> Vec<(String, String, String)> {
        let mut errs = Errors::default();
        f(obj, &mut errs);
        errs.triples()
    }

    #[test]
    fn valid_deployment_passes() {
        assert!(check(validate_deployment, &deployment()).is_empty());
    }

    #[test]
    fn deployment_selector_is_required_and_must_match() {
        let mut d = deployment();
        d["spec"]["selector"] = Value::Null;
        assert_eq!(
            check(validate_deployment, &d),
            [("FieldValueRequired".into(), "spec.selector".into(), "Required value".into())]
        );
        d["spec"]["selector"] = json!({"matchLabels": {"app": "other"}});
        let errs = check(validate_deployment, &d);
        assert_eq!(errs[0].1, "spec.template.metadata.labels");
        assert_eq!(
            errs[0].2,
            r#"Invalid value: {"app":"web"}: `selector` does not match template `labels`"#
        );
        d["spec"]["selector"] = json!({});
        assert_eq!(
            check(validate_deployment, &d)[0].2,
            "Invalid value: {}: empty selector is invalid for deployment"
        );
    }

    #[test]
    fn deployment_strategy_rules() {
        let mut d = deployment();
        d["spec"]["strategy"] = json!({"type": "Recreate", "rollingUpdate": {"maxSurge": 1}});
        assert_eq!(check(validate_deployment, &d)[0].0, "FieldValueForbidden");
        d["spec"]["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}});
        assert_eq!(
            check(validate_deployment, &d)[0],
            (
                "FieldValueInvalid".into(),
                "spec.strategy.rollingUpdate.maxUnavailable".into(),
                "Invalid value: \"0%\": may not be 0 when `maxSurge` is 0".into()
            )
        );
        d["spec"]["replicas"] = json!(-1);
        d["spec"]["strategy"] = json!({"type": "Blue"});
        let fields: Vec<String> = check(validate_deployment, &d).into_iter().map(|e| e.1).collect();
        assert_eq!(fields, ["spec.replicas", "spec.strategy.type"]);
    }

    #[test]
    fn selectors_and_jobs_are_immutable() {
        let old = deployment();
        let mut new = old.clone();
        new["spec"]["selector"] = json!({"matchLabels": {"app": "web", "v": "2"}});
        let mut errs = Errors::default();
        validate_update("Deployment", &old, &new, &mut errs);
        let causes = errs.into_result().unwrap_err();
        assert_eq!(causes[0].field, "spec.selector");
        assert!(causes[0].message.ends_with(": field is immutable"));

        let job = json!({"spec": {"completions": 1, "template": {"spec": {"containers": []}}}});
        let mut changed = job.clone();
        changed["spec"]["completions"] = json!(2);
        let mut errs = Errors::default();
        validate_update("Job", &job, &changed, &mut errs);
        assert_eq!(
            errs.into_result().unwrap_err()[0].message,
            "Invalid value: 2: field is immutable"
        );
    }

    #[test]
    fn job_and_cronjob_templates_need_on_failure_or_never() {
        let job = json!({"spec": {"template": {"spec": {"restartPolicy": "Always",
            "containers": [{"name": "a", "image": "x"}]}}}});
        let errs = check(validate_job, &job);
        assert_eq!(errs[0].1, "spec.template.spec.restartPolicy");
        assert_eq!(
            errs[0].2,
            "Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""
        );
        let cj = json!({"metadata": {"name": "c"}, "spec": {"schedule": "61 * * * *",
            "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "a", "image": "x"}]}}}}}});
        let errs = check(validate_cronjob, &cj);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].1, "spec.schedule");
        assert!(check_schedule("*/5 1-3 * jan mon").is_ok());
        assert!(check_schedule("@hourly").is_ok());
        assert!(check_schedule("* * *").is_err());
    }
}
