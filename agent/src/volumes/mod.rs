//! Pod volumes on the node, as kubelet lays them out: for every volume of a pod, a host path
//! ready to be bind-mounted into its containers.
//!
//! Layout under the manager's root (`<agent data dir>/pods`):
//! ```text
//! <pod uid>/volumes/kubernetes.io~empty-dir/<name>     emptyDir (disk, or a tmpfs for Memory)
//! <pod uid>/volumes/kubernetes.io~configmap/<name>     configMap   ┐ written by the atomic
//! <pod uid>/volumes/kubernetes.io~secret/<name>        secret      │ writer (`..data` swap),
//! <pod uid>/volumes/kubernetes.io~downward-api/<name>  downwardAPI │ always mounted read-only
//! <pod uid>/volumes/kubernetes.io~projected/<name>     projected   ┘
//! ```
//! hostPath volumes are the host path itself, after kubelet's `type` checks;
//! persistentVolumeClaims are resolved by [`ObjectSource::persistent_volume`] to a hostPath-style
//! source and checked the same way.
//!
//! API boundary: [`VolumeManager`] — `new(root)`, `with_clock` (tests), `set_node_facts`,
//! `setup(pod, objects)` → [`PodVolumes`] (idempotent: call it on every sync),
//! `refresh(pod, objects)` → names of the volumes whose content changed
//! (configMap/secret/downwardAPI/projected already set up, tokens rotated at 80 % of their
//! lifetime; `pods::volume_refresh` calls it), `teardown(pod_uid)` (unmounts everything below
//! the pod's dir, then removes it). Setup, refresh and teardown of one pod never overlap (a
//! per-pod lock): two atomic writers on one volume would race on `..data_tmp`.
//! [`VolumeError`] displays as kubelet's `FailedMount` event message.
//! Filesystem work runs on the blocking pool.
//!
//! fsGroup: emptyDir (when created) and the projected kinds get the pod's
//! `securityContext.fsGroup` as kubelet's `SetVolumeOwnership` applies it.

mod atomic_writer;
mod host_path;
mod mounts;
mod ownership;
mod payload;
mod tokens;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, HostPathVolumeSource, Pod, Volume};

use crate::env::quantity::Quantity;
use crate::env::NodeFacts;
use crate::objects::ObjectSource;
pub use atomic_writer::{write_payload, FileProjection, WriteError};
use payload::{Payload, PayloadContext, DEFAULT_MODE};
pub use tokens::Clock;
use tokens::TokenCache;

const EMPTY_DIR: &str = "kubernetes.io~empty-dir";
const CONFIG_MAP: &str = "kubernetes.io~configmap";
const SECRET: &str = "kubernetes.io~secret";
const DOWNWARD_API: &str = "kubernetes.io~downward-api";
const PROJECTED: &str = "kubernetes.io~projected";

/// A pod's volumes by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodVolumes {
    /// Volume name → where it is on the host.
    pub volumes: BTreeMap<String, PodVolume>,
}

/// One volume, ready for bind mounts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodVolume {
    /// The host path to bind-mount (a directory, or a file/socket/device for hostPath).
    pub host_path: PathBuf,
    /// Mount it read-only whatever the volumeMount says (configMap, secret, downwardAPI,
    /// projected, a read-only claim).
    pub read_only: bool,
}

/// Why a pod's volumes could not be set up or torn down.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// Setting up one volume failed: kubelet's `FailedMount` event message.
    #[error("MountVolume.SetUp failed for volume \"{volume}\" : {message}")]
    SetUp { volume: String, message: String },
    /// The pod has no uid, or a uid that is not a plain name.
    #[error("pod has an invalid uid {0:?}")]
    InvalidPodUid(String),
    /// Tearing down failed; the pod directory is left in place.
    #[error("tearing down volumes of pod {pod_uid}: {message}")]
    TearDown { pod_uid: String, message: String },
}

/// Sets up, refreshes and tears down pod volumes below one root directory.
#[derive(Clone)]
pub struct VolumeManager {
    root: PathBuf,
    node: Arc<Mutex<NodeFacts>>,
    tokens: Arc<TokenCache>,
    /// One lock per pod uid, held by setup, refresh and teardown.
    busy: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

/// Which volumes a pass handles.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Every volume (`setup`).
    All,
    /// Only the ones with projected content (`refresh`).
    Content,
}

