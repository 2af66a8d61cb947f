//! NamespaceLifecycle: no new objects in a missing or terminating namespace; the system
//! namespaces cannot be deleted. The namespace comes from the watch cache, with a store lookup
//! when the cache does not have it (see [`cached`](super::cached)).

use serde_json::{json, Value};

use super::super::resource::ResourceInfo;
use super::super::server::ApiServer;
use super::super::status::{ApiError, ApiResult};
use super::cached;

/// Namespaces that always exist and cannot be deleted.
pub const SYSTEM_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];

/// Rejects creating namespaced objects in a namespace that is missing or terminating.
pub async fn check_namespace(
    server: &ApiServer,
    info: &ResourceInfo,
    namespace: &str,
    name: &str,
) -> ApiResult<()> {
    let Some(ns) = cached::get(server, ("", "v1", "namespaces"), None, namespace).await? else {
        let ns_info = namespace_info();
        return Err(ApiError::not_found(&ns_info, namespace));
    };
    let terminating = ns.pointer("/metadata/deletionTimestamp").is_some()
        || ns.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating");
    if terminating {
        let mut err = ApiError::forbidden(
            info,
            name,
            &format!("unable to create new content in namespace {namespace} because it is being terminated"),
        );
        if let Some(details) = err.details.as_mut() {
            details["causes"] = json!([{
                "reason": "NamespaceTerminating",
                "message": format!("namespace {namespace} is being terminated"),
                "field": "metadata.namespace",
            }]);
        }
        return Err(err);
    }
    Ok(())
}

fn namespace_info() -> ResourceInfo {
    ResourceInfo {
        group: String::new(),
        version: "v1".into(),
        kind: "Namespace".into(),
        list_kind: "NamespaceList".into(),
        plural: "namespaces".into(),
        singular: "namespace".into(),
        namespaced: false,
        short_names: vec![],
        categories: vec![],
        verbs: vec![],
        subresources: vec![],
        storage_prefix: "/registry/namespaces/".into(),
        custom: false,
        ..Default::default()
    }
}
