//! One pod's worker: a loop that compares the pod's spec with what the runtime holds and closes
//! the gap — sandbox and network, image pulls, init containers in order, sidecars, app
//! containers, restarts per policy with CrashLoopBackOff, activeDeadlineSeconds, graceful
//! termination with preStop — then reports the status. Level-triggered: every pass starts
//! from the runtime's state (which survives the agent), never from what the last pass did, so
//! a restarted agent carries on where the old one stopped without touching healthy containers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Preconditions};
use skerry_runtime::state::SandboxRecord;
use skerry_runtime::{ContainerState, ContainerStatus};
use tokio::sync::watch;

use super::backoff::Backoff;
use super::naming;
use super::probing::{self, ProbeLoop};
use super::status::{self, ContainerView, Exit, Observed, State};
use super::PodContext;

/// How often a pod is looked at without a change from the server (container exits are seen
/// this fast).
pub const RESYNC: Duration = Duration::from_secs(1);

/// What the manager tells a worker.
#[derive(Debug, Clone)]
pub enum Desired {
    /// The pod as last seen (server or cache).
    Pod(Box<Pod>),
    /// The server no longer has the pod: stop and forget it.
    Gone,
}

/// Time of a runtime timestamp.
fn time(s: Option<&str>) -> Option<Time> {
    s.and_then(|s| s.parse::<Timestamp>().ok()).map(Time)
}

fn ran_for(c: &ContainerStatus) -> Duration {
    match (time(c.started_at.as_deref()), time(c.finished_at.as_deref())) {
        (Some(a), Some(b)) => Duration::try_from(b.0.duration_since(a.0)).unwrap_or(Duration::ZERO),
        _ => Duration::ZERO,
    }
}

/// The exit of a finished instance.
fn exit_of(c: &ContainerStatus, message: Option<String>) -> Exit {
    let exit_code = c.exit_code.unwrap_or(if c.state == ContainerState::Unknown { 255 } else { 0 });
    let reason = c
        .reason
        .clone()
        .unwrap_or_else(|| if exit_code == 0 { "Completed" } else { "Error" }.to_string());
    Exit {
        exit_code,
        reason,
        message,
        started_at: time(c.started_at.as_deref()),
        finished_at: time(c.finished_at.as_deref()),
        container_id: naming::container_id(&c.id),
    }
}

/// The image reference with its digest (`status.containerStatuses[].imageID`).
fn image_id(image: &skerry_images::Image) -> String {
    let name = &image.name;
    let repo = match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => &name[..i],
        _ => name.as_str(),
    };
    format!("{}@{}", repo.split('@').next().unwrap_or(repo), image.digest)
}

/// One pod's worker state. Only in-memory bookkeeping lives here (back-off timers, pull
/// errors); everything about containers is read from the runtime on each pass.
pub struct PodWorker {
    ctx: Arc<PodContext>,
    pod: Pod,
    uid: String,
    backoff: Backoff,
    pull_backoff: Backoff,
    /// Why a container could not be created (reason, message), until it is.
    problems: HashMap<String, (String, String)>,
    image_ids: HashMap<String, String>,
    /// Attempts for which a BackOff event was already sent.
    backoff_events: HashMap<String, u32>,
    start_time: Option<Time>,
    started: Instant,
    sent: Option<PodStatus>,
    terminal: Option<(String, String, String)>,
    /// The grace period an eviction imposes on the pod's containers.
    grace_override: Option<i64>,
    /// Admission under node pressure passed (or the pod had started already).
    admitted: bool,
    delete_sent: bool,
    /// The probe task of each running container instance with probes.
    probe_loops: HashMap<String, ProbeLoop>,
}