impl VolumeManager {
    /// A manager for pods under `root` (`<agent data dir>/pods`).
    pub fn new(root: PathBuf) -> Self {
        Self { root, node: Arc::default(), tokens: Arc::default(), busy: Arc::default() }
    }

    /// The same manager measuring token ages with `clock` (tests of rotation without waiting).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.tokens = Arc::new(TokenCache::with_clock(clock));
        self
    }

    /// The lock serialising work on one pod's volumes.
    fn pod_lock(&self, pod_uid: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        busy.entry(pod_uid.to_owned()).or_default().clone()
    }

    /// The node's facts, for `resourceFieldRef` defaults in downwardAPI volumes.
    pub fn set_node_facts(&self, facts: NodeFacts) {
        *self.node.lock().unwrap_or_else(|e| e.into_inner()) = facts;
    }

    /// `<root>/<pod uid>`.
    pub fn pod_dir(&self, pod_uid: &str) -> Result<PathBuf, VolumeError> {
        if !is_plain_name(pod_uid) {
            return Err(VolumeError::InvalidPodUid(pod_uid.to_owned()));
        }
        Ok(self.root.join(pod_uid))
    }

    /// The uids of pods that have a directory here (to clean up after pods that are gone).
    pub fn pods_on_disk(&self) -> io::Result<Vec<String>> {
        match fs::read_dir(&self.root) {
            Ok(entries) => Ok(entries
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Makes every volume of `pod` ready; safe to call again (existing emptyDirs keep their
    /// content, unchanged projected volumes are not rewritten).
    pub async fn setup(
        &self,
        pod: &Pod,
        objects: &dyn ObjectSource,
    ) -> Result<PodVolumes, VolumeError> {
        let mut out = PodVolumes::default();
        let lock = self.pod_lock(pod.metadata.uid.as_deref().unwrap_or_default());
        let _busy = lock.lock().await;
        self.pass(pod, objects, Pass::All, &mut out, &mut Vec::new()).await?;
        Ok(out)
    }

    /// Rewrites the configMap, secret, downwardAPI and projected volumes whose content changed
    /// (and rotates due tokens); returns the names of the volumes rewritten.
    pub async fn refresh(
        &self,
        pod: &Pod,
        objects: &dyn ObjectSource,
    ) -> Result<Vec<String>, VolumeError> {
        let mut changed = Vec::new();
        let lock = self.pod_lock(pod.metadata.uid.as_deref().unwrap_or_default());
        let _busy = lock.lock().await;
        self.pass(pod, objects, Pass::Content, &mut PodVolumes::default(), &mut changed).await?;
        Ok(changed)
    }

    /// Unmounts everything below the pod's directory (tmpfs emptyDirs, anything else mounted
    /// there), then removes it. A failed unmount keeps the directory: removing it could reach
    /// through the mount. Waits for a setup or refresh of the pod in progress (it may be called
    /// from async code, so it polls the lock rather than blocking on it).
    pub fn teardown(&self, pod_uid: &str) -> Result<(), VolumeError> {
        let dir = self.pod_dir(pod_uid)?;
        let lock = self.pod_lock(pod_uid);
        let _busy = loop {
            match lock.try_lock() {
                Ok(guard) => break guard,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        };
        let fail = |message: String| VolumeError::TearDown { pod_uid: pod_uid.to_owned(), message };
        let mounted =
            mounts::mounts_under(&dir).map_err(|e| fail(format!("reading mounts: {e}")))?;
        for mount_point in mounted {
            mounts::unmount_path(&mount_point)
                .map_err(|e| fail(format!("unmount {}: {e}", mount_point.display())))?;
        }
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(fail(format!("remove {}: {e}", dir.display()))),
        }
        self.tokens.forget_pod(pod_uid);
        // Still holding the lock: a refresh waiting for it finds the directories gone.
        self.busy.lock().unwrap_or_else(|e| e.into_inner()).remove(pod_uid);
        Ok(())
    }

    async fn pass(
        &self,
        pod: &Pod,
        objects: &dyn ObjectSource,
        pass: Pass,
        out: &mut PodVolumes,
        changed: &mut Vec<String>,
    ) -> Result<(), VolumeError> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let pod_dir = self.pod_dir(&uid)?;
        let node = self.node.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let spec = pod.spec.as_ref();
        let fs_group = spec
            .and_then(|s| s.security_context.as_ref())
            .and_then(|c| c.fs_group)
            .and_then(|g| u32::try_from(g).ok());
        let ctx = PayloadContext {
            pod,
            namespace: pod.metadata.namespace.as_deref().unwrap_or("default"),
            node: &node,
            objects,
            fs_group,
        };
        for volume in spec.and_then(|s| s.volumes.as_deref()).unwrap_or(&[]) {
            let name = volume.name.clone();
            let fail = |message: String| VolumeError::SetUp { volume: name.clone(), message };
            if !is_plain_name(&name) {
                return Err(fail("invalid volume name".to_owned()));
            }
            let dir = |plugin: &str| pod_dir.join("volumes").join(plugin).join(&name);
            let content = match content_plugin(volume) {
                // A refresh only updates what a setup wrote: a pod not set up yet, or torn down
                // meanwhile, gets no directories from it.
                Some(plugin) if pass == Pass::Content && !dir(plugin).join("..data").exists() => {
                    continue
                }
                Some(plugin) => match self.content_payload(&ctx, volume).await {
                    Ok(payload) => Some((plugin, Some(payload))),
                    // Content written before (an earlier start of this pod) stays when its
                    // sources cannot be read now, e.g. the server is away: a container that
                    // restarts offline keeps its files, as the kubelet keeps a mounted volume.
                    Err(message) if dir(plugin).join("..data").exists() => {
                        tracing::warn!(volume = %name, %message, "keeping the volume's content");
                        Some((plugin, None))
                    }
                    Err(message) => return Err(fail(message)),
                },
                None => None,
            };
            let prepared = match (content, pass) {
                (Some((plugin, None)), _) => PodVolume { host_path: dir(plugin), read_only: true },
                (Some((plugin, Some(payload))), _) => {
                    let target = dir(plugin);
                    let (host_path, wrote) = blocking(move || {
                        write_payload(&target, &payload, fs_group)
                            .map(|wrote| (target, wrote))
                            .map_err(|e| e.to_string())
                    })
                    .await
                    .map_err(fail)?;
                    if wrote {
                        changed.push(name.clone());
                    }
                    PodVolume { host_path, read_only: true }
                }
                (None, Pass::Content) => continue,
                (None, Pass::All) => {
                    self.local_volume(pod, volume, dir(EMPTY_DIR), &ctx).await.map_err(fail)?
                }
            };
            out.volumes.insert(name, prepared);
        }
        Ok(())
    }

    /// The files of a configMap/secret/downwardAPI/projected volume.
    async fn content_payload(
        &self,
        ctx: &PayloadContext<'_>,
        volume: &Volume,
    ) -> Result<Payload, String> {
        let mode = |m: Option<i32>| m.map(|m| m as u32 & 0o7777).unwrap_or(DEFAULT_MODE);
        if let Some(cm) = &volume.config_map {
            let optional = cm.optional.unwrap_or(false);
            payload::config_map_payload(
                ctx,
                &cm.name,
                cm.items.as_deref(),
                mode(cm.default_mode),
                optional,
            )
            .await
        } else if let Some(secret) = &volume.secret {
            let name = secret.secret_name.as_deref().unwrap_or("");
            let optional = secret.optional.unwrap_or(false);
            payload::secret_payload(
                ctx,
                name,
                secret.items.as_deref(),
                mode(secret.default_mode),
                optional,
            )
            .await
        } else if let Some(downward) = &volume.downward_api {
            payload::downward_payload(
                ctx,
                downward.items.as_deref().unwrap_or(&[]),
                mode(downward.default_mode),
            )
        } else if let Some(projected) = &volume.projected {
            payload::projected_payload(ctx, &volume.name, projected, &self.tokens).await
        } else {
            Ok(Payload::new())
        }
    }

    /// emptyDir, hostPath and persistentVolumeClaim volumes.
    async fn local_volume(
        &self,
        pod: &Pod,
        volume: &Volume,
        empty_dir_path: PathBuf,
        ctx: &PayloadContext<'_>,
    ) -> Result<PodVolume, String> {
        if let Some(empty_dir) = &volume.empty_dir {
            let size = tmpfs_size(empty_dir, pod, ctx.node)?;
            let memory = match empty_dir.medium.as_deref().unwrap_or("") {
                "" => false,
                "Memory" => true,
                other => return Err(format!("emptyDir medium {other:?} is not supported")),
            };
            let fs_group = ctx.fs_group;
            let path = empty_dir_path.clone();
            blocking(move || set_up_empty_dir(&path, memory, size, fs_group)).await?;
            return Ok(PodVolume { host_path: empty_dir_path, read_only: false });
        }
        if let Some(host_path) = &volume.host_path {
            return check_host_path(host_path.clone()).await;
        }
        if let Some(claim) = &volume.persistent_volume_claim {
            let source = ctx
                .objects
                .persistent_volume(pod, &claim.claim_name)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| {
                    format!(
                        "persistentvolumeclaim \"{}\" has no bound local volume on this node",
                        claim.claim_name
                    )
                })?;
            let mut resolved = check_host_path(source).await?;
            resolved.read_only = claim.read_only.unwrap_or(false);
            return Ok(resolved);
        }
        Err("unsupported volume type: only emptyDir, hostPath, configMap, secret, downwardAPI, \
             projected and persistentVolumeClaim volumes are supported"
            .to_owned())
    }
}

/// The tmpfs size for an emptyDir (kubelet's `calculateEmptyDirMemorySize`): node allocatable
/// memory, lowered to the pod's memory limit and to `sizeLimit` when those are smaller.
fn tmpfs_size(
    empty_dir: &EmptyDirVolumeSource,
    pod: &Pod,
    node: &NodeFacts,
) -> Result<Option<i64>, String> {
    let mut size = (node.allocatable_memory > 0).then_some(node.allocatable_memory);
    let mut lower = |candidate: i64| {
        if candidate > 0 && size.is_none_or(|s| candidate <= s) {
            size = Some(candidate);
        }
    };
    if let Some(limit) = pod_memory_limit(pod) {
        lower(limit);
    }
    if let Some(limit) = &empty_dir.size_limit {
        lower(
            Quantity::parse(&limit.0).map_err(|e| format!("sizeLimit {:?}: {e}", limit.0))?.value(),
        );
    }
    Ok(size)
}

/// The pod's memory limit when every container has one: the sum over app containers, at least
/// the largest init container's (as the pod cgroup is sized).
fn pod_memory_limit(pod: &Pod) -> Option<i64> {
    let spec = pod.spec.as_ref()?;
    let limit = |c: &k8s_openapi::api::core::v1::Container| -> Option<i64> {
        let q = c.resources.as_ref()?.limits.as_ref()?.get("memory")?;
        Quantity::parse(&q.0).ok().map(|q| q.value())
    };
    let mut sum = 0i64;
    for c in &spec.containers {
        sum = sum.saturating_add(limit(c)?);
    }
    let mut init_max = 0i64;
    for c in spec.init_containers.iter().flatten() {
        init_max = init_max.max(limit(c)?);
    }
    Some(sum.max(init_max))
}

fn set_up_empty_dir(
    path: &Path,
    memory: bool,
    size: Option<i64>,
    fs_group: Option<u32>,
) -> Result<(), String> {
    let created = !path.exists();
    if created {
        fs::create_dir_all(path).map_err(|e| format!("mkdir {}: {e}", path.display()))?;
        // 0777 regardless of the umask, as kubelet's emptyDir.
        fs::set_permissions(path, fs::Permissions::from_mode(0o777))
            .map_err(|e| format!("chmod {}: {e}", path.display()))?;
    }
    if memory && !mounts::is_mount_point(path).map_err(|e| format!("reading mounts: {e}"))? {
        mounts::mount_tmpfs(path, size)
            .map_err(|e| format!("mount tmpfs on {}: {e}", path.display()))?;
    }
    if let (true, Some(gid)) = (created, fs_group) {
        ownership::apply_fs_group(path, gid, false)
            .map_err(|e| format!("chown {}: {e}", path.display()))?;
    }
    Ok(())
}

async fn check_host_path(source: HostPathVolumeSource) -> Result<PodVolume, String> {
    blocking(move || {
        let path = PathBuf::from(&source.path);
        host_path::check_type(&path, source.type_.as_deref().unwrap_or(""))?;
        Ok(PodVolume { host_path: path, read_only: false })
    })
    .await
}

/// The plugin directory of a volume with projected content, `None` for the others.
fn content_plugin(volume: &Volume) -> Option<&'static str> {
    if volume.config_map.is_some() {
        Some(CONFIG_MAP)
    } else if volume.secret.is_some() {
        Some(SECRET)
    } else if volume.downward_api.is_some() {
        Some(DOWNWARD_API)
    } else if volume.projected.is_some() {
        Some(PROJECTED)
    } else {
        None
    }
}

/// A single, ordinary path component (pod uids and volume names become directory names).
fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work).await.map_err(|e| format!("volume task failed: {e}"))?
}

#[cfg(test)]
mod tests;
