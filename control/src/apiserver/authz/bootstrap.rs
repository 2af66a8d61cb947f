//! The default RBAC policy every cluster starts with: the reference's bootstrap ClusterRoles
//! and ClusterRoleBindings that Skerry's users and components need, as data.
//!
//! Written when the server starts, as the reference's `rbac/bootstrap-roles` post-start hook
//! does: a missing object is created; an existing one annotated
//! `rbac.authorization.kubernetes.io/autoupdate: "true"` is reconciled — rules, aggregation
//! selectors, labels, annotations and subjects it lacks are added (nothing is taken away), and a
//! binding whose roleRef changed is recreated. Objects with `autoupdate: "false"` are the
//! administrator's and are left alone.
//!
//! Differences from the reference, on purpose:
//! - The agent embeds kube-proxy and cluster DNS, so `system:node-proxier` is bound to
//!   `system:nodes` and nodes may open their tunnel. (Nodes may not list every pod: the DNS
//!   answers pod names without looking pods up, CoreDNS's `pods insecure`, so the former
//!   `system:skerry:node-dns` grant is retired.) `system:node` itself is
//!   bound to no one, as in the reference since v1.8: the Node authorizer ([`super::node`])
//!   grants nodes its rules, limited to their own objects.
//! - The controllers run in-process as one user, `system:kube-controller-manager`, instead of a
//!   service account per controller, so that role is the reference's own plus the union of the
//!   `system:controller:*` roles of the controllers Skerry runs.
//! - Joining agents authenticate with bootstrap tokens: `system:bootstrappers` may create and
//!   read CSRs and ask for node client certificates, as kubeadm binds them.

use http::{Method, StatusCode};
use serde_json::{json, Map, Value};

use super::rules::PolicyRule;
use crate::apiserver::authn::User;
use crate::apiserver::server::ApiServer;
use crate::apiserver::status::ApiError;

/// Marks an object the server keeps reconciled.
pub const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";
/// The label on every bootstrap object.
const BOOTSTRAPPING: (&str, &str) = ("kubernetes.io/bootstrapping", "rbac-defaults");
const AGGREGATE_TO_ADMIN: &str = "rbac.authorization.k8s.io/aggregate-to-admin";
const AGGREGATE_TO_EDIT: &str = "rbac.authorization.k8s.io/aggregate-to-edit";
const AGGREGATE_TO_VIEW: &str = "rbac.authorization.k8s.io/aggregate-to-view";

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
const ALL: &[&str] = &["*"];
const EVENTS_WRITE: &[&str] = &["create", "patch", "update"];

const CORE: &[&str] = &[""];
const APPS: &[&str] = &["apps"];
const APPS_EXT: &[&str] = &["apps", "extensions"];
const AUTHN: &[&str] = &["authentication.k8s.io"];
const AUTHZ: &[&str] = &["authorization.k8s.io"];
const AUTOSCALING: &[&str] = &["autoscaling"];
const BATCH: &[&str] = &["batch"];
const CERTS: &[&str] = &["certificates.k8s.io"];
const COORD: &[&str] = &["coordination.k8s.io"];
const DISCOVERY: &[&str] = &["discovery.k8s.io"];
const EVENTS: &[&str] = &["", "events.k8s.io"];
const EXT: &[&str] = &["extensions"];
const NETWORKING: &[&str] = &["networking.k8s.io"];
const NODE: &[&str] = &["node.k8s.io"];
const POLICY: &[&str] = &["policy"];
const RBAC: &[&str] = &["rbac.authorization.k8s.io"];
const STORAGE: &[&str] = &["storage.k8s.io"];
const ANY: &[&str] = &["*"];
const METRICS: &[&str] = &["metrics.k8s.io"];

/// One rule, as data.
struct Rule {
    verbs: &'static [&'static str],
    groups: &'static [&'static str],
    resources: &'static [&'static str],
    names: &'static [&'static str],
    urls: &'static [&'static str],
}

/// A rule on resources.
const fn r(
    verbs: &'static [&'static str],
    groups: &'static [&'static str],
    resources: &'static [&'static str],
) -> Rule {
    Rule { verbs, groups, resources, names: &[], urls: &[] }
}

/// A rule on resources of the given names.
const fn named(
    verbs: &'static [&'static str],
    groups: &'static [&'static str],
    resources: &'static [&'static str],
    names: &'static [&'static str],
) -> Rule {
    Rule { verbs, groups, resources, names, urls: &[] }
}

