//! Expectations (the reference's `UIDTrackingControllerExpectations`): after a sync creates or
//! deletes pods, the owner is not synced again until the pod informer has shown those creations
//! and deletions, because until then the cache still shows the old count and a second sync would
//! create (or delete) the same pods again. Creations are counted (the pods have no uid before
//! they exist); deletions are tracked by uid. A record older than five minutes is ignored, so a
//! lost watch event delays a sync but never blocks it forever.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::machinery::ObjectKey;

/// The reference's `ExpectationsTimeout`.
const TTL: Duration = Duration::from_secs(5 * 60);

#[derive(Debug)]
struct Record {
    creations: i64,
    deletions: HashSet<String>,
    set_at: Instant,
}

/// Outstanding creations and deletions per owner; clones share the table.
#[derive(Debug, Clone, Default)]
pub struct Expectations {
    table: Arc<Mutex<HashMap<ObjectKey, Record>>>,
}

impl Expectations {
    fn lock(&self) -> MutexGuard<'_, HashMap<ObjectKey, Record>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the informer has caught up with what the last sync of `key` did.
    pub fn satisfied(&self, key: &ObjectKey) -> bool {
        match self.lock().get(key) {
            None => true,
            Some(r) => (r.creations <= 0 && r.deletions.is_empty()) || r.set_at.elapsed() > TTL,
        }
    }

    /// The next sync of `key` creates `count` pods.
    pub fn expect_creations(&self, key: &ObjectKey, count: usize) {
        let creations = i64::try_from(count).unwrap_or(i64::MAX);
        let record = Record { creations, deletions: HashSet::new(), set_at: Instant::now() };
        self.lock().insert(key.clone(), record);
    }

    /// The next sync of `key` deletes the pods with these uids.
    pub fn expect_deletions(&self, key: &ObjectKey, uids: impl IntoIterator<Item = String>) {
        let record =
            Record { creations: 0, deletions: uids.into_iter().collect(), set_at: Instant::now() };
        self.lock().insert(key.clone(), record);
    }

    /// The next sync of `key` creates `count` pods and deletes the pods with these uids (the
    /// reference's `SetExpectations`, for controllers that do both in one sync).
    pub fn expect(&self, key: &ObjectKey, count: usize, uids: impl IntoIterator<Item = String>) {
        let creations = i64::try_from(count).unwrap_or(i64::MAX);
        let deletions = uids.into_iter().collect();
        self.lock().insert(key.clone(), Record { creations, deletions, set_at: Instant::now() });
    }

    /// A pod of `key` appeared (or a planned creation will not happen).
    pub fn creation_observed(&self, key: &ObjectKey) {
        if let Some(record) = self.lock().get_mut(key) {
            record.creations -= 1;
        }
    }

    /// The pod `uid` of `key` is gone or terminating (or its deletion failed).
    pub fn deletion_observed(&self, key: &ObjectKey, uid: &str) {
        if let Some(record) = self.lock().get_mut(key) {
            record.deletions.remove(uid);
        }
    }

    /// Forgets `key` (its owner was deleted).
    pub fn forget(&self, key: &ObjectKey) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creations_are_counted_down() {
        let e = Expectations::default();
        let key = ObjectKey::new("ns", "rs");
        assert!(e.satisfied(&key));
        e.expect_creations(&key, 2);
        assert!(!e.satisfied(&key));
        e.creation_observed(&key);
        assert!(!e.satisfied(&key));
        e.creation_observed(&key);
        assert!(e.satisfied(&key));
    }

    #[test]
    fn deletions_are_tracked_by_uid() {
        let e = Expectations::default();
        let key = ObjectKey::new("ns", "rs");
        e.expect_deletions(&key, ["a".to_string(), "b".to_string()]);
        e.deletion_observed(&key, "a");
        // Seeing the same deletion twice does not count twice.
        e.deletion_observed(&key, "a");
        assert!(!e.satisfied(&key));
        e.deletion_observed(&key, "b");
        assert!(e.satisfied(&key));
        e.forget(&key);
        assert!(e.satisfied(&key));
    }
}
