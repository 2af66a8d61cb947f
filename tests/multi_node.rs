//! Three nodes end to end, as root: a `skerry server` with its embedded agent and two
//! `skerry agent`s that join it with the node token, each node a network namespace on a "LAN"
//! bridge made by the test (loopback-only addresses). A 3-replica Deployment spreads over the
//! nodes; pods reach each other across nodes (VXLAN), a Service reaches every replica by
//! ClusterIP and DNS name from a pod on another node, and `kubectl logs`/`exec` reach a joined
//! node's pods through its tunnel. kubectl 1.32 is the only client.

mod common;
#[path = "../netproxy/tests/common/mod.rs"]
mod net_common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use common::agent::{
    enter_named_netns, eventually, http_get_in_pod, import_image, node_ready, SkerryAgent,
};
use common::images::{archive_of, busybox_layout};
use common::server::{ok, SkerryServer};
use net_common::Lan;

const IMAGE: &str = "example.com/test/busybox:1";
const SERVER_IP: &str = "192.168.241.1";

fn manifest() -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: default}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: httpd
        image: {IMAGE}
        command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && echo serving && exec httpd -f -p 8080 -h /www"]
        ports: [{{name: http, containerPort: 8080}}]
        readinessProbe: {{tcpSocket: {{port: http}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: http}}]
"#
    )
}

/// A client pod pinned to `node`.
fn client_pod(name: &str, node: &str) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","namespace":"default"}},
        "spec":{{"nodeName":"{node}","terminationGracePeriodSeconds":1,
        "containers":[{{"name":"sh","image":"{IMAGE}","command":["sleep","3600"]}}]}}}}"#
    )
}

#[test]
fn a_deployment_spreads_over_joined_nodes_and_its_service_reaches_every_replica() {
    if !skerry_testkit::require_root()
        || skerry_testkit::require_program(&["/bin/busybox"]).is_none()
        || skerry_testkit::require_program(&["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip"]).is_none()
    {
        return;
    }
    let Some(kubectl) = skerry_testkit::kubectl() else { return };
    let images = tempfile::tempdir().unwrap();
    let (layout, _) = busybox_layout(images.path(), IMAGE);
    let archive = archive_of(&layout, images.path());

    let mut lan = Lan::new();
    let server_ns = lan.node(SERVER_IP.parse().unwrap());
    let node_ips: Vec<Ipv4Addr> =
        vec![Ipv4Addr::new(192, 168, 241, 2), Ipv4Addr::new(192, 168, 241, 3)];
    let node_nss: Vec<_> = node_ips.iter().map(|ip| lan.node(*ip)).collect();

    // The test itself lives on the server's node: kubectl talks to the server there.
    enter_named_netns(&server_ns.name);
    let server = SkerryServer::start_with_agent(
        &["--bind-address", "0.0.0.0", "--node-ip", SERVER_IP],
        "node-0",
        |data_dir| import_image(&data_dir.join("agent"), &archive),
    );
    let token = std::fs::read_to_string(server.data_dir.join("server/node-token")).unwrap();
    let port = server.url.rsplit(':').next().unwrap().to_string();
    let server_url = format!("https://{SERVER_IP}:{port}");
    let mut agents = Vec::new();
    for (i, (ns, ip)) in node_nss.iter().zip(&node_ips).enumerate() {
        let name = format!("node-{}", i + 1);
        let mut agent =
            SkerryAgent::joining(&server, &name, token.trim()).in_netns(&ns.name, &ip.to_string());
        agent.set_server(&server_url);
        import_image(&agent.data_dir, &archive);
        agent.start();
        agents.push(agent);
    }
    let logs = |agents: &[SkerryAgent]| {
        let state = server.kubectl(
            &kubectl,
            &["get", "nodes,deploy,rs,pods,endpointslices,events", "-o", "wide"],
        );
        let mut text = format!(
            "cluster:\n{}{}\nserver log:\n{}",
            String::from_utf8_lossy(&state.stdout),
            String::from_utf8_lossy(&state.stderr),
            server.log_text()
        );
        for a in agents {
            text.push_str(&format!("\n{} log:\n{}", a.node_name, a.log_text()));
        }
        text
    };

    eventually("three Ready nodes with distinct pod CIDRs", Duration::from_secs(90), || {
        let nodes = server.kubectl_json(&kubectl, &["get", "nodes", "-o", "json"])?;
        let items = nodes["items"].as_array().cloned().unwrap_or_default();
        let ready = items.iter().filter(|n| node_ready(n)).count();
        let cidrs: BTreeSet<_> =
            items.iter().filter_map(|n| n["spec"]["podCIDR"].as_str()).collect();
        if ready == 3 && cidrs.len() == 3 {
            Ok(())
        } else {
            Err(format!("{nodes}\n{}", logs(&agents)))
        }
    });

    ok(server.kubectl_stdin(&kubectl, &["apply", "-f", "-"], Some(&manifest())), "kubectl apply");
    let out = server.kubectl(&kubectl, &["rollout", "status", "deployment/web", "--timeout=180s"]);
    assert!(
        out.status.success(),
        "rollout: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        logs(&agents)
    );

    // Spread: one replica per node (the scheduler's default spreading of one owner's pods).
    let pods =
        server.kubectl_json(&kubectl, &["get", "pods", "-l", "app=web", "-o", "json"]).unwrap();
    let placement: BTreeMap<String, String> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["spec"]["nodeName"].as_str().unwrap().to_string(),
                p["metadata"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(placement.len(), 3, "replicas not spread over the nodes: {pods}");

    // A client on a joined node reaches every replica through the Service, by IP and by name.
    ok(
        server.kubectl_stdin(
            &kubectl,
            &["create", "-f", "-"],
            Some(&client_pod("client", "node-2")),
        ),
        "create client",
    );
    server.wait_running(&kubectl, "client", Duration::from_secs(90));
    let svc = server.kubectl_json(&kubectl, &["get", "service", "web", "-o", "json"]).unwrap();
    let cluster_ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    let names: BTreeSet<String> = placement.values().cloned().collect();
    let mut served = BTreeSet::new();
    for url in [cluster_ip.clone(), "web.default.svc.cluster.local".to_string()] {
        let body = eventually(&format!("GET {url}"), Duration::from_secs(60), || {
            http_get_in_pod(&server, &kubectl, "client", &url, 80)
        });
        assert!(names.contains(&body), "{url}: {body:?} is not one of {names:?}");
        served.insert(body);
    }
    for _ in 0..60 {
        if served.len() == names.len() {
            break;
        }
        if let Ok(body) = http_get_in_pod(&server, &kubectl, "client", &cluster_ip, 80) {
            served.insert(body);
        }
    }
    assert_eq!(served, names, "the ClusterIP did not reach every replica (cross-node traffic)");

    // Pod to pod across nodes, by pod IP.
    for pod in pods["items"].as_array().unwrap() {
        let ip = pod["status"]["podIP"].as_str().unwrap();
        let body = http_get_in_pod(&server, &kubectl, "client", ip, 8080).unwrap();
        assert_eq!(body, pod["metadata"]["name"].as_str().unwrap());
    }

    // logs and exec through a joined node's tunnel.
    let remote = &placement["node-1"];
    let log = ok(server.kubectl(&kubectl, &["logs", remote]), "kubectl logs");
    assert!(log.contains("serving"), "{log}");
    let host = ok(server.kubectl(&kubectl, &["exec", remote, "--", "hostname"]), "kubectl exec");
    assert_eq!(host.trim(), remote);
    drop(agents);
}
