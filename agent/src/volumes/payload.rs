//! The files of configMap, secret, downwardAPI and projected volumes (kubelet's `MakePayload`
//! and `CollectData`), with kubelet's error messages. Writing them is `atomic_writer`'s job.
//!
//! Defaults: `defaultMode` 0644; an item's `mode` overrides it; with `items`, only the listed
//! keys appear (a missing key fails unless the source is `optional`); a missing non-optional
//! object fails with `configmap "x" not found` / `secret "x" not found`. Projected service
//! account tokens get mode 0600 when `fsGroup` is set (ownership then adds group read).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, ProjectedVolumeSource, Secret,
};

use super::atomic_writer::FileProjection;
use super::tokens::{TokenCache, TokenKey};
use crate::env::{field_value, resource_value, FieldScope, NodeFacts};
use crate::objects::ObjectSource;

/// Relative path → file.
pub(crate) type Payload = BTreeMap<String, FileProjection>;

/// kubelet's default for `defaultMode` in every projecting volume type.
pub(crate) const DEFAULT_MODE: u32 = 0o644;

/// What payload builders read.
pub(crate) struct PayloadContext<'a> {
    pub pod: &'a Pod,
    pub namespace: &'a str,
    pub node: &'a NodeFacts,
    pub objects: &'a dyn ObjectSource,
    pub fs_group: Option<u32>,
}

fn mode_of(mode: Option<i32>, default: u32) -> u32 {
    mode.map(|m| m as u32 & 0o7777).unwrap_or(default)
}

/// A ConfigMap's files (`data` and `binaryData`), `None` object meaning an empty optional one.
pub(crate) fn config_map_files(
    cm: Option<&ConfigMap>,
    items: Option<&[KeyToPath]>,
    default_mode: u32,
    optional: bool,
) -> Result<Payload, String> {
    let mut all: BTreeMap<&str, &[u8]> = BTreeMap::new();
    if let Some(cm) = cm {
        for (k, v) in cm.data.iter().flatten() {
            all.insert(k, v.as_bytes());
        }
        for (k, v) in cm.binary_data.iter().flatten() {
            all.entry(k).or_insert(&v.0);
        }
    }
    select(all, items, default_mode, optional, "configmap references non-existent config key")
}

/// A Secret's files.
pub(crate) fn secret_files(
    secret: Option<&Secret>,
    items: Option<&[KeyToPath]>,
    default_mode: u32,
    optional: bool,
) -> Result<Payload, String> {
    let all: BTreeMap<&str, &[u8]> = secret
        .iter()
        .flat_map(|s| s.data.iter().flatten())
        .map(|(k, v)| (k.as_str(), v.0.as_slice()))
        .collect();
    select(all, items, default_mode, optional, "references non-existent secret key")
}

fn select(
    all: BTreeMap<&str, &[u8]>,
    items: Option<&[KeyToPath]>,
    default_mode: u32,
    optional: bool,
    missing: &str,
) -> Result<Payload, String> {
    let file = |data: &[u8], mode| FileProjection { data: data.to_vec(), mode };
    match items.filter(|i| !i.is_empty()) {
        None => Ok(all.into_iter().map(|(k, v)| (k.to_owned(), file(v, default_mode))).collect()),
        Some(items) => {
            let mut payload = Payload::new();
            for item in items {
                match all.get(item.key.as_str()) {
                    Some(data) => {
                        payload.insert(
                            item.path.clone(),
                            file(data, mode_of(item.mode, default_mode)),
                        );
                    }
                    None if optional => {}
                    None => return Err(format!("{missing}: {}", item.key)),
                }
            }
            Ok(payload)
        }
    }
}

/// A configMap volume or projection: fetches the object, tolerating absence when optional.
pub(crate) async fn config_map_payload(
    ctx: &PayloadContext<'_>,
    name: &str,
    items: Option<&[KeyToPath]>,
    default_mode: u32,
    optional: bool,
) -> Result<Payload, String> {
    let cm = ctx.objects.config_map(ctx.namespace, name).await.map_err(|e| e.to_string())?;
    if cm.is_none() && !optional {
        return Err(format!("configmap \"{name}\" not found"));
    }
    config_map_files(cm.as_ref(), items, default_mode, optional)
}

