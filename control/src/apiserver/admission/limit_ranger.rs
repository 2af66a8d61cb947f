//! LimitRanger: the namespace's LimitRanges applied to new pods and to claims, as the
//! reference's plugin does.
//!
//! - mutate (pods, on create): a container or init container without a limit or request for a
//!   resource gets the `default` / `defaultRequest` of the `Container` items, and the pod is
//!   annotated `kubernetes.io/limit-ranger: LimitRanger plugin set: cpu, memory request for
//!   container app; …`;
//! - validate (pods on create, claims on create and update): `min`, `max` and
//!   `maxLimitRequestRatio` of the `Container` and `Pod` items, `min`/`max` storage of the
//!   `PersistentVolumeClaim` items; a violation is 403 with the reference's messages.
//!
//! Pod updates are not checked (pod resources are immutable apart from the reference's
//! in-place resize). The LimitRange's own defaulting (`default` from `max`, `defaultRequest`
//! from `default` or `min`) is applied here on read, so it holds for stored LimitRanges that
//! never went through it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::resource_quota::quantity::Quantity;
use super::resource_quota::usage::{container_list, pod_total, ResourceList};
use super::{cached, Operation, Request};
use crate::apiserver::meta;
use crate::apiserver::server::ApiServer;
use crate::apiserver::status::{ApiError, ApiResult};
use crate::apiserver::watch_cache::CachedObject;

/// The annotation listing what the plugin set.
pub const ANNOTATION: &str = "kubernetes.io/limit-ranger";

/// One `spec.limits` item, after the reference's defaulting. Amounts keep their JSON text so a
/// default is copied into a pod as it was written.
#[derive(Debug, Clone, Default)]
struct Item {
    kind: String,
    max: BTreeMap<String, Value>,
    min: BTreeMap<String, Value>,
    default: BTreeMap<String, Value>,
    default_request: BTreeMap<String, Value>,
    ratio: BTreeMap<String, Value>,
}

fn map_of(item: &Value, field: &str) -> BTreeMap<String, Value> {
    let map = item.get(field).and_then(Value::as_object);
    map.into_iter().flatten().map(|(k, v)| (k.clone(), v.clone())).collect()
}

