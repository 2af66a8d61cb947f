//! Authorization: may this user do this? The seam every authenticated request passes through
//! before any work is done, as the reference apiserver's `WithAuthorization` filter.
//!
//! A request becomes [`Attributes`] (the reference's request info: verb, API group, resource,
//! subresource, namespace, name — or a non-resource path and the lowercase HTTP verb). A chain of
//! [`Authorizer`]s then decides: the first `Allow` or `Deny` wins, `NoOpinion` passes on, and a
//! chain that ends without an opinion forbids. The chain is the reference's default
//! `--authorization-mode=RBAC` behind its privileged-group shortcut: `system:masters` is always
//! allowed, everything else is [`rbac`] over the Roles and bindings in the store.
//!
//! RBAC reads an in-memory index derived from the watch caches, so a grant written a moment ago
//! may not be visible yet; before refusing, [`authorize`] waits for the caches to reach the
//! store's current revision and asks again (read-your-writes for policy changes).

pub mod aggregation;
pub mod bootstrap;
pub mod escalation;
pub mod node;
pub mod node_graph;
pub mod node_restriction;
pub mod rbac;
pub mod review;
pub mod rules;

use http::Method;

use super::authn::User;
use super::request::{Query, Route};
use super::server::ApiServer;
use super::status::ApiError;

/// The group whose members may do anything, whatever the policy says (the reference's
/// `system:masters`).
pub const PRIVILEGED_GROUP: &str = "system:masters";

/// What a request asks to do, as an authorizer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    pub user: User,
    /// `get`, `list`, `watch`, `create`, … for resources; the lowercase HTTP method otherwise.
    pub verb: String,
    /// True for API resources, false for non-resource paths (`/api`, `/healthz`, …).
    pub resource_request: bool,
    pub group: String,
    pub version: String,
    pub resource: String,
    pub subresource: String,
    /// Empty at the cluster scope.
    pub namespace: String,
    /// Empty for collections.
    pub name: String,
    /// The request path, for non-resource requests.
    pub path: String,
    /// The raw `fieldSelector` of a list, watch or deletecollection (empty otherwise), which
    /// authorizers may narrow on (the reference's `AuthorizeWithSelectors`).
    pub field_selector: String,
    /// The raw `labelSelector`, likewise.
    pub label_selector: String,
}

impl Attributes {
    /// Attributes of a resource request.
    pub fn resource(user: &User, verb: &str, group: &str, resource: &str) -> Attributes {
        Attributes {
            user: user.clone(),
            verb: verb.to_string(),
            resource_request: true,
            group: group.to_string(),
            version: String::new(),
            resource: resource.to_string(),
            subresource: String::new(),
            namespace: String::new(),
            name: String::new(),
            path: String::new(),
            field_selector: String::new(),
            label_selector: String::new(),
        }
    }

    /// Attributes of a non-resource request.
    pub fn non_resource(user: &User, verb: &str, path: &str) -> Attributes {
        Attributes {
            resource_request: false,
            path: path.to_string(),
            ..Attributes::resource(user, verb, "", "")
        }
    }

    /// The same request in `namespace`.
    pub fn in_namespace(mut self, namespace: &str) -> Attributes {
        self.namespace = namespace.to_string();
        self
    }

    /// The same request for the object `name`.
    pub fn named(mut self, name: &str) -> Attributes {
        self.name = name.to_string();
        self
    }

    /// `pods` or `pods/log`: the resource as rules name it.
    pub fn combined_resource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }
}

/// An authorizer's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed; the reason says by what (e.g. the RBAC binding).
    Allow(String),
    /// Refused outright; later authorizers are not asked.
    Deny(String),
    /// This authorizer neither allows nor denies; the next one is asked.
    NoOpinion,
}

/// One authorization mode.
pub trait Authorizer {
    /// Decides one request.
    fn authorize(&self, attrs: &Attributes) -> Decision;
}

/// Members of the privileged group are allowed everything (the reference adds the same
/// authorizer in front of the configured modes).
#[derive(Debug, Clone, Copy, Default)]
pub struct PrivilegedGroup;

impl Authorizer for PrivilegedGroup {
    fn authorize(&self, attrs: &Attributes) -> Decision {
        if attrs.user.groups.iter().any(|g| g == PRIVILEGED_GROUP) {
            Decision::Allow(String::new())
        } else {
            Decision::NoOpinion
        }
    }
}

/// Asks each authorizer in turn: the first `Allow` or `Deny` is the answer.
pub fn decide(chain: &[&dyn Authorizer], attrs: &Attributes) -> Decision {
    for authorizer in chain {
        match authorizer.authorize(attrs) {
            Decision::NoOpinion => continue,
            decided => return decided,
        }
    }
    Decision::NoOpinion
}

