//! The objects admission plugins consult on every write (the request's namespace, its service
//! account, LimitRanges, ResourceQuotas, PriorityClasses), read from the API server's watch
//! caches as the reference's plugins read their informers' listers: a pod create costs no
//! store read for them.
//!
//! A cache is used once it has listed and has caught up with this server's last write under
//! its prefix ([`write_marks`](super::super::write_marks)), waiting briefly for that write's
//! event when needed: a client that creates a LimitRange or a quota and then a pod gets the
//! pod checked against it. Otherwise (a cache still listing, or lagging past the wait) the
//! read goes to the store. A single object missing from the cache is looked up in the store
//! too, as the reference's NamespaceLifecycle and ServiceAccount plugins do a live lookup for
//! an object their informer has not seen yet (created through another server).

use std::sync::Arc;
use std::time::Duration;

use super::super::rest;
use super::super::server::ApiServer;
use super::super::status::ApiResult;
use super::super::watch_cache::{CachedObject, WatchCache};
use super::stored;

/// How long a read waits for the cache to show this server's last write under its prefix
/// before asking the store instead. The write's event is in flight, so this is an upper bound
/// for a loaded machine, not a typical wait.
const CATCH_UP: Duration = Duration::from_millis(500);

/// A built-in resource: group, version, plural.
pub type Resource<'a> = (&'a str, &'a str, &'a str);

/// The cache of `prefix` when it can answer for everything this server wrote under it.
async fn fresh(server: &ApiServer, prefix: &str) -> Option<Arc<WatchCache>> {
    let cache = server.inner.caches.get(&server.inner.store, prefix);
    if !cache.is_ready() {
        // Not listed yet (the first requests after a start): the store answers meanwhile.
        return None;
    }
    let mark = server.inner.caches.marks().get(prefix);
    if cache.revision() >= mark || cache.wait_for(mark, CATCH_UP).await {
        Some(cache)
    } else {
        tracing::debug!(%prefix, mark, "admission: watch cache lags, reading the store");
        None
    }
}

/// One object of `resource` (`namespace` for namespaced ones), if stored.
pub async fn get(
    server: &ApiServer,
    (group, version, plural): Resource<'_>,
    namespace: Option<&str>,
    name: &str,
) -> ApiResult<Option<Arc<CachedObject>>> {
    let Some(info) = server.inner.registry.resolve(group, version, plural) else {
        return Ok(None);
    };
    let key = info.storage_key(namespace, name);
    if let Some(cache) = fresh(server, &info.storage_prefix).await {
        if let Some(found) = cache.get(&key) {
            return Ok(Some(found));
        }
    }
    Ok(rest::read(server, &key).await?.map(|(obj, _)| CachedObject::new(obj)))
}

/// Every object of `resource` (in `namespace` only, for namespaced ones), in key order.
pub async fn list(
    server: &ApiServer,
    resource: Resource<'_>,
    namespace: Option<&str>,
) -> ApiResult<Vec<Arc<CachedObject>>> {
    let (group, version, plural) = resource;
    let Some(info) = server.inner.registry.resolve(group, version, plural) else {
        return Ok(Vec::new());
    };
    if let Some(cache) = fresh(server, &info.storage_prefix).await {
        let key_prefix = match namespace {
            Some(ns) => format!("{}{ns}/", info.storage_prefix),
            None => info.storage_prefix.clone(),
        };
        return Ok(cache.snapshot(&key_prefix).1);
    }
    let stored = stored::list(server, resource, namespace).await?;
    Ok(stored.into_iter().map(CachedObject::new).collect())
}

/// The objects' values.
pub fn values(objects: &[Arc<CachedObject>]) -> impl Iterator<Item = &serde_json::Value> {
    objects.iter().map(|object| &***object)
}

/// The store revision an object was last written at (its resourceVersion, which the cache and
/// the store both set from the key's mod revision).
pub fn mod_revision(obj: &CachedObject) -> Option<crate::store::Revision> {
    obj.pointer("/metadata/resourceVersion")?.as_str()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::apiserver::server::{ApiConfig, ApiServer};
    use crate::store::sqlite::{SqliteOptions, SqliteStore};
    use crate::store::{PutRequest, Store};

    const LIMIT_RANGES: Resource<'static> = ("", "v1", "limitranges");

    fn put(key: &str, name: &str) -> PutRequest {
        let value = json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": name}});
        PutRequest { key: key.into(), value: value.to_string().into_bytes(), ..Default::default() }
    }

    #[tokio::test]
    async fn reads_see_the_servers_own_writes_at_once_and_miss_nothing_stored() {
        let dir = tempfile::tempdir().expect("temp dir");
        let raw: Arc<dyn Store> = Arc::new(
            SqliteStore::open(dir.path().join("state.db"), SqliteOptions::default())
                .expect("store"),
        );
        let server = ApiServer::new(raw.clone(), ApiConfig::default(), Default::default());
        let prefix = "/registry/limitranges/";
        // The first read starts the cache (and is answered by the store meanwhile).
        assert!(list(&server, LIMIT_RANGES, Some("ns")).await.expect("list").is_empty());
        let cache = server.inner.caches.get(&server.inner.store, prefix);
        assert!(cache.wait_for(0, Duration::from_secs(5)).await, "cache lists");
        // Writes through the server are read back at once, each one.
        for n in 0..20 {
            let name = format!("lr-{n}");
            let written = server.inner.store.put(put(&format!("{prefix}ns/{name}"), &name));
            let rev = written.await.expect("put").revision;
            let got = list(&server, LIMIT_RANGES, Some("ns")).await.expect("list");
            assert_eq!(got.len(), n + 1, "after the write at {rev}");
            assert_eq!(mod_revision(&got[got.len() - 1]).map(|_| ()), Some(()));
            let one = get(&server, LIMIT_RANGES, Some("ns"), &name).await.expect("get");
            assert_eq!(one.and_then(|o| mod_revision(&o)), Some(rev));
        }
        // Another namespace's objects are not listed.
        raw.put(put(&format!("{prefix}other/x"), "x")).await.expect("put");
        assert_eq!(list(&server, LIMIT_RANGES, Some("ns")).await.expect("list").len(), 20);
        // An object written behind the server's back is still found by name (store lookup).
        raw.put(put(&format!("{prefix}ns/late"), "late")).await.expect("put");
        assert!(get(&server, LIMIT_RANGES, Some("ns"), "late").await.expect("get").is_some());
    }
}
