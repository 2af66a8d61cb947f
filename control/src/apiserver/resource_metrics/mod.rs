//! The resource metrics API, `metrics.k8s.io/v1beta1`, built in: what metrics-server serves
//! through the aggregation layer, so `kubectl top nodes|pods` and autoscalers work. It stores
//! nothing: every request asks the Ready nodes concerned for their current usage over their
//! agent tunnels ([`scrape`]), in parallel and with a short timeout, and answers from that.
//!
//! - `nodes` (NodeMetrics, cluster-scoped) and `pods` (PodMetrics, namespaced), verbs `get`
//!   and `list`; lists take `labelSelector` and `fieldSelector` (matched against the Node or
//!   Pod, as metrics-server matches them).
//! - `usage.cpu` is the average over `window` (the agent's window since its previous reading,
//!   1–20 s), `usage.memory` the working set, both formatted as metrics-server does (`n`
//!   nanocores, `Ki` bytes).
//! - A node that does not answer, and a node or container without a CPU rate yet (a new
//!   container before its second reading), is left out, as metrics-server leaves them out;
//!   a pod with no container left is left out too.
//!
//! Discovery lists the group through [`infos`], which `discovery` adds to the registry's
//! resources; the resources are not in the registry itself, so no storage, watch cache,
//! OpenAPI or validation treats them as stored objects. Read access comes from the bootstrap
//! role `system:aggregated-metrics-reader` (aggregated into `view`, `edit` and `admin`).

pub mod scrape;

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode};
use serde_json::{json, Map, Value};

use super::authn::User;
use super::body::{self, ApiBody};
use super::request::{Output, Query, ResourcePath};
use super::resource::ResourceInfo;
use super::server::{ApiServer, Call};
use super::status::{ApiError, ApiResult};
use super::{list, meta, rest};
use scrape::{PodUsage, Report, Usage};

/// The API group.
pub const GROUP: &str = "metrics.k8s.io";
/// The one version served.
pub const VERSION: &str = "v1beta1";

/// The two resources, for discovery.
pub fn infos() -> Vec<Arc<ResourceInfo>> {
    let info = |kind: &str, plural: &str, namespaced: bool| {
        Arc::new(ResourceInfo {
            group: GROUP.into(),
            version: VERSION.into(),
            kind: kind.into(),
            list_kind: format!("{kind}List"),
            plural: plural.into(),
            namespaced,
            verbs: vec!["get".into(), "list".into()],
            storage_version: true,
            ..Default::default()
        })
    };
    vec![info("NodeMetrics", "nodes", false), info("PodMetrics", "pods", true)]
}

/// Whether a request is for this API.
pub(crate) fn handles(path: &ResourcePath) -> bool {
    path.group == GROUP
}

/// Serves one request of this API (already authorized).
pub(crate) async fn serve(
    server: &ApiServer,
    path: &ResourcePath,
    query: &Query,
    method: &Method,
    user: &User,
    output: Output,
) -> ApiResult<Response<ApiBody>> {
    let found = infos()
        .into_iter()
        .find(|i| {
            path.version == VERSION && i.plural == path.resource && path.subresource.is_none()
        })
        .filter(|i| i.namespaced || path.namespace.is_none());
    let Some(info) = found else { return Err(ApiError::path_not_found()) };
    let verb = if path.name.is_some() { "get" } else { "list" };
    if *method != Method::GET || path.watch_prefix || query.flag("watch") {
        let verb = if *method == Method::GET { "watch" } else { method.as_str() };
        return Err(ApiError::method_not_supported(Some(&info), verb));
    }
    let value = match (info.namespaced, &path.name) {
        (false, Some(name)) => get_node(server, &info, name).await?,
        (false, None) => list_nodes(server, query, user).await?,
        (true, Some(name)) => {
            let namespace = path.namespace.as_deref().unwrap_or("default");
            get_pod(server, &info, namespace, name).await?
        }
        (true, None) => list_pods(server, path.namespace.as_deref(), query, user).await?,
    };
    tracing::trace!(verb, resource = %info.plural, "metrics served");
    Ok(body::object_response(StatusCode::OK, &value, output))
}

/// A list call on a core resource, to read Nodes or Pods with the request's selectors.
fn core_list(
    server: &ApiServer,
    resource: &str,
    namespace: Option<&str>,
    query: &Query,
    user: &User,
) -> ApiResult<Call> {
    let info = server.inner.registry.resolve("", "v1", resource).ok_or_else(|| {
        ApiError::internal(format!("the core resource {resource} is not registered"))
    })?;
    let path = ResourcePath {
        version: "v1".into(),
        namespace: namespace.map(String::from),
        resource: resource.into(),
        ..Default::default()
    };
    // Only the selectors carry over (no paging or resourceVersion for computed objects).
    let selectors: Vec<String> = ["labelSelector", "fieldSelector"]
        .iter()
        .filter_map(|k| query.get(k).map(|v| format!("{k}={}", percent_encode(v))))
        .collect();
    Ok(Call {
        info,
        path,
        query: Query::parse(Some(&selectors.join("&"))),
        output: Output::Json,
        headers: HeaderMap::new(),
        method: Method::GET,
        body: Bytes::new(),
        user: user.clone(),
    })
}

