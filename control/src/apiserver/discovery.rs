//! Discovery documents: the legacy `/api`, `/apis`, `/apis/<group>`, `/apis/<group>/<version>`
//! forms and the aggregated `apidiscovery.k8s.io/v2` form, built from the resource catalogue.

use serde_json::{json, Value};

use super::resource::Registry;

/// The `/api` APIVersions document.
pub fn api_versions() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
}

/// The `/apis` APIGroupList document.
pub fn api_group_list(_registry: &Registry) -> Value {
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})
}

/// The `/apis/<group>` APIGroup document, or `None` when the group is not served.
pub fn api_group(_registry: &Registry, _group: &str) -> Option<Value> {
    None
}

/// The APIResourceList of one group version, or `None` when it is not served.
pub fn api_resource_list(_registry: &Registry, _group: &str, _version: &str) -> Option<Value> {
    None
}

/// The aggregated discovery document (`APIGroupDiscoveryList`) for `/api` (legacy) or `/apis`.
pub fn aggregated(_registry: &Registry, _legacy: bool) -> Value {
    json!({"apiVersion": "apidiscovery.k8s.io/v2", "kind": "APIGroupDiscoveryList", "items": []})
}
