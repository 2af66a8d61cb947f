//! A DaemonSet's history as apps/v1 ControllerRevisions (the reference's `constructHistory`,
//! `snapshot`, `dedupCurHistories` and `cleanupHistory`), which `kubectl rollout history` lists
//! and `kubectl rollout undo` applies. Each revision the DaemonSet controls holds, as `data`, the
//! strategic merge patch `{"spec": {"template": {..., "$patch": "replace"}}}` that restores its
//! template; it is named `<ds>-<hash>` and labelled `controller-revision-hash: <hash>`, the
//! hash of the template (with `status.collisionCount`). The revision whose patch equals the
//! current template's is the current one and carries the highest `revision` number; older ones
//! beyond `revisionHistoryLimit` are deleted once no pod runs them.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{json, Value};

use super::nodes::REVISION_HASH;
use crate::controllers::deployment::hash;
use crate::controllers::util::{claim, owner, selector};
use crate::controllers::ControllerOptions;
use crate::machinery::{Context, ControlError, Informer};

/// The reference's default `revisionHistoryLimit`.
const DEFAULT_HISTORY_LIMIT: i32 = 10;

/// The patch that restores `ds`'s current template (the reference's `getPatch`).
pub fn patch_of(ds: &DaemonSet) -> Value {
    let template = ds.spec.as_ref().map(|s| &s.template);
    let mut template = serde_json::to_value(template).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut template {
        map.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": template}})
}

/// Whether `revision` records `ds`'s current template.
pub fn matches(ds: &DaemonSet, revision: &ControllerRevision) -> bool {
    revision.data.as_ref().is_some_and(|d| d.0 == patch_of(ds))
}

/// The hash a revision stands for: its label (the name for revisions made before the label).
pub fn hash_of(revision: &ControllerRevision) -> String {
    revision.labels().get(REVISION_HASH).cloned().unwrap_or_else(|| revision.name_any())
}

fn max_revision<'a>(revisions: impl IntoIterator<Item = &'a Arc<ControllerRevision>>) -> i64 {
    revisions.into_iter().map(|r| r.revision).max().unwrap_or(0)
}

/// The current revision and the older ones.
pub struct History {
    pub current: Arc<ControllerRevision>,
    pub old: Vec<Arc<ControllerRevision>>,
}

/// Finds (adopting and releasing as its selector says) the revisions `ds` controls, makes sure
/// exactly one is current with the highest number, and returns them.
pub async fn construct(
    ctx: &Context<ControllerOptions>,
    revisions: &Informer<ControllerRevision>,
    ds: &Arc<DaemonSet>,
    pods: &[Arc<Pod>],
) -> Result<History, ControlError> {
    let namespace = ds.namespace().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &namespace);
    let controlled = controlled(ctx, revisions, ds).await?;
    let (mut current, mut old) = (Vec::new(), Vec::new());
    for mut revision in controlled {
        if !revision.labels().contains_key(REVISION_HASH) {
            let patch = json!({"metadata": {"labels": {REVISION_HASH: revision.name_any()}}});
            let params = PatchParams::default();
            let updated = api.patch(&revision.name_any(), &params, &Patch::Merge(&patch)).await?;
            revision = Arc::new(updated);
        }
        if matches(ds, &revision) {
            current.push(revision);
        } else {
            old.push(revision);
        }
    }
    let next_revision = max_revision(&old) + 1;
    let current = match current.len() {
        0 => Arc::new(snapshot(ctx, ds, next_revision).await?),
        _ => dedup(ctx, ds, current, pods).await?,
    };
    let current = if current.revision < next_revision {
        let patch = json!({"revision": next_revision});
        let params = PatchParams::default();
        Arc::new(api.patch(&current.name_any(), &params, &Patch::Merge(&patch)).await?)
    } else {
        current
    };
    Ok(History { current, old })
}

