//! From Kubernetes objects to what the proxy programs: one [`ServicePortRules`] input per
//! service port, with its addresses, policies and chosen endpoints.
//!
//! Pure logic (no I/O). Odd objects never panic: a field that cannot be used (an IPv6
//! cluster IP, a port out of range, an unknown protocol) is skipped with a debug log.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label linking an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// One endpoint of a service port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    /// Pod address.
    pub ip: Ipv4Addr,
    /// Target port.
    pub port: u16,
    /// Whether the endpoint runs on this node.
    pub local: bool,
}

/// One port of one service, resolved for programming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePortSpec {
    /// `namespace/name/proto/port-name-or-number`, unique in the table; names chains.
    pub key: String,
    /// `namespace/name` of the service.
    pub service: String,
    /// IP protocol number.
    pub protocol: u8,
    /// The service port.
    pub port: u16,
    /// Cluster IPs (IPv4 only).
    pub cluster_ips: Vec<Ipv4Addr>,
    /// externalIPs, LoadBalancer ingress IPs and (for LoadBalancer) the node addresses.
    pub external_ips: Vec<Ipv4Addr>,
    /// The NodePort, if any.
    pub node_port: Option<u16>,
    /// sessionAffinity ClientIP timeout in seconds.
    pub affinity_timeout: Option<u32>,
    /// externalTrafficPolicy Local.
    pub external_local: bool,
    /// internalTrafficPolicy Local.
    pub internal_local: bool,
    /// Usable endpoints: ready ones, or serving+terminating ones when none is ready.
    pub endpoints: Vec<Endpoint>,
}

/// Protocol name to number; `None` for protocols the proxy does not handle.
pub fn protocol_number(p: Option<&str>) -> Option<u8> {
    match p.unwrap_or("TCP") {
        "TCP" => Some(6),
        "UDP" => Some(17),
        "SCTP" => Some(132),
        _ => None,
    }
}

fn proto_name(p: u8) -> &'static str {
    match p {
        6 => "tcp",
        17 => "udp",
        _ => "sctp",
    }
}

fn port(v: i32) -> Option<u16> {
    u16::try_from(v).ok().filter(|p| *p != 0)
}

fn ipv4s<'a>(it: impl IntoIterator<Item = &'a String>) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = it.into_iter().filter_map(|s| s.parse().ok()).collect();
    out.sort();
    out.dedup();
    out
}

/// The `namespace/name` of a service or slice owner.
pub fn service_id(namespace: Option<&str>, name: Option<&str>) -> String {
    format!("{}/{}", namespace.unwrap_or("default"), name.unwrap_or(""))
}

