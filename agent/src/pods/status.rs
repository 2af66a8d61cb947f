//! Pod status as the kubelet writes it, as a pure function of what the worker observed: the
//! container statuses (waiting / running / terminated with the kubelet's reasons), the phase
//! (`getPhase`), the conditions PodScheduled, PodReadyToStartContainers, Initialized,
//! ContainersReady and Ready (keeping `lastTransitionTime` of unchanged ones), pod IPs, host
//! IP, start time and QoS class.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// How one container instance ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// Exit code.
    pub exit_code: i32,
    /// `Completed`, `Error`, `OOMKilled`.
    pub reason: String,
    /// Termination message.
    pub message: Option<String>,
    /// Start time.
    pub started_at: Option<Time>,
    /// Exit time.
    pub finished_at: Option<Time>,
    /// `skerry://<id>`.
    pub container_id: String,
}

/// The state of a container now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Not running: `ContainerCreating`, `PodInitializing`, `CrashLoopBackOff`, `ErrImagePull`…
    Waiting { reason: String, message: Option<String> },
    /// Running since.
    Running { started_at: Option<Time>, container_id: String },
    /// Exited and will not be restarted.
    Terminated(Exit),
}

/// One container as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerView {
    /// Container name.
    pub name: String,
    /// The image as the spec names it.
    pub image: String,
    /// The image's digest reference, once known.
    pub image_id: String,
    /// Restarts so far.
    pub restart_count: i32,
    /// Current state.
    pub state: State,
    /// The previous instance's end, if any.
    pub last: Option<Exit>,
    /// Readiness (probe result, or running without a readiness probe).
    pub ready: bool,
    /// Whether the startup probe passed (or there is none) while running.
    pub started: bool,
    /// An init container with `restartPolicy: Always`.
    pub sidecar: bool,
}

/// What the worker observed of a pod.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The sandbox exists with its network.
    pub sandbox_ready: bool,
    /// Pod IPs (primary first).
    pub pod_ips: Vec<String>,
    /// The node's address.
    pub host_ip: String,
    /// When the agent first acknowledged the pod.
    pub start_time: Option<Time>,
    /// Init containers in spec order.
    pub init: Vec<ContainerView>,
    /// App containers in spec order.
    pub app: Vec<ContainerView>,
    /// A decision the worker made (phase, reason, message), e.g. `DeadlineExceeded`.
    pub terminal: Option<(String, String, String)>,
}

fn now() -> Time {
    Time(Timestamp::now())
}

