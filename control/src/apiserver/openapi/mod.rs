//! OpenAPI for every served type: `/openapi/v3` (an index of group versions, each with a hash)
//! and `/openapi/v3/api/v1`, `/openapi/v3/apis/<group>/<version>` (one document each), and
//! `/openapi/v2` in JSON or gnostic protobuf. kubectl reads them for `explain`, for deciding
//! whether the server validates fields (`fieldValidation` on PATCH) and, before 1.27, for
//! client-side validation.
//!
//! Schemas are generated from the k8s-openapi types ([`catalogue`]) and from CRDs ([`custom`]);
//! [`document`] and [`v2`] assemble documents, [`gnostic`] encodes v2 in protobuf, and
//! [`fields`] uses the same schemas for server-side `fieldValidation` of built-in kinds.
//! Documents are rendered on first request and cached by a fingerprint of the resources they
//! describe, so a CRD change re-renders only its group version (and v2).
//!
//! Caching follows the reference (kube-openapi's handler3): every document has an `ETag` (the
//! SHA-512 of its bytes, which is also the index's `hash`); a request whose `hash` query matches
//! is answered with `Cache-Control: public, immutable`, a stale hash is redirected to the
//! current one, and `If-None-Match` gets a 304.

pub mod catalogue;
pub mod custom;
pub mod document;
pub mod fields;
pub mod gnostic;
pub mod paths;
pub mod v2;

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

use super::body::ApiBody;
use super::request::Query;
use super::resource::{Registry, ResourceInfo};
use super::status::{ApiError, ApiResult};

/// The media type of OpenAPI v2 in protobuf, as clients ask for it.
const PROTO_V2_ACCEPT: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
/// The `Content-Type` the reference answers protobuf v2 with.
const PROTO_V2_CONTENT_TYPE: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// One rendered document and its hash (uppercase hex SHA-512 of the bytes).
#[derive(Debug)]
pub struct Rendered {
    pub bytes: Bytes,
    pub hash: String,
}

impl Rendered {
    fn new(bytes: Vec<u8>) -> Arc<Rendered> {
        let digest = ring::digest::digest(&ring::digest::SHA512, &bytes);
        let hash = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
        Arc::new(Rendered { bytes: Bytes::from(bytes), hash })
    }

    fn json(value: &Value) -> Arc<Rendered> {
        Rendered::new(serde_json::to_vec(value).unwrap_or_default())
    }
}

#[derive(Default)]
struct Cache {
    /// Index key (`apis/apps/v1`) → fingerprint of its resources and the document.
    v3: HashMap<String, (u64, Arc<Rendered>)>,
    /// Fingerprint of every resource, the JSON document and its protobuf form once asked for.
    v2: Option<(u64, Arc<Rendered>, Option<Arc<Rendered>>)>,
}

/// The rendered OpenAPI documents of one API server; cheap to clone.
#[derive(Clone, Default)]
pub struct OpenApi {
    cache: Arc<Mutex<Cache>>,
}

impl std::fmt::Debug for OpenApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenApi").finish_non_exhaustive()
    }
}

/// A hash of what a document says about `resources`.
fn fingerprint(resources: &[Arc<ResourceInfo>]) -> u64 {
    let mut hasher = DefaultHasher::new();
    for r in resources {
        (&r.group, &r.version, &r.plural, &r.kind, &r.list_kind, r.namespaced).hash(&mut hasher);
        (&r.verbs, &r.subresources).hash(&mut hasher);
        r.schema.as_ref().map(Value::to_string).hash(&mut hasher);
    }
    hasher.finish()
}

impl OpenApi {
    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        // Entries are replaced whole, so a poisoned lock still holds consistent data.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The v3 document of each group version, by index key, rendering what changed.
    pub fn group_versions(&self, registry: &Registry) -> Vec<(String, Arc<Rendered>)> {
        let groups = document::by_group_version(registry.all());
        let mut cache = self.lock();
        cache.v3.retain(|key, _| groups.contains_key(key));
        groups
            .into_iter()
            .map(|(key, resources)| {
                let print = fingerprint(&resources);
                let rendered = match cache.v3.get(&key) {
                    Some((p, rendered)) if *p == print => rendered.clone(),
                    _ => {
                        let rendered = Rendered::json(&document::group_version(&resources));
                        cache.v3.insert(key.clone(), (print, rendered.clone()));
                        rendered
                    }
                };
                (key, rendered)
            })
            .collect()
    }

    /// The `/openapi/v3` index.
    pub fn index(&self, registry: &Registry) -> Value {
        let paths: serde_json::Map<String, Value> = self
            .group_versions(registry)
            .into_iter()
            .map(|(key, rendered)| {
                let url = format!("/openapi/v3/{key}?hash={}", rendered.hash);
                (key, json!({"serverRelativeURL": url}))
            })
            .collect();
        json!({"paths": paths})
    }

    /// The v2 document, in JSON or protobuf.
    pub fn v2(&self, registry: &Registry, protobuf: bool) -> Arc<Rendered> {
        let resources = registry.all();
        let print = fingerprint(&resources);
        let mut cache = self.lock();
        let stale = !matches!(&cache.v2, Some((p, _, _)) if *p == print);
        if stale {
            cache.v2 = Some((print, Rendered::json(&v2::document(&resources)), None));
        }
        let Some((_, json_doc, proto)) = cache.v2.as_mut() else {
            unreachable!("the v2 document was just rendered")
        };
        if !protobuf {
            return json_doc.clone();
        }
        if let Some(proto) = proto {
            return proto.clone();
        }
        let value: Value = serde_json::from_slice(&json_doc.bytes).unwrap_or(Value::Null);
        let rendered = Rendered::new(prost::Message::encode_to_vec(&gnostic::document(&value)));
        *proto = Some(rendered.clone());
        rendered
    }
}