/// Resolves a Service and its EndpointSlices (others in `slices` are ignored) into port specs.
/// Headless, ExternalName and IPv6-only services produce nothing.
pub fn service_ports(
    svc: &Service,
    slices: &[&EndpointSlice],
    node_name: &str,
    node_ips: &[Ipv4Addr],
) -> Vec<ServicePortSpec> {
    let ns = svc.metadata.namespace.as_deref();
    let Some(name) = svc.metadata.name.as_deref() else { return Vec::new() };
    let Some(spec) = &svc.spec else { return Vec::new() };
    let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
    if kind == "ExternalName" {
        return Vec::new();
    }
    let mut cluster: Vec<&String> = spec.cluster_ips.iter().flatten().collect();
    cluster.extend(spec.cluster_ip.iter());
    let cluster_ips = ipv4s(cluster.into_iter().filter(|s| s.as_str() != "None"));
    let mut external: Vec<Ipv4Addr> = ipv4s(spec.external_ips.iter().flatten());
    if kind == "LoadBalancer" {
        // ServiceLB-like: the node's own addresses serve as the load balancer.
        external.extend(node_ips);
        let ingress = svc.status.as_ref().and_then(|s| s.load_balancer.as_ref());
        let ingress = ingress.and_then(|lb| lb.ingress.as_ref()).into_iter().flatten();
        external.extend(ipv4s(ingress.filter_map(|i| i.ip.as_ref())));
        external.sort();
        external.dedup();
    }
    if cluster_ips.is_empty() && external.is_empty() {
        return Vec::new();
    }
    let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        let cfg = spec.session_affinity_config.as_ref().and_then(|c| c.client_ip.as_ref());
        let secs = cfg.and_then(|c| c.timeout_seconds).unwrap_or(10_800);
        secs.clamp(1, 86_400) as u32
    });
    let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let id = service_id(ns, Some(name));
    let own: Vec<&EndpointSlice> = slices
        .iter()
        .copied()
        .filter(|s| s.metadata.namespace.as_deref().unwrap_or("default") == ns.unwrap_or("default"))
        .filter(|s| {
            let labels = s.metadata.labels.as_ref();
            labels.and_then(|l| l.get(SERVICE_NAME_LABEL)).map(String::as_str) == Some(name)
        })
        .filter(|s| s.address_type == "IPv4")
        .collect();

    let mut out = Vec::new();
    for sp in spec.ports.iter().flatten() {
        let Some(protocol) = protocol_number(sp.protocol.as_deref()) else {
            tracing::debug!(service = id, "unsupported protocol {:?}; skipped", sp.protocol);
            continue;
        };
        let Some(svc_port) = port(sp.port) else { continue };
        let node_port = match kind {
            "NodePort" | "LoadBalancer" => sp.node_port.and_then(port),
            _ => None,
        };
        let port_name = sp.name.clone().unwrap_or_default();
        let label = if port_name.is_empty() { svc_port.to_string() } else { port_name.clone() };
        out.push(ServicePortSpec {
            key: format!("{id}/{}/{label}", proto_name(protocol)),
            service: id.clone(),
            protocol,
            port: svc_port,
            cluster_ips: cluster_ips.clone(),
            external_ips: external.clone(),
            node_port,
            affinity_timeout,
            external_local,
            internal_local,
            endpoints: endpoints_for(&own, &port_name, protocol, node_name),
        });
    }
    out
}

