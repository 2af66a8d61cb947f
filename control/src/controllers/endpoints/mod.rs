//! The endpoints controller: keeps the core/v1 Endpoints of every Service that has a selector
//! equal to the pods it selects ([`subsets`]); deletes them when the Service is deleted.
//! Services without a selector (like `default/kubernetes`, whose endpoints the API server
//! writes) are left alone: their Endpoints belong to whoever wrote them.

mod subsets;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use kube::api::{DeleteParams, PostParams};
use kube::Api;

use super::util::service as svcutil;
use super::ControllerOptions;
use crate::machinery::{
    run_workers, Action, Context, ControlError, EventType, ObjectKey, WorkQueue,
};

/// The name `--disable-controllers` takes.
pub const NAME: &str = "endpoint";
/// The component in its Events.
pub const COMPONENT: &str = "endpoint-controller";
/// The label the reference puts on the endpoints of headless services.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// Subscribes to services, pods and endpoints, and starts the workers.
pub fn start(ctx: Context<ControllerOptions>) {
    let queue = WorkQueue::new();
    let services = ctx.informers.get::<Service>();
    services.feed(queue.clone(), |s: &Service| vec![ObjectKey::of(s)]);
    {
        // Any pod change may concern every selecting service of its namespace (including one
        // its old labels matched), so all of them look again.
        let services = services.clone();
        ctx.informers.get::<Pod>().feed(queue.clone(), move |pod: &Pod| {
            let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
            services
                .list_namespace(ns)
                .iter()
                .filter(|s| svcutil::selector(s).is_some())
                .map(|s| ObjectKey::of(s.as_ref()))
                .collect()
        });
    }
    {
        // Endpoints changed by someone else are put back; those of a deleted service go.
        let services = services.clone();
        ctx.informers.get::<Endpoints>().feed(queue.clone(), move |ep: &Endpoints| {
            let key = ObjectKey::of(ep);
            let selecting = services
                .get(key.namespace(), &key.name)
                .is_some_and(|s| svcutil::selector(&s).is_some());
            if selecting {
                vec![key]
            } else {
                vec![]
            }
        });
    }
    let workers = ctx.options.workers;
    run_workers(NAME, queue, workers, move |key: ObjectKey| {
        let ctx = ctx.clone();
        async move { reconcile(&ctx, &key).await }
    });
}

/// The labels of a service's Endpoints: the service's, plus the headless marker.
fn desired_labels(service: &Service) -> BTreeMap<String, String> {
    let mut labels = service.metadata.labels.clone().unwrap_or_default();
    labels.remove(HEADLESS_LABEL);
    if svcutil::is_headless(service) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    labels
}

async fn reconcile(
    ctx: &Context<ControllerOptions>,
    key: &ObjectKey,
) -> Result<Action, ControlError> {
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let cached = ctx.informers.get::<Endpoints>().get(key.namespace(), &key.name);
    let Some(service) = ctx.informers.get::<Service>().get(key.namespace(), &key.name) else {
        // The service is gone: so are its endpoints (as in the reference).
        if cached.is_some() {
            match api.delete(&key.name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(error) => return Err(error.into()),
            }
        }
        return Ok(Action::Done);
    };
    if svcutil::selector(&service).is_none() {
        return Ok(Action::Done);
    }
    let pods = ctx.informers.get::<Pod>().list_namespace(&key.namespace);
    let pods: Vec<&Pod> = pods.iter().map(|p| p.as_ref()).collect();
    let subsets = subsets::desired_subsets(&service, &pods);
    let labels = desired_labels(&service);
    let subsets = (!subsets.is_empty()).then_some(subsets);
    let labels_opt = (!labels.is_empty()).then_some(labels.clone());
    match cached {
        Some(current) => {
            let same_labels = current.metadata.labels.clone().unwrap_or_default() == labels;
            let same_subsets = current.subsets.clone().filter(|s| !s.is_empty()) == subsets;
            if same_labels && same_subsets {
                return Ok(Action::Done);
            }
            let mut next = (*current).clone();
            next.metadata.labels = labels_opt;
            next.subsets = subsets;
            if let Err(error) = api.replace(&key.name, &PostParams::default(), &next).await {
                if !matches!(&error, kube::Error::Api(s) if s.code == 409 || s.code == 404) {
                    let message = format!("Failed to update endpoint {key}: {error}");
                    ctx.events
                        .record(
                            service.as_ref(),
                            EventType::Warning,
                            "FailedToUpdateEndpoint",
                            &message,
                        )
                        .await;
                }
                return Err(error.into());
            }
        }
        None => {
            let mut endpoints = Endpoints::default();
            endpoints.metadata.name = Some(key.name.clone());
            endpoints.metadata.namespace = Some(key.namespace.clone());
            endpoints.metadata.labels = labels_opt;
            endpoints.subsets = subsets;
            if let Err(error) = api.create(&PostParams::default(), &endpoints).await {
                // A terminating namespace refuses new objects: nothing to do there.
                if !matches!(&error, kube::Error::Api(s) if s.code == 409 || s.code == 403) {
                    let message = format!("Failed to create endpoint for service {key}: {error}");
                    ctx.events
                        .record(
                            service.as_ref(),
                            EventType::Warning,
                            "FailedToCreateEndpoint",
                            &message,
                        )
                        .await;
                }
                return Err(error.into());
            }
        }
    }
    Ok(Action::Done)
}
