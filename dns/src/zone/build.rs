//! Which records each Service and Pod produces: the Kubernetes DNS specification as a pure
//! function from the reduced objects (see `objects`) to `(owner name, record data)` pairs.
//!
//! - ClusterIP: `svc.ns.svc.D` A/AAAA, `_port._proto.svc.ns.svc.D` SRV, PTR per cluster IP.
//! - Headless: `svc.ns.svc.D` A/AAAA per ready endpoint, `host.svc.ns.svc.D` per endpoint (its
//!   `hostname`, else its dashed IP), SRV per endpoint and named port, PTR to `host.svc…`.
//! - ExternalName: `svc.ns.svc.D` CNAME.
//! - Pods: `a-b-c-d.ns.pod.D` A/AAAA, and PTR unless the pod uses the host network.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SRV};
use hickory_proto::rr::{Name, RData};

use crate::names::{child, dashed_ip, reverse_name};
use crate::objects::{PodInfo, ServiceInfo, SliceInfo};

/// A record before it gets a TTL and a class: owner name and data.
pub(crate) type Entry = (Name, RData);

/// The address record (A or AAAA) for `ip`.
pub(crate) fn address(ip: IpAddr) -> RData {
    match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    }
}

/// `<name>.<ns>.svc.<domain>`, or None if the labels do not form a valid name.
pub(crate) fn service_name(domain: &Name, namespace: &str, name: &str) -> Option<Name> {
    child(&child(&child(domain, "svc")?, namespace)?, name)
}

/// `<a-b-c-d>.<ns>.pod.<domain>`.
pub(crate) fn pod_name(domain: &Name, namespace: &str, ip: IpAddr) -> Option<Name> {
    child(&child(&child(domain, "pod")?, namespace)?, &dashed_ip(ip))
}

/// Collects entries, dropping exact duplicates (dual-stack slices can repeat a hostname's SRV).
#[derive(Default)]
struct Entries {
    seen: HashSet<Entry>,
    list: Vec<Entry>,
}

impl Entries {
    fn push(&mut self, name: Name, data: RData) {
        let entry = (name, data);
        if self.seen.insert(entry.clone()) {
            self.list.push(entry);
        }
    }
}

/// The records of the Service `namespace/name` given its info and its EndpointSlices.
pub(crate) fn service_records<'a>(
    domain: &Name,
    namespace: &str,
    name: &str,
    info: &ServiceInfo,
    slices: impl Iterator<Item = &'a SliceInfo>,
) -> Vec<Entry> {
    let Some(base) = service_name(domain, namespace, name) else {
        tracing::warn!(namespace, name, "service name does not form a DNS name");
        return Vec::new();
    };
    let mut out = Entries::default();
    match info {
        ServiceInfo::ExternalName(target) => match Name::from_ascii(target) {
            Ok(target) => out.push(base, RData::CNAME(CNAME(target))),
            Err(e) => tracing::warn!(namespace, name, error = %e, "bad ExternalName target"),
        },
        ServiceInfo::ClusterIp { ips, ports } => {
            for ip in ips {
                out.push(base.clone(), address(*ip));
                out.push(reverse_name(*ip), RData::PTR(PTR(base.clone())));
            }
            for port in ports {
                if let Some(owner) = srv_owner(&base, &port.name, &port.protocol) {
                    out.push(owner, RData::SRV(SRV::new(0, 100, port.port, base.clone())));
                }
            }
        }
        ServiceInfo::Headless { publish_not_ready } => {
            // SRV owner -> (port, target) pairs; weights are shared out once all are known.
            let mut srv: BTreeMap<Name, Vec<(u16, Name)>> = BTreeMap::new();
            for slice in slices {
                for ep in slice.endpoints.iter().filter(|e| e.ready || *publish_not_ready) {
                    let label = ep.hostname.clone().unwrap_or_else(|| dashed_ip(ep.ip));
                    let Some(host) = child(&base, &label) else { continue };
                    out.push(base.clone(), address(ep.ip));
                    out.push(host.clone(), address(ep.ip));
                    out.push(reverse_name(ep.ip), RData::PTR(PTR(host.clone())));
                    for port in &slice.ports {
                        if let Some(owner) = srv_owner(&base, &port.name, &port.protocol) {
                            let targets = srv.entry(owner).or_default();
                            if !targets.contains(&(port.port, host.clone())) {
                                targets.push((port.port, host.clone()));
                            }
                        }
                    }
                }
            }
            for (owner, targets) in srv {
                // Equal shares of 100, as CoreDNS does; never 0 (which means "last resort").
                let weight = u16::try_from((100 / targets.len()).max(1)).unwrap_or(1);
                for (port, target) in targets {
                    out.push(owner.clone(), RData::SRV(SRV::new(0, weight, port, target)));
                }
            }
        }
    }
    out.list
}

/// `_<port>._<proto>.<base>`.
fn srv_owner(base: &Name, port: &str, protocol: &str) -> Option<Name> {
    child(&child(base, &format!("_{protocol}"))?, &format!("_{port}"))
}

/// The records of a Pod in `namespace`.
pub(crate) fn pod_records(domain: &Name, namespace: &str, info: &PodInfo) -> Vec<Entry> {
    let mut out = Entries::default();
    for ip in &info.ips {
        let Some(name) = pod_name(domain, namespace, *ip) else { continue };
        out.push(name.clone(), address(*ip));
        if !info.host_network {
            out.push(reverse_name(*ip), RData::PTR(PTR(name)));
        }
    }
    out.list
}
