//! The Job, CronJob and TTL-after-finished controllers against the real `skerry server`, driven
//! by kubectl 1.32 where it is natural (`create -f`, `wait --for=condition=complete`,
//! `create job --from=cronjob/…`). There is no agent: the test creates a Ready Node object and
//! writes pod status (phase Succeeded/Failed with terminated container exit codes) through
//! `pods/status` as an agent would. The node lifecycle controller is disabled: nobody renews
//! the node's Lease, and its taints would evict the pods on their own.

mod common;

use std::ops::Deref;
use std::time::Duration;

use common::cluster::Cluster;
use common::server::{ok, SkerryServer};
use serde_json::{json, Value};

const NS: &str = "default";
const LIMIT: Duration = Duration::from_secs(60);

/// The shared [`Cluster`] view plus kubectl, owning the server (with one Ready node, `n1`).
struct BatchCluster {
    server: SkerryServer,
    kubectl: std::path::PathBuf,
    cluster: Cluster,
}

impl Deref for BatchCluster {
    type Target = Cluster;

    fn deref(&self) -> &Cluster {
        &self.cluster
    }
}

impl BatchCluster {
    /// Starts the server (without the node lifecycle controller) and registers `n1`; `None`
    /// without kubectl.
    fn start() -> Option<BatchCluster> {
        let kubectl = skerry_testkit::kubectl()?;
        let server = SkerryServer::start_with(&["--disable-controllers", "nodelifecycle"]);
        let cluster = Cluster::new(&server, LIMIT);
        cluster.create_node("n1", json!({}), json!([]));
        Some(BatchCluster { server, kubectl, cluster })
    }

    fn kubectl(&self, args: &[&str]) -> String {
        ok(self.server.kubectl(&self.kubectl, args), &args.join(" "))
    }

    fn apply(&self, yaml: &str) -> String {
        let out = self.server.kubectl_stdin(&self.kubectl, &["create", "-f", "-"], Some(yaml));
        ok(out, "create -f -")
    }

    fn job(&self, name: &str) -> Value {
        self.get(&format!("/apis/batch/v1/namespaces/{NS}/jobs/{name}"))
    }

    /// The pods of Job `name` (by the label the API server puts on its template).
    fn pods(&self, job: &str) -> Vec<Value> {
        let path = format!(
            "/api/v1/namespaces/{NS}/pods?labelSelector=batch.kubernetes.io%2Fjob-name%3D{job}"
        );
        let list = self.get(&path);
        list["items"].as_array().cloned().unwrap_or_default()
    }

