//! DefaultStorageClass admission, as the reference's plugin: a new PersistentVolumeClaim that
//! names no class (`spec.storageClassName` absent or null, and no beta class annotation) gets
//! the default StorageClass — the one annotated `storageclass.kubernetes.io/is-default-class:
//! "true"` (or the beta annotation); with several, the newest, then the first by name (1.28+).
//! An empty class name (`""`) asks for no class and is left alone; without a default class the
//! claim is left without one.

use serde_json::{json, Value};

use super::super::server::ApiServer;
use super::super::status::ApiResult;
use super::{stored, Operation, Request};

const STORAGE_CLASSES: (&str, &str, &str) = ("storage.k8s.io", "v1", "storageclasses");
/// The annotation marking the default class, and its beta form.
const DEFAULT_ANNOTATIONS: [&str; 2] = [
    "storageclass.kubernetes.io/is-default-class",
    "storageclass.beta.kubernetes.io/is-default-class",
];
/// The beta annotation a claim could name its class with.
const BETA_CLASS_ANNOTATION: &str = "volume.beta.kubernetes.io/storage-class";

/// Sets the default class on a new claim that names none.
pub(crate) async fn mutate(
    server: &ApiServer,
    request: &mut Request<'_>,
    claim: &mut Value,
) -> ApiResult<()> {
    if request.operation != Operation::Create || !request.is_main("", "PersistentVolumeClaim") {
        return Ok(());
    }
    if has_class(claim) {
        return Ok(());
    }
    let classes = stored::list(server, STORAGE_CLASSES, None).await?;
    let Some(name) = default_class(&classes) else { return Ok(()) };
    if let Some(spec) = claim.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("storageClassName".into(), json!(name));
    }
    Ok(())
}

/// Whether the claim names a class (an empty name counts: it asks for none).
fn has_class(claim: &Value) -> bool {
    let annotated =
        claim.pointer("/metadata/annotations").and_then(|a| a.get(BETA_CLASS_ANNOTATION));
    annotated.is_some() || claim.pointer("/spec/storageClassName").is_some_and(|c| !c.is_null())
}

fn name(class: &Value) -> &str {
    class.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("")
}

/// The name of the default class: the newest of those marked default, ties by name.
fn default_class(classes: &[Value]) -> Option<&str> {
    let is_default = |class: &&Value| {
        DEFAULT_ANNOTATIONS.iter().any(|key| {
            class.pointer("/metadata/annotations").and_then(|a| a.get(*key)).and_then(Value::as_str)
                == Some("true")
        })
    };
    let created = |class: &Value| {
        let at = class.pointer("/metadata/creationTimestamp").and_then(Value::as_str);
        at.and_then(|t| t.parse::<jiff::Timestamp>().ok())
    };
    classes
        .iter()
        .filter(is_default)
        // Newest first; equal timestamps by name, ascending.
        .min_by(|a, b| created(b).cmp(&created(a)).then_with(|| name(a).cmp(name(b))))
        .map(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, created: &str, default: bool) -> Value {
        let annotations = if default {
            json!({"storageclass.kubernetes.io/is-default-class": "true"})
        } else {
            json!({})
        };
        json!({"metadata": {"name": name, "creationTimestamp": created, "annotations": annotations}})
    }

    #[test]
    fn the_newest_default_wins_then_the_first_name() {
        let classes = [
            class("old", "2024-01-01T00:00:00Z", true),
            class("new-b", "2024-06-01T00:00:00Z", true),
            class("new-a", "2024-06-01T00:00:00Z", true),
            class("newest-but-not-default", "2025-01-01T00:00:00Z", false),
        ];
        assert_eq!(default_class(&classes), Some("new-a"));
        assert_eq!(default_class(&classes[3..]), None);
    }

    #[test]
    fn the_beta_annotation_marks_a_default_too() {
        let beta = json!({"metadata": {"name": "b", "annotations":
            {"storageclass.beta.kubernetes.io/is-default-class": "true"}}});
        assert_eq!(default_class(&[beta]), Some("b"));
    }

    #[test]
    fn only_a_claim_without_any_class_is_defaulted() {
        assert!(!has_class(&json!({"spec": {}})));
        assert!(!has_class(&json!({"spec": {"storageClassName": null}})));
        assert!(has_class(&json!({"spec": {"storageClassName": ""}})));
        assert!(has_class(&json!({"metadata": {"annotations":
            {"volume.beta.kubernetes.io/storage-class": "x"}}, "spec": {}})));
    }
}