/// A rule on non-resource URLs.
const fn urls(verbs: &'static [&'static str], urls: &'static [&'static str]) -> Rule {
    Rule { verbs, groups: &[], resources: &[], names: &[], urls }
}

/// One bootstrap ClusterRole.
struct Role {
    name: &'static str,
    rules: &'static [Rule],
    /// Extra labels (the aggregate-to-* ones).
    labels: &'static [&'static str],
    /// The label an aggregated role collects rules by (`admin`, `edit`, `view`).
    aggregate: Option<&'static str>,
}

const fn role(name: &'static str, rules: &'static [Rule]) -> Role {
    Role { name, rules, labels: &[], aggregate: None }
}

/// One bootstrap ClusterRoleBinding: its name (= the role's), users and groups.
struct BindingSpec {
    name: &'static str,
    role: &'static str,
    users: &'static [&'static str],
    groups: &'static [&'static str],
}

const fn bind(
    name: &'static str,
    users: &'static [&'static str],
    groups: &'static [&'static str],
) -> BindingSpec {
    BindingSpec { name, role: name, users, groups }
}

#[rustfmt::skip]
const ROLES: &[Role] = &[
    role("cluster-admin", &[r(ALL, ANY, &["*"]), urls(ALL, &["*"])]),
    role("system:discovery", &[urls(&["get"], &[
        "/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*",
        "/readyz", "/version", "/version/",
    ])]),
    role("system:monitoring", &[urls(&["get"], &[
        "/healthz", "/healthz/*", "/livez", "/livez/*", "/metrics", "/metrics/slis", "/readyz",
        "/readyz/*",
    ])]),
    role("system:basic-user", &[
        r(&["create"], AUTHZ, &["selfsubjectaccessreviews", "selfsubjectrulesreviews"]),
        r(&["create"], AUTHN, &["selfsubjectreviews"]),
    ]),
    role("system:public-info-viewer", &[urls(&["get"], &[
        "/healthz", "/livez", "/readyz", "/version", "/version/",
    ])]),
    role("system:service-account-issuer-discovery", &[urls(&["get"], &[
        "/.well-known/openid-configuration", "/.well-known/openid-configuration/",
        "/openid/v1/jwks", "/openid/v1/jwks/",
    ])]),
    // The user-facing roles: filled in by aggregation from the roles labelled for them.
    Role { name: "admin", rules: &[], labels: &[], aggregate: Some(AGGREGATE_TO_ADMIN) },
    Role { name: "edit", rules: &[], labels: &[AGGREGATE_TO_ADMIN], aggregate: Some(AGGREGATE_TO_EDIT) },
    Role { name: "view", rules: &[], labels: &[AGGREGATE_TO_EDIT], aggregate: Some(AGGREGATE_TO_VIEW) },
    Role { name: "system:aggregate-to-admin", labels: &[AGGREGATE_TO_ADMIN], aggregate: None, rules: &[
        r(&["create"], AUTHZ, &["localsubjectaccessreviews"]),
        r(&["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
          RBAC, &["rolebindings", "roles"]),
    ]},
    Role { name: "system:aggregate-to-edit", labels: &[AGGREGATE_TO_EDIT], aggregate: None, rules: &[
        r(&["impersonate"], CORE, &["serviceaccounts"]),
        r(WRITE, CORE, &["pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy"]),
        r(&["create"], CORE, &["pods/eviction"]),
        r(WRITE, CORE, &["configmaps", "events", "persistentvolumeclaims", "replicationcontrollers",
                         "replicationcontrollers/scale", "secrets", "serviceaccounts", "services",
                         "services/proxy"]),
        r(&["create"], CORE, &["serviceaccounts/token"]),
        r(WRITE, APPS, &["daemonsets", "deployments", "deployments/rollback", "deployments/scale",
                         "replicasets", "replicasets/scale", "statefulsets", "statefulsets/scale"]),
        r(WRITE, AUTOSCALING, &["horizontalpodautoscalers"]),
        r(WRITE, BATCH, &["cronjobs", "jobs"]),
        r(WRITE, EXT, &["daemonsets", "deployments", "deployments/rollback", "deployments/scale",
                        "ingresses", "networkpolicies", "replicasets", "replicasets/scale",
                        "replicationcontrollers/scale"]),
        r(WRITE, POLICY, &["poddisruptionbudgets"]),
        r(WRITE, NETWORKING, &["ingresses", "networkpolicies"]),
        r(WRITE, COORD, &["leases"]),
        r(READ, CORE, &["pods/attach", "pods/exec", "pods/portforward", "pods/proxy", "secrets",
                        "services/proxy"]),
    ]},
    Role { name: "system:aggregate-to-view", labels: &[AGGREGATE_TO_VIEW], aggregate: None, rules: &[
        r(READ, CORE, &["configmaps", "endpoints", "persistentvolumeclaims",
                        "persistentvolumeclaims/status", "pods", "replicationcontrollers",
                        "replicationcontrollers/scale", "serviceaccounts", "services",
                        "services/status"]),
        r(READ, CORE, &["bindings", "events", "limitranges", "namespaces/status", "pods/log",
                        "pods/status", "replicationcontrollers/status", "resourcequotas",
                        "resourcequotas/status"]),
        r(READ, CORE, &["namespaces"]),
        r(READ, DISCOVERY, &["endpointslices"]),
        r(READ, APPS, &["controllerrevisions", "daemonsets", "daemonsets/status", "deployments",
                        "deployments/scale", "deployments/status", "replicasets",
                        "replicasets/scale", "replicasets/status", "statefulsets",
                        "statefulsets/scale", "statefulsets/status"]),
        r(READ, AUTOSCALING, &["horizontalpodautoscalers", "horizontalpodautoscalers/status"]),
        r(READ, BATCH, &["cronjobs", "cronjobs/status", "jobs", "jobs/status"]),
        r(READ, EXT, &["daemonsets", "daemonsets/status", "deployments", "deployments/scale",
                       "deployments/status", "ingresses", "ingresses/status", "networkpolicies",
                       "replicasets", "replicasets/scale", "replicasets/status",
                       "replicationcontrollers/scale"]),
        r(READ, POLICY, &["poddisruptionbudgets", "poddisruptionbudgets/status"]),
        r(READ, NETWORKING, &["ingresses", "ingresses/status", "networkpolicies"]),
    ]},
    // metrics-server's own role for its API (`kubectl top`), aggregated the same way.
    Role { name: "system:aggregated-metrics-reader", aggregate: None,
           labels: &[AGGREGATE_TO_VIEW, AGGREGATE_TO_EDIT, AGGREGATE_TO_ADMIN],
           rules: &[r(READ, METRICS, &["nodes", "pods"])] },
    role("system:node", &[
        r(&["create"], AUTHN, &["tokenreviews"]),
        r(&["create"], AUTHZ, &["localsubjectaccessreviews", "subjectaccessreviews"]),
        r(READ, CORE, &["services"]),
        r(&["create", "get", "list", "watch"], CORE, &["nodes"]),
        r(&["patch", "update"], CORE, &["nodes/status"]),
        r(&["delete", "patch", "update"], CORE, &["nodes"]),
        r(EVENTS_WRITE, EVENTS, &["events"]),
        r(READ, CORE, &["pods"]),
        r(&["create", "delete"], CORE, &["pods"]),
        r(&["patch", "update"], CORE, &["pods/status"]),
        r(&["create"], CORE, &["pods/eviction"]),
        r(READ, CORE, &["configmaps", "secrets"]),
        r(&["get"], CORE, &["persistentvolumeclaims", "persistentvolumes"]),
        r(&["get"], CORE, &["endpoints"]),
        r(&["create", "get", "list", "watch"], CERTS, &["certificatesigningrequests"]),
        r(&["create", "delete", "get", "patch", "update"], COORD, &["leases"]),
        r(&["get"], STORAGE, &["volumeattachments"]),
        r(&["create"], CORE, &["serviceaccounts/token"]),
        r(&["get", "patch", "update"], CORE, &["persistentvolumeclaims/status"]),
        r(READ, STORAGE, &["csidrivers"]),
        r(&["create", "delete", "get", "patch", "update"], STORAGE, &["csinodes"]),
        r(READ, NODE, &["runtimeclasses"]),
    ]),
    role("system:node-proxier", &[
        r(&["list", "watch"], CORE, &["endpoints", "services"]),
        r(READ, CORE, &["nodes"]),
        r(EVENTS_WRITE, EVENTS, &["events"]),
        r(&["list", "watch"], DISCOVERY, &["endpointslices"]),
    ]),
    // Skerry's agent dials in for logs, exec and port-forward (see `apiserver::tunnel`).
    role("system:skerry:node-tunnel", &[urls(&["get"], &["/skerry/v1/tunnel"])]),
    role("system:node-bootstrapper", &[
        r(&["create", "get", "list", "watch"], CERTS, &["certificatesigningrequests"]),
    ]),
    role("system:certificates.k8s.io:certificatesigningrequests:nodeclient", &[
        r(&["create"], CERTS, &["certificatesigningrequests/nodeclient"]),
    ]),
    role("system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", &[
        r(&["create"], CERTS, &["certificatesigningrequests/selfnodeclient"]),
    ]),
    role("system:kube-scheduler", &[
        r(EVENTS_WRITE, EVENTS, &["events"]),
        r(&["create"], COORD, &["leases"]),
        named(&["get", "update"], COORD, &["leases"], &["kube-scheduler"]),
        r(&["create"], CORE, &["endpoints"]),
        named(&["get", "update"], CORE, &["endpoints"], &["kube-scheduler"]),
        r(READ, CORE, &["nodes"]),
        r(&["delete", "get", "list", "watch"], CORE, &["pods"]),
        r(&["create"], CORE, &["bindings", "pods/binding"]),
        r(&["patch", "update"], CORE, &["pods/status"]),
        r(READ, CORE, &["replicationcontrollers", "services"]),
        r(READ, APPS_EXT, &["replicasets"]),
        r(READ, APPS, &["statefulsets"]),
        r(READ, POLICY, &["poddisruptionbudgets"]),
        r(READ, CORE, &["persistentvolumeclaims", "persistentvolumes"]),
        r(&["create"], AUTHN, &["tokenreviews"]),
        r(&["create"], AUTHZ, &["subjectaccessreviews"]),
        r(READ, STORAGE, &["csinodes"]),
        r(READ, CORE, &["namespaces"]),
        r(READ, STORAGE, &["csidrivers", "csistoragecapacities"]),
    ]),
    role("system:kube-controller-manager", &[
        // The reference's own role.
        r(EVENTS_WRITE, EVENTS, &["events"]),
        r(&["create"], COORD, &["leases"]),
        named(&["get", "update"], COORD, &["leases"], &["kube-controller-manager"]),
        r(&["create"], CORE, &["secrets", "serviceaccounts"]),
        r(&["delete"], CORE, &["secrets"]),
        r(&["get"], CORE, &["namespaces", "secrets", "serviceaccounts"]),
        r(&["update"], CORE, &["secrets", "serviceaccounts"]),
        r(&["create"], AUTHN, &["tokenreviews"]),
        r(&["create"], AUTHZ, &["subjectaccessreviews"]),
        r(&["list", "watch"], ANY, &["*"]),
        r(&["create"], CORE, &["serviceaccounts/token"]),
        // The garbage collector and the namespace controller read, update and delete anything
        // (system:controller:generic-garbage-collector, system:controller:namespace-controller).
        r(&["delete", "deletecollection", "get", "patch", "update"], ANY, &["*"]),
        // What the other controllers create: replicaset, deployment, endpoint, endpointslice,
        // serviceaccount (and root-CA publisher), nodelifecycle, job, cronjob and statefulset
        // controllers.
        r(&["create"], CORE, &["configmaps", "endpoints", "persistentvolumeclaims", "pods",
                               "pods/eviction"]),
        r(&["create"], APPS, &["controllerrevisions", "replicasets"]),
        r(&["create"], DISCOVERY, &["endpointslices"]),
        r(&["create"], BATCH, &["jobs"]),
        // The local-path provisioner: its volumes, and the default class it makes at start.
        r(&["create"], CORE, &["persistentvolumes"]),
        r(&["create"], STORAGE, &["storageclasses"]),
        // csrapproving and csrsigning.
        named(&["approve"], CERTS, &["signers"], &[
            "kubernetes.io/kube-apiserver-client-kubelet", "kubernetes.io/legacy-unknown",
        ]),
        named(&["sign"], CERTS, &["signers"], &[
            "kubernetes.io/kube-apiserver-client", "kubernetes.io/kube-apiserver-client-kubelet",
            "kubernetes.io/kubelet-serving", "kubernetes.io/legacy-unknown",
        ]),
    ]),
];

#[rustfmt::skip]
const BINDINGS: &[BindingSpec] = &[
    bind("cluster-admin", &[], &["system:masters"]),
    bind("system:discovery", &[], &["system:authenticated"]),
    bind("system:monitoring", &[], &["system:monitoring"]),
    bind("system:basic-user", &[], &["system:authenticated"]),
    bind("system:public-info-viewer", &[], &["system:authenticated", "system:unauthenticated"]),
    bind("system:service-account-issuer-discovery", &[], &["system:serviceaccounts"]),
    // The Node authorizer grants nodes these rules, each node for its own objects only.
    bind("system:node", &[], &[]),
    bind("system:node-proxier", &["system:kube-proxy"], &["system:nodes"]),
    bind("system:skerry:node-tunnel", &[], &["system:nodes"]),
    bind("system:kube-controller-manager", &["system:kube-controller-manager"], &[]),
    bind("system:kube-scheduler", &["system:kube-scheduler"], &[]),
    // kubeadm's bindings for TLS bootstrapping.
    BindingSpec { name: "system:node-bootstrapper:bootstrappers", role: "system:node-bootstrapper",
                  users: &[], groups: &["system:bootstrappers"] },
    BindingSpec { name: "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
                  role: "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
                  users: &[], groups: &["system:bootstrappers"] },
    BindingSpec { name: "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
                  role: "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
                  users: &[], groups: &["system:nodes"] },
];

fn list(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

impl Rule {
    fn to_rule(&self) -> PolicyRule {
        PolicyRule {
            verbs: list(self.verbs),
            api_groups: list(self.groups),
            resources: list(self.resources),
            resource_names: list(self.names),
            non_resource_urls: list(self.urls),
        }
    }
}

fn metadata(name: &str, extra_labels: &[&str]) -> Value {
    let mut labels = Map::new();
    labels.insert(BOOTSTRAPPING.0.into(), json!(BOOTSTRAPPING.1));
    for label in extra_labels {
        labels.insert(label.to_string(), json!("true"));
    }
    json!({"name": name, "labels": labels, "annotations": {AUTOUPDATE: "true"}})
}

/// The rules of the bootstrap ClusterRole `name` (empty when there is none): the Node
/// authorizer's node rules are `system:node`'s.
pub fn role_rules(name: &str) -> Vec<PolicyRule> {
    ROLES
        .iter()
        .filter(|role| role.name == name)
        .flat_map(|role| role.rules.iter().map(Rule::to_rule))
        .collect()
}

/// The bootstrap ClusterRoles, as objects.
pub fn cluster_roles() -> Vec<Value> {
    ROLES
        .iter()
        .map(|role| {
            let rules: Vec<Value> = role.rules.iter().map(|r| r.to_rule().to_json()).collect();
            let mut obj = json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": metadata(role.name, role.labels),
                "rules": rules,
            });
            if let Some(label) = role.aggregate {
                obj["aggregationRule"] =
                    json!({"clusterRoleSelectors": [{"matchLabels": {label: "true"}}]});
            }
            obj
        })
        .collect()
}

