//! Which requests a policy's `matchConstraints` (and a binding's `matchResources`) select, as
//! the reference's `matching.Matcher` decides: the namespace selector (on the labels of the
//! request's namespace; cluster-scoped objects other than namespaces always pass), the object
//! selector (on the new or the old object's labels), then `excludeResourceRules` (any match
//! excludes) and `resourceRules` (none listed means every resource, as for a binding that only
//! narrows by selector).
//!
//! A rule matches on operations, API groups, versions, resources (`*` is every resource but
//! no subresource, `*/*` everything, `pods/*` pods and all their subresources, `*/status` the
//! status of everything), scope and `resourceNames`. With `matchPolicy: Equivalent` (the
//! default) a rule naming another served version of the same group and resource matches too.

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::{MatchResources, NamedRuleWithOperations};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::Value;

use crate::controllers::util::selector;

/// What matching looks at in a request.
pub(super) struct Attributes<'a> {
    pub group: &'a str,
    pub version: &'a str,
    pub resource: &'a str,
    /// Empty for the main resource.
    pub subresource: &'a str,
    /// `CREATE`, `UPDATE`, `DELETE` or `CONNECT`.
    pub operation: &'a str,
    pub name: &'a str,
    pub namespaced: bool,
    pub object: Option<&'a Value>,
    pub old_object: Option<&'a Value>,
    /// The other served versions of the same group and resource (for `Equivalent`).
    pub equivalent_versions: &'a [String],
}

impl Attributes<'_> {
    fn is_namespace(&self) -> bool {
        self.group.is_empty() && self.resource == "namespaces"
    }
}

/// The labels of an object.
pub(super) fn labels(obj: Option<&Value>) -> Option<BTreeMap<String, String>> {
    let labels = obj?.pointer("/metadata/labels")?.as_object()?;
    Some(labels.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
}

/// Whether the selector selects everything (unset or `{}`).
fn selects_all(sel: Option<&LabelSelector>) -> bool {
    sel.is_none_or(|s| {
        s.match_labels.as_ref().is_none_or(|m| m.is_empty())
            && s.match_expressions.as_ref().is_none_or(|e| e.is_empty())
    })
}

/// Whether `criteria` select the request. `namespace_labels` are the labels of the request's
/// namespace (`None` when it is not known); an unknown namespace that a selector needs is an
/// error, as in the reference.
pub(super) fn matches(
    criteria: &MatchResources,
    attrs: &Attributes<'_>,
    namespace_labels: Option<&BTreeMap<String, String>>,
) -> Result<bool, String> {
    if !namespace_matches(criteria.namespace_selector.as_ref(), attrs, namespace_labels)? {
        return Ok(false);
    }
    if !object_matches(criteria.object_selector.as_ref(), attrs) {
        return Ok(false);
    }
    let exact = criteria.match_policy.as_deref() == Some("Exact");
    let excluded = criteria.exclude_resource_rules.as_deref().unwrap_or_default();
    if rules_match(excluded, attrs, exact) {
        return Ok(false);
    }
    match criteria.resource_rules.as_deref() {
        None | Some([]) => Ok(true),
        Some(rules) => Ok(rules_match(rules, attrs, exact)),
    }
}

fn namespace_matches(
    sel: Option<&LabelSelector>,
    attrs: &Attributes<'_>,
    namespace_labels: Option<&BTreeMap<String, String>>,
) -> Result<bool, String> {
    if !attrs.namespaced && !attrs.is_namespace() {
        // Cluster-scoped objects are never exempted by a namespace selector.
        return Ok(true);
    }
    if selects_all(sel) {
        return Ok(true);
    }
    let Some(sel) = sel else { return Ok(true) };
    let own;
    let labels = if attrs.is_namespace() {
        // A namespace is selected by its own labels (the old ones when it has no new object).
        own = labels(attrs.object.or(attrs.old_object)).unwrap_or_default();
        Some(&own)
    } else {
        Some(namespace_labels.ok_or_else(|| "namespace not found".to_string())?)
    };
    Ok(selector::matches(sel, labels))
}

fn object_matches(sel: Option<&LabelSelector>, attrs: &Attributes<'_>) -> bool {
    let Some(sel) = sel.filter(|s| !selects_all(Some(s))) else { return true };
    let matches =
        |obj: Option<&Value>| obj.is_some_and(|o| selector::matches(sel, labels(Some(o)).as_ref()));
    matches(attrs.object) || matches(attrs.old_object)
}

fn listed(list: Option<&Vec<String>>, value: &str) -> bool {
    list.into_iter().flatten().any(|v| v == "*" || v == value)
}

/// Whether one rule matches the request at `version`.
fn rule_matches(rule: &NamedRuleWithOperations, attrs: &Attributes<'_>, version: &str) -> bool {
    let scope = match rule.scope.as_deref() {
        Some("Cluster") => !attrs.namespaced,
        Some("Namespaced") => attrs.namespaced,
        _ => true,
    };
    let resource = rule.resources.iter().flatten().any(|r| {
        let (res, sub) = r.split_once('/').unwrap_or((r, ""));
        (res == "*" || res == attrs.resource) && (sub == "*" || sub == attrs.subresource)
    });
    let named = match rule.resource_names.as_deref() {
        None | Some([]) => true,
        Some(names) => names.iter().any(|n| n == attrs.name),
    };
    scope
        && listed(rule.operations.as_ref(), attrs.operation)
        && listed(rule.api_groups.as_ref(), attrs.group)
        && listed(rule.api_versions.as_ref(), version)
        && resource
        && named
}

fn rules_match(rules: &[NamedRuleWithOperations], attrs: &Attributes<'_>, exact: bool) -> bool {
    if rules.iter().any(|r| rule_matches(r, attrs, attrs.version)) {
        return true;
    }
    // The same objects served at another version are the same resource (the object would be
    // converted for the policy; built-in kinds are served at one version, custom resources
    // without a conversion webhook differ only in apiVersion).
    !exact
        && attrs.equivalent_versions.iter().any(|v| rules.iter().any(|r| rule_matches(r, attrs, v)))
}

#[cfg(test)]
#[path = "matching_tests.rs"]
mod tests;
