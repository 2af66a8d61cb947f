//! The stable identity of a StatefulSet's pods (the reference's `stateful_set_utils.go`):
//! pod `<set>-<ordinal>` with hostname = its name and subdomain = `spec.serviceName`, the
//! labels `statefulset.kubernetes.io/pod-name`, `apps.kubernetes.io/pod-index` and
//! `controller-revision-hash`, and one PersistentVolumeClaim `<template>-<set>-<ordinal>` per
//! `volumeClaimTemplates` entry, mounted as the volume named after the template. Everything
//! here is a pure function of the set, so a pod recreated for an ordinal gets the same name,
//! hostname and claims as the one it replaces.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use crate::controllers::util::owner::controller_reference;

/// The label naming a pod of a StatefulSet (a headless Service can select one pod by it).
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label carrying a pod's ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
/// The label carrying the ControllerRevision a pod was made from.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// The parent name and ordinal of a pod named `<parent>-<ordinal>` (the reference's
/// `statefulPodRegex`, `(.*)-([0-9]+)$`); `None` for any other name.
pub fn parse_name(name: &str) -> Option<(&str, i32)> {
    let (parent, digits) = name.rsplit_once('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(|ordinal| (parent, ordinal))
}

/// The ordinal of a pod of `set`, or `None` when its name does not make it one.
pub fn ordinal_of(set: &StatefulSet, pod: &Pod) -> Option<i32> {
    let name = pod.metadata.name.as_deref()?;
    parse_name(name).filter(|(parent, _)| *parent == set.name_any()).map(|(_, ordinal)| ordinal)
}

/// The name of the pod with `ordinal`.
pub fn pod_name(set: &StatefulSet, ordinal: i32) -> String {
    format!("{}-{ordinal}", set.name_any())
}

/// The name of the claim `template` makes for the pod with `ordinal`.
pub fn claim_name(set: &StatefulSet, template: &PersistentVolumeClaim, ordinal: i32) -> String {
    format!("{}-{}-{ordinal}", template.name_any(), set.name_any())
}

/// `spec.volumeClaimTemplates`.
pub fn claim_templates(set: &StatefulSet) -> &[PersistentVolumeClaim] {
    set.spec.as_ref().and_then(|s| s.volume_claim_templates.as_deref()).unwrap_or_default()
}

/// The claims the pod with `ordinal` mounts, built from the templates: named per
/// [`claim_name`], in the set's namespace, labelled with the template's labels and the set's
/// `matchLabels` (the reference's `getPersistentVolumeClaims`).
pub fn claims_for(set: &StatefulSet, ordinal: i32) -> Vec<(String, PersistentVolumeClaim)> {
    let match_labels =
        set.spec.as_ref().and_then(|s| s.selector.match_labels.clone()).unwrap_or_default();
    claim_templates(set)
        .iter()
        .map(|template| {
            let mut claim = template.clone();
            let mut labels = claim.metadata.labels.take().unwrap_or_default();
            labels.extend(match_labels.clone());
            claim.metadata = ObjectMeta {
                name: Some(claim_name(set, template, ordinal)),
                namespace: set.namespace(),
                labels: Some(labels),
                annotations: template.metadata.annotations.clone(),
                ..ObjectMeta::default()
            };
            claim.status = None;
            (template.name_any(), claim)
        })
        .collect()
}

/// The pod for `ordinal` made from `template` (the set's own, or an older revision's):
/// the template's labels, annotations and spec under the stable name, hostname, subdomain and
/// identity labels, controlled by the set, with the claim volumes, labelled with `revision`.
pub fn new_pod(set: &StatefulSet, template: &PodTemplateSpec, ordinal: i32, revision: &str) -> Pod {
    let meta = template.metadata.clone().unwrap_or_default();
    let name = pod_name(set, ordinal);
    let mut labels = meta.labels.unwrap_or_default();
    labels.insert(REVISION_LABEL.to_string(), revision.to_string());
    let mut pod = Pod {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: set.namespace(),
            labels: Some(labels),
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![controller_reference(set)]),
            ..ObjectMeta::default()
        },
        spec: template.spec.clone(),
        status: None,
    };
    identity_labels(&name, ordinal, pod.metadata.labels.get_or_insert_with(BTreeMap::new));
    let service_name = set.spec.as_ref().and_then(|s| s.service_name.clone());
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.hostname = Some(name);
    spec.subdomain = service_name.filter(|s| !s.is_empty());
    set_claim_volumes(set, ordinal, &mut spec.volumes);
    pod
}

/// Writes the identity labels of the pod `name` with `ordinal` into `labels`.
fn identity_labels(name: &str, ordinal: i32, labels: &mut BTreeMap<String, String>) {
    labels.insert(POD_NAME_LABEL.to_string(), name.to_string());
    labels.insert(POD_INDEX_LABEL.to_string(), ordinal.to_string());
}

