//! The REST verbs on one object: get, create, update (PUT), patch, and the `binding`, `scale`
//! and `finalize` subresources; plus the dispatch of a resource request to its verb.
//!
//! Writes are optimistic: read the current object with its mod revision, compute the new one,
//! then commit with a store transaction that compares the mod revision. A stale PUT (its
//! resourceVersion is not the current one) is a 409 Conflict; an unconditional write (no
//! resourceVersion, or a patch) retries on a lost race.

use http::{Method, StatusCode};
use serde_json::{json, Value};

use super::body::{self, ApiBody};
use super::field_manager::Writer;
use super::request::{BodyFormat, Output};
use super::server::{ApiServer, Call, Reply};
use super::status::{ApiError, ApiResult, Cause};
use super::table::{self, IncludeObject, TableOptions};
use super::{
    admission, crd, defaults, delete, list, meta, openapi, patch, serviceaccount, strategy,
    validation, watch,
};
use crate::store::{
    Compare, CompareOp, CompareTarget, DeleteRangeRequest, KeyValue, PutRequest, RangeRequest,
    RequestOp, Revision, TxnRequest,
};

/// How many times an unconditional write retries a lost race before giving up with 409.
const RETRIES: usize = 16;

/// Runs the verb a resource request asks for.
pub(crate) async fn dispatch(server: &ApiServer, call: Call) -> ApiResult<Reply> {
    let named = call.path.name.is_some();
    let sub = call.path.subresource.clone();
    let watching = call.path.watch_prefix || call.query.flag("watch");
    let verb = match (&call.method, named) {
        (&Method::GET, _) if watching => "watch",
        (&Method::GET, true) => "get",
        (&Method::GET, false) => "list",
        (&Method::POST, _) => "create",
        (&Method::PUT, true) => "update",
        (&Method::PATCH, true) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        _ => return Err(ApiError::method_not_supported(Some(&call.info), call.method.as_str())),
    };
    // The request was authorized before it got here (`authz::check_request`).
    tracing::debug!(user = %call.user.name, verb, resource = %call.info.plural, "request");
    super::authz::node_restriction::admit_request(server, &call, verb).await?;
    let main_verb_ok = call.info.verbs.iter().any(|v| v == verb);
    // A CSR's `approval` is the object itself, like `status` (see `strategy::prepare_update`).
    let approval =
        sub.as_deref() == Some("approval") && call.info.subresource("approval").is_some();
    match (verb, sub.as_deref()) {
        ("watch", None) if main_verb_ok => watch::watch(server, call).await,
        ("list", None) if main_verb_ok => list::list(server, call).await.map(Reply::from),
        ("get", None | Some("status")) if main_verb_ok => get(server, call).await.map(Reply::from),
        ("get", Some("approval")) if approval => get(server, call).await.map(Reply::from),
        ("create", None) if super::authz::review::handles(&call) => {
            super::authz::review::create(server, call).await
        }
        ("create", None) if serviceaccount::review::handles(&call) => {
            serviceaccount::review::create(server, call).await
        }
        ("create", None)
            if main_verb_ok && (named || call.namespace().is_some() || !call.info.namespaced) =>
        {
            if named {
                return Err(ApiError::method_not_supported(Some(&call.info), "POST"));
            }
            create(server, call).await
        }
        ("create", Some("binding")) => binding(server, call).await.map(Reply::from),
        ("create", Some("eviction")) => super::eviction::evict(server, call).await.map(Reply::from),
        ("create", Some("token")) => serviceaccount::token_request::create(server, call).await,
        ("update" | "patch", None | Some("status") | Some("finalize")) if main_verb_ok => {
            update(server, call).await
        }
        ("update" | "patch", Some("approval")) if approval => update(server, call).await,
        ("get" | "update" | "patch", Some("scale")) => scale(server, call).await.map(Reply::from),
        ("delete", None) if main_verb_ok => delete::delete(server, call).await.map(Reply::from),
        ("deletecollection", None) if main_verb_ok => {
            delete::delete_collection(server, call).await.map(Reply::from)
        }
        _ => Err(ApiError::method_not_supported(Some(&call.info), call.method.as_str())),
    }
}

