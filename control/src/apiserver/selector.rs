//! Label and field selectors, parsed once per request and matched against JSON objects.
//!
//! Label selectors follow `k8s.io/apimachinery/pkg/labels`: `k=v`, `k==v`, `k!=v`,
//! `k in (a,b)`, `k notin (a,b)`, `k` (exists) and `!k`. Field selectors support `=`, `==` and
//! `!=` on `metadata.name`, `metadata.namespace` and the per-kind fields the reference serves.

use serde_json::Value;

use super::resource::ResourceInfo;
use super::status::ApiError;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Equals(String),
    NotEquals(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
}

/// A parsed label selector; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<(String, Op)>,
}

/// Splits at top-level commas (not inside parentheses).
fn split_top(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn set_values(rest: &str, selector: &str) -> Result<Vec<String>, ApiError> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| bad_label(selector, "expected a parenthesised set of values"))?;
    Ok(inner.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect())
}

fn bad_label(selector: &str, why: &str) -> ApiError {
    ApiError::bad_request(format!(
        "unable to parse requirement: {why} in label selector {selector:?}"
    ))
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 317
        && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

impl LabelSelector {
    /// Parses `labelSelector`.
    pub fn parse(selector: &str) -> Result<LabelSelector, ApiError> {
        let mut requirements = Vec::new();
        if selector.trim().is_empty() {
            return Ok(LabelSelector { requirements });
        }
        for part in split_top(selector) {
            let part = part.trim();
            if part.is_empty() {
                return Err(bad_label(selector, "empty requirement"));
            }
            let (key, op) = if let Some(key) = part.strip_prefix('!') {
                (key.trim().to_string(), Op::DoesNotExist)
            } else if let Some((k, v)) = part.split_once("!=") {
                (k.trim().to_string(), Op::NotEquals(v.trim().to_string()))
            } else if let Some((k, v)) = part.split_once("==") {
                (k.trim().to_string(), Op::Equals(v.trim().to_string()))
            } else if let Some((k, v)) = part.split_once('=') {
                (k.trim().to_string(), Op::Equals(v.trim().to_string()))
            } else if let Some((k, v)) = part.split_once(" notin ") {
                (k.trim().to_string(), Op::NotIn(set_values(v, selector)?))
            } else if let Some((k, v)) = part.split_once(" in ") {
                (k.trim().to_string(), Op::In(set_values(v, selector)?))
            } else {
                (part.to_string(), Op::Exists)
            };
            if !valid_key(&key) {
                return Err(bad_label(selector, &format!("invalid label key {key:?}")));
            }
            requirements.push((key, op));
        }
        Ok(LabelSelector { requirements })
    }

    /// True when the selector has no requirement.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether an object's labels satisfy every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels");
        self.requirements.iter().all(|(key, op)| {
            let value = labels.and_then(|l| l.get(key)).and_then(Value::as_str);
            match op {
                Op::Equals(v) => value == Some(v.as_str()),
                Op::NotEquals(v) => value != Some(v.as_str()),
                Op::In(set) => value.is_some_and(|x| set.iter().any(|s| s == x)),
                Op::NotIn(set) => !value.is_some_and(|x| set.iter().any(|s| s == x)),
                Op::Exists => value.is_some(),
                Op::DoesNotExist => value.is_none(),
            }
        })
    }
}

/// A parsed field selector; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    /// (JSON path segments, wanted value, equal?)
    requirements: Vec<(String, String, bool)>,
}

