//! LIST: from the watch cache when it can (no limit, or `resourceVersion=0`, or
//! `NotOlderThan`), from the store when the request needs an exact historic revision
//! (`resourceVersionMatch=Exact`). Pages (`limit` + `continue`) show one revision across pages:
//! they come from the cache while it still holds that revision's objects (nothing of the
//! resource changed since the first page), else from the store at that revision.
//!
//! Continue tokens are the reference's: base64 of `{"v":"meta.k8s.io/v1","rv":R,"start":K}`,
//! where the next page reads the store at revision R from key K on; a compacted R is 410 Expired.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use http::StatusCode;
use serde_json::{json, Value};

use super::body::{self, ApiBody};
use super::request::Output;
use super::selector::{FieldSelector, LabelSelector};
use super::server::{ApiServer, Call};
use super::status::{ApiError, ApiResult};
use super::watch_cache::{prefix_end, CachedObject};
use super::{meta, rest, strategy, table};
use crate::store::{RangeRequest, Revision, StoreError};

/// How long a list waits for the cache to reach the revision it must show.
const CACHE_WAIT: Duration = Duration::from_secs(3);

/// The selectors and key range of a list or watch request.
pub(crate) struct Filter {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    /// Store key prefix of the namespace (or of the whole resource).
    pub key_prefix: String,
}

impl Filter {
    /// Parses the selectors of `call`.
    pub fn of(call: &Call) -> ApiResult<Filter> {
        let labels = LabelSelector::parse(call.query.get("labelSelector").unwrap_or(""))?;
        let fields =
            FieldSelector::parse(call.query.get("fieldSelector").unwrap_or(""), &call.info)?;
        let key_prefix = match call.namespace() {
            Some(ns) => format!("{}{ns}/", call.info.storage_prefix),
            None => call.info.storage_prefix.clone(),
        };
        Ok(Filter { labels, fields, key_prefix })
    }

    /// Whether an object passes both selectors.
    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }
}

/// The store's current revision (a point read of a key that never exists: no scan).
pub(crate) async fn store_revision(server: &ApiServer) -> ApiResult<Revision> {
    let resp = server
        .inner
        .store
        .range(RangeRequest {
            key: b"/registry/\0revision".to_vec(),
            count_only: true,
            ..Default::default()
        })
        .await?;
    Ok(resp.revision)
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    v: String,
    rv: Revision,
    start: String,
}

fn encode_continue(rv: Revision, start: &str) -> String {
    let token = ContinueToken { v: "meta.k8s.io/v1".into(), rv, start: start.to_string() };
    base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&token).unwrap_or_default())
}

fn decode_continue(token: &str) -> ApiResult<ContinueToken> {
    let bad = || {
        ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
    };
    let bytes = base64::engine::general_purpose::STANDARD.decode(token).map_err(|_| bad())?;
    let token: ContinueToken = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if token.v != "meta.k8s.io/v1" || token.rv <= 0 || token.start.contains("..") {
        return Err(bad());
    }
    Ok(token)
}