/// Renders one object (or a Table of it) as the response.
pub(crate) fn respond(call: &Call, code: StatusCode, mut obj: Value) -> http::Response<ApiBody> {
    strategy::present(&call.info, &mut obj);
    if call.output == Output::Table {
        let table = table::to_table(&call.info, std::slice::from_ref(&obj), &table_options(call));
        return body::object_response(code, &table, Output::Json);
    }
    body::object_response(code, &obj, call.output)
}

/// The Table options of a request (`includeObject`).
pub(crate) fn table_options(call: &Call) -> TableOptions {
    let include_object = match call.query.get("includeObject") {
        Some("None") => IncludeObject::None,
        Some("Object") => IncludeObject::Object,
        _ => IncludeObject::Metadata,
    };
    TableOptions { include_object }
}

/// Reads one key from the store: the object (with its resourceVersion) and its metadata.
pub(crate) async fn read(server: &ApiServer, key: &str) -> ApiResult<Option<(Value, KeyValue)>> {
    let resp = server
        .inner
        .store
        .range(RangeRequest { key: key.as_bytes().to_vec(), ..Default::default() })
        .await?;
    let Some(kv) = resp.kvs.into_iter().next() else { return Ok(None) };
    let obj = meta::decode(&kv).ok_or_else(|| {
        ApiError::internal(format!("the object stored at {key} is not valid JSON"))
    })?;
    Ok(Some((obj, kv)))
}

pub(crate) fn object_key(call: &Call) -> String {
    call.info.storage_key(call.namespace(), call.path.name.as_deref().unwrap_or_default())
}

async fn get(server: &ApiServer, call: Call) -> ApiResult<http::Response<ApiBody>> {
    let name = call.path.name.clone().unwrap_or_default();
    let (obj, _) = read(server, &object_key(&call))
        .await?
        .ok_or_else(|| ApiError::not_found(&call.info, &name))?;
    Ok(respond(&call, StatusCode::OK, obj))
}

/// The request body as an object, with apiVersion/kind checked against the URL and the
/// namespace checked against (and set from) the URL.
pub(crate) fn decode_body(call: &Call, expect_kind: Option<(&str, &str)>) -> ApiResult<Value> {
    let content_type = call.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let format = super::request::body_format(content_type)?;
    if matches!(
        format,
        BodyFormat::JsonPatch
            | BodyFormat::MergePatch
            | BodyFormat::StrategicMergePatch
            | BodyFormat::ApplyPatch
    ) {
        return Err(ApiError::unsupported_media_type(content_type.unwrap_or_default()));
    }
    let mut obj = body::decode_object(&call.body, format)?;
    let (api_version, kind) = match expect_kind {
        Some(expected) => (expected.0.to_string(), expected.1.to_string()),
        None => (call.info.api_version(), call.info.kind.clone()),
    };
    check_type(&mut obj, &api_version, &kind)?;
    if expect_kind.is_none() {
        check_namespace(call, &mut obj)?;
    }
    Ok(obj)
}

/// A body's apiVersion and kind must be the URL's (missing ones are filled in).
fn check_type(obj: &mut Value, api_version: &str, kind: &str) -> ApiResult<()> {
    match obj.get("apiVersion").and_then(Value::as_str) {
        Some(v) if v != api_version => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )))
        }
        _ => obj["apiVersion"] = json!(api_version),
    }
    match obj.get("kind").and_then(Value::as_str) {
        Some(k) if k != kind => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({kind})"
            )))
        }
        _ => obj["kind"] = json!(kind),
    }
    Ok(())
}