/// The server's chain: the privileged group, the Node authorizer over the current node graph,
/// then RBAC. A node's request nothing allowed is refused with the Node authorizer's reason.
pub(crate) fn decide_now(server: &ApiServer, attrs: &Attributes) -> Decision {
    // The privileged group needs no index; and only nodes need the node graph (brought up to
    // date with the pods written since under its lock, so never for anyone else's request).
    if let decided @ Decision::Allow(_) = PrivilegedGroup.authorize(attrs) {
        return decided;
    }
    let index = server.inner.authz.current(server);
    if node::node_identity(&attrs.user).is_none() {
        return index.authorize(attrs);
    }
    server.inner.authz.node.with_current(server, |graph| {
        let node = node::NodeAuthorizer { graph, rules: node::node_rules() };
        match decide(&[&PrivilegedGroup, &node, index.as_ref()], attrs) {
            Decision::NoOpinion => match node.judge(attrs) {
                Some(Err(reason)) if !reason.is_empty() => Decision::Deny(reason),
                _ => Decision::NoOpinion,
            },
            decided => decided,
        }
    })
}

/// Decides `attrs` with the server's chain. A refusal is confirmed once the RBAC caches have
/// caught up with the store, so a binding written just before is honoured.
pub async fn authorize(server: &ApiServer, attrs: &Attributes) -> Decision {
    match decide_now(server, attrs) {
        Decision::Allow(reason) => Decision::Allow(reason),
        _ => {
            server.inner.authz.catch_up(server).await;
            decide_now(server, attrs)
        }
    }
}

/// Authorizes an authenticated request before anything else is done with it; the error is the
/// reference's 403 `Status`.
pub async fn check_request(
    server: &ApiServer,
    user: &User,
    method: &Method,
    path: &str,
    route: &Route,
    query: &Query,
) -> Result<(), ApiError> {
    for attrs in request_attributes(user, method, path, route, query) {
        let reason = match authorize(server, &attrs).await {
            Decision::Allow(reason) => {
                super::audit::authorization_decided(true, &reason);
                continue;
            }
            Decision::Deny(reason) => reason,
            Decision::NoOpinion => String::new(),
        };
        super::audit::authorization_decided(false, &reason);
        let err = forbidden(&attrs, &reason);
        // A refused component is a policy gap worth seeing; a refused user is routine.
        if user.name.starts_with("system:") {
            tracing::warn!(message = %err.message, "authorization refused a system identity");
        } else {
            tracing::debug!(message = %err.message, "forbidden");
        }
        return Err(err);
    }
    Ok(())
}

/// The attributes a request is authorized against, as the reference's request-info resolver
/// makes them. Usually one; a WebSocket `GET` on `pods/exec`, `attach` or `portforward` also
/// needs `create` (what the SPDY `POST` needs; the reference requires both since v1.35, and
/// without it `get` on `pods/exec` would run commands).
pub fn request_attributes(
    user: &User,
    method: &Method,
    path: &str,
    route: &Route,
    query: &Query,
) -> Vec<Attributes> {
    let Route::Resource(p) = route else {
        return vec![Attributes::non_resource(user, &method.as_str().to_ascii_lowercase(), path)];
    };
    let named = p.name.is_some();
    let verb = match *method {
        Method::GET | Method::HEAD if p.watch_prefix || query.flag("watch") => "watch",
        Method::GET | Method::HEAD if named => "get",
        Method::GET | Method::HEAD => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "",
    };
    let verb = if verb.is_empty() { method.as_str().to_ascii_lowercase() } else { verb.into() };
    let mut attrs = Attributes {
        user: user.clone(),
        verb,
        resource_request: true,
        group: p.group.clone(),
        version: p.version.clone(),
        resource: p.resource.clone(),
        subresource: p.subresource.clone().unwrap_or_default(),
        namespace: p.namespace.clone().unwrap_or_default(),
        name: p.name.clone().unwrap_or_default(),
        path: path.to_string(),
        field_selector: String::new(),
        label_selector: String::new(),
    };
    // A namespace is its own namespace: `get namespaces/team` is allowed by a RoleBinding in
    // `team`.
    if p.group.is_empty() && p.resource == "namespaces" && named {
        attrs.namespace = attrs.name.clone();
    }
    // Only the verbs that honour selectors carry them (KEP-4601): a selector on any other verb
    // must not narrow what it is authorized as.
    if matches!(attrs.verb.as_str(), "list" | "watch" | "deletecollection") {
        attrs.field_selector = query.get("fieldSelector").unwrap_or_default().to_string();
        attrs.label_selector = query.get("labelSelector").unwrap_or_default().to_string();
    }
    // A list or watch of one object by name (`fieldSelector=metadata.name=x`) is about that name.
    if matches!(attrs.verb.as_str(), "list" | "watch") {
        if let Some(name) = query.get("fieldSelector").and_then(single_name) {
            attrs.name = name;
        }
    }
    let streaming = p.group.is_empty()
        && p.resource == "pods"
        && matches!(attrs.subresource.as_str(), "exec" | "attach" | "portforward");
    if streaming && attrs.verb == "get" {
        let create = Attributes { verb: "create".into(), ..attrs.clone() };
        return vec![attrs, create];
    }
    vec![attrs]
}

