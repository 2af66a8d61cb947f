//! The cluster zone: every record the cluster's objects imply, indexed by owner name, kept up to
//! date one object at a time. Pure data and logic: no sockets, no clocks, no locks.
//!
//! Each object's records are derived by `build` and remembered as that object's contribution, so
//! an update removes exactly the old contribution and adds the new one. The index counts, for
//! every name, its own records and the records below it, so empty non-terminals such as
//! `ns.svc.cluster.local` answer NOERROR (NODATA), not NXDOMAIN, as long as anything lives below.
//!
//! Pod names (`a-b-c-d.ns.pod.<domain>`) follow [`PodRecords`]: by default they are answered
//! from the name alone, as CoreDNS's `pods insecure` (k3s's default), so the zone needs no Pod
//! objects and a node need not watch every pod of the cluster; `Verified` answers only the
//! addresses of pods it was fed (and gives them PTR records).

mod build;
mod lookup;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use hickory_proto::rr::rdata::{NS, SOA};
use hickory_proto::rr::{Name, RData};

use crate::error::DnsError;
use crate::names::{child, parse_domain};
use crate::objects::{
    key_of, pod_info, service_info, slice_info, Kind, Object, ObjectRef, PodInfo, ServiceInfo,
    SliceInfo, Snapshot, Update,
};

pub(crate) use lookup::{Answer, Lookup};

/// (namespace, name).
type Key = (String, String);

/// How `a-b-c-d.<ns>.pod.<domain>` names are answered (CoreDNS's `pods` option).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PodRecords {
    /// Any well-formed name resolves to the address it encodes, without a lookup (`pods
    /// insecure`); Pod objects fed to the zone are ignored, and pod IPs get no PTR records.
    #[default]
    Insecure,
    /// Only the addresses of running pods fed to the zone, in their own namespace, with PTR
    /// records (`pods verified`): needs every Pod of the cluster.
    Verified,
}

/// Who contributed a set of records.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Source {
    /// The zone's own apex records (NS and the name server's address).
    Apex,
    /// A Service with its EndpointSlices.
    Service(Key),
    /// A Pod.
    Pod(Key),
}

/// Records owned by one name (each once, with how many objects contributed it), and how many
/// records live strictly below the name.
#[derive(Debug, Default)]
struct NameEntry {
    data: Vec<(RData, usize)>,
    below: usize,
}

impl NameEntry {
    /// The distinct record data.
    fn data(&self) -> impl Iterator<Item = &RData> {
        self.data.iter().map(|(d, _)| d)
    }
}

/// An index key: a name compared case-insensitively, hashed and compared label by label with
/// plain byte operations (several times cheaper than `Name`'s own `Hash` and `Eq`, and this is
/// the per-query path).
#[derive(Clone, Debug)]
struct NameKey(Name);

impl PartialEq for NameKey {
    fn eq(&self, other: &Self) -> bool {
        same_name(&self.0, &other.0)
    }
}

impl Eq for NameKey {}

impl std::hash::Hash for NameKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let mut lower = [0u8; 64];
        for label in self.0.iter() {
            let len = label.len().min(63);
            lower[0] = u8::try_from(len).unwrap_or(63);
            for (to, from) in lower[1..=len].iter_mut().zip(label) {
                *to = from.to_ascii_lowercase();
            }
            state.write(&lower[..=len]);
        }
    }
}

/// Whether two names are equal, ignoring ASCII case (and whether they are fully qualified).
pub(crate) fn same_name(a: &Name, b: &Name) -> bool {
    let (mut left, mut right) = (a.iter(), b.iter());
    loop {
        match (left.next(), right.next()) {
            (None, None) => return true,
            (Some(l), Some(r)) if l.eq_ignore_ascii_case(r) => {}
            _ => return false,
        }
    }
}

/// The authoritative data for the cluster domain (plus PTRs for cluster addresses).
#[derive(Debug)]
pub struct ClusterZone {
    domain: Name,
    pod_zone: Name,
    ns_name: Name,
    ttl: u32,
    serial: u32,
    pod_records: PodRecords,
    services: HashMap<Key, ServiceInfo>,
    slices: HashMap<Key, SliceInfo>,
    slices_by_service: HashMap<Key, BTreeSet<String>>,
    pods: HashMap<Key, PodInfo>,
    contributions: HashMap<Source, Vec<build::Entry>>,
    index: HashMap<NameKey, NameEntry>,
}

