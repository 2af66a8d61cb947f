//! The annotations a Deployment keeps on its ReplicaSets (and itself), as the reference writes
//! them: `deployment.kubernetes.io/revision` (the newest template gets max+1, so a rollback
//! moves an old ReplicaSet to the top), `revision-history` (the revisions a ReplicaSet had
//! before, capped at 2000 characters), `desired-replicas` and `max-replicas` (what proportional
//! scaling reads), plus the Deployment's own annotations copied to its new ReplicaSet.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
const ROLLBACK_TO: &str = "deprecated.deployment.rollback.to";
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The reference's `maxRevHistoryLengthInChars`.
const MAX_HISTORY_CHARS: usize = 2000;

/// Annotations that belong to the ReplicaSet, not copied from the Deployment.
fn skip_copy(key: &str) -> bool {
    matches!(
        key,
        LAST_APPLIED | REVISION | REVISION_HISTORY | DESIRED_REPLICAS | MAX_REPLICAS | ROLLBACK_TO
    )
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// The revision of `rs` (0 when absent or not a number).
pub fn revision(rs: &ReplicaSet) -> i64 {
    annotation(&rs.metadata, REVISION).and_then(|r| r.parse().ok()).unwrap_or(0)
}

/// The highest revision among `sets`.
pub fn max_revision<'a>(sets: impl IntoIterator<Item = &'a ReplicaSet>) -> i64 {
    sets.into_iter().map(revision).max().unwrap_or(0)
}

/// An integer annotation of `rs`.
pub fn int_annotation(rs: &ReplicaSet, key: &str) -> Option<i32> {
    annotation(&rs.metadata, key)?.parse().ok()
}

/// Copies the Deployment's own annotations to `rs`; true if something changed.
fn copy_deployment_annotations(d: &Deployment, rs: &mut ReplicaSet) -> bool {
    let mut changed = false;
    let target = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    for (key, value) in d.metadata.annotations.iter().flatten() {
        if skip_copy(key) || target.get(key) == Some(value) {
            continue;
        }
        target.insert(key.clone(), value.clone());
        changed = true;
    }
    changed
}

/// Sets `desired-replicas` and `max-replicas`; true if either changed.
pub fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (key, value) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        let value = value.to_string();
        if annotations.get(key) != Some(&value) {
            annotations.insert(key.to_string(), value);
            changed = true;
        }
    }
    changed
}

/// The reference's `SetNewReplicaSetAnnotations`: copies the Deployment's annotations, raises
/// the revision to `new_revision` (recording the old one in the history when the ReplicaSet
/// had one: a rollback), and for a ReplicaSet about to be created (`exists` false) sets the
/// replica annotations. True if anything changed.
pub fn set_new_replica_set_annotations(
    d: &Deployment,
    rs: &mut ReplicaSet,
    new_revision: i64,
    exists: bool,
    desired: i32,
    max: i32,
) -> bool {
    let mut changed = copy_deployment_annotations(d, rs);
    let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let old = annotations.get(REVISION).cloned();
    let old_revision = match old.as_deref().map(str::parse::<i64>) {
        None => 0,
        Some(Ok(r)) => r,
        // Someone wrote garbage there: leave the ReplicaSet alone, as the reference does.
        Some(Err(_)) => return false,
    };
    if old_revision < new_revision {
        annotations.insert(REVISION.into(), new_revision.to_string());
        changed = true;
        if let Some(old) = old {
            let history = annotations.get(REVISION_HISTORY).cloned().unwrap_or_default();
            if history.is_empty() {
                annotations.insert(REVISION_HISTORY.into(), old);
            } else {
                let mut entries: Vec<&str> = history.split(',').collect();
                let mut total = history.len() + old.len() + 1;
                let mut start = 0;
                while total > MAX_HISTORY_CHARS && start < entries.len() {
                    total -= entries[start].len() + 1;
                    start += 1;
                }
                if total <= MAX_HISTORY_CHARS {
                    entries.drain(..start);
                    entries.push(&old);
                    let joined = entries.join(",");
                    annotations.insert(REVISION_HISTORY.into(), joined);
                }
            }
        }
    }
    if !exists && set_replicas_annotations(rs, desired, max) {
        changed = true;
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs_with(pairs: &[(&str, &str)]) -> ReplicaSet {
        let mut rs = ReplicaSet::default();
        rs.metadata.annotations =
            Some(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        rs
    }

    #[test]
    fn a_new_replica_set_gets_revision_replicas_and_the_deployments_annotations() {
        let mut d = Deployment::default();
        d.metadata.annotations = Some(
            [("team", "edge"), (REVISION, "7")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        let mut rs = ReplicaSet::default();
        assert!(set_new_replica_set_annotations(&d, &mut rs, 3, false, 4, 5));
        let a = rs.metadata.annotations.as_ref().unwrap();
        assert_eq!(a.get(REVISION).map(String::as_str), Some("3"));
        assert_eq!(a.get("team").map(String::as_str), Some("edge"));
        assert_eq!(a.get(DESIRED_REPLICAS).map(String::as_str), Some("4"));
        assert_eq!(a.get(MAX_REPLICAS).map(String::as_str), Some("5"));
        assert!(a.get(REVISION_HISTORY).is_none());
        assert!(!set_new_replica_set_annotations(&d, &mut rs, 3, true, 4, 5), "idempotent");
    }

    #[test]
    fn a_rollback_moves_the_old_revision_into_the_history() {
        let d = Deployment::default();
        let mut rs = rs_with(&[(REVISION, "1")]);
        assert!(set_new_replica_set_annotations(&d, &mut rs, 3, true, 1, 1));
        assert_eq!(revision(&rs), 3);
        assert_eq!(rs.metadata.annotations.as_ref().unwrap()[REVISION_HISTORY], "1");
        assert!(set_new_replica_set_annotations(&d, &mut rs, 5, true, 1, 1));
        assert_eq!(rs.metadata.annotations.as_ref().unwrap()[REVISION_HISTORY], "1,3");
        // A lower revision never moves it back.
        assert!(!set_new_replica_set_annotations(&d, &mut rs, 4, true, 1, 1));
        assert_eq!(revision(&rs), 5);
    }

    #[test]
    fn max_revision_ignores_garbage() {
        let sets = [rs_with(&[(REVISION, "2")]), rs_with(&[(REVISION, "x")]), rs_with(&[])];
        assert_eq!(max_revision(&sets), 2);
    }
}
