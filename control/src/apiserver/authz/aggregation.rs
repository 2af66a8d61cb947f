//! ClusterRole aggregation (the reference's `clusterrole-aggregation` controller): a ClusterRole
//! with an `aggregationRule` gets as its rules the union of the rules of every other ClusterRole
//! its label selectors match, so `admin`, `edit` and `view` grow when an extension ships a role
//! labelled `rbac.authorization.k8s.io/aggregate-to-view: "true"`.
//!
//! Level-triggered: each pass computes every aggregated role's rules from the ClusterRoles in
//! the watch cache and writes the ones that differ. A pass runs at start-up (before the server
//! serves) and after every change to a ClusterRole.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use http::{Method, StatusCode};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use super::rbac::GROUP;
use crate::apiserver::authn::User;
use crate::apiserver::server::{ApiServer, Inner};
use crate::apiserver::status::ApiError;
use crate::apiserver::watch_cache::CachedObject;
use crate::controllers::util::selector;

fn labels(role: &Value) -> BTreeMap<String, String> {
    role.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}

/// The rules `role` aggregates from `all` (every ClusterRole), or `None` when it does not
/// aggregate. Roles are taken in name order and each rule once, as the reference does.
pub fn aggregated_rules(role: &Value, all: &[Arc<CachedObject>]) -> Option<Vec<Value>> {
    let selectors = role.pointer("/aggregationRule/clusterRoleSelectors")?.as_array()?;
    // A selector that does not parse selects nothing (rather than everything).
    let selectors: Vec<LabelSelector> =
        selectors.iter().filter_map(|s| serde_json::from_value(s.clone()).ok()).collect();
    let name = role.pointer("/metadata/name");
    let mut sources: Vec<&Arc<CachedObject>> = all
        .iter()
        .filter(|other| other.pointer("/metadata/name") != name)
        .filter(|other| {
            let labels = labels(other);
            selectors.iter().any(|s| selector::matches(s, Some(&labels)))
        })
        .collect();
    sources.sort_by_key(|r| r.pointer("/metadata/name").and_then(Value::as_str).map(String::from));
    let mut rules: Vec<Value> = Vec::new();
    for source in sources {
        for rule in source.get("rules").and_then(Value::as_array).into_iter().flatten() {
            if !rules.contains(rule) {
                rules.push(rule.clone());
            }
        }
    }
    Some(rules)
}

fn cluster_roles_prefix(server: &ApiServer) -> String {
    server
        .inner
        .registry
        .resolve(GROUP, "v1", "clusterroles")
        .map(|info| info.storage_prefix.clone())
        .unwrap_or_else(|| "/registry/clusterroles/".to_string())
}

/// One pass: writes every aggregated ClusterRole whose rules are not its aggregate.
pub async fn reconcile_all(server: &ApiServer) -> Result<(), ApiError> {
    let cache = server.inner.caches.get(&server.inner.store, &cluster_roles_prefix(server));
    let (_, roles) = cache.snapshot(cache.prefix());
    for role in &roles {
        let Some(rules) = aggregated_rules(role, &roles) else { continue };
        if role.get("rules").and_then(Value::as_array).map_or(rules.is_empty(), |r| *r == rules) {
            continue;
        }
        let mut updated = (**role).clone();
        updated["rules"] = json!(rules);
        let name = role.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        let path = format!("/apis/{GROUP}/v1/clusterroles/{name}");
        let request = http::Request::builder()
            .method(Method::PUT)
            .uri(&path)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(updated.to_string())))
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let response = server.handle(request, Some(User::system_admin())).await;
        match response.status() {
            // A conflict means the role changed meanwhile: the next pass sees the change.
            StatusCode::OK | StatusCode::CONFLICT | StatusCode::NOT_FOUND => {}
            status => {
                return Err(ApiError::internal(format!("aggregating {path}: {status}")));
            }
        }
    }
    Ok(())
}

/// Runs a pass after every ClusterRole change, for as long as the server lives.
pub fn start(server: &ApiServer) {
    let weak: Weak<Inner> = Arc::downgrade(&server.inner);
    let prefix = cluster_roles_prefix(server);
    let cache = server.inner.caches.get(&server.inner.store, &prefix);
    tokio::spawn(async move {
        loop {
            let Ok(mut subscription) = cache.subscribe(Some(cache.revision())) else {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                continue;
            };
            // A pass first: changes before the subscription are covered too.
            loop {
                let Some(inner) = weak.upgrade() else { return };
                let server = ApiServer { inner };
                if let Err(err) = reconcile_all(&server).await {
                    tracing::warn!(%err, "clusterrole aggregation failed; retrying on the next change");
                }
                drop(server);
                match subscription.live.recv().await {
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                }
                // Take everything that queued up meanwhile: one pass covers it.
                while subscription.live.try_recv().is_ok() {}
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(name: &str, labels: Value, rules: Value) -> Arc<CachedObject> {
        CachedObject::new(json!({"metadata": {"name": name, "labels": labels}, "rules": rules}))
    }

    #[test]
    fn aggregated_rules_are_the_union_of_the_selected_roles() {
        let view = json!({"metadata": {"name": "view"}, "aggregationRule": {"clusterRoleSelectors": [
            {"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}}]}});
        let get = json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]});
        let list = json!({"verbs": ["list"], "apiGroups": ["x"], "resources": ["widgets"]});
        let all = vec![
            role(
                "b-ext",
                json!({"rbac.authorization.k8s.io/aggregate-to-view": "true"}),
                json!([list, get]),
            ),
            role(
                "a-core",
                json!({"rbac.authorization.k8s.io/aggregate-to-view": "true"}),
                json!([get]),
            ),
            role(
                "other",
                json!({}),
                json!([{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]),
            ),
            CachedObject::new(view.clone()),
        ];
        assert_eq!(aggregated_rules(&view, &all), Some(vec![get.clone(), list.clone()]));
        assert_eq!(aggregated_rules(&all[0], &all), None, "no aggregationRule");
        let broken = json!({"metadata": {"name": "x"}, "aggregationRule": {"clusterRoleSelectors": [
            {"matchExpressions": "nonsense"}]}});
        assert_eq!(aggregated_rules(&broken, &all), Some(vec![]));
    }
}
