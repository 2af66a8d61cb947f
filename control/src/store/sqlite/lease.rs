//! Lease clocks: when each granted lease expires.
//!
//! Grants and revokes are writes (they go through the writer and the `leases` table); the
//! deadlines are not, like etcd's lessor: a keep-alive only moves a deadline in memory, and a
//! restart gives every lease its full TTL again. The maintenance thread asks
//! [`LeaseClocks::take_expired`] for overdue leases and revokes them through the writer, which
//! deletes their keys and emits the delete events.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::store::LeaseId;

struct Clock {
    granted_ttl: i64,
    deadline: Instant,
    /// A revoke for this lease is on its way to the writer.
    revoking: bool,
}

/// Deadlines of the granted leases.
#[derive(Default)]
pub(crate) struct LeaseClocks {
    clocks: Mutex<HashMap<LeaseId, Clock>>,
}

fn deadline(ttl: i64) -> Instant {
    Instant::now() + Duration::from_secs(ttl.max(0) as u64)
}

impl LeaseClocks {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<LeaseId, Clock>> {
        self.clocks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the clock of a newly granted (or reloaded) lease.
    pub(crate) fn granted(&self, id: LeaseId, ttl: i64) {
        self.lock()
            .insert(id, Clock { granted_ttl: ttl, deadline: deadline(ttl), revoking: false });
    }

    /// Forgets a revoked lease.
    pub(crate) fn revoked(&self, id: LeaseId) {
        self.lock().remove(&id);
    }

    /// Refreshes a live lease to its granted TTL; `None` if unknown or already expired.
    pub(crate) fn keep_alive(&self, id: LeaseId) -> Option<i64> {
        let mut clocks = self.lock();
        let clock = clocks.get_mut(&id)?;
        if clock.deadline <= Instant::now() {
            return None;
        }
        clock.deadline = deadline(clock.granted_ttl);
        Some(clock.granted_ttl)
    }

    /// Whole seconds left and the granted TTL; `None` if unknown.
    pub(crate) fn remaining(&self, id: LeaseId) -> Option<(i64, i64)> {
        let clocks = self.lock();
        let clock = clocks.get(&id)?;
        let left = clock.deadline.saturating_duration_since(Instant::now()).as_secs() as i64;
        Some((left, clock.granted_ttl))
    }

    /// Every granted lease, in id order.
    pub(crate) fn ids(&self) -> Vec<LeaseId> {
        let mut ids: Vec<_> = self.lock().keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Leases past their deadline with no revoke on its way yet; marks them as being revoked.
    pub(crate) fn take_expired(&self) -> Vec<LeaseId> {
        let now = Instant::now();
        let mut clocks = self.lock();
        let mut out = Vec::new();
        for (id, clock) in clocks.iter_mut() {
            if !clock.revoking && clock.deadline <= now {
                clock.revoking = true;
                out.push(*id);
            }
        }
        out
    }

    /// A revoke failed: let the next sweep try again.
    pub(crate) fn revoke_failed(&self, id: LeaseId) {
        if let Some(clock) = self.lock().get_mut(&id) {
            clock.revoking = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_refreshes_only_live_leases() {
        let clocks = LeaseClocks::default();
        clocks.granted(1, 60);
        clocks.granted(2, 0);
        assert_eq!(clocks.keep_alive(1), Some(60));
        assert_eq!(clocks.keep_alive(2), None, "a lease past its deadline cannot be kept alive");
        assert_eq!(clocks.keep_alive(3), None);
        assert_eq!(clocks.take_expired(), vec![2]);
        assert!(clocks.take_expired().is_empty(), "an expired lease is handed out once");
        clocks.revoke_failed(2);
        assert_eq!(clocks.take_expired(), vec![2]);
        clocks.revoked(2);
        assert_eq!(clocks.ids(), vec![1]);
    }
}