/// Ready endpoints of the named port; if none is ready, the serving+terminating ones (so
/// connections drain to pods shutting down gracefully rather than fail).
fn endpoints_for(
    slices: &[&EndpointSlice],
    port_name: &str,
    protocol: u8,
    node_name: &str,
) -> Vec<Endpoint> {
    let mut ready = BTreeSet::new();
    let mut terminating = BTreeSet::new();
    for slice in slices {
        let Some(target) = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or("") == port_name
                && protocol_number(p.protocol.as_deref()) == Some(protocol)
        }) else {
            continue;
        };
        let Some(target_port) = target.port.and_then(port) else { continue };
        for ep in &slice.endpoints {
            let c = ep.conditions.as_ref();
            // A nil `ready` means ready (API semantics); terminating ones are never ready.
            let is_ready = c.and_then(|c| c.ready).unwrap_or(true);
            let serving = c.and_then(|c| c.serving).unwrap_or(is_ready);
            let is_terminating = c.and_then(|c| c.terminating).unwrap_or(false);
            let local = ep.node_name.as_deref() == Some(node_name);
            for ip in ipv4s(ep.addresses.iter()) {
                let e = Endpoint { ip, port: target_port, local };
                if is_ready && !is_terminating {
                    ready.insert(e);
                } else if serving && is_terminating {
                    terminating.insert(e);
                }
            }
        }
    }
    let chosen = if ready.is_empty() { terminating } else { ready };
    chosen.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(spec: serde_json::Value) -> Service {
        serde_json::from_value(
            json!({"metadata": {"name": "web", "namespace": "ns"}, "spec": spec}),
        )
        .unwrap()
    }

    fn slice(endpoints: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "ns",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        }))
        .unwrap()
    }

    fn http_svc() -> Service {
        svc(json!({"clusterIP": "10.43.0.5", "ports": [{"name": "http", "port": 80}]}))
    }

    #[test]
    fn ready_endpoints_win_and_terminating_ones_serve_only_when_none_is_ready() {
        let both = slice(json!([
            {"addresses": ["10.42.0.2"], "conditions": {"ready": true}, "nodeName": "me"},
            {"addresses": ["10.42.0.3"],
             "conditions": {"ready": false, "serving": true, "terminating": true}},
        ]));
        let ports = service_ports(&http_svc(), &[&both], "me", &[]);
        assert_eq!(ports.len(), 1);
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            ports[0].endpoints,
            vec![Endpoint { ip: ip("10.42.0.2"), port: 8080, local: true }]
        );
        let only_terminating = slice(json!([
            {"addresses": ["10.42.0.3"],
             "conditions": {"ready": false, "serving": true, "terminating": true}},
            {"addresses": ["10.42.0.4"], "conditions": {"ready": false}},
        ]));
        let ports = service_ports(&http_svc(), &[&only_terminating], "me", &[]);
        assert_eq!(
            ports[0].endpoints,
            vec![Endpoint { ip: ip("10.42.0.3"), port: 8080, local: false }]
        );
    }

    #[test]
    fn slices_of_other_services_or_namespaces_are_ignored() {
        let mut other = slice(json!([{"addresses": ["10.42.0.9"]}]));
        other.metadata.namespace = Some("elsewhere".into());
        let ports = service_ports(&http_svc(), &[&other], "me", &[]);
        assert!(ports[0].endpoints.is_empty());
    }

    #[test]
    fn load_balancer_services_answer_on_node_addresses_with_node_ports() {
        let lb = svc(json!({"type": "LoadBalancer", "clusterIP": "10.43.0.5",
            "externalIPs": ["192.0.2.7"], "externalTrafficPolicy": "Local",
            "sessionAffinity": "ClientIP",
            "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}));
        let node = "192.168.1.10".parse().unwrap();
        let p = &service_ports(&lb, &[], "me", &[node])[0];
        assert_eq!(p.node_port, Some(30080));
        assert!(p.external_ips.contains(&node));
        assert!(p.external_ips.contains(&"192.0.2.7".parse().unwrap()));
        assert!(p.external_local);
        assert_eq!(p.affinity_timeout, Some(10_800), "the Kubernetes default timeout");
        assert_eq!(p.key, "ns/web/tcp/http");
    }

    #[test]
    fn odd_services_are_skipped_not_panicked_on() {
        let cases = [
            json!({"clusterIP": "None", "ports": [{"port": 80}]}),
            json!({"type": "ExternalName", "externalName": "example.org"}),
            json!({"clusterIP": "fd00::1", "ports": [{"port": 80}]}),
            json!({"clusterIP": "not-an-ip", "ports": [{"port": 80}]}),
            json!({"clusterIP": "10.43.0.5"}),
            json!({"clusterIP": "10.43.0.5", "ports": [{"port": 70000}, {"port": -1},
                   {"port": 80, "protocol": "ICMP"}]}),
            json!({}),
        ];
        for spec in cases {
            let sl = slice(json!([{"addresses": ["bogus", "10.42.0.2"]}]));
            assert!(service_ports(&svc(spec.clone()), &[&sl], "me", &[]).is_empty(), "{spec}");
        }
        let no_spec: Service = serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap();
        assert!(service_ports(&no_spec, &[], "me", &[]).is_empty());
    }

    #[test]
    fn unnamed_ports_match_unnamed_slice_ports_and_bad_addresses_are_dropped() {
        let s = svc(json!({"clusterIP": "10.43.0.5", "ports": [{"port": 53, "protocol": "UDP"}]}));
        let sl: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "s", "namespace": "ns",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.42.0.2", "garbage"]}],
            "ports": [{"port": 5353, "protocol": "UDP"}],
        }))
        .unwrap();
        let p = &service_ports(&s, &[&sl], "me", &[])[0];
        assert_eq!(p.protocol, 17);
        assert_eq!(p.key, "ns/web/udp/53");
        assert_eq!(p.endpoints.len(), 1);
        assert_eq!(p.endpoints[0].port, 5353);
    }
}