impl ClusterZone {
    /// An empty zone for `domain` (e.g. `cluster.local`) whose records carry `ttl` seconds, with
    /// `ns.dns.<domain>` resolving to `name_server_ips` (the addresses the server listens on).
    pub fn new(domain: &str, ttl: u32, name_server_ips: &[IpAddr]) -> Result<Self, DnsError> {
        let invalid = |reason: String| DnsError::InvalidDomain { domain: domain.into(), reason };
        let domain = parse_domain(domain).map_err(invalid)?;
        let too_long = || invalid("too long to hold service names".to_string());
        let pod_zone = child(&domain, "pod").ok_or_else(too_long)?;
        let ns_name =
            child(&child(&domain, "dns").ok_or_else(too_long)?, "ns").ok_or_else(too_long)?;
        let mut zone = ClusterZone {
            domain,
            pod_zone,
            ns_name,
            ttl,
            serial: 1,
            pod_records: PodRecords::default(),
            services: HashMap::new(),
            slices: HashMap::new(),
            slices_by_service: HashMap::new(),
            pods: HashMap::new(),
            contributions: HashMap::new(),
            index: HashMap::new(),
        };
        let mut apex = vec![(zone.domain.clone(), RData::NS(NS(zone.ns_name.clone())))];
        for ip in name_server_ips.iter().filter(|ip| !ip.is_unspecified()) {
            apex.push((zone.ns_name.clone(), build::address(*ip)));
        }
        zone.set_contribution(Source::Apex, apex);
        Ok(zone)
    }

    /// The same zone answering pod names as `mode` says (before any object is applied: the
    /// pods already fed are not re-read).
    pub fn with_pod_records(mut self, mode: PodRecords) -> Self {
        self.pod_records = mode;
        self
    }

    /// How pod names are answered.
    pub fn pod_records(&self) -> PodRecords {
        self.pod_records
    }

    /// The cluster domain, fully qualified.
    pub fn domain(&self) -> &Name {
        &self.domain
    }

    /// The SOA serial: it grows with every change.
    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// Applies one watch event.
    pub fn apply(&mut self, update: Update) {
        self.serial = self.serial.wrapping_add(1);
        match update {
            Update::Apply(Object::Service(svc)) => {
                let key = key_of(&svc.metadata);
                match service_info(&svc) {
                    Some(info) => self.services.insert(key.clone(), info),
                    None => self.services.remove(&key),
                };
                self.rebuild_service(&key);
            }
            Update::Apply(Object::EndpointSlice(slice)) => {
                let key = key_of(&slice.metadata);
                let info = slice_info(&slice);
                self.set_slice(key, info);
            }
            Update::Apply(Object::Pod(_)) if self.pod_records == PodRecords::Insecure => {}
            Update::Apply(Object::Pod(pod)) => {
                let key = key_of(&pod.metadata);
                match pod_info(&pod) {
                    Some(info) => self.pods.insert(key.clone(), info),
                    None => self.pods.remove(&key),
                };
                self.rebuild_pod(&key);
            }
            Update::Delete(ObjectRef { kind, namespace, name }) => {
                let key = (namespace, name);
                match kind {
                    Kind::Service => {
                        self.services.remove(&key);
                        self.rebuild_service(&key);
                    }
                    Kind::EndpointSlice => self.set_slice(key, None),
                    Kind::Pod => {
                        self.pods.remove(&key);
                        self.rebuild_pod(&key);
                    }
                }
            }
        }
    }

    /// Replaces everything with `snapshot` (after a re-list); objects absent from it are gone.
    pub fn replace_all(&mut self, snapshot: Snapshot) {
        let mut fresh = ClusterZone {
            domain: self.domain.clone(),
            pod_zone: self.pod_zone.clone(),
            ns_name: self.ns_name.clone(),
            ttl: self.ttl,
            serial: self.serial,
            pod_records: self.pod_records,
            services: HashMap::new(),
            slices: HashMap::new(),
            slices_by_service: HashMap::new(),
            pods: HashMap::new(),
            contributions: HashMap::new(),
            index: HashMap::new(),
        };
        let apex = self.contributions.get(&Source::Apex).cloned().unwrap_or_default();
        fresh.set_contribution(Source::Apex, apex);
        // Load the inputs first and build each service once, not once per slice.
        for svc in &snapshot.services {
            if let Some(info) = service_info(svc) {
                fresh.services.insert(key_of(&svc.metadata), info);
            }
        }
        for slice in &snapshot.endpoint_slices {
            if let Some(info) = slice_info(slice) {
                let (namespace, name) = key_of(&slice.metadata);
                let owner = (namespace.clone(), info.service.clone());
                fresh.slices_by_service.entry(owner).or_default().insert(name.clone());
                fresh.slices.insert((namespace, name), info);
            }
        }
        let verified = self.pod_records == PodRecords::Verified;
        for pod in snapshot.pods.iter().filter(|_| verified) {
            if let Some(info) = pod_info(pod) {
                fresh.pods.insert(key_of(&pod.metadata), info);
            }
        }
        let service_keys: Vec<Key> = fresh.services.keys().cloned().collect();
        for key in service_keys {
            fresh.rebuild_service(&key);
        }
        let pod_keys: Vec<Key> = fresh.pods.keys().cloned().collect();
        for key in pod_keys {
            fresh.rebuild_pod(&key);
        }
        fresh.serial = self.serial.wrapping_add(1);
        *self = fresh;
    }

