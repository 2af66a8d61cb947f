//! RBAC policy rules: reading them from objects, matching a request against one, and the
//! coverage check that keeps users from granting what they do not hold (escalation).
//!
//! Matching follows the reference's `RuleAllows`: `*` matches any verb, group or resource;
//! a resource `*/scale` matches every resource's `scale` subresource; resource names restrict
//! only when listed; a non-resource URL ending in `*` matches by prefix.

use serde_json::{json, Map, Value};

use super::Attributes;

/// One rule of a Role or ClusterRole.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyRule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

fn has(list: &[String], item: &str) -> bool {
    list.iter().any(|x| x == item)
}

impl PolicyRule {
    /// A rule from its JSON form; missing or malformed fields are empty (they match nothing).
    pub fn from_json(rule: &Value) -> PolicyRule {
        PolicyRule {
            verbs: strings(rule.get("verbs")),
            api_groups: strings(rule.get("apiGroups")),
            resources: strings(rule.get("resources")),
            resource_names: strings(rule.get("resourceNames")),
            non_resource_urls: strings(rule.get("nonResourceURLs")),
        }
    }

    /// The rules of a Role or ClusterRole object.
    pub fn of_role(role: &Value) -> Vec<PolicyRule> {
        role.get("rules")
            .and_then(Value::as_array)
            .map(|rules| rules.iter().map(PolicyRule::from_json).collect())
            .unwrap_or_default()
    }

    /// The JSON form (empty lists left out, as the reference serializes them).
    pub fn to_json(&self) -> Value {
        let mut rule = Map::new();
        let mut put = |key: &str, list: &[String]| {
            if !list.is_empty() {
                rule.insert(key.into(), json!(list));
            }
        };
        put("verbs", &self.verbs);
        put("apiGroups", &self.api_groups);
        put("resources", &self.resources);
        put("resourceNames", &self.resource_names);
        put("nonResourceURLs", &self.non_resource_urls);
        Value::Object(rule)
    }

    /// Whether this rule allows the request.
    pub fn allows(&self, attrs: &Attributes) -> bool {
        if !verb_matches(self, &attrs.verb) {
            return false;
        }
        if attrs.resource_request {
            api_group_matches(self, &attrs.group)
                && resource_matches(self, &attrs.combined_resource(), &attrs.subresource)
                && resource_name_matches(self, &attrs.name)
        } else {
            non_resource_url_matches(self, &attrs.path)
        }
    }
}

fn verb_matches(rule: &PolicyRule, verb: &str) -> bool {
    rule.verbs.iter().any(|v| v == "*" || v == verb)
}

fn api_group_matches(rule: &PolicyRule, group: &str) -> bool {
    rule.api_groups.iter().any(|g| g == "*" || g == group)
}

fn resource_matches(rule: &PolicyRule, combined: &str, subresource: &str) -> bool {
    rule.resources.iter().any(|r| {
        r == "*"
            || r == combined
            || (!subresource.is_empty() && r.strip_prefix("*/") == Some(subresource))
    })
}

fn resource_name_matches(rule: &PolicyRule, name: &str) -> bool {
    rule.resource_names.is_empty() || has(&rule.resource_names, name)
}

fn non_resource_url_matches(rule: &PolicyRule, path: &str) -> bool {
    rule.non_resource_urls.iter().any(|u| url_covers(u, path))
}

/// Whether the rule URL `owner` covers `path`: equal, `*`, or a `prefix*` that `path` starts
/// with.
fn url_covers(owner: &str, path: &str) -> bool {
    owner == path
        || owner == "*"
        || owner.strip_suffix('*').is_some_and(|prefix| path.starts_with(prefix))
}

/// One rule split into rules of one verb, one group, one resource and at most one name (or one
/// URL and one verb): the unit of the coverage check.
fn breakdown(rule: &PolicyRule) -> Vec<PolicyRule> {
    let mut out = Vec::new();
    let one = |s: &String| vec![s.clone()];
    for group in &rule.api_groups {
        for resource in &rule.resources {
            for verb in &rule.verbs {
                let base = PolicyRule {
                    verbs: one(verb),
                    api_groups: one(group),
                    resources: one(resource),
                    ..Default::default()
                };
                if rule.resource_names.is_empty() {
                    out.push(base);
                } else {
                    for name in &rule.resource_names {
                        out.push(PolicyRule { resource_names: one(name), ..base.clone() });
                    }
                }
            }
        }
    }
    for url in &rule.non_resource_urls {
        for verb in &rule.verbs {
            out.push(PolicyRule {
                verbs: one(verb),
                non_resource_urls: one(url),
                ..Default::default()
            });
        }
    }
    out
}

