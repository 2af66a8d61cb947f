//! The controller tests' view of a running `skerry server` through its admin client, and the
//! parts of a node agent they play themselves. The controller tests run the server without an
//! agent, so they register Ready Node objects, write pod status through `pods/status`, and
//! finish the deletion of terminating pods (grace period 0) as an agent would once the
//! containers stopped. [`Cluster::eventually`] prints the tail of the server's log when a wait
//! gives up, since that is where a controller's mistake shows. Each test binary adds the
//! queries only it needs in an `impl Cluster` block of its own (same crate, so allowed).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use super::agent::eventually;
use super::server::{runtime, ApiClient, SkerryServer};

/// The namespace the controller tests work in.
const NS: &str = "default";

/// A condition transition time far in the past, so `minReadySeconds` never holds a pod back.
pub const LONG_AGO: &str = "2020-01-01T00:00:00Z";

/// Lines of the server's log shown when a wait gives up.
const LOG_TAIL: usize = 60;

/// The admin client of one server, a runtime to drive it from synchronous tests, and where the
/// server logs.
pub struct Cluster {
    api: ApiClient,
    rt: tokio::runtime::Runtime,
    /// The server's log, shown when a wait fails.
    log: PathBuf,
    /// How long [`Cluster::eventually`] waits before giving up (bounds a failing wait only).
    limit: Duration,
}

impl Cluster {
    /// A view of `server` whose waits give up after `limit`.
    pub fn new(server: &SkerryServer, limit: Duration) -> Cluster {
        Cluster {
            api: server.admin(),
            rt: runtime(),
            log: server.dir.path().join("server.log"),
            limit,
        }
    }

    /// Retries `f` until it succeeds (see [`eventually`]) for the cluster's limit, printing the
    /// tail of the server's log if it gives up.
    pub fn eventually<T>(&self, what: &str, f: impl FnMut() -> Result<T, String>) -> T {
        self.eventually_within(what, self.limit, f)
    }

    /// [`Cluster::eventually`] with its own `limit`, for waits known to take longer.
    pub fn eventually_within<T>(
        &self,
        what: &str,
        limit: Duration,
        f: impl FnMut() -> Result<T, String>,
    ) -> T {
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| eventually(what, limit, f)));
        outcome.unwrap_or_else(|panic| {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(LOG_TAIL).collect();
            eprintln!("server log (last lines):");
            tail.iter().rev().for_each(|l| eprintln!("{l}"));
            std::panic::resume_unwind(panic)
        })
    }

    /// Sends `method path` with an optional JSON body; returns the status and the JSON answer.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.rt.block_on(self.api.json(method, path, body))
    }

    /// GETs `path`, which must answer 200.
    pub fn get(&self, path: &str) -> Value {
        let (status, body) = self.call("GET", path, None);
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// POSTs `object` to the collection `path`, which must accept it; returns what was stored.
    pub fn create(&self, path: &str, object: &Value) -> Value {
        let (status, body) = self.call("POST", path, Some(object));
        assert!(matches!(status, 200 | 201), "POST {path}: {status} {body}");
        body
    }

    /// Sends `patch` as a JSON merge patch to `path`; returns the status and the answer's text.
    pub fn try_merge_patch(&self, path: &str, patch: &Value) -> (u16, String) {
        let body = serde_json::to_vec(patch).unwrap();
        let ct = Some("application/merge-patch+json");
        let resp = self.rt.block_on(self.api.request("PATCH", path, ct, &body)).unwrap();
        (resp.status, String::from_utf8_lossy(&resp.body).into_owned())
    }

    /// Merge-patches `path`, which must answer 200.
    pub fn merge_patch(&self, path: &str, patch: &Value) {
        let (status, body) = self.try_merge_patch(path, patch);
        assert_eq!(status, 200, "PATCH {path}: {body}");
    }

    /// Registers the Node `name` as an agent would: Ready, with room for 110 pods, the
    /// `kubernetes.io/hostname` label besides `labels`, and `taints`. The status is written
    /// again through `nodes/status`, whether or not create kept it.
    pub fn create_node(&self, name: &str, labels: Value, taints: Value) {
        let status = json!({
            "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "ready", "lastHeartbeatTime": "2025-01-01T00:00:00Z",
                            "lastTransitionTime": "2025-01-01T00:00:00Z"}],
        });
        let mut all_labels = json!({"kubernetes.io/hostname": name});
        if let Some(extra) = labels.as_object() {
            all_labels.as_object_mut().unwrap().extend(extra.clone());
        }
        let node = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": all_labels},
            "spec": {"taints": taints},
            "status": status,
        });
        let (code, body) = self.call("POST", "/api/v1/nodes", Some(&node));
        assert_eq!(code, 201, "POST node {name}: {body}");
        self.merge_patch(&format!("/api/v1/nodes/{name}/status"), &json!({"status": status}));
    }

    /// Merge-patches the status of the pod `pod` through `pods/status`, as an agent reports
    /// it. A pod deleted meanwhile (404) is fine.
    pub fn patch_pod_status(&self, pod: &str, status: &Value) {
        let path = format!("/api/v1/namespaces/{NS}/pods/{pod}/status");
        let (code, body) = self.try_merge_patch(&path, &json!({"status": status}));
        assert!(matches!(code, 200 | 404), "{path}: {code} {body}");
    }

    /// Writes the status of a pod whose containers started: `phase`, and its ContainersReady
    /// and Ready conditions as `ready` says.
    pub fn set_pod_phase(&self, pod: &str, phase: &str, ready: bool) {
        self.patch_pod_status(pod, &pod_status(phase, ready, LONG_AGO));
    }

    /// Writes the status an agent reports for a started, ready pod: Running and Ready.
    pub fn mark_ready(&self, pod: &str) {
        self.set_pod_phase(pod, "Running", true);
    }

    /// Finishes the deletion of the terminating pod `pod` (grace period 0), what an agent does
    /// once its containers stopped. A pod already gone is fine.
    pub fn finish_deletion(&self, pod: &str) {
        let path = format!("/api/v1/namespaces/{NS}/pods/{pod}?gracePeriodSeconds=0");
        let (status, body) = self.call("DELETE", &path, None);
        assert!(matches!(status, 200 | 404), "DELETE {path}: {body}");
    }

    /// The messages of the Events with `reason` about the `kind` object `name`.
    pub fn events(&self, kind: &str, name: &str, reason: &str) -> Vec<String> {
        let list = self.get(&format!("/api/v1/namespaces/{NS}/events"));
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| {
                e["reason"] == reason
                    && e["involvedObject"]["kind"] == kind
                    && e["involvedObject"]["name"] == name
            })
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

/// A pod status as an agent writes it for started containers: `phase`, Initialized, and
/// ContainersReady and Ready as `ready` says, all changed at `since`.
pub fn pod_status(phase: &str, ready: bool, since: &str) -> Value {
    let flag = if ready { "True" } else { "False" };
    json!({
        "phase": phase,
        "conditions": [
            {"type": "Initialized", "status": "True", "lastTransitionTime": since},
            {"type": "ContainersReady", "status": flag, "lastTransitionTime": since},
            {"type": "Ready", "status": flag, "lastTransitionTime": since},
        ],
    })
}

/// Whether `pod` has the Ready condition True.
pub fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}