/// `GET` of a collection.
pub(crate) async fn list(server: &ApiServer, call: Call) -> ApiResult<http::Response<ApiBody>> {
    let filter = Filter::of(&call)?;
    let rv = call.query.get("resourceVersion").unwrap_or("").to_string();
    let rv_match = call.query.get("resourceVersionMatch").unwrap_or("").to_string();
    let limit = call.query.int("limit")?.unwrap_or(0).max(0);
    let continue_token = call.query.get("continue").filter(|c| !c.is_empty()).map(String::from);
    let parsed_rv = meta::parse_resource_version(Some(&rv)).map_err(ApiError::bad_request)?;
    if !rv_match.is_empty() && rv.is_empty() {
        return Err(ApiError::bad_request("resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided"));
    }
    if !matches!(rv_match.as_str(), "" | "NotOlderThan" | "Exact") {
        return Err(ApiError::bad_request(format!("resourceVersionMatch: Unsupported value: \"{rv_match}\": supported values: \"Exact\", \"NotOlderThan\"")));
    }
    if continue_token.is_some() && !rv.is_empty() && rv != "0" {
        return Err(ApiError::bad_request(
            "specifying resource version is not allowed when using continue",
        ));
    }
    if rv_match == "Exact" && parsed_rv == Some(0) {
        return Err(ApiError::bad_request(
            "resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\"",
        ));
    }

    let listed = if let Some(token) = continue_token {
        let token = decode_continue(&token)?;
        let start = format!("{}{}", call.info.storage_prefix, token.start);
        if !start.starts_with(&filter.key_prefix) {
            return Err(ApiError::bad_request(
                "continue key is not valid: it is for another namespace",
            ));
        }
        ensure_not_compacted(server, token.rv).await?;
        match cached_page(server, &call, &filter, Some(token.rv), &start, limit).await? {
            Some(listed) => listed,
            None => Listed::Page(
                page(server, &call, &filter, token.rv, &start, limit)
                    .await
                    .map_err(expired_continue)?,
            ),
        }
    } else if rv_match == "Exact" || (limit > 0 && rv != "0" && rv_match != "NotOlderThan") {
        let start = filter.key_prefix.clone();
        let cached = if rv_match == "Exact" {
            None
        } else {
            cached_page(server, &call, &filter, None, &start, limit).await?
        };
        match cached {
            Some(listed) => listed,
            None => {
                let at = if rv_match == "Exact" { parsed_rv.unwrap_or(0) } else { 0 };
                Listed::Page(page(server, &call, &filter, at, &start, limit).await?)
            }
        }
    } else {
        from_cache(server, &call, &filter, parsed_rv, &rv).await?
    };
    let (revision, items, next, remaining) = match listed {
        Listed::Cached { revision, objects, next, remaining } => {
            let api_version = call.info.api_version();
            if call.output == Output::Json
                && objects.iter().all(|o| o.is_as(&api_version, &call.info.kind))
            {
                let more = next.map(|next| (next, remaining));
                return Ok(encoded_list(&call, revision, &objects, more));
            }
            let items = objects
                .iter()
                .map(|o| {
                    let mut o = Value::clone(o);
                    strategy::present(&call.info, &mut o);
                    o
                })
                .collect();
            (revision, items, next, remaining)
        }
        Listed::Page(page) => page,
    };

    let mut metadata = json!({ "resourceVersion": revision.to_string() });
    if let Some(next) = next {
        metadata["continue"] = json!(next);
        if let Some(remaining) = remaining {
            metadata["remainingItemCount"] = json!(remaining);
        }
    }
    if call.output == Output::Table {
        let mut table = table::to_table(&call.info, &items, &rest::table_options(&call));
        table["metadata"] = metadata;
        return Ok(body::object_response(StatusCode::OK, &table, Output::Json));
    }
    // `items` is moved in, not serialised into a copy (`json!` would clone every object).
    let mut list = json!({
        "kind": call.info.list_kind,
        "apiVersion": call.info.api_version(),
        "metadata": metadata,
    });
    list["items"] = Value::Array(items);
    Ok(body::object_response(StatusCode::OK, &list, call.output))
}

/// A continue token's revision must still be in the store's history, even when the watch cache
/// could answer the page (its objects may not have changed since): the reference answers 410
/// once compaction has passed the token, and clients restart the list on it.
async fn ensure_not_compacted(server: &ApiServer, rv: Revision) -> ApiResult<()> {
    // A count-only read at that revision: the store refuses it once compacted (both backends).
    let probe = RangeRequest {
        key: b"/registry/\0revision".to_vec(),
        count_only: true,
        revision: rv,
        ..Default::default()
    };
    server.inner.store.range(probe).await.map_err(|e| expired_continue(e.into()))?;
    Ok(())
}

fn expired_continue(err: ApiError) -> ApiError {
    if err.code == 410 {
        ApiError::gone("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.")
    } else {
        err
    }
}

type Page = (Revision, Vec<Value>, Option<String>, Option<i64>);

/// What a list found.
enum Listed {
    /// The matching cached objects as they were at `revision`, and where the next page starts.
    Cached {
        revision: Revision,
        objects: Vec<Arc<CachedObject>>,
        next: Option<String>,
        remaining: Option<i64>,
    },
    /// A consistent page read from the store.
    Page(Page),
}

/// A JSON list spliced together from the objects' shared encodings (a 10k-pod list costs no
/// serialisation of the pods, only copying their bytes).
fn encoded_list(
    call: &Call,
    revision: Revision,
    objects: &[Arc<CachedObject>],
    more: Option<(String, Option<i64>)>,
) -> http::Response<ApiBody> {
    let mut metadata = json!({ "resourceVersion": revision.to_string() });
    if let Some((next, remaining)) = more {
        metadata["continue"] = json!(next);
        if let Some(remaining) = remaining {
            metadata["remainingItemCount"] = json!(remaining);
        }
    }
    let head = json!({
        "kind": call.info.list_kind,
        "apiVersion": call.info.api_version(),
        "metadata": metadata,
    });
    let mut out = serde_json::to_vec(&head).unwrap_or_default();
    // Reopen the object to append `items` (the head always ends with its closing brace).
    out.pop();
    let size: usize = objects.iter().map(|o| o.json().len() + 1).sum();
    out.reserve(size + 16);
    out.extend_from_slice(b",\"items\":[");
    for (i, object) in objects.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(object.json());
    }
    out.extend_from_slice(b"]}");
    body::json_response(StatusCode::OK, out)
}