fn has_all(set: &[String], wanted: &[String]) -> bool {
    wanted.iter().all(|w| has(set, w))
}

fn resources_cover(owner: &[String], wanted: &[String]) -> bool {
    if has(owner, "*") || has_all(owner, wanted) {
        return true;
    }
    wanted.iter().all(|path| {
        has(owner, path)
            || path.split_once('/').is_some_and(|(_, sub)| has(owner, &format!("*/{sub}")))
    })
}

/// Whether `owner` grants everything the one-verb rule `sub` does.
fn rule_covers(owner: &PolicyRule, sub: &PolicyRule) -> bool {
    let verbs = has(&owner.verbs, "*") || has_all(&owner.verbs, &sub.verbs);
    let groups = has(&owner.api_groups, "*") || has_all(&owner.api_groups, &sub.api_groups);
    let resources = resources_cover(&owner.resources, &sub.resources);
    let urls = sub
        .non_resource_urls
        .iter()
        .all(|u| owner.non_resource_urls.iter().any(|o| url_covers(o, u)));
    let names = owner.resource_names.is_empty()
        || (!sub.resource_names.is_empty() && has_all(&owner.resource_names, &sub.resource_names));
    verbs && groups && resources && names && urls
}

/// Whether `owner` rules grant everything `wanted` rules do; the uncovered parts otherwise.
pub fn covers(owner: &[PolicyRule], wanted: &[PolicyRule]) -> (bool, Vec<PolicyRule>) {
    let missing: Vec<PolicyRule> = wanted
        .iter()
        .flat_map(breakdown)
        .filter(|sub| !owner.iter().any(|o| rule_covers(o, sub)))
        .collect();
    (missing.is_empty(), missing)
}

/// Merges rules on one group and one resource (and at most one name) into one rule with all
/// their verbs, as the reference does before listing missing permissions.
pub fn compact(rules: &[PolicyRule]) -> Vec<PolicyRule> {
    let mut out: Vec<PolicyRule> = Vec::new();
    let mut simple: Vec<PolicyRule> = Vec::new();
    for rule in rules {
        let is_simple = rule.non_resource_urls.is_empty()
            && rule.api_groups.len() == 1
            && rule.resources.len() == 1
            && rule.resource_names.len() <= 1;
        if !is_simple {
            out.push(rule.clone());
            continue;
        }
        let same = |r: &&mut PolicyRule| {
            r.api_groups == rule.api_groups
                && r.resources == rule.resources
                && r.resource_names == rule.resource_names
        };
        match simple.iter_mut().find(|r| same(r)) {
            Some(existing) => {
                for verb in &rule.verbs {
                    if !has(&existing.verbs, verb) {
                        existing.verbs.push(verb.clone());
                    }
                }
            }
            None => simple.push(rule.clone()),
        }
    }
    out.extend(simple);
    out
}

/// Go's `%q` of a string.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `%q` of a string slice: `["a" "b"]`.
pub fn go_quote_list(list: &[String]) -> String {
    let items: Vec<String> = list.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", items.join(" "))
}

