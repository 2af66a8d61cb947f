//! Evaluating a pod (or a workload's pod template) against a level and version of the Pod
//! Security Standards, with the reference's check list, order and messages.
//!
//! Each check knows the first version it applies to; a restricted check may take the place of
//! a baseline one (the restricted seccomp, capabilities and volume checks replace their
//! baseline counterparts). The checks run in the reference's order — the baseline IDs sorted,
//! then the restricted IDs sorted — so a refusal lists its reasons exactly as the reference
//! does: `allowPrivilegeEscalation != false (…), unrestricted capabilities (…), …`.

use std::collections::BTreeSet;

use serde_json::Value;

use super::policy::{Level, LevelVersion};
use super::{baseline, restricted};

/// Why a check refused: the short reason and its detail (which may be empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub reason: String,
    pub detail: String,
}

impl Violation {
    pub fn new(reason: impl Into<String>, detail: impl Into<String>) -> Violation {
        Violation { reason: reason.into(), detail: detail.into() }
    }
}

/// One check: its ID, level, first minor version, the baseline checks it replaces, and its
/// body, called with the pod and the minor version evaluated.
pub struct Check {
    pub id: &'static str,
    pub level: Level,
    pub since: u32,
    pub overrides: &'static [&'static str],
    pub run: fn(&Pod<'_>, u32) -> Option<Violation>,
}

/// Every check in the reference's evaluation order.
fn checks() -> impl Iterator<Item = &'static Check> {
    baseline::CHECKS.iter().chain(restricted::CHECKS.iter())
}

/// The pod metadata and spec being checked (from a pod or a pod template).
pub struct Pod<'a> {
    pub meta: &'a Value,
    pub spec: &'a Value,
}

impl<'a> Pod<'a> {
    /// Init containers, containers, then ephemeral containers, as the reference visits them.
    pub fn containers(&self) -> impl Iterator<Item = &'a Value> {
        let spec = self.spec;
        ["initContainers", "containers", "ephemeralContainers"]
            .into_iter()
            .flat_map(move |key| items(spec.get(key)))
    }

    /// The pod-level securityContext, when set.
    pub fn security_context(&self) -> Option<&'a Value> {
        present(self.spec.get("securityContext"))
    }

    /// The value at `field` of the pod-level securityContext, when set.
    pub fn pod_field(&self, field: &str) -> Option<&'a Value> {
        self.security_context().and_then(|sc| present(sc.get(field)))
    }

    /// The pod's annotations.
    pub fn annotations(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.meta
            .get("annotations")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or("")))
    }

    /// Whether the pod declares `spec.os.name: windows` (some restricted checks skip those).
    pub fn is_windows(&self) -> bool {
        self.spec.pointer("/os/name").and_then(Value::as_str) == Some("windows")
    }
}

/// The elements of an array field (nothing when absent or not an array).
pub fn items(value: Option<&Value>) -> impl Iterator<Item = &Value> {
    value.and_then(Value::as_array).into_iter().flatten()
}

/// `value` unless it is absent or JSON null (the reference's nil pointer).
pub fn present(value: Option<&Value>) -> Option<&Value> {
    value.filter(|v| !v.is_null())
}

/// A container's name.
pub fn name(container: &Value) -> String {
    container.get("name").and_then(Value::as_str).unwrap_or("").to_string()
}

/// The value at `field` of a container's securityContext, when set.
pub fn container_field<'a>(container: &'a Value, field: &str) -> Option<&'a Value> {
    present(container.get("securityContext")).and_then(|sc| present(sc.get(field)))
}

/// `"a", "b"`.
pub fn join_quote<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> String {
    let quoted: Vec<String> = items.into_iter().map(|s| format!("\"{}\"", s.as_ref())).collect();
    quoted.join(", ")
}

/// `singular` for one, `plural` otherwise.
pub fn pluralize<'s>(singular: &'s str, plural: &'s str, count: usize) -> &'s str {
    if count == 1 {
        singular
    } else {
        plural
    }
}

/// `container "a"` / `containers "a", "b"`.
pub fn containers_phrase(names: &[String]) -> String {
    format!("{} {}", pluralize("container", "containers", names.len()), join_quote(names))
}

/// The setters of a forbidden value: `pod`, then the containers, joined with ` and `.
pub fn setters(pod: bool, containers: &[String]) -> Vec<String> {
    let mut setters = Vec::new();
    if pod {
        setters.push("pod".to_string());
    }
    if !containers.is_empty() {
        setters.push(containers_phrase(containers));
    }
    setters
}

/// A set of strings, listed sorted (the reference's `sets.String.List()`).
pub type SortedSet = BTreeSet<String>;