/// Which form of v2 the `Accept` header asks for (the first known entry wins; JSON by default).
fn wants_protobuf(headers: &HeaderMap) -> bool {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    for entry in accept.split(',') {
        let base = entry.split(';').next().unwrap_or("").trim();
        if base == PROTO_V2_ACCEPT || base == PROTO_V2_CONTENT_TYPE {
            return true;
        }
        if matches!(base, "application/json" | "*/*" | "application/*") {
            return false;
        }
    }
    false
}

fn respond_document(
    rendered: &Rendered,
    content_type: &'static str,
    headers: &HeaderMap,
) -> Response<ApiBody> {
    let etag = format!("\"{}\"", rendered.hash);
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag || tag.trim() == "*"));
    let body = if not_modified { Bytes::new() } else { rendered.bytes.clone() };
    let mut response = Response::new(Full::new(body).boxed_unsync());
    if not_modified {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
    }
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(value) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, value);
    }
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    response
}

/// Answers `/openapi/<path>` (`path` without the prefix: `v2`, `v3`, `v3/apis/apps/v1`).
pub async fn respond(
    openapi: &OpenApi,
    registry: &Arc<Registry>,
    path: &str,
    query: &Query,
    headers: &HeaderMap,
) -> ApiResult<Response<ApiBody>> {
    // Rendering is CPU work of tens of milliseconds (more on first use): off the executor.
    let (openapi, registry) = (openapi.clone(), registry.clone());
    let path = path.to_string();
    let hash = query.get("hash").map(str::to_string);
    let headers = headers.clone();
    let job = move || -> ApiResult<Response<ApiBody>> {
        match path.as_str() {
            "v2" => {
                let protobuf = wants_protobuf(&headers);
                let rendered = openapi.v2(&registry, protobuf);
                let content_type =
                    if protobuf { PROTO_V2_CONTENT_TYPE } else { "application/json" };
                Ok(respond_document(&rendered, content_type, &headers))
            }
            "v3" => {
                let rendered = Rendered::json(&openapi.index(&registry));
                Ok(respond_document(&rendered, "application/json", &headers))
            }
            _ => {
                let key = path.strip_prefix("v3/").ok_or_else(ApiError::path_not_found)?;
                let rendered = openapi
                    .group_versions(&registry)
                    .into_iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, r)| r)
                    .ok_or_else(ApiError::path_not_found)?;
                match hash.as_deref() {
                    Some(h) if !h.is_empty() && h != rendered.hash => {
                        // A stale hash: send the client to the current document.
                        let location = format!("/openapi/v3/{key}?hash={}", rendered.hash);
                        let mut response = Response::new(Full::new(Bytes::new()).boxed_unsync());
                        *response.status_mut() = StatusCode::MOVED_PERMANENTLY;
                        if let Ok(value) = HeaderValue::from_str(&location) {
                            response.headers_mut().insert(header::LOCATION, value);
                        }
                        Ok(response)
                    }
                    Some(h) if !h.is_empty() => {
                        let mut response =
                            respond_document(&rendered, "application/json", &headers);
                        let expires = httpdate_in_a_year();
                        let h = response.headers_mut();
                        h.insert(
                            header::CACHE_CONTROL,
                            HeaderValue::from_static("public, immutable"),
                        );
                        if let Ok(value) = HeaderValue::from_str(&expires) {
                            h.insert(header::EXPIRES, value);
                        }
                        Ok(response)
                    }
                    _ => Ok(respond_document(&rendered, "application/json", &headers)),
                }
            }
        }
    };
    tokio::task::spawn_blocking(job)
        .await
        .map_err(|_| ApiError::internal("rendering the OpenAPI document failed"))?
}

/// An HTTP date one year from now (the `Expires` of a document fetched by its hash).
fn httpdate_in_a_year() -> String {
    let when = time::OffsetDateTime::now_utc() + time::Duration::days(365);
    let weekday = &when.weekday().to_string()[..3];
    let month = &when.month().to_string()[..3];
    format!(
        "{weekday}, {:02} {month} {} {:02}:{:02}:{:02} GMT",
        when.day(),
        when.year(),
        when.hour(),
        when.minute(),
        when.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_hashes_change_only_for_the_group_version_that_changed() {
        let registry = Registry::builtin();
        let openapi = OpenApi::default();
        let before = openapi.index(&registry);
        let apps =
            before["paths"]["apis/apps/v1"]["serverRelativeURL"].as_str().unwrap().to_string();
        assert!(apps.starts_with("/openapi/v3/apis/apps/v1?hash="), "{apps}");
        assert!(before["paths"]["api/v1"].is_object());

        let crd = json!({"spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object"}}}]}});
        for info in ResourceInfo::from_crd(&crd).unwrap() {
            registry.insert(info);
        }
        let after = openapi.index(&registry);
        assert_eq!(after["paths"]["apis/apps/v1"]["serverRelativeURL"], apps.as_str());
        assert!(after["paths"]["apis/example.com/v1"].is_object());
    }

    #[test]
    fn expires_is_an_http_date() {
        let date = httpdate_in_a_year();
        assert!(date.ends_with(" GMT") && date.len() == 29, "{date}");
    }
}