/// Lists from the watch cache after it has caught up with what the request must see.
async fn from_cache(
    server: &ApiServer,
    call: &Call,
    filter: &Filter,
    parsed_rv: Option<Revision>,
    rv: &str,
) -> ApiResult<Listed> {
    let cache = server.inner.caches.get(&server.inner.store, &call.info.storage_prefix);
    let wanted = match parsed_rv {
        // A consistent read: everything committed before the request.
        None => Some(store_revision(server).await?),
        Some(0) => None,
        Some(n) => Some(n),
    };
    let ready = cache.wait_for(wanted.unwrap_or(0), CACHE_WAIT).await;
    if !ready {
        if parsed_rv.is_none() {
            // The cache lags (e.g. still re-listing): serve the consistent read from the store.
            let start = filter.key_prefix.clone();
            return Ok(Listed::Page(page(server, call, filter, 0, &start, 0).await?));
        }
        return Err(ApiError::timeout(format!(
            "Too large resource version: {rv}, current: {}",
            cache.revision()
        )));
    }
    let (revision, mut objects) = cache.snapshot(&filter.key_prefix);
    objects.retain(|o| filter.matches(o));
    Ok(Listed::Cached { revision, objects, next: None, remaining: None })
}

/// A page of a paginated list from the watch cache, when the cache holds the state the page
/// must show: the store's at the continue token's revision `at` (nothing of the resource
/// changed since), or for a first page (`at` = `None`) at least what the store has now, as a
/// consistent read. The page is then exactly the store's (same objects, revision and continue
/// token) without reading or encoding anything; `None` sends the request to the store. Unlike
/// the store, the cache still serves a revision compaction has passed if it has not changed
/// since.
async fn cached_page(
    server: &ApiServer,
    call: &Call,
    filter: &Filter,
    at: Option<Revision>,
    start: &str,
    limit: i64,
) -> ApiResult<Option<Listed>> {
    let cache = server.inner.caches.get(&server.inner.store, &call.info.storage_prefix);
    if at.is_none() && !cache.wait_for(store_revision(server).await?, CACHE_WAIT).await {
        return Ok(None);
    }
    let limit = usize::try_from(limit).unwrap_or(0);
    let keep = |o: &Value| filter.matches(o);
    let Some(page) = cache.page(at, &filter.key_prefix, start, limit, keep) else {
        return Ok(None);
    };
    let next = page.next.map(|key| {
        let start = format!("{}\u{0}", key.trim_start_matches(&call.info.storage_prefix));
        encode_continue(page.revision, &start)
    });
    // As from the store: the count is only exact when no selector drops items.
    let unfiltered = filter.labels.is_empty() && filter.fields.is_empty();
    let remaining = (next.is_some() && unfiltered).then_some(page.remaining as i64);
    Ok(Some(Listed::Cached { revision: page.revision, objects: page.objects, next, remaining }))
}

/// One page read from the store at revision `at` (0 = now), from key `start`.
async fn page(
    server: &ApiServer,
    call: &Call,
    filter: &Filter,
    at: Revision,
    start: &str,
    limit: i64,
) -> ApiResult<Page> {
    let end = prefix_end(&filter.key_prefix);
    let mut key = start.as_bytes().to_vec();
    let mut revision = at;
    let mut items = Vec::new();
    // Selectors can drop items: keep reading batches until the page is full or the range ends.
    let batch = if limit > 0 { limit.max(64) } else { 0 };
    loop {
        let resp = server
            .inner
            .store
            .range(RangeRequest {
                key: key.clone(),
                range_end: end.clone(),
                limit: batch,
                revision,
                ..Default::default()
            })
            .await
            .map_err(|e| match e {
                StoreError::Compacted { .. } | StoreError::FutureRevision => {
                    ApiError::gone(format!("too old resource version: {at}"))
                }
                other => other.into(),
            })?;
        if revision == 0 {
            revision = resp.revision;
        }
        let count = resp.count;
        let more = resp.more;
        for (i, kv) in resp.kvs.iter().enumerate() {
            let Some(mut obj) = meta::decode(kv) else { continue };
            if !filter.matches(&obj) {
                continue;
            }
            strategy::present(&call.info, &mut obj);
            items.push(obj);
            if limit > 0 && items.len() as i64 == limit {
                let rest_in_batch = resp.kvs.len() - i - 1;
                if rest_in_batch == 0 && !more {
                    return Ok((revision, items, None, None));
                }
                let key_str = String::from_utf8_lossy(&kv.key).into_owned();
                let next_start =
                    format!("{}\u{0}", key_str.trim_start_matches(&call.info.storage_prefix));
                let remaining = (filter.labels.is_empty() && filter.fields.is_empty())
                    .then(|| count - (i as i64 + 1));
                return Ok((
                    revision,
                    items,
                    Some(encode_continue(revision, &next_start)),
                    remaining,
                ));
            }
        }
        match (more, resp.kvs.last()) {
            (true, Some(last)) => {
                key = last.key.clone();
                key.push(0);
            }
            _ => return Ok((revision, items, None, None)),
        }
    }
}

/// Every object a collection request's selectors match, read from the store now.
pub(crate) async fn matching_from_store(
    server: &ApiServer,
    call: &Call,
) -> ApiResult<(Revision, Vec<Value>)> {
    let filter = Filter::of(call)?;
    let start = filter.key_prefix.clone();
    let (revision, items, _, _) = page(server, call, &filter, 0, &start, 0).await?;
    Ok((revision, items))
}