/// The revisions `ds` controls after claiming.
async fn controlled(
    ctx: &Context<ControllerOptions>,
    revisions: &Informer<ControllerRevision>,
    ds: &Arc<DaemonSet>,
) -> Result<Vec<Arc<ControllerRevision>>, ControlError> {
    let namespace = ds.namespace().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &namespace);
    let reference = owner::controller_reference(ds.as_ref());
    let deleting = ds.metadata.deletion_timestamp.is_some();
    let selects = |r: &ControllerRevision| {
        ds.spec.as_ref().is_some_and(|s| selector::matches(&s.selector, r.metadata.labels.as_ref()))
    };
    let recheck = || async {
        let daemon_sets: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &namespace);
        let fresh = daemon_sets.get(&ds.name_any()).await?;
        Ok(fresh.uid() == ds.uid() && fresh.metadata.deletion_timestamp.is_none())
    };
    let candidates = revisions.list_namespace(&namespace);
    Ok(claim::claim(&api, &reference, deleting, selects, candidates, recheck).await?)
}

/// Records the current template as revision `number`. A name taken by a revision of another
/// template bumps `status.collisionCount` (the next sync hashes differently) and fails.
async fn snapshot(
    ctx: &Context<ControllerOptions>,
    ds: &DaemonSet,
    number: i64,
) -> Result<ControllerRevision, ControlError> {
    let namespace = ds.namespace().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(spec) = ds.spec.as_ref() else {
        return Err(ControlError::Other("spec is missing".into()));
    };
    let collision_count = ds.status.as_ref().and_then(|s| s.collision_count);
    let hash = hash::compute(&spec.template, collision_count);
    let name = format!("{}-{hash}", ds.name_any());
    let mut labels: BTreeMap<String, String> =
        spec.template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
    labels.insert(REVISION_HASH.into(), hash);
    let revision = ControllerRevision {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.clone()),
            labels: Some(labels),
            annotations: ds.metadata.annotations.clone(),
            owner_references: Some(vec![owner::controller_reference(ds)]),
            ..ObjectMeta::default()
        },
        data: Some(RawExtension(patch_of(ds))),
        revision: number,
    };
    let error = match api.create(&PostParams::default(), &revision).await {
        Ok(created) => return Ok(created),
        Err(kube::Error::Api(status)) if status.code == 409 => kube::Error::Api(status),
        Err(error) => return Err(error.into()),
    };
    let existing = api.get(&name).await?;
    if matches(ds, &existing) {
        return Ok(existing);
    }
    // Another template hashed to this name: count the collision on the freshest DaemonSet.
    let daemon_sets: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &namespace);
    let fresh = daemon_sets.get(&ds.name_any()).await?;
    let fresh_count = fresh.status.as_ref().and_then(|s| s.collision_count);
    if fresh_count != collision_count {
        return Err(ControlError::Other(format!(
            "stale collision count {collision_count:?} (now {fresh_count:?}); retrying"
        )));
    }
    let patch = json!({
        "metadata": {"resourceVersion": fresh.resource_version()},
        "status": {"collisionCount": collision_count.unwrap_or(0) + 1},
    });
    daemon_sets
        .patch_status(&ds.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    tracing::info!(daemonset = %ds.name_any(), "hash collision; bumped collisionCount");
    Err(error.into())
}

/// Keeps the highest-numbered of several revisions of the current template: pods of the others
/// are relabelled to its hash, then the others are deleted.
async fn dedup(
    ctx: &Context<ControllerOptions>,
    ds: &DaemonSet,
    mut current: Vec<Arc<ControllerRevision>>,
    pods: &[Arc<Pod>],
) -> Result<Arc<ControllerRevision>, ControlError> {
    current.sort_by_key(|r| r.revision);
    let Some(keep) = current.pop() else {
        return Err(ControlError::Other("no current revision to keep".into()));
    };
    if current.is_empty() {
        return Ok(keep);
    }
    let namespace = ds.namespace().unwrap_or_default();
    let keep_hash = hash_of(&keep);
    let duplicate_hashes: HashSet<String> = current.iter().map(|r| hash_of(r)).collect();
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    for p in pods {
        let hash = p.labels().get(REVISION_HASH);
        if hash.is_some_and(|h| duplicate_hashes.contains(h)) {
            let patch = json!({"metadata": {"labels": {REVISION_HASH: keep_hash}}});
            pod_api.patch(&p.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
        }
    }
    let api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &namespace);
    for duplicate in current {
        delete_revision(&api, &duplicate.name_any()).await?;
    }
    Ok(keep)
}