/// Escapes a query value so that [`Query::parse`] gives it back.
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The error metrics-server gives for an object without metrics (`nodemetrics.metrics.k8s.io
/// "n1" not found`, `podmetrics.metrics.k8s.io "default/web" not found`).
fn no_metrics(info: &ResourceInfo, name: &str) -> ApiError {
    let plural = if info.namespaced { "podmetrics" } else { "nodemetrics" };
    ApiError::not_found(&ResourceInfo { plural: plural.into(), ..info.clone() }, name)
}

/// Whether a Node's `Ready` condition is `True`.
fn is_ready(node: &Value) -> bool {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn name_of(obj: &Value) -> &str {
    obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("")
}

async fn get_node(server: &ApiServer, info: &ResourceInfo, name: &str) -> ApiResult<Value> {
    let nodes = server.inner.registry.resolve("", "v1", "nodes");
    let key = nodes.map(|n| n.storage_key(None, name)).unwrap_or_default();
    let (node, _) = rest::read(server, &key).await?.ok_or_else(|| no_metrics(info, name))?;
    let reports = if is_ready(&node) {
        scrape::reports(server, vec![name.to_string()]).await
    } else {
        Default::default()
    };
    let usage = reports.get(name).and_then(|r| r.node.as_ref());
    let mut metrics =
        usage.and_then(|u| node_metrics(&node, u)).ok_or_else(|| no_metrics(info, name))?;
    metrics["kind"] = json!("NodeMetrics");
    metrics["apiVersion"] = json!(format!("{GROUP}/{VERSION}"));
    Ok(metrics)
}

async fn list_nodes(server: &ApiServer, query: &Query, user: &User) -> ApiResult<Value> {
    let call = core_list(server, "nodes", None, query, user)?;
    let (_, nodes) = list::matching_from_store(server, &call).await?;
    let ready: Vec<String> =
        nodes.iter().filter(|n| is_ready(n)).map(|n| name_of(n).to_string()).collect();
    let reports = scrape::reports(server, ready).await;
    let items: Vec<Value> = nodes
        .iter()
        .filter_map(|node| {
            let usage = reports.get(name_of(node))?.node.as_ref()?;
            node_metrics(node, usage)
        })
        .collect();
    Ok(list_of("NodeMetricsList", items))
}

async fn get_pod(
    server: &ApiServer,
    info: &ResourceInfo,
    namespace: &str,
    name: &str,
) -> ApiResult<Value> {
    let qualified = format!("{namespace}/{name}");
    let pods = server.inner.registry.resolve("", "v1", "pods");
    let key = pods.map(|p| p.storage_key(Some(namespace), name)).unwrap_or_default();
    let (pod, _) = rest::read(server, &key).await?.ok_or_else(|| no_metrics(info, &qualified))?;
    let mut items = pods_metrics(server, vec![pod]).await?;
    let mut metrics = items.pop().ok_or_else(|| no_metrics(info, &qualified))?;
    metrics["kind"] = json!("PodMetrics");
    metrics["apiVersion"] = json!(format!("{GROUP}/{VERSION}"));
    Ok(metrics)
}

async fn list_pods(
    server: &ApiServer,
    namespace: Option<&str>,
    query: &Query,
    user: &User,
) -> ApiResult<Value> {
    let call = core_list(server, "pods", namespace, query, user)?;
    let (_, pods) = list::matching_from_store(server, &call).await?;
    Ok(list_of("PodMetricsList", pods_metrics(server, pods).await?))
}

/// The metrics of those `pods` whose Ready node reports them.
async fn pods_metrics(server: &ApiServer, pods: Vec<Value>) -> ApiResult<Vec<Value>> {
    let wanted: HashSet<&str> =
        pods.iter().filter_map(|p| p.pointer("/spec/nodeName").and_then(Value::as_str)).collect();
    let nodes_info = server.inner.registry.resolve("", "v1", "nodes");
    let mut ready = Vec::new();
    for node in wanted {
        let key = nodes_info.as_ref().map(|n| n.storage_key(None, node)).unwrap_or_default();
        if rest::read(server, &key).await?.is_some_and(|(n, _)| is_ready(&n)) {
            ready.push(node.to_string());
        }
    }
    let reports = scrape::reports(server, ready).await;
    Ok(pods
        .iter()
        .filter_map(|pod| {
            let node = pod.pointer("/spec/nodeName").and_then(Value::as_str)?;
            let uid = pod.pointer("/metadata/uid").and_then(Value::as_str)?;
            let usage = find_pod(reports.get(node)?, uid)?;
            pod_metrics(pod, usage)
        })
        .collect())
}

fn find_pod<'a>(report: &'a Report, uid: &str) -> Option<&'a PodUsage> {
    report.pods.iter().find(|p| p.uid == uid)
}

