//! Pure arithmetic over a Deployment's ReplicaSets (the reference's `deploymentutil`): which
//! one is new (its template equals the Deployment's, hash label aside), the orders the
//! controller walks them in, replica counts, how many pods a new ReplicaSet may get, and the
//! proportions of a scale during a rollout.

use std::cmp::Ordering;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::Value;

use super::annotations::{self, DESIRED_REPLICAS, MAX_REPLICAS};
use super::fenceposts::{is_recreate, max_surge, replicas};
use super::hash::POD_TEMPLATE_HASH;

/// `spec.replicas` of a ReplicaSet.
pub fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

/// `status.replicas`, `status.readyReplicas`, `status.availableReplicas`.
pub fn status_replicas(rs: &ReplicaSet) -> (i32, i32, i32) {
    rs.status.as_ref().map_or((0, 0, 0), |s| {
        (s.replicas, s.ready_replicas.unwrap_or(0), s.available_replicas.unwrap_or(0))
    })
}

fn template_without_hash(template: Option<&PodTemplateSpec>) -> Value {
    let mut value =
        template.map_or(Value::Null, |t| serde_json::to_value(t).unwrap_or(Value::Null));
    if let Some(labels) = value.pointer_mut("/metadata/labels").and_then(Value::as_object_mut) {
        labels.remove(POD_TEMPLATE_HASH);
        if labels.is_empty() {
            if let Some(meta) = value.pointer_mut("/metadata").and_then(Value::as_object_mut) {
                meta.remove("labels");
            }
        }
    }
    value
}

/// The reference's `EqualIgnoreHash`: the templates are equal once the hash label is removed.
pub fn equal_ignore_hash(a: Option<&PodTemplateSpec>, b: Option<&PodTemplateSpec>) -> bool {
    template_without_hash(a) == template_without_hash(b)
}

/// Oldest first; equal creation times by name.
pub fn by_creation(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    let time = |rs: &ReplicaSet| rs.metadata.creation_timestamp.as_ref().map(|t| t.0);
    time(a).cmp(&time(b)).then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// Lowest revision first; equal revisions oldest first.
pub fn by_revision(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    annotations::revision(a).cmp(&annotations::revision(b)).then_with(|| by_creation(a, b))
}

/// Largest first; equal sizes newest first (the order to scale up in).
pub fn by_size_newer(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    spec_replicas(b).cmp(&spec_replicas(a)).then_with(|| by_creation(b, a))
}

/// Largest first; equal sizes oldest first (the order to scale down in).
pub fn by_size_older(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    spec_replicas(b).cmp(&spec_replicas(a)).then_with(|| by_creation(a, b))
}

/// The ReplicaSet running the Deployment's current template: the oldest whose template equals
/// it (there is normally one).
pub fn find_new<'a>(d: &Deployment, sets: &'a [ReplicaSet]) -> Option<&'a ReplicaSet> {
    let template = d.spec.as_ref().map(|s| &s.template);
    let mut sorted: Vec<&ReplicaSet> = sets.iter().collect();
    sorted.sort_by(|a, b| by_creation(a, b));
    sorted
        .into_iter()
        .find(|rs| equal_ignore_hash(rs.spec.as_ref().and_then(|s| s.template.as_ref()), template))
}

/// ReplicaSets with pods wanted.
pub fn active(sets: &[ReplicaSet]) -> Vec<ReplicaSet> {
    sets.iter().filter(|rs| spec_replicas(rs) > 0).cloned().collect()
}

/// Sum of `spec.replicas`.
pub fn total_spec(sets: &[ReplicaSet]) -> i32 {
    sets.iter().map(spec_replicas).sum()
}

/// Sums of `status.replicas`, `readyReplicas` and `availableReplicas`.
pub fn total_status(sets: &[ReplicaSet]) -> (i32, i32, i32) {
    sets.iter()
        .map(status_replicas)
        .fold((0, 0, 0), |(r, rd, a), (r2, rd2, a2)| (r + r2, rd + rd2, a + a2))
}

/// How many pods the new ReplicaSet may have now (the reference's `NewRSNewReplicas`).
pub fn new_rs_new_replicas(d: &Deployment, all: &[ReplicaSet], new_rs: &ReplicaSet) -> i32 {
    let desired = replicas(d);
    if is_recreate(d) {
        return desired;
    }
    let current = total_spec(all);
    let max_total = desired + max_surge(d);
    let new_size = spec_replicas(new_rs);
    if current >= max_total {
        return new_size;
    }
    let scale_up = (max_total - current).min(desired - new_size);
    new_size + scale_up
}

/// The only active ReplicaSet, or the newest if none is active (`None` when several are).
pub fn find_active_or_latest(
    new_rs: Option<&ReplicaSet>,
    old: &[ReplicaSet],
) -> Option<ReplicaSet> {
    if new_rs.is_none() && old.is_empty() {
        return None;
    }
    let mut sorted = old.to_vec();
    sorted.sort_by(|a, b| by_creation(b, a));
    let mut all = sorted.clone();
    all.extend(new_rs.cloned());
    let active = active(&all);
    match active.len() {
        0 => new_rs.cloned().or_else(|| sorted.first().cloned()),
        1 => active.into_iter().next(),
        _ => None,
    }
}

/// The new ReplicaSet has every pod the Deployment wants, all available.
pub fn is_saturated(d: &Deployment, rs: Option<&ReplicaSet>) -> bool {
    let Some(rs) = rs else { return false };
    let desired = replicas(d);
    annotations::int_annotation(rs, DESIRED_REPLICAS) == Some(desired)
        && spec_replicas(rs) == desired
        && status_replicas(rs).2 == desired
}

