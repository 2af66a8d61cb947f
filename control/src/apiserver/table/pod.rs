//! The pod printer: READY, STATUS and RESTARTS computed from container statuses the way the
//! reference's `printPod` does (init containers, sidecars, waiting/terminated reasons,
//! Terminating, `3 (5m ago)`), plus the wide IP / NODE / NOMINATED NODE / READINESS GATES.

use serde_json::{json, Value};

use super::format::{age, get, human_duration, int, list, or_none, parse_time, text};
use super::{Col, Printer, AGE, NAME};

const COLUMNS: &[Col] = &[
    NAME,
    ("Ready", "string", "", 0, "The aggregate readiness state of this pod for accepting traffic."),
    ("Status", "string", "", 0, "The aggregate status of the containers in this pod."),
    (
        "Restarts",
        "string",
        "",
        0,
        "The number of times the containers in this pod have been restarted and when the last \
         container in this pod has restarted.",
    ),
    AGE,
    ("IP", "string", "", 1, "IP address allocated to the pod."),
    ("Node", "string", "", 1, "The node the pod is bound to."),
    ("Nominated Node", "string", "", 1, "The node the scheduler nominated for preemption."),
    ("Readiness Gates", "string", "", 1, "Readiness gates that are true, of those declared."),
];

/// The pod printer, for core/v1 Pod.
pub(super) fn printer(group: &str, kind: &str) -> Option<(&'static [Col], Printer)> {
    (group.is_empty() && kind == "Pod").then_some((COLUMNS, print_pod as Printer))
}

/// The row conditions the reference attaches to finished pods (kubectl uses them to tell
/// completed pods apart).
pub(super) fn row_conditions(pod: &Value) -> Option<Value> {
    let (reason, message) = match text(pod, &["status", "phase"]) {
        "Succeeded" => ("Succeeded", "The pod has completed successfully."),
        "Failed" => ("Failed", "The pod failed."),
        _ => return None,
    };
    Some(json!([{"type": "Completed", "status": "True", "reason": reason, "message": message}]))
}

/// Latest of two optional timestamps (Unix seconds).
fn later(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    a.max(b)
}

/// When a container last terminated, from `lastState.terminated.finishedAt`.
fn last_finished(status: &Value) -> Option<i64> {
    get(status, &["lastState", "terminated", "finishedAt"])
        .and_then(Value::as_str)
        .and_then(parse_time)
}

/// `Init:`-less reason of a terminated state: its reason, else `Signal:N` / `ExitCode:N`.
fn terminated_reason(terminated: &Value) -> String {
    let reason = text(terminated, &["reason"]);
    if !reason.is_empty() {
        return reason.to_string();
    }
    let signal = int(terminated, &["signal"]);
    if signal != 0 {
        format!("Signal:{signal}")
    } else {
        format!("ExitCode:{}", int(terminated, &["exitCode"]))
    }
}

fn condition_true(pod: &Value, kind: &str) -> bool {
    list(pod, &["status", "conditions"])
        .iter()
        .any(|c| text(c, &["type"]) == kind && text(c, &["status"]) == "True")
}

