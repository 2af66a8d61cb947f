//! Runs a container's probes, like kubelet's prober workers: one task per running container
//! instance that has a startup, liveness or readiness probe. Each probe runs every
//! `periodSeconds` after `initialDelaySeconds`, through [`ProbeTracker`]'s thresholds; the
//! verdicts go to [`PodContext::probes`], where the pod worker reads them on its next pass
//! (readiness for the Ready conditions, a liveness or startup failure for a restart), and
//! failures become `Unhealthy` events. The task ends with the [`ProbeLoop`] handle.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use skerry_runtime::{ExecSpec, Runtime};

use super::{PodContext, ProbeResults};
use crate::probes::{
    run_probe, ExecError, ExecOutput, ExecRunner, ProbeKind, ProbeState, ProbeTarget, ProbeTracker,
};

/// The probe task of one container instance; dropping it stops the probes.
pub struct ProbeLoop {
    /// The runtime id of the probed instance.
    pub runtime_id: String,
    task: tokio::task::JoinHandle<()>,
    /// Set on drop: a task mid-poll on another thread publishes nothing more (a stale
    /// liveness failure must not restart the next instance).
    stopped: Arc<AtomicBool>,
}

impl Drop for ProbeLoop {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.task.abort();
    }
}

/// Exec probes run in the container through the runtime.
struct RuntimeExec {
    runtime: Arc<Runtime>,
    id: String,
}

#[async_trait]
impl ExecRunner for RuntimeExec {
    async fn exec(&self, command: Vec<String>, timeout: Duration) -> Result<ExecOutput, ExecError> {
        let runtime = self.runtime.clone();
        let id = self.id.clone();
        let run = tokio::task::spawn_blocking(move || -> Result<ExecOutput, String> {
            let spec = ExecSpec { args: command, ..Default::default() };
            let mut process = runtime.exec(&id, spec).map_err(|e| e.to_string())?;
            let mut output = Vec::new();
            if let Some(mut out) = process.stdout.take() {
                let _ = std::io::Read::read_to_end(&mut out, &mut output);
            }
            if let Some(mut err) = process.stderr.take() {
                let _ = std::io::Read::read_to_end(&mut err, &mut output);
            }
            let exit_code = process.wait().map_err(|e| e.to_string())?;
            Ok(ExecOutput { exit_code, output })
        });
        match tokio::time::timeout(timeout, run).await {
            Err(_) => Err(ExecError::TimedOut),
            Ok(Err(join)) => Err(ExecError::Failed(join.to_string())),
            Ok(Ok(result)) => result.map_err(ExecError::Failed),
        }
    }
}

/// One probe of the container with its state and when it runs next.
struct Scheduled {
    kind: ProbeKind,
    probe: Probe,
    tracker: ProbeTracker,
    next: Instant,
}

/// Starts probing `container` (instance `runtime_id`, running since about now) of `pod`;
/// `None` when it has no probes.
pub fn spawn(
    ctx: Arc<PodContext>,
    pod: &Pod,
    container: &Container,
    runtime_id: &str,
    pod_ip: &str,
) -> Option<ProbeLoop> {
    let now = Instant::now();
    let mut probes: Vec<Scheduled> = [
        (ProbeKind::Startup, &container.startup_probe),
        (ProbeKind::Liveness, &container.liveness_probe),
        (ProbeKind::Readiness, &container.readiness_probe),
    ]
    .into_iter()
    .filter_map(|(kind, probe)| {
        let probe = probe.clone()?;
        let tracker = ProbeTracker::new(kind, &probe);
        let next = now + tracker.timing().initial_delay;
        Some(Scheduled { kind, probe, tracker, next })
    })
    .collect();
    if probes.is_empty() {
        return None;
    }
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let (pod, container, pod_ip) = (pod.clone(), container.clone(), pod_ip.to_string());
    let exec = RuntimeExec { runtime: ctx.runtime.clone(), id: runtime_id.to_string() };
    let stopped = Arc::new(AtomicBool::new(false));
    let stop = stopped.clone();
    let task = tokio::spawn(async move {
        let target = ProbeTarget { pod_ip: &pod_ip, container: &container, exec: Some(&exec) };
        let publish = |probes: &[Scheduled]| {
            if !stop.load(Ordering::SeqCst) {
                publish(&ctx, &uid, &container.name, probes);
            }
        };
        publish(&probes);
        loop {
            let started = probes
                .iter()
                .all(|p| p.kind != ProbeKind::Startup || p.tracker.state() == ProbeState::Success);
            let running_for = now.elapsed();
            for p in probes.iter_mut() {
                if Instant::now() < p.next || !p.tracker.should_probe(running_for, started) {
                    continue;
                }
                let outcome = run_probe(&p.probe, &target).await;
                if let Some(event) = outcome.event(p.kind) {
                    ctx.events.warning(&pod, Some(&container.name), event.reason, event.message);
                }
                p.tracker.record(&outcome);
                p.next = Instant::now() + p.tracker.timing().period;
            }
            publish(&probes);
            let next = probes.iter().map(|p| p.next).min().unwrap_or_else(Instant::now);
            let wait = next
                .saturating_duration_since(Instant::now())
                .clamp(Duration::from_millis(100), Duration::from_secs(1));
            tokio::time::sleep(wait).await;
        }
    });
    Some(ProbeLoop { runtime_id: runtime_id.to_string(), task, stopped })
}

/// The verdicts the pod worker reads: ready once startup (if any) and readiness (if any)
/// succeeded; a restart once liveness or startup failed.
fn publish(ctx: &PodContext, uid: &str, name: &str, probes: &[Scheduled]) {
    let state = |kind| probes.iter().find(|p| p.kind == kind).map(|p| p.tracker.state());
    let started = !matches!(state(ProbeKind::Startup), Some(s) if s != ProbeState::Success);
    let ready =
        started && !matches!(state(ProbeKind::Readiness), Some(s) if s != ProbeState::Success);
    let liveness_failed = state(ProbeKind::Liveness) == Some(ProbeState::Failure)
        || state(ProbeKind::Startup) == Some(ProbeState::Failure);
    if let Ok(mut results) = ctx.probes.lock() {
        results
            .insert((uid.to_string(), name.to_string()), ProbeResults { ready, liveness_failed });
    }
}