/// The name a field selector pins, when it is exactly `metadata.name=<x>` (or `==`).
fn single_name(selector: &str) -> Option<String> {
    let mut found = None;
    for term in selector.split(',').filter(|t| !t.is_empty()) {
        let (key, value) = term.split_once("==").or_else(|| term.split_once('='))?;
        if key.trim() != "metadata.name" || key.ends_with('!') || found.is_some() {
            return None;
        }
        found = Some(value.trim().to_string());
    }
    found
}

/// The reference's 403 for a refused request: `pods is forbidden: User "alice" cannot list
/// resource "pods" in API group "" in the namespace "other"`.
pub fn forbidden(attrs: &Attributes, reason: &str) -> ApiError {
    let user = &attrs.user.name;
    let what = if !attrs.resource_request {
        format!("User {user:?} cannot {} path {:?}", attrs.verb, attrs.path)
    } else {
        let resource = attrs.combined_resource();
        let group = &attrs.group;
        if attrs.namespace.is_empty() {
            format!(
                "User {user:?} cannot {} resource {resource:?} in API group {group:?} at the cluster scope",
                attrs.verb
            )
        } else {
            format!(
                "User {user:?} cannot {} resource {resource:?} in API group {group:?} in the namespace {:?}",
                attrs.verb, attrs.namespace
            )
        }
    };
    let what = if reason.is_empty() { what } else { format!("{what}: {reason}") };
    forbidden_status(&attrs.group, &attrs.resource, &attrs.name, &what)
}

/// A 403 `Status` naming `resource.group` and `name` as the reference's `NewForbidden` does.
pub fn forbidden_status(group: &str, resource: &str, name: &str, why: &str) -> ApiError {
    let qualified = match (resource.is_empty(), group.is_empty()) {
        (true, _) => String::new(),
        (false, true) => resource.to_string(),
        (false, false) => format!("{resource}.{group}"),
    };
    let message = match (qualified.is_empty(), name.is_empty()) {
        (true, _) => format!("forbidden: {why}"),
        (false, true) => format!("{qualified} is forbidden: {why}"),
        (false, false) => format!("{qualified} {name:?} is forbidden: {why}"),
    };
    ApiError {
        code: 403,
        reason: "Forbidden",
        message,
        details: Some(serde_json::json!({"name": name, "group": group, "kind": resource})),
        retry_after: None,
    }
}

/// Writes the bootstrap policy, aggregates the ClusterRoles, starts the aggregation loop and
/// waits until the authorizer's index has all of it: the server may serve after this.
pub async fn start(server: &ApiServer) -> Result<(), ApiError> {
    bootstrap::ensure(server).await?;
    server.inner.authz.catch_up(server).await;
    aggregation::reconcile_all(server).await?;
    aggregation::start(server);
    server.inner.authz.catch_up(server).await;
    Ok(())
}

/// The authorization state of a server: the RBAC index (what `current` and `catch_up` of the
/// state itself refer to) and the Node authorizer's graph.
#[derive(Debug, Default)]
pub(crate) struct State {
    rbac: rbac::RbacIndex,
    pub node: node_graph::NodeIndex,
}

impl std::ops::Deref for State {
    type Target = rbac::RbacIndex;

    fn deref(&self) -> &rbac::RbacIndex {
        &self.rbac
    }
}

impl State {
    /// Waits (briefly) until the caches both authorizers read have caught up with the store.
    pub async fn catch_up(&self, server: &ApiServer) {
        self.rbac.catch_up(server).await;
        self.node.catch_up(server).await;
    }
}

/// How long a refusal waits for the authorization caches to reach the store before it stands.
const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(2);