/// What a pod violates at `lv`, in the reference's order; empty when it is allowed.
pub fn evaluate(lv: LevelVersion, pod: &Pod<'_>) -> Vec<Violation> {
    if lv.level == Level::Privileged {
        return Vec::new();
    }
    let minor = lv.version.minor();
    let applies = |check: &Check| check.since <= minor && check.level <= lv.level;
    let overridden: BTreeSet<&str> =
        checks().filter(|c| applies(c)).flat_map(|c| c.overrides.iter().copied()).collect();
    checks()
        .filter(|c| applies(c) && !overridden.contains(c.id))
        .filter_map(|c| (c.run)(pod, minor))
        .collect()
}

/// The reasons alone, `a, b` (how the namespace check groups pods).
pub fn reasons(violations: &[Violation]) -> String {
    let reasons: Vec<&str> = violations.iter().map(|v| v.reason.as_str()).collect();
    reasons.join(", ")
}

/// `reason (detail), reason (detail)`, the text after `violates PodSecurity "…": `.
pub fn details(violations: &[Violation]) -> String {
    let parts: Vec<String> = violations
        .iter()
        .map(|v| {
            if v.detail.is_empty() {
                v.reason.clone()
            } else {
                format!("{} ({})", v.reason, v.detail)
            }
        })
        .collect();
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::super::policy::Version;
    use super::*;
    use serde_json::json;

    fn restricted_latest() -> LevelVersion {
        LevelVersion { level: Level::Restricted, version: Version::Latest }
    }

    #[test]
    fn checks_run_in_the_reference_order() {
        let ids: Vec<&str> = checks().map(|c| c.id).collect();
        let (baseline, restricted): (Vec<&Check>, Vec<&Check>) =
            checks().partition(|c| c.level == Level::Baseline);
        let mut sorted_baseline: Vec<&str> = baseline.iter().map(|c| c.id).collect();
        sorted_baseline.sort_unstable();
        let mut sorted_restricted: Vec<&str> = restricted.iter().map(|c| c.id).collect();
        sorted_restricted.sort_unstable();
        assert_eq!(ids, [sorted_baseline, sorted_restricted].concat());
    }

    #[test]
    fn a_plain_pod_violates_restricted_like_the_reference_says() {
        let spec = json!({"containers": [{"name": "c", "image": "nginx"}]});
        let meta = json!({});
        let violations = evaluate(restricted_latest(), &Pod { meta: &meta, spec: &spec });
        assert_eq!(
            details(&violations),
            "allowPrivilegeEscalation != false (container \"c\" must set \
             securityContext.allowPrivilegeEscalation=false), unrestricted capabilities \
             (container \"c\" must set securityContext.capabilities.drop=[\"ALL\"]), \
             runAsNonRoot != true (pod or container \"c\" must set \
             securityContext.runAsNonRoot=true), seccompProfile (pod or container \"c\" must \
             set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
        );
    }

    #[test]
    fn restricted_replaces_the_baseline_hostpath_check() {
        let spec = json!({"containers": [], "volumes": [{"name": "h", "hostPath": {"path": "/"}}]});
        let meta = json!({});
        let pod = Pod { meta: &meta, spec: &spec };
        let baseline = LevelVersion { level: Level::Baseline, version: Version::Latest };
        assert_eq!(details(&evaluate(baseline, &pod)), "hostPath volumes (volume \"h\")");
        assert_eq!(
            details(&evaluate(restricted_latest(), &pod)),
            "restricted volume types (volume \"h\" uses restricted volume type \"hostPath\")"
        );
    }

    #[test]
    fn privileged_allows_everything() {
        let spec = json!({"hostNetwork": true, "containers": [{"name": "c",
            "securityContext": {"privileged": true}}]});
        let meta = json!({});
        let lv = LevelVersion { level: Level::Privileged, version: Version::Latest };
        assert!(evaluate(lv, &Pod { meta: &meta, spec: &spec }).is_empty());
    }

    #[test]
    fn older_versions_lack_newer_checks() {
        // runAsUser=0 is checked from v1.23 on.
        let spec = json!({"securityContext": {"runAsUser": 0, "runAsNonRoot": true,
                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "securityContext": {
                "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]});
        let meta = json!({});
        let pod = Pod { meta: &meta, spec: &spec };
        let at = |minor| LevelVersion { level: Level::Restricted, version: Version::Minor(minor) };
        assert_eq!(details(&evaluate(at(23), &pod)), "runAsUser=0 (pod must not set runAsUser=0)");
        assert!(evaluate(at(22), &pod).is_empty());
    }
}
