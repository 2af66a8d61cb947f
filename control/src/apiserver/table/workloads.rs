//! Printers for the workload controllers: deployments, replicasets, statefulsets, daemonsets,
//! jobs, cronjobs, replicationcontrollers, HPAs, PDBs, controllerrevisions and podtemplates —
//! the columns of the reference's printers, wide CONTAINERS / IMAGES / SELECTOR included.

use serde_json::{json, Value};

use super::format::{
    age, containers_and_images, format_labels, format_selector, get, human_duration, int, list,
    parse_time, selector_string, since, text,
};
use super::{Col, Printer, AGE, CONTAINERS, IMAGES, NAME};

const SELECTOR: Col = ("Selector", "string", "", 1, "Label selector of the pods it manages.");

const DEPLOYMENT: &[Col] = &[
    NAME,
    ("Ready", "string", "", 0, "Number of the pod with ready state"),
    ("Up-to-date", "string", "", 0, "Total number of pods with the desired template."),
    ("Available", "string", "", 0, "Total number of available pods."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

const REPLICAS: &[Col] = &[
    NAME,
    ("Desired", "integer", "", 0, "Number of desired pods."),
    ("Current", "integer", "", 0, "The most recently observed number of replicas."),
    ("Ready", "integer", "", 0, "The number of ready replicas."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

const STATEFULSET: &[Col] = &[
    NAME,
    ("Ready", "string", "", 0, "Number of the pod with ready state"),
    AGE,
    CONTAINERS,
    IMAGES,
];

const DAEMONSET: &[Col] = &[
    NAME,
    ("Desired", "integer", "", 0, "The number of nodes that should run the daemon pod."),
    ("Current", "integer", "", 0, "The number of nodes running at least one daemon pod."),
    ("Ready", "integer", "", 0, "The number of nodes with a ready daemon pod."),
    ("Up-to-date", "integer", "", 0, "The number of nodes running the updated daemon pod."),
    ("Available", "integer", "", 0, "The number of nodes with an available daemon pod."),
    ("Node Selector", "string", "", 0, "The node selector of the pod template."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

const JOB: &[Col] = &[
    NAME,
    ("Status", "string", "", 0, "Status of the job."),
    ("Completions", "string", "", 0, "The number of pods which reached phase Succeeded."),
    ("Duration", "string", "", 0, "Time required to complete the job."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

const CRONJOB: &[Col] = &[
    NAME,
    ("Schedule", "string", "", 0, "The schedule in Cron format."),
    ("Timezone", "string", "", 0, "The time zone name for the given schedule."),
    ("Suspend", "boolean", "", 0, "Whether subsequent executions are suspended."),
    ("Active", "integer", "", 0, "The number of currently running jobs."),
    ("Last Schedule", "string", "", 0, "When the job was last successfully scheduled."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

const HPA: &[Col] = &[
    NAME,
    ("Reference", "string", "", 0, "The target resource to scale."),
    ("Targets", "string", "", 0, "The metrics used to compute the desired replica count."),
    ("MinPods", "string", "", 0, "The lower limit for the number of replicas."),
    ("MaxPods", "string", "", 0, "The upper limit for the number of replicas."),
    ("Replicas", "string", "", 0, "The current number of replicas."),
    AGE,
];

const PDB: &[Col] = &[
    NAME,
    ("Min Available", "string", "", 0, "The minimum number of pods that must be available."),
    ("Max Unavailable", "string", "", 0, "The maximum number of pods that may be unavailable."),
    ("Allowed Disruptions", "integer", "", 0, "Number of pod disruptions currently allowed."),
    AGE,
];

const CONTROLLER_REVISION: &[Col] = &[
    NAME,
    ("Controller", "string", "", 0, "Controller of the object"),
    ("Revision", "string", "", 0, "Revision indicates the revision of the state represented."),
    AGE,
];

const POD_TEMPLATE: &[Col] = &[
    NAME,
    ("Containers", "string", "", 0, "Names of each container in the template."),
    ("Images", "string", "", 0, "Images referenced by each container in the template."),
    ("Pod Labels", "string", "", 0, "The labels for the pod template."),
];

/// The printer of a workload kind, if it is one.
pub(super) fn printer(group: &str, kind: &str) -> Option<(&'static [Col], Printer)> {
    let found: (&'static [Col], Printer) = match (group, kind) {
        ("apps", "Deployment") => (DEPLOYMENT, deployment),
        ("apps", "ReplicaSet") => (REPLICAS, replicaset),
        ("", "ReplicationController") => (REPLICAS, replication_controller),
        ("apps", "StatefulSet") => (STATEFULSET, statefulset),
        ("apps", "DaemonSet") => (DAEMONSET, daemonset),
        ("apps", "ControllerRevision") => (CONTROLLER_REVISION, controller_revision),
        ("batch", "Job") => (JOB, job),
        ("batch", "CronJob") => (CRONJOB, cronjob),
        ("autoscaling", "HorizontalPodAutoscaler") => (HPA, hpa),
        ("policy", "PodDisruptionBudget") => (PDB, pdb),
        ("", "PodTemplate") => (POD_TEMPLATE, pod_template),
        _ => return None,
    };
    Some(found)
}

fn name(obj: &Value) -> Value {
    json!(text(obj, &["metadata", "name"]))
}

/// The wide CONTAINERS and IMAGES cells of a pod template at `spec.template`.
fn template_cells(obj: &Value) -> [Value; 2] {
    let (names, images) = containers_and_images(get(obj, &["spec", "template", "spec"]));
    [json!(names), json!(images)]
}

fn deployment(d: &Value, now: i64) -> Vec<Value> {
    let [names, images] = template_cells(d);
    vec![
        name(d),
        json!(format!(
            "{}/{}",
            int(d, &["status", "readyReplicas"]),
            int(d, &["spec", "replicas"])
        )),
        json!(int(d, &["status", "updatedReplicas"])),
        json!(int(d, &["status", "availableReplicas"])),
        json!(age(d, now)),
        names,
        images,
        // The reference prints the selector string as is here: empty, not <none>.
        json!(selector_string(get(d, &["spec", "selector"]))),
    ]
}

fn replicaset(rs: &Value, now: i64) -> Vec<Value> {
    let [names, images] = template_cells(rs);
    vec![
        name(rs),
        json!(int(rs, &["spec", "replicas"])),
        json!(int(rs, &["status", "replicas"])),
        json!(int(rs, &["status", "readyReplicas"])),
        json!(age(rs, now)),
        names,
        images,
        json!(format_selector(get(rs, &["spec", "selector"]))),
    ]
}

fn replication_controller(rc: &Value, now: i64) -> Vec<Value> {
    let mut cells = replicaset(rc, now);
    // A ReplicationController's selector is a plain label map.
    cells[7] = json!(format_labels(get(rc, &["spec", "selector"])));
    cells
}

fn statefulset(sts: &Value, now: i64) -> Vec<Value> {
    let [names, images] = template_cells(sts);
    let ready = int(sts, &["status", "readyReplicas"]);
    vec![
        name(sts),
        json!(format!("{ready}/{}", int(sts, &["spec", "replicas"]))),
        json!(age(sts, now)),
        names,
        images,
    ]
}

fn daemonset(ds: &Value, now: i64) -> Vec<Value> {
    let [names, images] = template_cells(ds);
    vec![
        name(ds),
        json!(int(ds, &["status", "desiredNumberScheduled"])),
        json!(int(ds, &["status", "currentNumberScheduled"])),
        json!(int(ds, &["status", "numberReady"])),
        json!(int(ds, &["status", "updatedNumberScheduled"])),
        json!(int(ds, &["status", "numberAvailable"])),
        json!(format_labels(get(ds, &["spec", "template", "spec", "nodeSelector"]))),
        json!(age(ds, now)),
        names,
        images,
        json!(format_selector(get(ds, &["spec", "selector"]))),
    ]
}

/// True when the job has a condition of `kind`, judged by the first such condition.
fn job_condition(job: &Value, kind: &str) -> bool {
    list(job, &["status", "conditions"])
        .iter()
        .find(|c| text(c, &["type"]) == kind)
        .is_some_and(|c| text(c, &["status"]) == "True")
}

fn job(job_obj: &Value, now: i64) -> Vec<Value> {
    let succeeded = int(job_obj, &["status", "succeeded"]);
    let completions = match get(job_obj, &["spec", "completions"]).and_then(Value::as_i64) {
        Some(c) => format!("{succeeded}/{c}"),
        None => match int(job_obj, &["spec", "parallelism"]) {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let time =
        |field: &str| get(job_obj, &["status", field]).and_then(Value::as_str).and_then(parse_time);
    let duration = match (time("startTime"), time("completionTime")) {
        (None, _) => String::new(),
        (Some(start), None) => human_duration(now - start),
        (Some(start), Some(end)) => human_duration(end - start),
    };
    let deleting = get(job_obj, &["metadata", "deletionTimestamp"]).is_some_and(|v| !v.is_null());
    let status = if job_condition(job_obj, "Complete") {
        "Complete"
    } else if job_condition(job_obj, "Failed") {
        "Failed"
    } else if deleting {
        "Terminating"
    } else if job_condition(job_obj, "Suspended") {
        "Suspended"
    } else if job_condition(job_obj, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let [names, images] = template_cells(job_obj);
    vec![
        name(job_obj),
        json!(status),
        json!(completions),
        json!(duration),
        json!(age(job_obj, now)),
        names,
        images,
        json!(format_selector(get(job_obj, &["spec", "selector"]))),
    ]
}

fn cronjob(cj: &Value, now: i64) -> Vec<Value> {
    let job_spec = get(cj, &["spec", "jobTemplate", "spec"]);
    let (names, images) =
        containers_and_images(job_spec.and_then(|s| get(s, &["template", "spec"])));
    let last = match get(cj, &["status", "lastScheduleTime"]) {
        Some(t) if !t.is_null() => since(Some(t), now),
        _ => "<none>".to_string(),
    };
    let suspend = match get(cj, &["spec", "suspend"]).and_then(Value::as_bool) {
        Some(true) => "True",
        Some(false) => "False",
        None => "<unset>",
    };
    let time_zone = get(cj, &["spec", "timeZone"]).and_then(Value::as_str).unwrap_or("<none>");
    vec![
        name(cj),
        json!(text(cj, &["spec", "schedule"])),
        json!(time_zone),
        json!(suspend),
        json!(list(cj, &["status", "active"]).len()),
        json!(last),
        json!(age(cj, now)),
        json!(names),
        json!(images),
        json!(format_selector(job_spec.and_then(|s| s.get("selector")))),
    ]
}

/// The TARGETS cell: each metric as `current/target`, at most two then `+ N more...`.
fn hpa_metrics(hpa: &Value) -> String {
    let specs = list(hpa, &["spec", "metrics"]);
    if specs.is_empty() {
        return "<none>".to_string();
    }
    let statuses = list(hpa, &["status", "currentMetrics"]);
    let quantity = |v: Option<&Value>| match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "<unknown>".to_string(),
    };
    let items: Vec<String> = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let status = statuses.get(i);
            match text(spec, &["type"]) {
                "Resource" | "ContainerResource" => {
                    let field = if text(spec, &["type"]) == "Resource" {
                        "resource"
                    } else {
                        "containerResource"
                    };
                    let res = get(spec, &[field]).cloned().unwrap_or(Value::Null);
                    let current = status.and_then(|s| get(s, &[field, "current"]));
                    if let Some(avg) = get(&res, &["target", "averageValue"]) {
                        let cur = current.and_then(|c| c.get("averageValue"));
                        format!(
                            "{}: {}/{}",
                            text(&res, &["name"]),
                            quantity(cur),
                            quantity(Some(avg))
                        )
                    } else {
                        let cur = current
                            .and_then(|c| c.get("averageUtilization"))
                            .and_then(Value::as_i64)
                            .map(|u| format!("{u}%"))
                            .unwrap_or_else(|| "<unknown>".to_string());
                        let target = get(&res, &["target", "averageUtilization"])
                            .and_then(Value::as_i64)
                            .map(|u| format!("{u}%"))
                            .unwrap_or_else(|| "<auto>".to_string());
                        format!("{}: {cur}/{target}", text(&res, &["name"]))
                    }
                }
                kind @ ("Pods" | "Object" | "External") => {
                    let field = kind.to_lowercase();
                    let target = get(spec, &[&field, "target"]);
                    let current = status.and_then(|s| get(s, &[&field, "current"]));
                    let avg = target.and_then(|t| t.get("averageValue"));
                    if kind == "Pods" || avg.is_some() {
                        let suffix = if kind == "Pods" { "" } else { " (avg)" };
                        let cur = current.and_then(|c| c.get("averageValue"));
                        format!("{}/{}{suffix}", quantity(cur), quantity(avg))
                    } else {
                        let cur = current.and_then(|c| c.get("value"));
                        format!(
                            "{}/{}",
                            quantity(cur),
                            quantity(target.and_then(|t| t.get("value")))
                        )
                    }
                }
                _ => "<unknown type>".to_string(),
            }
        })
        .collect();
    if items.len() > 2 {
        format!("{} + {} more...", items[..2].join(", "), items.len() - 2)
    } else {
        items.join(", ")
    }
}

fn hpa(h: &Value, now: i64) -> Vec<Value> {
    let target = format!(
        "{}/{}",
        text(h, &["spec", "scaleTargetRef", "kind"]),
        text(h, &["spec", "scaleTargetRef", "name"])
    );
    let min = get(h, &["spec", "minReplicas"])
        .and_then(Value::as_i64)
        .map(|m| m.to_string())
        .unwrap_or_else(|| "<unset>".to_string());
    vec![
        name(h),
        json!(target),
        json!(hpa_metrics(h)),
        json!(min),
        json!(int(h, &["spec", "maxReplicas"])),
        json!(int(h, &["status", "currentReplicas"])),
        json!(age(h, now)),
    ]
}

/// An IntOrString as the reference prints it.
fn int_or_string(v: Option<&Value>) -> String {
    match v {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        _ => "N/A".to_string(),
    }
}

fn pdb(p: &Value, now: i64) -> Vec<Value> {
    vec![
        name(p),
        json!(int_or_string(get(p, &["spec", "minAvailable"]))),
        json!(int_or_string(get(p, &["spec", "maxUnavailable"]))),
        json!(int(p, &["status", "disruptionsAllowed"])),
        json!(age(p, now)),
    ]
}

fn controller_revision(cr: &Value, now: i64) -> Vec<Value> {
    let owner = list(cr, &["metadata", "ownerReferences"])
        .iter()
        .find(|o| o.get("controller").and_then(Value::as_bool) == Some(true));
    let controller = match owner {
        Some(o) => {
            // `kind.group/name`, lowercased, like the reference's formatResourceName.
            let api_version = text(o, &["apiVersion"]);
            let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
            let kind = text(o, &["kind"]);
            let group_kind =
                if group.is_empty() { kind.to_string() } else { format!("{kind}.{group}") };
            format!("{}/{}", group_kind.to_lowercase(), text(o, &["name"]))
        }
        None => "<none>".to_string(),
    };
    vec![name(cr), json!(controller), json!(int(cr, &["revision"])), json!(age(cr, now))]
}

fn pod_template(pt: &Value, _now: i64) -> Vec<Value> {
    let (names, images) = containers_and_images(get(pt, &["template", "spec"]));
    vec![
        name(pt),
        json!(names),
        json!(images),
        json!(format_labels(get(pt, &["template", "metadata", "labels"]))),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::tests::{default_headers, headers, row, table};
    use serde_json::json;

    fn deployment() -> serde_json::Value {
        json!({
            "metadata": {"name": "web", "creationTimestamp": "2024-04-29T09:00:00Z"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"spec": {"containers": [
                         {"name": "nginx", "image": "nginx:1.27"},
                         {"name": "log", "image": "busybox"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
        })
    }

    #[test]
    fn deployment_row_matches_kubectl() {
        let t = table("apps", "deployments", &[deployment()]);
        assert_eq!(default_headers(&t), ["Name", "Ready", "Up-to-date", "Available", "Age"]);
        assert_eq!(headers(&t)[5..], ["Containers", "Images", "Selector"].map(String::from));
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["web", "2/3", 3, 2, "2d3h", "nginx,log", "nginx:1.27,busybox", "app=web"])
        );
    }

    #[test]
    fn replicaset_statefulset_and_daemonset_rows() {
        let mut rs = deployment();
        rs["status"] = json!({"replicas": 3, "readyReplicas": 1});
        let t = table("apps", "replicasets", std::slice::from_ref(&rs));
        assert_eq!(default_headers(&t), ["Name", "Desired", "Current", "Ready", "Age"]);
        assert_eq!(row(&t, 0)[1..4], [json!(3), json!(3), json!(1)]);

        let t = table("apps", "statefulsets", std::slice::from_ref(&rs));
        assert_eq!(default_headers(&t), ["Name", "Ready", "Age"]);
        assert_eq!(t["rows"][0]["cells"][1], "1/3");

        let ds = json!({"metadata": {"name": "agent"}, "spec": {"template": {"spec": {
            "nodeSelector": {"kubernetes.io/os": "linux"}}}},
            "status": {"desiredNumberScheduled": 2, "numberReady": 2}});
        let t = table("apps", "daemonsets", &[ds]);
        assert_eq!(t["rows"][0]["cells"][6], "kubernetes.io/os=linux");
        assert_eq!(t["rows"][0]["cells"][7], "<unknown>", "no creationTimestamp");
    }

    #[test]
    fn job_status_completions_and_duration() {
        let job = json!({"metadata": {"name": "pi"},
            "spec": {"completions": 1, "parallelism": 1},
            "status": {"succeeded": 1, "startTime": "2024-05-01T11:00:00Z",
                       "completionTime": "2024-05-01T11:00:42Z",
                       "conditions": [{"type": "Complete", "status": "True"}]}});
        let t = table("batch", "jobs", &[job]);
        assert_eq!(default_headers(&t), ["Name", "Status", "Completions", "Duration", "Age"]);
        assert_eq!(row(&t, 0)[1..4], [json!("Complete"), json!("1/1"), json!("42s")]);

        let running = json!({"metadata": {"name": "w"}, "spec": {"parallelism": 3},
                             "status": {"startTime": "2024-05-01T11:50:00Z"}});
        let t = table("batch", "jobs", &[running]);
        assert_eq!(row(&t, 0)[1..4], [json!("Running"), json!("0/1 of 3"), json!("10m")]);
    }

    #[test]
    fn cronjob_row() {
        let cj = json!({"metadata": {"name": "nightly"},
            "spec": {"schedule": "0 3 * * *", "suspend": false,
                     "jobTemplate": {"spec": {"template": {"spec": {"containers": [
                         {"name": "c", "image": "i"}]}}}}},
            "status": {"active": [{"name": "j1"}], "lastScheduleTime": "2024-05-01T03:00:00Z"}});
        let t = table("batch", "cronjobs", &[cj]);
        assert_eq!(
            default_headers(&t),
            ["Name", "Schedule", "Timezone", "Suspend", "Active", "Last Schedule", "Age"]
        );
        assert_eq!(
            row(&t, 0)[1..6],
            [json!("0 3 * * *"), json!("<none>"), json!("False"), json!(1), json!("9h")]
        );
    }

    #[test]
    fn hpa_targets_and_pdb() {
        let hpa = json!({"metadata": {"name": "h"}, "spec": {
            "scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 1,
            "maxReplicas": 5, "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 80}}}]},
            "status": {"currentReplicas": 2, "currentMetrics": [{"type": "Resource",
                "resource": {"name": "cpu", "current": {"averageUtilization": 12}}}]}});
        let t = table("autoscaling", "horizontalpodautoscalers", &[hpa]);
        assert_eq!(
            row(&t, 0)[1..6],
            [json!("Deployment/web"), json!("cpu: 12%/80%"), json!("1"), json!(5), json!(2)]
        );
        let pdb = json!({"metadata": {"name": "p"}, "spec": {"minAvailable": "50%"}});
        let t = table("policy", "poddisruptionbudgets", &[pdb]);
        assert_eq!(row(&t, 0)[1..4], [json!("50%"), json!("N/A"), json!(0)]);
    }
}