    /// Pods of `job` that have not finished.
    fn running(&self, job: &str) -> Vec<Value> {
        self.pods(job)
            .into_iter()
            .filter(|p| !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")))
            .collect()
    }

    /// Waits until `job` has `count` unfinished pods.
    fn wait_running(&self, job: &str, count: usize) -> Vec<Value> {
        self.eventually(&format!("{job} runs {count} pods"), || {
            let pods = self.running(job);
            if pods.len() == count {
                Ok(pods)
            } else {
                Err(format!("{} running: {}", pods.len(), Value::Array(pods)))
            }
        })
    }

    /// Writes the status of a pod whose only container exited with `exit_code`.
    fn finish(&self, pod: &Value, exit_code: i32) {
        let name = pod["metadata"]["name"].as_str().unwrap();
        let now = k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        let phase = if exit_code == 0 { "Succeeded" } else { "Failed" };
        let reason = if exit_code == 0 { "Completed" } else { "Error" };
        let status = json!({
            "phase": phase,
            "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now}],
            "containerStatuses": [{
                "name": "c", "ready": false, "restartCount": 0, "image": "busybox", "imageID": "",
                "state": {"terminated": {"exitCode": exit_code, "reason": reason,
                                         "startedAt": now, "finishedAt": now}},
            }],
        });
        self.patch_pod_status(name, &status);
    }

    /// The condition `type_` of Job `name`.
    fn condition(&self, name: &str, type_: &str) -> Value {
        let job = self.job(name);
        let conditions = job["status"]["conditions"].as_array().cloned().unwrap_or_default();
        conditions.into_iter().find(|c| c["type"] == type_).unwrap_or(Value::Null)
    }

    /// Waits until Job `name` has condition `type_` True.
    fn wait_condition(&self, name: &str, type_: &str) -> Value {
        self.eventually(&format!("{name} is {type_}"), || {
            let c = self.condition(name, type_);
            if c["status"] == "True" {
                Ok(c)
            } else {
                Err(format!("{}", self.job(name)["status"]))
            }
        })
    }
}

fn job_yaml(name: &str, spec: &str) -> String {
    format!(
        r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
spec:
{spec}
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: c
        image: busybox
"#
    )
}

fn has_tracking_finalizer(pod: &Value) -> bool {
    pod["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| f.iter().any(|f| f == "batch.kubernetes.io/job-tracking"))
}

#[test]
fn completions_and_parallelism_then_ttl_deletes_the_job() {
    let Some(c) = BatchCluster::start() else { return };
    c.apply(&job_yaml("work", "  completions: 3\n  parallelism: 2"));

    // Two pods at a time, labelled, owned and carrying the tracking finalizer.
    let pods = c.wait_running("work", 2);
    let job = c.job("work");
    let uid = job["metadata"]["uid"].as_str().unwrap();
    for p in &pods {
        let labels = &p["metadata"]["labels"];
        assert_eq!(labels["batch.kubernetes.io/controller-uid"], uid);
        assert_eq!(labels["batch.kubernetes.io/job-name"], "work");
        assert_eq!(labels["controller-uid"], uid);
        assert_eq!(labels["job-name"], "work");
        let owner = &p["metadata"]["ownerReferences"][0];
        assert_eq!(
            (owner["kind"].as_str(), owner["controller"].as_bool()),
            (Some("Job"), Some(true))
        );
        assert_eq!(owner["uid"], uid);
        assert!(has_tracking_finalizer(p), "{p}");
    }
    c.eventually("active 2", || {
        let status = c.job("work")["status"].clone();
        (status["active"] == 2 && status["startTime"].is_string())
            .then_some(())
            .ok_or(status.to_string())
    });

    // One succeeds: it is counted, its finalizer released, and a third pod replaces it.
    c.finish(&pods[0], 0);
    c.eventually("one counted and a third pod", || {
        let status = c.job("work")["status"].clone();
        let running = c.running("work").len();
        (status["succeeded"] == 1 && running == 2)
            .then_some(())
            .ok_or(format!("{status}, {running} running"))
    });
    let done = c.get(&format!(
        "/api/v1/namespaces/{NS}/pods/{}",
        pods[0]["metadata"]["name"].as_str().unwrap()
    ));
    assert!(!has_tracking_finalizer(&done), "a counted pod keeps no finalizer: {done}");
    assert_eq!(c.pods("work").len(), 3, "never more than completions pods");

    for p in c.running("work") {
        c.finish(&p, 0);
    }
    c.kubectl(&["wait", "--for=condition=complete", "job/work", "--timeout=60s"]);
    let job = c.job("work");
    let status = &job["status"];
    assert_eq!(status["succeeded"], 3, "{status}");
    assert!(status["active"].is_null() || status["active"] == 0, "{status}");
    assert_eq!(status["uncountedTerminatedPods"], json!({}), "{status}");
    assert!(status["completionTime"].is_string(), "{status}");
    let met = c.condition("work", "SuccessCriteriaMet");
    assert_eq!(
        (met["status"].as_str(), met["reason"].as_str()),
        (Some("True"), Some("CompletionsReached"))
    );
    assert!(c.pods("work").iter().all(|p| !has_tracking_finalizer(p)));
    assert_eq!(c.events("Job", "work", "SuccessfulCreate").len(), 3);
    assert_eq!(c.events("Job", "work", "Completed"), vec!["Job completed".to_string()]);

    // TTL 0: a finished Job is deleted right away, and its pods with it.
    c.apply(&job_yaml("short", "  ttlSecondsAfterFinished: 0"));
    let pods = c.wait_running("short", 1);
    c.finish(&pods[0], 0);
    c.eventually("short is deleted", || {
        let (code, body) =
            c.call("GET", &format!("/apis/batch/v1/namespaces/{NS}/jobs/short"), None);
        (code == 404).then_some(()).ok_or(format!("{code}: {}", body["status"]))
    });
    c.eventually("its pods are deleted", || {
        let left = c.pods("short");
        left.is_empty().then_some(()).ok_or(format!("{left:?}"))
    });
    // The Job without a TTL stays.
    assert_eq!(c.job("work")["metadata"]["name"], "work");
}

#[test]
fn failures_hit_the_backoff_limit_and_failure_policy() {
    let Some(c) = BatchCluster::start() else { return };
    c.apply(&job_yaml("flaky", "  backoffLimit: 1"));
    let first = c.wait_running("flaky", 1);
    c.finish(&first[0], 1);
    // One failure is within the limit: after the backoff (10 s) a replacement starts.
    let second = c.eventually("a replacement pod", || {
        let status = c.job("flaky")["status"].clone();
        let running = c.running("flaky");
        (status["failed"] == 1 && running.len() == 1)
            .then(|| running[0].clone())
            .ok_or(format!("{status}"))
    });
    assert_ne!(second["metadata"]["name"], first[0]["metadata"]["name"]);
    c.finish(&second, 1);
    let failed = c.wait_condition("flaky", "Failed");
    assert_eq!(failed["reason"], "BackoffLimitExceeded");
    assert_eq!(failed["message"], "Job has reached the specified backoff limit");
    let target = c.condition("flaky", "FailureTarget");
    assert_eq!(
        (target["status"].as_str(), target["reason"].as_str()),
        (Some("True"), Some("BackoffLimitExceeded"))
    );
    let status = c.job("flaky")["status"].clone();
    assert_eq!(status["failed"], 2, "{status}");
    assert!(status["completionTime"].is_null(), "{status}");
    assert_eq!(c.pods("flaky").len(), 2, "no pod after the limit");
    assert!(c.pods("flaky").iter().all(|p| !has_tracking_finalizer(p)));
    assert_eq!(
        c.events("Job", "flaky", "BackoffLimitExceeded"),
        vec!["Job has reached the specified backoff limit".to_string()]
    );

    // A FailJob rule fails the Job on the first matching exit code, whatever the limit.
    let policy = "  backoffLimit: 6\n  podFailurePolicy:\n    rules:\n    - action: FailJob\n      \
                  onExitCodes:\n        containerName: c\n        operator: In\n        values: [42]";
    c.apply(&job_yaml("strict", policy));
    let pods = c.wait_running("strict", 1);
    c.finish(&pods[0], 42);
    let failed = c.wait_condition("strict", "Failed");
    assert_eq!(failed["reason"], "PodFailurePolicy");
    let message = format!(
        "Container c for pod {NS}/{} failed with exit code 42 matching FailJob rule at index 0",
        pods[0]["metadata"]["name"].as_str().unwrap()
    );
    assert_eq!(failed["message"], message.as_str());
    assert_eq!(c.pods("strict").len(), 1);
}

#[test]
fn indexed_job_completes_every_index() {
    let Some(c) = BatchCluster::start() else { return };
    c.apply(&job_yaml("idx", "  completions: 3\n  parallelism: 3\n  completionMode: Indexed"));
    let pods = c.wait_running("idx", 3);
    let mut by_index = std::collections::BTreeMap::new();
    for p in &pods {
        let index = p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"],
            index.as_str()
        );
        assert_eq!(p["spec"]["hostname"], format!("idx-{index}"));
        let name = p["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with(&format!("idx-{index}-")), "{name}");
        let env = &p["spec"]["containers"][0]["env"][0];
        assert_eq!(env["name"], "JOB_COMPLETION_INDEX");
        by_index.insert(index, p.clone());
    }
    assert_eq!(by_index.keys().cloned().collect::<Vec<_>>(), vec!["0", "1", "2"]);

    c.finish(&by_index["2"], 0);
    c.finish(&by_index["0"], 0);
    c.eventually("indexes 0 and 2 completed", || {
        let status = c.job("idx")["status"].clone();
        (status["completedIndexes"] == "0,2" && status["succeeded"] == 2)
            .then_some(())
            .ok_or(status.to_string())
    });
    // A failed index is replaced by a pod with the same index.
    c.finish(&by_index["1"], 1);
    let replacement = c.eventually("index 1 replaced", || {
        let running = c.running("idx");
        running.first().cloned().ok_or("no replacement yet".to_string())
    });
    assert_eq!(
        replacement["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"],
        "1"
    );
    c.finish(&replacement, 0);
    c.kubectl(&["wait", "--for=condition=complete", "job/idx", "--timeout=60s"]);
    let status = c.job("idx")["status"].clone();
    assert_eq!(
        (status["completedIndexes"].as_str(), status["succeeded"].as_i64()),
        (Some("0-2"), Some(3))
    );
    assert_eq!(status["failed"], 1, "{status}");
}

#[test]
fn cronjob_runs_on_schedule_and_keeps_its_history() {
    let Some(c) = BatchCluster::start() else { return };
    c.apply(
        r#"
apiVersion: batch/v1
kind: CronJob
metadata:
  name: tick
spec:
  schedule: "*/1 * * * *"
  successfulJobsHistoryLimit: 1
  jobTemplate:
    metadata:
      labels: {app: tick}
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
          - name: c
            image: busybox
"#,
    );
    let cronjob = c.get(&format!("/apis/batch/v1/namespaces/{NS}/cronjobs/tick"));
    let cj_uid = cronjob["metadata"]["uid"].as_str().unwrap().to_string();
    // The next minute boundary: at most ~60 s away.
    let scheduled = c.eventually_within("the first scheduled job", Duration::from_secs(90), || {
        let list = c.get(&format!("/apis/batch/v1/namespaces/{NS}/jobs?labelSelector=app%3Dtick"));
        let jobs = list["items"].as_array().cloned().unwrap_or_default();
        jobs.into_iter().next().ok_or("no job yet".to_string())
    });
    let name = scheduled["metadata"]["name"].as_str().unwrap().to_string();
    let stamp = scheduled["metadata"]["annotations"]
        ["batch.kubernetes.io/cronjob-scheduled-timestamp"]
        .as_str()
        .unwrap()
        .to_string();
    let at: k8s_openapi::jiff::Timestamp = stamp.parse().unwrap();
    assert_eq!(at.as_second() % 60, 0, "activations are on the minute: {stamp}");
    assert_eq!(name, format!("tick-{}", at.as_second() / 60));
    let owner = &scheduled["metadata"]["ownerReferences"][0];
    assert_eq!(
        (owner["kind"].as_str(), owner["uid"].as_str()),
        (Some("CronJob"), Some(cj_uid.as_str()))
    );
    let status = c.eventually("the job is active", || {
        let status =
            c.get(&format!("/apis/batch/v1/namespaces/{NS}/cronjobs/tick"))["status"].clone();
        (status["active"][0]["name"] == name.as_str())
            .then_some(status.clone())
            .ok_or(status.to_string())
    });
    let last: k8s_openapi::jiff::Timestamp =
        status["lastScheduleTime"].as_str().unwrap().parse().unwrap();
    assert_eq!(last, at);
    assert!(c
        .events("CronJob", "tick", "SuccessfulCreate")
        .contains(&format!("Created job {name}")));

    // Its pod succeeds: the job completes and leaves the active list.
    let pods = c.wait_running(&name, 1);
    c.finish(&pods[0], 0);
    c.kubectl(&["wait", "--for=condition=complete", &format!("job/{name}"), "--timeout=60s"]);
    c.eventually("lastSuccessfulTime", || {
        let status =
            c.get(&format!("/apis/batch/v1/namespaces/{NS}/cronjobs/tick"))["status"].clone();
        (status["lastSuccessfulTime"].is_string()
            && !status["active"]
                .as_array()
                .is_some_and(|a| a.iter().any(|r| r["name"] == name.as_str())))
        .then_some(())
        .ok_or(status.to_string())
    });

    // A manual run from the template (kubectl posts the Job in protobuf); once it completes,
    // the history limit of 1 deletes the older successful job.
    let out = c.kubectl(&["create", "job", "manual", "--from=cronjob/tick"]);
    assert!(out.contains("job.batch/manual created"), "{out}");
    let pods = c.wait_running("manual", 1);
    c.finish(&pods[0], 0);
    // The older of the two (by start time, then name) goes; equal start times are common here.
    let kept = c.eventually("one successful job is kept", || {
        let exists = |job: &str| {
            let path = format!("/apis/batch/v1/namespaces/{NS}/jobs/{job}");
            c.call("GET", &path, None).0 == 200
        };
        match (exists(&name), exists("manual")) {
            (true, false) => Ok(name.clone()),
            (false, true) => Ok("manual".to_string()),
            both => Err(format!("{name} and manual exist: {both:?}")),
        }
    });
    let deleted = if kept == name { "manual".to_string() } else { name.clone() };
    assert_eq!(
        c.events("CronJob", "tick", "SuccessfulDelete"),
        vec![format!("Deleted job {deleted}")]
    );
    let kept = c.job(&kept);
    assert_eq!(kept["status"]["succeeded"], 1, "{kept}");
}

/// The pod of `job` running completion index `index`.
fn running_index(c: &BatchCluster, job: &str, index: &str) -> Value {
    c.eventually(&format!("{job} runs index {index}"), || {
        c.running(job)
            .into_iter()
            .find(|p| {
                p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] == index
            })
            .ok_or_else(|| format!("{}", c.job(job)["status"]))
    })
}

#[test]
fn backoff_limit_per_index_fails_indexes_not_the_job() {
    let Some(c) = BatchCluster::start() else { return };
    // More failed indexes than maxFailedIndexes fail the Job at once and stop the rest.
    let spec = "  completions: 3\n  parallelism: 3\n  completionMode: Indexed\n  \
                backoffLimitPerIndex: 0\n  maxFailedIndexes: 0";
    c.apply(&job_yaml("capped", spec));
    c.wait_running("capped", 3);
    c.finish(&running_index(&c, "capped", "1"), 1);
    c.eventually("capped's other pods are deleted", || {
        let left = c.running("capped");
        if left.iter().all(|p| !p["metadata"]["deletionTimestamp"].is_null()) {
            left.iter().for_each(|p| c.finish(p, 137));
            Ok(())
        } else {
            Err(format!("{}", Value::Array(left)))
        }
    });
    let failed = c.wait_condition("capped", "Failed");
    assert_eq!(failed["reason"], "MaxFailedIndexesExceeded");
    assert_eq!(
        failed["message"],
        "Job has exceeded the specified maximal number of failed indexes"
    );
    assert_eq!(c.job("capped")["status"]["failedIndexes"], "1");

    // One retry per index; exit code 42 fails the index without one. The Job runs every index
    // and fails at the end with the failed ones listed.
    let spec = "  completions: 3\n  parallelism: 3\n  completionMode: Indexed\n  \
                backoffLimitPerIndex: 1\n  podFailurePolicy:\n    rules:\n    - action: FailIndex\n      \
                onExitCodes:\n        operator: In\n        values: [42]";
    c.apply(&job_yaml("per-index", spec));
    c.wait_running("per-index", 3);
    let first = running_index(&c, "per-index", "1");
    assert_eq!(
        first["metadata"]["annotations"]["batch.kubernetes.io/job-index-failure-count"],
        "0"
    );
    c.finish(&running_index(&c, "per-index", "0"), 42);
    c.finish(&first, 1);
    c.eventually("index 0 failed", || {
        let status = c.job("per-index")["status"].clone();
        (status["failedIndexes"] == "0").then_some(()).ok_or(status.to_string())
    });
    // Index 1 is retried after its backoff (10 s), by a pod that carries the failure count;
    // the failed pod keeps its finalizer until then.
    let retry = c.eventually("index 1 retried", || {
        let running = c.running("per-index");
        running
            .into_iter()
            .find(|p| p["metadata"]["name"] != first["metadata"]["name"])
            .filter(|p| {
                p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] == "1"
            })
            .ok_or_else(|| "no retry yet".to_string())
    });
    assert_eq!(
        retry["metadata"]["annotations"]["batch.kubernetes.io/job-index-failure-count"],
        "1"
    );
    assert!(
        c.running("per-index").iter().all(|p| {
            p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] != "0"
        }),
        "a failed index is not retried"
    );
    c.finish(&running_index(&c, "per-index", "2"), 0);
    c.finish(&retry, 1);
    let failed = c.wait_condition("per-index", "Failed");
    assert_eq!(failed["reason"], "FailedIndexes");
    assert_eq!(failed["message"], "Job has failed indexes");
    let status = c.job("per-index")["status"].clone();
    assert_eq!(
        (status["failedIndexes"].as_str(), status["completedIndexes"].as_str()),
        (Some("0,1"), Some("2")),
        "{status}"
    );
    assert_eq!((status["failed"].as_i64(), status["succeeded"].as_i64()), (Some(3), Some(1)));
    assert!(c.pods("per-index").iter().all(|p| !has_tracking_finalizer(p)));
}