/// The fields a kind can be selected on, besides `metadata.name` and `metadata.namespace`.
fn kind_fields(info: &ResourceInfo) -> &'static [&'static str] {
    match (info.group.as_str(), info.kind.as_str()) {
        ("", "Pod") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        ("", "Event") | ("events.k8s.io", "Event") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
            "regarding.kind",
            "regarding.name",
            "regarding.namespace",
        ],
        ("", "Secret") => &["type"],
        ("", "Node") => &["spec.unschedulable"],
        ("", "Namespace") => &["status.phase"],
        ("", "ReplicationController") | ("apps", "ReplicaSet") => &["status.replicas"],
        ("batch", "Job") => &["status.successful"],
        ("certificates.k8s.io", "CertificateSigningRequest") => &["spec.signerName"],
        // A Skerry extension: the node a volume is pinned to (what a node's agent lists).
        ("", "PersistentVolume") => &[super::authz::node::PINNED_NODE_FIELD],
        _ => &[],
    }
}

impl FieldSelector {
    /// Parses `fieldSelector` for a resource; unknown fields are a 400 as in the reference.
    pub fn parse(selector: &str, info: &ResourceInfo) -> Result<FieldSelector, ApiError> {
        let mut requirements = Vec::new();
        for part in selector.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, value, equal) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, v, true)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, v, true)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{selector}'; can't understand '{part}'"
                )));
            };
            let field = field.trim();
            let known = matches!(field, "metadata.name" | "metadata.namespace")
                || kind_fields(info).contains(&field);
            if !known {
                return Err(ApiError::bad_request(format!("field label not supported: {field}")));
            }
            requirements.push((field.to_string(), value.trim().to_string(), equal));
        }
        Ok(FieldSelector { requirements })
    }

    /// True when the selector has no requirement.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether an object's fields satisfy every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        self.requirements.iter().all(|(field, want, equal)| {
            let actual = field_value(object, field);
            (actual == *want) == *equal
        })
    }

    /// The `metadata.name` an equality requirement pins, if any (lets lists skip a scan).
    pub fn exact_name(&self) -> Option<&str> {
        self.requirements
            .iter()
            .find(|(f, _, eq)| *eq && f == "metadata.name")
            .map(|(_, v, _)| v.as_str())
    }
}

/// A field's value as the reference renders it for selection (missing = empty string).
fn field_value(object: &Value, field: &str) -> String {
    if field == super::authz::node::PINNED_NODE_FIELD {
        return super::authz::node::pinned_node(object).unwrap_or_default().to_string();
    }
    let pointer = format!("/{}", field.replace('.', "/"));
    match object.pointer(&pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        // `source` on core events is an object; the reference selects on its component.
        Some(Value::Object(o)) => {
            o.get("component").and_then(Value::as_str).unwrap_or_default().to_string()
        }
        _ => {
            // Booleans the reference defaults to false when absent.
            if matches!(field, "spec.unschedulable" | "spec.hostNetwork") {
                "false".to_string()
            } else {
                String::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({"metadata": {"name": "web-1", "namespace": "default", "labels": {"app": "web", "tier": "front"}},
               "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}})
    }

    #[test]
    fn label_selector_operators() {
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(&pod());
        assert!(m("app=web"));
        assert!(m("app==web,tier"));
        assert!(!m("app!=web"));
        assert!(m("tier in (front, back),app notin (db)"));
        assert!(!m("tier notin (front)"));
        assert!(m("!missing"));
        assert!(!m("!app"));
        assert!(m(""));
        assert_eq!(LabelSelector::parse("a in b").unwrap_err().code, 400);
        assert_eq!(LabelSelector::parse("a b=c").unwrap_err().code, 400);
    }

    #[test]
    fn field_selector_per_kind_fields() {
        let pods =
            crate::apiserver::resource::Registry::builtin().resolve("", "v1", "pods").unwrap();
        let m = |s: &str| FieldSelector::parse(s, &pods).unwrap().matches(&pod());
        assert!(m("metadata.name=web-1"));
        assert!(m("spec.nodeName=n1,status.phase!=Pending"));
        assert!(!m("status.phase=Pending"));
        assert!(m("spec.hostNetwork=false"));
        assert_eq!(FieldSelector::parse("spec.bogus=1", &pods).unwrap_err().code, 400);
        assert_eq!(FieldSelector::parse("nonsense", &pods).unwrap_err().code, 400);
    }
}
