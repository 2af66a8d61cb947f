//! The matching rules the filters and scores share: label selectors, node selector terms
//! (`matchExpressions` with In/NotIn/Exists/DoesNotExist/Gt/Lt, `matchFields` on
//! `metadata.name`), a pod's required node affinity, and tolerations against taints.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Labels of an object, empty when it has none.
pub fn labels_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> &BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    meta.labels.as_ref().unwrap_or(&EMPTY)
}

/// Whether `selector` selects `labels` (an empty selector selects everything).
pub fn label_selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_label = selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    by_label
        && selector.match_expressions.iter().flatten().all(|e| {
            let values = e.values.as_deref().unwrap_or_default();
            let value = labels.get(&e.key);
            match e.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                // An unknown operator selects nothing (validation rejects it anyway).
                _ => false,
            }
        })
}

/// Whether one node selector requirement holds for `value` (the label's or field's value).
fn requirement_matches(req: &NodeSelectorRequirement, value: Option<&String>) -> bool {
    let values = req.values.as_deref().unwrap_or_default();
    let as_int = |s: &str| s.parse::<i64>().ok();
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        // Gt/Lt compare integers; a non-integer label or a malformed bound matches nothing.
        "Gt" | "Lt" => {
            let (Some(actual), Some(bound)) =
                (value.and_then(|v| as_int(v)), values.first().and_then(|v| as_int(v)))
            else {
                return false;
            };
            if req.operator == "Gt" {
                actual > bound
            } else {
                actual < bound
            }
        }
        _ => false,
    }
}

/// Whether `node` satisfies one node selector term (an empty term matches no node, as in the
/// reference).
pub fn node_selector_term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let expressions = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if expressions.is_empty() && fields.is_empty() {
        return false;
    }
    let labels = labels_of(&node.metadata);
    let name = node.metadata.name.clone().unwrap_or_default();
    expressions.iter().all(|r| requirement_matches(r, labels.get(&r.key)))
        && fields.iter().all(|r| {
            // `metadata.name` is the only field the reference supports.
            r.key == "metadata.name" && requirement_matches(r, Some(&name))
        })
}

/// Whether `node` matches `pod`'s `nodeSelector` and required node affinity (terms are ORed).
pub fn required_node_affinity_matches(pod: &Pod, node: &Node) -> bool {
    let Some(spec) = &pod.spec else { return true };
    let labels = labels_of(&node.metadata);
    if !spec.node_selector.iter().flatten().all(|(k, v)| labels.get(k) == Some(v)) {
        return false;
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| n.required_during_scheduling_ignored_during_execution.as_ref());
    match required {
        Some(selector) => {
            selector.node_selector_terms.iter().any(|t| node_selector_term_matches(t, node))
        }
        None => true,
    }
}

/// Whether `toleration` tolerates `taint`.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect_ok = toleration.effect.as_deref().is_none_or(|e| e.is_empty() || e == taint.effect);
    if !effect_ok {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or("");
    let operator = toleration.operator.as_deref().unwrap_or("Equal");
    if key.is_empty() {
        // An empty key with Exists tolerates everything.
        return operator == "Exists";
    }
    if key != taint.key {
        return false;
    }
    match operator {
        "Exists" => true,
        "Equal" | "" => {
            toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

/// The pod's tolerations.
pub fn tolerations_of(pod: &Pod) -> &[Toleration] {
    pod.spec.as_ref().and_then(|s| s.tolerations.as_deref()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(labels: serde_json::Value) -> Node {
        serde_json::from_value(json!({"metadata": {"name": "n1", "labels": labels}})).unwrap()
    }

    fn term(value: serde_json::Value) -> NodeSelectorTerm {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn node_selector_operators() {
        let n = node(json!({"zone": "a", "cores": "8"}));
        let cases = [
            (
                json!({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}),
                true,
            ),
            (
                json!({"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}),
                false,
            ),
            (
                json!({"matchExpressions": [{"key": "gpu", "operator": "NotIn", "values": ["x"]}]}),
                true,
            ),
            (json!({"matchExpressions": [{"key": "zone", "operator": "Exists"}]}), true),
            (json!({"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]}), false),
            (
                json!({"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["4"]}]}),
                true,
            ),
            (
                json!({"matchExpressions": [{"key": "cores", "operator": "Lt", "values": ["4"]}]}),
                false,
            ),
            (
                json!({"matchExpressions": [{"key": "zone", "operator": "Gt", "values": ["4"]}]}),
                false,
            ),
            (
                json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}),
                true,
            ),
            (
                json!({"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["n1"]}]}),
                false,
            ),
            (json!({}), false),
        ];
        for (t, want) in cases {
            assert_eq!(node_selector_term_matches(&term(t.clone()), &n), want, "{t}");
        }
    }

    #[test]
    fn label_selector_expressions() {
        let labels: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
        let sel = |v: serde_json::Value| serde_json::from_value::<LabelSelector>(v).unwrap();
        assert!(label_selector_matches(&sel(json!({})), &labels));
        assert!(label_selector_matches(&sel(json!({"matchLabels": {"app": "web"}})), &labels));
        assert!(!label_selector_matches(&sel(json!({"matchLabels": {"app": "db"}})), &labels));
        let not_in =
            json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]});
        assert!(!label_selector_matches(&sel(not_in), &labels));
    }

    #[test]
    fn tolerations_match_key_value_and_effect() {
        let taint = Taint {
            key: "k".into(),
            value: Some("v".into()),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        let tol = |v: serde_json::Value| serde_json::from_value::<Toleration>(v).unwrap();
        assert!(tolerates(&tol(json!({"key": "k", "value": "v", "effect": "NoSchedule"})), &taint));
        assert!(tolerates(&tol(json!({"key": "k", "operator": "Exists"})), &taint));
        assert!(tolerates(&tol(json!({"operator": "Exists"})), &taint));
        assert!(!tolerates(&tol(json!({"key": "k", "value": "w"})), &taint));
        assert!(!tolerates(
            &tol(json!({"key": "k", "operator": "Exists", "effect": "NoExecute"})),
            &taint
        ));
    }
}
