//! Answering one question from the cluster zone: the authoritative half of the server.
//!
//! Names inside the cluster domain always get an authoritative answer: the records, a CNAME (and
//! its in-zone target), NODATA or NXDOMAIN, the last two with the SOA in the authority section.
//! Reverse names get an answer only when a cluster address owns them; everything else is left to
//! the forwarder, as is the target of an ExternalName CNAME that points outside the cluster.

use std::collections::HashSet;
use std::net::IpAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::{build, same_name, ClusterZone, NameEntry, PodRecords};
use crate::names::{is_dns_label, undashed_ip};

/// How many CNAMEs we follow inside the zone before giving up (ExternalName loops).
const MAX_CNAME_HOPS: usize = 8;

/// The zone's verdict on a question.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// Not ours: ask the upstream resolvers.
    Forward,
    /// An authoritative answer.
    Local(Answer),
}

/// An authoritative answer's sections.
#[derive(Debug, Default)]
pub(crate) struct Answer {
    /// NOERROR or NXDOMAIN.
    pub rcode: ResponseCode,
    /// The answer section.
    pub answers: Vec<Record>,
    /// The authority section (the SOA for negative answers).
    pub authorities: Vec<Record>,
    /// The additional section (addresses of SRV targets).
    pub additionals: Vec<Record>,
    /// A CNAME target outside the cluster domain, to be resolved upstream and appended.
    pub chase: Option<Name>,
}

/// Whether `data` answers a question of type `qtype`.
fn matches(data: &RData, qtype: RecordType) -> bool {
    qtype == RecordType::ANY || data.record_type() == qtype
}

impl ClusterZone {
    /// Answers `qname`/`qtype` (class IN) from the zone, or says it is not ours.
    pub(crate) fn lookup(&self, qname: &Name, qtype: RecordType) -> Lookup {
        if self.domain.zone_of(qname) {
            return Lookup::Local(self.lookup_in_domain(qname, qtype));
        }
        // Reverse lookups: ours only when a cluster address owns the name (CoreDNS's
        // "fallthrough in-addr.arpa"); the rest of the reverse space belongs upstream.
        if matches!(qtype, RecordType::PTR | RecordType::ANY) {
            if let Some(entry) = self.entry(qname) {
                let answer = Answer {
                    answers: self.records(qname, entry, RecordType::PTR),
                    ..Answer::default()
                };
                if !answer.answers.is_empty() {
                    return Lookup::Local(answer);
                }
            }
        }
        Lookup::Forward
    }

    fn lookup_in_domain(&self, qname: &Name, qtype: RecordType) -> Answer {
        let mut answer = Answer::default();
        let mut name = qname.clone();
        for _ in 0..MAX_CNAME_HOPS {
            if same_name(&name, &self.domain) && matches!(qtype, RecordType::SOA | RecordType::ANY)
            {
                answer.answers.push(self.soa_record(&name));
                if qtype == RecordType::SOA {
                    return answer;
                }
            }
            if let Some(ip) = self.insecure_pod_address(&name) {
                let data = build::address(ip);
                if matches(&data, qtype) {
                    answer.answers.push(Record::from_rdata(name, self.ttl, data));
                } else {
                    answer.authorities.push(self.soa_record(&self.domain));
                }
                return answer;
            }
            let Some(entry) = self.entry(&name) else {
                // Also right after an in-zone CNAME: the target's NXDOMAIN is the answer (RFC 6604).
                answer.rcode = ResponseCode::NXDomain;
                answer.authorities.push(self.soa_record(&self.domain));
                return answer;
            };
            let found = self.records(&name, entry, qtype);
            if !found.is_empty() {
                self.add_srv_targets(&found, &mut answer.additionals);
                answer.answers.extend(found);
                return answer;
            }
            let cname = entry.data().find_map(|d| match d {
                RData::CNAME(target) if qtype != RecordType::CNAME => Some(target.0.clone()),
                _ => None,
            });
            let Some(target) = cname else {
                answer.authorities.push(self.soa_record(&self.domain));
                return answer;
            };
            answer.answers.push(Record::from_rdata(
                name.clone(),
                self.ttl,
                RData::CNAME(hickory_proto::rr::rdata::CNAME(target.clone())),
            ));
            if !self.domain.zone_of(&target) {
                answer.chase = Some(target);
                return answer;
            }
            name = target;
        }
        tracing::warn!(name = %qname, "CNAME chain too long inside the cluster domain");
        answer.rcode = ResponseCode::ServFail;
        answer
    }

    /// The address `<dashed-ip>.<namespace>.pod.<domain>` encodes, when pod names are answered
    /// insecurely (CoreDNS's `pods insecure`: no lookup, any namespace that is a valid name).
    fn insecure_pod_address(&self, name: &Name) -> Option<IpAddr> {
        if self.pod_records != PodRecords::Insecure
            || name.num_labels() != self.pod_zone.num_labels() + 2
            || !self.pod_zone.zone_of(name)
        {
            return None;
        }
        let mut labels = name.iter().map(|l| String::from_utf8_lossy(l).to_ascii_lowercase());
        let (ip, namespace) = (labels.next()?, labels.next()?);
        if !is_dns_label(&namespace) {
            return None;
        }
        undashed_ip(&ip)
    }

    /// The records of `name` matching `qtype`, owned by `name` as asked (its case preserved).
    fn records(&self, name: &Name, entry: &NameEntry, qtype: RecordType) -> Vec<Record> {
        let mut found: Vec<&RData> = entry.data().filter(|d| matches(d, qtype)).collect();
        // An address that is both a headless endpoint and a pod: the service name is the one
        // Kubernetes DNS gives (the pod name is only the fallback).
        let is_pod_ptr = |d: &RData| matches!(d, RData::PTR(p) if self.pod_zone.zone_of(&p.0));
        if found.iter().any(|d| matches!(d, RData::PTR(_)) && !is_pod_ptr(d)) {
            found.retain(|d| !is_pod_ptr(d));
        }
        found.into_iter().map(|d| Record::from_rdata(name.clone(), self.ttl, d.clone())).collect()
    }

    /// Adds the addresses of SRV targets (saves clients a round trip).
    fn add_srv_targets(&self, answers: &[Record], additionals: &mut Vec<Record>) {
        let mut done = HashSet::new();
        for record in answers {
            let RData::SRV(srv) = &record.data else { continue };
            if !done.insert(srv.target.clone()) {
                continue;
            }
            if let Some(entry) = self.entry(&srv.target) {
                for qtype in [RecordType::A, RecordType::AAAA] {
                    additionals.extend(self.records(&srv.target, entry, qtype));
                }
            }
        }
    }

    fn soa_record(&self, owner: &Name) -> Record {
        Record::from_rdata(owner.clone(), self.ttl, RData::SOA(self.soa()))
    }
}
