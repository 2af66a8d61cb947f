//! Label selectors as the reference evaluates them: the `map[string]string` selectors of
//! Services and ReplicationControllers, and `metav1.LabelSelector` (matchLabels and
//! matchExpressions with In, NotIn, Exists, DoesNotExist).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether `labels` carry every key/value of a map selector. An empty selector matches
/// everything (callers that treat "no selector" specially check that first).
pub fn map_matches(
    selector: &BTreeMap<String, String>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    selector.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// Whether `labels` match a `LabelSelector`. An empty selector matches everything; an
/// expression with an unknown operator matches nothing (as the reference's conversion fails).
pub fn matches(selector: &LabelSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    if let Some(match_labels) = &selector.match_labels {
        if !map_matches(match_labels, labels) {
            return false;
        }
    }
    let value = |key: &str| labels.and_then(|l| l.get(key));
    selector.match_expressions.iter().flatten().all(|expr| {
        let values = expr.values.as_deref().unwrap_or_default();
        match expr.operator.as_str() {
            "In" => value(&expr.key).is_some_and(|v| values.contains(v)),
            "NotIn" => value(&expr.key).is_none_or(|v| !values.contains(v)),
            "Exists" => value(&expr.key).is_some(),
            "DoesNotExist" => value(&expr.key).is_none(),
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn map_selector_needs_every_pair() {
        let sel = labels(&[("app", "web")]);
        assert!(map_matches(&sel, Some(&labels(&[("app", "web"), ("tier", "x")]))));
        assert!(!map_matches(&sel, Some(&labels(&[("app", "db")]))));
        assert!(!map_matches(&sel, None));
        assert!(map_matches(&BTreeMap::new(), None));
    }

    #[test]
    fn expressions_follow_the_reference_operators() {
        let expr = |key: &str, op: &str, values: &[&str]| LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        };
        let sel = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![
                expr("tier", "In", &["a", "b"]),
                expr("env", "NotIn", &["prod"]),
                expr("gone", "DoesNotExist", &[]),
            ]),
        };
        assert!(matches(&sel, Some(&labels(&[("app", "web"), ("tier", "a")]))));
        assert!(!matches(&sel, Some(&labels(&[("app", "web"), ("tier", "c")]))));
        assert!(!matches(&sel, Some(&labels(&[("app", "web"), ("tier", "a"), ("env", "prod")]))));
        assert!(!matches(&sel, Some(&labels(&[("app", "web"), ("tier", "a"), ("gone", "")]))));
        assert!(matches(&LabelSelector::default(), None));
    }
}
