//! The ServiceAccount admission plugin on pod creation, as the reference's:
//!
//! - the pod's service account (`default` when none is named) must exist, or the pod is
//!   refused (403). The `default` account is made by the serviceaccount controller right after
//!   a namespace appears, so a miss is retried for a moment (the reference tries ten times,
//!   100–200 ms apart);
//! - unless `automountServiceAccountToken` is false (the pod's setting wins over the account's),
//!   every container and init container without a mount at
//!   `/var/run/secrets/kubernetes.io/serviceaccount` gets the `kube-api-access-<suffix>`
//!   projected volume there, read-only: a bound token (`token`, 3607 s), the cluster CA
//!   (`ca.crt` from the `kube-root-ca.crt` ConfigMap) and the namespace (downward API);
//! - a pod without image pull secrets gets its account's.
//!
//! Mirror pods (`kubernetes.io/config.mirror`) are left alone.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::apiserver::admission::cached;
use crate::apiserver::meta;
use crate::apiserver::server::{ApiServer, Call};
use crate::apiserver::status::{ApiError, ApiResult};
use crate::apiserver::watch_cache::CachedObject;

/// Where the token, CA and namespace are mounted.
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The prefix of the projected volume's name.
pub const VOLUME_PREFIX: &str = "kube-api-access-";
/// The ConfigMap holding the cluster CA in every namespace.
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// Lookups of the `default` account before giving up.
const DEFAULT_ACCOUNT_ATTEMPTS: u32 = 10;

/// The projected volume source the plugin adds.
pub fn token_volume_source() -> Value {
    json!({
        "defaultMode": 0o644,
        "sources": [
            {"serviceAccountToken": {
                "expirationSeconds": super::token_request::WARN_ONLY_EXPIRATION_SECONDS,
                "path": "token"}},
            {"configMap": {"name": ROOT_CA_CONFIGMAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace",
                "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
        ],
    })
}

/// The account, from the watch cache (the store when the cache misses it, as the reference's
/// plugin does a live lookup after its lister).
async fn service_account(
    server: &ApiServer,
    namespace: &str,
    name: &str,
) -> ApiResult<Option<Arc<CachedObject>>> {
    let attempts = if name == "default" { DEFAULT_ACCOUNT_ATTEMPTS } else { 1 };
    for attempt in 0..attempts {
        if attempt > 0 {
            let jitter = u64::from(meta::name_suffix().as_bytes()[0] % 100);
            tokio::time::sleep(Duration::from_millis(100 + jitter)).await;
        }
        let found = cached::get(server, ("", "v1", "serviceaccounts"), Some(namespace), name);
        if let Some(account) = found.await? {
            return Ok(Some(account));
        }
    }
    Ok(None)
}

/// Admits a pod being created (`name` is its final name).
pub(crate) async fn admit(
    server: &ApiServer,
    call: &Call,
    name: &str,
    pod: &mut Value,
) -> ApiResult<()> {
    let is_pod = call.info.group.is_empty() && call.info.kind == "Pod";
    if !is_pod || call.path.subresource.is_some() || !server.inner.service_accounts.admission {
        return Ok(());
    }
    if pod
        .pointer(&format!("/metadata/annotations/{}", MIRROR_ANNOTATION.replace('/', "~1")))
        .is_some()
    {
        return Ok(());
    }
    let namespace = call.namespace().unwrap_or_default().to_string();
    if !pod.get("spec").is_some_and(Value::is_object) {
        // Validation reports the missing spec.
        return Ok(());
    }
    let spec = &mut pod["spec"];
    let account_name = match spec.get("serviceAccountName").and_then(Value::as_str) {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => {
            spec["serviceAccountName"] = json!("default");
            "default".to_string()
        }
    };
    let Some(account) = service_account(server, &namespace, &account_name).await? else {
        return Err(ApiError::forbidden(
            &call.info,
            name,
            &format!(
                "error looking up service account {namespace}/{account_name}: serviceaccount \"{account_name}\" not found"
            ),
        ));
    };
    let automount = spec
        .get("automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| account.get("automountServiceAccountToken").and_then(Value::as_bool))
        .unwrap_or(true);
    if automount {
        mount_token(spec);
    }
    let has_pull_secrets =
        spec.get("imagePullSecrets").and_then(Value::as_array).is_some_and(|s| !s.is_empty());
    if let Some(secrets) = account.get("imagePullSecrets").filter(|_| !has_pull_secrets) {
        if secrets.as_array().is_some_and(|s| !s.is_empty()) {
            spec["imagePullSecrets"] = secrets.clone();
        }
    }
    Ok(())
}

/// Adds the projected volume and its mounts to a pod spec (an object).
fn mount_token(spec: &mut Value) {
    let existing = spec.get("volumes").and_then(Value::as_array).and_then(|volumes| {
        volumes.iter().find_map(|v| {
            v.get("name").and_then(Value::as_str).filter(|n| n.starts_with(VOLUME_PREFIX))
        })
    });
    let volume_name = existing
        .map(String::from)
        .unwrap_or_else(|| format!("{VOLUME_PREFIX}{}", meta::name_suffix()));
    let has_volume = existing.is_some();
    let mount = json!({"name": volume_name, "readOnly": true, "mountPath": MOUNT_PATH});
    let mut needs_volume = false;
    for list in ["initContainers", "containers"] {
        let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else { continue };
        for container in containers.iter_mut().filter(|c| c.is_object()) {
            let mounted = container
                .get("volumeMounts")
                .and_then(Value::as_array)
                .is_some_and(|m| m.iter().any(|m| m["mountPath"] == MOUNT_PATH));
            if mounted {
                continue;
            }
            if !container.get("volumeMounts").is_some_and(Value::is_array) {
                container["volumeMounts"] = json!([]);
            }
            if let Some(mounts) = container["volumeMounts"].as_array_mut() {
                mounts.push(mount.clone());
                needs_volume = true;
            }
        }
    }
    if needs_volume && !has_volume {
        if !spec.get("volumes").is_some_and(Value::is_array) {
            spec["volumes"] = json!([]);
        }
        if let Some(volumes) = spec["volumes"].as_array_mut() {
            volumes.push(json!({"name": volume_name, "projected": token_volume_source()}));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_container_gets_the_mount_once() {
        let mut spec = json!({
            "initContainers": [{"name": "init"}],
            "containers": [
                {"name": "a", "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
                {"name": "b", "volumeMounts": [{"name": "own", "mountPath": MOUNT_PATH}]},
            ],
            "volumes": [{"name": "data", "emptyDir": {}}],
        });
        mount_token(&mut spec);
        let volume = &spec["volumes"][1];
        let name = volume["name"].as_str().unwrap();
        assert!(name.starts_with(VOLUME_PREFIX) && name.len() == VOLUME_PREFIX.len() + 5);
        assert_eq!(
            volume["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"],
            3607
        );
        assert_eq!(spec["initContainers"][0]["volumeMounts"][0]["name"], name);
        assert_eq!(spec["containers"][0]["volumeMounts"][1]["mountPath"], MOUNT_PATH);
        assert_eq!(spec["containers"][0]["volumeMounts"][1]["readOnly"], true);
        // An existing mount at the path is left as is.
        assert_eq!(spec["containers"][1]["volumeMounts"].as_array().unwrap().len(), 1);

        // Admitting again (same spec) adds nothing.
        let before = spec.clone();
        mount_token(&mut spec);
        assert_eq!(spec, before);
    }
}