impl PodWorker {
    /// A worker for `pod`.
    pub fn new(ctx: Arc<PodContext>, pod: Pod) -> Self {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let start_time = pod.status.as_ref().and_then(|s| s.start_time.clone());
        PodWorker {
            ctx,
            pod,
            uid,
            backoff: Backoff::default(),
            pull_backoff: Backoff::default(),
            problems: HashMap::new(),
            image_ids: HashMap::new(),
            backoff_events: HashMap::new(),
            start_time,
            started: Instant::now(),
            sent: None,
            terminal: None,
            grace_override: None,
            admitted: false,
            delete_sent: false,
            probe_loops: HashMap::new(),
        }
    }

    fn pod_label(&self) -> String {
        let m = &self.pod.metadata;
        format!(
            "{}/{}",
            m.namespace.as_deref().unwrap_or("default"),
            m.name.as_deref().unwrap_or_default()
        )
    }

    /// Runs until the pod is gone and cleaned up.
    pub async fn run(mut self, mut rx: watch::Receiver<Desired>) {
        loop {
            let desired = rx.borrow_and_update().clone();
            let gone = match desired {
                Desired::Pod(pod) => {
                    self.pod = *pod;
                    false
                }
                Desired::Gone => true,
            };
            match self.sync(gone).await {
                Ok(true) => return,
                Ok(false) => {}
                Err(err) => tracing::warn!(pod = %self.pod_label(), %err, "pod sync"),
            }
            tokio::select! {
                changed = rx.changed() => if changed.is_err() {
                    // The manager is gone (agent shutting down): containers stay as they are.
                    return;
                },
                _ = tokio::time::sleep(RESYNC) => {}
            }
        }
    }

    /// The pod's container instances, by container name, oldest attempt first.
    async fn instances(&self) -> Result<HashMap<String, Vec<(u32, ContainerStatus)>>, String> {
        let runtime = self.ctx.runtime.clone();
        let uid = self.uid.clone();
        // Only this pod's containers are read (names start with its UID, see `naming`).
        let prefix = format!("{uid}_");
        let all =
            blocking(move || runtime.list_containers_named(|n| n.starts_with(&prefix))).await?;
        let mut out: HashMap<String, Vec<(u32, ContainerStatus)>> = HashMap::new();
        for c in all {
            if let Some((pod, name, attempt)) = naming::parse_container_name(&c.name) {
                if pod == uid {
                    out.entry(name.to_string()).or_default().push((attempt, c));
                }
            }
        }
        for list in out.values_mut() {
            list.sort_by_key(|(a, _)| *a);
        }
        Ok(out)
    }

    async fn sandbox(&self) -> Result<Option<SandboxRecord>, String> {
        let runtime = self.ctx.runtime.clone();
        let name = naming::sandbox_name(&self.uid);
        blocking(move || runtime.find_sandbox(&name).ok()).await
    }

    /// One pass. Returns true when the pod is gone and nothing of it is left.
    async fn sync(&mut self, gone: bool) -> Result<bool, String> {
        let instances = self.instances().await?;
        let sandbox = self.sandbox().await?;
        let deleting = self.pod.metadata.deletion_timestamp.is_some();
        if gone || deleting {
            self.terminate(&instances, "Killing").await;
            self.remove_everything(instances, sandbox).await?;
            if gone {
                let uid = self.uid.clone();
                if let Err(err) = self.ctx.cache.run(move |c| c.remove_pod(&uid)).await {
                    tracing::warn!(%err, "forgetting a pod in the local cache");
                }
                return Ok(true);
            }
            self.finish_deletion().await;
            return Ok(false);
        }
        let phase = self.sent.as_ref().or(self.pod.status.as_ref()).and_then(|s| s.phase.clone());
        if matches!(phase.as_deref(), Some("Succeeded" | "Failed")) {
            // A finished pod keeps its exited containers (for logs) but runs nothing.
            self.terminate(&instances, "Killing").await;
            return Ok(false);
        }
        if !self.admitted {
            if self.refuse_under_pressure(&instances, sandbox.as_ref()) {
                return Ok(false);
            }
            self.admitted = true;
        }
        if self.start_time.is_none() {
            self.start_time = Some(Time(Timestamp::now()));
        }
        self.check_deadline(&instances).await;
        self.check_eviction(&instances).await;
        if self.terminal.is_some() {
            // Read again: the containers were just killed, and this is the last report.
            let instances = self.instances().await?;
            self.report(Observed {
                terminal: self.terminal.clone(),
                ..self.observe_only(&instances, sandbox.as_ref())
            });
            return Ok(false);
        }
        let sandbox = match sandbox {
            Some(s) if s.ready => s,
            _ => match self.create_sandbox().await {
                Ok(s) => s,
                Err(message) => {
                    self.ctx.events.warning(
                        &self.pod,
                        None,
                        "FailedCreatePodSandBox",
                        format!("Failed to create pod sandbox: {message}"),
                    );
                    let mut o = self.observe_only(&instances, None);
                    o.sandbox_ready = false;
                    self.report(o);
                    return Err(message);
                }
            },
        };
        let observed = self.drive(&instances, &sandbox).await;
        self.report(observed);
        Ok(false)
    }