impl Item {
    fn from_json(item: &Value) -> Item {
        let mut out = Item {
            kind: item.get("type").and_then(Value::as_str).unwrap_or_default().to_string(),
            max: map_of(item, "max"),
            min: map_of(item, "min"),
            default: map_of(item, "default"),
            default_request: map_of(item, "defaultRequest"),
            ratio: map_of(item, "maxLimitRequestRatio"),
        };
        if out.kind == "Container" {
            // SetDefaults_LimitRangeItem: a missing default limit is the max; a missing default
            // request is the default limit, else the min.
            for (k, v) in &out.max {
                out.default.entry(k.clone()).or_insert_with(|| v.clone());
            }
            for (k, v) in out.default.iter().chain(&out.min) {
                out.default_request.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        out
    }
}

/// The items of each LimitRange of a namespace, in name order.
fn items_of<'a>(limit_ranges: impl IntoIterator<Item = &'a Value>) -> Vec<Vec<Item>> {
    limit_ranges
        .into_iter()
        .map(|lr| {
            let items = lr.pointer("/spec/limits").and_then(Value::as_array);
            items.into_iter().flatten().map(Item::from_json).collect()
        })
        .collect()
}

/// The namespace's LimitRanges, from the watch cache (see [`cached`]).
async fn read_limit_ranges(
    server: &ApiServer,
    namespace: &str,
) -> ApiResult<Vec<Arc<CachedObject>>> {
    cached::list(server, ("", "v1", "limitranges"), Some(namespace)).await
}

/// Which objects the plugin looks at: pods on create, claims on create and update.
fn concerns(request: &Request<'_>) -> bool {
    (request.is_main("", "Pod") && request.operation == Operation::Create)
        || request.is_main("", "PersistentVolumeClaim")
}

/// Sets the LimitRanges' defaults on a new pod.
pub(crate) async fn mutate(
    server: &ApiServer,
    request: &mut Request<'_>,
    obj: &mut Value,
) -> ApiResult<()> {
    if !(request.is_main("", "Pod") && request.operation == Operation::Create) {
        return Ok(());
    }
    let Some(namespace) = request.call.namespace() else { return Ok(()) };
    let limit_ranges = read_limit_ranges(server, namespace).await?;
    for items in items_of(cached::values(&limit_ranges)) {
        apply_defaults(&items, obj);
    }
    Ok(())
}

/// Refuses a pod or claim outside the LimitRanges' bounds.
pub(crate) async fn validate(
    server: &ApiServer,
    request: &mut Request<'_>,
    obj: &Value,
) -> ApiResult<()> {
    if !concerns(request) {
        return Ok(());
    }
    let Some(namespace) = request.call.namespace() else { return Ok(()) };
    let limit_ranges = read_limit_ranges(server, namespace).await?;
    let is_pod = request.call.info.kind == "Pod";
    let mut errors = Vec::new();
    for items in items_of(cached::values(&limit_ranges)) {
        if is_pod {
            errors.extend(validate_pod(&items, obj));
        } else {
            errors.extend(validate_claim(&items, obj));
        }
    }
    match aggregate(errors) {
        Some(why) => Err(ApiError::forbidden(&request.call.info, request.name, &why)),
        None => Ok(()),
    }
}

/// The reference's aggregate error text: one message alone, several deduplicated in brackets.
fn aggregate(errors: Vec<String>) -> Option<String> {
    let mut seen = BTreeSet::new();
    let unique: Vec<String> = errors.into_iter().filter(|e| seen.insert(e.clone())).collect();
    match unique.len() {
        0 => None,
        1 => unique.into_iter().next(),
        _ => Some(format!("[{}]", unique.join(", "))),
    }
}

/// Fills in the `Container` items' defaults; returns nothing, annotates the pod.
fn apply_defaults(items: &[Item], pod: &mut Value) {
    let mut limits = BTreeMap::new();
    let mut requests = BTreeMap::new();
    for item in items.iter().filter(|i| i.kind == "Container") {
        limits.extend(item.default.clone());
        requests.extend(item.default_request.clone());
    }
    if limits.is_empty() && requests.is_empty() {
        return;
    }
    let mut notes = Vec::new();
    for (field, label) in [("containers", "container"), ("initContainers", "init container")] {
        let Some(list) = pod.pointer_mut(&format!("/spec/{field}")).and_then(Value::as_array_mut)
        else {
            continue;
        };
        for container in list.iter_mut().filter(|c| c.is_object()) {
            let name = container.get("name").and_then(Value::as_str).unwrap_or_default();
            let name = name.to_string();
            if !container.get("resources").is_some_and(Value::is_object) {
                container["resources"] = json!({});
            }
            let resources = &mut container["resources"];
            let set_requests = merge(resources, "requests", &requests);
            let set_limits = merge(resources, "limits", &limits);
            if !set_requests.is_empty() {
                notes.push(format!("{} request for {label} {name}", set_requests.join(", ")));
            }
            if !set_limits.is_empty() {
                notes.push(format!("{} limit for {label} {name}", set_limits.join(", ")));
            }
        }
    }
    if notes.is_empty() {
        return;
    }
    let annotation = format!("LimitRanger plugin set: {}", notes.join("; "));
    let Some(metadata) = meta::metadata_mut(pod) else { return };
    let annotations = metadata.entry("annotations").or_insert_with(|| json!({}));
    if !annotations.is_object() {
        *annotations = json!({});
    }
    if let Some(map) = annotations.as_object_mut() {
        map.insert(ANNOTATION.into(), json!(annotation));
    }
}

/// Adds the `defaults` missing from `resources[which]`; returns the names added, sorted.
fn merge(resources: &mut Value, which: &str, defaults: &BTreeMap<String, Value>) -> Vec<String> {
    if defaults.is_empty() {
        return Vec::new();
    }
    if !resources.get(which).is_some_and(Value::is_object) {
        resources[which] = Value::Object(Map::new());
    }
    let mut added = Vec::new();
    if let Some(map) = resources[which].as_object_mut() {
        for (name, value) in defaults {
            if !map.contains_key(name) {
                map.insert(name.clone(), value.clone());
                added.push(name.clone());
            }
        }
    }
    if resources[which].as_object().is_some_and(Map::is_empty) {
        // Nothing to default and nothing set: leave no empty map behind.
        if let Some(obj) = resources.as_object_mut() {
            obj.remove(which);
        }
    }
    added
}

/// The bounds of one item over one set of requests and limits (a container's or the pod's).
fn check_bounds(
    kind: &str,
    item: &Item,
    requests: &ResourceList,
    limits: &ResourceList,
) -> Vec<String> {
    let mut errors = Vec::new();
    for (resource, enforced) in &item.min {
        let Some(enforced) = Quantity::from_json(enforced) else { continue };
        errors.extend(min_constraint(kind, resource, enforced, requests, limits));
    }
    for (resource, enforced) in &item.max {
        let Some(enforced) = Quantity::from_json(enforced) else { continue };
        errors.extend(max_constraint(kind, resource, enforced, requests, limits));
    }
    for (resource, enforced) in &item.ratio {
        let Some(enforced) = Quantity::from_json(enforced) else { continue };
        errors.extend(ratio_constraint(kind, resource, enforced, requests, limits));
    }
    errors
}

fn validate_pod(items: &[Item], pod: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    for item in items {
        match item.kind.as_str() {
            "Container" => {
                for container in super::resource_quota::usage::containers(pod) {
                    let requests = container_list(container, "requests");
                    let limits = container_list(container, "limits");
                    errors.extend(check_bounds("Container", item, &requests, &limits));
                }
            }
            "Pod" => {
                let requests = pod_total(pod, "requests");
                let limits = pod_total(pod, "limits");
                errors.extend(check_bounds("Pod", item, &requests, &limits));
            }
            _ => {}
        }
    }
    errors
}

fn validate_claim(items: &[Item], claim: &Value) -> Vec<String> {
    let requests =
        super::resource_quota::usage::from_json_map(claim.pointer("/spec/resources/requests"));
    let mut errors = Vec::new();
    for item in items.iter().filter(|i| i.kind == "PersistentVolumeClaim") {
        for (resource, enforced) in &item.min {
            let Some(enforced) = Quantity::from_json(enforced) else { continue };
            errors.extend(min_constraint(
                "PersistentVolumeClaim",
                resource,
                enforced,
                &requests,
                &ResourceList::new(),
            ));
        }
        for (resource, enforced) in &item.max {
            let Some(enforced) = Quantity::from_json(enforced) else { continue };
            // Only the request is the user's input for a claim.
            let kind = "PersistentVolumeClaim";
            match requests.get(resource) {
                None => errors.push(format!(
                    "maximum {resource} usage per {kind} is {enforced}.  No request is specified"
                )),
                Some(req) if *req > enforced => errors.push(format!(
                    "maximum {resource} usage per {kind} is {enforced}, but request is {req}"
                )),
                Some(_) => {}
            }
        }
    }
    errors
}

fn min_constraint(
    kind: &str,
    resource: &str,
    enforced: Quantity,
    requests: &ResourceList,
    limits: &ResourceList,
) -> Option<String> {
    let Some(req) = requests.get(resource) else {
        return Some(format!(
            "minimum {resource} usage per {kind} is {enforced}.  No request is specified"
        ));
    };
    if *req < enforced {
        return Some(format!(
            "minimum {resource} usage per {kind} is {enforced}, but request is {req}"
        ));
    }
    match limits.get(resource) {
        Some(lim) if *lim < enforced => {
            Some(format!("minimum {resource} usage per {kind} is {enforced}, but limit is {lim}"))
        }
        _ => None,
    }
}

fn max_constraint(
    kind: &str,
    resource: &str,
    enforced: Quantity,
    requests: &ResourceList,
    limits: &ResourceList,
) -> Option<String> {
    let Some(lim) = limits.get(resource) else {
        return Some(format!(
            "maximum {resource} usage per {kind} is {enforced}.  No limit is specified"
        ));
    };
    if *lim > enforced {
        return Some(format!(
            "maximum {resource} usage per {kind} is {enforced}, but limit is {lim}"
        ));
    }
    match requests.get(resource) {
        Some(req) if *req > enforced => {
            Some(format!("maximum {resource} usage per {kind} is {enforced}, but request is {req}"))
        }
        _ => None,
    }
}

fn ratio_constraint(
    kind: &str,
    resource: &str,
    enforced: Quantity,
    requests: &ResourceList,
    limits: &ResourceList,
) -> Option<String> {
    let req = requests.get(resource).filter(|q| !q.is_zero());
    let Some(req) = req else {
        return Some(format!(
            "{resource} max limit to request ratio per {kind} is {enforced}, but no request is specified or request is 0"
        ));
    };
    let lim = limits.get(resource).filter(|q| !q.is_zero());
    let Some(lim) = lim else {
        return Some(format!(
            "{resource} max limit to request ratio per {kind} is {enforced}, but no limit is specified or limit is 0"
        ));
    };
    // Compare limit/request with the ratio exactly: lim * 1000 > ratio_milli * req.
    if lim.milli * 1000 > enforced.milli * req.milli {
        let observed = lim.milli as f64 / req.milli as f64;
        return Some(format!(
            "{resource} max limit to request ratio per {kind} is {enforced}, but provided ratio is {observed:.6}"
        ));
    }
    None
}

#[cfg(test)]
#[path = "limit_ranger_tests.rs"]
mod tests;
