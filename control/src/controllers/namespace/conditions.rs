//! The status conditions of a terminating namespace, with the reference's types, reasons and
//! messages (`namespaced_resources_deleter.go`), as a pure function of what a cleanup pass found.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::NamespaceCondition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// What one pass over the namespace's content found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Cleanup {
    /// Discovery failed (nothing could be enumerated).
    pub discovery_failure: Option<String>,
    /// Deletes or lists that failed, one message each.
    pub content_failures: Vec<String>,
    /// Objects left, by `plural.group`.
    pub remaining: BTreeMap<String, usize>,
    /// Objects left that carry each finalizer.
    pub finalizers: BTreeMap<String, usize>,
}

impl Cleanup {
    /// Nothing is left and nothing failed: the namespace can be finalized.
    pub fn is_done(&self) -> bool {
        self.discovery_failure.is_none()
            && self.content_failures.is_empty()
            && self.remaining.is_empty()
    }
}

/// (type, ok reason, ok message, failure reason).
const TYPES: &[(&str, &str, &str, &str)] = &[
    (
        "NamespaceDeletionDiscoveryFailure",
        "ResourcesDiscovered",
        "All resources successfully discovered",
        "DiscoveryFailed",
    ),
    (
        "NamespaceDeletionGroupVersionParsingFailure",
        "ParsedGroupVersions",
        "All legacy kube types successfully parsed",
        "GroupVersionParsingFailed",
    ),
    (
        "NamespaceDeletionContentFailure",
        "ContentDeleted",
        "All content successfully deleted, may be waiting on finalization",
        "ContentDeletionFailed",
    ),
    (
        "NamespaceContentRemaining",
        "ContentRemoved",
        "All content successfully removed",
        "SomeResourcesRemain",
    ),
    (
        "NamespaceFinalizersRemaining",
        "ContentHasNoFinalizers",
        "All content-preserving finalizers finished",
        "SomeFinalizersRemain",
    ),
];

/// The reference aggregates errors as `[a, b]` (a single one bare).
fn aggregate(errors: &[String]) -> String {
    match errors {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    }
}

/// The failure message of condition `type_`, or `None` when it is fine.
fn failure(cleanup: &Cleanup, type_: &str) -> Option<String> {
    match type_ {
        "NamespaceDeletionDiscoveryFailure" => cleanup
            .discovery_failure
            .as_ref()
            .map(|e| format!("Discovery failed for some groups, 1 failing: {e}")),
        "NamespaceDeletionContentFailure" => (!cleanup.content_failures.is_empty()).then(|| {
            format!(
                "Failed to delete all resource types, {} remaining: {}",
                cleanup.content_failures.len(),
                aggregate(&cleanup.content_failures)
            )
        }),
        "NamespaceContentRemaining" => (!cleanup.remaining.is_empty()).then(|| {
            let parts: Vec<String> = cleanup
                .remaining
                .iter()
                .map(|(resource, n)| format!("{resource} has {n} resource instances"))
                .collect();
            format!("Some resources are remaining: {}", parts.join(", "))
        }),
        "NamespaceFinalizersRemaining" => (!cleanup.finalizers.is_empty()).then(|| {
            let parts: Vec<String> = cleanup
                .finalizers
                .iter()
                .map(|(finalizer, n)| format!("{finalizer} in {n} resource instances"))
                .collect();
            format!("Some content in the namespace has finalizers remaining: {}", parts.join(", "))
        }),
        _ => None,
    }
}

/// The conditions after `cleanup`, keeping the transition time of any condition whose status,
/// reason and message did not change.
pub fn conditions(
    cleanup: &Cleanup,
    previous: &[NamespaceCondition],
    now: Timestamp,
) -> Vec<NamespaceCondition> {
    TYPES
        .iter()
        .map(|(type_, ok_reason, ok_message, failed_reason)| {
            let (status, reason, message) = match failure(cleanup, type_) {
                Some(message) => ("True", *failed_reason, message),
                None => ("False", *ok_reason, ok_message.to_string()),
            };
            let condition = NamespaceCondition {
                type_: type_.to_string(),
                status: status.to_string(),
                reason: Some(reason.to_string()),
                message: Some(message),
                last_transition_time: Some(Time(now)),
            };
            match previous.iter().find(|p| p.type_ == *type_) {
                Some(p)
                    if p.status == condition.status
                        && p.reason == condition.reason
                        && p.message == condition.message =>
                {
                    p.clone()
                }
                _ => condition,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_content_and_finalizers_use_the_reference_messages() {
        let cleanup = Cleanup {
            remaining: [("pods.".to_string(), 2), ("widgets.example.com".to_string(), 1)].into(),
            finalizers: [("example.com/hold".to_string(), 1)].into(),
            ..Cleanup::default()
        };
        let c = conditions(&cleanup, &[], Timestamp::UNIX_EPOCH);
        let find = |t: &str| c.iter().find(|c| c.type_ == t).unwrap();
        let remaining = find("NamespaceContentRemaining");
        assert_eq!(remaining.status, "True");
        assert_eq!(remaining.reason.as_deref(), Some("SomeResourcesRemain"));
        assert_eq!(
            remaining.message.as_deref(),
            Some("Some resources are remaining: pods. has 2 resource instances, widgets.example.com has 1 resource instances")
        );
        assert_eq!(
            find("NamespaceFinalizersRemaining").message.as_deref(),
            Some("Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances")
        );
        let discovery = find("NamespaceDeletionDiscoveryFailure");
        assert_eq!(
            (discovery.status.as_str(), discovery.reason.as_deref()),
            ("False", Some("ResourcesDiscovered"))
        );
        assert!(!cleanup.is_done());
    }

    #[test]
    fn unchanged_conditions_keep_their_transition_time() {
        let first = conditions(&Cleanup::default(), &[], Timestamp::UNIX_EPOCH);
        let later = Timestamp::from_second(1000).unwrap();
        let second = conditions(&Cleanup::default(), &first, later);
        assert_eq!(first, second);
        let failed = Cleanup { content_failures: vec!["boom".into()], ..Cleanup::default() };
        let third = conditions(&failed, &second, later);
        let content = third.iter().find(|c| c.type_ == "NamespaceDeletionContentFailure").unwrap();
        assert_eq!(
            content.message.as_deref(),
            Some("Failed to delete all resource types, 1 remaining: boom")
        );
        assert_eq!(content.last_transition_time, Some(Time(later)));
    }
}