    /// How many names the zone holds (for metrics and tests).
    pub fn name_count(&self) -> usize {
        self.index.len()
    }

    /// The SOA record data for the zone (its minimum is the negative-caching TTL).
    pub(crate) fn soa(&self) -> SOA {
        let hostmaster = child(&self.domain, "hostmaster").unwrap_or_else(|| self.domain.clone());
        SOA::new(self.ns_name.clone(), hostmaster, self.serial, 7200, 1800, 86400, self.ttl)
    }

    /// Stores (or forgets) a slice and rebuilds the services it belonged to and belongs to.
    fn set_slice(&mut self, key: Key, info: Option<SliceInfo>) {
        let (namespace, name) = key.clone();
        let new_owner = info.as_ref().map(|i| (namespace.clone(), i.service.clone()));
        let old = match info {
            Some(info) => self.slices.insert(key, info),
            None => self.slices.remove(&key),
        };
        let old_owner = old.map(|i| (namespace, i.service));
        if let Some(owner) = &old_owner {
            if let Some(set) = self.slices_by_service.get_mut(owner) {
                set.remove(&name);
                if set.is_empty() {
                    self.slices_by_service.remove(owner);
                }
            }
        }
        if let Some(owner) = &new_owner {
            self.slices_by_service.entry(owner.clone()).or_default().insert(name);
            self.rebuild_service(owner);
        }
        if let Some(owner) = old_owner.filter(|o| Some(o) != new_owner.as_ref()) {
            self.rebuild_service(&owner);
        }
    }

    /// Recomputes the records of the service `key` from its info and slices.
    fn rebuild_service(&mut self, key: &Key) {
        let entries = match self.services.get(key) {
            Some(info) => {
                let (namespace, name) = key;
                let slice_names = self.slices_by_service.get(key);
                let slices = slice_names
                    .into_iter()
                    .flatten()
                    .filter_map(|s| self.slices.get(&(namespace.clone(), s.clone())));
                build::service_records(&self.domain, namespace, name, info, slices)
            }
            None => Vec::new(),
        };
        self.set_contribution(Source::Service(key.clone()), entries);
    }

    /// Recomputes the records of the pod `key`.
    fn rebuild_pod(&mut self, key: &Key) {
        let entries = match self.pods.get(key) {
            Some(info) => build::pod_records(&self.domain, &key.0, info),
            None => Vec::new(),
        };
        self.set_contribution(Source::Pod(key.clone()), entries);
    }

    /// Swaps `source`'s old records for `entries` in the index.
    fn set_contribution(&mut self, source: Source, entries: Vec<build::Entry>) {
        let old = self.contributions.remove(&source).unwrap_or_default();
        for (name, data) in &old {
            self.unindex(name, data);
        }
        for (name, data) in &entries {
            self.index_entry(name, data);
        }
        if !entries.is_empty() {
            self.contributions.insert(source, entries);
        }
    }

    /// The proper ancestors of `name` inside the cluster domain, down to the apex.
    fn ancestors(&self, name: &Name) -> Vec<Name> {
        let mut out = Vec::new();
        if !self.domain.zone_of(name) {
            return out;
        }
        let mut current = name.clone();
        while current.num_labels() > self.domain.num_labels() {
            current = current.base_name();
            out.push(current.clone());
        }
        out
    }

    /// The index entry of `name`.
    fn entry(&self, name: &Name) -> Option<&NameEntry> {
        self.index.get(&NameKey(name.clone()))
    }

    fn index_entry(&mut self, name: &Name, data: &RData) {
        let entry = self.index.entry(NameKey(name.clone())).or_default();
        match entry.data.iter_mut().find(|(d, _)| d == data) {
            Some((_, count)) => *count += 1,
            None => entry.data.push((data.clone(), 1)),
        }
        for ancestor in self.ancestors(name) {
            self.index.entry(NameKey(ancestor)).or_default().below += 1;
        }
    }

    fn unindex(&mut self, name: &Name, data: &RData) {
        let key = NameKey(name.clone());
        if let Some(entry) = self.index.get_mut(&key) {
            if let Some(pos) = entry.data.iter().position(|(d, _)| d == data) {
                entry.data[pos].1 -= 1;
                if entry.data[pos].1 == 0 {
                    entry.data.remove(pos);
                }
            }
        }
        self.prune(key);
        for ancestor in self.ancestors(name) {
            let key = NameKey(ancestor);
            if let Some(entry) = self.index.get_mut(&key) {
                entry.below = entry.below.saturating_sub(1);
            }
            self.prune(key);
        }
    }

    /// Drops the index entry of a name that no longer owns or covers anything.
    fn prune(&mut self, key: NameKey) {
        if self.index.get(&key).is_some_and(|e| e.data.is_empty() && e.below == 0) {
            self.index.remove(&key);
        }
    }
}