/// The bootstrap ClusterRoleBindings, as objects.
pub fn cluster_role_bindings() -> Vec<Value> {
    BINDINGS
        .iter()
        .map(|b| {
            let subject = |kind: &str, name: &&str| {
                json!({"kind": kind, "apiGroup": "rbac.authorization.k8s.io", "name": name})
            };
            let subjects: Vec<Value> = b
                .users
                .iter()
                .map(|u| subject("User", u))
                .chain(b.groups.iter().map(|g| subject("Group", g)))
                .collect();
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": metadata(b.name, &[]),
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": b.role},
                "subjects": subjects,
            })
        })
        .collect()
}

/// Sends one request through the handler as the control plane itself.
async fn call(
    server: &ApiServer,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<(StatusCode, Value), ApiError> {
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(bytes)))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let response = server.handle(request, Some(User::system_admin())).await;
    let status = response.status();
    let bytes = crate::apiserver::body::read_body(response.into_body()).await?;
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok((status, value))
}

fn failed(what: &str, status: StatusCode, body: &Value) -> ApiError {
    ApiError::internal(format!("{what}: {status} {}", body["message"].as_str().unwrap_or("")))
}

/// Adds to `existing` the labels and annotations of `wanted` it lacks.
fn merge_metadata(existing: &mut Value, wanted: &Value) -> bool {
    let mut changed = false;
    for field in ["labels", "annotations"] {
        let Some(want) = wanted["metadata"][field].as_object() else { continue };
        if !existing["metadata"][field].is_object() {
            existing["metadata"][field] = json!({});
        }
        for (k, v) in want {
            if existing["metadata"][field].get(k).is_none() {
                existing["metadata"][field][k] = v.clone();
                changed = true;
            }
        }
    }
    changed
}

