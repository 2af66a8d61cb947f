//! The objects the plugin reads — policies, bindings, the request's namespace and param
//! objects — all from the API server's watch caches (the reference reads them from informers),
//! so a request costs no store read. Like the reference, a policy, binding or param written a
//! moment ago may take effect a moment later. A cache is waited for once, until its first list
//! is complete, so a fresh server does not admit what its stored policies refuse.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{ParamKind, ParamRef};
use serde_json::Value;

use super::matching::labels;
use crate::apiserver::server::ApiServer;
use crate::apiserver::watch_cache::{CachedObject, WatchCache};
use crate::controllers::util::selector;

/// The API group of policies and bindings.
const GROUP: &str = "admissionregistration.k8s.io";

/// How long a request waits for a cache's first list.
const FIRST_LIST: Duration = Duration::from_secs(5);

/// The cache of the objects under `prefix`, after its first list.
async fn cache(server: &ApiServer, prefix: &str) -> Arc<WatchCache> {
    let cache = server.inner.caches.get(&server.inner.store, prefix);
    if !cache.is_ready() && !cache.wait_for(0, FIRST_LIST).await {
        tracing::warn!(%prefix, "admission policy: the cache has not listed yet");
    }
    cache
}

fn prefix(server: &ApiServer, group: &str, version: &str, plural: &str) -> String {
    server
        .inner
        .registry
        .resolve(group, version, plural)
        .map(|info| info.storage_prefix.clone())
        .unwrap_or_else(|| format!("/registry/{group}/{plural}/"))
}

/// Every stored object of the built-in resource `plural` of the policy group.
async fn all(server: &ApiServer, plural: &str) -> Vec<Arc<CachedObject>> {
    let cache = cache(server, &prefix(server, GROUP, "v1", plural)).await;
    cache.snapshot(cache.prefix()).1
}

/// Every stored ValidatingAdmissionPolicy.
pub(super) async fn policies(server: &ApiServer) -> Vec<Arc<CachedObject>> {
    all(server, "validatingadmissionpolicies").await
}

/// Every stored ValidatingAdmissionPolicyBinding.
pub(super) async fn bindings(server: &ApiServer) -> Vec<Arc<CachedObject>> {
    all(server, "validatingadmissionpolicybindings").await
}

fn named<'a>(
    objects: &'a [Arc<CachedObject>],
    name: &'a str,
) -> impl Iterator<Item = &'a Arc<CachedObject>> {
    objects
        .iter()
        .filter(move |o| o.pointer("/metadata/name").and_then(Value::as_str) == Some(name))
}

/// The Namespace `name`. A namespace the cache does not have yet (just created; admission
/// already checked that it exists) is waited for until the cache reaches the store's revision.
pub(super) async fn namespace(server: &ApiServer, name: &str) -> Option<Arc<CachedObject>> {
    let cache = cache(server, &prefix(server, "", "v1", "namespaces")).await;
    let key = format!("{}{name}", cache.prefix());
    if let Some(found) = named(&cache.snapshot(&key).1, name).next() {
        return Some(found.clone());
    }
    let head = server
        .inner
        .store
        .range(crate::store::RangeRequest {
            key: key.as_bytes().to_vec(),
            count_only: true,
            ..Default::default()
        })
        .await
        .ok()?;
    cache.wait_for(head.revision, FIRST_LIST).await;
    named(&cache.snapshot(&key).1, name).next().cloned()
}

/// The `group` and `version` of an `apiVersion`.
fn group_version(api_version: &str) -> (&str, &str) {
    api_version.split_once('/').unwrap_or(("", api_version))
}

/// The param objects a binding points at, as the reference's `CollectParams`: `[None]` when
/// the policy has no `paramKind` or the binding no `paramRef`; the object named, or those
/// selected, in the paramRef's namespace (else the request's) for a namespaced kind; an
/// empty list when none is found and `parameterNotFoundAction` is `Allow` (the binding is then
/// skipped); an error for a misconfiguration or when none is found under `Deny`.
pub(super) async fn params(
    server: &ApiServer,
    kind: Option<&ParamKind>,
    param_ref: Option<&ParamRef>,
    request_namespace: &str,
) -> Result<Vec<Option<Arc<CachedObject>>>, String> {
    let (Some(kind), Some(param_ref)) = (kind, param_ref) else { return Ok(vec![None]) };
    let api_version = kind.api_version.as_deref().unwrap_or_default();
    let kind_name = kind.kind.as_deref().unwrap_or_default();
    let (group, version) = group_version(api_version);
    let Some(info) = server.inner.registry.by_kind(group, version, kind_name) else {
        return Err(format!("paramKind kind `{api_version}, Kind={kind_name}` not known"));
    };
    let ref_namespace = param_ref.namespace.as_deref().unwrap_or_default();
    let scope = if info.namespaced {
        let namespace = if ref_namespace.is_empty() { request_namespace } else { ref_namespace };
        if namespace.is_empty() {
            return Err("cannot use namespaced paramRef in policy binding that matches \
                        cluster-scoped resources"
                .into());
        }
        format!("{}{namespace}/", info.storage_prefix)
    } else if !ref_namespace.is_empty() {
        return Err(
            "paramRef.namespace must not be provided for a cluster-scoped `paramKind`".into()
        );
    } else {
        info.storage_prefix.clone()
    };
    let cache = cache(server, &info.storage_prefix).await;
    let name = param_ref.name.as_deref().filter(|n| !n.is_empty());
    let found: Vec<Arc<CachedObject>> = match (name, &param_ref.selector) {
        (Some(_), Some(_)) => {
            return Err("paramRef.name and paramRef.selector are mutually exclusive".into())
        }
        (Some(name), None) => {
            let objects = cache.snapshot(&format!("{scope}{name}")).1;
            named(&objects, name).cloned().collect()
        }
        (None, Some(sel)) => {
            let objects = cache.snapshot(&scope).1;
            objects
                .into_iter()
                .filter(|o| selector::matches(sel, labels(Some(o)).as_ref()))
                .collect()
        }
        (None, None) => return Err("one of name or selector must be provided".into()),
    };
    if found.is_empty() && param_ref.parameter_not_found_action.as_deref() == Some("Deny") {
        return Err("no params found for policy binding with `Deny` parameterNotFoundAction".into());
    }
    Ok(found.into_iter().map(Some).collect())
}
