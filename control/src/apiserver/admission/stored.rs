//! Reads of stored objects that admission plugins consult (a PriorityClass by name, every
//! StorageClass, a namespace's pods), straight from the store so they see the latest writes.

use serde_json::Value;

use super::super::meta;
use super::super::rest;
use super::super::server::ApiServer;
use super::super::status::ApiResult;
use super::super::watch_cache::prefix_end;
use crate::store::RangeRequest;

/// The storage prefix of a built-in resource, e.g. `/registry/priorityclasses/`.
fn prefix(server: &ApiServer, group: &str, version: &str, plural: &str) -> Option<String> {
    server.inner.registry.resolve(group, version, plural).map(|info| info.storage_prefix.clone())
}

/// One object of `group/version/plural` (`namespace` for namespaced ones), if stored.
pub async fn get(
    server: &ApiServer,
    (group, version, plural): (&str, &str, &str),
    namespace: Option<&str>,
    name: &str,
) -> ApiResult<Option<Value>> {
    let Some(prefix) = prefix(server, group, version, plural) else { return Ok(None) };
    let key = match namespace {
        Some(ns) => format!("{prefix}{ns}/{name}"),
        None => format!("{prefix}{name}"),
    };
    Ok(rest::read(server, &key).await?.map(|(obj, _)| obj))
}

/// Every object of `group/version/plural` (in `namespace` only, for namespaced ones).
pub async fn list(
    server: &ApiServer,
    (group, version, plural): (&str, &str, &str),
    namespace: Option<&str>,
) -> ApiResult<Vec<Value>> {
    let Some(prefix) = prefix(server, group, version, plural) else { return Ok(Vec::new()) };
    let prefix = match namespace {
        Some(ns) => format!("{prefix}{ns}/"),
        None => prefix,
    };
    let found = server
        .inner
        .store
        .range(RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: prefix_end(&prefix),
            ..Default::default()
        })
        .await?;
    Ok(found.kvs.iter().filter_map(meta::decode).collect())
}
