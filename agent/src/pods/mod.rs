//! Pod sync: the pods bound to this node, each driven by its own [`worker::PodWorker`].
//!
//! [`PodManager::run`] watches pods with `spec.nodeName=<node>` and hands each worker the
//! latest version of its pod; a pod the server no longer lists (after a re-list, or a delete
//! event) is stopped and forgotten. Every version is written to the local cache first, and the
//! manager starts from the cache before the server answers, so a node restarted while the
//! server is away brings its pods back; on reconnect the server's list decides, and healthy
//! pods the server still has are left alone (workers only act on differences).
//!
//! Static pods ([`static_pods`]) come from manifest files instead: the same workers run them,
//! the server's list never stops them (only removing the file does), and mirror pods — which
//! the watch also returns, being bound to this node — are never run, only reconciled by
//! [`static_pods::mirror::MirrorSync`].
//!
//! [`PodContext`] is what workers share: runtime, image store, cache, status writer, events and
//! the mapping of Kubernetes containers onto runtime specs.

pub mod backoff;
pub mod lookup;
pub mod naming;
pub mod probing;
pub mod spec;
pub mod static_pods;
pub mod status;
pub mod status_writer;
pub mod volume_refresh;
pub mod worker;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::Api;
use kube::runtime::watcher;
use skerry_dns::{ClusterDnsSettings, ResolvConf};
use skerry_runtime::{ContainerSpec, ContainerStatus, LogRotation, Mount, Runtime, SandboxSpec};
use tokio::sync::watch;

use crate::cache::LocalCache;
use crate::events::EventRecorder;
use crate::objects::ObjectSource;
use status_writer::StatusWriter;
use worker::{blocking, Desired, PodWorker};

/// Everything the pod workers share.
pub struct PodContext {
    /// The container runtime.
    pub runtime: Arc<Runtime>,
    /// The image store.
    pub images: skerry_images::ImageStore,
    /// Registry mirrors and auth (`registries.yaml`), if configured.
    pub registry_config: Option<Arc<skerry_images::RegistryConfig>>,
    /// The API client.
    pub client: kube::Client,
    /// The local cache.
    pub cache: LocalCache,
    /// Status writer.
    pub status: StatusWriter,
    /// Event recorder.
    pub events: EventRecorder,
    /// ConfigMaps, Secrets and tokens for env, volumes and pull secrets.
    pub objects: Arc<dyn ObjectSource>,
    /// The pods' volumes under `<data dir>/pods/<uid>`.
    pub volumes: crate::volumes::VolumeManager,
    /// The node's address (hostIP).
    pub node_ip: Ipv4Addr,
    /// The node's name.
    pub node_name: String,
    /// Where pod files (root filesystems, logs) go.
    pub data_dir: PathBuf,
    /// The cluster DNS settings for pods' resolv.conf.
    pub dns: ClusterDnsSettings,
    /// The node's resolv.conf (for `dnsPolicy: Default` and search domains).
    pub host_resolv: ResolvConf,
    /// Probe results: (pod uid, container) → (ready, liveness failed).
    pub probes: Mutex<HashMap<(String, String), ProbeResults>>,
    /// Pods the eviction manager chose; their workers kill them and report them Evicted.
    pub evictions: crate::eviction::Evictions,
    /// The node's pressure conditions now, which new pods are admitted against.
    pub pressure: watch::Receiver<crate::node::facts::Pressure>,
}

/// The latest probe verdicts of one container.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProbeResults {
    /// The readiness probe succeeded last.
    pub ready: bool,
    /// The liveness probe failed past its threshold.
    pub liveness_failed: bool,
}

impl PodContext {
    /// Readiness of a running container: its readiness probe's verdict, or true without one.
    pub fn readiness(&self, uid: &str, name: &str, c: &Container) -> bool {
        if c.readiness_probe.is_none() {
            return true;
        }
        self.probes
            .lock()
            .map(|p| p.get(&(uid.to_string(), name.to_string())).is_some_and(|r| r.ready))
            .unwrap_or(false)
    }

