//! `POST pods/<name>/eviction`: a delete that honours the pod's PodDisruptionBudget, as the
//! reference's eviction REST does (what `kubectl drain` calls).
//!
//! A pod the budget cannot protect (finished, still `Pending`, or already terminating) is
//! deleted directly. Otherwise the one budget that selects it (more than one is an error)
//! must allow a disruption: its status must be current (`observedGeneration`) and
//! `disruptionsAllowed` above 0, else 429 TooManyRequests with a `DisruptionBudget` cause,
//! which clients retry. The eviction spends the disruption (decrements `disruptionsAllowed`
//! and records the pod in `disruptedPods`, with a compare-and-swap on the budget so two
//! evictions cannot spend the same one), marks the pod `DisruptionTarget=True`, then deletes
//! it with the Eviction's `deleteOptions`. A not-ready pod may go without spending anything
//! when the budget's `unhealthyPodEvictionPolicy` is `AlwaysAllow`, or (`IfHealthyBudget`,
//! the default) while the budget is met; its delete is then pinned to the resourceVersion
//! that was judged, so a pod turning ready meanwhile is not taken.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

use super::body::{self, ApiBody};
use super::request::{self, Output, Query, ResourcePath};
use super::resource::ResourceInfo;
use super::rest::{self, object_key, read};
use super::server::{ApiServer, Call};
use super::status::{ApiError, ApiResult};
use super::{delete, meta, watch_cache};
use crate::controllers::disruption::budget;
use crate::controllers::util::selector;
use crate::store::{KeyValue, RangeRequest, TxnRequest};

/// Lost races retried before giving up.
const RETRIES: usize = 16;

/// Entries `status.disruptedPods` may hold before evictions are refused (the controller has
/// fallen behind).
const MAX_DISRUPTED_PODS: usize = 2000;

/// The message of every refusal on behalf of a budget.
pub const VIOLATION: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

/// The `StatusCause` type that marks a refusal by a budget.
const DISRUPTION_BUDGET_CAUSE: &str = "DisruptionBudget";

/// `POST pods/<name>/eviction`.
pub(crate) async fn evict(server: &ApiServer, call: Call) -> ApiResult<http::Response<ApiBody>> {
    if !(call.info.group.is_empty() && call.info.kind == "Pod") {
        return Err(ApiError::method_not_supported(Some(&call.info), "POST"));
    }
    let name = call.path.name.clone().unwrap_or_default();
    let eviction = decode(&call)?;
    if meta::meta_str(&eviction, "name").unwrap_or("") != name {
        return Err(ApiError::bad_request("name in URL does not match name in Eviction object"));
    }
    let options = delete_options(&call, &eviction)?;
    let pinned_by_client = precondition_rv(&options).is_some();
    let key = object_key(&call);

    // Pods no budget protects go directly; a lost race on their pinned delete is retried.
    let mut attempts = 0;
    let (pod, pod_rv) = loop {
        let (pod, kv) =
            read(server, &key).await?.ok_or_else(|| ApiError::not_found(&call.info, &name))?;
        if !can_ignore_budget(&pod) {
            break (pod, kv.mod_revision.to_string());
        }
        let mut opts = options.clone();
        if enforces_resource_version(&pod) && !pinned_by_client {
            set_precondition_rv(&mut opts, &kv.mod_revision.to_string());
        }
        match mark_and_delete(server, &call, &name, opts).await {
            Ok(()) => return Ok(success()),
            Err(e) if e.code == 409 && !pinned_by_client && attempts < RETRIES => attempts += 1,
            Err(e) => return Err(e),
        }
    };

    let budgets = matching_budgets(server, &pod).await?;
    if budgets.len() > 1 {
        // The reference answers a Failure Status with code 500 (and no reason).
        let status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            "code": 500,
        });
        return Ok(body::object_response(StatusCode::INTERNAL_SERVER_ERROR, &status, Output::Json));
    }
    let mut pin_to_judged = false;
    let mut budget_name = String::new();
    if let Some((pdb, budget_key)) = budgets.first() {
        budget_name = pdb.metadata.name.clone().unwrap_or_default();
        let status = pdb.status.clone().unwrap_or_default();
        if !is_ready(&pod) {
            let policy = pdb.spec.as_ref().and_then(|s| s.unhealthy_pod_eviction_policy.as_deref());
            // A not-ready pod counts neither as healthy nor as a disruption.
            pin_to_judged = policy == Some(budget::ALWAYS_ALLOW)
                || (status.current_healthy >= status.desired_healthy && status.desired_healthy > 0);
        }
        if !pin_to_judged {
            spend_disruption(server, budget_key, &budget_name, &name, is_dry_run(&options)).await?;
        }
    }
    let mut opts = options.clone();
    if pin_to_judged {
        set_precondition_rv(&mut opts, &pod_rv);
    }
    match mark_and_delete(server, &call, &name, opts).await {
        Ok(()) => Ok(success()),
        // The pod changed since it was judged (it may be ready now): let the client retry.
        Err(e) if e.code == 409 && pin_to_judged && !pinned_by_client => {
            Err(still_processing(&budget_name))
        }
        Err(e) => Err(e),
    }
}

