//! PodSecurity admission: the Pod Security Standards per namespace, as the reference's
//! built-in `PodSecurity` plugin (`k8s.io/pod-security-admission`) applies them.
//!
//! A namespace picks a level and version per mode with its `pod-security.kubernetes.io/*`
//! labels ([`policy`]). Pods are checked ([`evaluate`], with the [`baseline`] and
//! [`restricted`] check lists): a violation of the enforce level refuses the pod (403
//! `violates PodSecurity "baseline:latest": …`), one of the warn level adds a `Warning` header
//! (`would violate PodSecurity …`). Workloads (Deployment, ReplicaSet, StatefulSet, DaemonSet,
//! Job, CronJob, ReplicationController, PodTemplate) are never refused — their pods are —
//! but their templates are warned about. Raising a namespace's enforce level warns about the
//! existing pods that would violate it. Audit annotations are not recorded (the server keeps
//! no audit log), and no namespace, user or runtime class is exempt (the reference's default).

mod baseline;
mod evaluate;
mod policy;
mod restricted;

use std::collections::{BTreeMap, HashSet};

use serde_json::Value;

use super::super::meta;
use super::super::server::ApiServer;
use super::super::status::{ApiError, ApiResult, Cause};
use super::{cached, stored, Operation, Request};
use evaluate::Pod;
use policy::{LevelVersion, Policy};

/// Pod subresources whose writes do not change what the pod runs.
const IGNORED_POD_SUBRESOURCES: [&str; 8] =
    ["exec", "attach", "binding", "eviction", "log", "portforward", "proxy", "status"];

/// How many existing pods a namespace label change checks at most (the reference's default).
const MAX_PODS_TO_CHECK: usize = 3000;

/// Validates a write against its namespace's Pod Security policy.
pub(crate) async fn validate(
    server: &ApiServer,
    request: &mut Request<'_>,
    obj: &Value,
) -> ApiResult<()> {
    let info = &request.call.info;
    if info.custom {
        return Ok(());
    }
    match (info.group.as_str(), info.kind.as_str()) {
        ("", "Namespace") => validate_namespace(server, request, obj).await,
        ("", "Pod") => validate_pod(server, request, obj).await,
        ("", "ReplicationController" | "PodTemplate")
        | ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet")
        | ("batch", "Job" | "CronJob") => validate_workload(server, request, obj).await,
        _ => Ok(()),
    }
}

/// The policy of the request's namespace, and whether its labels could all be read.
async fn namespace_policy(server: &ApiServer, request: &Request<'_>) -> ApiResult<(Policy, bool)> {
    let Some(namespace) = request.call.namespace() else { return Ok((Policy::default(), true)) };
    let found =
        cached::get(server, ("", "v1", "namespaces"), None, namespace).await.map_err(|e| {
            ApiError::internal(format!("failed to lookup namespace \"{namespace}\": {}", e.message))
        })?;
    let labels = found.as_ref().and_then(|ns| ns.pointer("/metadata/labels"));
    let (policy, errors) = policy::from_labels(labels);
    Ok((policy, errors.is_empty()))
}

async fn validate_pod(server: &ApiServer, request: &mut Request<'_>, pod: &Value) -> ApiResult<()> {
    if request.subresource.is_some_and(|s| IGNORED_POD_SUBRESOURCES.contains(&s)) {
        return Ok(());
    }
    let (policy, labels_valid) = namespace_policy(server, request).await?;
    if labels_valid && policy.fully_privileged() {
        return Ok(());
    }
    if let (Operation::Update, Some(old)) = (request.operation, request.old) {
        if !significant_update(pod, old) {
            return Ok(());
        }
    }
    let meta = pod.get("metadata").unwrap_or(&Value::Null);
    let spec = pod.get("spec").unwrap_or(&Value::Null);
    let view = Pod { meta, spec };
    let enforced = evaluate::evaluate(policy.enforce, &view);
    if !enforced.is_empty() {
        let why = format!(
            "violates PodSecurity \"{}\": {}",
            policy.enforce,
            evaluate::details(&enforced)
        );
        return Err(ApiError::forbidden(&request.call.info, request.name, &why));
    }
    warn(request, policy.warn, &view);
    Ok(())
}

