//! Storage object in-use protection (the reference's `pvc-protection` and `pv-protection`
//! controllers). Admission puts a finalizer on every new claim and volume (see
//! `crate::apiserver::admission::storage_protection`); these two loops take it off once the
//! object is being deleted and nothing needs it any more, and put it on objects made before
//! the admission plugin did so.
//!
//! - [`claim`]: a terminating claim keeps `kubernetes.io/pvc-protection` while a scheduled pod
//!   in its namespace uses it. The informer's pods are looked at first; only when none uses
//!   the claim is a fresh pod list read, so that a pod created just now, not yet in the cache,
//!   is not missed (as the reference does).
//! - [`volume`]: a terminating volume keeps `kubernetes.io/pv-protection` while it is `Bound`.

mod claim;
mod volume;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{json, Value};

pub use crate::apiserver::admission::storage_protection::{PVC_FINALIZER, PV_FINALIZER};

/// The name `--disable-controllers` takes for the claim loop.
pub const CLAIM_NAME: &str = "pvc-protection";
/// Its component name in Events.
pub const CLAIM_COMPONENT: &str = "persistentvolumeclaim-protection-controller";
/// The name `--disable-controllers` takes for the volume loop.
pub const VOLUME_NAME: &str = "pv-protection";
/// Its component name in Events.
pub const VOLUME_COMPONENT: &str = "persistentvolume-protection-controller";

pub use claim::start as start_claims;
pub use volume::start as start_volumes;

/// What to do about an object's protection finalizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Nothing,
    Add,
    /// Remove it, if nothing uses the object (the caller checks).
    RemoveIfUnused,
}

/// The step for an object: being deleted with the finalizer, or alive without it.
fn step(meta: &ObjectMeta, finalizer: &str) -> Step {
    let has = meta.finalizers.iter().flatten().any(|f| f == finalizer);
    match (meta.deletion_timestamp.is_some(), has) {
        (true, true) => Step::RemoveIfUnused,
        (false, false) => Step::Add,
        _ => Step::Nothing,
    }
}

/// A merge patch that sets the finalizers to what `meta` has with `finalizer` added or
/// removed, guarded by the `resourceVersion` read (a conflict retries with a fresh look).
fn finalizer_patch(meta: &ObjectMeta, finalizer: &str, add: bool) -> Value {
    let mut list: Vec<String> =
        meta.finalizers.iter().flatten().filter(|f| *f != finalizer).cloned().collect();
    if add {
        list.push(finalizer.to_string());
    }
    json!({"metadata": {"finalizers": list, "resourceVersion": meta.resource_version}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(finalizers: &[&str], deleting: bool) -> ObjectMeta {
        serde_json::from_value(json!({
            "name": "x", "resourceVersion": "7",
            "finalizers": finalizers,
            "deletionTimestamp": deleting.then_some("2025-01-01T00:00:00Z"),
        }))
        .unwrap()
    }

    #[test]
    fn steps_follow_deletion_and_the_finalizer() {
        assert_eq!(step(&meta(&[], false), PVC_FINALIZER), Step::Add);
        assert_eq!(step(&meta(&[PVC_FINALIZER], false), PVC_FINALIZER), Step::Nothing);
        assert_eq!(step(&meta(&[PVC_FINALIZER], true), PVC_FINALIZER), Step::RemoveIfUnused);
        assert_eq!(step(&meta(&["other"], true), PVC_FINALIZER), Step::Nothing);
    }

    #[test]
    fn patches_keep_other_finalizers_and_guard_the_version() {
        let m = meta(&["a", PV_FINALIZER, "b"], true);
        assert_eq!(
            finalizer_patch(&m, PV_FINALIZER, false),
            json!({"metadata": {"finalizers": ["a", "b"], "resourceVersion": "7"}})
        );
        assert_eq!(
            finalizer_patch(&meta(&["a"], false), PV_FINALIZER, true),
            json!({"metadata": {"finalizers": ["a", PV_FINALIZER], "resourceVersion": "7"}})
        );
    }
}