/// The `201 Success` Status an accepted eviction answers.
fn success() -> http::Response<ApiBody> {
    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
    body::object_response(StatusCode::CREATED, &status, Output::Json)
}

/// The Eviction body: policy/v1 or policy/v1beta1 (both are accepted, as in the reference).
fn decode(call: &Call) -> ApiResult<Value> {
    let content_type = call.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let format = request::body_format(content_type)?;
    let eviction = body::decode_object(&call.body, format)?;
    match eviction.get("apiVersion").and_then(Value::as_str) {
        None | Some("policy/v1" | "policy/v1beta1") => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({other}) does not match the expected API version (policy/v1)"
            )))
        }
    }
    match eviction.get("kind").and_then(Value::as_str) {
        None | Some("Eviction") => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({other}) does not match the expected kind (Eviction)"
            )))
        }
    }
    let body_ns = meta::meta_str(&eviction, "namespace").filter(|ns| !ns.is_empty());
    if body_ns.is_some_and(|ns| Some(ns) != call.namespace()) {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    Ok(eviction)
}

/// The Eviction's `deleteOptions` with the request's `dryRun` pushed in (they must agree).
fn delete_options(call: &Call, eviction: &Value) -> ApiResult<Value> {
    let from_query: Vec<Value> = match call.query.dry_run()? {
        true => vec![json!("All")],
        false => Vec::new(),
    };
    merge_dry_run(eviction.get("deleteOptions").filter(|o| o.is_object()).cloned(), from_query)
}

fn merge_dry_run(options: Option<Value>, from_query: Vec<Value>) -> ApiResult<Value> {
    let mut options = options.unwrap_or_else(|| json!({}));
    let in_body = options.get("dryRun").and_then(Value::as_array).cloned().unwrap_or_default();
    if in_body.is_empty() {
        if !from_query.is_empty() {
            options["dryRun"] = Value::Array(from_query);
        }
    } else if !from_query.is_empty() && from_query != in_body {
        let list = |v: &[Value]| {
            let items: Vec<&str> = v.iter().filter_map(Value::as_str).collect();
            format!("[{}]", items.join(" "))
        };
        return Err(ApiError::bad_request(format!(
            "Non-matching dry-run options in request and content: {} and {}",
            list(&from_query),
            list(&in_body)
        )));
    }
    Ok(options)
}

fn is_dry_run(options: &Value) -> bool {
    options.get("dryRun").and_then(Value::as_array).is_some_and(|a| a.iter().any(|v| v == "All"))
}

fn precondition_rv(options: &Value) -> Option<&str> {
    options.pointer("/preconditions/resourceVersion").and_then(Value::as_str)
}

fn set_precondition_rv(options: &mut Value, rv: &str) {
    if !options.get("preconditions").is_some_and(Value::is_object) {
        options["preconditions"] = json!({});
    }
    options["preconditions"]["resourceVersion"] = json!(rv);
}

fn phase(pod: &Value) -> &str {
    pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or("")
}

fn is_terminating(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null())
}

/// Finished, not yet running (`Pending`) or already terminating: no budget applies.
fn can_ignore_budget(pod: &Value) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed" | "Pending" | "") || is_terminating(pod)
}

/// Whether a direct delete must be pinned to the judged resourceVersion (so a pod becoming
/// ready meanwhile is not taken without its budget's consent).
fn enforces_resource_version(pod: &Value) -> bool {
    !(matches!(phase(pod), "Succeeded" | "Failed") || is_terminating(pod))
}

fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

fn budget_info(server: &ApiServer) -> ApiResult<std::sync::Arc<ResourceInfo>> {
    server
        .inner
        .registry
        .resolve("policy", "v1", "poddisruptionbudgets")
        .ok_or_else(|| ApiError::internal("poddisruptionbudgets.policy/v1 is not served"))
}

