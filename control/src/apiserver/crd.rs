//! CustomResourceDefinitions: keeping the served resources in step with the stored CRDs.
//! A CRD written through the API registers its resources at once (so a client can create custom
//! objects right after the CRD, as with the reference); the server also registers every stored
//! CRD at start. Deleting a CRD unregisters its resources and removes its custom objects.

use serde_json::{json, Value};

use super::meta;
use super::resource::ResourceInfo;
use super::server::ApiServer;
use super::watch_cache::prefix_end;
use crate::store::{DeleteRangeRequest, RangeRequest};

/// Storage prefix of CustomResourceDefinition objects.
const CRD_PREFIX: &str = "/registry/apiextensions.k8s.io/customresourcedefinitions/";

/// Whether `info` is the CustomResourceDefinition resource itself.
pub fn is_crd(info: &ResourceInfo) -> bool {
    info.group == "apiextensions.k8s.io" && info.plural == "customresourcedefinitions"
}

fn group_plural(crd: &Value) -> Option<(String, String)> {
    let group = crd.pointer("/spec/group")?.as_str()?.to_string();
    let plural = crd.pointer("/spec/names/plural")?.as_str()?.to_string();
    Some((group, plural))
}

/// The status the server gives a CRD whose names it accepted: Established, NamesAccepted.
pub fn established_status(crd: &Value) -> Value {
    let now = meta::now_rfc3339();
    let stored: Vec<Value> = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .filter_map(|v| v.get("name").cloned())
        .collect();
    let mut names = crd.pointer("/spec/names").cloned().unwrap_or_else(|| json!({}));
    if let (Some(map), Some(kind)) =
        (names.as_object_mut(), crd.pointer("/spec/names/kind").and_then(Value::as_str))
    {
        map.entry("singular").or_insert_with(|| json!(kind.to_lowercase()));
        map.entry("listKind").or_insert_with(|| json!(format!("{kind}List")));
    }
    json!({
        "acceptedNames": names,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": now},
        ],
        "storedVersions": stored,
    })
}

/// Serves the resources a CRD defines (replacing what an older version of it defined).
pub fn register(server: &ApiServer, crd: &Value) {
    let Some((group, plural)) = group_plural(crd) else { return };
    match ResourceInfo::from_crd(crd) {
        Ok(infos) => {
            server.inner.registry.remove_custom(&group, &plural);
            for info in infos {
                // Start the watch cache before anyone can create objects of the new kind, so
                // a watch from any later resourceVersion can be served.
                server.inner.caches.get(&server.inner.store, &info.storage_prefix);
                server.inner.registry.insert(info);
            }
            tracing::info!(%group, %plural, "custom resource registered");
        }
        Err(err) => tracing::warn!(%group, %plural, %err, "CRD not served"),
    }
}

/// Stops serving a deleted CRD's resources and removes its custom objects.
pub async fn unregister(server: &ApiServer, crd: &Value) {
    let Some((group, plural)) = group_plural(crd) else { return };
    server.inner.registry.remove_custom(&group, &plural);
    let prefix = format!("/registry/{group}/{plural}/");
    let deleted = server
        .inner
        .store
        .delete_range(DeleteRangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: prefix_end(&prefix),
            prev_kv: false,
        })
        .await;
    if let Err(err) = deleted {
        tracing::warn!(%group, %plural, %err, "removing the custom objects of a deleted CRD");
    }
    server.inner.caches.remove(&prefix);
    tracing::info!(%group, %plural, "custom resource unregistered");
}

/// Registers every stored CRD (at start).
pub async fn load_all(server: &ApiServer) -> Result<usize, crate::store::StoreError> {
    let resp = server
        .inner
        .store
        .range(RangeRequest {
            key: CRD_PREFIX.as_bytes().to_vec(),
            range_end: prefix_end(CRD_PREFIX),
            ..Default::default()
        })
        .await?;
    let crds: Vec<Value> = resp.kvs.iter().filter_map(meta::decode).collect();
    for crd in &crds {
        register(server, crd);
    }
    Ok(crds.len())
}