fn check_namespace(call: &Call, obj: &mut Value) -> ApiResult<()> {
    let body_ns = meta::meta_str(obj, "namespace").filter(|s| !s.is_empty()).map(String::from);
    match call.namespace() {
        Some(url_ns) => {
            if body_ns.as_deref().is_some_and(|b| b != url_ns) {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            meta::set_meta(obj, "namespace", json!(url_ns));
        }
        None if !call.info.namespaced => meta::remove_meta(obj, "namespace"),
        None => {}
    }
    Ok(())
}

/// `fieldValidation`: unknown fields are an error (Strict), a warning (Warn, the default) or
/// ignored. Built-in kinds are checked against their OpenAPI schemas (unknown fields dropped, as
/// the reference's decoder does); custom objects against their CRD's schema (pruning).
pub(crate) fn field_validation(call: &Call, obj: &mut Value) -> ApiResult<Vec<String>> {
    let mode = call.query.get("fieldValidation").unwrap_or("Warn");
    if !matches!(mode, "Strict" | "Warn" | "Ignore" | "") {
        return Err(ApiError::bad_request(format!(
            "fieldValidation: Unsupported value: \"{mode}\": supported values: \"Ignore\", \"Strict\", \"Warn\""
        )));
    }
    let (group, version, kind) = body_kind(call);
    let typed = if call.info.custom {
        None
    } else {
        openapi::fields::prune_unknown(group, version, kind, obj)
    };
    let mut unknown = typed.unwrap_or_else(|| strategy::unknown_metadata_fields(obj));
    if let (true, Some(schema)) = (call.info.custom, call.info.schema.as_ref()) {
        // Custom objects lose the fields their schema does not declare (pruning).
        unknown.extend(defaults::prune_custom(schema, obj));
    }
    let mut unknown: Vec<String> =
        unknown.into_iter().map(|f| format!("unknown field \"{f}\"")).collect();
    let content_type = call.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    if call.method != Method::PATCH
        && matches!(super::request::body_format(content_type), Ok(BodyFormat::Json))
    {
        let duplicates = openapi::fields::duplicate_fields(&call.body);
        unknown.extend(duplicates.into_iter().map(|f| format!("duplicate field \"{f}\"")));
    }
    match mode {
        "Strict" if !unknown.is_empty() => {
            let error = format!("strict decoding error: {}", unknown.join(", "));
            if call.info.custom || call.method == Method::PATCH {
                return Err(ApiError::bad_request(error));
            }
            // The reference's decoder wraps it: `Deployment in version "v1" cannot be handled as
            // a Deployment: strict decoding error: unknown field "spec.foo"`.
            Err(ApiError::bad_request(format!(
                "{kind} in version \"{version}\" cannot be handled as a {kind}: {error}"
            )))
        }
        "Ignore" => Ok(Vec::new()),
        _ => Ok(unknown),
    }
}

/// The group, version and kind of a request body: the subresource's kind (`Scale`, `Eviction`)
/// or the resource's.
fn body_kind(call: &Call) -> (&str, &str, &str) {
    let info = &call.info;
    match call.path.subresource.as_deref().and_then(|s| info.subresource(s)) {
        Some(sub) if !sub.group.is_empty() || !sub.version.is_empty() => {
            (&sub.group, &sub.version, &sub.kind)
        }
        Some(sub) => (&info.group, &info.version, &sub.kind),
        None => (&info.group, &info.version, &info.kind),
    }
}

fn invalid(call: &Call, name: &str, causes: Vec<Cause>) -> ApiError {
    ApiError::invalid(&call.info, name, causes)
}

fn validate_new(call: &Call, obj: &Value, name: &str) -> ApiResult<()> {
    validation::validate_create(&call.info, obj).map_err(|causes| invalid(call, name, causes))
}

async fn create(server: &ApiServer, call: Call) -> ApiResult<Reply> {
    let writer = Writer::of(&call, false)?;
    let obj = decode_body(&call, None)?;
    insert(server, &call, obj, &writer, false).await
}

/// Stores a new object: the body of a create, or what a server-side apply made of its
/// configuration (`applied`: its managedFields are already computed).
async fn insert(
    server: &ApiServer,
    call: &Call,
    mut obj: Value,
    writer: &Writer,
    applied: bool,
) -> ApiResult<Reply> {
    let warnings = field_validation(call, &mut obj)?;
    let dry_run = call.query.dry_run()?;
    if meta::meta_str(&obj, "name").unwrap_or("").is_empty() {
        match meta::meta_str(&obj, "generateName").filter(|g| !g.is_empty()) {
            Some(prefix) => {
                let name = format!("{prefix}{}", meta::name_suffix());
                meta::set_meta(&mut obj, "name", json!(name));
            }
            None => {
                return Err(invalid(
                    call,
                    "",
                    vec![Cause {
                        reason: "FieldValueRequired".into(),
                        message: "Required value: name or generateName is required".into(),
                        field: "metadata.name".into(),
                    }],
                ))
            }
        }
    }
    let name = meta::meta_str(&obj, "name").unwrap_or_default().to_string();
    if let Some(ns) = call.namespace() {
        admission::check_namespace(server, &call.info, ns, &name).await?;
    }
    let sent_fields = obj.pointer("/metadata/managedFields").cloned();
    strategy::prepare_create(&call.info, &mut obj);
    strategy::set_requester(&call.info, &mut obj, &call.user);
    super::authz::node_restriction::admit_object(call, None, &obj)?;
    defaults::apply(&call.info, &mut obj);
    let mut review =
        admission::Request::new(call, admission::Operation::Create, &name, None, dry_run);
    admission::mutate(server, &mut review, &mut obj).await?;
    writer.track(None, sent_fields, &mut obj, applied)?;
    validate_new(call, &obj, &name)?;
    super::authz::escalation::check(server, call, None, &obj).await?;
    admission::validate(server, &mut review, &obj).await?;
    let mut warnings = warnings;
    warnings.extend(review.into_warnings());
    if crd::is_crd(&call.info) {
        obj["status"] = crd::established_status(&obj);
    }
    let key = call.info.storage_key(call.namespace(), &name);
    let is_service = call.info.group.is_empty() && call.info.kind == "Service";
    if is_service && read(server, &key).await?.is_some() {
        // AlreadyExists wins over "address already allocated" (its own address, typically).
        return Err(ApiError::already_exists(&call.info, &name));
    }
    for _ in 0..RETRIES {
        // Only a service is tried again (with other addresses): anything else is moved, not
        // copied, into its one attempt.
        let mut candidate = if is_service { obj.clone() } else { std::mem::take(&mut obj) };
        let claims = if is_service {
            server
                .inner
                .ranges
                .allocate(server.inner.store.as_ref(), &call.info, &mut candidate)
                .await?
        } else {
            Vec::new()
        };
        if dry_run {
            let mut reply: Reply = respond(call, StatusCode::CREATED, candidate).into();
            reply.warnings = warnings;
            return Ok(reply);
        }
        match create_txn(server, &key, &candidate, &claims).await? {
            Some(rev) => {
                meta::set_resource_version(&mut candidate, rev);
                if crd::is_crd(&call.info) {
                    crd::register(server, &candidate);
                }
                let mut reply: Reply = respond(call, StatusCode::CREATED, candidate).into();
                reply.warnings = warnings;
                return Ok(reply);
            }
            None => {
                // Without claims only the object's own key can have been taken.
                if !is_service || read(server, &key).await?.is_some() {
                    return Err(ApiError::already_exists(&call.info, &name));
                }
                // An allocation was taken concurrently: pick again.
            }
        }
    }
    Err(ApiError::conflict(&call.info, &name, "too many concurrent allocations, try again"))
}

/// Creates `key` (and claims `claims`) if none of them exists; `None` when one does.
pub(crate) async fn create_txn(
    server: &ApiServer,
    key: &str,
    obj: &Value,
    claims: &[String],
) -> ApiResult<Option<Revision>> {
    let mut compare = vec![absent(key)];
    let mut success = vec![put(key, meta::encode(obj))];
    claim_keys(key, claims, &mut compare, &mut success);
    let resp = server.inner.store.txn(TxnRequest { compare, success, failure: vec![] }).await?;
    Ok(resp.succeeded.then_some(resp.revision))
}

/// Adds the writes that make `owner` the holder of `claims`, each of which must be free.
fn claim_keys(
    owner: &str,
    claims: &[String],
    compare: &mut Vec<Compare>,
    success: &mut Vec<RequestOp>,
) {
    let value = serde_json::to_vec(&json!({ "owner": owner })).unwrap_or_default();
    for claim in claims {
        compare.push(absent(claim));
        success.push(put(claim, value.clone()));
    }
}

fn absent(key: &str) -> Compare {
    Compare {
        key: key.as_bytes().to_vec(),
        range_end: vec![],
        target: CompareTarget::Create(0),
        op: CompareOp::Equal,
    }
}

pub(crate) fn unchanged_since(key: &str, mod_revision: Revision) -> Compare {
    Compare {
        key: key.as_bytes().to_vec(),
        range_end: vec![],
        target: CompareTarget::Mod(mod_revision),
        op: CompareOp::Equal,
    }
}

pub(crate) fn put(key: &str, value: Vec<u8>) -> RequestOp {
    RequestOp::Put(PutRequest { key: key.as_bytes().to_vec(), value, ..Default::default() })
}

/// `current` with a JSON patch (RFC 6902) or merge patch (RFC 7386) body applied; `None` for
/// any other body format.
fn json_or_merge_patch(
    format: BodyFormat,
    body: &[u8],
    current: &Value,
) -> ApiResult<Option<Value>> {
    match format {
        BodyFormat::JsonPatch => {
            let patch: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            let mut patched = current.clone();
            json_patch::patch(&mut patched, &patch).map_err(|e| invalid_patch(&e.to_string()))?;
            Ok(Some(patched))
        }
        BodyFormat::MergePatch => {
            let patch: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid merge patch: {e}")))?;
            Ok(Some(super::patch::merge::apply(current, &patch)))
        }
        _ => Ok(None),
    }
}

/// Applies the body of an update or patch request to `current`: the new object, and whether
/// the client's resourceVersion pins the write (a precondition).
fn apply_request(call: &Call, current: &Value, writer: &Writer) -> ApiResult<(Value, bool)> {
    let content_type = call.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let format = super::request::body_format(content_type)?;
    let new = if call.method == Method::PATCH {
        let mut patched = match format {
            BodyFormat::StrategicMergePatch => strategic_merge(call, current)?,
            BodyFormat::ApplyPatch => {
                writer.apply(Some(current), &applied_config(call)?, call.query.flag("force"))?
            }
            other => json_or_merge_patch(other, &call.body, current)?
                .ok_or_else(|| ApiError::unsupported_media_type(content_type.unwrap_or("none")))?,
        };
        // A patch may only pin a resourceVersion it names explicitly.
        let pinned = meta::meta_str(&patched, "resourceVersion")
            != meta::meta_str(current, "resourceVersion");
        check_type(&mut patched, &call.info.api_version(), &call.info.kind)?;
        check_namespace(call, &mut patched)?;
        return Ok((patched, pinned));
    } else {
        decode_body(call, None)?
    };
    let pinned = meta::meta_str(&new, "resourceVersion").is_some_and(|rv| !rv.is_empty());
    Ok((new, pinned))
}

/// Whether a request is a server-side apply.
fn is_apply(call: &Call) -> bool {
    let content_type = call.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    call.method == Method::PATCH
        && matches!(super::request::body_format(content_type), Ok(BodyFormat::ApplyPatch))
}

/// The configuration a server-side apply sends, with apiVersion, kind and namespace checked
/// against the URL.
fn applied_config(call: &Call) -> ApiResult<Value> {
    let mut applied = body::decode_object(&call.body, BodyFormat::ApplyPatch)?;
    check_type(&mut applied, &call.info.api_version(), &call.info.kind)?;
    check_namespace(call, &mut applied)?;
    Ok(applied)
}

/// A strategic merge patch of a built-in object (custom resources answer 415, as the
/// reference does, and kubectl falls back to a merge patch).
fn strategic_merge(call: &Call, current: &Value) -> ApiResult<Value> {
    if call.info.custom {
        return Err(ApiError {
            code: 415,
            reason: "UnsupportedMediaType",
            message: patch::CUSTOM_RESOURCE_SMP_UNSUPPORTED.to_string(),
            details: None,
            retry_after: None,
        });
    }
    let patch: Value = serde_json::from_slice(&call.body)
        .map_err(|e| ApiError::bad_request(format!("invalid strategic merge patch: {e}")))?;
    let schema = patch::Schema::for_kind(&call.info.group, &call.info.kind);
    patch::strategic::apply(schema, current, &patch).map_err(|e| match e.status_code() {
        422 => invalid_patch(&e.to_string()),
        _ => ApiError::bad_request(e.to_string()),
    })
}

fn invalid_patch(why: &str) -> ApiError {
    ApiError {
        code: 422,
        reason: "Invalid",
        message: format!("the server rejected our request due to an error in our request: {why}"),
        details: None,
        retry_after: None,
    }
}

/// PUT and PATCH on the main resource, `/status` and `/finalize`.
async fn update(server: &ApiServer, call: Call) -> ApiResult<Reply> {
    let name = call.path.name.clone().unwrap_or_default();
    let key = object_key(&call);
    let dry_run = call.query.dry_run()?;
    let sub = call.path.subresource.clone();
    let applying = is_apply(&call);
    let writer = Writer::of(&call, applying)?;
    // A retry after a conflict must not charge quota again for the same growth.
    let quota_charged = admission::resource_quota::Charged::default();
    for _ in 0..RETRIES {
        let Some((current, kv)) = read(server, &key).await? else {
            if applying && sub.is_none() {
                // An apply of an object that does not exist creates it, as in the reference.
                let force = call.query.flag("force");
                let mut obj = writer.apply(None, &applied_config(&call)?, force)?;
                if meta::meta_str(&obj, "name").unwrap_or("").is_empty() {
                    meta::set_meta(&mut obj, "name", json!(name));
                }
                return insert(server, &call, obj, &writer, true).await;
            }
            return Err(ApiError::not_found(&call.info, &name));
        };
        let (mut new, pinned) = apply_request(&call, &current, &writer)?;
        let warnings = field_validation(&call, &mut new)?;
        let body_name = meta::meta_str(&new, "name").unwrap_or("");
        if body_name != name {
            if body_name.is_empty() {
                meta::set_meta(&mut new, "name", json!(name));
            } else {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({body_name}) does not match the name on the URL ({name})"
                )));
            }
        }
        if pinned {
            let rv = meta::meta_str(&new, "resourceVersion").unwrap_or("");
            if rv != kv.mod_revision.to_string() {
                if meta::parse_resource_version(Some(rv)).is_err() {
                    return Err(ApiError::bad_request(format!("invalid resourceVersion {rv:?}")));
                }
                return Err(ApiError::conflict(&call.info, &name, ApiError::MODIFIED));
            }
        }
        let sent_fields = new.pointer("/metadata/managedFields").cloned();
        let mut merged = if sub.as_deref() == Some("finalize") {
            let mut merged = current.clone();
            merged["spec"]["finalizers"] =
                new.pointer("/spec/finalizers").cloned().unwrap_or_else(|| json!([]));
            merged
        } else {
            strategy::prepare_update(&call.info, &current, new, sub.as_deref())
        };
        defaults::apply(&call.info, &mut merged);
        let allocations =
            if sub.is_none() && call.info.group.is_empty() && call.info.kind == "Service" {
                let ranges = &server.inner.ranges;
                ranges
                    .reallocate(server.inner.store.as_ref(), &call.info, &current, &mut merged)
                    .await?
            } else {
                admission::Reallocation::default()
            };
        super::authz::node_restriction::admit_object(&call, Some(&current), &merged)?;
        let mut review = admission::Request::new(
            &call,
            admission::Operation::Update,
            &name,
            Some(&current),
            dry_run,
        );
        review.quota_charged = Some(&quota_charged);
        admission::mutate(server, &mut review, &mut merged).await?;
        writer.track(Some(&current), sent_fields, &mut merged, applying)?;
        validation::validate_update(&call.info, &current, &merged)
            .map_err(|causes| invalid(&call, &name, causes))?;
        super::authz::escalation::check(server, &call, Some(&current), &merged).await?;
        admission::validate(server, &mut review, &merged).await?;
        let mut warnings = warnings;
        warnings.extend(review.into_warnings());
        if !strategy::changed(&current, &merged) {
            let mut reply: Reply = respond(&call, StatusCode::OK, current).into();
            reply.warnings = warnings;
            return Ok(reply);
        }
        if dry_run {
            return Ok(respond(&call, StatusCode::OK, merged).into());
        }
        match commit_update_allocating(server, &call, &key, &kv, &mut merged, &allocations).await? {
            Some(rev) => {
                meta::set_resource_version(&mut merged, rev);
                if crd::is_crd(&call.info)
                    && merged.pointer("/metadata/deletionTimestamp").is_none()
                {
                    crd::register(server, &merged);
                }
                let mut reply: Reply = respond(&call, StatusCode::OK, merged).into();
                reply.warnings = warnings;
                return Ok(reply);
            }
            None if pinned => {
                return Err(ApiError::conflict(&call.info, &name, ApiError::MODIFIED))
            }
            None => continue,
        }
    }
    Err(ApiError::conflict(&call.info, &name, ApiError::MODIFIED))
}