/// A container view as a `ContainerStatus`.
fn container_status(v: &ContainerView) -> ContainerStatus {
    let terminated = |e: &Exit| ContainerStateTerminated {
        exit_code: e.exit_code,
        reason: Some(e.reason.clone()),
        message: e.message.clone().filter(|m| !m.is_empty()),
        started_at: e.started_at.clone(),
        finished_at: e.finished_at.clone(),
        container_id: Some(e.container_id.clone()),
        signal: None,
    };
    let (state, container_id, running) = match &v.state {
        State::Waiting { reason, message } => (
            ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.clone()),
                    message: message.clone(),
                }),
                ..Default::default()
            },
            v.last.as_ref().map(|e| e.container_id.clone()),
            false,
        ),
        State::Running { started_at, container_id } => (
            ContainerState {
                running: Some(ContainerStateRunning { started_at: started_at.clone() }),
                ..Default::default()
            },
            Some(container_id.clone()),
            true,
        ),
        State::Terminated(e) => (
            ContainerState { terminated: Some(terminated(e)), ..Default::default() },
            Some(e.container_id.clone()),
            false,
        ),
    };
    ContainerStatus {
        name: v.name.clone(),
        image: v.image.clone(),
        image_id: v.image_id.clone(),
        container_id,
        restart_count: v.restart_count,
        ready: running && v.ready,
        started: Some(running && v.started),
        state: Some(state),
        last_state: Some(ContainerState {
            terminated: v.last.as_ref().map(terminated),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn exited_ok(v: &ContainerView) -> bool {
    matches!(&v.state, State::Terminated(e) if e.exit_code == 0)
}

/// Whether every init container has done its part (regular: exited 0; sidecar: started).
pub fn initialized(o: &Observed) -> bool {
    o.init.iter().all(|v| {
        if v.sidecar {
            matches!(v.state, State::Running { .. }) && v.started
        } else {
            exited_ok(v)
        }
    })
}

/// The pod phase, as the kubelet's `getPhase`.
pub fn phase(restart_policy: &str, o: &Observed) -> &'static str {
    let init_failed = o
        .init
        .iter()
        .any(|v| !v.sidecar && matches!(&v.state, State::Terminated(e) if e.exit_code != 0));
    if !initialized(o) {
        return if init_failed && restart_policy == "Never" { "Failed" } else { "Pending" };
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for v in &o.app {
        match &v.state {
            State::Running { .. } => running += 1,
            State::Terminated(e) => {
                stopped += 1;
                if e.exit_code == 0 {
                    succeeded += 1;
                }
            }
            // A container waiting to be restarted counts as stopped, as in the kubelet.
            State::Waiting { .. } if v.last.is_some() => stopped += 1,
            State::Waiting { .. } => waiting += 1,
        }
    }
    if waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        match restart_policy {
            "Always" => "Running",
            _ if stopped == succeeded => "Succeeded",
            "Never" => "Failed",
            _ => "Running",
        }
    } else {
        "Pending"
    }
}

fn condition(
    previous: Option<&PodStatus>,
    typ: &str,
    ok: bool,
    reason: Option<String>,
    message: Option<String>,
) -> PodCondition {
    let status = if ok { "True" } else { "False" }.to_string();
    let since = previous
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == typ && c.status == status))
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(now);
    PodCondition {
        type_: typ.to_string(),
        status,
        reason,
        message,
        last_transition_time: Some(since),
        last_probe_time: None,
        observed_generation: None,
    }
}

