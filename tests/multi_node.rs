//! Three nodes end to end, as root: a `skerry server` with its embedded agent and two
//! `skerry agent`s that join it with the node token, each node a network namespace on a "LAN"
//! bridge made by the test (loopback-only addresses). kubectl 1.32 is the only client of the
//! API.
//!
//! - A 3-replica Deployment spreads over the nodes; pods reach each other across nodes
//!   (VXLAN), a Service reaches every replica by ClusterIP and DNS name from a pod on another
//!   node, and `kubectl logs`/`exec` reach a joined node's pods through its tunnel.
//! - Offline autonomy: with the server (and its node's agent) stopped for longer than the
//!   node-monitor grace period, the Service keeps serving every replica, a container that dies
//!   is restarted, and a node whose agent and containers are all killed (a power cut) brings
//!   its pod back from its local copy; when the server returns, no pod is recreated or evicted.

mod common;
#[path = "../netproxy/tests/common/mod.rs"]
mod net_common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use common::agent::{
    enter_named_netns, eventually, http_get_in_pod, import_image, node_ready, SkerryAgent,
};
use common::images::{archive_of, busybox_layout};
use common::server::{ok, SkerryServer};
use net_common::{Lan, Netns};

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

/// The server's node (`node-0`) and two joined agents (`node-1`, `node-2`) on one LAN, with
/// the `web` Deployment and Service rolled out and a `client` pod on `node-2`. Field order is
/// drop order: agents and server stop before their namespaces go.
struct ThreeNodes {
    kubectl: PathBuf,
    agents: Vec<SkerryAgent>,
    server: SkerryServer,
    _node_nss: Vec<Netns>,
    _server_ns: Netns,
    _lan: Lan,
    _images: tempfile::TempDir,
}

impl ThreeNodes {
    /// `None` (the test skips) without root, busybox, ip or kubectl.
    fn start() -> Option<ThreeNodes> {
        if !skerry_testkit::require_root()
            || skerry_testkit::require_program(&["/bin/busybox"]).is_none()
            || skerry_testkit::require_program(&["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip"])
                .is_none()
        {
            return None;
        }
        let kubectl = skerry_testkit::kubectl()?;
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
            let mut agent = SkerryAgent::joining(&server, &name, token.trim())
                .in_netns(&ns.name, &ip.to_string());
            agent.set_server(&server_url);
            import_image(&agent.data_dir, &archive);
            agent.start();
            agents.push(agent);
        }
        let cluster = ThreeNodes {
            kubectl,
            agents,
            server,
            _node_nss: node_nss,
            _server_ns: server_ns,
            _lan: lan,
            _images: images,
        };

        eventually("three Ready nodes with distinct pod CIDRs", Duration::from_secs(90), || {
            let nodes = cluster.json(&["get", "nodes"])?;
            let items = nodes["items"].as_array().cloned().unwrap_or_default();
            let ready = items.iter().filter(|n| node_ready(n)).count();
            let cidrs: BTreeSet<_> =
                items.iter().filter_map(|n| n["spec"]["podCIDR"].as_str()).collect();
            if ready == 3 && cidrs.len() == 3 {
                Ok(())
            } else {
                Err(format!("{nodes}\n{}", cluster.logs()))
            }
        });
        cluster.apply(&manifest());
        let out = cluster.kubectl(&["rollout", "status", "deployment/web", "--timeout=180s"]);
        assert!(
            out.status.success(),
            "rollout: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            cluster.logs()
        );
        cluster.apply(&client_pod("client", "node-2"));
        cluster.server.wait_running(&cluster.kubectl, "client", Duration::from_secs(90));
        Some(cluster)
    }

    fn kubectl(&self, args: &[&str]) -> std::process::Output {
        self.server.kubectl(&self.kubectl, args)
    }

    fn json(&self, args: &[&str]) -> Result<Value, String> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        self.server.kubectl_json(&self.kubectl, &all)
    }

    fn apply(&self, manifest: &str) {
        ok(
            self.server.kubectl_stdin(&self.kubectl, &["apply", "-f", "-"], Some(manifest)),
            "apply",
        );
    }

    /// The `web` replicas: node name → pod.
    fn replicas(&self) -> BTreeMap<String, Value> {
        let pods = self.json(&["get", "pods", "-l", "app=web"]).unwrap();
        pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["spec"]["nodeName"].as_str().unwrap().to_string(), p.clone()))
            .collect()
    }

    /// The joined agent running `node`.
    fn agent(&self, node: &str) -> &SkerryAgent {
        self.agents.iter().find(|a| a.node_name == node).expect("a joined node")
    }

    /// The cluster's state and every log, for failure messages.
    fn logs(&self) -> String {
        let state =
            self.kubectl(&["get", "nodes,deploy,rs,pods,endpointslices,events", "-o", "wide"]);
        let mut text = format!(
            "cluster:\n{}{}\nserver log:\n{}",
            String::from_utf8_lossy(&state.stdout),
            String::from_utf8_lossy(&state.stderr),
            self.server.log_text()
        );
        for a in &self.agents {
            text.push_str(&format!("\n{} log:\n{}", a.node_name, a.log_text()));
        }
        text
    }
}

