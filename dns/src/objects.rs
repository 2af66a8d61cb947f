//! The Kubernetes objects the DNS is fed with, and their reduction to the few fields DNS needs.
//!
//! The agent watches Services, EndpointSlices and Pods and hands each change to
//! [`DnsHandle::apply`](crate::DnsHandle::apply) as an [`Update`], or a whole re-list to
//! [`DnsHandle::replace_all`](crate::DnsHandle::replace_all) as a [`Snapshot`]. We keep only the
//! compact `*Info` forms below (an edge node should not hold whole objects twice), built by
//! functions that never panic on odd input: a field that makes no sense is skipped with a warning.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::names::is_dns_label;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// One watched object.
// Moved once per watch event, never stored: boxing would only burden every caller.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Object {
    /// A Service (ClusterIP, headless, NodePort, LoadBalancer or ExternalName).
    Service(Service),
    /// An EndpointSlice (its `kubernetes.io/service-name` label names the Service).
    EndpointSlice(EndpointSlice),
    /// A Pod (for `a-b-c-d.ns.pod.<domain>` and pod PTR records).
    Pod(Pod),
}

impl From<Service> for Object {
    fn from(o: Service) -> Self {
        Object::Service(o)
    }
}

impl From<EndpointSlice> for Object {
    fn from(o: EndpointSlice) -> Self {
        Object::EndpointSlice(o)
    }
}

impl From<Pod> for Object {
    fn from(o: Pod) -> Self {
        Object::Pod(o)
    }
}

/// Which kind of object an [`ObjectRef`] names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// core/v1 Service.
    Service,
    /// discovery.k8s.io/v1 EndpointSlice.
    EndpointSlice,
    /// core/v1 Pod.
    Pod,
}

/// The identity of a watched object: enough to delete it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ObjectRef {
    /// The object's kind.
    pub kind: Kind,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl ObjectRef {
    /// The reference to `object`.
    pub fn of(object: &Object) -> Self {
        let (kind, meta) = match object {
            Object::Service(o) => (Kind::Service, &o.metadata),
            Object::EndpointSlice(o) => (Kind::EndpointSlice, &o.metadata),
            Object::Pod(o) => (Kind::Pod, &o.metadata),
        };
        let (namespace, name) = key_of(meta);
        ObjectRef { kind, namespace, name }
    }
}

/// One change seen by a watch.
#[allow(clippy::large_enum_variant)] // as for `Object`
#[derive(Clone, Debug)]
pub enum Update {
    /// The object was created or modified (a watch `ADDED`/`MODIFIED`).
    Apply(Object),
    /// The object is gone (a watch `DELETED`).
    Delete(ObjectRef),
}

impl Update {
    /// `Update::Apply` of any watched type.
    pub fn apply(object: impl Into<Object>) -> Self {
        Update::Apply(object.into())
    }

    /// `Update::Delete` of the object given (only its kind, namespace and name are used).
    pub fn delete(object: impl Into<Object>) -> Self {
        Update::Delete(ObjectRef::of(&object.into()))
    }
}

/// The complete state after a (re-)list: replaces everything the DNS knew.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Every Service in the cluster.
    pub services: Vec<Service>,
    /// Every EndpointSlice in the cluster.
    pub endpoint_slices: Vec<EndpointSlice>,
    /// Every Pod the DNS should name (all pods: any pod can be queried from any node).
    pub pods: Vec<Pod>,
}

/// (namespace, name) of an object; an absent namespace is "default", as the API server does.
pub(crate) fn key_of(meta: &ObjectMeta) -> (String, String) {
    let namespace = meta.namespace.clone().unwrap_or_else(|| "default".to_string());
    (namespace, meta.name.clone().unwrap_or_default())
}

/// A named port, for SRV records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NamedPort {
    /// The port's name (an RFC 1123 label).
    pub name: String,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// The port number.
    pub port: u16,
}

/// What a Service contributes to DNS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ServiceInfo {
    /// A service with cluster IPs (ClusterIP, NodePort, LoadBalancer).
    ClusterIp {
        /// Its cluster IPs (both families for dual-stack).
        ips: Vec<IpAddr>,
        /// Its named ports.
        ports: Vec<NamedPort>,
    },
    /// `clusterIP: None`: names resolve to the endpoints themselves.
    Headless {
        /// Whether not-ready endpoints are published too.
        publish_not_ready: bool,
    },
    /// `type: ExternalName`: a CNAME to this (lower-case, absolute) name.
    ExternalName(String),
}

/// One endpoint of an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EndpointInfo {
    /// Its address (the first one, as kube-proxy uses).
    pub ip: IpAddr,
    /// `endpoints[].hostname` (set for pods with hostname + subdomain, e.g. StatefulSets).
    pub hostname: Option<String>,
    /// `conditions.ready`; unknown counts as ready, as the API documents.
    pub ready: bool,
}