/// The share of `to_add` replicas `rs` gets when the Deployment is scaled mid-rollout
/// (the reference's `GetProportion`).
pub fn proportion(rs: &ReplicaSet, d: &Deployment, to_add: i32, added: i32) -> i32 {
    let size = spec_replicas(rs);
    if size == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = fraction(rs, d);
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

/// How much `rs` would grow (or shrink) to keep its share of the Deployment's new size.
fn fraction(rs: &ReplicaSet, d: &Deployment) -> i32 {
    let size = spec_replicas(rs);
    if replicas(d) == 0 {
        return -size;
    }
    let deployment_replicas = replicas(d) + max_surge(d);
    let annotated = annotations::int_annotation(rs, MAX_REPLICAS)
        .unwrap_or_else(|| d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0));
    if annotated == 0 {
        return 0;
    }
    let new_size = f64::from(size) * f64::from(deployment_replicas) / f64::from(annotated);
    new_size.round() as i32 - size
}

/// The sizes each active ReplicaSet gets when the Deployment's size changes mid-rollout:
/// `(name, new size)`, the leftover going to the first (largest) one.
pub fn proportional_sizes(d: &Deployment, active_sets: &[ReplicaSet]) -> Vec<(ReplicaSet, i32)> {
    let total = total_spec(active_sets);
    let allowed = if replicas(d) > 0 { replicas(d) + max_surge(d) } else { 0 };
    let to_add = allowed - total;
    let mut sorted = active_sets.to_vec();
    match to_add.cmp(&0) {
        Ordering::Greater => sorted.sort_by(by_size_newer),
        Ordering::Less => sorted.sort_by(by_size_older),
        Ordering::Equal => {}
    }
    let mut added = 0;
    let mut sizes: Vec<(ReplicaSet, i32)> = sorted
        .into_iter()
        .map(|rs| {
            let size = spec_replicas(&rs);
            if to_add == 0 {
                return (rs, size);
            }
            let share = proportion(&rs, d, to_add, added);
            added += share;
            (rs, size + share)
        })
        .collect();
    if to_add != 0 {
        if let Some((_, first)) = sizes.first_mut() {
            *first = (*first + to_add - added).max(0);
        }
    }
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::{SignedDuration, Timestamp};
    use serde_json::json;

    fn deployment(replicas: i32, surge: i32, unavailable: i32) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "d"},
            "spec": {"replicas": replicas, "selector": {},
                     "template": {"metadata": {"labels": {"app": "web"}}},
                     "strategy": {"type": "RollingUpdate",
                                  "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}}
        }))
        .unwrap()
    }

    fn rs(name: &str, size: i32, max: i32, age: i64) -> ReplicaSet {
        let mut rs: ReplicaSet = serde_json::from_value(json!({
            "metadata": {"name": name, "annotations": {MAX_REPLICAS: max.to_string()}},
            "spec": {"replicas": size, "selector": {}},
        }))
        .unwrap();
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        rs.metadata.creation_timestamp =
            Some(Time(now.checked_sub(SignedDuration::from_secs(age)).unwrap()));
        rs
    }

    #[test]
    fn new_replica_set_grows_within_the_surge() {
        let d = deployment(10, 3, 0);
        let old = rs("old", 10, 13, 100);
        let new = rs("new", 0, 13, 1);
        assert_eq!(new_rs_new_replicas(&d, &[old.clone(), new.clone()], &new), 3);
        let old = rs("old", 8, 13, 100);
        let new = rs("new", 5, 13, 1);
        assert_eq!(new_rs_new_replicas(&d, &[old, new.clone()], &new), 5, "already at 13");
    }

    #[test]
    fn scaling_mid_rollout_is_proportional() {
        // The reference's example: 10 replicas, maxSurge 3, old 8 + new 5 = 13; scaled to 15,
        // allowed 18: +5 split 8:5 -> old +3, new +2.
        let mut d = deployment(15, 3, 0);
        d.status = Some(Default::default());
        let old = rs("old", 8, 13, 100);
        let new = rs("new", 5, 13, 1);
        let sizes: Vec<(String, i32)> = proportional_sizes(&d, &[old, new])
            .into_iter()
            .map(|(rs, n)| (rs.metadata.name.unwrap(), n))
            .collect();
        assert_eq!(sizes, [("old".to_string(), 11), ("new".to_string(), 7)]);
    }

    #[test]
    fn equal_templates_ignore_the_hash_label() {
        let t = |labels: serde_json::Value| -> PodTemplateSpec {
            serde_json::from_value(json!({"metadata": {"labels": labels}})).unwrap()
        };
        let plain = t(json!({"app": "web"}));
        let hashed = t(json!({"app": "web", POD_TEMPLATE_HASH: "abc"}));
        assert!(equal_ignore_hash(Some(&plain), Some(&hashed)));
        assert!(!equal_ignore_hash(Some(&plain), Some(&t(json!({"app": "db"})))));
    }

    #[test]
    fn orders_break_ties_by_age_and_name() {
        let a = rs("a", 2, 2, 10);
        let b = rs("b", 2, 2, 5);
        assert_eq!(by_size_newer(&a, &b), Ordering::Greater, "equal size: newer first");
        assert_eq!(by_size_older(&a, &b), Ordering::Less, "equal size: older first");
        let c = rs("c", 3, 3, 1);
        assert_eq!(by_size_older(&c, &a), Ordering::Less, "larger first");
    }
}