#[test]
fn a_deployment_spreads_over_joined_nodes_and_its_service_reaches_every_replica() {
    let Some(cluster) = ThreeNodes::start() else { return };
    let kubectl = &cluster.kubectl;
    let server = &cluster.server;

    // Spread: one replica per node (the scheduler's default spreading of one owner's pods).
    let replicas = cluster.replicas();
    assert_eq!(replicas.len(), 3, "replicas not spread over the nodes: {replicas:?}");
    let placement: BTreeMap<&String, &str> =
        replicas.iter().map(|(n, p)| (n, p["metadata"]["name"].as_str().unwrap())).collect();

    // A client on a joined node reaches every replica through the Service, by IP and by name.
    let svc = cluster.json(&["get", "service", "web"]).unwrap();
    let cluster_ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    let names: BTreeSet<String> = placement.values().map(|n| n.to_string()).collect();
    let mut served = BTreeSet::new();
    for url in [cluster_ip.clone(), "web.default.svc.cluster.local".to_string()] {
        let body = eventually(&format!("GET {url}"), Duration::from_secs(60), || {
            http_get_in_pod(server, kubectl, "client", &url, 80)
        });
        assert!(names.contains(&body), "{url}: {body:?} is not one of {names:?}");
        served.insert(body);
    }
    for _ in 0..60 {
        if served.len() == names.len() {
            break;
        }
        if let Ok(body) = http_get_in_pod(server, kubectl, "client", &cluster_ip, 80) {
            served.insert(body);
        }
    }
    assert_eq!(served, names, "the ClusterIP did not reach every replica (cross-node traffic)");

    // Pod to pod across nodes, by pod IP.
    for pod in replicas.values() {
        let ip = pod["status"]["podIP"].as_str().unwrap();
        let body = http_get_in_pod(server, kubectl, "client", ip, 8080).unwrap();
        assert_eq!(body, pod["metadata"]["name"].as_str().unwrap());
    }

    // logs and exec through a joined node's tunnel.
    let remote = placement[&"node-1".to_string()];
    let log = ok(cluster.kubectl(&["logs", remote]), "kubectl logs");
    assert!(log.contains("serving"), "{log}");
    let host = ok(cluster.kubectl(&["exec", remote, "--", "hostname"]), "kubectl exec");
    assert_eq!(host.trim(), remote);
}

/// The body of `GET /` from `host:port`, sent by `nc` in the runtime container `container` of
/// `agent`'s node through `skerry ctr exec`: no API server involved.
fn get_through_runtime(agent: &SkerryAgent, container: &str, host: &str) -> Result<String, String> {
    let script = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} 80");
    let out = agent.ctr(&["exec", container, "--", "sh", "-c", &script]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if out.status.success() && head.starts_with("HTTP/1.") => {
            Ok(body.trim().to_string())
        }
        _ => Err(format!("{host}: {text}{}", String::from_utf8_lossy(&out.stderr))),
    }
}

/// Requests through the Service until every replica in `names` answered.
fn serves_every_replica(agent: &SkerryAgent, client: &str, ip: &str, names: &BTreeSet<String>) {
    let mut served = BTreeSet::new();
    eventually("the ClusterIP reaches every replica offline", Duration::from_secs(90), || {
        if let Ok(body) = get_through_runtime(agent, client, ip) {
            served.insert(body);
        }
        if &served == names {
            Ok(())
        } else {
            Err(format!("served {served:?} of {names:?}\n{}", agent.log_text()))
        }
    });
}

/// The runtime name of attempt `attempt` of container `name` in the pod with `uid`.
fn runtime_name(uid: &str, name: &str, attempt: u32) -> String {
    format!("{uid}_{name}_{attempt}")
}

fn is_running(agent: &SkerryAgent, name: &str) -> bool {
    agent.containers().iter().any(|(_, n, s)| n == name && s == "running")
}

/// SIGKILLs every container process of `agent`'s node, as a power cut would.
fn kill_every_container(agent: &SkerryAgent) {
    for (_, name, state) in agent.containers() {
        if state != "running" {
            continue;
        }
        let out = agent.ctr(&["inspect", &name]);
        let info: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let pid = info["container"]["pid"]
            .as_i64()
            .unwrap_or_else(|| panic!("no pid for {name}: {info}"));
        // SAFETY: kill has no memory-safety preconditions.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0, "kill {name} ({pid})");
    }
}

fn uid(pod: &Value) -> String {
    pod["metadata"]["uid"].as_str().unwrap().to_string()
}

fn restarts(pod: &Value) -> i64 {
    pod["status"]["containerStatuses"][0]["restartCount"].as_i64().unwrap_or(-1)
}