fn list_of(kind: &str, items: Vec<Value>) -> Value {
    json!({"kind": kind, "apiVersion": format!("{GROUP}/{VERSION}"), "metadata": {}, "items": items})
}

/// The metadata metrics-server gives a metrics object: the object's name, namespace and
/// labels, created now.
fn metadata(obj: &Value) -> Value {
    let mut meta = Map::new();
    meta.insert("name".into(), json!(name_of(obj)));
    if let Some(ns) = obj.pointer("/metadata/namespace") {
        meta.insert("namespace".into(), ns.clone());
    }
    meta.insert("creationTimestamp".into(), json!(meta::now_rfc3339()));
    if let Some(labels) = obj.pointer("/metadata/labels").filter(|l| l.is_object()) {
        meta.insert("labels".into(), labels.clone());
    }
    Value::Object(meta)
}

/// `usage` of a reading with a rate, else `None`.
fn usage_json(usage: &Usage) -> Option<Value> {
    let cores = usage.cpu_usage_nano_cores?;
    Some(
        json!({"cpu": cpu_quantity(cores), "memory": memory_quantity(usage.memory_working_set_bytes)}),
    )
}

/// A NodeMetrics item for `node`, or `None` while its usage has no rate.
fn node_metrics(node: &Value, usage: &Usage) -> Option<Value> {
    Some(json!({
        "metadata": metadata(node),
        "timestamp": usage.timestamp,
        "window": go_duration(usage.window_seconds?),
        "usage": usage_json(usage)?,
    }))
}

/// A PodMetrics item for `pod`: its containers that have a rate; `None` when none has.
fn pod_metrics(pod: &Value, usage: &PodUsage) -> Option<Value> {
    let with_rate: Vec<(&str, &Usage, Value)> = usage
        .containers
        .iter()
        .filter_map(|c| Some((c.name.as_str(), &c.usage, usage_json(&c.usage)?)))
        .collect();
    let window = with_rate.iter().filter_map(|(_, u, _)| u.window_seconds).fold(0.0, f64::max);
    let timestamp = with_rate.first()?.1.timestamp.clone();
    let containers: Vec<Value> = with_rate
        .into_iter()
        .map(|(name, _, usage)| json!({"name": name, "usage": usage}))
        .collect();
    Some(json!({
        "metadata": metadata(pod),
        "timestamp": timestamp,
        "window": go_duration(window),
        "containers": containers,
    }))
}

/// Nanocores as a canonical decimal quantity (`250m`, `2`, `1234567n`).
pub fn cpu_quantity(nano_cores: u64) -> String {
    match nano_cores {
        0 => "0".into(),
        n if n.is_multiple_of(1_000_000_000) => format!("{}", n / 1_000_000_000),
        n if n.is_multiple_of(1_000_000) => format!("{}m", n / 1_000_000),
        n if n.is_multiple_of(1_000) => format!("{}u", n / 1_000),
        n => format!("{n}n"),
    }
}

/// Bytes as a canonical binary quantity (`5Mi`, `1234Ki`, `1000`).
pub fn memory_quantity(bytes: u64) -> String {
    const SUFFIXES: [(&str, u32); 4] = [("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)];
    if bytes == 0 {
        return "0".into();
    }
    SUFFIXES
        .iter()
        .find(|(_, shift)| bytes.is_multiple_of(1u64 << shift))
        .map(|(suffix, shift)| format!("{}{suffix}", bytes >> shift))
        .unwrap_or_else(|| bytes.to_string())
}

/// Seconds in Go's `time.Duration` text (`10.5s`, `1m0.25s`, `0s`), as `metav1.Duration`.
pub fn go_duration(seconds: f64) -> String {
    let total_ms = (seconds.max(0.0) * 1000.0).round() as u64;
    let (minutes, ms) = (total_ms / 60_000, total_ms % 60_000);
    let secs = if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        let frac = format!("{:03}", ms % 1000);
        format!("{}.{}s", ms / 1000, frac.trim_end_matches('0'))
    };
    if minutes > 0 {
        format!("{minutes}m{secs}")
    } else {
        secs
    }
}

#[cfg(test)]
mod tests;
