//! DELETE of one object and of a collection, with the reference semantics: preconditions,
//! finalizers (the object stays, marked with `deletionTimestamp`, until they are gone),
//! `propagationPolicy` (Foreground/Orphan add the `foregroundDeletion`/`orphan` finalizers the
//! garbage collector acts on), graceful pod deletion (a bound pod is marked for the agent to
//! stop it within `gracePeriodSeconds`), `dryRun`, and namespaces going `Terminating`.

use http::StatusCode;
use serde_json::{json, Value};

use super::body::{self, ApiBody};
use super::request::Output;
use super::resource::ResourceInfo;
use super::rest::{self, object_key, read, respond, unchanged_since};
use super::server::{ApiServer, Call};
use super::status::{self, ApiError, ApiResult};
use super::{admission, list, meta};
use crate::store::{DeleteRangeRequest, RequestOp, Revision, TxnRequest};

/// The parts of `DeleteOptions` the server acts on.
#[derive(Debug, Default)]
struct DeleteOptions {
    grace_period: Option<i64>,
    propagation: Option<String>,
    precondition_uid: Option<String>,
    precondition_rv: Option<String>,
    dry_run: bool,
}

fn options(call: &Call) -> ApiResult<DeleteOptions> {
    let mut opts = DeleteOptions {
        grace_period: call.query.int("gracePeriodSeconds")?,
        propagation: call.query.get("propagationPolicy").map(String::from),
        dry_run: call.query.dry_run()?,
        ..Default::default()
    };
    if !call.body.iter().all(u8::is_ascii_whitespace) {
        let content_type =
            call.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let format = super::request::body_format(content_type)?;
        let body = body::decode_object(&call.body, format)?;
        if let Some(g) = body.get("gracePeriodSeconds").and_then(Value::as_i64) {
            opts.grace_period = Some(g);
        }
        if let Some(p) = body.get("propagationPolicy").and_then(Value::as_str) {
            opts.propagation = Some(p.to_string());
        }
        if body.get("orphanDependents").and_then(Value::as_bool) == Some(true) {
            opts.propagation = Some("Orphan".into());
        }
        opts.precondition_uid =
            body.pointer("/preconditions/uid").and_then(Value::as_str).map(String::from);
        opts.precondition_rv = body
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(String::from);
        if body
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|v| v == "All"))
        {
            opts.dry_run = true;
        }
    }
    match opts.propagation.as_deref() {
        None | Some("Background" | "Foreground" | "Orphan") => Ok(opts),
        Some(other) => Err(ApiError::bad_request(format!(
            "propagationPolicy: Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
        ))),
    }
}

fn is_kind(info: &ResourceInfo, kind: &str) -> bool {
    info.group.is_empty() && info.kind == kind
}

/// Whether DELETE answers with the object (as the reference's pods, services, namespaces and
/// custom resources do) rather than a success `Status`.
fn returns_object(info: &ResourceInfo) -> bool {
    info.custom || is_kind(info, "Pod") || is_kind(info, "Service") || is_kind(info, "Namespace")
}

/// Deletes `key` at `mod_revision`, releasing a Service's allocations in the same transaction.
pub(crate) async fn delete_txn(
    server: &ApiServer,
    info: &ResourceInfo,
    key: &str,
    mod_revision: Revision,
    obj: &Value,
) -> ApiResult<Option<Revision>> {
    let mut success = vec![RequestOp::DeleteRange(DeleteRangeRequest {
        key: key.as_bytes().to_vec(),
        ..Default::default()
    })];
    if is_kind(info, "Service") {
        for claim in admission::allocation_keys(obj) {
            success.push(RequestOp::DeleteRange(DeleteRangeRequest {
                key: claim.into_bytes(),
                ..Default::default()
            }));
        }
    }
    let resp = server
        .inner
        .store
        .txn(TxnRequest {
            compare: vec![unchanged_since(key, mod_revision)],
            success,
            failure: vec![],
        })
        .await?;
    if resp.succeeded && super::crd::is_crd(info) {
        super::crd::unregister(server, obj).await;
    }
    Ok(resp.succeeded.then_some(resp.revision))
}

/// What happened to one object.
enum Outcome {
    /// Gone from the store; the object's last state.
    Deleted(Value),
    /// Still there, marked for deletion (finalizers, grace period, terminating namespace).
    Marked(Value),
}

