//! The audit policy: which requests are logged at which level, in the reference's
//! `audit.k8s.io/v1` `Policy` format. Rules are tried in order and the first one matching the
//! request decides its level; a request no rule matches is not logged (level `None`).
//! Supported rule fields: `level`, `users`, `userGroups`, `verbs`, `namespaces`, `resources`
//! (`group`, `resources` with `pods/log`, `pods/*`, `*/status` forms, `resourceNames`),
//! `nonResourceURLs` (exact, or a prefix ending in `*`) and `omitStages`, plus the policy-wide
//! `omitStages`.

use serde::Deserialize;

/// How much of a request is logged (ordered: each level includes the previous ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub enum Level {
    None,
    Metadata,
    Request,
    RequestResponse,
}

impl Level {
    /// The level's name in events.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "None",
            Level::Metadata => "Metadata",
            Level::Request => "Request",
            Level::RequestResponse => "RequestResponse",
        }
    }
}

/// A group's resources a rule applies to.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupResources {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub resource_names: Vec<String>,
}

/// One policy rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    pub level: Level,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub user_groups: Vec<String>,
    #[serde(default)]
    pub verbs: Vec<String>,
    #[serde(default)]
    pub resources: Vec<GroupResources>,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default, rename = "nonResourceURLs")]
    pub non_resource_urls: Vec<String>,
    #[serde(default)]
    pub omit_stages: Vec<String>,
}

/// An audit policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    #[serde(default)]
    pub rules: Vec<Rule>,
    #[serde(default)]
    pub omit_stages: Vec<String>,
}

impl Default for Policy {
    /// Everything at `Metadata` (what `--audit-log-path` alone gives).
    fn default() -> Self {
        Policy {
            rules: vec![Rule {
                level: Level::Metadata,
                users: vec![],
                user_groups: vec![],
                verbs: vec![],
                resources: vec![],
                namespaces: vec![],
                non_resource_urls: vec![],
                omit_stages: vec![],
            }],
            omit_stages: vec![],
        }
    }
}

/// What a policy is matched against.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub user: &'a str,
    pub groups: &'a [String],
    pub verb: &'a str,
    /// False for non-resource paths.
    pub resource_request: bool,
    pub group: &'a str,
    pub resource: &'a str,
    pub subresource: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub path: &'a str,
}

/// Why a policy file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("reading the audit policy {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("the audit policy {path}: {source}")]
    Format { path: String, source: serde_yaml::Error },
}

impl Policy {
    /// Reads a policy file (YAML or JSON).
    pub fn from_file(path: &std::path::Path) -> Result<Policy, PolicyError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|source| PolicyError::Io { path: shown.clone(), source })?;
        serde_yaml::from_str(&text).map_err(|source| PolicyError::Format { path: shown, source })
    }

    /// The level of a request and the stages not to log for it.
    pub fn evaluate(&self, facts: &RequestFacts<'_>) -> (Level, Vec<String>) {
        for rule in &self.rules {
            if rule.matches(facts) {
                let mut omit = self.omit_stages.clone();
                omit.extend(rule.omit_stages.iter().cloned());
                return (rule.level, omit);
            }
        }
        (Level::None, Vec::new())
    }
}

impl Rule {
    fn matches(&self, facts: &RequestFacts<'_>) -> bool {
        let listed =
            |list: &[String], value: &str| list.is_empty() || list.iter().any(|v| v == value);
        if !listed(&self.users, facts.user) || !listed(&self.verbs, facts.verb) {
            return false;
        }
        if !self.user_groups.is_empty()
            && !facts.groups.iter().any(|g| self.user_groups.iter().any(|want| want == g))
        {
            return false;
        }
        // A rule about resources or namespaces never matches a non-resource request and one
        // about non-resource URLs never matches a resource request, as in the reference.
        if facts.resource_request {
            if !self.non_resource_urls.is_empty() {
                return false;
            }
            if !listed(&self.namespaces, facts.namespace) {
                return false;
            }
            self.resources.is_empty() || self.resources.iter().any(|gr| gr.matches(facts))
        } else {
            if !self.resources.is_empty() || !self.namespaces.is_empty() {
                return false;
            }
            self.non_resource_urls.is_empty()
                || self.non_resource_urls.iter().any(|url| match url.strip_suffix('*') {
                    Some(prefix) => facts.path.starts_with(prefix),
                    None => facts.path == url,
                })
        }
    }
}

impl GroupResources {
    fn matches(&self, facts: &RequestFacts<'_>) -> bool {
        if self.group != facts.group {
            return false;
        }
        if !self.resource_names.is_empty() && !self.resource_names.iter().any(|n| n == facts.name) {
            return false;
        }
        if self.resources.is_empty() {
            return true;
        }
        let combined = if facts.subresource.is_empty() {
            facts.resource.to_string()
        } else {
            format!("{}/{}", facts.resource, facts.subresource)
        };
        self.resources.iter().any(|pattern| {
            pattern == "*"
                || *pattern == combined
                || (!facts.subresource.is_empty()
                    && (*pattern == format!("{}/*", facts.resource)
                        || *pattern == format!("*/{}", facts.subresource)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(user: &'a str, verb: &'a str, resource: &'a str, ns: &'a str) -> RequestFacts<'a> {
        RequestFacts {
            user,
            groups: &[],
            verb,
            resource_request: true,
            group: "",
            resource,
            subresource: "",
            namespace: ns,
            name: "",
            path: "",
        }
    }

    #[test]
    fn first_matching_rule_decides() {
        let policy: Policy = serde_yaml::from_str(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n\
             - level: None\n  users: [system:kube-proxy]\n\
             - level: RequestResponse\n  resources: [{group: \"\", resources: [secrets]}]\n  namespaces: [prod]\n\
             - level: Request\n  verbs: [create, update]\n\
             - level: None\n  nonResourceURLs: [/healthz*]\n\
             - level: Metadata\n",
        )
        .unwrap();
        let level = |f: RequestFacts<'_>| policy.evaluate(&f).0;
        assert_eq!(level(facts("system:kube-proxy", "create", "pods", "a")), Level::None);
        assert_eq!(level(facts("alice", "get", "secrets", "prod")), Level::RequestResponse);
        assert_eq!(level(facts("alice", "get", "secrets", "dev")), Level::Metadata);
        assert_eq!(level(facts("alice", "create", "pods", "dev")), Level::Request);
        let health = RequestFacts {
            resource_request: false,
            path: "/healthz/etcd",
            ..facts("a", "get", "", "")
        };
        assert_eq!(level(health), Level::None);
        assert_eq!(policy.evaluate(&facts("a", "get", "x", "")).1, vec!["RequestReceived"]);
        assert_eq!(
            Policy { rules: vec![], omit_stages: vec![] }.evaluate(&facts("a", "get", "x", "")).0,
            Level::None
        );
    }
}
