//! The scheduling queue: pending pods wait in a [`WorkQueue`] (one key at a time, never twice);
//! pods that fit nowhere are *parked* in an unschedulable set instead of being retried in a hot
//! loop. A cluster change that may help (a node added or changed, a pod gone, for pods with
//! affinity a pod placed) moves parked pods back, after what is left of their backoff (1 s
//! doubling to 10 s per failed attempt, as the reference); a pod parked longer than
//! [`MAX_PARKED`] is moved back anyway. Updates to a parked pod that only touch its status
//! (the scheduler's own condition patch, say) leave it parked.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

use crate::machinery::{ObjectKey, WorkQueue};

/// First retry delay after a failed attempt.
const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Longest retry delay.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long a pod stays parked without a cluster change before it is tried again.
pub const MAX_PARKED: Duration = Duration::from_secs(60);

/// A parked pod.
#[derive(Debug, Clone)]
struct Parked {
    since: Instant,
    fingerprint: u64,
    /// Has pod affinity terms: a newly placed pod may satisfy them.
    has_affinity: bool,
}

#[derive(Debug, Default)]
struct State {
    parked: HashMap<ObjectKey, Parked>,
    /// Failed attempts since the last success, and when the last one failed.
    failures: HashMap<ObjectKey, (u32, Instant)>,
    /// Wake-ups so far, to notice one that came while a pod was being decided.
    moves: Moves,
}

/// How many wake-ups of each kind happened: an attempt remembers the counts it started with,
/// and a pod whose attempt overlapped a wake-up that concerns it is not parked (the change it
/// would have waited for may be the one its attempt did not see), as the reference's
/// `moveRequestCycle` does.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Moves {
    all: u64,
    affinity: u64,
}

/// Which parked pods a cluster change concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Room or new nodes may have appeared: every parked pod.
    All,
    /// A pod was placed: only pods whose affinity it might satisfy.
    Affinity,
}

/// Pending pods and parked unschedulable pods.
#[derive(Clone, Default)]
pub struct SchedulingQueue {
    pub work: WorkQueue<ObjectKey>,
    state: Arc<Mutex<State>>,
}

/// The reference's per-pod backoff after `attempts` failures.
pub fn backoff(attempts: u32) -> Duration {
    if attempts == 0 {
        return Duration::ZERO;
    }
    let factor = 2u32.saturating_pow((attempts - 1).min(16));
    INITIAL_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
}