/// The budgets of the pod's namespace whose selector selects it (no selector: none), with
/// their store keys.
async fn matching_budgets(
    server: &ApiServer,
    pod: &Value,
) -> ApiResult<Vec<(PodDisruptionBudget, String)>> {
    let info = budget_info(server)?;
    let namespace = meta::meta_str(pod, "namespace").unwrap_or_default();
    let prefix = info.storage_key(Some(namespace), "");
    let resp = server
        .inner
        .store
        .range(RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: watch_cache::prefix_end(&prefix),
            ..Default::default()
        })
        .await?;
    let labels: BTreeMap<String, String> = pod
        .pointer("/metadata/labels")
        .and_then(|l| serde_json::from_value(l.clone()).ok())
        .unwrap_or_default();
    let mut out = Vec::new();
    for kv in resp.kvs {
        let pdb = typed_budget(&kv)?;
        let selects = pdb
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .is_some_and(|sel| selector::matches(sel, Some(&labels)));
        if selects {
            out.push((pdb, String::from_utf8_lossy(&kv.key).into_owned()));
        }
    }
    Ok(out)
}

fn typed_budget(kv: &KeyValue) -> ApiResult<PodDisruptionBudget> {
    let key = String::from_utf8_lossy(&kv.key);
    let obj = meta::decode(kv).ok_or_else(|| {
        ApiError::internal(format!("the object stored at {key} is not valid JSON"))
    })?;
    serde_json::from_value(obj).map_err(|e| {
        ApiError::internal(format!("the PodDisruptionBudget stored at {key} is malformed: {e}"))
    })
}

/// A 429 for a budget whose status the controller has not caught up with.
fn still_processing(budget_name: &str) -> ApiError {
    let cause =
        format!("The disruption budget {budget_name} is still being processed by the server.");
    violation(cause, Some(10))
}

fn violation(cause: String, retry_after: Option<u64>) -> ApiError {
    ApiError {
        code: 429,
        reason: "TooManyRequests",
        message: VIOLATION.to_string(),
        details: Some(json!({"causes": [{"reason": DISRUPTION_BUDGET_CAUSE, "message": cause}]})),
        retry_after,
    }
}

fn forbidden_budget(budget_name: &str, why: &str) -> ApiError {
    ApiError {
        code: 403,
        reason: "Forbidden",
        message: format!("poddisruptionbudget.policy \"{budget_name}\" is forbidden: {why}"),
        details: Some(
            json!({"name": budget_name, "group": "policy", "kind": "poddisruptionbudget"}),
        ),
        retry_after: None,
    }
}

/// Checks that the budget allows one more disruption and spends it (unless dry-run), with a
/// compare-and-swap on the budget; a lost race reads the budget again.
async fn spend_disruption(
    server: &ApiServer,
    key: &str,
    budget_name: &str,
    pod_name: &str,
    dry_run: bool,
) -> ApiResult<()> {
    let info = budget_info(server)?;
    for _ in 0..RETRIES {
        let resp = server
            .inner
            .store
            .range(RangeRequest { key: key.as_bytes().to_vec(), ..Default::default() })
            .await?;
        let kv =
            resp.kvs.into_iter().next().ok_or_else(|| ApiError::not_found(&info, budget_name))?;
        let pdb = typed_budget(&kv)?;
        let mut status = pdb.status.clone().unwrap_or_default();
        check_allowed(&pdb, budget_name)?;
        status.disruptions_allowed -= 1;
        let now = Timestamp::now();
        if status.disruptions_allowed == 0 {
            budget::update_disruption_allowed_condition(&mut status, now);
        }
        if dry_run {
            return Ok(());
        }
        status.disrupted_pods.get_or_insert_with(BTreeMap::new).insert(
            pod_name.to_string(),
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now),
        );
        let mut obj = meta::decode(&kv).unwrap_or_default();
        obj["status"] = serde_json::to_value(&status)
            .map_err(|e| ApiError::internal(format!("encoding the budget's status: {e}")))?;
        let committed = server
            .inner
            .store
            .txn(TxnRequest {
                compare: vec![rest::unchanged_since(key, kv.mod_revision)],
                success: vec![rest::put(key, meta::encode(&obj))],
                failure: vec![],
            })
            .await?;
        if committed.succeeded {
            return Ok(());
        }
    }
    Err(ApiError::timeout(format!(
        "couldn't update PodDisruptionBudget {budget_name:?} due to conflicts"
    )))
}

