//! The ServiceAccount controller: every active namespace has a `default` ServiceAccount (the
//! one pods run as when they name none). Recreated when deleted; namespaces being deleted are
//! left alone, as their content is going away. The tokens controller (legacy token Secrets)
//! is in [`tokens`].

pub mod tokens;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::PostParams;
use kube::Api;

use super::ControllerOptions;
use crate::machinery::{run_workers, Action, Context, ControlError, WorkQueue};

/// The name `--disable-controllers` takes.
pub const NAME: &str = "serviceaccount";
/// The component in its Events.
pub const COMPONENT: &str = "service-account-controller";
/// The ServiceAccount every namespace gets.
const DEFAULT: &str = "default";

/// Subscribes to namespaces and service accounts, and starts the workers.
pub fn start(ctx: Context<ControllerOptions>) {
    let queue = WorkQueue::new();
    ctx.informers
        .get::<Namespace>()
        .feed(queue.clone(), |ns: &Namespace| ns.metadata.name.clone().into_iter().collect());
    // A deleted `default` account wakes its namespace.
    ctx.informers.get::<ServiceAccount>().feed(queue.clone(), |sa: &ServiceAccount| {
        if sa.metadata.name.as_deref() == Some(DEFAULT) {
            sa.metadata.namespace.clone().into_iter().collect()
        } else {
            Vec::new()
        }
    });
    let workers = ctx.options.workers;
    run_workers(NAME, queue, workers, move |namespace: String| {
        let ctx = ctx.clone();
        async move { reconcile(&ctx, &namespace).await }
    });
}

async fn reconcile(
    ctx: &Context<ControllerOptions>,
    namespace: &str,
) -> Result<Action, ControlError> {
    let Some(ns) = ctx.informers.get::<Namespace>().get(None, namespace) else {
        return Ok(Action::Done);
    };
    let terminating = ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    if terminating || ctx.informers.get::<ServiceAccount>().get(Some(namespace), DEFAULT).is_some()
    {
        return Ok(Action::Done);
    }
    let mut account = ServiceAccount::default();
    account.metadata.name = Some(DEFAULT.into());
    account.metadata.namespace = Some(namespace.into());
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), namespace);
    match api.create(&PostParams::default(), &account).await {
        Ok(_) => Ok(Action::Done),
        // Already there (the cache lagged), or the namespace started terminating meanwhile.
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 403 || s.code == 404 => {
            Ok(Action::Done)
        }
        Err(error) => Err(error.into()),
    }
}