/// Waits (briefly) until the caches under `prefixes` have seen everything the store had when
/// called, so an object written a moment ago (a binding, a pod bound to a node) is honoured.
async fn catch_up(server: &ApiServer, prefixes: &[String], what: &str) {
    let Some(first) = prefixes.first() else { return };
    let head = server
        .inner
        .store
        .range(crate::store::RangeRequest {
            key: first.as_bytes().to_vec(),
            count_only: true,
            ..Default::default()
        })
        .await;
    let Ok(head) = head else { return };
    for prefix in prefixes {
        let cache = server.inner.caches.get(&server.inner.store, prefix);
        if !cache.wait_for(head.revision, CATCH_UP).await {
            tracing::warn!(%prefix, "authorization: the {what} cache is behind the store");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::request::route;

    fn attrs(method: Method, path_and_query: &str) -> Vec<Attributes> {
        let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
        let alice = User::new("alice", vec![]);
        request_attributes(&alice, &method, path, &route(path), &Query::parse(Some(query)))
    }

    #[test]
    fn verbs_follow_the_reference_request_info() {
        let one = |m: Method, p: &str| attrs(m, p).remove(0);
        assert_eq!(one(Method::GET, "/api/v1/namespaces/a/pods").verb, "list");
        assert_eq!(one(Method::GET, "/api/v1/namespaces/a/pods?watch=true").verb, "watch");
        assert_eq!(one(Method::GET, "/api/v1/watch/namespaces/a/pods").verb, "watch");
        assert_eq!(one(Method::GET, "/api/v1/namespaces/a/pods/p").verb, "get");
        assert_eq!(one(Method::POST, "/api/v1/namespaces/a/pods").verb, "create");
        assert_eq!(one(Method::PUT, "/api/v1/namespaces/a/pods/p").verb, "update");
        assert_eq!(one(Method::PATCH, "/api/v1/namespaces/a/pods/p").verb, "patch");
        assert_eq!(one(Method::DELETE, "/api/v1/namespaces/a/pods/p").verb, "delete");
        assert_eq!(one(Method::DELETE, "/api/v1/namespaces/a/pods").verb, "deletecollection");
        let status = one(Method::PUT, "/api/v1/namespaces/a/pods/p/status");
        assert_eq!(
            (status.combined_resource().as_str(), status.name.as_str()),
            ("pods/status", "p")
        );
        let ns = one(Method::GET, "/api/v1/namespaces/team");
        assert_eq!((ns.resource.as_str(), ns.namespace.as_str()), ("namespaces", "team"));
        let by_name =
            one(Method::GET, "/api/v1/namespaces/a/pods?fieldSelector=metadata.name%3Dweb");
        assert_eq!((by_name.verb.as_str(), by_name.name.as_str()), ("list", "web"));
        let api = one(Method::GET, "/apis");
        assert!(!api.resource_request);
        assert_eq!((api.verb.as_str(), api.path.as_str()), ("get", "/apis"));
    }

    #[test]
    fn websocket_exec_needs_create_too() {
        let exec = attrs(Method::GET, "/api/v1/namespaces/a/pods/p/exec");
        let verbs: Vec<&str> = exec.iter().map(|a| a.verb.as_str()).collect();
        assert_eq!(verbs, ["get", "create"]);
        assert_eq!(attrs(Method::GET, "/api/v1/namespaces/a/pods/p/log").len(), 1);
    }

    #[test]
    fn forbidden_messages_match_the_reference() {
        let alice = User::new("alice", vec![]);
        let list = Attributes::resource(&alice, "list", "", "pods").in_namespace("other");
        assert_eq!(
            forbidden(&list, "").message,
            "pods is forbidden: User \"alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"other\""
        );
        let mut node = Attributes::resource(&alice, "get", "", "nodes").named("n1");
        node.subresource = "status".into();
        assert_eq!(
            forbidden(&node, "").message,
            "nodes \"n1\" is forbidden: User \"alice\" cannot get resource \"nodes/status\" in API group \"\" at the cluster scope"
        );
        let deploy =
            Attributes::resource(&alice, "create", "apps", "deployments").in_namespace("a");
        let err = forbidden(&deploy, "");
        assert!(err.message.starts_with("deployments.apps is forbidden: "), "{}", err.message);
        assert_eq!(err.code, 403);
        let path = Attributes::non_resource(&alice, "get", "/metrics");
        assert_eq!(
            forbidden(&path, "").message,
            "forbidden: User \"alice\" cannot get path \"/metrics\""
        );
    }

    #[test]
    fn masters_are_allowed_before_rbac_is_asked() {
        struct Refuse;
        impl Authorizer for Refuse {
            fn authorize(&self, _: &Attributes) -> Decision {
                Decision::Deny("no".into())
            }
        }
        let admin = User::new("admin", vec![PRIVILEGED_GROUP.into()]);
        let alice = User::new("alice", vec![]);
        let chain: [&dyn Authorizer; 2] = [&PrivilegedGroup, &Refuse];
        let get = |u: &User| Attributes::resource(u, "get", "", "pods");
        assert!(matches!(decide(&chain, &get(&admin)), Decision::Allow(_)));
        assert_eq!(decide(&chain, &get(&alice)), Decision::Deny("no".into()));
        assert_eq!(decide(&[&PrivilegedGroup], &get(&alice)), Decision::NoOpinion);
    }
}

#[cfg(test)]
mod policy_tests;