async fn delete_one(
    server: &ApiServer,
    call: &Call,
    key: &str,
    name: &str,
    opts: &DeleteOptions,
) -> ApiResult<Outcome> {
    let info = &call.info;
    if is_kind(info, "Namespace") && admission::SYSTEM_NAMESPACES.contains(&name) {
        return Err(ApiError::forbidden(info, name, "this namespace may not be deleted"));
    }
    for _ in 0..16 {
        let (current, kv) =
            read(server, key).await?.ok_or_else(|| ApiError::not_found(info, name))?;
        let uid = meta::meta_str(&current, "uid").unwrap_or("");
        if opts.precondition_uid.as_deref().is_some_and(|u| u != uid) {
            return Err(ApiError::conflict(
                info,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {}, UID in object meta: {uid}",
                    opts.precondition_uid.as_deref().unwrap_or("")
                ),
            ));
        }
        if opts.precondition_rv.as_deref().is_some_and(|rv| rv != kv.mod_revision.to_string()) {
            return Err(ApiError::conflict(info, name, &format!(
                "Precondition failed: ResourceVersion in precondition: {}, ResourceVersion in object meta: {}",
                opts.precondition_rv.as_deref().unwrap_or(""), kv.mod_revision
            )));
        }
        let mut marked = current.clone();
        let mut finalizers = meta::finalizers(&current);
        let extra = match opts.propagation.as_deref() {
            Some("Foreground") => Some("foregroundDeletion"),
            Some("Orphan") => Some("orphan"),
            _ => None,
        };
        if let Some(f) = extra {
            if !finalizers.iter().any(|x| x == f) {
                finalizers.push(f.to_string());
                meta::set_meta(&mut marked, "finalizers", json!(finalizers));
            }
        }
        let namespace_finalizers = is_kind(info, "Namespace")
            && marked
                .pointer("/spec/finalizers")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty());
        let grace = pod_grace_period(info, &current, opts);
        let already_deleting = current.pointer("/metadata/deletionTimestamp").is_some();
        if !finalizers.is_empty() || namespace_finalizers || grace > 0 {
            if already_deleting && extra.is_none() && grace >= current_grace(&current) {
                return Ok(Outcome::Marked(current));
            }
            let now = std::time::SystemTime::now();
            let at =
                if grace > 0 { now + std::time::Duration::from_secs(grace as u64) } else { now };
            if !already_deleting || grace < current_grace(&current) {
                meta::set_meta(&mut marked, "deletionTimestamp", json!(meta::rfc3339(at)));
                meta::set_meta(&mut marked, "deletionGracePeriodSeconds", json!(grace.max(0)));
            }
            if is_kind(info, "Namespace") {
                marked["status"]["phase"] = json!("Terminating");
            }
            if opts.dry_run {
                return Ok(Outcome::Marked(marked));
            }
            let resp = server
                .inner
                .store
                .txn(TxnRequest {
                    compare: vec![unchanged_since(key, kv.mod_revision)],
                    success: vec![rest::put(key, meta::encode(&marked))],
                    failure: vec![],
                })
                .await?;
            if resp.succeeded {
                meta::set_resource_version(&mut marked, resp.revision);
                return Ok(Outcome::Marked(marked));
            }
            continue;
        }
        if opts.dry_run {
            return Ok(Outcome::Deleted(current));
        }
        if let Some(rev) = delete_txn(server, info, key, kv.mod_revision, &current).await? {
            let mut last = current;
            meta::set_resource_version(&mut last, rev);
            return Ok(Outcome::Deleted(last));
        }
    }
    Err(ApiError::conflict(info, name, ApiError::MODIFIED))
}

fn current_grace(obj: &Value) -> i64 {
    obj.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(i64::MAX)
}

/// The grace period a pod gets: 0 (immediate) unless it is bound to a node and still running.
fn pod_grace_period(info: &ResourceInfo, pod: &Value, opts: &DeleteOptions) -> i64 {
    if !is_kind(info, "Pod") {
        return 0;
    }
    let bound =
        pod.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty());
    let phase = pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or("");
    if !bound || matches!(phase, "Succeeded" | "Failed") {
        return 0;
    }
    opts.grace_period
        .or_else(|| pod.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64))
        .unwrap_or(30)
        .max(0)
}

/// `DELETE` of one object.
pub(crate) async fn delete(server: &ApiServer, call: Call) -> ApiResult<http::Response<ApiBody>> {
    let opts = options(&call)?;
    let name = call.path.name.clone().unwrap_or_default();
    let key = object_key(&call);
    match delete_one(server, &call, &key, &name, &opts).await? {
        Outcome::Marked(obj) => Ok(respond(&call, StatusCode::OK, obj)),
        Outcome::Deleted(obj) if returns_object(&call.info) => {
            Ok(respond(&call, StatusCode::OK, obj))
        }
        Outcome::Deleted(obj) => {
            let uid = meta::meta_str(&obj, "uid").unwrap_or_default();
            let status = status::success_status(&call.info, &name, uid);
            Ok(body::object_response(StatusCode::OK, &status, Output::Json))
        }
    }
}

/// `DELETE` of a collection (with the list's selectors): deletes each match, returns the list.
pub(crate) async fn delete_collection(
    server: &ApiServer,
    call: Call,
) -> ApiResult<http::Response<ApiBody>> {
    let opts = options(&call)?;
    let (revision, objects) = list::matching_from_store(server, &call).await?;
    let mut items = Vec::new();
    for obj in objects {
        let name = meta::meta_str(&obj, "name").unwrap_or_default().to_string();
        let ns = meta::meta_str(&obj, "namespace").map(String::from);
        let key = call.info.storage_key(ns.as_deref(), &name);
        match delete_one(server, &call, &key, &name, &opts).await {
            Ok(Outcome::Deleted(mut o) | Outcome::Marked(mut o)) => {
                super::strategy::present(&call.info, &mut o);
                items.push(o);
            }
            // Deleted meanwhile by someone else: that is what was asked for.
            Err(err) if err.code == 404 => {}
            Err(err) => return Err(err),
        }
    }
    let list = json!({
        "kind": call.info.list_kind,
        "apiVersion": call.info.api_version(),
        "metadata": { "resourceVersion": revision.to_string() },
        "items": items,
    });
    Ok(body::object_response(StatusCode::OK, &list, call.output))
}
