//! Resource usage of this node and its containers — what the kubelet's `/metrics/resource` and
//! summary API give metrics-server — for the API server's `metrics.k8s.io` (`kubectl top`) and
//! the agent's Prometheus `/metrics`.
//!
//! [`UsageCollector::run`] reads every running container's cgroup and the node's `/proc` every
//! [`rate::SAMPLE_PERIOD`] (10 s) in the background; [`UsageCollector::report`] reads them
//! again on request and turns the cumulative CPU counters into rates over the window since the
//! last background reading (see [`rate`]). Both are served over the agent tunnel by the
//! streaming server: `GET /stats/resource` (JSON, [`Report`]) and `GET /metrics` or
//! `/metrics/resource` (Prometheus text, [`prometheus`]).

pub mod cgroup;
pub mod prometheus;
pub mod rate;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use skerry_runtime::{ContainerState, Runtime};

use crate::pods::naming;
use cgroup::CgroupReader;
use rate::{History, Sample, SAMPLE_PERIOD};

/// The history key of the node itself (container ids are never empty).
const NODE_KEY: &str = "";

/// A pod's namespace and name, by pod UID.
pub type PodNames = HashMap<String, (String, String)>;

/// Usage of the node: cumulative CPU time, working set, and the CPU rate once there is one.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeUsage {
    /// When the reading was taken (RFC 3339): the end of the window.
    pub timestamp: String,
    /// The window of `cpuUsageNanoCores`, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_usage_nano_cores: Option<u64>,
    pub cpu_usage_core_nano_seconds: u64,
    pub memory_working_set_bytes: u64,
}

/// Usage of one running container (the same fields as the node's).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerUsage {
    pub name: String,
    #[serde(flatten)]
    pub usage: NodeUsage,
}

/// The running containers of one pod.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodUsage {
    pub uid: String,
    /// Empty when the pod is no longer in the agent's cache (being torn down).
    pub namespace: String,
    pub name: String,
    pub containers: Vec<ContainerUsage>,
}

/// The answer of `GET /stats/resource`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Absent when `/proc` could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeUsage>,
    /// Pods by namespace and name.
    pub pods: Vec<PodUsage>,
}

/// A running container to read: its runtime id, pod, name and cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    id: String,
    pod_uid: String,
    container: String,
    cgroup_path: String,
}

/// Readings of the node and of containers, taken at one moment.
struct Round {
    node: Option<Sample>,
    containers: Vec<(Target, Sample)>,
}

/// Samples cgroup usage in the background and answers usage reports.
pub struct UsageCollector {
    runtime: Arc<Runtime>,
    reader: CgroupReader,
    history: Mutex<History>,
}

impl std::fmt::Debug for UsageCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageCollector").field("reader", &self.reader).finish_non_exhaustive()
    }
}

impl UsageCollector {
    /// A collector of `runtime`'s containers on the host's cgroup version.
    pub fn new(runtime: Arc<Runtime>) -> UsageCollector {
        let reader = CgroupReader::host(runtime.cgroups().version());
        UsageCollector { runtime, reader, history: Mutex::default() }
    }

    /// Records a reading of everything every [`SAMPLE_PERIOD`], forever.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(SAMPLE_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let me = self.clone();
            // File reads: off the async workers.
            if let Err(err) = tokio::task::spawn_blocking(move || me.sample()).await {
                tracing::warn!(%err, "usage sampling failed");
            }
        }
    }

    /// Takes and records one round of readings.
    pub fn sample(&self) {
        let round = self.read_round();
        let mut entries: Vec<(String, Sample)> =
            round.containers.into_iter().map(|(t, s)| (t.id, s)).collect();
        entries.extend(round.node.map(|s| (NODE_KEY.to_string(), s)));
        self.history.lock().unwrap_or_else(|p| p.into_inner()).record(entries);
    }

    /// Current usage, with CPU rates since the last recorded readings; `names` labels the pods.
    /// Blocking (reads files).
    pub fn report(&self, names: &PodNames) -> Report {
        let round = self.read_round();
        let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        build_report(round, &history, names, chrono::Utc::now())
    }

    /// The running containers of the runtime, with the pod they belong to.
    fn targets(&self) -> Vec<Target> {
        self.runtime
            .list_containers()
            .into_iter()
            .filter(|c| c.state == ContainerState::Running)
            .filter_map(|c| {
                // Only containers the agent made (`<uid>_<name>_<attempt>`) belong to pods.
                let (uid, name, _) = naming::parse_container_name(&c.name)?;
                Some(Target {
                    pod_uid: uid.to_string(),
                    container: name.to_string(),
                    id: c.id.clone(),
                    cgroup_path: c.cgroup_path.clone(),
                })
            })
            .collect()
    }

    fn read_round(&self) -> Round {
        let node = match self.reader.node() {
            Ok(usage) => Some(Sample { at: Instant::now(), usage }),
            Err(err) => {
                tracing::debug!(%err, "cannot read node usage");
                None
            }
        };
        let containers = self
            .targets()
            .into_iter()
            .filter_map(|target| match self.reader.cgroup(&target.cgroup_path) {
                Ok(usage) => Some((target, Sample { at: Instant::now(), usage })),
                // A container that exited since the listing: its cgroup is gone.
                Err(err) => {
                    tracing::debug!(%err, container = %target.id, "cannot read container usage");
                    None
                }
            })
            .collect();
        Round { node, containers }
    }
}

