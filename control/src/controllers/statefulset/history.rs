//! The StatefulSet's ControllerRevisions (the reference's `controller/history` package as the
//! StatefulSet uses it): each distinct pod template is snapshotted as an apps/v1
//! ControllerRevision `<set>-<hash>`, owned by the set, whose `data` is the strategic-merge
//! patch `{"spec":{"template":{…,"$patch":"replace"}}}` — exactly what `kubectl rollout undo`
//! applies to go back to it — and whose `revision` numbers order the history
//! `kubectl rollout history` prints. The hash is FNV-32 of the data's JSON with
//! `status.collisionCount` mixed in, spelled with the reference's name-safe alphabet.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::ResourceExt;
use serde_json::{json, Value};

use crate::controllers::util::hash::{fnv32, safe_encode, FNV32_OFFSET};
use crate::controllers::util::owner::controller_reference;

/// The label every ControllerRevision carries with its hash.
pub const HASH_LABEL: &str = "controller.kubernetes.io/hash";

/// The longest prefix a revision name keeps of its owner's name (the reference's limit, so
/// `<prefix>-<hash>` stays a valid name).
const MAX_PREFIX: usize = 223;

/// The revision data of `set`'s current template: the patch that restores it.
pub fn patch_data(set: &StatefulSet) -> Value {
    let template = set.spec.as_ref().map(|s| &s.template);
    // Serializing a typed object only fails for non-string map keys, which it has none of.
    let mut template = serde_json::to_value(template).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut template {
        map.insert("$patch".to_string(), json!("replace"));
    }
    json!({"spec": {"template": template}})
}

/// The reference's `HashControllerRevision` over `data` with `collision_count`.
pub fn hash(data: &Value, collision_count: i32) -> String {
    let bytes = serde_json::to_vec(data).unwrap_or_default();
    let hash = fnv32(&bytes, FNV32_OFFSET);
    let hash = fnv32(collision_count.to_string().as_bytes(), hash);
    safe_encode(&hash.to_string())
}

/// `<owner>-<hash>`, the owner's name cut to [`MAX_PREFIX`] bytes.
pub fn revision_name(owner: &str, hash: &str) -> String {
    let mut end = owner.len().min(MAX_PREFIX);
    while !owner.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}-{hash}", &owner[..end])
}

/// A new revision `number` of `set`'s current template: labelled like the template (plus the
/// hash), annotated like the set, controlled by it.
pub fn new_revision(set: &StatefulSet, number: i64, collision_count: i32) -> ControllerRevision {
    let data = patch_data(set);
    let hash = hash(&data, collision_count);
    let mut labels: BTreeMap<String, String> = set
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(HASH_LABEL.to_string(), hash.clone());
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(revision_name(&set.name_any(), &hash)),
            namespace: set.namespace(),
            labels: Some(labels),
            annotations: set.metadata.annotations.clone().filter(|a| !a.is_empty()),
            owner_references: Some(vec![controller_reference(set)]),
            ..ObjectMeta::default()
        },
        data: Some(RawExtension(data)),
        revision: number,
    }
}

/// The pod template a revision restores (`None` if its data is not a StatefulSet patch).
pub fn template_of(revision: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut template = revision.data.as_ref()?.0.pointer("/spec/template")?.clone();
    if let Value::Object(map) = &mut template {
        map.remove("$patch");
    }
    serde_json::from_value(template).ok()
}

/// Whether two revisions snapshot the same template (the reference compares the data bytes;
/// the data here has been through the API server, so it is compared as JSON).
pub fn equal(a: &ControllerRevision, b: &ControllerRevision) -> bool {
    a.data.as_ref().map(|d| &d.0) == b.data.as_ref().map(|d| &d.0)
}

/// Sorts revisions oldest first: by number, then creation time, then name.
pub fn sort(revisions: &mut [ControllerRevision]) {
    revisions.sort_by(|a, b| {
        let created = |r: &ControllerRevision| r.metadata.creation_timestamp.clone().map(|t| t.0);
        (a.revision, created(a), a.name_any()).cmp(&(b.revision, created(b), b.name_any()))
    });
}

