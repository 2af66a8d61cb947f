//! The per-node ranges of the cluster's pod network (the reference's `cidrset`): the cluster
//! CIDR split into subnets of the node mask size, handed out lowest first, each at most once.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// Why a range could not be handed out or taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("no remaining CIDRs in cluster CIDR {0}")]
    Full(String),
    #[error("{0:?} is not a /{1} inside cluster CIDR {2}")]
    Outside(String, u8, String),
}

/// The subnets of one cluster CIDR and which are taken.
#[derive(Debug, Clone)]
pub struct CidrSet {
    base: u32,
    cluster_prefix: u8,
    node_prefix: u8,
    taken: BTreeSet<u32>,
}

impl CidrSet {
    /// The subnets of `/node_prefix` inside `base/cluster_prefix` (`node_prefix` is clamped to
    /// at least `cluster_prefix` and at most 32).
    pub fn new(base: Ipv4Addr, cluster_prefix: u8, node_prefix: u8) -> CidrSet {
        let cluster_prefix = cluster_prefix.min(32);
        let node_prefix = node_prefix.clamp(cluster_prefix, 32);
        let mask = if cluster_prefix == 0 { 0 } else { u32::MAX << (32 - cluster_prefix) };
        CidrSet {
            base: u32::from(base) & mask,
            cluster_prefix,
            node_prefix,
            taken: BTreeSet::new(),
        }
    }

    fn count(&self) -> u64 {
        1u64 << (self.node_prefix - self.cluster_prefix)
    }

    fn cluster(&self) -> String {
        format!("{}/{}", Ipv4Addr::from(self.base), self.cluster_prefix)
    }

    fn subnet(&self, index: u32) -> String {
        let step = if self.node_prefix == 32 { 1 } else { 1u64 << (32 - self.node_prefix) };
        let address = u64::from(self.base) + u64::from(index) * step;
        format!("{}/{}", Ipv4Addr::from(address as u32), self.node_prefix)
    }

    /// The index of `cidr` if it is one of this set's subnets.
    fn index_of(&self, cidr: &str) -> Result<u32, CidrError> {
        let outside = || CidrError::Outside(cidr.to_string(), self.node_prefix, self.cluster());
        let (address, prefix) = cidr.split_once('/').ok_or_else(outside)?;
        let address: Ipv4Addr = address.parse().map_err(|_| outside())?;
        if prefix.parse::<u8>().ok() != Some(self.node_prefix) {
            return Err(outside());
        }
        let offset =
            u64::from(u32::from(address)).checked_sub(u64::from(self.base)).ok_or_else(outside)?;
        let step = if self.node_prefix == 32 { 1 } else { 1u64 << (32 - self.node_prefix) };
        if offset % step != 0 || offset / step >= self.count() {
            return Err(outside());
        }
        u32::try_from(offset / step).map_err(|_| outside())
    }

    /// Marks `cidr` as taken (a node that already has it); taking it twice is fine.
    pub fn occupy(&mut self, cidr: &str) -> Result<(), CidrError> {
        let index = self.index_of(cidr)?;
        self.taken.insert(index);
        Ok(())
    }

    /// Gives `cidr` back.
    pub fn release(&mut self, cidr: &str) {
        if let Ok(index) = self.index_of(cidr) {
            self.taken.remove(&index);
        }
    }

    /// Hands out the lowest free subnet.
    pub fn allocate(&mut self) -> Result<String, CidrError> {
        let count = self.count();
        let mut candidate = 0u64;
        for taken in &self.taken {
            if u64::from(*taken) != candidate {
                break;
            }
            candidate += 1;
        }
        if candidate >= count {
            return Err(CidrError::Full(self.cluster()));
        }
        let index = candidate as u32;
        self.taken.insert(index);
        Ok(self.subnet(index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_lowest_free_subnets_once() {
        let mut set = CidrSet::new(Ipv4Addr::new(10, 42, 0, 0), 16, 24);
        set.occupy("10.42.1.0/24").unwrap();
        assert_eq!(set.allocate().unwrap(), "10.42.0.0/24");
        assert_eq!(set.allocate().unwrap(), "10.42.2.0/24");
        set.release("10.42.0.0/24");
        assert_eq!(set.allocate().unwrap(), "10.42.0.0/24");
        assert_eq!(set.allocate().unwrap(), "10.42.3.0/24");
    }

    #[test]
    fn a_full_set_and_foreign_ranges_are_errors() {
        let mut set = CidrSet::new(Ipv4Addr::new(10, 42, 0, 0), 23, 24);
        assert_eq!(set.allocate().unwrap(), "10.42.0.0/24");
        assert_eq!(set.allocate().unwrap(), "10.42.1.0/24");
        assert!(matches!(set.allocate(), Err(CidrError::Full(_))));
        assert!(set.occupy("10.43.0.0/24").is_err());
        assert!(set.occupy("10.42.0.0/25").is_err());
        assert!(set.occupy("10.42.0.128/24").is_err());
        assert!(set.occupy("garbage").is_err());
    }
}
