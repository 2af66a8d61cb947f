//! The first milestone end to end, as root: one `skerry server` with its embedded agent (in a
//! network namespace made by the test), `kubectl apply` of a Deployment and a Service, and
//! nothing else: the scheduler binds the pods, the Deployment and ReplicaSet controllers make
//! them, the agent runs them in real containers from a locally built image, the EndpointSlice
//! controller and the agent's proxy and DNS make them reachable by ClusterIP and by name — from
//! another pod, through `kubectl exec` over the agent's tunnel.

mod common;

use std::path::Path;
use std::time::Duration;

use common::agent::{agent_test_kubectl, eventually, start_single_node, TEST_IMAGE};
use common::server::{ok, SkerryServer};

const NODE: &str = "slice-node";

/// A web Deployment (busybox httpd answering with the pod's hostname), its Service, and a
/// client pod to reach it from.
fn manifest() -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
spec:
  replicas: 2
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: httpd
        image: {TEST_IMAGE}
        command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
        ports:
        - {{name: http, containerPort: 8080}}
        readinessProbe:
          tcpSocket: {{port: http}}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
spec:
  selector: {{app: web}}
  ports:
  - {{name: http, port: 80, targetPort: http}}
---
apiVersion: v1
kind: Pod
metadata:
  name: client
  namespace: default
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: sh
    image: {TEST_IMAGE}
    command: ["sleep", "3600"]
"#
    )
}

/// The body of `GET /` from `host` inside the client pod, through `kubectl exec` (the agent's
/// tunnel). busybox `nc`, not `wget`: the static busybox's wget crashes without NSS libraries.
fn fetch_from_client(server: &SkerryServer, kubectl: &Path, host: &str) -> Result<String, String> {
    common::agent::http_get_in_pod(server, kubectl, "client", host, 80)
}

#[test]
fn kubectl_apply_of_a_deployment_and_service_gives_reachable_pods() {
    let Some(kubectl) = agent_test_kubectl() else { return };
    // The node registers itself and becomes Ready (its image imported, air-gapped).
    let server = start_single_node(&kubectl, NODE, &[], |_| {});
    let on_failure = || {
        let state = server
            .kubectl(&kubectl, &["get", "deploy,rs,pods,endpointslices,events", "-o", "wide"]);
        format!(
            "cluster:\n{}{}\nserver log:\n{}",
            String::from_utf8_lossy(&state.stdout),
            String::from_utf8_lossy(&state.stderr),
            server.log_text()
        )
    };

    let out = server.kubectl_stdin(&kubectl, &["apply", "-f", "-"], Some(&manifest()));
    let applied = ok(out, "kubectl apply");
    assert!(applied.contains("deployment.apps/web created"), "{applied}");
    assert!(applied.contains("service/web created"), "{applied}");

    let out = server.kubectl(&kubectl, &["rollout", "status", "deployment/web", "--timeout=120s"]);
    assert!(
        out.status.success(),
        "rollout status: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        on_failure()
    );

    // Two web pods, bound by the scheduler, running with pod IPs.
    let pods =
        server.kubectl_json(&kubectl, &["get", "pods", "-l", "app=web", "-o", "json"]).unwrap();
    let pods = pods["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(pods.len(), 2, "{pods:?}");
    let mut names = Vec::new();
    for pod in &pods {
        assert_eq!(pod["spec"]["nodeName"], NODE, "{pod}");
        assert_eq!(pod["status"]["phase"], "Running", "{pod}");
        assert!(
            pod["status"]["podIP"].as_str().is_some_and(|ip| ip.starts_with("10.42.")),
            "{pod}"
        );
        names.push(pod["metadata"]["name"].as_str().unwrap().to_string());
    }
    server.wait_running(&kubectl, "client", Duration::from_secs(60));

    // The Service: a ClusterIP from the service CIDR, both pods in its EndpointSlice.
    let svc = server.kubectl_json(&kubectl, &["get", "service", "web", "-o", "json"]).unwrap();
    let cluster_ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    assert!(cluster_ip.starts_with("10.43."), "{svc}");
    eventually("both pods in the EndpointSlice", Duration::from_secs(60), || {
        let slices = server.kubectl_json(
            &kubectl,
            &["get", "endpointslices", "-l", "kubernetes.io/service-name=web", "-o", "json"],
        )?;
        let ready = slices["items"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .filter(|e| e["conditions"]["ready"] == true)
            .count();
        if ready == 2 {
            Ok(())
        } else {
            Err(slices.to_string())
        }
    });

    // Reachable from another pod by ClusterIP and by DNS name (short and full), and the
    // connections spread over both replicas.
    let mut served = std::collections::BTreeSet::new();
    for url in [cluster_ip.clone(), "web".to_string(), "web.default.svc.cluster.local".to_string()]
    {
        let body =
            eventually(&format!("GET {url} from the client pod"), Duration::from_secs(60), || {
                fetch_from_client(&server, &kubectl, &url)
            });
        assert!(names.contains(&body), "{url} answered {body:?}, not one of {names:?}");
        served.insert(body);
    }
    for _ in 0..40 {
        if served.len() == 2 {
            break;
        }
        if let Ok(body) = fetch_from_client(&server, &kubectl, &cluster_ip) {
            served.insert(body);
        }
    }
    assert_eq!(served.len(), 2, "only {served:?} answered through the ClusterIP");

    // Deleting the Deployment removes its pods (the garbage collector) and their containers.
    ok(server.kubectl(&kubectl, &["delete", "deployment", "web", "--wait=true"]), "kubectl delete");
    eventually("the web pods are gone", Duration::from_secs(90), || {
        let pods =
            server.kubectl_json(&kubectl, &["get", "pods", "-l", "app=web", "-o", "json"])?;
        let left = pods["items"].as_array().map_or(0, Vec::len);
        if left == 0 {
            Ok(())
        } else {
            Err(format!("{left} pods left"))
        }
    });
}