async fn delete_revision(api: &Api<ControllerRevision>, name: &str) -> Result<(), ControlError> {
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// The old revisions to delete: beyond `revisionHistoryLimit`, oldest first, skipping the ones
/// a pod still runs.
pub fn expired<'a>(
    ds: &DaemonSet,
    old: &'a [Arc<ControllerRevision>],
    pods: &[Arc<Pod>],
) -> Vec<&'a Arc<ControllerRevision>> {
    let limit =
        ds.spec.as_ref().and_then(|s| s.revision_history_limit).unwrap_or(DEFAULT_HISTORY_LIMIT);
    let excess = old.len().saturating_sub(usize::try_from(limit).unwrap_or(0));
    if excess == 0 {
        return Vec::new();
    }
    let live: HashSet<&str> =
        pods.iter().filter_map(|p| p.labels().get(REVISION_HASH).map(String::as_str)).collect();
    let mut by_age: Vec<&Arc<ControllerRevision>> = old.iter().collect();
    by_age.sort_by_key(|r| r.revision);
    by_age.into_iter().filter(|r| !live.contains(hash_of(r).as_str())).take(excess).collect()
}

/// Deletes the [`expired`] revisions.
pub async fn cleanup(
    ctx: &Context<ControllerOptions>,
    ds: &DaemonSet,
    old: &[Arc<ControllerRevision>],
    pods: &[Arc<Pod>],
) -> Result<(), ControlError> {
    let namespace = ds.namespace().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &namespace);
    for revision in expired(ds, old, pods) {
        delete_revision(&api, &revision.name_any()).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::nodes::testing::daemon_pod;
    use super::*;

    fn ds(image: &str, limit: i32) -> DaemonSet {
        serde_json::from_value(json!({
            "metadata": {"name": "d", "namespace": "default"},
            "spec": {
                "selector": {"matchLabels": {"app": "d"}},
                "revisionHistoryLimit": limit,
                "template": {"metadata": {"labels": {"app": "d"}},
                             "spec": {"containers": [{"name": "c", "image": image}]}}
            }
        }))
        .unwrap()
    }

    fn revision(name: &str, number: i64, of: &DaemonSet) -> Arc<ControllerRevision> {
        let mut r = ControllerRevision {
            data: Some(RawExtension(patch_of(of))),
            revision: number,
            ..Default::default()
        };
        r.metadata.name = Some(name.into());
        r.metadata.labels = Some([(REVISION_HASH.to_string(), name.to_string())].into());
        Arc::new(r)
    }

    #[test]
    fn the_patch_replaces_the_template_and_matches_only_its_own() {
        let a = ds("busybox:1", 10);
        let patch = patch_of(&a);
        assert_eq!(patch["spec"]["template"]["$patch"], "replace");
        assert_eq!(patch["spec"]["template"]["spec"]["containers"][0]["image"], "busybox:1");
        assert_eq!(patch.as_object().map(|o| o.len()), Some(1), "spec only");
        assert!(matches(&a, &revision("r1", 1, &a)));
        assert!(!matches(&ds("busybox:2", 10), &revision("r1", 1, &a)));
    }

    #[test]
    fn old_revisions_beyond_the_limit_go_oldest_first_unless_a_pod_runs_them() {
        let current = ds("v4", 1);
        let old = vec![
            revision("h3", 3, &ds("v3", 1)),
            revision("h1", 1, &ds("v1", 1)),
            revision("h2", 2, &ds("v2", 1)),
        ];
        let pods = vec![daemon_pod("p", "n", "h1", "Running", true, 1)];
        let doomed: Vec<String> =
            expired(&current, &old, &pods).iter().map(|r| r.name_any()).collect();
        assert_eq!(doomed, ["h2", "h3"], "h1 still runs; two over the limit of one");
        assert!(expired(&ds("v4", 3), &old, &[]).is_empty());
    }
}