    /// Whether the liveness probe asks for a restart.
    pub fn liveness_failed(&self, uid: &str, name: &str, c: &Container) -> bool {
        if c.liveness_probe.is_none() && c.startup_probe.is_none() {
            return false;
        }
        self.probes
            .lock()
            .map(|p| p.get(&(uid.to_string(), name.to_string())).is_some_and(|r| r.liveness_failed))
            .unwrap_or(false)
    }

    /// Forgets probe results of a container (a new instance starts over).
    pub fn forget_probes(&self, uid: &str, name: &str) {
        if let Ok(mut p) = self.probes.lock() {
            p.remove(&(uid.to_string(), name.to_string()));
        }
    }

    /// The termination message a finished container left.
    pub fn termination_message(&self, runtime_id: &str) -> Option<String> {
        self.runtime.termination_message(runtime_id).ok().flatten().filter(|m| !m.is_empty())
    }

    /// The sandbox for a pod (resolv.conf from its dnsPolicy).
    pub fn sandbox_spec(&self, pod: &Pod) -> SandboxSpec {
        let resolv = skerry_dns::pod_resolv_conf(pod, &self.dns, &self.host_resolv).render();
        spec::sandbox_spec(pod, Some(resolv))
    }

    /// The image if it is in the store.
    pub async fn image(&self, reference: &str) -> Option<skerry_images::Image> {
        let store = self.images.clone();
        let reference = reference.to_string();
        blocking(move || store.get(&reference).ok()).await.ok().flatten()
    }

    /// Pulls an image with the pod's pull secrets.
    pub async fn pull(&self, pod: &Pod, reference: &str) -> Result<skerry_images::Image, String> {
        let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let mut credentials = None;
        for secret in pod.spec.iter().flat_map(|s| s.image_pull_secrets.iter().flatten()) {
            let name = &secret.name;
            match self.objects.secret(&ns, name).await {
                Ok(Some(s)) => {
                    let data = s.data.unwrap_or_default();
                    let Some(json) =
                        data.get(".dockerconfigjson").or_else(|| data.get(".dockercfg"))
                    else {
                        continue;
                    };
                    match skerry_images::DockerConfig::parse(&json.0) {
                        Ok(config) => {
                            credentials = Some(config);
                            break;
                        }
                        Err(err) => tracing::warn!(%err, secret = %name, "bad pull secret"),
                    }
                }
                Ok(None) => tracing::warn!(secret = %name, "pull secret not found"),
                Err(err) => tracing::warn!(%err, secret = %name, "pull secret unavailable"),
            }
        }
        let options = skerry_images::PullOptions {
            credentials,
            registry_config: self.registry_config.clone(),
            ..Default::default()
        };
        self.images.pull(reference, options).await.map_err(|e| e.to_string())
    }

    /// The runtime spec of instance `name` of container `c`: root filesystem mounted from the
    /// image, environment and command, mounts, resources, security context, CRI log path.
    pub async fn container_spec(
        &self,
        pod: &Pod,
        c: &Container,
        name: &str,
        image: &skerry_images::Image,
        attempt: u32,
    ) -> Result<ContainerSpec, String> {
        let (env, command, args) = self.environment(pod, c).await?;
        let target = self.data_dir.join("rootfs").join(name);
        let rootfs = self
            .images
            .prepare_rootfs(&image.name, name, &target)
            .await
            .map_err(|e| format!("preparing the root filesystem: {e}"))?;
        let cfg = rootfs.config;
        let some = |s: String| (!s.is_empty()).then_some(s);
        let m = &pod.metadata;
        let log_path = self
            .data_dir
            .join("pods")
            .join(format!(
                "{}_{}_{}",
                m.namespace.as_deref().unwrap_or("default"),
                m.name.as_deref().unwrap_or_default(),
                m.uid.as_deref().unwrap_or_default()
            ))
            .join(&c.name)
            .join(format!("{attempt}.log"));
        if let Some(dir) = log_path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
        Ok(ContainerSpec {
            name: name.to_string(),
            rootfs: rootfs.path,
            image: skerry_runtime::ImageConfig {
                entrypoint: cfg.entrypoint,
                cmd: cfg.cmd,
                env: cfg.env,
                working_dir: some(cfg.working_dir),
                user: some(cfg.user),
                stop_signal: some(cfg.stop_signal),
            },
            command,
            args,
            env,
            working_dir: c.working_dir.clone().filter(|w| !w.is_empty()),
            mounts: self.volume_mounts(pod, c).await?,
            resources: spec::container_resources(c),
            security: spec::security_context(pod, c),
            stdin: c.stdin.unwrap_or(false),
            tty: c.tty.unwrap_or(false),
            termination_message_path: Some(
                c.termination_message_path.clone().unwrap_or_else(|| "/dev/termination-log".into()),
            ),
            log_rotation: LogRotation::default(),
            log_path: Some(log_path),
        })
    }

