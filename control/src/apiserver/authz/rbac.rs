//! RBAC: Roles, ClusterRoles and their bindings, as the reference's RBAC authorizer reads them.
//!
//! A ClusterRoleBinding grants its ClusterRole's rules everywhere (every namespace, the cluster
//! scope and non-resource URLs); a RoleBinding grants its Role's — or a ClusterRole's — rules
//! in its own namespace only. Subjects are users, groups, or service accounts (user
//! `system:serviceaccount:<namespace>:<name>`; a RoleBinding's subject without a namespace means
//! the binding's).
//!
//! The authorizer never reads the store. [`RbacIndex`] keeps a parsed [`Policy`] built from the
//! watch caches of the four RBAC resources and rebuilds it only when one of them has moved on,
//! so a request costs a few map lookups and a scan of the bindings.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::rules::PolicyRule;
use super::{Attributes, Authorizer, Decision};
use crate::apiserver::authn::User;
use crate::apiserver::server::ApiServer;
use crate::apiserver::watch_cache::CachedObject;
use crate::store::Revision;

/// The API group of RBAC.
pub const GROUP: &str = "rbac.authorization.k8s.io";

/// The RBAC resources, in the order the index keeps their cache revisions.
const RESOURCES: [&str; 4] = ["clusterroles", "roles", "clusterrolebindings", "rolebindings"];

/// Who a binding names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// `User`, `Group` or `ServiceAccount`.
    pub kind: String,
    pub name: String,
    pub namespace: String,
}

impl Subject {
    fn from_json(value: &Value) -> Subject {
        let text = |k: &str| value.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        Subject { kind: text("kind"), name: text("name"), namespace: text("namespace") }
    }

    /// Whether the subject is `user`; `binding_namespace` completes a service account subject
    /// without a namespace (RoleBindings only).
    pub fn applies_to(&self, user: &User, binding_namespace: &str) -> bool {
        match self.kind.as_str() {
            "User" => self.name == user.name,
            "Group" => user.groups.contains(&self.name),
            "ServiceAccount" => {
                let ns =
                    if self.namespace.is_empty() { binding_namespace } else { &self.namespace };
                !ns.is_empty() && user.name == format!("system:serviceaccount:{ns}:{}", self.name)
            }
            _ => false,
        }
    }

    /// How the reference names a subject in an allow reason: `User "alice"`,
    /// `ServiceAccount "sa/ns"`.
    fn describe(&self, binding_namespace: &str) -> String {
        match self.kind.as_str() {
            "ServiceAccount" => {
                let ns =
                    if self.namespace.is_empty() { binding_namespace } else { &self.namespace };
                format!("{} {:?}", self.kind, format!("{}/{ns}", self.name))
            }
            _ => format!("{} {:?}", self.kind, self.name),
        }
    }
}

/// A RoleBinding or ClusterRoleBinding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub name: String,
    /// Empty for a ClusterRoleBinding.
    pub namespace: String,
    /// `Role` or `ClusterRole`.
    pub role_kind: String,
    pub role_name: String,
    pub subjects: Vec<Subject>,
}

impl Binding {
    /// A binding from its object.
    pub fn from_json(value: &Value) -> Binding {
        let meta = |k: &str| {
            value.pointer(&format!("/metadata/{k}")).and_then(Value::as_str).unwrap_or("")
        };
        let role =
            |k: &str| value.pointer(&format!("/roleRef/{k}")).and_then(Value::as_str).unwrap_or("");
        Binding {
            name: meta("name").to_string(),
            namespace: meta("namespace").to_string(),
            role_kind: role("kind").to_string(),
            role_name: role("name").to_string(),
            subjects: value
                .get("subjects")
                .and_then(Value::as_array)
                .map(|s| s.iter().map(Subject::from_json).collect())
                .unwrap_or_default(),
        }
    }

    fn source(&self, subject: &Subject) -> String {
        if self.namespace.is_empty() {
            format!(
                "ClusterRoleBinding {:?} of {} {:?} to {}",
                self.name,
                self.role_kind,
                self.role_name,
                subject.describe("")
            )
        } else {
            format!(
                "RoleBinding {:?} of {} {:?} to {}",
                format!("{}/{}", self.name, self.namespace),
                self.role_kind,
                self.role_name,
                subject.describe(&self.namespace)
            )
        }
    }
}

/// The RBAC objects at one moment, parsed.
#[derive(Debug, Default)]
pub struct Policy {
    cluster_roles: HashMap<String, Vec<PolicyRule>>,
    /// By (namespace, name).
    roles: HashMap<(String, String), Vec<PolicyRule>>,
    cluster_role_bindings: Vec<Binding>,
    /// By namespace.
    role_bindings: HashMap<String, Vec<Binding>>,
}

fn name_of(obj: &Value, field: &str) -> String {
    obj.pointer(&format!("/metadata/{field}")).and_then(Value::as_str).unwrap_or("").to_string()
}