/// Adds the `would violate PodSecurity` warning when `view` violates `lv`.
fn warn(request: &mut Request<'_>, lv: LevelVersion, view: &Pod<'_>) {
    let violations = evaluate::evaluate(lv, view);
    if !violations.is_empty() {
        request.warn(format!(
            "would violate PodSecurity \"{lv}\": {}",
            evaluate::details(&violations)
        ));
    }
}

/// Whether a pod update can change what runs: containers added or removed, an image changed,
/// an ephemeral container added or changed. Other updates (labels, status, …) are not checked,
/// so a pod admitted before its namespace was labelled can still be updated.
fn significant_update(pod: &Value, old: &Value) -> bool {
    let list = |obj: &Value, key: &str| -> Vec<Value> {
        evaluate::items(obj.pointer(&format!("/spec/{key}"))).cloned().collect()
    };
    let image = |c: &Value| c.get("image").cloned().unwrap_or(Value::Null);
    for key in ["containers", "initContainers"] {
        let (new, old) = (list(pod, key), list(old, key));
        if new.len() != old.len() || new.iter().zip(&old).any(|(n, o)| image(n) != image(o)) {
            return true;
        }
    }
    let old_ephemeral = list(old, "ephemeralContainers");
    list(pod, "ephemeralContainers").iter().any(|c| {
        let same_name = old_ephemeral.iter().find(|o| o.get("name") == c.get("name"));
        same_name.is_none_or(|o| image(o) != image(c))
    })
}

async fn validate_workload(
    server: &ApiServer,
    request: &mut Request<'_>,
    obj: &Value,
) -> ApiResult<()> {
    if request.subresource.is_some() {
        return Ok(());
    }
    // A namespace that cannot be read does not block workloads (the reference only records it).
    let Ok((policy, labels_valid)) = namespace_policy(server, request).await else {
        return Ok(());
    };
    let privileged = policy::Level::Privileged;
    if labels_valid && policy.warn.level == privileged && policy.audit.level == privileged {
        return Ok(());
    }
    let pointer = match request.call.info.kind.as_str() {
        "CronJob" => "/spec/jobTemplate/spec/template",
        "PodTemplate" => "/template",
        _ => "/spec/template",
    };
    let Some(template) = evaluate::present(obj.pointer(pointer)) else { return Ok(()) };
    let meta = template.get("metadata").unwrap_or(&Value::Null);
    let spec = template.get("spec").unwrap_or(&Value::Null);
    warn(request, policy.warn, &Pod { meta, spec });
    Ok(())
}

async fn validate_namespace(
    server: &ApiServer,
    request: &mut Request<'_>,
    namespace: &Value,
) -> ApiResult<()> {
    if request.subresource.is_some() {
        return Ok(());
    }
    let (new_policy, new_errors) = policy::from_labels(namespace.pointer("/metadata/labels"));
    let old_policy = match (request.operation, request.old) {
        (Operation::Update, Some(old)) => {
            let (old_policy, old_errors) = policy::from_labels(old.pointer("/metadata/labels"));
            // Labels that were already bad do not block other updates of the namespace.
            if !new_errors.is_empty() && (old_errors.is_empty() || old_errors != new_errors) {
                return Err(invalid_labels(request, &new_errors));
            }
            old_policy
        }
        _ => {
            if !new_errors.is_empty() {
                return Err(invalid_labels(request, &new_errors));
            }
            return Ok(());
        }
    };
    let (new, old) = (new_policy.enforce, old_policy.enforce);
    let loosened_or_same = new == old
        || new.level == policy::Level::Privileged
        || (new.version == old.version && new.level <= old.level);
    if loosened_or_same {
        return Ok(());
    }
    for warning in existing_pod_warnings(server, request.name, new).await {
        request.warn(warning);
    }
    Ok(())
}

/// 422 for unreadable Pod Security labels.
fn invalid_labels(request: &Request<'_>, errors: &[policy::LabelError]) -> ApiError {
    let causes = errors
        .iter()
        .map(|e| Cause {
            reason: "FieldValueInvalid".into(),
            message: format!("Invalid value: {:?}: {}", e.value, e.detail),
            field: format!("metadata.labels[{}]", e.label),
        })
        .collect();
    ApiError::invalid(&request.call.info, request.name, causes)
}