    /// The container's `volumeMounts` as bind mounts of the pod's volumes, which are set up
    /// first (idempotent: emptyDirs keep their content, unchanged projected files stay).
    async fn volume_mounts(&self, pod: &Pod, c: &Container) -> Result<Vec<Mount>, String> {
        let wanted = c.volume_mounts.as_deref().unwrap_or(&[]);
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let volumes =
            self.volumes.setup(pod, self.objects.as_ref()).await.map_err(|e| e.to_string())?;
        let mut mounts = Vec::with_capacity(wanted.len());
        for m in wanted {
            let volume = volumes.volumes.get(&m.name).ok_or_else(|| {
                format!("volumeMount {:?}: the pod has no volume of that name", m.name)
            })?;
            let mut source = volume.host_path.clone();
            if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                let sub_path = std::path::Path::new(sub);
                let escapes = sub_path.is_absolute()
                    || sub_path.components().any(|p| !matches!(p, std::path::Component::Normal(_)));
                if escapes {
                    return Err(format!(
                        "subPath {sub:?} must be a relative path inside the volume"
                    ));
                }
                source = source.join(sub_path);
                if !source.exists() && !volume.read_only {
                    // The kubelet creates a missing subPath directory.
                    std::fs::create_dir_all(&source)
                        .map_err(|e| format!("creating subPath {}: {e}", source.display()))?;
                }
            }
            mounts.push(Mount {
                source,
                destination: m.mount_path.clone(),
                read_only: m.read_only.unwrap_or(false) || volume.read_only,
            });
        }
        Ok(mounts)
    }

    /// Environment, command and args of a container.
    #[allow(clippy::type_complexity)]
    async fn environment(
        &self,
        pod: &Pod,
        c: &Container,
    ) -> Result<(Vec<(String, String)>, Option<Vec<String>>, Option<Vec<String>>), String> {
        let mut env = Vec::new();
        for var in c.env.iter().flatten() {
            if var.value_from.is_some() {
                return Err(format!(
                    "env {}: valueFrom is not supported by this agent yet",
                    var.name
                ));
            }
            env.push((var.name.clone(), var.value.clone().unwrap_or_default()));
        }
        if c.env_from.as_ref().is_some_and(|e| !e.is_empty()) {
            return Err("envFrom is not supported by this agent yet".into());
        }
        let _ = pod;
        Ok((env, c.command.clone(), c.args.clone()))
    }

    /// Removes one container instance and its root filesystem.
    pub async fn remove_instance(&self, inst: &ContainerStatus) {
        let runtime = self.runtime.clone();
        let id = inst.id.clone();
        match blocking(move || runtime.remove_container(&id, true)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(%err, container = %inst.name, "removing a container"),
            Err(err) => tracing::warn!(%err, "removing a container"),
        }
        self.release_rootfs(&inst.name).await;
    }

    /// Unmounts and deletes a container's root filesystem.
    pub async fn release_rootfs(&self, name: &str) {
        if let Err(err) = self.images.release_rootfs(name).await {
            tracing::debug!(%err, container = %name, "releasing a root filesystem");
        }
        let _ = std::fs::remove_dir(self.data_dir.join("rootfs").join(name));
    }

    /// Tears down a removed pod's volumes and deletes its log directory.
    pub async fn forget_pod_files(&self, uid: &str) {
        let dir = self.data_dir.join("pods");
        let uid = uid.to_string();
        let volumes = self.volumes.clone();
        let _ = blocking(move || {
            if let Err(err) = volumes.teardown(&uid) {
                tracing::warn!(%err, "pod volumes left in place");
            }
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if e.file_name().to_string_lossy().ends_with(&format!("_{uid}")) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        })
        .await;
    }

    /// Runs the container's preStop exec hook, bounded by the grace period.
    pub async fn pre_stop(&self, c: &Container, inst: &ContainerStatus, grace: Duration) {
        let Some(exec) = c
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
            .and_then(|h| h.exec.as_ref())
            .and_then(|e| e.command.clone())
        else {
            return;
        };
        if inst.state != skerry_runtime::ContainerState::Running || grace.is_zero() {
            return;
        }
        let runtime = self.runtime.clone();
        let id = inst.id.clone();
        let run = blocking(move || -> Result<i32, String> {
            let spec = skerry_runtime::ExecSpec { args: exec, ..Default::default() };
            let process = runtime.exec(&id, spec).map_err(|e| e.to_string())?;
            process.wait().map_err(|e| e.to_string())
        });
        match tokio::time::timeout(grace, run).await {
            Ok(Ok(Ok(0))) => {}
            Ok(Ok(Ok(code))) => tracing::info!(container = %c.name, code, "preStop hook failed"),
            Ok(Ok(Err(err))) | Ok(Err(err)) => {
                tracing::info!(container = %c.name, %err, "preStop hook")
            }
            Err(_) => tracing::info!(container = %c.name, "preStop hook outlived the grace period"),
        }
    }
}