/// Whether the budget's status allows one more disruption now.
fn check_allowed(pdb: &PodDisruptionBudget, budget_name: &str) -> ApiResult<()> {
    let status = pdb.status.clone().unwrap_or_default();
    if status.observed_generation.unwrap_or(0) < pdb.metadata.generation.unwrap_or(0) {
        return Err(still_processing(budget_name));
    }
    if status.disruptions_allowed < 0 {
        return Err(forbidden_budget(budget_name, "pdb disruptions allowed is negative"));
    }
    if status.disrupted_pods.as_ref().is_some_and(|d| d.len() > MAX_DISRUPTED_PODS) {
        return Err(forbidden_budget(
            budget_name,
            "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
        ));
    }
    if status.disruptions_allowed == 0 {
        let cause = format!(
            "The disruption budget {budget_name} needs {} healthy pods and has {} currently",
            status.desired_healthy, status.current_healthy
        );
        return Err(violation(cause, None));
    }
    Ok(())
}

/// Marks the pod `DisruptionTarget=True` (unless dry-run), then deletes it with `options`.
/// The mark honours the options' preconditions against the latest pod, and a pinned
/// resourceVersion follows the mark (it is this eviction's own write).
async fn mark_and_delete(
    server: &ApiServer,
    call: &Call,
    name: &str,
    mut options: Value,
) -> ApiResult<()> {
    if !is_dry_run(&options) {
        mark_disruption_target(server, call, name, &mut options).await?;
    }
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let body = serde_json::to_vec(&options)
        .map_err(|e| ApiError::internal(format!("encoding delete options: {e}")))?;
    let delete_call = Call {
        info: call.info.clone(),
        path: ResourcePath { subresource: None, ..call.path.clone() },
        query: Query::parse(None),
        output: Output::Json,
        headers,
        method: Method::DELETE,
        body: Bytes::from(body),
        user: call.user.clone(),
    };
    delete::delete(server, delete_call).await.map(|_| ())
}

async fn mark_disruption_target(
    server: &ApiServer,
    call: &Call,
    name: &str,
    options: &mut Value,
) -> ApiResult<()> {
    let key = object_key(call);
    for _ in 0..RETRIES {
        let (mut pod, kv): (Value, KeyValue) =
            read(server, &key).await?.ok_or_else(|| ApiError::not_found(&call.info, name))?;
        check_preconditions(call, name, &pod, options)?;
        if !set_disruption_target(&mut pod, &meta::now_rfc3339()) {
            return Ok(());
        }
        if let Some(rev) = rest::commit_update(server, call, &key, &kv, &mut pod).await? {
            if precondition_rv(options).is_some() {
                set_precondition_rv(options, &rev.to_string());
            }
            return Ok(());
        }
    }
    Err(ApiError::conflict(&call.info, name, ApiError::MODIFIED))
}

/// The delete's preconditions, checked against the latest pod before it is marked.
fn check_preconditions(call: &Call, name: &str, pod: &Value, options: &Value) -> ApiResult<()> {
    let uid = meta::meta_str(pod, "uid").unwrap_or("");
    let wanted_uid = options.pointer("/preconditions/uid").and_then(Value::as_str);
    if let Some(wanted) = wanted_uid.filter(|u| !u.is_empty() && *u != uid) {
        return Err(ApiError::conflict(&call.info, name, &format!(
            "the UID in the precondition ({wanted}) does not match the UID in record ({uid}). The object might have been deleted and then recreated"
        )));
    }
    let rv = meta::meta_str(pod, "resourceVersion").unwrap_or("");
    if let Some(wanted) = precondition_rv(options).filter(|r| !r.is_empty() && *r != rv) {
        return Err(ApiError::conflict(&call.info, name, &format!(
            "the ResourceVersion in the precondition ({wanted}) does not match the ResourceVersion in record ({rv}). The object might have been modified"
        )));
    }
    Ok(())
}

