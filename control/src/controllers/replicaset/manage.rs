//! Creating and deleting pods to close the gap between `replicas` and the pods an owner has:
//! creations in slow-start batches (1, 2, 4, …, stopping at the first failing batch, so a
//! quota or admission error costs one request rather than hundreds), deletions of the pods
//! [`ranking`](super::ranking) puts first, in parallel. Every step is announced to the
//! expectations before it is taken.

use std::future::Future;
use std::sync::Arc;

use futures::future::join_all;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};

use super::kind::ReplicaKind;
use super::ranking;
use crate::controllers::util::expectations::Expectations;
use crate::controllers::util::owner::controller_reference;
use crate::controllers::ControllerOptions;
use crate::machinery::{Context, ControlError, EventType, ObjectKey};

/// At most this many pods are created or deleted in one sync (the reference's `burstReplicas`).
const BURST_REPLICAS: usize = 500;

/// The message of an API error as a user should read it.
pub fn error_message(error: &ControlError) -> String {
    match error {
        ControlError::Api(kube::Error::Api(status)) => status.message.clone(),
        other => other.to_string(),
    }
}

/// The pod `owner` creates from `template`: its labels, annotations and spec, named
/// `<owner>-<random>` and controlled by the owner.
pub fn pod_from_template<K: ReplicaKind>(owner: &K, template: &PodTemplateSpec) -> Pod {
    let meta = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", owner.name_any())),
            namespace: owner.namespace(),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![controller_reference(owner)]),
            ..ObjectMeta::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// Runs `count` calls of `call` in batches of 1, 2, 4, …; stops after the first batch with a
/// failure. Returns how many calls succeeded and the first error.
pub async fn slow_start_batch<F, Fut>(count: usize, call: F) -> (usize, Option<ControlError>)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), ControlError>>,
{
    let mut remaining = count;
    let mut successes = 0;
    let mut batch = remaining.min(1);
    while batch > 0 {
        let results = join_all((0..batch).map(|_| call())).await;
        successes += results.iter().filter(|r| r.is_ok()).count();
        if let Some(error) = results.into_iter().find_map(Result::err) {
            return (successes, Some(error));
        }
        remaining -= batch;
        batch = (batch * 2).min(remaining);
    }
    (successes, None)
}

/// Creates or deletes pods of `owner` (whose active, claimed pods are `pods`; `related` are the
/// active pods of its siblings) until their number is `replicas`.
pub async fn manage_replicas<K: ReplicaKind>(
    ctx: &Context<ControllerOptions>,
    expectations: &Expectations,
    owner: &K,
    pods: &[Arc<Pod>],
    related: &[Arc<Pod>],
) -> Result<(), ControlError> {
    let key = ObjectKey::of(owner);
    let namespace = key.namespace.clone();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let wanted = usize::try_from(owner.replicas()).unwrap_or(0);
    if pods.len() < wanted {
        let Some(template) = owner.template() else {
            return Err(ControlError::Other("spec.template is missing".into()));
        };
        let missing = (wanted - pods.len()).min(BURST_REPLICAS);
        expectations.expect_creations(&key, missing);
        let pod = pod_from_template(owner, template);
        let (created, error) = slow_start_batch(missing, || async {
            match api.create(&PostParams::default(), &pod).await {
                Ok(created) => {
                    let message = format!("Created pod: {}", created.name_any());
                    ctx.events.record(owner, EventType::Normal, "SuccessfulCreate", &message).await;
                    Ok(())
                }
                Err(error) => {
                    let error = ControlError::from(error);
                    let message = format!("Error creating: {}", error_message(&error));
                    ctx.events.record(owner, EventType::Warning, "FailedCreate", &message).await;
                    Err(error)
                }
            }
        })
        .await;
        // The pods that were not created will never be observed.
        for _ in created..missing {
            expectations.creation_observed(&key);
        }
        return error.map_or(Ok(()), Err);
    }
    if pods.len() > wanted {
        let surplus = (pods.len() - wanted).min(BURST_REPLICAS);
        let doomed = ranking::pods_to_delete(pods, related, surplus, Timestamp::now());
        expectations.expect_deletions(&key, doomed.iter().filter_map(|p| p.metadata.uid.clone()));
        let deletions = doomed.iter().map(|pod| {
            let api = api.clone();
            let key = &key;
            async move {
                let name = pod.name_any();
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                match api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => {
                        let message = format!("Deleted pod: {name}");
                        ctx.events
                            .record(owner, EventType::Normal, "SuccessfulDelete", &message)
                            .await;
                        Ok(())
                    }
                    Err(error) => {
                        // This deletion will not be observed.
                        expectations.deletion_observed(key, &uid);
                        if matches!(&error, kube::Error::Api(s) if s.code == 404) {
                            return Ok(());
                        }
                        let error = ControlError::from(error);
                        let message = format!("Error deleting: {}", error_message(&error));
                        ctx.events
                            .record(owner, EventType::Warning, "FailedDelete", &message)
                            .await;
                        Err(error)
                    }
                }
            }
        });
        let results = join_all(deletions).await;
        return results.into_iter().find_map(Result::err).map_or(Ok(()), Err);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    #[tokio::test]
    async fn batches_grow_one_two_four() {
        let calls = AtomicUsize::new(0);
        let (ok, error) = slow_start_batch(10, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .await;
        assert_eq!((ok, error.is_none(), calls.load(Ordering::SeqCst)), (10, true, 10));
    }

    #[tokio::test]
    async fn a_failing_batch_stops_the_rest() {
        // Batches 1, 2, 4: the 4th call (first of the third batch) fails; that batch still
        // runs to its end, and nothing after it starts.
        let calls = Mutex::new(0);
        let (ok, error) = slow_start_batch(20, || async {
            let n = {
                let mut calls = calls.lock().unwrap();
                *calls += 1;
                *calls
            };
            if n == 4 {
                Err(ControlError::Other("quota".into()))
            } else {
                Ok(())
            }
        })
        .await;
        assert!(error.is_some());
        assert_eq!((ok, *calls.lock().unwrap()), (6, 7));
    }
}