/// Stores an updated object if the key is still at `kv.mod_revision`. An object that is being
/// deleted and has lost its last finalizer is deleted instead (as in the reference).
pub(crate) async fn commit_update(
    server: &ApiServer,
    call: &Call,
    key: &str,
    kv: &KeyValue,
    obj: &mut Value,
) -> ApiResult<Option<Revision>> {
    commit_update_allocating(server, call, key, kv, obj, &admission::Reallocation::default()).await
}

/// [`commit_update`] that also takes and gives back a Service's address and port keys in the
/// same transaction (a taken key fails it, like a concurrent write).
async fn commit_update_allocating(
    server: &ApiServer,
    call: &Call,
    key: &str,
    kv: &KeyValue,
    obj: &mut Value,
    allocations: &admission::Reallocation,
) -> ApiResult<Option<Revision>> {
    let finished = obj.pointer("/metadata/deletionTimestamp").is_some()
        && meta::finalizers(obj).is_empty()
        && !(call.info.kind == "Pod"
            && call.info.group.is_empty()
            && obj
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                > 0)
        // A terminating namespace stays until its `spec.finalizers` are gone too (the
        // namespace controller writes its status conditions meanwhile).
        && !(call.info.kind == "Namespace"
            && call.info.group.is_empty()
            && obj
                .pointer("/spec/finalizers")
                .and_then(Value::as_array)
                .is_some_and(|f| !f.is_empty()));
    if finished {
        return delete::delete_txn(server, &call.info, key, kv.mod_revision, obj).await;
    }
    let mut compare = vec![unchanged_since(key, kv.mod_revision)];
    let mut success = vec![put(key, meta::encode(obj))];
    claim_keys(key, &allocations.claim, &mut compare, &mut success);
    for released in &allocations.release {
        success.push(RequestOp::DeleteRange(DeleteRangeRequest {
            key: released.as_bytes().to_vec(),
            ..Default::default()
        }));
    }
    let resp = server.inner.store.txn(TxnRequest { compare, success, failure: vec![] }).await?;
    Ok(resp.succeeded.then_some(resp.revision))
}