/// Sets `DisruptionTarget=True` (reason `EvictionByEvictionAPI`) as the reference's
/// `UpdatePodCondition` does: the transition time only moves when the status changes.
/// Whether the pod changed.
fn set_disruption_target(pod: &mut Value, now: &str) -> bool {
    let mut condition = json!({
        "type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI",
        "message": "Eviction API: evicting", "lastProbeTime": null, "lastTransitionTime": now,
    });
    if !pod.get("status").is_some_and(Value::is_object) {
        pod["status"] = json!({});
    }
    let conditions = &mut pod["status"]["conditions"];
    if !conditions.is_array() {
        *conditions = json!([]);
    }
    let Some(list) = conditions.as_array_mut() else { return false };
    match list.iter_mut().find(|c| c["type"] == "DisruptionTarget") {
        Some(existing) => {
            if existing["status"] == condition["status"] {
                condition["lastTransitionTime"] = existing["lastTransitionTime"].clone();
                condition["lastProbeTime"] = existing["lastProbeTime"].clone();
            }
            if *existing == condition {
                return false;
            }
            *existing = condition;
        }
        None => list.push(condition),
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dry_run_of_query_and_body_must_agree() {
        let merged = merge_dry_run(None, vec![json!("All")]).unwrap();
        assert_eq!(merged, json!({"dryRun": ["All"]}));
        let body = Some(json!({"dryRun": ["All"], "gracePeriodSeconds": 5}));
        assert_eq!(merge_dry_run(body.clone(), vec![]).unwrap()["gracePeriodSeconds"], 5);
        assert!(is_dry_run(&merge_dry_run(body, vec![json!("All")]).unwrap()));
        let err =
            merge_dry_run(Some(json!({"dryRun": ["Other"]})), vec![json!("All")]).unwrap_err();
        assert_eq!(
            err.message,
            "Non-matching dry-run options in request and content: [All] and [Other]"
        );
        assert!(!is_dry_run(&merge_dry_run(None, vec![]).unwrap()));
    }

    #[test]
    fn only_running_pods_are_protected() {
        let pod = |phase: &str, deleting: bool| {
            let mut p = json!({"metadata": {}, "status": {"phase": phase}});
            if deleting {
                p["metadata"]["deletionTimestamp"] = json!("2020-01-01T00:00:00Z");
            }
            p
        };
        assert!(!can_ignore_budget(&pod("Running", false)));
        assert!(can_ignore_budget(&pod("Pending", false)));
        assert!(can_ignore_budget(&pod("Succeeded", false)));
        assert!(can_ignore_budget(&pod("Running", true)));
        // Pending pods are deleted pinned to the judged version; finished ones are not.
        assert!(enforces_resource_version(&pod("Pending", false)));
        assert!(!enforces_resource_version(&pod("Failed", false)));
    }

    #[test]
    fn a_budget_without_room_refuses_with_its_numbers() {
        let mut pdb: PodDisruptionBudget = serde_json::from_value(json!({
            "metadata": {"name": "web", "generation": 2},
            "status": {"observedGeneration": 1, "disruptionsAllowed": 1, "currentHealthy": 2,
                       "desiredHealthy": 1, "expectedPods": 2},
        }))
        .unwrap();
        let stale = check_allowed(&pdb, "web").unwrap_err();
        assert_eq!((stale.code, stale.retry_after), (429, Some(10)));
        pdb.status.as_mut().unwrap().observed_generation = Some(2);
        assert!(check_allowed(&pdb, "web").is_ok());
        pdb.status.as_mut().unwrap().disruptions_allowed = 0;
        pdb.status.as_mut().unwrap().desired_healthy = 2;
        let err = check_allowed(&pdb, "web").unwrap_err();
        assert_eq!(
            (err.code, err.reason, err.message.as_str()),
            (429, "TooManyRequests", VIOLATION)
        );
        let status = err.to_status();
        assert_eq!(status["details"]["causes"][0]["reason"], "DisruptionBudget");
        assert_eq!(
            status["details"]["causes"][0]["message"],
            "The disruption budget web needs 2 healthy pods and has 2 currently"
        );
        pdb.status.as_mut().unwrap().disruptions_allowed = -1;
        assert_eq!(check_allowed(&pdb, "web").unwrap_err().code, 403);
    }

    #[test]
    fn disruption_target_keeps_its_transition_time() {
        let mut pod = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        assert!(set_disruption_target(&mut pod, "2020-01-01T00:00:00Z"));
        assert!(!set_disruption_target(&mut pod, "2021-01-01T00:00:00Z"));
        let conditions = pod["status"]["conditions"].as_array().unwrap();
        assert_eq!(conditions.len(), 2);
        assert_eq!(conditions[1]["reason"], "EvictionByEvictionAPI");
        assert_eq!(conditions[1]["lastTransitionTime"], "2020-01-01T00:00:00Z");
    }
}