fn print_pod(pod: &Value, now: i64) -> Vec<Value> {
    let spec_init = list(pod, &["spec", "initContainers"]);
    // Sidecars: init containers with restartPolicy Always count as regular containers.
    let restartable = |name: &str| {
        spec_init
            .iter()
            .any(|c| text(c, &["name"]) == name && text(c, &["restartPolicy"]) == "Always")
    };
    let total = list(pod, &["spec", "containers"]).len()
        + spec_init.iter().filter(|c| text(c, &["restartPolicy"]) == "Always").count();
    let mut ready = 0usize;
    let mut restarts = 0i64;
    let mut sidecar_restarts = 0i64;
    let mut last_restart: Option<i64> = None;
    let mut last_sidecar_restart: Option<i64> = None;

    let phase = text(pod, &["status", "phase"]);
    let status_reason = text(pod, &["status", "reason"]);
    let mut reason =
        if status_reason.is_empty() { phase.to_string() } else { status_reason.to_string() };
    for c in list(pod, &["status", "conditions"]) {
        if text(c, &["type"]) == "PodScheduled" && text(c, &["reason"]) == "SchedulingGated" {
            reason = "SchedulingGated".to_string();
        }
    }

    let mut initializing = false;
    for (i, status) in list(pod, &["status", "initContainerStatuses"]).iter().enumerate() {
        let name = text(status, &["name"]);
        restarts += int(status, &["restartCount"]);
        last_restart = later(last_restart, last_finished(status));
        let sidecar = restartable(name);
        if sidecar {
            sidecar_restarts += int(status, &["restartCount"]);
            last_sidecar_restart = later(last_sidecar_restart, last_finished(status));
        }
        let terminated = get(status, &["state", "terminated"]).filter(|t| t.is_object());
        let waiting_reason = text(status, &["state", "waiting", "reason"]);
        if terminated.is_some_and(|t| int(t, &["exitCode"]) == 0) {
            continue;
        }
        if sidecar && get(status, &["started"]).and_then(Value::as_bool) == Some(true) {
            if get(status, &["ready"]).and_then(Value::as_bool) == Some(true) {
                ready += 1;
            }
            continue;
        }
        reason = if let Some(t) = terminated {
            format!("Init:{}", terminated_reason(t))
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            format!("Init:{waiting_reason}")
        } else {
            format!("Init:{i}/{}", spec_init.len())
        };
        initializing = true;
        break;
    }

    if !initializing || condition_true(pod, "Initialized") {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        // The reference walks statuses backwards, so the first container's reason wins.
        for status in list(pod, &["status", "containerStatuses"]).iter().rev() {
            restarts += int(status, &["restartCount"]);
            last_restart = later(last_restart, last_finished(status));
            let waiting_reason = text(status, &["state", "waiting", "reason"]);
            let terminated = get(status, &["state", "terminated"]).filter(|t| t.is_object());
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if let Some(t) = terminated {
                reason = terminated_reason(t);
            } else if get(status, &["ready"]).and_then(Value::as_bool) == Some(true)
                && get(status, &["state", "running"]).is_some_and(Value::is_object)
            {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = if condition_true(pod, "Ready") { "Running" } else { "NotReady" }.to_string();
        }
    }

    let deleting = get(pod, &["metadata", "deletionTimestamp"]).is_some_and(|v| !v.is_null());
    if deleting && status_reason == "NodeLost" {
        reason = "Unknown".to_string();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".to_string();
    }

    let restarts_cell = match last_restart {
        Some(t) if restarts != 0 => {
            format!("{restarts} ({} ago)", human_duration(now - t))
        }
        _ => restarts.to_string(),
    };

    let ip = list(pod, &["status", "podIPs"]).first().map(|p| text(p, &["ip"])).unwrap_or("");
    let gates = list(pod, &["spec", "readinessGates"]);
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let conditions = list(pod, &["status", "conditions"]);
        let true_count = gates
            .iter()
            .filter(|g| {
                let kind = text(g, &["conditionType"]);
                conditions
                    .iter()
                    .find(|c| text(c, &["type"]) == kind)
                    .is_some_and(|c| text(c, &["status"]) == "True")
            })
            .count();
        format!("{true_count}/{}", gates.len())
    };
    vec![
        json!(text(pod, &["metadata", "name"])),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_cell),
        json!(age(pod, now)),
        json!(or_none(ip)),
        json!(or_none(text(pod, &["spec", "nodeName"]))),
        json!(or_none(text(pod, &["status", "nominatedNodeName"]))),
        json!(readiness_gates),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::tests::{default_headers, headers, table};
    use serde_json::{json, Value};

    fn pod(spec: Value, status: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "default",
                            "creationTimestamp": "2024-05-01T11:55:00Z"},
               "spec": spec, "status": status})
    }

    fn cells(p: Value) -> Vec<Value> {
        table("", "pods", &[p])["rows"][0]["cells"].as_array().unwrap().clone()
    }

    fn two_containers() -> Value {
        json!({"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]})
    }

    #[test]
    fn pod_columns_match_kubectl() {
        let t = table("", "pods", &[]);
        assert_eq!(default_headers(&t), ["Name", "Ready", "Status", "Restarts", "Age"]);
        assert_eq!(
            headers(&t)[5..],
            ["IP", "Node", "Nominated Node", "Readiness Gates"].map(String::from)
        );
    }

    #[test]
    fn running_pod_shows_ready_count_ip_and_node() {
        let p = pod(
            json!({"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n1"}),
            json!({"phase": "Running", "podIPs": [{"ip": "10.42.0.5"}],
                   "conditions": [{"type": "Ready", "status": "True"}],
                   "containerStatuses": [
                       {"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}},
                       {"name": "b", "ready": true, "restartCount": 0, "state": {"running": {}}}]}),
        );
        assert_eq!(
            cells(p),
            json!(["p", "2/2", "Running", "0", "5m", "10.42.0.5", "n1", "<none>", "<none>"])
                .as_array()
                .unwrap()
                .clone()
        );
    }

    #[test]
    fn crash_looping_pod_shows_reason_and_last_restart() {
        let p = pod(
            two_containers(),
            json!({"phase": "Running", "containerStatuses": [
                {"name": "a", "ready": false, "restartCount": 3,
                 "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                 "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-05-01T11:55:00Z"}}},
                {"name": "b", "ready": true, "restartCount": 1, "state": {"running": {}},
                 "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-05-01T11:00:00Z"}}}]}),
        );
        let c = cells(p);
        assert_eq!(c[1], "1/2");
        assert_eq!(c[2], "CrashLoopBackOff");
        assert_eq!(c[3], "4 (5m ago)");
    }

    #[test]
    fn completed_pod_shows_completed_and_row_condition() {
        let p = pod(
            json!({"containers": [{"name": "a"}]}),
            json!({"phase": "Succeeded", "containerStatuses": [
                {"name": "a", "ready": false, "restartCount": 0,
                 "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}),
        );
        let t = table("", "pods", &[p]);
        assert_eq!(t["rows"][0]["cells"][1], "0/1");
        assert_eq!(t["rows"][0]["cells"][2], "Completed");
        assert_eq!(t["rows"][0]["conditions"][0]["reason"], "Succeeded");
    }

    #[test]
    fn pod_waiting_on_its_first_init_container_shows_init_progress() {
        let p = pod(
            json!({"initContainers": [{"name": "i1"}, {"name": "i2"}], "containers": [{"name": "a"}]}),
            json!({"phase": "Pending", "initContainerStatuses": [
                {"name": "i1", "ready": false, "restartCount": 0, "state": {"running": {}}},
                {"name": "i2", "ready": false, "restartCount": 0,
                 "state": {"waiting": {"reason": "PodInitializing"}}}],
                "containerStatuses": [{"name": "a", "ready": false, "restartCount": 0,
                 "state": {"waiting": {"reason": "PodInitializing"}}}]}),
        );
        let c = cells(p);
        assert_eq!((c[1].as_str(), c[2].as_str()), (Some("0/1"), Some("Init:0/2")));
    }

    #[test]
    fn failing_init_container_and_sidecars() {
        let failed = pod(
            json!({"initContainers": [{"name": "i1"}], "containers": [{"name": "a"}]}),
            json!({"phase": "Pending", "initContainerStatuses": [
                {"name": "i1", "restartCount": 2, "state": {"terminated": {"exitCode": 2}}}]}),
        );
        assert_eq!(cells(failed)[2], "Init:ExitCode:2");

        // A started sidecar (restartPolicy Always) counts towards READY and the total.
        let sidecar = pod(
            json!({"initContainers": [{"name": "s", "restartPolicy": "Always"}],
                   "containers": [{"name": "a"}]}),
            json!({"phase": "Running", "conditions": [{"type": "Initialized", "status": "True"}],
                   "initContainerStatuses": [{"name": "s", "started": true, "ready": true,
                                              "restartCount": 0, "state": {"running": {}}}],
                   "containerStatuses": [{"name": "a", "ready": true, "restartCount": 0,
                                          "state": {"running": {}}}]}),
        );
        let c = cells(sidecar);
        assert_eq!((c[1].as_str(), c[2].as_str()), (Some("2/2"), Some("Running")));
    }

    #[test]
    fn deleting_pod_shows_terminating_unless_finished() {
        let mut p = pod(
            json!({"containers": [{"name": "a"}]}),
            json!({"phase": "Running", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}}]}),
        );
        p["metadata"]["deletionTimestamp"] = json!("2024-05-01T11:59:00Z");
        assert_eq!(cells(p.clone())[2], "Terminating");
        p["status"]["reason"] = json!("NodeLost");
        assert_eq!(cells(p)[2], "Unknown");
    }

    #[test]
    fn pending_pod_without_statuses_and_readiness_gates() {
        let p = pod(
            json!({"containers": [{"name": "a"}], "readinessGates": [
                {"conditionType": "example.com/lb"}, {"conditionType": "example.com/dns"}]}),
            json!({"phase": "Pending", "conditions": [
                {"type": "example.com/lb", "status": "True"},
                {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}),
        );
        let c = cells(p);
        assert_eq!(c[2], "SchedulingGated");
        assert_eq!(c[3], "0");
        assert_eq!(c[8], "1/2");
        let waiting = pod(
            json!({"containers": [{"name": "a"}]}),
            json!({"phase": "Pending", "containerStatuses": [{"name": "a", "restartCount": 0,
                   "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
        );
        assert_eq!(cells(waiting)[2], "ContainerCreating");
    }
}