// The issue's offline acceptance: the server down for longer than the node-monitor grace
// period (40 s), a crash and a power cut meanwhile, then the server back.
#[test]
fn nodes_keep_serving_restart_and_recover_while_the_server_is_down() {
    let Some(mut cluster) = ThreeNodes::start() else { return };
    let before = cluster.replicas();
    assert_eq!(before.len(), 3, "replicas not spread over the nodes: {before:?}");
    let names: BTreeSet<String> =
        before.values().map(|p| p["metadata"]["name"].as_str().unwrap().to_string()).collect();
    let svc = cluster.json(&["get", "service", "web"]).unwrap();
    let cluster_ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    let client = cluster.json(&["get", "pod", "client"]).unwrap();
    let client = runtime_name(&uid(&client), "sh", 0);
    let node1_replica = uid(&before["node-1"]);
    let node2_replica = uid(&before["node-2"]);
    serves_every_replica(cluster.agent("node-2"), &client, &cluster_ip, &names);

    // The server goes away, and with it node-0's agent (the same process).
    cluster.server.kill();
    let outage = std::time::Instant::now();
    serves_every_replica(cluster.agent("node-2"), &client, &cluster_ip, &names);

    // A container dies: its agent restarts it from what it knows.
    let node2 = cluster.agent("node-2");
    let out = node2.ctr(&["stop", "-t", "0", &runtime_name(&node2_replica, "httpd", 0)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let restarted = runtime_name(&node2_replica, "httpd", 1);
    eventually("the crashed container restarted offline", Duration::from_secs(60), || {
        is_running(node2, &restarted).then_some(()).ok_or_else(|| node2.log_text())
    });

    // node-1 loses power: its agent and every container are killed; it boots while the server
    // is still down and brings its pod back from its local copy.
    cluster.agents[0].kill9();
    kill_every_container(&cluster.agents[0]);
    assert!(!is_running(&cluster.agents[0], &runtime_name(&node1_replica, "httpd", 0)));
    cluster.agents[0].start();
    let node1 = cluster.agent("node-1");
    eventually("node-1's pod back after the power cut", Duration::from_secs(90), || {
        let back = node1
            .containers()
            .iter()
            .any(|(_, n, s)| n.starts_with(&format!("{node1_replica}_httpd_")) && s == "running");
        back.then_some(()).ok_or_else(|| format!("{:?}\n{}", node1.containers(), node1.log_text()))
    });

    // Stay down past the grace period after which a live server would call the nodes lost.
    std::thread::sleep(Duration::from_secs(50).saturating_sub(outage.elapsed()));
    cluster.server.restart_same_port();

    // Back: the same three pods, running and ready, restarted only where a container died,
    // no node tainted unreachable, nothing evicted.
    let after = eventually("the cluster after the outage", Duration::from_secs(90), || {
        let nodes = cluster.json(&["get", "nodes"])?;
        let items = nodes["items"].as_array().cloned().unwrap_or_default();
        if items.iter().filter(|n| node_ready(n)).count() != 3 {
            return Err(format!("nodes not Ready: {nodes}"));
        }
        let after = cluster.replicas();
        let ready = after.values().all(|p| {
            p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        });
        if ready && after.len() == 3 && restarts(&after["node-1"]) >= 1 {
            Ok(after)
        } else {
            Err(format!("{after:?}\n{}", cluster.logs()))
        }
    });
    for (node, pod) in &before {
        assert_eq!(uid(&after[node]), uid(pod), "the pod on {node} was recreated");
        assert!(after[node]["metadata"]["deletionTimestamp"].is_null(), "{node}: {pod}");
    }
    assert_eq!(restarts(&after["node-0"]), 0, "node-0's container survived the server");
    assert_eq!(restarts(&after["node-2"]), 1, "node-2's container died once");
    let pods = cluster.json(&["get", "pods", "-l", "app=web"]).unwrap();
    assert_eq!(pods["items"].as_array().unwrap().len(), 3, "extra pods: {pods}");
    // A rebooted node's pod may come back in a new sandbox (a new address, which other nodes
    // learn from the server): with the server back, the Service reaches every replica again.
    serves_every_replica(cluster.agent("node-2"), &client, &cluster_ip, &names);
    // One more grace period with the server up: the nodes' fresh heartbeats keep them Ready
    // and untainted (a controller that judged them by the stale leases would taint them).
    std::thread::sleep(Duration::from_secs(45));
    let nodes = cluster.json(&["get", "nodes"]).unwrap();
    for node in nodes["items"].as_array().unwrap() {
        assert!(node_ready(node), "{node}");
        let taints = node["spec"]["taints"].to_string();
        assert!(!taints.contains("unreachable"), "{taints}\n{}", cluster.logs());
    }
    let events = ok(cluster.kubectl(&["get", "events", "-A"]), "events");
    assert!(!events.contains("Evict"), "{events}");
    let pods = cluster.json(&["get", "pods", "-l", "app=web"]).unwrap();
    let uids: BTreeSet<String> = pods["items"].as_array().unwrap().iter().map(uid).collect();
    let expected: BTreeSet<String> = before.values().map(uid).collect();
    assert_eq!(uids, expected, "pods changed after the outage");
}