/// Appends the items of `wanted[field]` missing from `existing[field]`.
fn merge_list(existing: &mut Value, wanted: &Value, field: &str) -> bool {
    let want = wanted[field].as_array().cloned().unwrap_or_default();
    if !existing[field].is_array() {
        existing[field] = json!([]);
    }
    let mut changed = false;
    for item in want {
        let present = existing[field].as_array().is_some_and(|have| have.contains(&item));
        if !present {
            if let Some(have) = existing[field].as_array_mut() {
                have.push(item);
                changed = true;
            }
        }
    }
    changed
}

/// Whether `existing`'s rules already grant each of `wanted`'s (ignoring order and grouping).
fn rules_cover(existing: &Value, wanted: &Value) -> bool {
    let have = PolicyRule::of_role(existing);
    super::rules::covers(&have, &PolicyRule::of_role(wanted)).0
}

/// Creates `wanted`, or reconciles the existing object of that name.
async fn reconcile(server: &ApiServer, collection: &str, wanted: Value) -> Result<(), ApiError> {
    let name = wanted["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let path = format!("{collection}/{name}");
    for _ in 0..5 {
        let (status, mut existing) = call(server, Method::GET, &path, None).await?;
        if status == StatusCode::NOT_FOUND {
            let (status, body) = call(server, Method::POST, collection, Some(&wanted)).await?;
            match status {
                StatusCode::CREATED | StatusCode::CONFLICT => return Ok(()),
                _ => return Err(failed(&format!("creating {path}"), status, &body)),
            }
        }
        if !status.is_success() {
            return Err(failed(&format!("reading {path}"), status, &existing));
        }
        if existing["metadata"]["annotations"][AUTOUPDATE].as_str() != Some("true") {
            return Ok(());
        }
        let mut changed = merge_metadata(&mut existing, &wanted);
        if wanted.get("roleRef").is_some() {
            if existing["roleRef"] != wanted["roleRef"] {
                // roleRef is immutable: recreate the binding.
                let (status, body) = call(server, Method::DELETE, &path, None).await?;
                if !(status.is_success() || status == StatusCode::NOT_FOUND) {
                    return Err(failed(&format!("replacing {path}"), status, &body));
                }
                continue;
            }
            changed |= merge_list(&mut existing, &wanted, "subjects");
        } else if wanted.get("aggregationRule").is_some() {
            // Aggregated roles get their rules from the aggregation loop.
            if !existing["aggregationRule"].is_object() {
                existing["aggregationRule"] = json!({});
            }
            let (mut have, want) =
                (existing["aggregationRule"].clone(), &wanted["aggregationRule"]);
            if merge_list(&mut have, want, "clusterRoleSelectors") {
                existing["aggregationRule"] = have;
                changed = true;
            }
        } else if !rules_cover(&existing, &wanted) {
            changed |= merge_list(&mut existing, &wanted, "rules");
        }
        if !changed {
            return Ok(());
        }
        let (status, body) = call(server, Method::PUT, &path, Some(&existing)).await?;
        match status {
            StatusCode::OK => return Ok(()),
            StatusCode::CONFLICT => continue,
            _ => return Err(failed(&format!("updating {path}"), status, &body)),
        }
    }
    Err(ApiError::internal(format!("reconciling {collection}/{name}: kept conflicting")))
}

/// Writes the bootstrap policy: creates what is missing, reconciles what is marked autoupdate.
pub async fn ensure(server: &ApiServer) -> Result<(), ApiError> {
    const ROLES_PATH: &str = "/apis/rbac.authorization.k8s.io/v1/clusterroles";
    const BINDINGS_PATH: &str = "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings";
    for role in cluster_roles() {
        reconcile(server, ROLES_PATH, role).await?;
    }
    for binding in cluster_role_bindings() {
        reconcile(server, BINDINGS_PATH, binding).await?;
    }
    retire_node_group(server, &format!("{BINDINGS_PATH}/system:node")).await?;
    for path in [BINDINGS_PATH, ROLES_PATH].map(|p| format!("{p}/{RETIRED_NODE_DNS}")) {
        retire(server, &path).await?;
    }
    Ok(())
}

/// The grant that let every node list and watch every pod, for the agent DNS's `pods
/// verified` records; data dirs written before the DNS answered pod names from the name alone
/// still have its role and binding.
const RETIRED_NODE_DNS: &str = "system:skerry:node-dns";

/// Deletes a bootstrap object Skerry no longer writes, unless the administrator owns it
/// (`autoupdate: "false"`).
async fn retire(server: &ApiServer, path: &str) -> Result<(), ApiError> {
    let (status, existing) = call(server, Method::GET, path, None).await?;
    if !status.is_success()
        || existing["metadata"]["annotations"][AUTOUPDATE].as_str() != Some("true")
    {
        return Ok(());
    }
    let (status, body) = call(server, Method::DELETE, path, None).await?;
    if status.is_success() || status == StatusCode::NOT_FOUND {
        return Ok(());
    }
    Err(failed(&format!("deleting {path}"), status, &body))
}

/// Data dirs written before the Node authorizer bound `system:node` to the group `system:nodes`,
/// which let every node read every Secret. Reconciling only adds, so that subject is taken back
/// here (unless the administrator owns the binding: `autoupdate: "false"`).
async fn retire_node_group(server: &ApiServer, path: &str) -> Result<(), ApiError> {
    for _ in 0..5 {
        let (status, mut existing) = call(server, Method::GET, path, None).await?;
        if !status.is_success()
            || existing["metadata"]["annotations"][AUTOUPDATE].as_str() != Some("true")
        {
            return Ok(());
        }
        let Some(subjects) = existing["subjects"].as_array_mut() else { return Ok(()) };
        let before = subjects.len();
        subjects.retain(|s| !(s["kind"] == "Group" && s["name"] == "system:nodes"));
        if subjects.len() == before {
            return Ok(());
        }
        let (status, body) = call(server, Method::PUT, path, Some(&existing)).await?;
        match status {
            StatusCode::OK => return Ok(()),
            StatusCode::CONFLICT => continue,
            _ => return Err(failed(&format!("updating {path}"), status, &body)),
        }
    }
    Err(ApiError::internal(format!("reconciling {path}: kept conflicting")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_binding_names_a_bootstrap_role() {
        let roles: Vec<Value> = cluster_roles();
        let names: Vec<&str> =
            roles.iter().filter_map(|r| r["metadata"]["name"].as_str()).collect();
        for binding in cluster_role_bindings() {
            let role = binding["roleRef"]["name"].as_str().unwrap();
            assert!(names.contains(&role), "{role}");
            assert_eq!(binding["metadata"]["annotations"][AUTOUPDATE], "true");
        }
        let view = roles.iter().find(|r| r["metadata"]["name"] == "view").unwrap();
        assert_eq!(view["metadata"]["labels"][AGGREGATE_TO_EDIT], "true");
        assert_eq!(
            view["aggregationRule"]["clusterRoleSelectors"][0]["matchLabels"][AGGREGATE_TO_VIEW],
            "true"
        );
    }

    #[test]
    fn reconciling_adds_what_is_missing_and_keeps_the_rest() {
        let wanted = json!({"metadata": {"name": "r", "labels": {"a": "1"}},
                            "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]});
        let mut existing = json!({"metadata": {"name": "r", "labels": {"mine": "x"}},
                                  "rules": [{"verbs": ["list"], "apiGroups": [""], "resources": ["pods"]}]});
        assert!(!rules_cover(&existing, &wanted));
        assert!(merge_metadata(&mut existing, &wanted));
        assert!(merge_list(&mut existing, &wanted, "rules"));
        assert_eq!(existing["metadata"]["labels"], json!({"mine": "x", "a": "1"}));
        assert_eq!(existing["rules"].as_array().unwrap().len(), 2);
        assert!(rules_cover(&existing, &wanted));
        assert!(!merge_list(&mut existing, &wanted, "rules"), "a second pass changes nothing");
    }
}
