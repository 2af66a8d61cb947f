//! The downward API: a pod's own fields (`fieldRef`) and its containers' resources
//! (`resourceFieldRef`) as strings, shared by env vars (`env`) and downwardAPI/projected
//! volumes (`volumes`).
//!
//! Mirrors kubelet's `podFieldSelectorRuntimeValue`, `fieldpath.ExtractFieldPathAsString` and
//! `resource.ExtractContainerResourceValue` (limits default to node allocatable, values rounded
//! up in the divisor's unit), including their error messages.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, ObjectFieldSelector, Pod, ResourceFieldSelector};

use super::quantity::{div_ceil, Quantity};
use super::{EnvError, NodeFacts};

/// Which fields a caller may read: env vars also see spec and status fields, volumes only
/// `metadata.*` (as the API server validates them).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldScope {
    Env,
    Volume,
}

/// The value of `selector` for `pod` (kubelet's `podFieldSelectorRuntimeValue`).
pub(crate) fn field_value(
    selector: &ObjectFieldSelector,
    pod: &Pod,
    node: &NodeFacts,
    scope: FieldScope,
) -> Result<String, EnvError> {
    let version = selector.api_version.as_deref().unwrap_or("v1");
    if version != "v1" {
        return Err(EnvError::FieldPath(format!("unsupported pod version: {version}")));
    }
    let path = selector.field_path.as_str();
    if scope == FieldScope::Env {
        let spec = pod.spec.as_ref();
        match path {
            "spec.nodeName" => {
                return Ok(spec.and_then(|s| s.node_name.clone()).unwrap_or_default())
            }
            "spec.serviceAccountName" => {
                return Ok(spec.and_then(|s| s.service_account_name.clone()).unwrap_or_default())
            }
            "status.hostIP" => return Ok(node.host_ips().first().cloned().unwrap_or_default()),
            "status.hostIPs" => return Ok(node.host_ips().join(",")),
            "status.podIP" => {
                return Ok(node.sorted_pod_ips().first().cloned().unwrap_or_default())
            }
            "status.podIPs" => return Ok(node.sorted_pod_ips().join(",")),
            _ => {}
        }
    }
    metadata_value(pod, path)
}

/// `fieldpath.ExtractFieldPathAsString` for a pod: `metadata.*`, with `labels['k']` subscripts.
fn metadata_value(pod: &Pod, path: &str) -> Result<String, EnvError> {
    let meta = &pod.metadata;
    let empty = BTreeMap::new();
    let labels = meta.labels.as_ref().unwrap_or(&empty);
    let annotations = meta.annotations.as_ref().unwrap_or(&empty);
    if let Some((base, key)) = split_subscript(path) {
        return match base {
            "metadata.annotations" => Ok(annotations.get(key).cloned().unwrap_or_default()),
            "metadata.labels" => Ok(labels.get(key).cloned().unwrap_or_default()),
            _ => Err(EnvError::FieldPath(format!("fieldPath {path:?} does not support subscript"))),
        };
    }
    match path {
        "metadata.annotations" => Ok(format_map(annotations)),
        "metadata.labels" => Ok(format_map(labels)),
        "metadata.name" => Ok(meta.name.clone().unwrap_or_default()),
        "metadata.namespace" => Ok(meta.namespace.clone().unwrap_or_default()),
        "metadata.uid" => Ok(meta.uid.clone().unwrap_or_default()),
        _ => Err(EnvError::FieldPath(format!("unsupported fieldPath: {path}"))),
    }
}

/// `metadata.labels['app']` → (`metadata.labels`, `app`).
fn split_subscript(path: &str) -> Option<(&str, &str)> {
    let inner = path.strip_suffix("']")?;
    let (base, key) = inner.split_once("['")?;
    (!base.is_empty()).then_some((base, key))
}

/// `k="v"` lines in key order (apimachinery's `FormatMap`, values quoted like Go's `%q`).
fn format_map(map: &BTreeMap<String, String>) -> String {
    map.iter().map(|(k, v)| format!("{k}={}", go_quote(v))).collect::<Vec<_>>().join("\n")
}

/// Go's `strconv.Quote`: printable characters as they are, the rest escaped.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The value of `selector` for `container` (kubelet's `ExtractContainerResourceValue` on the
/// container with limits defaulted to the node's allocatable).
pub(crate) fn resource_value(
    selector: &ResourceFieldSelector,
    container: &Container,
    node: &NodeFacts,
) -> Result<String, EnvError> {
    let divisor = match &selector.divisor {
        Some(d) => parse(&d.0)?,
        None => Quantity::ONE,
    };
    // An unset or zero divisor means 1, as in kubelet.
    let divisor = if divisor.is_zero() { Quantity::ONE } else { divisor };
    let resources = container.resources.as_ref();
    let get = |requests: bool, name: &str| -> Result<Option<Quantity>, EnvError> {
        let map =
            resources.and_then(|r| if requests { r.requests.as_ref() } else { r.limits.as_ref() });
        map.and_then(|m| m.get(name)).map(|q| parse(&q.0)).transpose()
    };
    let zero = Quantity::ZERO;
    let (amount, cpu) = match selector.resource.as_str() {
        "limits.cpu" => {
            (get(false, "cpu")?.unwrap_or(Quantity::from_millis(node.allocatable_cpu_millis)), true)
        }
        "limits.memory" => {
            (get(false, "memory")?.unwrap_or(Quantity::from_units(node.allocatable_memory)), false)
        }
        "limits.ephemeral-storage" => (
            get(false, "ephemeral-storage")?
                .unwrap_or(Quantity::from_units(node.allocatable_ephemeral_storage)),
            false,
        ),
        "requests.cpu" => (get(true, "cpu")?.unwrap_or(zero), true),
        "requests.memory" => (get(true, "memory")?.unwrap_or(zero), false),
        "requests.ephemeral-storage" => (get(true, "ephemeral-storage")?.unwrap_or(zero), false),
        other => match other.split_once('.') {
            Some((kind @ ("requests" | "limits"), name)) if name.starts_with("hugepages-") => {
                (get(kind == "requests", name)?.unwrap_or(zero), false)
            }
            _ => {
                return Err(EnvError::FieldPath(format!(
                    "unsupported container resource : {other}"
                )))
            }
        },
    };
    // CPU compares in millicores, everything else in units, as kubelet does.
    let value = if cpu {
        div_ceil(amount.milli_value() as i128, (divisor.milli_value() as i128).max(1))
    } else {
        div_ceil(amount.value() as i128, (divisor.value() as i128).max(1))
    };
    Ok(value.to_string())
}

fn parse(text: &str) -> Result<Quantity, EnvError> {
    Quantity::parse(text).map_err(|e| EnvError::FieldPath(format!("{text:?}: {e}")))
}