/// The usage of one reading, with its rate against the history.
fn usage_of(key: &str, now: &Sample, history: &History, wall: &str) -> NodeUsage {
    let rate = history.rate(key, now);
    NodeUsage {
        timestamp: wall.to_string(),
        window_seconds: rate.map(|r| r.window.as_secs_f64()),
        cpu_usage_nano_cores: rate.map(|r| r.nano_cores),
        cpu_usage_core_nano_seconds: now.usage.cpu_ns,
        memory_working_set_bytes: now.usage.working_set_bytes,
    }
}

/// Groups a round of readings by pod, with rates against `history`.
fn build_report(
    round: Round,
    history: &History,
    names: &PodNames,
    wall: chrono::DateTime<chrono::Utc>,
) -> Report {
    let wall = wall.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let node = round.node.map(|now| usage_of(NODE_KEY, &now, history, &wall));
    let mut pods: HashMap<String, PodUsage> = HashMap::new();
    for (target, now) in round.containers {
        let pod = pods.entry(target.pod_uid.clone()).or_insert_with(|| {
            let (namespace, name) = names.get(&target.pod_uid).cloned().unwrap_or_default();
            PodUsage { uid: target.pod_uid.clone(), namespace, name, containers: Vec::new() }
        });
        let usage = usage_of(&target.id, &now, history, &wall);
        pod.containers.push(ContainerUsage { name: target.container, usage });
    }
    let mut pods: Vec<PodUsage> = pods.into_values().collect();
    for pod in &mut pods {
        pod.containers.sort_by(|a, b| a.name.cmp(&b.name));
    }
    pods.sort_by(|a, b| (&a.namespace, &a.name, &a.uid).cmp(&(&b.namespace, &b.name, &b.uid)));
    Report { node, pods }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::cgroup::Usage;
    use super::*;

    fn target(id: &str, uid: &str, container: &str) -> Target {
        let cgroup_path = format!("/kubepods/pod{uid}/{id}");
        Target { id: id.into(), pod_uid: uid.into(), container: container.into(), cgroup_path }
    }

    fn sample(at: Instant, cpu_ns: u64, working_set_bytes: u64) -> Sample {
        Sample { at, usage: Usage { cpu_ns, working_set_bytes } }
    }

    #[test]
    fn report_groups_containers_by_pod_with_rates_where_history_allows() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(10);
        let mut history = History::default();
        history.record([
            (NODE_KEY.to_string(), sample(t0, 1_000_000_000, 0)),
            ("c1".to_string(), sample(t0, 0, 0)),
        ]);
        let round = Round {
            node: Some(sample(t1, 21_000_000_000, 4096)),
            containers: vec![
                (target("c2", "u1", "side"), sample(t1, 5, 1024)),
                (target("c1", "u1", "app"), sample(t1, 5_000_000_000, 2048)),
                (target("c3", "u2", "new"), sample(t1, 7, 512)),
            ],
        };
        let names: PodNames =
            [("u1".to_string(), ("default".to_string(), "web".to_string()))].into_iter().collect();
        let wall = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let report = build_report(round, &history, &names, wall);
        let node = report.node.unwrap();
        assert_eq!(node.cpu_usage_nano_cores, Some(2_000_000_000));
        assert_eq!(node.window_seconds, Some(10.0));
        assert_eq!(node.timestamp, "2023-11-14T22:13:20Z");
        // The unnamed pod (not in the cache) sorts first; containers sort by name.
        let pods: Vec<(&str, &str)> =
            report.pods.iter().map(|p| (p.uid.as_str(), p.name.as_str())).collect();
        assert_eq!(pods, [("u2", ""), ("u1", "web")]);
        let web = &report.pods[1];
        assert_eq!(web.namespace, "default");
        let app = &web.containers[0];
        assert_eq!(app.name, "app");
        assert_eq!(app.usage.cpu_usage_nano_cores, Some(500_000_000));
        assert_eq!(app.usage.memory_working_set_bytes, 2048);
        // "side" has no earlier reading: cumulative figures only, no rate.
        assert_eq!(web.containers[1].usage.cpu_usage_nano_cores, None);
        assert_eq!(web.containers[1].usage.cpu_usage_core_nano_seconds, 5);
        let json = serde_json::to_value(&web.containers[1]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"name": "side", "timestamp": "2023-11-14T22:13:20Z",
                "cpuUsageCoreNanoSeconds": 5, "memoryWorkingSetBytes": 1024})
        );
    }
}