/// Points the volume named after each claim template at the pod's claim, replacing a template
/// volume of the same name (the reference's `updateStorage`), templates first.
fn set_claim_volumes(set: &StatefulSet, ordinal: i32, volumes: &mut Option<Vec<Volume>>) {
    let claims = claims_for(set, ordinal);
    if claims.is_empty() {
        return;
    }
    let current = volumes.take().unwrap_or_default();
    let mut next: Vec<Volume> = claims
        .iter()
        .map(|(volume, claim)| Volume {
            name: volume.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.name_any(),
                read_only: None,
            }),
            ..Volume::default()
        })
        .collect();
    next.extend(current.into_iter().filter(|v| !claims.iter().any(|(name, _)| *name == v.name)));
    *volumes = Some(next);
}

/// The labels a pod is missing from its identity (the reference's `identityMatches` reduced to
/// what can be fixed on a live pod: name and namespace make the ordinal, labels can be patched).
pub fn missing_identity_labels(pod: &Pod, ordinal: i32) -> Option<BTreeMap<String, String>> {
    let name = pod.name_any();
    let mut wanted = BTreeMap::new();
    identity_labels(&name, ordinal, &mut wanted);
    let labels = pod.metadata.labels.as_ref();
    let missing: BTreeMap<String, String> =
        wanted.into_iter().filter(|(k, v)| labels.and_then(|l| l.get(k)) != Some(v)).collect();
    (!missing.is_empty()).then_some(missing)
}

/// The revision a pod was made from (its `controller-revision-hash` label).
pub fn pod_revision(pod: &Pod) -> &str {
    pod.metadata.labels.as_ref().and_then(|l| l.get(REVISION_LABEL)).map_or("", String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::StatefulSetSpec;
    use k8s_openapi::api::core::v1::PodSpec;

    fn set_with_claims() -> StatefulSet {
        let mut claim = PersistentVolumeClaim::default();
        claim.metadata.name = Some("www".into());
        claim.metadata.labels = Some(BTreeMap::from([("tier".into(), "data".into())]));
        StatefulSet {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("ns".into()),
                uid: Some("set-uid".into()),
                ..Default::default()
            },
            spec: Some(StatefulSetSpec {
                service_name: Some("nginx".into()),
                selector: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
                    match_labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                    match_expressions: None,
                },
                volume_claim_templates: Some(vec![claim]),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn names_parse_like_the_reference_regex() {
        assert_eq!(parse_name("web-0"), Some(("web", 0)));
        assert_eq!(parse_name("my-web-12"), Some(("my-web", 12)));
        assert_eq!(parse_name("web-"), None);
        assert_eq!(parse_name("web-1a"), None);
        assert_eq!(parse_name("web"), None);
    }

    #[test]
    fn a_new_pod_has_the_stable_identity_and_claim_volumes() {
        let set = set_with_claims();
        let template = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                volumes: Some(vec![
                    Volume { name: "www".into(), ..Default::default() },
                    Volume { name: "config".into(), ..Default::default() },
                ]),
                ..Default::default()
            }),
        };
        let pod = new_pod(&set, &template, 3, "web-abc");
        assert_eq!(pod.metadata.name.as_deref(), Some("web-3"));
        let labels = pod.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[POD_NAME_LABEL], "web-3");
        assert_eq!(labels[POD_INDEX_LABEL], "3");
        assert_eq!(labels[REVISION_LABEL], "web-abc");
        assert_eq!(labels["app"], "web");
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("web-3"));
        assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
        let volumes = spec.volumes.as_ref().unwrap();
        assert_eq!(volumes.len(), 2, "the template's www volume is replaced: {volumes:?}");
        let claim = volumes[0].persistent_volume_claim.as_ref().unwrap();
        assert_eq!((volumes[0].name.as_str(), claim.claim_name.as_str()), ("www", "www-web-3"));
        assert_eq!(volumes[1].name, "config");
        assert_eq!(pod.metadata.owner_references.as_ref().unwrap()[0].uid, "set-uid");
        assert_eq!(ordinal_of(&set, &pod), Some(3));
        assert_eq!(missing_identity_labels(&pod, 3), None);
        assert_eq!(pod_revision(&pod), "web-abc");
    }

    #[test]
    fn claims_carry_template_and_selector_labels() {
        let set = set_with_claims();
        let claims = claims_for(&set, 1);
        assert_eq!(claims.len(), 1);
        let (volume, claim) = &claims[0];
        assert_eq!(volume, "www");
        assert_eq!(claim.metadata.name.as_deref(), Some("www-web-1"));
        assert_eq!(claim.metadata.namespace.as_deref(), Some("ns"));
        let labels = claim.metadata.labels.as_ref().unwrap();
        assert_eq!((labels["tier"].as_str(), labels["app"].as_str()), ("data", "web"));
    }
}
