//! The namespace controller: a namespace being deleted (`deletionTimestamp` set, phase
//! Terminating, `kubernetes` in `spec.finalizers`) has everything in it deleted ([`content`]),
//! reports progress in its status conditions ([`conditions`]), and once nothing is left loses
//! the `kubernetes` finalizer through `namespaces/{name}/finalize`, upon which the API server
//! removes it. Content that is still going away (pods in their grace period, objects held by
//! finalizers) is polled, since it is spread over every resource type.

mod conditions;
mod content;

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;

use super::ControllerOptions;
use crate::machinery::{run_workers, Action, Context, ControlError, WorkQueue};

/// The name `--disable-controllers` takes.
pub const NAME: &str = "namespace";
/// The component in its Events.
pub const COMPONENT: &str = "namespace-controller";
/// The finalizer this controller owns.
const FINALIZER: &str = "kubernetes";
/// How soon to look again while content is still going away.
const POLL: Duration = Duration::from_secs(2);

/// Subscribes to namespaces and starts the workers.
pub fn start(ctx: Context<ControllerOptions>) {
    let queue = WorkQueue::new();
    ctx.informers.get::<Namespace>().feed(queue.clone(), |ns: &Namespace| {
        ns.metadata
            .deletion_timestamp
            .is_some()
            .then(|| ns.metadata.name.clone())
            .into_iter()
            .flatten()
            .collect()
    });
    let workers = ctx.options.workers;
    run_workers(NAME, queue, workers, move |name: String| {
        let ctx = ctx.clone();
        async move { reconcile(&ctx, &name).await }
    });
}

async fn reconcile(ctx: &Context<ControllerOptions>, name: &str) -> Result<Action, ControlError> {
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    // A live read: the cache may still show finalizers this controller already removed.
    let Some(namespace) = api.get_opt(name).await? else {
        return Ok(Action::Done);
    };
    let finalizers = namespace.spec.as_ref().and_then(|s| s.finalizers.clone()).unwrap_or_default();
    if namespace.metadata.deletion_timestamp.is_none() || !finalizers.iter().any(|f| f == FINALIZER)
    {
        return Ok(Action::Done);
    }
    let cleanup = content::delete_content(&ctx.client, name).await;
    let previous = namespace.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    let next = conditions::conditions(&cleanup, &previous, Timestamp::now());
    if next != previous {
        let patch = json!({ "status": { "phase": "Terminating", "conditions": next } });
        match api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(Action::Done),
            Err(error) => return Err(error.into()),
        }
    }
    if !cleanup.is_done() {
        tracing::debug!(namespace = name, remaining = ?cleanup.remaining, "namespace content remains");
        if let Some(error) = cleanup.discovery_failure.or(cleanup.content_failures.first().cloned())
        {
            return Err(ControlError::Other(format!(
                "deleting the content of namespace {name}: {error}"
            )));
        }
        return Ok(Action::RequeueAfter(POLL));
    }
    let mut finalized = namespace.clone();
    if let Some(spec) = finalized.spec.as_mut() {
        spec.finalizers = Some(finalizers.into_iter().filter(|f| f != FINALIZER).collect());
    }
    match api.replace_subresource("finalize", name, &PostParams::default(), &finalized).await {
        Ok(_) => Ok(Action::Done),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(Action::Done),
        Err(error) => Err(error.into()),
    }
}
