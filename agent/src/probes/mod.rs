//! Container probes as the reference kubelet runs them (`pkg/probe`, `pkg/kubelet/prober`):
//! exec, httpGet, tcpSocket and grpc, with kubelet's outputs so the `Unhealthy` events read the
//! same (`Liveness probe failed: HTTP probe failed with statuscode: 500`).
//!
//! API boundary: [`run_probe`] runs one probe against a [`ProbeTarget`] and returns a
//! [`ProbeOutcome`] (Success / Warning / Failure / Unknown plus output); [`ProbeOutcome::event`]
//! gives the event to record; [`ProbeTracker`] applies initialDelaySeconds, periodSeconds,
//! successThreshold and failureThreshold and reports when the published result flips. Exec
//! probes go through [`ExecRunner`], which the agent core implements with the runtime's exec.
//! Errors (Unknown: a port name that does not resolve, an exec that could not start) are
//! retried up to 3 times within one run and never count towards the thresholds, as in kubelet.

mod grpc;
pub(crate) mod http;
mod tcp;
mod tracker;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

pub use tracker::{ProbeState, ProbeTiming, ProbeTracker};

/// Which probe: the word kubelet puts in front of its event messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
}

impl fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Liveness => "Liveness",
            Self::Readiness => "Readiness",
            Self::Startup => "Startup",
        })
    }
}

/// The result of one probe run (kubelet's `probe.Result`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeResult {
    Success,
    /// Success with a warning (an HTTP redirect to another host, not followed).
    Warning,
    Failure,
    /// The probe could not run; the result is discarded.
    Unknown,
}

/// One probe run: result and output (the part after `probe failed: ` in the event).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeOutcome {
    pub result: ProbeResult,
    pub output: String,
}

/// An event to record for a probe run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeEvent {
    /// `Unhealthy` or `ProbeWarning` (both of type Warning).
    pub reason: &'static str,
    pub message: String,
}

impl ProbeOutcome {
    fn new(result: ProbeResult, output: impl Into<String>) -> Self {
        Self { result, output: output.into() }
    }

    /// The event kubelet records for this outcome, `None` for a plain success.
    pub fn event(&self, kind: ProbeKind) -> Option<ProbeEvent> {
        let (reason, message) = match self.result {
            ProbeResult::Success => return None,
            ProbeResult::Warning => {
                ("ProbeWarning", format!("{kind} probe warning: {}", self.output))
            }
            ProbeResult::Failure => ("Unhealthy", format!("{kind} probe failed: {}", self.output)),
            ProbeResult::Unknown => (
                "Unhealthy",
                format!("{kind} probe errored and resulted in unknown state: {}", self.output),
            ),
        };
        Some(ProbeEvent { reason, message })
    }
}

/// What an exec in the container returned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i32,
    /// stdout and stderr (interleaved as they came, or stdout then stderr).
    pub output: Vec<u8>,
}

/// Why an exec did not produce an exit code.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The command did not finish within the probe's timeout.
    #[error("timed out")]
    TimedOut,
    /// The exec could not be run (container gone, runtime error).
    #[error("{0}")]
    Failed(String),
}

/// Runs a command in the probed container; implemented by the agent core with the runtime.
#[async_trait]
pub trait ExecRunner: Send + Sync {
    async fn exec(&self, command: Vec<String>, timeout: Duration) -> Result<ExecOutput, ExecError>;
}

/// What a probe runs against.
pub struct ProbeTarget<'a> {
    /// The pod's IP: the default host of httpGet and tcpSocket, the host of grpc.
    pub pod_ip: &'a str,
    /// The probed container (named ports, env for exec command expansion).
    pub container: &'a Container,
    /// Exec in that container; `None` makes exec probes Unknown.
    pub exec: Option<&'a dyn ExecRunner>,
}

/// kubelet's `maxProbeRetries`: an errored probe is retried this many times in one run.
const MAX_RETRIES: usize = 3;
/// The most output kept from exec and HTTP probes (kubelet: 10 KiB).
pub(crate) const MAX_OUTPUT: usize = 10 * 1024;