/// A secret volume or projection.
pub(crate) async fn secret_payload(
    ctx: &PayloadContext<'_>,
    name: &str,
    items: Option<&[KeyToPath]>,
    default_mode: u32,
    optional: bool,
) -> Result<Payload, String> {
    let secret = ctx.objects.secret(ctx.namespace, name).await.map_err(|e| e.to_string())?;
    if secret.is_none() && !optional {
        return Err(format!("secret \"{name}\" not found"));
    }
    secret_files(secret.as_ref(), items, default_mode, optional)
}

/// A downwardAPI volume or projection (kubelet's `CollectData`): all item errors, aggregated.
pub(crate) fn downward_payload(
    ctx: &PayloadContext<'_>,
    items: &[DownwardAPIVolumeFile],
    default_mode: u32,
) -> Result<Payload, String> {
    let mut payload = Payload::new();
    let mut errors = Vec::new();
    for item in items {
        let value = if let Some(field) = &item.field_ref {
            field_value(field, ctx.pod, ctx.node, FieldScope::Volume).map_err(|e| e.to_string())
        } else if let Some(resource) = &item.resource_field_ref {
            let wanted = resource.container_name.as_deref().unwrap_or("");
            let containers = ctx
                .pod
                .spec
                .iter()
                .flat_map(|s| s.containers.iter().chain(s.init_containers.iter().flatten()));
            match containers.into_iter().find(|c| c.name == wanted) {
                Some(container) => {
                    resource_value(resource, container, ctx.node).map_err(|e| e.to_string())
                }
                None => Err(format!("container {wanted} not found")),
            }
        } else {
            Ok(String::new())
        };
        match value {
            Ok(value) => {
                let path = item.path.trim_end_matches('/').to_owned();
                payload.insert(
                    path,
                    FileProjection {
                        data: value.into_bytes(),
                        mode: mode_of(item.mode, default_mode),
                    },
                );
            }
            Err(e) => errors.push(e),
        }
    }
    aggregate(errors).map(|()| payload)
}

/// A projected volume: every source in order into one payload.
pub(crate) async fn projected_payload(
    ctx: &PayloadContext<'_>,
    volume: &str,
    source: &ProjectedVolumeSource,
    tokens: &TokenCache,
) -> Result<Payload, String> {
    let default_mode = mode_of(source.default_mode, DEFAULT_MODE);
    let mut payload = Payload::new();
    let mut errors = Vec::new();
    for projection in source.sources.iter().flatten() {
        let part = if let Some(cm) = &projection.config_map {
            let optional = cm.optional.unwrap_or(false);
            config_map_payload(ctx, &cm.name, cm.items.as_deref(), default_mode, optional).await
        } else if let Some(secret) = &projection.secret {
            let optional = secret.optional.unwrap_or(false);
            secret_payload(ctx, &secret.name, secret.items.as_deref(), default_mode, optional).await
        } else if let Some(downward) = &projection.downward_api {
            downward_payload(ctx, downward.items.as_deref().unwrap_or(&[]), default_mode)
        } else if let Some(token) = &projection.service_account_token {
            // With fsGroup, ownership turns 0600 into 0640, as kubelet does.
            let mode = if ctx.fs_group.is_some() { 0o600 } else { default_mode };
            let key = TokenKey::new(ctx.pod, volume, &token.path);
            tokens
                .token(
                    ctx.pod,
                    key,
                    token.audience.as_deref(),
                    token.expiration_seconds,
                    ctx.objects,
                )
                .await
                .map(|t| {
                    Payload::from([(
                        token.path.clone(),
                        FileProjection { data: t.into_bytes(), mode },
                    )])
                })
        } else if projection.cluster_trust_bundle.is_some() {
            Err("clusterTrustBundle projections are not supported".to_owned())
        } else {
            Ok(Payload::new())
        };
        match part {
            Ok(part) => payload.extend(part),
            Err(e) => errors.push(e),
        }
    }
    aggregate(errors).map(|()| payload)
}

/// apimachinery's error aggregate: one error as is, several as `[a, b]`.
fn aggregate(errors: Vec<String>) -> Result<(), String> {
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.into_iter().next().unwrap_or_default()),
        _ => Err(format!("[{}]", errors.join(", "))),
    }
}
