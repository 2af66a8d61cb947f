//! Pod address management, persisted on disk like CNI's host-local plugin.
//!
//! Each allocated address is a file `<dir>/<ip>` holding the pod id, created with `O_EXCL` so
//! an address is never handed out twice, even across agent restarts. `<dir>/last` remembers
//! the last address given so allocation moves round-robin through the range and a freshly
//! released address is not reused at once (a stale conntrack entry or ARP cache could still
//! point at its old owner).

use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;

/// Errors from address allocation.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// Every usable address of the range is taken.
    #[error("no free address left in {0}")]
    Exhausted(Ipv4Net),
    /// The pod id cannot be stored (empty or with a newline).
    #[error("invalid pod id {0:?}")]
    InvalidPodId(String),
    /// The state directory could not be read or written.
    #[error("IPAM state {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> IpamError + '_ {
    move |source| IpamError::Io { path: path.to_path_buf(), source }
}

/// The address allocator of one node's pod CIDR.
#[derive(Debug, Clone)]
pub struct Ipam {
    dir: PathBuf,
    range: Ipv4Net,
}

impl Ipam {
    /// Opens (creating if needed) the allocator state in `dir` for `range`.
    pub fn open(dir: &Path, range: Ipv4Net) -> Result<Self, IpamError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        Ok(Ipam { dir: dir.to_path_buf(), range: range.trunc() })
    }

    /// The gateway address: the first of the range, owned by the bridge.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.range.network()) + 1)
    }

    /// The range handed out from.
    pub fn range(&self) -> Ipv4Net {
        self.range
    }

    /// The address already held by `pod_id`, if any (so a retried attach is idempotent).
    pub fn lookup(&self, pod_id: &str) -> Result<Option<Ipv4Addr>, IpamError> {
        Ok(self.allocations()?.into_iter().find(|(_, id)| id == pod_id).map(|(ip, _)| ip))
    }

    /// Allocates an address for `pod_id` (returning the one it holds already, if any).
    pub fn allocate(&self, pod_id: &str) -> Result<Ipv4Addr, IpamError> {
        if pod_id.is_empty() || pod_id.contains('\n') {
            return Err(IpamError::InvalidPodId(pod_id.to_string()));
        }
        if let Some(ip) = self.lookup(pod_id)? {
            return Ok(ip);
        }
        let first = u32::from(self.gateway()) + 1;
        let last = u32::from(self.range.broadcast()).saturating_sub(1);
        if last < first {
            return Err(IpamError::Exhausted(self.range));
        }
        let count = last - first + 1;
        let start = match self.last_given()? {
            Some(ip) if (first..=last).contains(&u32::from(ip)) => u32::from(ip) - first + 1,
            _ => 0,
        };
        for step in 0..count {
            let ip = Ipv4Addr::from(first + (start + step) % count);
            let path = self.dir.join(ip.to_string());
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    file.write_all(pod_id.as_bytes()).map_err(io_err(&path))?;
                    file.sync_all().map_err(io_err(&path))?;
                    let last_path = self.dir.join("last");
                    std::fs::write(&last_path, ip.to_string()).map_err(io_err(&last_path))?;
                    return Ok(ip);
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
        Err(IpamError::Exhausted(self.range))
    }

    /// Releases every address held by `pod_id`; releasing nothing is not an error.
    pub fn release(&self, pod_id: &str) -> Result<Vec<Ipv4Addr>, IpamError> {
        let mut released = Vec::new();
        for (ip, id) in self.allocations()? {
            if id == pod_id {
                let path = self.dir.join(ip.to_string());
                match std::fs::remove_file(&path) {
                    Ok(()) => released.push(ip),
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err(&path)(e)),
                }
            }
        }
        Ok(released)
    }

    /// Releases the addresses of every pod not in `live` (leaks from a crash); returns them.
    pub fn gc(&self, live: &[&str]) -> Result<Vec<(Ipv4Addr, String)>, IpamError> {
        let mut freed = Vec::new();
        for (ip, id) in self.allocations()? {
            if !live.contains(&id.as_str()) {
                let path = self.dir.join(ip.to_string());
                std::fs::remove_file(&path).map_err(io_err(&path))?;
                freed.push((ip, id));
            }
        }
        Ok(freed)
    }

    /// Every allocation on disk as (address, pod id); files that are not addresses are ignored.
    pub fn allocations(&self) -> Result<Vec<(Ipv4Addr, String)>, IpamError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let entry = entry.map_err(io_err(&self.dir))?;
            let Some(ip) = entry.file_name().to_str().and_then(|n| n.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            let path = entry.path();
            match std::fs::read_to_string(&path) {
                Ok(id) => out.push((ip, id.trim().to_string())),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
        out.sort();
        Ok(out)
    }

    fn last_given(&self) -> Result<Option<Ipv4Addr>, IpamError> {
        let path = self.dir.join("last");
        match std::fs::read_to_string(&path) {
            Ok(s) => Ok(s.trim().parse().ok()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipam(dir: &Path, cidr: &str) -> Ipam {
        Ipam::open(dir, cidr.parse().unwrap()).unwrap()
    }

    #[test]
    fn allocates_after_the_gateway_and_is_idempotent_per_pod() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = ipam(dir.path(), "10.42.3.0/24");
        assert_eq!(ipam.gateway(), Ipv4Addr::new(10, 42, 3, 1));
        let a = ipam.allocate("pod-a").unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 42, 3, 2));
        assert_eq!(ipam.allocate("pod-a").unwrap(), a);
        assert_eq!(ipam.allocate("pod-b").unwrap(), Ipv4Addr::new(10, 42, 3, 3));
    }

    #[test]
    fn never_hands_out_an_address_twice_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let a = ipam(dir.path(), "10.42.3.0/24").allocate("pod-a").unwrap();
        // A new allocator over the same directory is what an agent restart sees.
        let reopened = ipam(dir.path(), "10.42.3.0/24");
        let b = reopened.allocate("pod-b").unwrap();
        assert_ne!(a, b);
        assert_eq!(reopened.lookup("pod-a").unwrap(), Some(a));
    }

    #[test]
    fn released_addresses_are_reused_only_after_the_rest_of_the_range() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = ipam(dir.path(), "10.0.0.0/29"); // usable: .2 to .6
        let a = ipam.allocate("a").unwrap();
        assert_eq!(ipam.release("a").unwrap(), vec![a]);
        let next = ipam.allocate("b").unwrap();
        assert_ne!(next, a, "round-robin moves on instead of reusing at once");
        for pod in ["c", "d", "e", "f"] {
            ipam.allocate(pod).unwrap();
        }
        assert!(matches!(ipam.allocate("g"), Err(IpamError::Exhausted(_))));
    }

    #[test]
    fn gc_frees_addresses_of_pods_that_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = ipam(dir.path(), "10.42.3.0/24");
        let live = ipam.allocate("live").unwrap();
        let dead = ipam.allocate("dead").unwrap();
        let freed = ipam.gc(&["live"]).unwrap();
        assert_eq!(freed, vec![(dead, "dead".to_string())]);
        assert_eq!(ipam.allocations().unwrap(), vec![(live, "live".to_string())]);
    }

    #[test]
    fn rejects_pod_ids_that_cannot_be_stored() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = ipam(dir.path(), "10.42.3.0/24");
        assert!(matches!(ipam.allocate(""), Err(IpamError::InvalidPodId(_))));
        assert!(matches!(ipam.allocate("a\nb"), Err(IpamError::InvalidPodId(_))));
    }
}
