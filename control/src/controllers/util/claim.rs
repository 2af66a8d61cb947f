//! Adoption and release of dependents (the reference's `ControllerRefManager`): a controller
//! claims the objects its selector picks that no one controls, and lets go of the ones it
//! controls that its selector no longer picks. Both are strategic-merge patches of
//! `ownerReferences` carrying the dependent's uid, so a recreated namesake is never touched.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::owner::controller_of;

/// What a controller does with one candidate dependent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Controlled by this owner and still selected: keep it.
    Owned,
    /// Not controlled by anyone and selected: take it.
    Adopt,
    /// Controlled by this owner but no longer selected: let go.
    Release,
    /// Someone else's, or not ours to take.
    Ignore,
}

/// The reference's claim rule for one dependent.
pub fn decide<K: Resource>(
    owner_uid: &str,
    owner_deleting: bool,
    selected: bool,
    dependent: &K,
) -> Claim {
    let meta = dependent.meta();
    match controller_of(meta) {
        Some(reference) if reference.uid != owner_uid => Claim::Ignore,
        Some(_) if selected => Claim::Owned,
        // An owner being deleted keeps what it has: the garbage collector decides.
        Some(_) if owner_deleting => Claim::Ignore,
        Some(_) => Claim::Release,
        None if owner_deleting || !selected || meta.deletion_timestamp.is_some() => Claim::Ignore,
        None => Claim::Adopt,
    }
}

/// The patch that makes `owner` the controller of the dependent with `dependent_uid`.
pub fn adopt_patch(owner: &OwnerReference, dependent_uid: &str) -> Value {
    json!({"metadata": {"ownerReferences": [owner], "uid": dependent_uid}})
}

/// The patch that removes the reference to `owner_uid` from the dependent with `dependent_uid`.
pub fn release_patch(owner_uid: &str, dependent_uid: &str) -> Value {
    json!({"metadata": {
        "ownerReferences": [{"$patch": "delete", "uid": owner_uid}],
        "uid": dependent_uid,
    }})
}

/// Claims `candidates` for `owner`: returns the dependents the owner controls afterwards.
/// `can_adopt` is asked at most once, before the first adoption (the reference re-reads the
/// owner from the API server there, so a deleted or replaced owner adopts nothing).
pub async fn claim<K, F, Fut>(
    api: &Api<K>,
    owner: &OwnerReference,
    owner_deleting: bool,
    selects: impl Fn(&K) -> bool,
    candidates: Vec<Arc<K>>,
    can_adopt: F,
) -> Result<Vec<Arc<K>>, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<bool, kube::Error>>,
{
    let mut claimed = Vec::new();
    let mut can_adopt = Some(can_adopt);
    let mut adoption_allowed = None;
    for candidate in candidates {
        let uid = candidate.meta().uid.clone().unwrap_or_default();
        let name = candidate.meta().name.clone().unwrap_or_default();
        match decide(&owner.uid, owner_deleting, selects(&candidate), candidate.as_ref()) {
            Claim::Owned => claimed.push(candidate),
            Claim::Ignore => {}
            Claim::Adopt => {
                if adoption_allowed.is_none() {
                    let check = can_adopt.take().map(|f| f());
                    adoption_allowed = Some(match check {
                        Some(check) => check.await?,
                        None => false,
                    });
                }
                if adoption_allowed != Some(true) {
                    continue;
                }
                let patch = adopt_patch(owner, &uid);
                match api.patch(&name, &PatchParams::default(), &Patch::Strategic(&patch)).await {
                    Ok(adopted) => claimed.push(Arc::new(adopted)),
                    // Gone meanwhile: nothing to adopt.
                    Err(kube::Error::Api(status)) if status.code == 404 => {}
                    Err(error) => return Err(error),
                }
            }
            Claim::Release => {
                let patch = release_patch(&owner.uid, &uid);
                match api.patch(&name, &PatchParams::default(), &Patch::Strategic(&patch)).await {
                    Ok(_) => {}
                    // Gone, or its uid changed (a new object of that name): nothing to release.
                    Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409 | 422) => {}
                    Err(error) => return Err(error),
                }
            }
        }
    }
    Ok(claimed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn pod(controller: Option<&str>) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.owner_references = controller.map(|uid| {
            vec![OwnerReference { uid: uid.into(), controller: Some(true), ..Default::default() }]
        });
        pod
    }

    #[test]
    fn claim_follows_the_controller_ref_manager() {
        assert_eq!(decide("me", false, true, &pod(Some("me"))), Claim::Owned);
        assert_eq!(decide("me", false, false, &pod(Some("me"))), Claim::Release);
        assert_eq!(decide("me", true, false, &pod(Some("me"))), Claim::Ignore);
        assert_eq!(decide("me", false, true, &pod(Some("other"))), Claim::Ignore);
        assert_eq!(decide("me", false, true, &pod(None)), Claim::Adopt);
        assert_eq!(decide("me", false, false, &pod(None)), Claim::Ignore);
        assert_eq!(decide("me", true, true, &pod(None)), Claim::Ignore);
        let mut terminating = pod(None);
        terminating.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        assert_eq!(decide("me", false, true, &terminating), Claim::Ignore);
    }

    #[test]
    fn patches_carry_the_dependent_uid() {
        let owner = OwnerReference { uid: "o".into(), name: "rs".into(), ..Default::default() };
        assert_eq!(adopt_patch(&owner, "d")["metadata"]["uid"], "d");
        let release = release_patch("o", "d");
        assert_eq!(release["metadata"]["ownerReferences"][0]["$patch"], "delete");
        assert_eq!(release["metadata"]["ownerReferences"][0]["uid"], "o");
    }
}