/// Runs `probe` once (retrying errors) and returns its outcome.
pub async fn run_probe(probe: &Probe, target: &ProbeTarget<'_>) -> ProbeOutcome {
    let timeout = ProbeTiming::of(probe).timeout;
    let mut outcome = run_once(probe, target, timeout).await;
    for _ in 1..MAX_RETRIES {
        if outcome.result != ProbeResult::Unknown {
            break;
        }
        outcome = run_once(probe, target, timeout).await;
    }
    outcome
}

async fn run_once(probe: &Probe, target: &ProbeTarget<'_>, timeout: Duration) -> ProbeOutcome {
    if let Some(exec) = &probe.exec {
        let command =
            crate::env::expand_static(exec.command.as_deref().unwrap_or(&[]), target.container);
        return exec_probe(command, target.exec, timeout).await;
    }
    if let Some(action) = &probe.http_get {
        return http::probe(action, target, timeout).await;
    }
    if let Some(action) = &probe.tcp_socket {
        let port = match resolve_port(&action.port, target.container) {
            Ok(port) => port,
            Err(e) => return ProbeOutcome::new(ProbeResult::Unknown, e),
        };
        let host = action.host.as_deref().filter(|h| !h.is_empty()).unwrap_or(target.pod_ip);
        return tcp::probe(host, port, timeout).await;
    }
    if let Some(action) = &probe.grpc {
        let Some(port) = u16::try_from(action.port).ok().filter(|p| *p > 0) else {
            return ProbeOutcome::new(
                ProbeResult::Unknown,
                format!("invalid port number: {}", action.port),
            );
        };
        return grpc::probe(target.pod_ip, port, action.service.as_deref().unwrap_or(""), timeout)
            .await;
    }
    ProbeOutcome::new(ProbeResult::Unknown, "missing probe handler")
}

async fn exec_probe(
    command: Vec<String>,
    runner: Option<&dyn ExecRunner>,
    timeout: Duration,
) -> ProbeOutcome {
    let Some(runner) = runner else {
        return ProbeOutcome::new(ProbeResult::Unknown, "exec is not available for this container");
    };
    let shown = command.join(" ");
    match runner.exec(command, timeout).await {
        Ok(out) => {
            let mut output = out.output;
            output.truncate(MAX_OUTPUT);
            let output = String::from_utf8_lossy(&output).into_owned();
            let result =
                if out.exit_code == 0 { ProbeResult::Success } else { ProbeResult::Failure };
            ProbeOutcome::new(result, output)
        }
        Err(ExecError::TimedOut) => {
            ProbeOutcome::new(ProbeResult::Failure, format!("command {shown:?} timed out"))
        }
        Err(ExecError::Failed(e)) => ProbeOutcome::new(ProbeResult::Unknown, e),
    }
}

/// A probe's port: a number, or the name of one of the container's ports (kubelet's
/// `extractPort`, including its last-ditch parse of a numeric string).
pub(crate) fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    let number = match port {
        IntOrString::Int(n) => i64::from(*n),
        IntOrString::String(name) => {
            let named = container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| i64::from(p.container_port));
            match named.or_else(|| name.parse().ok()) {
                Some(n) => n,
                None => return Err(format!("port {name} not found")),
            }
        }
    };
    u16::try_from(number)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid port number: {number}"))
}

/// `host:port`, bracketing IPv6 literals (Go's `net.JoinHostPort`).
pub(crate) fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A duration the way Go's `%v` prints whole seconds (`1s`, `1m30s`, `1h0m0s`).
pub(crate) fn go_duration(d: Duration) -> String {
    let secs = d.as_secs();
    match (secs / 3600, secs % 3600 / 60, secs % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

/// How Go reports a failed TCP dial: `dial tcp ADDR: connect: connection refused`.
pub(crate) fn dial_error(addr: &str, e: &std::io::Error) -> String {
    let detail = match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connect: connection refused".to_owned(),
        std::io::ErrorKind::TimedOut => "i/o timeout".to_owned(),
        _ => format!("connect: {}", strip_os_error(e)),
    };
    format!("dial tcp {addr}: {detail}")
}

/// `No route to host (os error 113)` → `no route to host`, closer to Go's wording.
fn strip_os_error(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text).to_owned();
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

#[cfg(test)]
mod tests;