/// The number the next revision gets: one past the highest (1 for the first).
pub fn next_number(sorted: &[ControllerRevision]) -> i64 {
    sorted.last().map_or(1, |r| r.revision + 1)
}

/// The revisions to delete so that at most `limit` revisions remain that are neither `live`
/// (the current and update revisions and any a pod still runs) — the oldest go first.
pub fn to_truncate<'a>(
    sorted: &'a [ControllerRevision],
    live: &HashSet<&str>,
    limit: i32,
) -> Vec<&'a ControllerRevision> {
    let history: Vec<&ControllerRevision> =
        sorted.iter().filter(|r| !live.contains(r.name_any().as_str())).collect();
    let limit = usize::try_from(limit).unwrap_or(0);
    let surplus = history.len().saturating_sub(limit);
    history.into_iter().take(surplus).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::StatefulSetSpec;
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    fn set(image: &str) -> StatefulSet {
        StatefulSet {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("ns".into()),
                uid: Some("u".into()),
                ..Default::default()
            },
            spec: Some(StatefulSetSpec {
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "c".into(),
                            image: Some(image.into()),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            status: None,
        }
    }

    fn numbered(name: &str, number: i64) -> ControllerRevision {
        let mut r = new_revision(&set(name), number, 0);
        r.metadata.name = Some(name.into());
        r
    }

    #[test]
    fn a_revision_snapshots_the_template_as_a_replace_patch() {
        let r = new_revision(&set("busybox:1"), 1, 0);
        let data = &r.data.as_ref().unwrap().0;
        assert_eq!(data["spec"]["template"]["$patch"], "replace");
        assert_eq!(data["spec"]["template"]["spec"]["containers"][0]["image"], "busybox:1");
        let name = r.metadata.name.clone().unwrap();
        let hash = &r.metadata.labels.as_ref().unwrap()[HASH_LABEL];
        assert_eq!(name, format!("web-{hash}"));
        assert_eq!(r.metadata.labels.as_ref().unwrap()["app"], "web");
        assert_eq!(r.metadata.owner_references.as_ref().unwrap()[0].kind, "StatefulSet");
        let template = template_of(&r).unwrap();
        assert_eq!(Some(&template), set("busybox:1").spec.as_ref().map(|s| &s.template));
    }

    #[test]
    fn the_name_moves_with_the_template_and_the_collision_count() {
        let a = new_revision(&set("busybox:1"), 1, 0);
        assert_eq!(a.metadata.name, new_revision(&set("busybox:1"), 7, 0).metadata.name);
        assert!(equal(&a, &new_revision(&set("busybox:1"), 2, 0)));
        assert_ne!(a.metadata.name, new_revision(&set("busybox:2"), 1, 0).metadata.name);
        assert!(!equal(&a, &new_revision(&set("busybox:2"), 1, 0)));
        assert_ne!(a.metadata.name, new_revision(&set("busybox:1"), 1, 1).metadata.name);
        assert_eq!(revision_name(&"x".repeat(300), "h").len(), MAX_PREFIX + 2);
    }

    #[test]
    fn history_keeps_live_revisions_and_the_newest_up_to_the_limit() {
        let mut revisions = vec![
            numbered("r3", 3),
            numbered("r1", 1),
            numbered("r4", 4),
            numbered("r2", 2),
            numbered("r5", 5),
        ];
        sort(&mut revisions);
        let names: Vec<String> = revisions.iter().map(|r| r.name_any()).collect();
        assert_eq!(names, ["r1", "r2", "r3", "r4", "r5"]);
        assert_eq!(next_number(&revisions), 6);
        assert_eq!(next_number(&[]), 1);
        // r1 is still run by a pod; r5 is current. Of r2, r3, r4 one may stay.
        let live = HashSet::from(["r1", "r5"]);
        let doomed: Vec<String> =
            to_truncate(&revisions, &live, 1).iter().map(|r| r.name_any()).collect();
        assert_eq!(doomed, ["r2", "r3"]);
        assert!(to_truncate(&revisions, &live, 10).is_empty());
    }
}