#[test]
fn success_policy_completes_the_job_early() {
    let Some(c) = BatchCluster::start() else { return };
    let spec = "  completions: 4\n  parallelism: 4\n  completionMode: Indexed\n  \
                successPolicy:\n    rules:\n    - succeededIndexes: \"0,3\"\n    \
                - succeededCount: 2\n      succeededIndexes: \"1-2\"";
    c.apply(&job_yaml("leader", spec));
    c.wait_running("leader", 4);
    c.finish(&running_index(&c, "leader", "0"), 0);
    c.finish(&running_index(&c, "leader", "1"), 0);
    // Neither rule is met yet: nothing stops.
    c.eventually("indexes 0 and 1 counted", || {
        let status = c.job("leader")["status"].clone();
        (status["completedIndexes"] == "0,1").then_some(()).ok_or(status.to_string())
    });
    assert!(c.condition("leader", "SuccessCriteriaMet").is_null());
    assert_eq!(c.running("leader").len(), 2);
    c.finish(&running_index(&c, "leader", "3"), 0);
    let met = c.wait_condition("leader", "SuccessCriteriaMet");
    assert_eq!(
        (met["reason"].as_str(), met["message"].as_str()),
        (Some("SuccessPolicy"), Some("Matched rules at index 0"))
    );
    // The remaining pod is terminated; once it is gone the Job is Complete.
    let left = c.eventually("index 2 is deleted", || {
        let pod = running_index(&c, "leader", "2");
        (!pod["metadata"]["deletionTimestamp"].is_null())
            .then_some(pod)
            .ok_or("not yet".to_string())
    });
    c.finish(&left, 137);
    let complete = c.wait_condition("leader", "Complete");
    assert_eq!(
        (complete["reason"].as_str(), complete["message"].as_str()),
        (Some("SuccessPolicy"), Some("Matched rules at index 0"))
    );
    let status = c.job("leader")["status"].clone();
    assert_eq!(
        (status["completedIndexes"].as_str(), status["succeeded"].as_i64()),
        (Some("0,1,3"), Some(3)),
        "{status}"
    );
    assert!(!status["completionTime"].is_null());
}