/// `POST pods/<name>/binding`: assigns a pod to a node (the scheduler's write).
async fn binding(server: &ApiServer, call: Call) -> ApiResult<http::Response<ApiBody>> {
    if !(call.info.group.is_empty() && call.info.kind == "Pod") {
        return Err(ApiError::method_not_supported(Some(&call.info), "POST"));
    }
    let name = call.path.name.clone().unwrap_or_default();
    let binding = decode_body(&call, Some(("v1", "Binding")))?;
    let node = binding.pointer("/target/name").and_then(Value::as_str).unwrap_or("").to_string();
    if node.is_empty() {
        return Err(invalid(
            &call,
            &name,
            vec![Cause {
                reason: "FieldValueRequired".into(),
                message: "Required value".into(),
                field: "target.name".into(),
            }],
        ));
    }
    let key = object_key(&call);
    for _ in 0..RETRIES {
        let (mut pod, kv) =
            read(server, &key).await?.ok_or_else(|| ApiError::not_found(&call.info, &name))?;
        if pod.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(ApiError::conflict(
                &call.info,
                &name,
                "pod is being deleted, cannot be assigned to a host",
            ));
        }
        if let Some(current) =
            pod.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty())
        {
            return Err(ApiError::conflict(
                &call.info,
                &name,
                &format!("pod {name} is already assigned to node \"{current}\""),
            ));
        }
        pod["spec"]["nodeName"] = json!(node);
        set_scheduled(&mut pod);
        if call.query.dry_run()? {
            break;
        }
        if commit_update(server, &call, &key, &kv, &mut pod).await?.is_some() {
            break;
        }
    }
    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
    Ok(body::object_response(StatusCode::CREATED, &status, Output::Json))
}

