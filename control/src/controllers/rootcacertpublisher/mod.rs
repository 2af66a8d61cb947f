//! The root CA certificate publisher, as the reference's `root-ca-cert-publisher`: every
//! namespace has a ConfigMap `kube-root-ca.crt` whose `ca.crt` is the cluster CA, for pods to
//! verify the API server (the ServiceAccount admission mounts it in every pod). A missing one is
//! created, a changed one (data or its description annotation) is put back; namespaces being
//! deleted are left alone.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{PostParams, Resource};
use kube::Api;

use super::ControllerOptions;
use crate::machinery::{run_workers, Action, Context, ControlError, WorkQueue};

/// The name `--disable-controllers` takes.
pub const NAME: &str = "root-ca-cert-publisher";
/// The component in its Events.
pub const COMPONENT: &str = "root-ca-cert-publisher";
/// The ConfigMap every namespace gets.
pub const CONFIGMAP: &str = "kube-root-ca.crt";
const DESCRIPTION_ANNOTATION: &str = "kubernetes.io/description";
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver \
    when using internal endpoints such as the internal service IP or kubernetes.default.svc. No \
    other usage is guaranteed across distributions of Kubernetes clusters.";

/// Subscribes to namespaces and the `kube-root-ca.crt` ConfigMaps, and starts the workers.
pub fn start(ctx: Context<ControllerOptions>) {
    let Some(ca) = ctx.options.ca.as_ref().map(|ca| ca.cert_pem.clone()) else {
        tracing::warn!(controller = NAME, "no cluster CA given: not publishing kube-root-ca.crt");
        return;
    };
    let queue = WorkQueue::new();
    ctx.informers
        .get::<Namespace>()
        .feed(queue.clone(), |ns: &Namespace| ns.metadata.name.clone().into_iter().collect());
    ctx.informers.get::<ConfigMap>().feed(queue.clone(), |cm: &ConfigMap| {
        if cm.metadata.name.as_deref() == Some(CONFIGMAP) {
            cm.metadata.namespace.clone().into_iter().collect()
        } else {
            Vec::new()
        }
    });
    let workers = ctx.options.workers;
    run_workers(NAME, queue, workers, move |namespace: String| {
        let (ctx, ca) = (ctx.clone(), ca.clone());
        async move { reconcile(&ctx, &ca, &namespace).await }
    });
}

/// The ConfigMap as it should be (`current` keeps its other fields).
fn desired(current: Option<&ConfigMap>, namespace: &str, ca: &str) -> ConfigMap {
    let mut cm = current.cloned().unwrap_or_default();
    cm.metadata.name = Some(CONFIGMAP.into());
    cm.metadata.namespace = Some(namespace.into());
    cm.meta_mut()
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(DESCRIPTION_ANNOTATION.into(), DESCRIPTION.into());
    cm.data = Some(BTreeMap::from([("ca.crt".to_string(), ca.to_string())]));
    cm
}

fn up_to_date(cm: &ConfigMap, ca: &str) -> bool {
    let data_ok = cm
        .data
        .as_ref()
        .is_some_and(|d| d.len() == 1 && d.get("ca.crt").map(String::as_str) == Some(ca));
    let described = cm
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DESCRIPTION_ANNOTATION))
        .is_some_and(|d| !d.is_empty());
    data_ok && described && cm.binary_data.as_ref().is_none_or(|b| b.is_empty())
}

async fn reconcile(
    ctx: &Context<ControllerOptions>,
    ca: &str,
    namespace: &str,
) -> Result<Action, ControlError> {
    let Some(ns) = ctx.informers.get::<Namespace>().get(None, namespace) else {
        return Ok(Action::Done);
    };
    let terminating = ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    if terminating {
        return Ok(Action::Done);
    }
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), namespace);
    let current = ctx.informers.get::<ConfigMap>().get(Some(namespace), CONFIGMAP);
    let result = match current.as_deref() {
        Some(cm) if up_to_date(cm, ca) => return Ok(Action::Done),
        Some(cm) => {
            let mut cm = desired(Some(cm), namespace, ca);
            cm.binary_data = None;
            api.replace(CONFIGMAP, &PostParams::default(), &cm).await.map(|_| ())
        }
        None => {
            let cm = desired(None, namespace, ca);
            api.create(&PostParams::default(), &cm).await.map(|_| ())
        }
    };
    match result {
        Ok(()) => Ok(Action::Done),
        // The namespace went away or started terminating; or the cache lagged behind a create
        // (409), and the ConfigMap's event will bring the namespace back.
        Err(kube::Error::Api(s)) if matches!(s.code, 403 | 404 | 409) => Ok(Action::Done),
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn desired_configmap_holds_the_ca_and_description() {
        let cm = desired(None, "ns1", "PEM");
        assert!(up_to_date(&cm, "PEM"));
        assert!(!up_to_date(&cm, "OTHER"));
        let mut tampered = cm.clone();
        tampered.data.as_mut().unwrap().insert("extra".into(), "x".into());
        assert!(!up_to_date(&tampered, "PEM"));
        let fixed = desired(Some(&tampered), "ns1", "PEM");
        assert!(up_to_date(&fixed, "PEM"));
        let mut undescribed = cm;
        undescribed.metadata.annotations = None;
        assert!(!up_to_date(&undescribed, "PEM"));
    }
}