/// The full pod status for `pod` given what was observed.
pub fn build(pod: &Pod, o: &Observed, qos: &str) -> PodStatus {
    let previous = pod.status.as_ref();
    let restart_policy =
        pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()).unwrap_or("Always");
    let (phase, reason, message) = match &o.terminal {
        Some((p, r, m)) => (p.clone(), Some(r.clone()), Some(m.clone())),
        None => {
            // A terminal phase is final: a later observation never brings a pod back.
            match previous.and_then(|s| s.phase.as_deref()) {
                Some(p @ ("Succeeded" | "Failed")) => (p.to_string(), None, None),
                _ => (phase(restart_policy, o).to_string(), None, None),
            }
        }
    };
    let terminal = phase == "Succeeded" || phase == "Failed";
    let init_done = initialized(o);
    let incomplete: Vec<&str> = o
        .init
        .iter()
        .filter(
            |v| if v.sidecar { !matches!(v.state, State::Running { .. }) } else { !exited_ok(v) },
        )
        .map(|v| v.name.as_str())
        .collect();
    let unready: Vec<&str> = o
        .app
        .iter()
        .chain(o.init.iter().filter(|v| v.sidecar))
        .filter(|v| !(v.ready && matches!(v.state, State::Running { .. })))
        .map(|v| v.name.as_str())
        .collect();
    let ready = unready.is_empty() && !terminal;
    let (ready_reason, ready_message) = if ready {
        (None, None)
    } else if terminal {
        (Some("PodCompleted".to_string()), None)
    } else {
        (
            Some("ContainersNotReady".to_string()),
            Some(format!("containers with unready status: [{}]", unready.join(" "))),
        )
    };
    let mut conditions = vec![
        condition(previous, "PodReadyToStartContainers", o.sandbox_ready, None, None),
        if init_done || terminal && incomplete.is_empty() {
            condition(previous, "Initialized", true, None, None)
        } else {
            condition(
                previous,
                "Initialized",
                false,
                Some("ContainersNotInitialized".into()),
                Some(format!("containers with incomplete status: [{}]", incomplete.join(" "))),
            )
        },
        condition(previous, "Ready", ready, ready_reason.clone(), ready_message.clone()),
        condition(previous, "ContainersReady", ready, ready_reason, ready_message),
        condition(previous, "PodScheduled", true, None, None),
    ];
    // An evicted pod says why, as the kubelet does (PodDisruptionConditions); a pod refused
    // at admission was never disrupted.
    let refused = |m: &str| m.starts_with(crate::eviction::admission::REJECTED_PREFIX);
    if let Some((_, _, message)) =
        o.terminal.as_ref().filter(|t| t.1 == "Evicted" && !refused(&t.2))
    {
        let reason = Some("TerminationByKubelet".to_string());
        conditions.push(condition(
            previous,
            "DisruptionTarget",
            true,
            reason,
            Some(message.clone()),
        ));
    }
    // Conditions other writers own (readiness gates, DisruptionTarget…) are kept.
    for c in previous.and_then(|s| s.conditions.clone()).into_iter().flatten() {
        if !conditions.iter().any(|m| m.type_ == c.type_) {
            conditions.push(c);
        }
    }
    let pod_ips: Vec<PodIP> = o.pod_ips.iter().map(|ip| PodIP { ip: ip.clone() }).collect();
    PodStatus {
        phase: Some(phase),
        reason,
        message,
        conditions: Some(conditions),
        host_ip: (!o.host_ip.is_empty()).then(|| o.host_ip.clone()),
        host_ips: (!o.host_ip.is_empty()).then(|| vec![HostIP { ip: o.host_ip.clone() }]),
        pod_ip: o.pod_ips.first().cloned(),
        pod_ips: (!pod_ips.is_empty()).then_some(pod_ips),
        start_time: o.start_time.clone().or_else(|| previous.and_then(|s| s.start_time.clone())),
        qos_class: Some(qos.to_string()),
        init_container_statuses: (!o.init.is_empty())
            .then(|| o.init.iter().map(container_status).collect()),
        container_statuses: Some(o.app.iter().map(container_status).collect()),
        ..Default::default()
    }
}

