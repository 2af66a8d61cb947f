//! The `pv-protection` loop: a terminating volume loses its finalizer once it is no longer
//! `Bound` (the binder marks it `Released` when its claim is gone).

use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{Patch, PatchParams};
use kube::Api;

use super::{finalizer_patch, step, Step, PV_FINALIZER};
use crate::controllers::persistentvolume::volume_phase;
use crate::controllers::ControllerOptions;
use crate::machinery::{run_workers, Action, Context, ControlError, WorkQueue};

/// Follows volumes.
pub fn start(ctx: Context<ControllerOptions>) {
    let queue: WorkQueue<String> = WorkQueue::new();
    ctx.informers.get::<PersistentVolume>().feed(queue.clone(), |pv: &PersistentVolume| {
        pv.metadata.name.clone().into_iter().collect()
    });
    let workers = ctx.options.workers;
    run_workers("pv-protection", queue, workers, move |name: String| {
        let ctx = ctx.clone();
        async move { sync(&ctx, &name).await }
    });
}

/// Adds or removes the volume's finalizer as its state asks.
async fn sync(ctx: &Context<ControllerOptions>, name: &str) -> Result<Action, ControlError> {
    let volumes = ctx.informers.get::<PersistentVolume>();
    volumes.ready().await;
    let Some(pv) = volumes.get(None, name) else { return Ok(Action::Done) };
    let add = match step(&pv.metadata, PV_FINALIZER) {
        Step::Nothing => return Ok(Action::Done),
        Step::Add => true,
        // Its phase changing brings it back.
        Step::RemoveIfUnused if in_use(&pv) => return Ok(Action::Done),
        Step::RemoveIfUnused => false,
    };
    let api: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let patch = finalizer_patch(&pv.metadata, PV_FINALIZER, add);
    match api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => {
            if !add {
                tracing::info!(volume = %name, "volume unbound; protection finalizer removed");
            }
            Ok(Action::Done)
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Action::Done),
        Err(error) => Err(error.into()),
    }
}

/// The reference's test: a `Bound` volume is in use.
fn in_use(pv: &PersistentVolume) -> bool {
    volume_phase(pv) == "Bound"
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_a_bound_volume_is_in_use() {
        let pv = |phase: &str| -> PersistentVolume {
            serde_json::from_value(json!({"metadata": {"name": "v"}, "status": {"phase": phase}}))
                .unwrap()
        };
        assert!(in_use(&pv("Bound")));
        for phase in ["Available", "Released", "Failed", "Pending"] {
            assert!(!in_use(&pv(phase)), "{phase}");
        }
    }
}
