//! ValidatingAdmissionPolicy beyond the basics, against the real `skerry server`: the
//! Kubernetes CEL libraries (quantity, URL, IP/CIDR, lists, regex) decide with their own
//! semantics, the `authorizer` variable asks the server's RBAC for the requesting user, a
//! pathological expression is stopped by the cost limit with the reference's error instead of
//! hanging the request, an `Audit` binding annotates the request's audit event with
//! `validation.policy.admission.k8s.io/validation_failure`, and PersistentVolumeClaim resizes
//! follow the reference (grow only bound claims of an expandable class, never below capacity).

mod common;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use common::server::{ApiClient, SkerryServer};
use serde_json::{json, Value};

const TOKENS: &str = "alice-token,alice,1001\n";

const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n";

/// One policy over ConfigMaps in namespaces labelled `vap: <label>`, with one binding.
fn policy(name: &str, label: &str, actions: &str, validations: &str) -> String {
    format!(
        "
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {{name: {name}}}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - {{apiGroups: [''], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [configmaps]}}
  validations:
{validations}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {{name: {name}}}
spec:
  policyName: {name}
  validationActions: {actions}
  matchResources:
    namespaceSelector: {{matchLabels: {{vap: {label}}}}}
"
    )
}

const LIBS: &str = "
  - expression: \"!has(object.data.mem) || quantity(object.data.mem).isLessThan(quantity('1Gi'))\"
    message: mem too big
  - expression: \"!has(object.data.url) || url(object.data.url).getScheme() == 'https'\"
    message: https only
  - expression: \"!has(object.data.ip) || cidr('10.0.0.0/8').containsIP(object.data.ip)\"
    message: ip outside 10/8
  - expression: \"!has(object.data.list) || object.data.list.split(',').map(x, int(x)).isSorted()\"
    message: list unsorted
  - expression: \"!has(object.data.name) || object.data.name.find('[0-9]+') != ''\"
    message: name needs digits
";

const AUTHZ: &str = "
  - expression: \"authorizer.group('apps').resource('deployments').namespace(request.namespace).check('create').allowed()\"
    message: needs the right to create deployments
";

const COST: &str = "
  - expression: \"lists.range(1000).all(a, lists.range(1000).all(b, lists.range(1000).all(c, a + b + c >= 0)))\"
";

const AUDIT: &str = "
  - expression: \"!has(object.data.x) || object.data.x != 'bad'\"
    message: x is bad
";

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn namespace(api: &ApiClient, name: &str, label: &str) {
    let ns = json!({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": name, "labels": {"vap": label}}});
    let (code, body) = api.json("POST", "/api/v1/namespaces", Some(&ns)).await;
    assert_eq!(code, 201, "{body}");
}

/// Creates (`dry_run`: checks) a ConfigMap with `data`: the status code and the answer.
async fn configmap(
    api: &ApiClient,
    ns: &str,
    name: &str,
    data: Value,
    dry_run: bool,
) -> (u16, Value) {
    let cm =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data});
    let query = if dry_run { "?dryRun=All" } else { "" };
    api.json("POST", &format!("/api/v1/namespaces/{ns}/configmaps{query}"), Some(&cm)).await
}

fn apply(server: &SkerryServer, kubectl: &Path, yaml: &str) {
    let out = server.kubectl_stdin(kubectl, &["apply", "-f", "-"], Some(yaml));
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Policies take effect once the caches have them: waits until a dry run is refused (422).
async fn until_refused(api: &ApiClient, ns: &str, data: Value) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, body) = configmap(api, ns, "probe", data.clone(), true).await;
        if code == 422 {
            return;
        }
        assert!(Instant::now() < deadline, "the policy in {ns} never applied: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn denial(policy: &str, name: &str, message: &str) -> String {
    format!(
        "configmaps \"{name}\" is forbidden: ValidatingAdmissionPolicy '{policy}' with binding \
         '{policy}' denied request: {message}"
    )
}