/// The warnings about the pods of `namespace` that violate a new enforce level: one line per
/// distinct set of reasons, naming the first pod (by name) and how many others share it.
async fn existing_pod_warnings(
    server: &ApiServer,
    namespace: &str,
    lv: LevelVersion,
) -> Vec<String> {
    let pods = match stored::list(server, ("", "v1", "pods"), Some(namespace)).await {
        Ok(pods) => pods,
        Err(_) => {
            return vec!["failed to list pods while checking new PodSecurity enforce level".into()]
        }
    };
    let total = pods.len();
    let pods = prioritize(pods);
    let checked = pods.len().min(MAX_PODS_TO_CHECK);
    // reasons -> (lexically first pod name, count)
    let mut by_reasons: BTreeMap<String, (String, usize)> = BTreeMap::new();
    for pod in pods.iter().take(checked) {
        let meta = pod.get("metadata").unwrap_or(&Value::Null);
        let spec = pod.get("spec").unwrap_or(&Value::Null);
        let violations = evaluate::evaluate(lv, &Pod { meta, spec });
        if violations.is_empty() {
            continue;
        }
        let name = meta::meta_str(pod, "name").unwrap_or("").to_string();
        let entry = by_reasons.entry(evaluate::reasons(&violations)).or_insert((name.clone(), 0));
        if name < entry.0 {
            entry.0 = name;
        }
        entry.1 += 1;
    }
    let mut warnings = Vec::new();
    if checked < total {
        warnings.push(format!(
            "new PodSecurity enforce level only checked against the first {checked} of {total} existing pods"
        ));
    }
    if !by_reasons.is_empty() {
        warnings.push(format!(
            "existing pods in namespace \"{namespace}\" violate the new PodSecurity enforce level \"{lv}\""
        ));
    }
    let mut pod_warnings: Vec<String> = by_reasons
        .into_iter()
        .map(|(reasons, (first, count))| match count {
            1 => format!("{first}: {reasons}"),
            2 => format!("{first} (and 1 other pod): {reasons}"),
            n => format!("{first} (and {} other pods): {reasons}", n - 1),
        })
        .collect();
    pod_warnings.sort();
    warnings.extend(pod_warnings);
    warnings
}

/// One pod per controller first, then the other replicas, so a cap on checked pods still sees
/// every workload.
fn prioritize(pods: Vec<Value>) -> Vec<Value> {
    let mut seen = HashSet::new();
    let (mut first, mut rest) = (Vec::new(), Vec::new());
    for pod in pods {
        let controller = evaluate::items(pod.pointer("/metadata/ownerReferences"))
            .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
            .and_then(|r| r.get("uid").and_then(Value::as_str))
            .map(str::to_string);
        // A controller already seen puts its other pods at the back.
        let repeated = controller.is_some_and(|uid| !seen.insert(uid));
        if repeated {
            rest.push(pod);
        } else {
            first.push(pod);
        }
    }
    first.extend(rest);
    first
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_container_and_image_changes_are_significant() {
        let old = json!({"spec": {"containers": [{"name": "c", "image": "a:1"}]}});
        let relabelled = json!({"metadata": {"labels": {"x": "y"}},
            "spec": {"containers": [{"name": "c", "image": "a:1"}]}});
        assert!(!significant_update(&relabelled, &old));
        let new_image = json!({"spec": {"containers": [{"name": "c", "image": "a:2"}]}});
        assert!(significant_update(&new_image, &old));
        let debug = json!({"spec": {"containers": [{"name": "c", "image": "a:1"}],
            "ephemeralContainers": [{"name": "d", "image": "busybox"}]}});
        assert!(significant_update(&debug, &old));
    }

    #[test]
    fn one_pod_per_controller_comes_first() {
        let owned = |name: &str, uid: &str| json!({"metadata": {"name": name, "ownerReferences": [{"uid": uid, "controller": true}]}});
        let pods = vec![
            owned("a1", "rs-a"),
            owned("a2", "rs-a"),
            owned("b1", "rs-b"),
            json!({"metadata": {"name": "bare"}}),
        ];
        let names: Vec<String> = prioritize(pods)
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(names, ["a1", "b1", "bare", "a2"]);
    }
}
