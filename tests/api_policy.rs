//! ValidatingAdmissionPolicy against the real `skerry server` with kubectl 1.32: a CEL policy
//! bound with `Deny` refuses Deployments over the limit in the namespaces its binding selects
//! (the reference's message, 422 Invalid), a `Warn` binding makes kubectl print the
//! reference's `Warning:` line, and a policy with a ConfigMap `paramKind` reads its limit from
//! the param (a missing param under `parameterNotFoundAction: Deny` refuses).

mod common;

use std::process::Output;
use std::time::Duration;

use common::server::{ApiClient, SkerryServer};
use serde_json::{json, Value};

const POLICY: &str = "
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: max-replicas}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - {apiGroups: [apps], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [deployments]}
  validations:
  - expression: object.spec.replicas <= 5
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: max-replicas-deny}
spec:
  policyName: max-replicas
  validationActions: [Deny]
  matchResources:
    namespaceSelector: {matchLabels: {vap: deny}}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: max-replicas-warn}
spec:
  policyName: max-replicas
  validationActions: [Warn]
  matchResources:
    namespaceSelector: {matchLabels: {vap: warn}}
";

const PARAM_POLICY: &str = "
apiVersion: v1
kind: ConfigMap
metadata: {name: limits, namespace: vap-params}
data: {max: '2'}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: param-max}
spec:
  paramKind: {apiVersion: v1, kind: ConfigMap}
  matchConstraints:
    resourceRules:
    - {apiGroups: [apps], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [deployments]}
  validations:
  - expression: object.spec.replicas <= int(params.data.max)
    messageExpression: \"'at most ' + params.data.max + ' replicas'\"
    reason: Forbidden
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: param-max}
spec:
  policyName: param-max
  validationActions: [Deny]
  paramRef: {name: limits, parameterNotFoundAction: Deny}
  matchResources:
    namespaceSelector: {matchLabels: {vap: params}}
