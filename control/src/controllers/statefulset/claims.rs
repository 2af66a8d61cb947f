//! The PersistentVolumeClaims of a StatefulSet's pods and their retention policy (the
//! reference's `StatefulPodControl` claim handling). Claims are created before the pod that
//! mounts them and never deleted by this controller: `persistentVolumeClaimRetentionPolicy`
//! is carried out through ownerReferences, and the garbage collector deletes a claim once its
//! owner is gone. `whenDeleted: Delete` makes the set an owner of every claim; `whenScaled:
//! Delete` makes the pod an owner of its claims once its ordinal is outside the set's range
//! (before the scale down deletes it). A claim still owned by an earlier pod of the same name
//! is stale: the new pod waits until the collector has removed it.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};

/// Which of the two retention rules say `Delete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    pub delete_when_deleted: bool,
    pub delete_when_scaled: bool,
}

impl Retention {
    /// The policy of `set` (a missing or unknown rule is `Retain`).
    pub fn of(set: &StatefulSet) -> Retention {
        let policy =
            set.spec.as_ref().and_then(|s| s.persistent_volume_claim_retention_policy.as_ref());
        let delete = |rule: Option<&String>| rule.map(String::as_str) == Some("Delete");
        Retention {
            delete_when_deleted: delete(policy.and_then(|p| p.when_deleted.as_ref())),
            delete_when_scaled: delete(policy.and_then(|p| p.when_scaled.as_ref())),
        }
    }
}

/// A plain (non-controller) reference to `owner`, as the policy puts on claims.
fn reference<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).to_string(),
        kind: K::kind(&()).to_string(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: None,
        block_owner_deletion: None,
    }
}

/// The ownerReferences a claim of `pod` should carry, given its current ones, or `None` when
/// they already match the policy (the reference's `updateClaimOwnerRefForSetAndPod`).
/// `condemned`: the pod's ordinal is outside the set's range. `pod` is `None` for a claim
/// made before its pod exists. References to anyone else are kept.
pub fn wanted_owners(
    current: &[OwnerReference],
    set: &StatefulSet,
    pod: Option<&Pod>,
    condemned: bool,
) -> Option<Vec<OwnerReference>> {
    let retention = Retention::of(set);
    let set_uid = set.uid().unwrap_or_default();
    let pod_uid = pod.and_then(|p| p.uid());
    let want_set = retention.delete_when_deleted && !(retention.delete_when_scaled && condemned);
    let want_pod = retention.delete_when_scaled && condemned && pod_uid.is_some();
    let mut next: Vec<OwnerReference> = current
        .iter()
        .filter(|r| r.uid != set_uid && Some(&r.uid) != pod_uid.as_ref())
        .cloned()
        .collect();
    if want_set {
        next.push(current.iter().find(|r| r.uid == set_uid).cloned().unwrap_or(reference(set)));
    }
    if let (true, Some(pod)) = (want_pod, pod) {
        let existing = current.iter().find(|r| Some(&r.uid) == pod_uid.as_ref()).cloned();
        next.push(existing.unwrap_or(reference(pod)));
    }
    let same = next.len() == current.len() && next.iter().all(|r| current.contains(r));
    (!same).then_some(next)
}

/// Whether `claim` is still owned by an earlier pod named like `pod` (the reference's
/// `hasStaleOwnerRef`); only matters when scaled claims are deleted.
pub fn is_stale(set: &StatefulSet, claim: &PersistentVolumeClaim, pod_name: &str) -> bool {
    Retention::of(set).delete_when_scaled
        && claim.owner_references().iter().any(|r| r.kind == "Pod" && r.name == pod_name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{
        StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    };

    fn set(when_deleted: &str, when_scaled: &str) -> StatefulSet {
        let mut set = StatefulSet::default();
        set.metadata.name = Some("web".into());
        set.metadata.uid = Some("set".into());
        set.spec = Some(StatefulSetSpec {
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(when_deleted.into()),
                    when_scaled: Some(when_scaled.into()),
                },
            ),
            ..Default::default()
        });
        set
    }

    fn pod() -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some("web-1".into());
        pod.metadata.uid = Some("pod".into());
        pod
    }

    fn uids(refs: Option<Vec<OwnerReference>>) -> Option<Vec<String>> {
        refs.map(|r| r.into_iter().map(|r| r.uid).collect())
    }

    #[test]
    fn owners_follow_the_retention_policy() {
        let other = OwnerReference { uid: "other".into(), ..Default::default() };
        let p = pod();
        // Retain/Retain: our references go, others stay.
        let s = set("Retain", "Retain");
        let ours = [other.clone(), reference(&s), reference(&p)];
        assert_eq!(uids(wanted_owners(&ours, &s, Some(&p), true)), Some(vec!["other".into()]));
        assert_eq!(wanted_owners(std::slice::from_ref(&other), &s, Some(&p), false), None);
        // whenDeleted Delete: the set owns every claim.
        let s = set("Delete", "Retain");
        assert_eq!(uids(wanted_owners(&[], &s, None, false)), Some(vec!["set".into()]));
        assert_eq!(wanted_owners(&[reference(&s)], &s, Some(&p), true), None);
        // whenScaled Delete: the pod owns its claims once condemned, and the set lets go.
        let s = set("Delete", "Delete");
        assert_eq!(
            uids(wanted_owners(&[reference(&s)], &s, Some(&p), true)),
            Some(vec!["pod".into()])
        );
        assert_eq!(wanted_owners(&[reference(&s)], &s, Some(&p), false), None);
        let s = set("Retain", "Delete");
        assert_eq!(wanted_owners(&[], &s, Some(&p), false), None);
        assert_eq!(uids(wanted_owners(&[reference(&p)], &s, Some(&p), false)), Some(vec![]));
    }

    #[test]
    fn a_claim_owned_by_an_earlier_pod_is_stale_only_when_scaled_claims_go() {
        let mut claim = PersistentVolumeClaim::default();
        claim.metadata.owner_references = Some(vec![OwnerReference {
            kind: "Pod".into(),
            name: "web-1".into(),
            uid: "old".into(),
            ..Default::default()
        }]);
        assert!(is_stale(&set("Retain", "Delete"), &claim, "web-1"));
        assert!(!is_stale(&set("Retain", "Retain"), &claim, "web-1"));
        assert!(!is_stale(&set("Retain", "Delete"), &claim, "web-2"));
    }
}
