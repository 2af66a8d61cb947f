//! Services as the endpoint controllers read them: the selector, headlessness, hostnames of
//! pods behind a headless service, and a service port's target port resolved on a pod
//! (`podutil.FindPort`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::selector;

/// The selector of a Service that has one; a Service without one has user-managed endpoints.
pub fn selector(service: &Service) -> Option<&BTreeMap<String, String>> {
    service.spec.as_ref()?.selector.as_ref().filter(|s| !s.is_empty())
}

/// Whether `pod` is selected by `service` (which must have a selector).
pub fn selects(service: &Service, pod: &Pod) -> bool {
    selector(service).is_some_and(|s| {
        pod.metadata.namespace == service.metadata.namespace
            && selector::map_matches(s, pod.metadata.labels.as_ref())
    })
}

/// `clusterIP: None`.
pub fn is_headless(service: &Service) -> bool {
    service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// `publishNotReadyAddresses`.
pub fn publishes_not_ready(service: &Service) -> bool {
    service.spec.as_ref().and_then(|s| s.publish_not_ready_addresses).unwrap_or(false)
}

/// The service's ports.
pub fn ports(service: &Service) -> &[ServicePort] {
    service.spec.as_ref().and_then(|s| s.ports.as_deref()).unwrap_or_default()
}

/// The reference's `ShouldSetHostname`: a pod with `hostname` and `subdomain` equal to a
/// headless service's name gets that hostname in its endpoints.
pub fn hostname_for<'a>(pod: &'a Pod, service: &Service) -> Option<&'a str> {
    let spec = pod.spec.as_ref()?;
    let hostname = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    let same = spec.subdomain.is_some()
        && spec.subdomain == service.metadata.name
        && pod.metadata.namespace == service.metadata.namespace;
    (is_headless(service) && same).then_some(hostname)
}

/// The container port a service port reaches on `pod`: a numeric `targetPort` as is (the
/// service port when unset), a named one looked up among the pod's container ports with the
/// same protocol; `None` when the pod has no such port.
pub fn target_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    let protocol = port.protocol.as_deref().unwrap_or("TCP");
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(0)) => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            if let Ok(n) = name.parse::<i32>() {
                return Some(n);
            }
            pod.spec.as_ref()?.containers.iter().flat_map(|c| c.ports.iter().flatten()).find_map(
                |p| {
                    (p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol)
                        .then_some(p.container_port)
                },
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, ContainerPort, PodSpec};

    #[test]
    fn named_target_ports_resolve_per_pod_and_protocol() {
        let pod = Pod {
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(vec![
                        ContainerPort {
                            name: Some("http".into()),
                            container_port: 8080,
                            ..Default::default()
                        },
                        ContainerPort {
                            name: Some("dns".into()),
                            container_port: 53,
                            protocol: Some("UDP".into()),
                            ..Default::default()
                        },
                    ]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let port = |target: IntOrString, protocol: &str| ServicePort {
            port: 80,
            target_port: Some(target),
            protocol: Some(protocol.into()),
            ..Default::default()
        };
        assert_eq!(target_port(&pod, &port(IntOrString::String("http".into()), "TCP")), Some(8080));
        assert_eq!(target_port(&pod, &port(IntOrString::String("dns".into()), "TCP")), None);
        assert_eq!(target_port(&pod, &port(IntOrString::String("dns".into()), "UDP")), Some(53));
        assert_eq!(target_port(&pod, &port(IntOrString::Int(9000), "TCP")), Some(9000));
    }
}