/// The `PodScheduled=True` condition a binding sets (replacing an earlier `False`), as the
/// reference's binding REST does.
fn set_scheduled(pod: &mut Value) {
    let now = meta::now_rfc3339();
    let condition = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now});
    if !pod.get("status").is_some_and(Value::is_object) {
        pod["status"] = json!({});
    }
    let conditions = &mut pod["status"]["conditions"];
    match conditions.as_array_mut() {
        Some(list) => match list.iter_mut().find(|c| c["type"] == "PodScheduled") {
            Some(existing) => *existing = condition,
            None => list.push(condition),
        },
        None => *conditions = json!([condition]),
    }
}

/// Where a kind keeps its replica counts and selector, for `/scale` (JSON pointers).
fn scale_paths(call: &Call) -> Option<(String, String, String)> {
    let pointer = |path: &str| path.trim_start_matches('.').replace('.', "/");
    let pointer = |path: &str| format!("/{}", pointer(path));
    match (call.info.group.as_str(), call.info.kind.as_str()) {
        _ if call.info.custom => call.info.scale.as_ref().map(|s| {
            (
                pointer(&s.spec_replicas_path),
                pointer(&s.status_replicas_path),
                s.label_selector_path.as_deref().map(pointer).unwrap_or_default(),
            )
        }),
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet") | ("", "ReplicationController") => {
            Some(("/spec/replicas".into(), "/status/replicas".into(), "/spec/selector".into()))
        }
        _ => None,
    }
}

