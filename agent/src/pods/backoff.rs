//! CrashLoopBackOff: how long a container that exited waits before its next start. The
//! kubelet's rule: the first restart is immediate, then 10 s doubling up to 5 minutes; a
//! container that ran for 10 minutes before exiting starts over at the beginning.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The first back-off delay.
pub const INITIAL: Duration = Duration::from_secs(10);
/// The longest back-off delay.
pub const MAX: Duration = Duration::from_secs(300);
/// A container that ran this long before exiting is not crash-looping.
pub const RESET_AFTER: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The delay to apply after the next exit.
    delay: Duration,
    /// No start before this instant.
    not_before: Instant,
}

/// Back-off state per container (keyed by container name within one pod).
#[derive(Debug, Default)]
pub struct Backoff {
    entries: HashMap<String, Entry>,
}

impl Backoff {
    /// Whether `container` may start now. `ran_for` is how long the exited instance ran.
    /// Returns `Err(remaining)` while backing off.
    pub fn may_start(
        &mut self,
        container: &str,
        ran_for: Duration,
        now: Instant,
    ) -> Result<(), Duration> {
        if ran_for >= RESET_AFTER {
            self.entries.remove(container);
        }
        match self.entries.get(container) {
            Some(e) if now < e.not_before => Err(e.not_before - now),
            _ => Ok(()),
        }
    }

    /// Records a restart at `now`: the next one waits for the current delay, which doubles.
    pub fn restarted(&mut self, container: &str, now: Instant) {
        let entry = self
            .entries
            .entry(container.to_string())
            .or_insert(Entry { delay: Duration::ZERO, not_before: now });
        entry.delay = if entry.delay.is_zero() { INITIAL } else { (entry.delay * 2).min(MAX) };
        entry.not_before = now + entry.delay;
    }

    /// The delay now in force for `container` (for the CrashLoopBackOff message).
    pub fn delay(&self, container: &str) -> Duration {
        self.entries.get(container).map_or(Duration::ZERO, |e| e.delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_restart_is_immediate_then_delays_double_to_five_minutes() {
        let mut b = Backoff::default();
        let t0 = Instant::now();
        assert!(b.may_start("c", Duration::ZERO, t0).is_ok());
        b.restarted("c", t0);
        assert_eq!(b.may_start("c", Duration::ZERO, t0), Err(INITIAL));
        let t1 = t0 + INITIAL;
        assert!(b.may_start("c", Duration::ZERO, t1).is_ok());
        b.restarted("c", t1);
        assert_eq!(b.delay("c"), Duration::from_secs(20));
        for _ in 0..10 {
            b.restarted("c", t1);
        }
        assert_eq!(b.delay("c"), MAX);
        // Ten minutes of running resets it.
        assert!(b.may_start("c", RESET_AFTER, t1).is_ok());
        assert_eq!(b.delay("c"), Duration::ZERO);
    }
}