#[tokio::test]
async fn cel_libraries_authorizer_cost_limit_and_audit() {
    let Some(kubectl) = skerry_testkit::kubectl() else {
        eprintln!("skipping: kubectl 1.32 is not available");
        return;
    };
    let tokens = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tokens.path(), TOKENS).unwrap();
    let audit_policy = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(audit_policy.path(), AUDIT_POLICY).unwrap();
    let server = SkerryServer::start_with(&[
        "--token-auth-file",
        tokens.path().to_str().unwrap(),
        "--audit-log-path",
        "{dir}/audit/audit.log",
        "--audit-policy-file",
        audit_policy.path().to_str().unwrap(),
    ]);
    let api = server.admin();
    for (ns, label) in [("libs", "libs"), ("authz", "authz"), ("cost", "cost"), ("audit", "audit")]
    {
        namespace(&api, ns, label).await;
    }
    apply(&server, &kubectl, &policy("libs", "libs", "[Deny]", LIBS));
    apply(&server, &kubectl, &policy("authz", "authz", "[Deny]", AUTHZ));
    apply(&server, &kubectl, &policy("cost", "cost", "[Deny]", COST));
    apply(&server, &kubectl, &policy("audit", "audit", "[Warn, Audit]", AUDIT));

    // The libraries: good values pass (a missing function would fail them all), bad ones are
    // refused with their validation's message.
    until_refused(&api, "libs", json!({"mem": "2Gi"})).await;
    let good = json!({"mem": "1000Mi", "url": "https://example.com/x", "ip": "10.2.3.4",
                      "list": "1,2,10", "name": "web-42"});
    let (code, body) = configmap(&api, "libs", "good", good, false).await;
    assert_eq!(code, 201, "{body}");
    for (key, value, message) in [
        ("mem", "2Gi", "mem too big"),
        ("url", "http://example.com/x", "https only"),
        ("ip", "192.168.1.1", "ip outside 10/8"),
        ("list", "1,10,2", "list unsorted"),
        ("name", "web", "name needs digits"),
    ] {
        let (code, body) = configmap(&api, "libs", "bad", json!({key: value}), false).await;
        assert_eq!(code, 422, "{key}: {body}");
        assert_eq!(body["message"], denial("libs", "bad", message), "{key}");
    }

    // The authorizer asks RBAC about the requester: the admin may create deployments; alice
    // may create ConfigMaps but not Deployments until she is granted that too.
    let role = |name: &str, resources: Value, groups: Value| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": name, "namespace": "authz"},
               "rules": [{"apiGroups": groups, "resources": resources, "verbs": ["create"]}]})
    };
    let binding = |name: &str| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": name, "namespace": "authz"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}]})
    };
    let rbac = "/apis/rbac.authorization.k8s.io/v1/namespaces/authz";
    for (path, obj) in [
        ("roles", role("cms", json!(["configmaps"]), json!([""]))),
        ("rolebindings", binding("cms")),
    ] {
        let (code, body) = api.json("POST", &format!("{rbac}/{path}"), Some(&obj)).await;
        assert_eq!(code, 201, "{body}");
    }
    let alice = server.anonymous(Some("alice-token"));
    until_refused(&alice, "authz", json!({})).await;
    let (code, body) = configmap(&api, "authz", "by-admin", json!({}), false).await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = configmap(&alice, "authz", "by-alice", json!({}), false).await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(
        body["message"],
        denial("authz", "by-alice", "needs the right to create deployments")
    );
    for (path, obj) in [
        ("roles", role("deploys", json!(["deployments"]), json!(["apps"]))),
        ("rolebindings", binding("deploys")),
    ] {
        let (code, body) = api.json("POST", &format!("{rbac}/{path}"), Some(&obj)).await;
        assert_eq!(code, 201, "{body}");
    }
    let (code, body) = configmap(&alice, "authz", "by-alice", json!({}), false).await;
    assert_eq!(code, 201, "{body}");

    // A billion loop steps: refused at the cost limit, promptly, with the reference's error.
    until_refused(&api, "cost", json!({})).await;
    let started = Instant::now();
    let (code, body) = configmap(&api, "cost", "loops", json!({}), false).await;
    assert_eq!(code, 422, "{body}");
    let expression = COST.trim().trim_start_matches("- expression: ").trim_matches('"');
    let error = format!(
        "expression '{expression}' resulted in error: operation cancelled: actual cost limit exceeded"
    );
    assert_eq!(body["message"], denial("cost", "loops", &error));
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());

    // Warn + Audit: admitted with the warning, and the audit event carries the failure.
    let deadline = Instant::now() + Duration::from_secs(20);
    let warning =
        "Validation failed for ValidatingAdmissionPolicy 'audit' with binding 'audit': x is bad";
    loop {
        let out = server.kubectl(
            &kubectl,
            &[
                "create",
                "configmap",
                "audited",
                "-n",
                "audit",
                "--from-literal=x=bad",
                "--dry-run=server",
            ],
        );
        if stderr(&out).contains(warning) {
            break;
        }
        assert!(Instant::now() < deadline, "no warning: {}", stderr(&out));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = server.kubectl(
        &kubectl,
        &["create", "configmap", "audited", "-n", "audit", "--from-literal=x=bad"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains(warning), "{}", stderr(&out));
    let log = server.dir.path().join("audit/audit.log");
    let event = wait_event(&log, |e| {
        e["verb"] == "create"
            && e["objectRef"]["name"] == "audited"
            && e["stage"] == "ResponseComplete"
            && e["responseStatus"]["code"] == 201
    });
    let failure = event["annotations"]["validation.policy.admission.k8s.io/validation_failure"]
        .as_str()
        .unwrap_or_else(|| panic!("no validation_failure annotation: {event}"));
    let failure: Value = serde_json::from_str(failure).unwrap();
    assert_eq!(
        failure,
        json!([{"message": "x is bad", "policy": "audit", "binding": "audit",
                "expressionIndex": 0, "validationActions": ["Warn", "Audit"]}])
    );
}

fn wait_event(path: &Path, find: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let found = text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).find(&find);
        if let Some(event) = found {
            return event;
        }
        assert!(Instant::now() < deadline, "no such event in {text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A claim of `class` bound (by the PV controller) to a 1Gi volume made for it.
async fn bound_claim(api: &ApiClient, name: &str, class: &str) {
    let pv = json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": format!("pv-{name}")},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "storageClassName": class, "hostPath": {"path": "/tmp/x"},
                 "claimRef": {"namespace": "default", "name": name}}});
    let (code, body) = api.json("POST", "/api/v1/persistentvolumes", Some(&pv)).await;
    assert_eq!(code, 201, "{body}");
    let claim = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class,
                 "volumeName": format!("pv-{name}"),
                 "resources": {"requests": {"storage": "1Gi"}}}});
    let (code, body) =
        api.json("POST", "/api/v1/namespaces/default/persistentvolumeclaims", Some(&claim)).await;
    assert_eq!(code, 201, "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, claim) = api
            .json("GET", &format!("/api/v1/namespaces/default/persistentvolumeclaims/{name}"), None)
            .await;
        if claim["status"]["phase"] == "Bound" {
            return;
        }
        assert!(Instant::now() < deadline, "{name} never bound: {claim}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn resize(api: &ApiClient, name: &str, storage: &str) -> (u16, Value) {
    let patch = json!({"spec": {"resources": {"requests": {"storage": storage}}}});
    let path = format!("/api/v1/namespaces/default/persistentvolumeclaims/{name}");
    let body = serde_json::to_vec(&patch).unwrap();
    let resp =
        api.request("PATCH", &path, Some("application/merge-patch+json"), &body).await.unwrap();
    (resp.status, serde_json::from_slice(&resp.body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn claims_grow_only_when_bound_and_expandable_and_never_below_capacity() {
    let server = SkerryServer::start();
    let api = server.admin();
    for (name, expand) in [("grow", true), ("fixed", false)] {
        let class = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": name}, "provisioner": "example.com/none",
            "allowVolumeExpansion": expand});
        let (code, body) =
            api.json("POST", "/apis/storage.k8s.io/v1/storageclasses", Some(&class)).await;
        assert_eq!(code, 201, "{body}");
    }
    bound_claim(&api, "growing", "grow").await;
    bound_claim(&api, "stuck", "fixed").await;

    let (code, body) = resize(&api, "growing", "2Gi").await;
    assert_eq!(code, 200, "{body}");
    // Back down to (or below) the capacity the volume has: forbidden.
    let (code, body) = resize(&api, "growing", "1Gi").await;
    assert_eq!((code, body["reason"].as_str()), (422, Some("Invalid")), "{body}");
    assert_eq!(
        body["details"]["causes"][0]["message"],
        "Forbidden: field can not be less than status.capacity"
    );
    assert_eq!(body["details"]["causes"][0]["field"], "spec.resources.requests.storage");

    let (code, body) = resize(&api, "stuck", "2Gi").await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        body["message"],
        "persistentvolumeclaims \"stuck\" is forbidden: only dynamically provisioned pvc can be \
         resized and the storageclass that provisions the pvc must support resize"
    );

    // An unbound claim's spec does not change at all.
    let pending = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "pending"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "grow",
                 "resources": {"requests": {"storage": "1Gi"}}}});
    let (code, body) =
        api.json("POST", "/api/v1/namespaces/default/persistentvolumeclaims", Some(&pending)).await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = resize(&api, "pending", "2Gi").await;
    assert_eq!(code, 422, "{body}");
    let cause = body["details"]["causes"][0]["message"].as_str().unwrap_or_default();
    assert!(
        cause.starts_with("Forbidden: spec is immutable after creation except resources.requests"),
        "{body}"
    );
}
