//! The subsets of a Service's Endpoints, computed from its pods as the reference does: each
//! (port, address) pair is collected, ready addresses win over not-ready ones, and ports
//! served by the same set of addresses share a subset (`RepackSubsets`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, ObjectReference, Pod, Service,
};

use crate::controllers::util::{pod as podutil, service as svcutil};

/// A port, or the sentinel for "no ports" (a headless service without ports).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct PortKey {
    name: String,
    port: i32,
    protocol: String,
    app_protocol: Option<String>,
}

/// Addresses by (ip, target pod uid), with readiness.
type AddressSet = BTreeMap<(String, String), (EndpointAddress, bool)>;

/// The addresses of a port (by id, with readiness): ports with equal ones share a subset.
type AddressesKey = Vec<((String, String), bool)>;

fn address(pod: &Pod, service: &Service, ip: &str) -> EndpointAddress {
    EndpointAddress {
        ip: ip.to_string(),
        hostname: svcutil::hostname_for(pod, service).map(String::from),
        node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty()),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            ..ObjectReference::default()
        }),
    }
}

/// The subsets for `service` over the pods it selects (`pods` may hold others: they are
/// filtered here).
pub fn desired_subsets(service: &Service, pods: &[&Pod]) -> Vec<EndpointSubset> {
    let tolerate_unready = svcutil::publishes_not_ready(service);
    let mut by_port: BTreeMap<PortKey, AddressSet> = BTreeMap::new();
    for pod in pods.iter().filter(|p| svcutil::selects(service, p)) {
        if !podutil::should_be_in_endpoints(pod, tolerate_unready) {
            continue;
        }
        let Some(ip) = podutil::ip(pod) else { continue };
        let ready = tolerate_unready || podutil::is_ready(pod);
        let addr = address(pod, service, ip);
        let id = (ip.to_string(), pod.metadata.uid.clone().unwrap_or_default());
        let ports = svcutil::ports(service);
        let keys: Vec<PortKey> = if ports.is_empty() && svcutil::is_headless(service) {
            vec![PortKey {
                name: String::new(),
                port: -1,
                protocol: String::new(),
                app_protocol: None,
            }]
        } else {
            ports
                .iter()
                .filter_map(|p| {
                    Some(PortKey {
                        name: p.name.clone().unwrap_or_default(),
                        port: svcutil::target_port(pod, p)?,
                        protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        app_protocol: p.app_protocol.clone(),
                    })
                })
                .collect()
        };
        for key in keys {
            let set = by_port.entry(key).or_default();
            let entry = set.entry(id.clone()).or_insert_with(|| (addr.clone(), ready));
            // Ready wins over not ready for the same address.
            entry.1 |= ready;
        }
    }
    // Ports offered by the same addresses share one subset.
    let mut by_addresses: BTreeMap<AddressesKey, (AddressSet, Vec<PortKey>)> = BTreeMap::new();
    for (port, addresses) in by_port {
        let key: Vec<_> = addresses.iter().map(|(id, (_, ready))| (id.clone(), *ready)).collect();
        let entry = by_addresses.entry(key).or_insert_with(|| (addresses, Vec::new()));
        if port.port > 0 {
            entry.1.push(port);
        }
    }
    by_addresses
        .into_values()
        .map(|(addresses, ports)| {
            let pick = |want: bool| {
                let list: Vec<EndpointAddress> = addresses
                    .values()
                    .filter(|(_, ready)| *ready == want)
                    .map(|(a, _)| a.clone())
                    .collect();
                (!list.is_empty()).then_some(list)
            };
            let ports: Vec<EndpointPort> = ports
                .into_iter()
                .map(|p| EndpointPort {
                    name: (!p.name.is_empty()).then_some(p.name),
                    port: p.port,
                    protocol: Some(p.protocol),
                    app_protocol: p.app_protocol,
                })
                .collect();
            EndpointSubset {
                addresses: pick(true),
                not_ready_addresses: pick(false),
                ports: (!ports.is_empty()).then_some(ports),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, PodCondition, PodSpec, PodStatus, ServicePort, ServiceSpec,
    };
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn service(ports: Vec<ServicePort>, headless: bool) -> Service {
        let mut s = Service::default();
        s.metadata.name = Some("web".into());
        s.metadata.namespace = Some("default".into());
        s.spec = Some(ServiceSpec {
            selector: Some([("app".to_string(), "web".to_string())].into()),
            ports: Some(ports),
            cluster_ip: headless.then(|| "None".to_string()),
            ..ServiceSpec::default()
        });
        s
    }

    fn pod(name: &str, ip: &str, ready: bool, http_port: i32) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.namespace = Some("default".into());
        p.metadata.uid = Some(format!("uid-{name}"));
        p.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
        p.spec = Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                ports: Some(vec![ContainerPort {
                    name: Some("http".into()),
                    container_port: http_port,
                    ..Default::default()
                }]),
                ..Default::default()
            }],
            ..Default::default()
        });
        p.status = Some(PodStatus {
            pod_ip: Some(ip.into()),
            phase: Some("Running".into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        p
    }

    fn named(name: &str, port: i32, target: IntOrString) -> ServicePort {
        ServicePort {
            name: Some(name.into()),
            port,
            target_port: Some(target),
            ..Default::default()
        }
    }

    #[test]
    fn ready_and_not_ready_pods_share_a_subset_per_port_set() {
        let svc = service(vec![named("http", 80, IntOrString::String("http".into()))], false);
        let (a, b) = (pod("a", "10.42.0.2", true, 8080), pod("b", "10.42.0.3", false, 8080));
        let subsets = desired_subsets(&svc, &[&a, &b]);
        assert_eq!(subsets.len(), 1);
        assert_eq!(subsets[0].addresses.as_ref().unwrap()[0].ip, "10.42.0.2");
        assert_eq!(subsets[0].not_ready_addresses.as_ref().unwrap()[0].ip, "10.42.0.3");
        assert_eq!(subsets[0].ports.as_ref().unwrap()[0].port, 8080);
    }

    #[test]
    fn pods_resolving_a_named_port_differently_get_separate_subsets() {
        let svc = service(vec![named("http", 80, IntOrString::String("http".into()))], false);
        let (a, b) = (pod("a", "10.42.0.2", true, 8080), pod("b", "10.42.0.3", true, 9090));
        let subsets = desired_subsets(&svc, &[&a, &b]);
        let mut ports: Vec<i32> =
            subsets.iter().map(|s| s.ports.as_ref().unwrap()[0].port).collect();
        ports.sort();
        assert_eq!(ports, vec![8080, 9090]);
    }

    #[test]
    fn headless_without_ports_lists_addresses_and_publish_not_ready_counts_all_ready() {
        let mut svc = service(vec![], true);
        let b = pod("b", "10.42.0.3", false, 8080);
        let subsets = desired_subsets(&svc, &[&b]);
        assert_eq!(subsets.len(), 1);
        assert!(subsets[0].ports.is_none());
        assert!(subsets[0].addresses.is_none());
        svc.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
        let subsets = desired_subsets(&svc, &[&b]);
        assert_eq!(subsets[0].addresses.as_ref().unwrap().len(), 1);
    }
}
