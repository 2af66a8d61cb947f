//! The pods a Job creates and the writes it makes to them: each pod comes from the template
//! with the `batch.kubernetes.io/job-tracking` finalizer (so a finished pod cannot vanish before
//! the Job counted it) and, for Indexed Jobs, its completion index as annotation, label,
//! `JOB_COMPLETION_INDEX` environment variable and hostname `<job>-<index>`.

use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::indexes::COMPLETION_INDEX;
use crate::controllers::util::owner::controller_reference;

/// The finalizer that keeps a Job's pods until the Job has counted them.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";

/// The environment variable carrying the completion index.
const INDEX_ENV: &str = "JOB_COMPLETION_INDEX";

/// The longest `generateName` prefix (the API server appends five random characters).
const MAX_GENERATE_NAME: usize = 58;

pub fn has_tracking_finalizer(pod: &Pod) -> bool {
    pod.metadata.finalizers.iter().flatten().any(|f| f == TRACKING_FINALIZER)
}

/// The pod `job` creates, for completion `index` in an Indexed Job.
pub fn pod_for(job: &Job, index: Option<i32>) -> Pod {
    let template = job.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let mut finalizers = meta.finalizers.unwrap_or_default();
    if !finalizers.iter().any(|f| f == TRACKING_FINALIZER) {
        finalizers.push(TRACKING_FINALIZER.into());
    }
    let name = job.name_any();
    let mut pod = Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: job.namespace(),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: Some(finalizers),
            owner_references: Some(vec![controller_reference(job)]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    };
    if let Some(index) = index {
        let value = index.to_string();
        pod.annotations_mut().insert(COMPLETION_INDEX.into(), value.clone());
        pod.labels_mut().insert(COMPLETION_INDEX.into(), value);
        pod.metadata.generate_name = Some(generate_name_with_index(&name, index));
        if let Some(spec) = pod.spec.as_mut() {
            spec.hostname = Some(format!("{name}-{index}"));
            spec.containers.iter_mut().for_each(add_index_env);
            spec.init_containers.iter_mut().flatten().for_each(add_index_env);
        }
    }
    pod
}

/// `<job>-<index>-`, shortening the job name when the prefix would be too long.
fn generate_name_with_index(job: &str, index: i32) -> String {
    let suffix = format!("-{index}-");
    let room = MAX_GENERATE_NAME.saturating_sub(suffix.len());
    let mut cut = job.len().min(room);
    while !job.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{suffix}", &job[..cut])
}

fn add_index_env(container: &mut Container) {
    let env = container.env.get_or_insert_with(Vec::new);
    if env.iter().any(|e| e.name == INDEX_ENV) {
        return;
    }
    env.push(EnvVar {
        name: INDEX_ENV.into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: format!("metadata.annotations['{COMPLETION_INDEX}']"),
            }),
            ..EnvVarSource::default()
        }),
    });
}

/// Removes the tracking finalizer from `pod` (a pod already gone counts as done).
pub async fn remove_finalizer(api: &Api<Pod>, pod: &Pod) -> Result<(), kube::Error> {
    if !has_tracking_finalizer(pod) {
        return Ok(());
    }
    let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": [TRACKING_FINALIZER]}});
    match api.patch(&pod.name_any(), &PatchParams::default(), &Patch::Strategic(&patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error),
    }
}

/// Deletes `pod` (a pod already gone counts as deleted).
pub async fn delete(api: &Api<Pod>, pod: &Arc<Pod>) -> Result<(), kube::Error> {
    match api.delete(&pod.name_any(), &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::JobSpec;
    use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec};

    #[test]
    fn indexed_pods_carry_their_index_everywhere() {
        let job = Job {
            metadata: ObjectMeta {
                name: Some("work".into()),
                namespace: Some("ns".into()),
                uid: Some("u".into()),
                ..Default::default()
            },
            spec: Some(JobSpec {
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some([("job-name".to_string(), "work".to_string())].into()),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![Container { name: "c".into(), ..Default::default() }],
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            status: None,
        };
        let plain = pod_for(&job, None);
        assert_eq!(plain.metadata.generate_name.as_deref(), Some("work-"));
        assert!(has_tracking_finalizer(&plain));
        assert_eq!(plain.metadata.owner_references.as_ref().unwrap()[0].controller, Some(true));
        let pod = pod_for(&job, Some(3));
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("work-3-"));
        assert_eq!(pod.annotations()[COMPLETION_INDEX], "3");
        assert_eq!(pod.labels()[COMPLETION_INDEX], "3");
        assert_eq!(pod.labels()["job-name"], "work");
        let spec = pod.spec.unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("work-3"));
        let env = &spec.containers[0].env.as_ref().unwrap()[0];
        assert_eq!(env.name, INDEX_ENV);
        let long = "j".repeat(70);
        assert_eq!(generate_name_with_index(&long, 12).len(), MAX_GENERATE_NAME);
    }
}
