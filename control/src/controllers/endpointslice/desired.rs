//! The endpoints a Service's slices should hold, grouped by the port set they resolve to
//! (pods may resolve a named target port differently), with the reference's conditions:
//! `serving` = pod ready (or publishNotReadyAddresses), `terminating` = being deleted,
//! `ready` = serving and not terminating (or publishNotReadyAddresses).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};

use crate::controllers::util::{pod as podutil, service as svcutil};

/// The port set of a group of endpoints, as a comparable key.
pub fn ports_key(ports: &[EndpointPort]) -> String {
    let mut parts: Vec<String> = ports
        .iter()
        .map(|p| {
            format!(
                "{}/{}/{}/{}",
                p.name.as_deref().unwrap_or(""),
                p.port.unwrap_or(0),
                p.protocol.as_deref().unwrap_or("TCP"),
                p.app_protocol.as_deref().unwrap_or("")
            )
        })
        .collect();
    parts.sort();
    parts.join(",")
}

/// Endpoints of one port set.
#[derive(Debug, Clone, Default)]
pub struct PortGroup {
    pub ports: Vec<EndpointPort>,
    /// By key (the address).
    pub endpoints: BTreeMap<String, Endpoint>,
}

/// The endpoints for `service` over the pods it selects, by port set. `zone_of` gives a
/// node's `topology.kubernetes.io/zone`.
pub fn desired(
    service: &Service,
    pods: &[&Pod],
    zone_of: impl Fn(&str) -> Option<String>,
) -> BTreeMap<String, PortGroup> {
    let publish = svcutil::publishes_not_ready(service);
    let mut groups: BTreeMap<String, PortGroup> = BTreeMap::new();
    for pod in pods.iter().filter(|p| svcutil::selects(service, p)) {
        if !podutil::should_be_in_endpoints(pod, true) {
            continue;
        }
        // Slices are IPv4 (addressType); an IPv6 pod address belongs in another family's slice.
        let Some(ip) = podutil::ip(pod).filter(|ip| ip.parse::<Ipv4Addr>().is_ok()) else {
            continue;
        };
        let ports: Vec<EndpointPort> = svcutil::ports(service)
            .iter()
            .filter_map(|p| {
                Some(EndpointPort {
                    name: Some(p.name.clone().unwrap_or_default()),
                    port: Some(svcutil::target_port(pod, p)?),
                    protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
                    app_protocol: p.app_protocol.clone(),
                })
            })
            .collect();
        let serving = publish || podutil::is_ready(pod);
        let terminating = podutil::is_terminating(pod);
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty());
        let endpoint = Endpoint {
            addresses: vec![ip.to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(publish || (serving && !terminating)),
                serving: Some(serving),
                terminating: Some(terminating),
            }),
            hostname: svcutil::hostname_for(pod, service).map(String::from),
            zone: node.as_deref().and_then(&zone_of),
            node_name: node,
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                namespace: pod.metadata.namespace.clone(),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
                ..ObjectReference::default()
            }),
            ..Endpoint::default()
        };
        let group = groups
            .entry(ports_key(&ports))
            .or_insert_with(|| PortGroup { ports, ..PortGroup::default() });
        group.endpoints.insert(ip.to_string(), endpoint);
    }
    groups
}
