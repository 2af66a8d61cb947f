//! NamespaceLifecycle: no new objects in a missing or terminating namespace; the system
//! namespaces cannot be deleted.

use serde_json::{json, Value};

use super::super::meta;
use super::super::resource::ResourceInfo;
use super::super::status::{ApiError, ApiResult};
use crate::store::{RangeRequest, Store};

/// Namespaces that always exist and cannot be deleted.
pub const SYSTEM_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];

/// Rejects creating namespaced objects in a namespace that is missing or terminating.
pub async fn check_namespace(
    store: &dyn Store,
    info: &ResourceInfo,
    namespace: &str,
    name: &str,
) -> ApiResult<()> {
    let key = format!("/registry/namespaces/{namespace}");
    let found = store.range(RangeRequest { key: key.into_bytes(), ..Default::default() }).await?;
    let Some(kv) = found.kvs.first() else {
        let ns_info = namespace_info();
        return Err(ApiError::not_found(&ns_info, namespace));
    };
    let ns = meta::decode(kv).unwrap_or_default();
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