/// The workers, by pod UID.
struct Workers {
    ctx: Arc<PodContext>,
    by_uid: HashMap<String, watch::Sender<Desired>>,
    /// The UIDs of the static pods among them.
    statics: HashSet<String>,
    /// Keeps the running pods' configMap/secret/downwardAPI/projected volumes current.
    refresh: volume_refresh::RefreshHandle,
}

impl Workers {
    /// Hands a pod version to its worker (starting one for a new pod).
    fn update(&mut self, pod: Pod) {
        let Some(uid) = pod.metadata.uid.clone() else { return };
        self.refresh.pod_changed(&pod);
        if let Some(tx) = self.by_uid.get(&uid) {
            if !tx.is_closed() {
                let _ = tx.send(Desired::Pod(Box::new(pod)));
                return;
            }
        }
        let (tx, rx) = watch::channel(Desired::Pod(Box::new(pod.clone())));
        tokio::spawn(PodWorker::new(self.ctx.clone(), pod).run(rx));
        self.by_uid.insert(uid, tx);
    }

    /// Tells a worker its pod is gone.
    fn gone(&mut self, uid: &str) {
        if let Some(tx) = self.by_uid.remove(uid) {
            let _ = tx.send(Desired::Gone);
        }
    }

    /// The UIDs of the API pods (static pods do not depend on the server's list).
    fn api_uids(&self) -> Vec<String> {
        self.by_uid.keys().filter(|u| !self.statics.contains(*u)).cloned().collect()
    }

    /// Makes the static pods exactly `pods`: new ones start, removed or replaced ones (a
    /// changed manifest is a new UID) stop.
    fn set_statics(&mut self, pods: &[Pod]) {
        let now: HashSet<String> = pods.iter().filter_map(|p| p.metadata.uid.clone()).collect();
        for uid in self.statics.difference(&now).cloned().collect::<Vec<_>>() {
            tracing::info!(%uid, "static pod removed or changed: stopping it");
            self.gone(&uid);
        }
        for pod in pods {
            let Some(uid) = &pod.metadata.uid else { continue };
            if !self.statics.contains(uid) {
                tracing::info!(pod = ?pod.metadata.name, %uid, "starting a static pod");
                self.update(pod.clone());
            }
        }
        self.statics = now;
    }
}

/// Watches this node's pods and keeps a worker per pod.
pub struct PodManager {
    ctx: Arc<PodContext>,
}

impl PodManager {
    /// A manager over `ctx`.
    pub fn new(ctx: Arc<PodContext>) -> Self {
        PodManager { ctx }
    }