/// Whether two statuses differ beyond timestamps that `build` refreshes.
pub fn same(a: &PodStatus, b: &PodStatus) -> bool {
    serde_json::to_value(a).ok() == serde_json::to_value(b).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(name: &str, state: State) -> ContainerView {
        ContainerView {
            name: name.into(),
            image: "busybox".into(),
            image_id: String::new(),
            restart_count: 0,
            state,
            last: None,
            ready: true,
            started: true,
            sidecar: false,
        }
    }

    fn exit(code: i32) -> State {
        State::Terminated(Exit {
            exit_code: code,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            message: None,
            started_at: None,
            finished_at: None,
            container_id: "skerry://x".into(),
        })
    }

    fn running() -> State {
        State::Running { started_at: None, container_id: "skerry://y".into() }
    }

    fn pod(policy: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"}, "spec": {"restartPolicy": policy, "containers": []}
        }))
        .unwrap()
    }

    #[test]
    fn phases_follow_the_kubelet() {
        let mut o = Observed { app: vec![view("a", running())], ..Default::default() };
        assert_eq!(phase("Always", &o), "Running");
        o.app = vec![view("a", exit(0))];
        assert_eq!(phase("Never", &o), "Succeeded");
        o.app = vec![view("a", exit(1))];
        assert_eq!(phase("Never", &o), "Failed");
        assert_eq!(phase("OnFailure", &o), "Running");
        let mut crashing =
            view("a", State::Waiting { reason: "CrashLoopBackOff".into(), message: None });
        crashing.last = Some(Exit {
            exit_code: 1,
            reason: "Error".into(),
            message: None,
            started_at: None,
            finished_at: None,
            container_id: "skerry://x".into(),
        });
        o.app = vec![crashing];
        assert_eq!(phase("Always", &o), "Running");
        o.app =
            vec![view("a", State::Waiting { reason: "ContainerCreating".into(), message: None })];
        assert_eq!(phase("Always", &o), "Pending");
        // A failed init container blocks the pod; with Never it fails it.
        o.init = vec![view("i", exit(1))];
        assert_eq!(phase("Always", &o), "Pending");
        assert_eq!(phase("Never", &o), "Failed");
    }

    #[test]
    fn conditions_and_container_statuses_look_like_the_kubelets() {
        let o = Observed {
            sandbox_ready: true,
            pod_ips: vec!["10.42.0.5".into()],
            host_ip: "10.0.0.1".into(),
            init: vec![view("init", exit(0))],
            app: vec![view("a", running()), {
                let mut v = view("b", running());
                v.ready = false;
                v
            }],
            ..Default::default()
        };
        let s = build(&pod("Always"), &o, "BestEffort");
        assert_eq!(s.phase.as_deref(), Some("Running"));
        let cond =
            |t: &str| s.conditions.as_ref().unwrap().iter().find(|c| c.type_ == t).unwrap().clone();
        assert_eq!(cond("Initialized").status, "True");
        assert_eq!(cond("Ready").status, "False");
        assert_eq!(cond("Ready").message.as_deref(), Some("containers with unready status: [b]"));
        assert_eq!(cond("PodReadyToStartContainers").status, "True");
        assert_eq!(s.pod_ip.as_deref(), Some("10.42.0.5"));
        let cs = s.container_statuses.as_ref().unwrap();
        assert!(cs[0].ready && !cs[1].ready);
        assert_eq!(cs[0].container_id.as_deref(), Some("skerry://y"));
        let init = &s.init_container_statuses.as_ref().unwrap()[0];
        assert_eq!(
            init.state.as_ref().unwrap().terminated.as_ref().unwrap().reason.as_deref(),
            Some("Completed")
        );
    }

    #[test]
    fn a_terminal_phase_is_kept() {
        let mut p = pod("Never");
        p.status = Some(PodStatus { phase: Some("Succeeded".into()), ..Default::default() });
        let o = Observed { app: vec![view("a", running())], ..Default::default() };
        assert_eq!(build(&p, &o, "BestEffort").phase.as_deref(), Some("Succeeded"));
    }

    #[test]
    fn an_evicted_pod_fails_with_a_disruption_target() {
        let message = "The node was low on resource: memory. ".to_string();
        let terminal = Some(("Failed".into(), "Evicted".into(), message.clone()));
        let o = Observed { app: vec![view("a", running())], terminal, ..Default::default() };
        let status = build(&pod("Always"), &o, "BestEffort");
        assert_eq!(status.phase.as_deref(), Some("Failed"));
        assert_eq!(status.reason.as_deref(), Some("Evicted"));
        let conditions = status.conditions.unwrap();
        let target = conditions.iter().find(|c| c.type_ == "DisruptionTarget").unwrap();
        assert_eq!(
            (target.status.as_str(), target.reason.as_deref(), target.message.as_deref()),
            ("True", Some("TerminationByKubelet"), Some(message.as_str()))
        );
        // Refused at admission: Failed and Evicted too, but never disrupted.
        let refused = "Pod was rejected: The node had condition: [DiskPressure]. ".to_string();
        let terminal = Some(("Failed".into(), "Evicted".into(), refused));
        let o = Observed { terminal, ..Default::default() };
        let status = build(&pod("Always"), &o, "BestEffort");
        assert_eq!(status.reason.as_deref(), Some("Evicted"));
        let conditions = status.conditions.unwrap();
        assert!(!conditions.iter().any(|c| c.type_ == "DisruptionTarget"), "{conditions:?}");
    }
}
