//! The backoff between replacements of failed daemon pods on one node (the reference's
//! `failedPodsBackoff`, 1 s doubling to 15 min): a node whose agent keeps rejecting the pod
//! (a host port taken, a missing device) would otherwise see a create-fail-delete loop as fast
//! as the API allows. An entry not touched for twice the maximum starts over.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

const INITIAL: Duration = Duration::from_secs(1);
const MAX: Duration = Duration::from_secs(15 * 60);
/// Entries kept before the expired ones are swept.
const SWEEP_AT: usize = 1024;

#[derive(Debug, Clone, Copy)]
struct Entry {
    backoff: Duration,
    last_update: Instant,
}

impl Entry {
    fn expired(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_update) > 2 * MAX
    }
}

/// Backoff per key (`<ds uid>/<observed generation>/<node>`); clones share the table.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    entries: Arc<Mutex<HashMap<String, Entry>>>,
}

impl Backoff {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long `key` still backs off at `now` since its last [`Backoff::next`], if at all.
    pub fn remaining(&self, key: &str, now: Instant) -> Option<Duration> {
        let entry = *self.lock().get(key)?;
        let elapsed = now.saturating_duration_since(entry.last_update);
        (elapsed < entry.backoff).then(|| entry.backoff - elapsed)
    }

    /// Records a replacement for `key` at `now`: the next backoff doubles (up to the maximum).
    pub fn next(&self, key: &str, now: Instant) {
        let mut entries = self.lock();
        if entries.len() >= SWEEP_AT {
            entries.retain(|_, e| !e.expired(now));
        }
        let backoff = match entries.get(key) {
            Some(e) if !e.expired(now) => (e.backoff * 2).min(MAX),
            _ => INITIAL,
        };
        entries.insert(key.to_string(), Entry { backoff, last_update: now });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_per_replacement_and_lapses() {
        let b = Backoff::default();
        let t0 = Instant::now();
        assert_eq!(b.remaining("k", t0), None, "the first failure is replaced at once");
        b.next("k", t0);
        assert_eq!(b.remaining("k", t0), Some(INITIAL));
        let t1 = t0 + INITIAL;
        assert_eq!(b.remaining("k", t1), None);
        b.next("k", t1);
        assert_eq!(
            b.remaining("k", t1 + Duration::from_millis(500)),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(b.remaining("other", t1), None, "per key");
        // Long after, it starts over.
        let later = t1 + 3 * MAX;
        b.next("k", later);
        assert_eq!(b.remaining("k", later), Some(INITIAL));
    }
}