impl Policy {
    /// A policy from the objects of the four RBAC resources.
    pub fn build(
        cluster_roles: &[Arc<CachedObject>],
        roles: &[Arc<CachedObject>],
        cluster_role_bindings: &[Arc<CachedObject>],
        role_bindings: &[Arc<CachedObject>],
    ) -> Policy {
        let mut policy = Policy {
            cluster_roles: cluster_roles
                .iter()
                .map(|r| (name_of(r, "name"), PolicyRule::of_role(r)))
                .collect(),
            roles: roles
                .iter()
                .map(|r| ((name_of(r, "namespace"), name_of(r, "name")), PolicyRule::of_role(r)))
                .collect(),
            cluster_role_bindings: Vec::new(),
            role_bindings: HashMap::new(),
        };
        for binding in cluster_role_bindings.iter().map(|b| Binding::from_json(b)) {
            // A ClusterRoleBinding can only name a ClusterRole.
            if binding.role_kind == "ClusterRole" {
                policy.cluster_role_bindings.push(binding);
            }
        }
        for binding in role_bindings.iter().map(|b| Binding::from_json(b)) {
            policy.role_bindings.entry(binding.namespace.clone()).or_default().push(binding);
        }
        policy
    }

    /// The rules a binding's role grants (`None`: the role does not exist).
    fn role_rules(&self, binding: &Binding) -> Option<&[PolicyRule]> {
        match binding.role_kind.as_str() {
            "ClusterRole" => self.cluster_roles.get(&binding.role_name).map(Vec::as_slice),
            "Role" => self
                .roles
                .get(&(binding.namespace.clone(), binding.role_name.clone()))
                .map(Vec::as_slice),
            _ => None,
        }
    }

    /// The rules of the role a binding in `namespace` (empty: a ClusterRoleBinding) refers to;
    /// the error is the reference's not-found message.
    pub fn referenced_rules(
        &self,
        role_kind: &str,
        role_name: &str,
        namespace: &str,
    ) -> Result<Vec<PolicyRule>, String> {
        let binding = Binding {
            name: String::new(),
            namespace: namespace.to_string(),
            role_kind: role_kind.to_string(),
            role_name: role_name.to_string(),
            subjects: Vec::new(),
        };
        match self.role_rules(&binding) {
            Some(rules) => Ok(rules.to_vec()),
            None if role_kind == "ClusterRole" => {
                Err(format!("clusterroles.{GROUP} {role_name:?} not found"))
            }
            None if role_kind == "Role" => Err(format!("roles.{GROUP} {role_name:?} not found")),
            None => Err(format!("unsupported role reference kind: {role_kind:?}")),
        }
    }

    /// Calls `visit` with each binding that applies to `user` in `namespace` (the cluster
    /// scope when empty), the subject that matched and the rules it grants, until `visit`
    /// returns false.
    fn visit(
        &self,
        user: &User,
        namespace: &str,
        mut visit: impl FnMut(&Binding, &Subject, &[PolicyRule]) -> bool,
    ) {
        let namespaced =
            (!namespace.is_empty()).then(|| self.role_bindings.get(namespace)).flatten();
        let all = self.cluster_role_bindings.iter().chain(namespaced.into_iter().flatten());
        for binding in all {
            let Some(subject) =
                binding.subjects.iter().find(|s| s.applies_to(user, &binding.namespace))
            else {
                continue;
            };
            let Some(rules) = self.role_rules(binding) else { continue };
            if !visit(binding, subject, rules) {
                return;
            }
        }
    }

    /// Every rule that applies to `user` in `namespace` (the reference's `RulesFor`).
    pub fn rules_for(&self, user: &User, namespace: &str) -> Vec<PolicyRule> {
        let mut out = Vec::new();
        self.visit(user, namespace, |_, _, rules| {
            out.extend_from_slice(rules);
            true
        });
        out
    }
}

impl Authorizer for Policy {
    fn authorize(&self, attrs: &Attributes) -> Decision {
        let mut allowed = None;
        self.visit(&attrs.user, &attrs.namespace, |binding, subject, rules| {
            if rules.iter().any(|r| r.allows(attrs)) {
                allowed = Some(format!("RBAC: allowed by {}", binding.source(subject)));
                return false;
            }
            true
        });
        match allowed {
            Some(reason) => Decision::Allow(reason),
            None => Decision::NoOpinion,
        }
    }
}

/// The current [`Policy`], rebuilt from the watch caches when they have moved on.
#[derive(Debug, Default)]
pub struct RbacIndex {
    built: Mutex<Option<([Revision; 4], Arc<Policy>)>>,
}

impl RbacIndex {
    fn prefixes(server: &ApiServer) -> Vec<String> {
        let registry = &server.inner.registry;
        RESOURCES
            .iter()
            .map(|plural| {
                registry
                    .resolve(GROUP, "v1", plural)
                    .map(|info| info.storage_prefix.clone())
                    .unwrap_or_else(|| format!("/registry/{plural}/"))
            })
            .collect()
    }