fn selector_string(selector: Option<&Value>) -> String {
    match selector {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(sel)) => {
            let mut parts: Vec<String> = sel
                .get("matchLabels")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect()
                })
                .unwrap_or_default();
            if sel.get("matchLabels").is_none() && sel.get("matchExpressions").is_none() {
                parts =
                    sel.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect();
            }
            parts.join(",")
        }
        _ => String::new(),
    }
}

fn to_scale(obj: &Value, paths: &(String, String, String)) -> Value {
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": obj.pointer("/metadata/name"),
            "namespace": obj.pointer("/metadata/namespace"),
            "uid": obj.pointer("/metadata/uid"),
            "resourceVersion": obj.pointer("/metadata/resourceVersion"),
            "creationTimestamp": obj.pointer("/metadata/creationTimestamp"),
        },
        "spec": { "replicas": obj.pointer(&paths.0).and_then(Value::as_i64).unwrap_or(0) },
        "status": {
            "replicas": obj.pointer(&paths.1).and_then(Value::as_i64).unwrap_or(0),
            "selector": if paths.2.is_empty() { String::new() } else { selector_string(obj.pointer(&paths.2)) },
        },
    })
}

/// `GET/PUT/PATCH …/scale` with an `autoscaling/v1` Scale.
async fn scale(server: &ApiServer, call: Call) -> ApiResult<http::Response<ApiBody>> {
    let paths = scale_paths(&call).ok_or_else(ApiError::path_not_found)?;
    let name = call.path.name.clone().unwrap_or_default();
    let key = object_key(&call);
    for _ in 0..RETRIES {
        let (mut obj, kv) =
            read(server, &key).await?.ok_or_else(|| ApiError::not_found(&call.info, &name))?;
        let current = to_scale(&obj, &paths);
        if call.method == Method::GET {
            return Ok(body::object_response(StatusCode::OK, &current, call.output));
        }
        let wanted = if call.method == Method::PATCH {
            let ct = call.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
            json_or_merge_patch(super::request::body_format(ct)?, &call.body, &current)?
                .ok_or_else(|| ApiError::unsupported_media_type(ct.unwrap_or("none")))?
        } else {
            decode_body(&call, Some(("autoscaling/v1", "Scale")))?
        };
        if let Some(rv) = meta::meta_str(&wanted, "resourceVersion").filter(|rv| !rv.is_empty()) {
            if rv != kv.mod_revision.to_string() {
                return Err(ApiError::conflict(&call.info, &name, ApiError::MODIFIED));
            }
        }
        let replicas = wanted.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0);
        if replicas < 0 {
            return Err(invalid(
                &call,
                &name,
                vec![Cause {
                    reason: "FieldValueInvalid".into(),
                    message: format!(
                        "Invalid value: {replicas}: must be greater than or equal to 0"
                    ),
                    field: "spec.replicas".into(),
                }],
            ));
        }
        let old = obj.clone();
        set_pointer(&mut obj, &paths.0, json!(replicas));
        if let Some(gen) = old.pointer("/metadata/generation").and_then(Value::as_i64) {
            if strategy::changed(&old, &obj) {
                meta::set_meta(&mut obj, "generation", json!(gen + 1));
            }
        }
        if call.query.dry_run()? || !strategy::changed(&old, &obj) {
            return Ok(body::object_response(StatusCode::OK, &to_scale(&obj, &paths), call.output));
        }
        if let Some(rev) = commit_update(server, &call, &key, &kv, &mut obj).await? {
            meta::set_resource_version(&mut obj, rev);
            return Ok(body::object_response(StatusCode::OK, &to_scale(&obj, &paths), call.output));
        }
    }
    Err(ApiError::conflict(&call.info, &name, ApiError::MODIFIED))
}

/// Sets the value at a JSON pointer, creating intermediate objects.
fn set_pointer(obj: &mut Value, pointer: &str, value: Value) {
    let mut cur = obj;
    let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = json!({});
        }
        let Some(map) = cur.as_object_mut() else { return };
        if i == parts.len() - 1 {
            map.insert(part.to_string(), value);
            return;
        }
        cur = map.entry(part.to_string()).or_insert_with(|| json!({}));
    }
}