    /// Runs until `shutdown` flips. Containers keep running after it returns.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let refresh = volume_refresh::VolumeRefresher::new(
            self.ctx.cache.clone(),
            self.ctx.volumes.clone(),
            self.ctx.objects.clone(),
        )
        .spawn(shutdown.clone());
        let mut workers = Workers {
            ctx: self.ctx.clone(),
            by_uid: HashMap::new(),
            statics: HashSet::new(),
            refresh,
        };
        // Static pods are read before the cache: the files, not the cache, say which run.
        let dir = static_pods::manifest_dir(&self.ctx.data_dir);
        let mut statics =
            static_pods::watch_dir(dir, self.ctx.node_name.clone(), shutdown.clone()).await;
        let initial = statics.borrow_and_update().clone();
        // The cache first: pods come back even if the server never answers.
        match self.ctx.cache.run(|c| c.pods()).await {
            Ok(pods) => {
                tracing::info!(pods = pods.len(), "pods from the local cache");
                for pod in pods {
                    let uid = pod.metadata.uid.clone().unwrap_or_default();
                    if static_pods::static_hash(&pod).is_some() {
                        // A static pod whose file went away while the agent was down: its
                        // worker cleans up its containers and its cache entry.
                        if !initial.iter().any(|p| p.metadata.uid.as_ref() == Some(&uid)) {
                            workers.update(pod);
                            workers.gone(&uid);
                        }
                        continue;
                    }
                    workers.update(pod);
                }
            }
            Err(err) => tracing::warn!(%err, "reading pods from the local cache"),
        }
        self.set_statics(&mut workers, &initial).await;
        // Mirror pods as the watch sees them, for the mirror sync (`None` until listed).
        let (observed_tx, observed_rx) = watch::channel::<static_pods::mirror::Observed>(None);
        let mut relisted_mirrors: Option<BTreeMap<_, Pod>> = None;
        tokio::spawn(
            static_pods::mirror::MirrorSync::new(
                self.ctx.client.clone(),
                self.ctx.node_name.clone(),
                self.ctx.status.clone(),
            )
            .run(statics.clone(), observed_rx, shutdown.clone()),
        );
        let mut statics_open = true;
        // Pods the runtime holds but neither the cache nor the server know get cleaned up
        // once the server's list has been seen.
        let api: Api<Pod> = Api::all(self.ctx.client.clone());
        let config = watcher::Config::default()
            .fields(&format!("spec.nodeName={}", self.ctx.node_name))
            .timeout(290);
        let mut stream = watcher::watcher(api, config).boxed();
        let mut listing: Option<Vec<String>> = None;
        let mut failures = 0u32;
        loop {
            let event = tokio::select! {
                e = stream.next() => e,
                changed = statics.changed(), if statics_open => {
                    match changed {
                        Ok(()) => {
                            let pods = statics.borrow_and_update().clone();
                            self.set_statics(&mut workers, &pods).await;
                        }
                        Err(_) => statics_open = false,
                    }
                    continue;
                }
                _ = shutdown.changed() => return,
            };
            let Some(event) = event else { return };
            // Mirror pods are bound to this node too, but they only show static pods: they
            // go to the mirror sync, never to a worker.
            match &event {
                Ok(watcher::Event::Init) => relisted_mirrors = Some(BTreeMap::new()),
                Ok(watcher::Event::InitApply(pod)) if static_pods::mirror_hash(pod).is_some() => {
                    let key = static_pods::mirror::key_of(pod);
                    relisted_mirrors.get_or_insert_with(BTreeMap::new).insert(key, pod.clone());
                    continue;
                }
                Ok(watcher::Event::InitDone) => {
                    let listed = relisted_mirrors.take().unwrap_or_default();
                    observed_tx.send_replace(Some(listed));
                }
                Ok(watcher::Event::Apply(pod)) if static_pods::mirror_hash(pod).is_some() => {
                    let key = static_pods::mirror::key_of(pod);
                    let pod = pod.clone();
                    observed_tx.send_modify(|o| {
                        o.get_or_insert_with(BTreeMap::new).insert(key, pod);
                    });
                    continue;
                }
                Ok(watcher::Event::Delete(pod)) if static_pods::mirror_hash(pod).is_some() => {
                    let key = static_pods::mirror::key_of(pod);
                    let uid = pod.metadata.uid.clone();
                    observed_tx.send_if_modified(|o| {
                        let mirrors = o.get_or_insert_with(BTreeMap::new);
                        // Only if it is still that pod (not a newer mirror of the same name).
                        let same = mirrors.get(&key).is_some_and(|m| m.metadata.uid == uid);
                        same && mirrors.remove(&key).is_some()
                    });
                    continue;
                }
                _ => {}
            }
            match event {
                Ok(watcher::Event::Init) => listing = Some(Vec::new()),
                Ok(watcher::Event::InitApply(pod)) => {
                    failures = 0;
                    if let Some(uid) = &pod.metadata.uid {
                        listing.get_or_insert_with(Vec::new).push(uid.clone());
                    }
                    self.store(&pod).await;
                    workers.update(pod);
                }
                Ok(watcher::Event::InitDone) => {
                    failures = 0;
                    let mut listed = listing.take().unwrap_or_default();
                    for uid in workers.api_uids() {
                        if !listed.contains(&uid) {
                            tracing::info!(%uid, "pod no longer on the server: stopping it");
                            workers.gone(&uid);
                        }
                    }
                    // Static pods' containers are not orphans.
                    listed.extend(workers.statics.iter().cloned());
                    self.collect_orphans(&listed).await;
                }
                Ok(watcher::Event::Apply(pod)) => {
                    failures = 0;
                    self.store(&pod).await;
                    workers.update(pod);
                }
                Ok(watcher::Event::Delete(pod)) => {
                    if let Some(uid) = &pod.metadata.uid {
                        workers.gone(uid);
                    }
                }
                Err(err) => {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(30) {
                        tracing::warn!(%err, "watching pods (running from the local cache)");
                    }
                    // The watcher retries at once; pace it while the server is away.
                    let pause = Duration::from_millis(500 * u64::from(failures.min(10)));
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
        }
    }

    /// Caches the static pods (the streaming API finds pods by name in the cache) and makes
    /// them the workers' static pods.
    async fn set_statics(&self, workers: &mut Workers, pods: &[Pod]) {
        for pod in pods
            .iter()
            .filter(|p| p.metadata.uid.as_ref().is_some_and(|u| !workers.statics.contains(u)))
        {
            self.store(pod).await;
        }
        workers.set_statics(pods);
    }

    async fn store(&self, pod: &Pod) {
        let pod = pod.clone();
        if let Err(err) = self.ctx.cache.run(move |c| c.put_pod(&pod)).await {
            tracing::warn!(%err, "writing a pod to the local cache");
        }
    }

    /// Removes sandboxes and containers of pods the server does not list (e.g. deleted while
    /// the agent was down and the cache was lost).
    async fn collect_orphans(&self, listed: &[String]) {
        let runtime = self.ctx.runtime.clone();
        let listed: Vec<String> = listed.to_vec();
        let ctx = self.ctx.clone();
        let orphans = blocking(move || {
            let sandboxes: Vec<_> = runtime
                .list_sandboxes()
                .into_iter()
                .filter(|s| {
                    naming::parse_sandbox_name(&s.spec.name)
                        .is_some_and(|uid| !listed.contains(&uid.to_string()))
                })
                .collect();
            let containers: Vec<_> = runtime
                .list_containers()
                .into_iter()
                .filter(|c| {
                    naming::parse_container_name(&c.name)
                        .is_some_and(|(uid, _, _)| !listed.contains(&uid.to_string()))
                })
                .collect();
            (sandboxes, containers)
        })
        .await;
        let Ok((sandboxes, containers)) = orphans else { return };
        for c in containers {
            tracing::info!(container = %c.name, "removing a container of an unknown pod");
            ctx.remove_instance(&c).await;
        }
        for s in sandboxes {
            let runtime = ctx.runtime.clone();
            let _ = blocking(move || runtime.remove_sandbox(&s.id)).await;
        }
    }
}
