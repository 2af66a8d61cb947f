//! The `pvc-protection` loop: a terminating claim loses its finalizer once no scheduled pod
//! of its namespace uses it.

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{ListParams, Patch, PatchParams};
use kube::Api;

use super::{finalizer_patch, step, Step, PVC_FINALIZER};
use crate::controllers::util::pod;
use crate::controllers::ControllerOptions;
use crate::machinery::{run_workers, Action, Context, ControlError, ObjectKey, WorkQueue};
use crate::scheduler::filters::volume_binding::claim_names;

/// Follows claims, and pods for the claims they use.
pub fn start(ctx: Context<ControllerOptions>) {
    let queue: WorkQueue<ObjectKey> = WorkQueue::new();
    let claims = ctx.informers.get::<PersistentVolumeClaim>();
    claims.feed(queue.clone(), |c: &PersistentVolumeClaim| vec![ObjectKey::of(c)]);
    // A pod that goes away (or finishes) may be the last user of a terminating claim.
    ctx.informers.get::<Pod>().feed(queue.clone(), |p: &Pod| {
        let namespace = p.metadata.namespace.clone().unwrap_or_default();
        claim_names(p).into_iter().map(|name| ObjectKey::new(namespace.clone(), name)).collect()
    });
    let workers = ctx.options.workers;
    run_workers("pvc-protection", queue, workers, move |key: ObjectKey| {
        let ctx = ctx.clone();
        async move { sync(&ctx, &key).await }
    });
}

/// Adds or removes the claim's finalizer as its state asks.
async fn sync(ctx: &Context<ControllerOptions>, key: &ObjectKey) -> Result<Action, ControlError> {
    let claims = ctx.informers.get::<PersistentVolumeClaim>();
    let pods = ctx.informers.get::<Pod>();
    claims.ready().await;
    pods.ready().await;
    let Some(claim) = claims.get(Some(&key.namespace), &key.name) else {
        return Ok(Action::Done);
    };
    let add = match step(&claim.metadata, PVC_FINALIZER) {
        Step::Nothing => return Ok(Action::Done),
        Step::Add => true,
        Step::RemoveIfUnused => {
            let cached = pods.list_namespace(&key.namespace);
            if cached.iter().any(|p| uses(p, &claim)) {
                // That pod's deletion or end brings the claim back.
                return Ok(Action::Done);
            }
            let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &key.namespace);
            let live = api.list(&ListParams::default()).await?;
            if live.items.iter().any(|p| uses(p, &claim)) {
                return Ok(Action::Done);
            }
            false
        }
    };
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let patch = finalizer_patch(&claim.metadata, PVC_FINALIZER, add);
    match api.patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => {
            if !add {
                tracing::info!(claim = %key, "claim unused; protection finalizer removed");
            }
            Ok(Action::Done)
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Action::Done),
        Err(error) => Err(error.into()),
    }
}

/// Whether `pod` uses `claim` as the reference's `podUsesPVC` decides: only a scheduled pod
/// counts (an unscheduled one cannot start with a terminating claim: the scheduler refuses
/// it); a claim named in a volume counts whatever the pod's phase, the claim of a generic
/// ephemeral volume only while the pod that owns it has not shut down.
pub fn uses(pod: &Pod, claim: &PersistentVolumeClaim) -> bool {
    let Some(spec) = pod.spec.as_ref() else { return false };
    if spec.node_name.as_deref().is_none_or(str::is_empty) {
        return false;
    }
    let claim_name = claim.metadata.name.as_deref().unwrap_or("");
    let pod_name = pod.metadata.name.as_deref().unwrap_or("");
    spec.volumes.iter().flatten().any(|volume| {
        if let Some(source) = &volume.persistent_volume_claim {
            return source.claim_name == claim_name;
        }
        volume.ephemeral.is_some()
            && !is_shut_down(pod)
            && format!("{pod_name}-{}", volume.name) == claim_name
            && owned_by(claim, pod)
    })
}

/// The reference's `podIsShutDown`: force-deleted (or done with by its node), or finished.
fn is_shut_down(pod: &Pod) -> bool {
    let forced = pod.metadata.deletion_timestamp.is_some()
        && pod.metadata.deletion_grace_period_seconds == Some(0);
    forced || pod::is_terminal(pod)
}

/// Whether the claim's controller owner is `pod` (an ephemeral volume's claim, not a claim of
/// the same name made by hand).
fn owned_by(claim: &PersistentVolumeClaim, pod: &Pod) -> bool {
    let uid = pod.metadata.uid.as_deref().unwrap_or("");
    claim
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.kind == "Pod" && o.uid == uid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim(value: serde_json::Value) -> PersistentVolumeClaim {
        serde_json::from_value(value).unwrap()
    }

    fn pod(extra: serde_json::Value) -> Pod {
        let mut value = json!({"metadata": {"name": "app", "namespace": "ns", "uid": "pod-uid"},
            "spec": {"nodeName": "n1", "containers": [{"name": "c"}], "volumes": [
                {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
                {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}}]}});
        crate::scheduler::node_info::testing::merge(&mut value, extra);
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn scheduled_pods_use_their_claims_whatever_their_phase() {
        let data = claim(json!({"metadata": {"name": "data", "namespace": "ns"}}));
        assert!(uses(&pod(json!({})), &data));
        assert!(uses(&pod(json!({"status": {"phase": "Succeeded"}})), &data));
        assert!(!uses(&pod(json!({"spec": {"nodeName": null}})), &data));
        let other = claim(json!({"metadata": {"name": "other", "namespace": "ns"}}));
        assert!(!uses(&pod(json!({})), &other));
    }

    #[test]
    fn an_ephemeral_claim_is_used_by_its_owner_until_it_shuts_down() {
        let owned = claim(json!({"metadata": {"name": "app-scratch", "namespace": "ns",
            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "app",
                                 "uid": "pod-uid", "controller": true}]}}));
        assert!(uses(&pod(json!({})), &owned));
        assert!(!uses(&pod(json!({"status": {"phase": "Failed"}})), &owned));
        let forced = json!({"metadata": {"deletionTimestamp": "2025-01-01T00:00:00Z",
                                         "deletionGracePeriodSeconds": 0}});
        assert!(!uses(&pod(forced), &owned));
        let stray = claim(json!({"metadata": {"name": "app-scratch", "namespace": "ns"}}));
        assert!(!uses(&pod(json!({})), &stray));
    }
}