";

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn namespace(api: &ApiClient, name: &str, labels: Value) {
    let ns = json!({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": name, "labels": labels}});
    let (code, body) = api.json("POST", "/api/v1/namespaces", Some(&ns)).await;
    assert_eq!(code, 201, "{body}");
}

fn create_deployment(
    server: &SkerryServer,
    kubectl: &std::path::Path,
    ns: &str,
    name: &str,
    replicas: u32,
    dry_run: bool,
) -> Output {
    let replicas = format!("--replicas={replicas}");
    let mut args = vec!["create", "deployment", name, "--image=nginx", &replicas, "-n", ns];
    if dry_run {
        args.push("--dry-run=server");
    }
    server.kubectl(kubectl, &args)
}

/// Policies take effect once the server's caches have them (as in the reference, a moment
/// after they are written): waits, with server-side dry runs, until `done` holds.
fn until(what: &str, mut attempt: impl FnMut() -> Output, done: impl Fn(&Output) -> bool) {
    let mut last = None;
    for _ in 0..100 {
        let out = attempt();
        if done(&out) {
            return;
        }
        last = Some(out);
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "{what}: never happened; last stderr: {}",
        last.as_ref().map(stderr).unwrap_or_default()
    );
}

#[tokio::test]
async fn policies_deny_warn_and_read_params() {
    let Some(kubectl) = skerry_testkit::kubectl() else {
        eprintln!("skipping: kubectl 1.32 is not available");
        return;
    };
    let server = SkerryServer::start();
    let api = server.admin();
    namespace(&api, "vap-deny", json!({"vap": "deny"})).await;
    namespace(&api, "vap-warn", json!({"vap": "warn"})).await;
    namespace(&api, "vap-open", json!({})).await;
    namespace(&api, "vap-params", json!({"vap": "params"})).await;
    namespace(&api, "vap-noparams", json!({"vap": "params"})).await;

    let out = server.kubectl_stdin(&kubectl, &["apply", "-f", "-"], Some(POLICY));
    assert!(out.status.success(), "{}", stderr(&out));

    // Deny binding: 6 replicas are refused with the reference's message and code.
    until(
        "the Deny binding refuses",
        || create_deployment(&server, &kubectl, "vap-deny", "big", 6, true),
        |out| !out.status.success(),
    );
    let denial = "ValidatingAdmissionPolicy 'max-replicas' with binding 'max-replicas-deny' \
                  denied request: failed expression: object.spec.replicas <= 5";
    let out = create_deployment(&server, &kubectl, "vap-deny", "big", 6, false);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("deployments.apps \"big\" is forbidden: {denial}")),
        "{}",
        stderr(&out)
    );
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "big"},
        "spec": {"replicas": 6, "selector": {"matchLabels": {"app": "big"}},
                 "template": {"metadata": {"labels": {"app": "big"}},
                              "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}});
    let (code, status) =
        api.json("POST", "/apis/apps/v1/namespaces/vap-deny/deployments", Some(&deployment)).await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(status["reason"], "Invalid");
    assert_eq!(status["details"]["causes"][0]["message"], denial);
    assert_eq!(status["details"]["kind"], "deployments");

    // 3 replicas pass; another namespace is not selected by the binding.
    let out = create_deployment(&server, &kubectl, "vap-deny", "small", 3, false);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = create_deployment(&server, &kubectl, "vap-open", "big", 6, false);
    assert!(out.status.success(), "{}", stderr(&out));
    // Updates are checked too (a patch of the Deployment itself; `kubectl scale` writes the
    // scale subresource, which a `deployments` rule does not cover, as in the reference).
    let patch =
        ["patch", "deployment", "small", "-n", "vap-deny", "-p", r#"{"spec":{"replicas":7}}"#];
    let out = server.kubectl(&kubectl, &patch);
    assert!(stderr(&out).contains("denied request: failed expression"), "{}", stderr(&out));

    // Warn binding: admitted, and kubectl prints the warning.
    let warning = "Warning: Validation failed for ValidatingAdmissionPolicy 'max-replicas' with \
                   binding 'max-replicas-warn': failed expression: object.spec.replicas <= 5";
    until(
        "the Warn binding warns",
        || create_deployment(&server, &kubectl, "vap-warn", "big", 6, true),
        |out| stderr(out).contains(warning),
    );
    let out = create_deployment(&server, &kubectl, "vap-warn", "big", 6, false);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains(warning), "{}", stderr(&out));

    // A ConfigMap param: the limit comes from its data; the reason sets 403.
    let out = server.kubectl_stdin(&kubectl, &["apply", "-f", "-"], Some(PARAM_POLICY));
    assert!(out.status.success(), "{}", stderr(&out));
    until(
        "the param policy refuses",
        || create_deployment(&server, &kubectl, "vap-params", "three", 3, true),
        |out| stderr(out).contains("at most 2 replicas"),
    );
    let out = create_deployment(&server, &kubectl, "vap-params", "three", 3, false);
    assert!(
        stderr(&out).contains(
            "deployments.apps \"three\" is forbidden: ValidatingAdmissionPolicy 'param-max' with \
             binding 'param-max' denied request: at most 2 replicas"
        ),
        "{}",
        stderr(&out)
    );
    let mut three = deployment.clone();
    three["metadata"]["name"] = json!("three");
    three["spec"]["replicas"] = json!(3);
    let (code, status) =
        api.json("POST", "/apis/apps/v1/namespaces/vap-params/deployments", Some(&three)).await;
    assert_eq!((code, status["reason"].as_str()), (403, Some("Forbidden")), "{status}");
    let out = create_deployment(&server, &kubectl, "vap-params", "two", 2, false);
    assert!(out.status.success(), "{}", stderr(&out));

    // No param in the request's namespace, under parameterNotFoundAction: Deny.
    let out = create_deployment(&server, &kubectl, "vap-noparams", "one", 1, false);
    assert!(
        stderr(&out).contains(
            "ValidatingAdmissionPolicy 'param-max' with binding 'param-max' denied request: \
             failed to configure binding: no params found for policy binding with `Deny` \
             parameterNotFoundAction"
        ),
        "{}",
        stderr(&out)
    );
}