/// What `isPodUpdated` compares: the pod without status, resourceVersion, generation,
/// managedFields and finalizers, hashed.
pub fn fingerprint(pod: &Pod) -> u64 {
    let mut meta = pod.metadata.clone();
    meta.resource_version = None;
    meta.generation = None;
    meta.managed_fields = None;
    meta.finalizers = None;
    let text = serde_json::to_string(&(meta, &pod.spec)).unwrap_or_default();
    let mut hasher = DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

impl SchedulingQueue {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A pending pod was added or changed: queue it, unless it is parked and the change is
    /// only to its status.
    pub fn pod_changed(&self, key: ObjectKey, fingerprint: u64) {
        let delay = {
            let mut state = self.lock();
            match state.parked.get(&key) {
                Some(parked) if parked.fingerprint == fingerprint => return,
                Some(_) => {
                    state.parked.remove(&key);
                    remaining(&state, &key, Instant::now())
                }
                None => Duration::ZERO,
            }
        };
        self.work.add_after(key, delay);
    }

    /// The wake-ups so far; taken when an attempt starts, handed to [`SchedulingQueue::park`].
    pub fn moves(&self) -> Moves {
        self.lock().moves
    }

    /// Parks a pod that fits nowhere (counts as a failed attempt), or, if a wake-up that
    /// concerns it came since `seen`, retries it after its backoff instead.
    pub fn park(&self, key: ObjectKey, fingerprint: u64, has_affinity: bool, seen: Moves) {
        let now = Instant::now();
        let delay = {
            let mut state = self.lock();
            bump(&mut state, &key, now);
            let missed = state.moves.all != seen.all
                || (has_affinity && state.moves.affinity != seen.affinity);
            if !missed {
                state.parked.insert(key, Parked { since: now, fingerprint, has_affinity });
                return;
            }
            remaining(&state, &key, now)
        };
        self.work.add_after(key, delay);
    }

    /// Retries a pod after its backoff (its binding failed).
    pub fn retry(&self, key: ObjectKey) {
        let delay = {
            let now = Instant::now();
            let mut state = self.lock();
            bump(&mut state, &key, now);
            remaining(&state, &key, now)
        };
        self.work.add_after(key, delay);
    }

    /// The pod was bound or is no longer ours to schedule: forget its failures.
    pub fn forget(&self, key: &ObjectKey) {
        let mut state = self.lock();
        state.parked.remove(key);
        state.failures.remove(key);
    }

    /// Whether the pod is parked.
    #[cfg(test)]
    pub fn is_parked(&self, key: &ObjectKey) -> bool {
        self.lock().parked.contains_key(key)
    }

    /// Moves the parked pods `wake` concerns back to the queue, after their backoff.
    pub fn wake(&self, wake: Wake) {
        {
            let mut state = self.lock();
            match wake {
                Wake::All => state.moves.all += 1,
                Wake::Affinity => state.moves.affinity += 1,
            }
        }
        self.move_where(|p| wake == Wake::All || p.has_affinity);
    }

    /// Moves back pods parked longer than `max`.
    pub fn flush_parked(&self, max: Duration) {
        let now = Instant::now();
        self.move_where(|p| now.duration_since(p.since) >= max);
    }

    fn move_where(&self, pick: impl Fn(&Parked) -> bool) {
        let now = Instant::now();
        let moved: Vec<(ObjectKey, Duration)> = {
            let mut state = self.lock();
            let keys: Vec<ObjectKey> =
                state.parked.iter().filter(|(_, p)| pick(p)).map(|(k, _)| k.clone()).collect();
            keys.into_iter()
                .map(|k| {
                    state.parked.remove(&k);
                    let delay = remaining(&state, &k, now);
                    (k, delay)
                })
                .collect()
        };
        for (key, delay) in moved {
            self.work.add_after(key, delay);
        }
    }
}

fn bump(state: &mut State, key: &ObjectKey, now: Instant) {
    let entry = state.failures.entry(key.clone()).or_insert((0, now));
    entry.0 = entry.0.saturating_add(1);
    entry.1 = now;
}

/// What is left of `key`'s backoff at `now`.
fn remaining(state: &State, key: &ObjectKey, now: Instant) -> Duration {
    match state.failures.get(key) {
        Some(&(attempts, last)) => (last + backoff(attempts)).saturating_duration_since(now),
        None => Duration::ZERO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new("default", name)
    }

    #[test]
    fn backoff_doubles_from_one_second_to_ten() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(4));
        assert_eq!(backoff(5), Duration::from_secs(10));
        assert_eq!(backoff(100), Duration::from_secs(10));
    }

    #[test]
    fn status_only_changes_do_not_change_the_fingerprint() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "resourceVersion": "1"},
            "spec": {"containers": [{"name": "c"}]}
        }))
        .unwrap();
        let mut status_changed = pod.clone();
        status_changed.metadata.resource_version = Some("2".into());
        status_changed.status = Some(Default::default());
        assert_eq!(fingerprint(&pod), fingerprint(&status_changed));
        let mut relabelled = pod.clone();
        relabelled.metadata.labels = Some([("a".to_string(), "b".to_string())].into());
        assert_ne!(fingerprint(&pod), fingerprint(&relabelled));
    }

    #[tokio::test]
    async fn parked_pods_ignore_their_own_status_updates() {
        let q = SchedulingQueue::default();
        q.park(key("p"), 7, false, q.moves());
        q.pod_changed(key("p"), 7);
        assert!(q.work.is_empty());
        assert!(q.is_parked(&key("p")));
        // A real change to the pod unparks it.
        q.pod_changed(key("p"), 8);
        assert!(!q.is_parked(&key("p")));
    }

    #[tokio::test]
    async fn waking_moves_parked_pods_back_and_affinity_wakes_only_affinity_pods() {
        let q = SchedulingQueue::default();
        q.park(key("plain"), 1, false, q.moves());
        q.park(key("affine"), 2, true, q.moves());
        q.wake(Wake::Affinity);
        assert!(q.is_parked(&key("plain")));
        assert!(!q.is_parked(&key("affine")));
        q.wake(Wake::All);
        assert!(!q.is_parked(&key("plain")));
    }

    #[tokio::test]
    async fn a_moved_pod_waits_out_its_backoff() {
        let q = SchedulingQueue::default();
        q.park(key("p"), 1, false, q.moves());
        q.wake(Wake::All);
        // One failure: the pod comes back after about a second, not at once.
        assert!(q.work.is_empty());
        let left = remaining(&q.lock(), &key("p"), Instant::now());
        assert!(left > Duration::from_millis(500) && left <= Duration::from_secs(1), "{left:?}");
        // Without failures it comes back at once.
        q.pod_changed(key("fresh"), 1);
        assert_eq!(q.work.len(), 1);
    }

    #[tokio::test]
    async fn flush_moves_only_long_parked_pods() {
        let q = SchedulingQueue::default();
        q.park(key("p"), 1, false, q.moves());
        q.flush_parked(Duration::from_secs(60));
        assert!(q.is_parked(&key("p")));
        q.flush_parked(Duration::ZERO);
        assert!(!q.is_parked(&key("p")));
    }

    #[tokio::test]
    async fn a_wake_up_during_the_attempt_keeps_the_pod_out_of_the_parking() {
        let q = SchedulingQueue::default();
        let seen = q.moves();
        q.wake(Wake::All);
        q.park(key("p"), 1, false, seen);
        assert!(!q.is_parked(&key("p")), "the node it needed may have come meanwhile");
        // An affinity wake-up concerns only pods with affinity.
        let seen = q.moves();
        q.wake(Wake::Affinity);
        q.park(key("plain"), 1, false, seen);
        q.park(key("affine"), 1, true, seen);
        assert!(q.is_parked(&key("plain")));
        assert!(!q.is_parked(&key("affine")));
    }

    #[test]
    fn forget_clears_failures() {
        let q = SchedulingQueue::default();
        q.park(key("p"), 1, false, q.moves());
        q.forget(&key("p"));
        assert!(!q.is_parked(&key("p")));
        assert_eq!(remaining(&q.lock(), &key("p"), Instant::now()), Duration::ZERO);
    }
}