/// The reference's compact description of a rule, e.g.
/// `{APIGroups:[""], Resources:["pods"], Verbs:["get"]}`.
pub fn compact_string(rule: &PolicyRule) -> String {
    let mut parts = Vec::new();
    let mut part = |name: &str, list: &[String]| {
        if !list.is_empty() {
            parts.push(format!("{name}:{}", go_quote_list(list)));
        }
    };
    part("APIGroups", &rule.api_groups);
    part("Resources", &rule.resources);
    part("NonResourceURLs", &rule.non_resource_urls);
    part("ResourceNames", &rule.resource_names);
    part("Verbs", &rule.verbs);
    format!("{{{}}}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::authn::User;

    fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> PolicyRule {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        PolicyRule {
            verbs: v(verbs),
            api_groups: v(groups),
            resources: v(resources),
            ..Default::default()
        }
    }

    fn request(verb: &str, group: &str, resource: &str, sub: &str, name: &str) -> Attributes {
        let mut attrs = Attributes::resource(&User::new("u", vec![]), verb, group, resource);
        attrs.subresource = sub.into();
        attrs.name = name.into();
        attrs
    }

    #[test]
    fn rules_match_verbs_groups_resources_and_names() {
        let pods = rule(&["get", "list"], &[""], &["pods"]);
        assert!(pods.allows(&request("get", "", "pods", "", "p")));
        assert!(!pods.allows(&request("delete", "", "pods", "", "p")));
        assert!(!pods.allows(&request("get", "apps", "pods", "", "p")));
        assert!(!pods.allows(&request("get", "", "pods", "log", "p")), "subresources are separate");
        let any = rule(&["*"], &["*"], &["*"]);
        assert!(any.allows(&request("escalate", "rbac.authorization.k8s.io", "roles", "", "")));
        assert!(any.allows(&request("get", "", "pods", "exec", "p")));
        let scale = rule(&["update"], &["apps"], &["*/scale"]);
        assert!(scale.allows(&request("update", "apps", "deployments", "scale", "d")));
        assert!(!scale.allows(&request("update", "apps", "deployments", "", "d")));
        assert!(!scale.allows(&request("update", "apps", "deployments", "status", "d")));
        let log = rule(&["get"], &[""], &["pods/log"]);
        assert!(log.allows(&request("get", "", "pods", "log", "p")));
        let mut named = rule(&["get"], &[""], &["configmaps"]);
        named.resource_names = vec!["cfg".into()];
        assert!(named.allows(&request("get", "", "configmaps", "", "cfg")));
        assert!(!named.allows(&request("get", "", "configmaps", "", "other")));
        assert!(!named.allows(&request("list", "", "configmaps", "", "")));
    }

    #[test]
    fn non_resource_urls_match_exactly_or_by_star_prefix() {
        let user = User::new("u", vec![]);
        let urls = PolicyRule {
            verbs: vec!["get".into()],
            non_resource_urls: vec!["/api".into(), "/apis/*".into()],
            ..Default::default()
        };
        let get = |p: &str| Attributes::non_resource(&user, "get", p);
        assert!(urls.allows(&get("/api")));
        assert!(!urls.allows(&get("/api/v1")));
        assert!(urls.allows(&get("/apis/apps/v1")));
        assert!(!urls.allows(&get("/apis")), "the prefix keeps its slash");
        assert!(!urls.allows(&Attributes::non_resource(&user, "post", "/api")));
        // A resource rule never matches a path, nor a URL rule a resource.
        assert!(!rule(&["*"], &["*"], &["*"]).allows(&get("/api")));
        assert!(!urls.allows(&request("get", "", "pods", "", "")));
    }

    #[test]
    fn coverage_checks_every_verb_resource_and_name() {
        let owner = vec![
            rule(&["get", "list", "watch"], &[""], &["pods", "configmaps"]),
            rule(&["update"], &["apps"], &["*/scale"]),
        ];
        assert!(covers(&owner, &[rule(&["get"], &[""], &["pods"])]).0);
        assert!(covers(&owner, &[rule(&["update"], &["apps"], &["deployments/scale"])]).0);
        let (ok, missing) =
            covers(&owner, &[rule(&["get", "delete"], &[""], &["pods", "secrets"])]);
        assert!(!ok);
        let described: Vec<String> = compact(&missing).iter().map(compact_string).collect();
        assert_eq!(
            described,
            [
                "{APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"delete\"]}",
                "{APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"get\" \"delete\"]}",
            ]
        );
        // A star grant is covered only by a star.
        assert!(!covers(&owner, &[rule(&["*"], &[""], &["pods"])]).0);
        assert!(covers(&[rule(&["*"], &["*"], &["*"])], &[rule(&["*"], &["*"], &["*"])]).0);
        // Named grants: owner without names covers them; owner with names only its own.
        let mut one = rule(&["get"], &[""], &["secrets"]);
        one.resource_names = vec!["a".into()];
        let mut two = one.clone();
        two.resource_names.push("b".into());
        assert!(covers(&[rule(&["get"], &[""], &["secrets"])], std::slice::from_ref(&two)).0);
        assert!(covers(std::slice::from_ref(&two), std::slice::from_ref(&one)).0);
        assert!(!covers(&[one], &[two.clone()]).0);
        assert!(!covers(&[two], &[rule(&["get"], &[""], &["secrets"])]).0);
        // URLs.
        let urls = |u: &[&str]| PolicyRule {
            verbs: vec!["get".into()],
            non_resource_urls: u.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        assert!(covers(&[urls(&["/apis/*"])], &[urls(&["/apis/apps"])]).0);
        assert!(!covers(&[urls(&["/apis/apps"])], &[urls(&["/apis/*"])]).0);
        assert!(!covers(&[rule(&["*"], &["*"], &["*"])], &[urls(&["/healthz"])]).0);
    }

    #[test]
    fn rules_read_and_write_their_json_form() {
        let value = json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"],
                           "resourceNames": ["p"]});
        let parsed = PolicyRule::from_json(&value);
        assert_eq!(parsed.resource_names, ["p"]);
        assert_eq!(parsed.to_json(), value);
        assert_eq!(PolicyRule::from_json(&json!("junk")), PolicyRule::default());
        assert_eq!(go_quote_list(&["a\"b".into(), "c".into()]), "[\"a\\\"b\" \"c\"]");
    }
}