    /// The policy as the caches have it now.
    pub fn current(&self, server: &ApiServer) -> Arc<Policy> {
        let caches: Vec<_> = Self::prefixes(server)
            .iter()
            .map(|p| server.inner.caches.get(&server.inner.store, p))
            .collect();
        let revisions: Vec<Revision> = caches.iter().map(|c| c.revision()).collect();
        let mut built = self.built.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, policy)) = built.as_ref() {
            if at.as_slice() == revisions.as_slice() {
                return policy.clone();
            }
        }
        let mut at = [0; 4];
        let mut objects = Vec::new();
        for (i, cache) in caches.iter().enumerate() {
            let (rev, objs) = cache.snapshot(cache.prefix());
            at[i] = rev;
            objects.push(objs);
        }
        let policy = Arc::new(Policy::build(&objects[0], &objects[1], &objects[2], &objects[3]));
        *built = Some((at, policy.clone()));
        policy
    }

    /// Waits (briefly) until the RBAC caches have seen everything the store had when called.
    pub async fn catch_up(&self, server: &ApiServer) {
        super::catch_up(server, &Self::prefixes(server), "RBAC").await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn objs(values: Vec<Value>) -> Vec<Arc<CachedObject>> {
        values.into_iter().map(CachedObject::new).collect()
    }

    fn policy() -> Policy {
        let view = json!({"metadata": {"name": "view"},
            "rules": [{"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["get", "list", "watch"]}]});
        let discovery = json!({"metadata": {"name": "system:discovery"},
            "rules": [{"nonResourceURLs": ["/api", "/api/*"], "verbs": ["get"]}]});
        let secrets = json!({"metadata": {"name": "secrets", "namespace": "team"},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]});
        let crb = json!({"metadata": {"name": "discovery"},
            "roleRef": {"kind": "ClusterRole", "name": "system:discovery"},
            "subjects": [{"kind": "Group", "name": "system:authenticated"}]});
        let rb_view = json!({"metadata": {"name": "alice-view", "namespace": "team"},
            "roleRef": {"kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "name": "alice"}]});
        let rb_secrets = json!({"metadata": {"name": "sa-secrets", "namespace": "team"},
            "roleRef": {"kind": "Role", "name": "secrets"},
            "subjects": [{"kind": "ServiceAccount", "name": "builder"}]});
        let dangling = json!({"metadata": {"name": "dangling", "namespace": "team"},
            "roleRef": {"kind": "Role", "name": "missing"},
            "subjects": [{"kind": "User", "name": "alice"}]});
        Policy::build(
            &objs(vec![view, discovery]),
            &objs(vec![secrets]),
            &objs(vec![crb]),
            &objs(vec![rb_view, rb_secrets, dangling]),
        )
    }

    #[test]
    fn role_bindings_grant_in_their_namespace_only() {
        let policy = policy();
        let alice = User::new("alice", vec![]);
        let list = |ns: &str| Attributes::resource(&alice, "list", "", "pods").in_namespace(ns);
        assert_eq!(
            policy.authorize(&list("team")),
            Decision::Allow(
                "RBAC: allowed by RoleBinding \"alice-view/team\" of ClusterRole \"view\" to User \"alice\""
                    .into()
            )
        );
        assert_eq!(policy.authorize(&list("other")), Decision::NoOpinion);
        assert_eq!(policy.authorize(&list("")), Decision::NoOpinion, "not at the cluster scope");
        let create = Attributes::resource(&alice, "create", "", "pods").in_namespace("team");
        assert_eq!(policy.authorize(&create), Decision::NoOpinion);
        let discovery = Attributes::non_resource(&alice, "get", "/api/v1");
        assert!(
            matches!(policy.authorize(&discovery), Decision::Allow(r) if r.contains("ClusterRoleBinding \"discovery\""))
        );
        let bob = User::new("bob", vec![]);
        assert_eq!(
            policy.authorize(&Attributes::resource(&bob, "list", "", "pods").in_namespace("team")),
            Decision::NoOpinion
        );
    }

    #[test]
    fn service_accounts_default_to_the_binding_namespace() {
        let policy = policy();
        let sa = User::new("system:serviceaccount:team:builder", vec![]);
        let get = Attributes::resource(&sa, "get", "", "secrets").in_namespace("team");
        assert!(
            matches!(policy.authorize(&get), Decision::Allow(r) if r.ends_with("to ServiceAccount \"builder/team\""))
        );
        let other = User::new("system:serviceaccount:other:builder", vec![]);
        let get = Attributes::resource(&other, "get", "", "secrets").in_namespace("team");
        assert_eq!(policy.authorize(&get), Decision::NoOpinion);
    }

    #[test]
    fn rules_for_collects_every_applying_binding() {
        let policy = policy();
        let alice = User::new("alice", vec![]);
        let rules = policy.rules_for(&alice, "team");
        assert_eq!(rules.len(), 2, "discovery + view; the dangling binding adds nothing");
        assert_eq!(policy.rules_for(&alice, "other").len(), 1);
        assert_eq!(
            policy.referenced_rules("ClusterRole", "nope", "").unwrap_err(),
            "clusterroles.rbac.authorization.k8s.io \"nope\" not found"
        );
        assert_eq!(policy.referenced_rules("Role", "secrets", "team").unwrap().len(), 1);
    }
}