/// What an EndpointSlice contributes to DNS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SliceInfo {
    /// The Service it belongs to (its `kubernetes.io/service-name` label).
    pub service: String,
    /// Its endpoints with IP addresses (FQDN slices carry none).
    pub endpoints: Vec<EndpointInfo>,
    /// Its named ports (the target ports, used by SRV records of headless services).
    pub ports: Vec<NamedPort>,
}

/// What a Pod contributes to DNS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PodInfo {
    /// Its IPs (`status.podIPs`, or `status.podIP`).
    pub ips: Vec<IpAddr>,
    /// Whether it uses the node's network (its IP is the node's: no pod PTR then).
    pub host_network: bool,
}

/// A port name, protocol and number, if all make sense for an SRV record.
fn named_port(name: Option<&str>, protocol: Option<&str>, port: Option<i32>) -> Option<NamedPort> {
    let name = name.filter(|n| is_dns_label(n))?;
    let port = u16::try_from(port?).ok().filter(|p| *p != 0)?;
    let protocol = protocol.unwrap_or("TCP").to_ascii_lowercase();
    if !matches!(protocol.as_str(), "tcp" | "udp" | "sctp") {
        return None;
    }
    Some(NamedPort { name: name.to_string(), protocol, port })
}

/// An IP from an API string, or None (with a warning) if it does not parse.
fn parse_ip(text: &str, what: &str) -> Option<IpAddr> {
    match text.parse() {
        Ok(ip) => Some(ip),
        Err(_) => {
            tracing::warn!(address = text, "ignoring unparsable {what} address");
            None
        }
    }
}

/// Reduces a Service to its DNS facts; None for a service that yields no records.
pub(crate) fn service_info(svc: &Service) -> Option<ServiceInfo> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        let target = spec.external_name.as_deref()?.trim().trim_end_matches('.');
        if target.is_empty() || !target.split('.').all(is_dns_label_relaxed) {
            tracing::warn!(target, "ignoring ExternalName service with an invalid name");
            return None;
        }
        return Some(ServiceInfo::ExternalName(format!("{}.", target.to_ascii_lowercase())));
    }
    let mut texts: Vec<&str> = spec.cluster_ips.iter().flatten().map(String::as_str).collect();
    if texts.is_empty() {
        texts.extend(spec.cluster_ip.as_deref());
    }
    if texts.first().is_some_and(|t| t.eq_ignore_ascii_case("None")) {
        return Some(ServiceInfo::Headless {
            publish_not_ready: spec.publish_not_ready_addresses.unwrap_or(false),
        });
    }
    let ips: Vec<IpAddr> = texts.iter().filter_map(|t| parse_ip(t, "cluster IP")).collect();
    if ips.is_empty() {
        // Not allocated yet: the service gets records once the API server assigns an IP.
        return None;
    }
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| named_port(p.name.as_deref(), p.protocol.as_deref(), Some(p.port)))
        .collect();
    Some(ServiceInfo::ClusterIp { ips, ports })
}

/// Like `is_dns_label`, but accepting upper case, as external names are not Kubernetes names.
fn is_dns_label_relaxed(label: &str) -> bool {
    is_dns_label(&label.to_ascii_lowercase())
}

/// Reduces an EndpointSlice to its DNS facts; None for a slice without a service label.
pub(crate) fn slice_info(slice: &EndpointSlice) -> Option<SliceInfo> {
    let service = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?.clone();
    if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
        return None;
    }
    let endpoints = slice
        .endpoints
        .iter()
        .filter_map(|ep| {
            let ip = parse_ip(ep.addresses.first()?, "endpoint")?;
            let hostname = ep.hostname.clone().filter(|h| is_dns_label(h));
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            Some(EndpointInfo { ip, hostname, ready })
        })
        .collect();
    let ports = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|p| named_port(p.name.as_deref(), p.protocol.as_deref(), p.port))
        .collect();
    Some(SliceInfo { service, endpoints, ports })
}

/// Reduces a Pod to its DNS facts; None for a pod without an IP or that has finished.
pub(crate) fn pod_info(pod: &Pod) -> Option<PodInfo> {
    let status = pod.status.as_ref()?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        // A finished pod's IP goes back to the pool: naming it would point at someone else.
        return None;
    }
    let mut ips: Vec<IpAddr> =
        status.pod_ips.iter().flatten().filter_map(|p| parse_ip(&p.ip, "pod")).collect();
    if ips.is_empty() {
        ips.extend(status.pod_ip.as_deref().and_then(|t| parse_ip(t, "pod")));
    }
    if ips.is_empty() {
        return None;
    }
    let host_network = pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false);
    Some(PodInfo { ips, host_network })
}
