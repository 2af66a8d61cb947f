//! Shared by the socket tests: Kubernetes object builders, a `dig` runner and parser, and a
//! `dnsmasq` upstream on loopback, each cleaned up on drop.

#![allow(dead_code)] // each test binary uses its own subset

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;
use skerry_dns::{ClusterDns, DnsConfig, DnsHandle};

pub const DIG: &str = "/usr/bin/dig";
pub const DNSMASQ: &str = "/usr/sbin/dnsmasq";

/// A Service `ns/name` with `spec`.
pub fn service(ns: &str, name: &str, spec: serde_json::Value) -> Service {
    serde_json::from_value(json!({"metadata": {"namespace": ns, "name": name}, "spec": spec}))
        .unwrap()
}

/// An EndpointSlice of `service` with (ip, hostname, ready) endpoints and port `http` 8080.
pub fn slice(
    ns: &str,
    name: &str,
    service: &str,
    eps: &[(&str, Option<&str>, bool)],
) -> EndpointSlice {
    let endpoints: Vec<_> = eps
        .iter()
        .map(|(ip, host, ready)| {
            json!({"addresses": [ip], "hostname": host, "conditions": {"ready": ready}})
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name,
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }))
    .unwrap()
}

/// A running Pod `ns/name` with `ip`.
pub fn pod(ns: &str, name: &str, ip: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name},
        "spec": {"containers": []},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    }))
    .unwrap()
}

/// Starts a server on a free loopback port forwarding to `upstreams`.
pub async fn start(upstreams: Vec<SocketAddr>) -> DnsHandle {
    let config = DnsConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        upstreams,
        upstream_timeout: Duration::from_millis(500),
        ..DnsConfig::default()
    };
    ClusterDns::start(config).await.unwrap()
}

/// What `dig` printed, taken apart.
#[derive(Debug, Default)]
pub struct DigAnswer {
    /// `NOERROR`, `NXDOMAIN`, ...
    pub status: String,
    /// Header flags: `qr`, `aa`, `rd`, `ra`, `tc`.
    pub flags: Vec<String>,
    /// Answer section records as `name ttl class type data` (whitespace-normalised).
    pub answers: Vec<String>,
    /// Authority section records.
    pub authority: Vec<String>,
    /// Additional section records (without the OPT pseudo-section).
    pub additional: Vec<String>,
    /// The whole output, for failure messages.
    pub raw: String,
}

impl DigAnswer {
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// The data (last field) of answer records of `rtype`, sorted.
    pub fn data(&self, rtype: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .answers
            .iter()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                (fields.get(3) == Some(&rtype)).then(|| fields[4..].join(" "))
            })
            .collect();
        out.sort();
        out
    }

    pub fn parse(raw: &str) -> Self {
        let mut answer = DigAnswer { raw: raw.to_string(), ..DigAnswer::default() };
        let mut section = "";
        for line in raw.lines() {
            if let Some(rest) = line.split("status: ").nth(1) {
                answer.status = rest.split(',').next().unwrap_or_default().to_string();
            } else if let Some(rest) = line.strip_prefix(";; flags: ") {
                let flags = rest.split(';').next().unwrap_or_default();
                answer.flags = flags.split_whitespace().map(str::to_string).collect();
            } else if line.starts_with(";; ") && line.ends_with("SECTION:") {
                section = line;
            } else if line.is_empty() {
                section = "";
            } else if !line.starts_with(';') {
                let record = line.split_whitespace().collect::<Vec<_>>().join(" ");
                match section {
                    ";; ANSWER SECTION:" => answer.answers.push(record),
                    ";; AUTHORITY SECTION:" => answer.authority.push(record),
                    ";; ADDITIONAL SECTION:" => answer.additional.push(record),
                    _ => {}
                }
            }
        }
        answer
    }
}

/// Runs `dig @server -p port name type extra...` (one try, short timeout).
pub async fn dig_at(server: SocketAddr, name: &str, rtype: &str, extra: &[&str]) -> DigAnswer {
    dig_in(None, server, name, rtype, extra).await
}

/// [`dig_at`], run inside the network namespace `netns` if given.
pub async fn dig_in(
    netns: Option<&str>,
    server: SocketAddr,
    name: &str,
    rtype: &str,
    extra: &[&str],
) -> DigAnswer {
    let mut command = match netns {
        Some(ns) => {
            let mut c = tokio::process::Command::new("ip");
            c.args(["netns", "exec", ns, DIG]);
            c
        }
        None => tokio::process::Command::new(DIG),
    };
    let output = command
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), name, rtype, "+time=2", "+tries=1"])
        .args(extra)
        .output()
        .await
        .unwrap();
    DigAnswer::parse(&String::from_utf8_lossy(&output.stdout))
}

/// `dig` against the server behind `handle`.
pub async fn dig(handle: &DnsHandle, name: &str, rtype: &str, extra: &[&str]) -> DigAnswer {
    dig_at(handle.local_addrs()[0], name, rtype, extra).await
}

/// A dnsmasq on a loopback port answering `*.example.test` with 192.0.2.1 (TTL 300) and
/// `big.example.test` with many TXT records; killed on drop.
pub struct Dnsmasq {
    child: Child,
    pub addr: SocketAddr,
}

impl Dnsmasq {
    pub async fn start(program: &Path) -> Dnsmasq {
        Self::start_in(None, program, 300).await
    }

    /// [`Dnsmasq::start`] inside the network namespace `netns` if given, with answers' `ttl`.
    pub async fn start_in(netns: Option<&str>, program: &Path, ttl: u32) -> Dnsmasq {
        for _ in 0..10 {
            let port = skerry_testkit::free_port();
            let mut command = match netns {
                Some(ns) => {
                    let mut c = Command::new("ip");
                    c.args(["netns", "exec", ns]).arg(program);
                    c
                }
                None => Command::new(program),
            };
            command.args([
                "--no-daemon",
                "--conf-file=/dev/null",
                "--pid-file",
                "--no-resolv",
                "--no-hosts",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--address=/example.test/192.0.2.1",
            ]);
            command.arg(format!("--port={port}")).arg(format!("--local-ttl={ttl}"));
            // A large upstream answer: 60 TXT records, far more than 1232 bytes.
            for i in 0..60 {
                command.arg(format!("--txt-record=big.example.test,record-{i:02}-padding-padding"));
            }
            let child = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
            let mut upstream = Dnsmasq { child, addr: SocketAddr::from(([127, 0, 0, 1], port)) };
            for _ in 0..50 {
                if upstream.child.try_wait().unwrap().is_some() {
                    break; // lost the port to someone else: try another
                }
                let probe =
                    dig_in(netns, upstream.addr, "probe.example.test", "A", &["+time=1"]).await;
                if probe.status == "NOERROR" {
                    return upstream;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("dnsmasq did not start");
    }

    /// Stops it (the upstream goes away).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The tools the socket tests need, or None to skip.
pub fn tools() -> Option<(PathBuf, PathBuf)> {
    let dig = skerry_testkit::require_program(&[DIG])?;
    let dnsmasq = skerry_testkit::require_program(&[DNSMASQ])?;
    Some((dig, dnsmasq))
}