    /// Probes instance `runtime_id` of `c` (a new task when the instance changed).
    fn ensure_probing(&mut self, c: &Container, runtime_id: &str, sandbox: &SandboxRecord) {
        if self.probe_loops.get(&c.name).is_some_and(|l| l.runtime_id == runtime_id) {
            return;
        }
        let pod_ip = self.base(Some(sandbox)).pod_ips.first().cloned().unwrap_or_default();
        match probing::spawn(self.ctx.clone(), &self.pod, c, runtime_id, &pod_ip) {
            Some(probes) => {
                self.probe_loops.insert(c.name.clone(), probes);
            }
            None => {
                self.probe_loops.remove(&c.name);
            }
        }
    }

    /// Base observation: sandbox, IPs and times.
    fn base(&self, sandbox: Option<&SandboxRecord>) -> Observed {
        let host_network = self.pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false);
        let host_ip = self.ctx.node_ip.to_string();
        let pod_ips = if host_network {
            vec![host_ip.clone()]
        } else {
            sandbox.and_then(|s| s.network.as_ref()).map(|n| n.ips.clone()).unwrap_or_default()
        };
        Observed {
            sandbox_ready: sandbox.is_some_and(|s| s.ready),
            pod_ips,
            host_ip,
            start_time: self.start_time.clone(),
            ..Default::default()
        }
    }

    /// Observation without acting (deadline exceeded, sandbox failing).
    fn observe_only(
        &self,
        instances: &HashMap<String, Vec<(u32, ContainerStatus)>>,
        sandbox: Option<&SandboxRecord>,
    ) -> Observed {
        let mut o = self.base(sandbox);
        let spec = self.pod.spec.clone().unwrap_or_default();
        for (list, containers) in
            [(&mut o.init, spec.init_containers.unwrap_or_default()), (&mut o.app, spec.containers)]
        {
            for c in containers {
                let view = match instances.get(&c.name).and_then(|l| l.last()) {
                    Some((attempt, inst)) => self.view_of(&c, *attempt, inst, instances),
                    None => self.waiting(&c, 0, "ContainerCreating", None),
                };
                list.push(view);
            }
        }
        o
    }

    fn waiting(
        &self,
        c: &Container,
        restarts: u32,
        reason: &str,
        message: Option<String>,
    ) -> ContainerView {
        ContainerView {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            image_id: self.image_ids.get(&c.name).cloned().unwrap_or_default(),
            restart_count: restarts as i32,
            state: State::Waiting { reason: reason.into(), message },
            last: None,
            ready: false,
            started: false,
            sidecar: is_sidecar(c),
        }
    }

    /// The view of the latest instance as it is (no restart decision).
    fn view_of(
        &self,
        c: &Container,
        attempt: u32,
        inst: &ContainerStatus,
        instances: &HashMap<String, Vec<(u32, ContainerStatus)>>,
    ) -> ContainerView {
        let previous = instances.get(&c.name).and_then(|l| {
            l.iter().rev().find(|(a, _)| *a < attempt).map(|(_, p)| exit_of(p, None))
        });
        let mut v = self.waiting(c, attempt, "ContainerCreating", None);
        v.last = previous;
        match inst.state {
            ContainerState::Running => {
                v.state = State::Running {
                    started_at: time(inst.started_at.as_deref()),
                    container_id: naming::container_id(&inst.id),
                };
                v.ready = self.ctx.readiness(&self.uid, &c.name, c);
                v.started = true;
            }
            ContainerState::Exited | ContainerState::Unknown => {
                let message = self.ctx.termination_message(&inst.id);
                v.state = State::Terminated(exit_of(inst, message));
            }
            ContainerState::Created => {}
        }
        v
    }

    /// Starts what should run, restarts what should restart, and returns the observation.
    async fn drive(
        &mut self,
        instances: &HashMap<String, Vec<(u32, ContainerStatus)>>,
        sandbox: &SandboxRecord,
    ) -> Observed {
        let mut o = self.base(Some(sandbox));
        let spec = self.pod.spec.clone().unwrap_or_default();
        let policy = spec.restart_policy.clone().unwrap_or_else(|| "Always".into());
        let mut initialized = true;
        for c in spec.init_containers.unwrap_or_default() {
            if !initialized {
                o.init.push(self.waiting(&c, 0, "PodInitializing", None));
                continue;
            }
            let sidecar = is_sidecar(&c);
            // A regular init container is retried unless the pod never restarts anything.
            let restart = if sidecar {
                "Always"
            } else if policy == "Never" {
                "Never"
            } else {
                "OnFailure"
            };
            let v = self.drive_container(&c, restart, instances, sandbox).await;
            let done = if sidecar {
                matches!(v.state, State::Running { .. })
            } else {
                matches!(&v.state, State::Terminated(e) if e.exit_code == 0)
            };
            initialized &= done;
            o.init.push(v);
        }
        for c in spec.containers {
            if !initialized {
                o.app.push(self.waiting(&c, 0, "PodInitializing", None));
                continue;
            }
            let v = self.drive_container(&c, &policy, instances, sandbox).await;
            o.app.push(v);
        }
        o
    }

    /// Brings one container to where its restart policy wants it.
    async fn drive_container(
        &mut self,
        c: &Container,
        restart_policy: &str,
        instances: &HashMap<String, Vec<(u32, ContainerStatus)>>,
        sandbox: &SandboxRecord,
    ) -> ContainerView {
        let latest = instances.get(&c.name).and_then(|l| l.last());
        let Some((attempt, inst)) = latest else {
            return self.start(c, 0, None, sandbox).await;
        };
        let (attempt, inst) = (*attempt, inst.clone());
        let mut v = self.view_of(c, attempt, &inst, instances);
        match inst.state {
            ContainerState::Running => {
                self.ensure_probing(c, &inst.id, sandbox);
                if self.ctx.liveness_failed(&self.uid, &c.name, c) {
                    self.probe_loops.remove(&c.name);
                    self.ctx.events.normal(
                        &self.pod,
                        Some(&c.name),
                        "Killing",
                        format!("Container {} failed liveness probe, will be restarted", c.name),
                    );
                    self.stop_instance(&inst, c).await;
                }
                v
            }
            ContainerState::Created => {
                // Created but never started (the agent died in between): start it now.
                let runtime = self.ctx.runtime.clone();
                let id = inst.id.clone();
                match blocking(move || runtime.start_container(&id)).await {
                    Ok(Ok(())) => v,
                    Ok(Err(err)) => self.failed(c, attempt, "RunContainerError", err.to_string()),
                    Err(err) => self.failed(c, attempt, "RunContainerError", err),
                }
            }
            ContainerState::Exited | ContainerState::Unknown => {
                let State::Terminated(exit) = v.state.clone() else { return v };
                let restart = match restart_policy {
                    "Always" => true,
                    "OnFailure" => exit.exit_code != 0,
                    _ => false,
                };
                if !restart {
                    return v;
                }
                match self.backoff.may_start(&c.name, ran_for(&inst), Instant::now()) {
                    Ok(()) => {
                        self.backoff.restarted(&c.name, Instant::now());
                        self.start(c, attempt + 1, Some(exit), sandbox).await
                    }
                    Err(_) => {
                        let delay = self.backoff.delay(&c.name).as_secs();
                        let pod = self.pod.metadata.name.clone().unwrap_or_default();
                        let ns = self.pod.metadata.namespace.clone().unwrap_or_default();
                        let message = format!(
                            "back-off {}s restarting failed container={} pod={}_{}({})",
                            delay_text(delay),
                            c.name,
                            pod,
                            ns,
                            self.uid
                        );
                        if self.backoff_events.get(&c.name) != Some(&attempt) {
                            self.backoff_events.insert(c.name.clone(), attempt);
                            self.ctx.events.warning(
                                &self.pod,
                                Some(&c.name),
                                "BackOff",
                                "Back-off restarting failed container".to_string(),
                            );
                        }
                        v.state = State::Waiting {
                            reason: "CrashLoopBackOff".into(),
                            message: Some(message),
                        };
                        v.last = Some(exit);
                        v
                    }
                }
            }
        }
    }

    fn failed(
        &mut self,
        c: &Container,
        restarts: u32,
        reason: &str,
        message: String,
    ) -> ContainerView {
        self.problems.insert(c.name.clone(), (reason.to_string(), message.clone()));
        self.waiting(c, restarts, reason, Some(message))
    }

    /// Creates and starts instance `attempt` of `c`.
    async fn start(
        &mut self,
        c: &Container,
        attempt: u32,
        last: Option<Exit>,
        sandbox: &SandboxRecord,
    ) -> ContainerView {
        let mut view = match self.create_and_start(c, attempt, sandbox).await {
            Ok(inst) => {
                self.problems.remove(&c.name);
                let mut v = self.waiting(c, attempt, "ContainerCreating", None);
                v.state = State::Running {
                    started_at: time(inst.started_at.as_deref())
                        .or_else(|| Some(Time(Timestamp::now()))),
                    container_id: naming::container_id(&inst.id),
                };
                v.ready = self.ctx.readiness(&self.uid, &c.name, c);
                v.started = true;
                v
            }
            Err((reason, message)) => {
                tracing::info!(pod = %self.pod_label(), container = %c.name, %reason, %message, "container not started");
                self.failed(c, attempt.saturating_sub(1).min(attempt), &reason, message)
            }
        };
        if view.last.is_none() {
            view.last = last;
        }
        view
    }

    async fn create_and_start(
        &mut self,
        c: &Container,
        attempt: u32,
        sandbox: &SandboxRecord,
    ) -> Result<ContainerStatus, (String, String)> {
        let image = self.ensure_image(c).await?;
        self.image_ids.insert(c.name.clone(), image_id(&image));
        let name = naming::container_name(&self.uid, &c.name, attempt);
        let spec = self
            .ctx
            .container_spec(&self.pod, c, &name, &image, attempt)
            .await
            .map_err(|m| ("CreateContainerConfigError".to_string(), m))?;
        let runtime = self.ctx.runtime.clone();
        let sandbox_id = sandbox.id.clone();
        let created = blocking(move || -> Result<ContainerStatus, String> {
            let id = runtime.create_container(&sandbox_id, spec).map_err(|e| e.to_string())?;
            runtime.start_container(&id).map_err(|e| e.to_string())?;
            runtime.container_status(&id).map_err(|e| e.to_string())
        })
        .await
        .and_then(|r| r);
        let inst = match created {
            Ok(inst) => inst,
            Err(message) => {
                self.ctx.release_rootfs(&name).await;
                self.ctx.events.warning(
                    &self.pod,
                    Some(&c.name),
                    "Failed",
                    format!("Error: {message}"),
                );
                return Err(("CreateContainerError".into(), message));
            }
        };
        self.ctx.events.normal(
            &self.pod,
            Some(&c.name),
            "Created",
            format!("Created container {}", c.name),
        );
        self.ctx.events.normal(
            &self.pod,
            Some(&c.name),
            "Started",
            format!("Started container {}", c.name),
        );
        self.probe_loops.remove(&c.name);
        self.ctx.forget_probes(&self.uid, &c.name);
        // Keep the previous instance (for `logs --previous`); older ones go.
        let old: Vec<ContainerStatus> = self
            .instances()
            .await
            .unwrap_or_default()
            .remove(&c.name)
            .unwrap_or_default()
            .into_iter()
            .filter(|(a, _)| *a + 1 < attempt)
            .map(|(_, s)| s)
            .collect();
        for o in old {
            self.ctx.remove_instance(&o).await;
        }
        Ok(inst)
    }

    /// Pulls the image as its policy says; returns the registered image.
    async fn ensure_image(
        &mut self,
        c: &Container,
    ) -> Result<skerry_images::Image, (String, String)> {
        let reference = c.image.clone().unwrap_or_default();
        if reference.is_empty() {
            return Err(("InvalidImageName".into(), "no image given".into()));
        }
        let policy = c.image_pull_policy.clone().unwrap_or_else(|| {
            let tagged = reference.rsplit('/').next().is_some_and(|last| last.contains(':'));
            if reference.contains('@') || (tagged && !reference.ends_with(":latest")) {
                "IfNotPresent".into()
            } else {
                "Always".into()
            }
        });
        let present = self.ctx.image(&reference).await;
        match (policy.as_str(), present) {
            ("Never", Some(image)) | ("IfNotPresent", Some(image)) => return Ok(image),
            ("Never", None) => {
                let message = format!(
                    "Container image \"{reference}\" is not present with pull policy of Never"
                );
                self.ctx.events.warning(
                    &self.pod,
                    Some(&c.name),
                    "ErrImageNeverPull",
                    message.clone(),
                );
                return Err(("ErrImageNeverPull".into(), message));
            }
            _ => {}
        }
        let key = format!("image:{}", c.name);
        if self.pull_backoff.may_start(&key, Duration::ZERO, Instant::now()).is_err() {
            let message = format!("Back-off pulling image \"{reference}\"");
            return Err(("ImagePullBackOff".into(), message));
        }
        self.ctx.events.normal(
            &self.pod,
            Some(&c.name),
            "Pulling",
            format!("Pulling image \"{reference}\""),
        );
        let started = Instant::now();
        match self.ctx.pull(&self.pod, &reference).await {
            Ok(image) => {
                self.ctx.events.normal(
                    &self.pod,
                    Some(&c.name),
                    "Pulled",
                    format!(
                        "Successfully pulled image \"{reference}\" in {:.3}s",
                        started.elapsed().as_secs_f64()
                    ),
                );
                Ok(image)
            }
            Err(message) => {
                self.pull_backoff.restarted(&key, Instant::now());
                // Offline: an image already here beats a failed refresh of `:latest`.
                if let Some(image) = self.ctx.image(&reference).await {
                    tracing::warn!(%reference, %message, "pull failed; using the local image");
                    return Ok(image);
                }
                self.ctx.events.warning(
                    &self.pod,
                    Some(&c.name),
                    "Failed",
                    format!("Failed to pull image \"{reference}\": {message}"),
                );
                Err(("ErrImagePull".into(), message))
            }
        }
    }

    async fn create_sandbox(&mut self) -> Result<SandboxRecord, String> {
        // A half-made sandbox (not ready) is removed first.
        if let Some(old) = self.sandbox().await? {
            let runtime = self.ctx.runtime.clone();
            blocking(move || runtime.remove_sandbox(&old.id)).await?.map_err(|e| e.to_string())?;
        }
        let spec = self.ctx.sandbox_spec(&self.pod);
        let runtime = self.ctx.runtime.clone();
        blocking(move || {
            let id = runtime.create_sandbox(spec).map_err(|e| e.to_string())?;
            runtime.sandbox(&id).map_err(|e| e.to_string())
        })
        .await?
    }

    /// activeDeadlineSeconds: past it, the pod is killed and fails with DeadlineExceeded.
    async fn check_deadline(&mut self, instances: &HashMap<String, Vec<(u32, ContainerStatus)>>) {
        let Some(deadline) = self.pod.spec.as_ref().and_then(|s| s.active_deadline_seconds) else {
            return;
        };
        let Some(start) = &self.start_time else { return };
        let elapsed = Timestamp::now().duration_since(start.0).as_secs();
        if elapsed < deadline || self.terminal.is_some() {
            return;
        }
        let message = "Pod was active on the node longer than the specified deadline".to_string();
        self.ctx.events.normal(&self.pod, None, "DeadlineExceeded", message.clone());
        self.terminal = Some(("Failed".into(), "DeadlineExceeded".into(), message));
        self.terminate(instances, "Killing").await;
    }

    /// Admission under node pressure (`crate::eviction::admission`), for a pod that has not
    /// started (pending, nothing of it in the runtime): a refused pod fails with reason
    /// Evicted, as the kubelet rejects it, and nothing of it is created. Whether it was refused.
    fn refuse_under_pressure(
        &mut self,
        instances: &HashMap<String, Vec<(u32, ContainerStatus)>>,
        sandbox: Option<&SandboxRecord>,
    ) -> bool {
        let phase = self.pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let started =
            !instances.is_empty() || sandbox.is_some() || phase.is_some_and(|p| p != "Pending");
        if started {
            return false;
        }
        let pressure = *self.ctx.pressure.borrow();
        let Err(rejection) = crate::eviction::admission::admit(&self.pod, pressure) else {
            return false;
        };
        tracing::info!(
            pod = %self.pod_label(),
            reason = %rejection.message,
            "pod refused under node pressure"
        );
        self.ctx.events.warning(
            &self.pod,
            None,
            crate::eviction::REASON,
            rejection.message.clone(),
        );
        let terminal =
            ("Failed".to_string(), crate::eviction::REASON.to_string(), rejection.status_message());
        self.terminal = Some(terminal.clone());
        self.report(Observed { terminal: Some(terminal), ..self.observe_only(instances, None) });
        true
    }

    /// Node-pressure eviction (`crate::eviction`): the pod is killed with the eviction's grace
    /// period and fails with reason Evicted.
    async fn check_eviction(&mut self, instances: &HashMap<String, Vec<(u32, ContainerStatus)>>) {
        if self.terminal.is_some() {
            return;
        }
        let Some(eviction) = self.ctx.evictions.take(&self.uid) else { return };
        self.terminal = Some(("Failed".into(), crate::eviction::REASON.into(), eviction.message));
        self.grace_override = Some(eviction.grace_seconds);
        self.terminate(instances, "Killing").await;
    }

    /// Stops every running container: preStop hooks, then the stop signal and SIGKILL after the
    /// grace period (an eviction's, else deletionGracePeriodSeconds, else
    /// terminationGracePeriodSeconds, else 30).
    async fn terminate(
        &self,
        instances: &HashMap<String, Vec<(u32, ContainerStatus)>>,
        reason: &str,
    ) {
        let grace = self
            .grace_override
            .or(self.pod.metadata.deletion_grace_period_seconds)
            .or_else(|| self.pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
            .unwrap_or(30)
            .max(0) as u64;
        let grace = Duration::from_secs(grace);
        let spec = self.pod.spec.clone().unwrap_or_default();
        let all: Vec<Container> =
            spec.containers.iter().chain(spec.init_containers.iter().flatten()).cloned().collect();
        let mut stops = Vec::new();
        for (name, list) in instances {
            for (_, inst) in list {
                if !matches!(inst.state, ContainerState::Running | ContainerState::Created) {
                    continue;
                }
                let container = all.iter().find(|c| &c.name == name).cloned();
                self.ctx.events.normal(
                    &self.pod,
                    Some(name),
                    reason,
                    format!("Stopping container {name}"),
                );
                let ctx = self.ctx.clone();
                let inst = inst.clone();
                stops.push(tokio::spawn(async move {
                    if let Some(c) = &container {
                        ctx.pre_stop(c, &inst, grace).await;
                    }
                    let runtime = ctx.runtime.clone();
                    let id = inst.id.clone();
                    let _ = blocking(move || runtime.stop_container(&id, grace)).await;
                }));
            }
        }
        for s in stops {
            let _ = s.await;
        }
    }

    async fn stop_instance(&self, inst: &ContainerStatus, c: &Container) {
        let grace = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30)
            .max(0) as u64;
        let grace = Duration::from_secs(grace);
        self.ctx.pre_stop(c, inst, grace).await;
        let runtime = self.ctx.runtime.clone();
        let id = inst.id.clone();
        let _ = blocking(move || runtime.stop_container(&id, grace)).await;
    }

    /// Removes all containers (with their root filesystems) and the sandbox.
    async fn remove_everything(
        &self,
        instances: HashMap<String, Vec<(u32, ContainerStatus)>>,
        sandbox: Option<SandboxRecord>,
    ) -> Result<(), String> {
        for (_, inst) in instances.into_values().flatten() {
            self.ctx.remove_instance(&inst).await;
        }
        if let Some(s) = sandbox {
            let runtime = self.ctx.runtime.clone();
            blocking(move || runtime.remove_sandbox(&s.id)).await?.map_err(|e| e.to_string())?;
        }
        self.ctx.forget_pod_files(&self.uid).await;
        Ok(())
    }

    /// Once the containers are gone, the final DELETE (grace 0, for this UID) ends the
    /// deletion the user started.
    async fn finish_deletion(&mut self) {
        if self.delete_sent {
            return;
        }
        let m = &self.pod.metadata;
        let api: Api<Pod> =
            Api::namespaced(self.ctx.client.clone(), m.namespace.as_deref().unwrap_or("default"));
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions { uid: m.uid.clone(), resource_version: None }),
            ..Default::default()
        };
        match api.delete(m.name.as_deref().unwrap_or_default(), &params).await {
            Ok(_) => self.delete_sent = true,
            Err(kube::Error::Api(e)) if matches!(e.code, 404 | 409) => self.delete_sent = true,
            Err(err) => tracing::debug!(%err, pod = %self.pod_label(), "final delete; will retry"),
        }
    }

    /// Sends the status if it changed.
    fn report(&mut self, observed: Observed) {
        let qos = super::spec::qos_name(super::spec::qos_class(&self.pod));
        let mut pod = self.pod.clone();
        if let Some(sent) = &self.sent {
            // Transition times come from what we sent last (the server may lag behind).
            pod.status = Some(sent.clone());
        }
        let status = status::build(&pod, &observed, qos);
        if self.sent.as_ref().is_some_and(|s| status::same(s, &status)) {
            return;
        }
        if self.sent.is_none() {
            tracing::debug!(pod = %self.pod_label(), after = ?self.started.elapsed(), "first status");
        }
        self.ctx.status.send(&self.pod, status.clone());
        self.sent = Some(status);
    }
}

fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// The kubelet prints back-off delays like Go durations (`10s`, `1m20s`, `5m0s`).
fn delay_text(secs: u64) -> String {
    if secs < 60 {
        format!("{secs}")
    } else {
        format!("{}m{}", secs / 60, secs % 60)
    }
}

/// Runs blocking work (runtime calls) off the executor.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f).await.map_err(|e| format!("blocking task: {e}"))
}
