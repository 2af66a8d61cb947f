//! CPU usage as a rate: cgroups only count cumulative CPU time, so a rate needs two readings.
//!
//! The background sampler records a reading of every cgroup each [`SAMPLE_PERIOD`]; a request
//! takes a fresh reading and divides the CPU time consumed since the newest recorded reading
//! that is at least [`MIN_WINDOW`] old by the time between them. The window is thus at most
//! two sample periods and at least one second, and the answer is as fresh as the request
//! (metrics-server's own scrape-to-scrape window is 10–15 s). A cgroup first seen less than
//! `MIN_WINDOW` before the request has no rate yet and is left out, as metrics-server leaves
//! out a container with a single scrape.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::cgroup::Usage;

/// How often the background sampler records a reading.
pub const SAMPLE_PERIOD: Duration = Duration::from_secs(10);
/// The shortest window a rate is computed over (shorter ones are mostly noise).
pub const MIN_WINDOW: Duration = Duration::from_secs(1);
/// Readings kept per cgroup: with two, a reading just taken never leaves a request without
/// an older one.
const KEPT: usize = 2;

/// One reading, with when it was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub at: Instant,
    pub usage: Usage,
}

/// A CPU rate over a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Average CPU use over the window in nanocores (10⁹ = one core fully busy).
    pub nano_cores: u64,
    /// The time between the two readings.
    pub window: Duration,
}

/// The rate between an older and a newer reading; `None` when the window is shorter than
/// [`MIN_WINDOW`] or the counter went backwards (a different cgroup under the same key).
pub fn rate(older: &Sample, newer: &Sample) -> Option<Rate> {
    let window = newer.at.checked_duration_since(older.at)?;
    if window < MIN_WINDOW {
        return None;
    }
    let used = newer.usage.cpu_ns.checked_sub(older.usage.cpu_ns)?;
    let nano_cores = (u128::from(used) * 1_000_000_000 / window.as_nanos()) as u64;
    Some(Rate { nano_cores, window })
}

/// Recent readings of every cgroup, by key (a container id, or the node).
#[derive(Debug, Default)]
pub struct History {
    samples: HashMap<String, VecDeque<Sample>>,
}

impl History {
    /// Records one round of readings; keys absent from the round (containers gone) are dropped.
    pub fn record(&mut self, round: impl IntoIterator<Item = (String, Sample)>) {
        let mut next: HashMap<String, VecDeque<Sample>> = HashMap::new();
        for (key, sample) in round {
            let mut kept = self.samples.remove(&key).unwrap_or_default();
            kept.push_back(sample);
            while kept.len() > KEPT {
                kept.pop_front();
            }
            next.insert(key, kept);
        }
        self.samples = next;
    }

    /// The rate from the newest recorded reading of `key` at least [`MIN_WINDOW`] older than
    /// `now` to `now`.
    pub fn rate(&self, key: &str, now: &Sample) -> Option<Rate> {
        let kept = self.samples.get(key)?;
        kept.iter().rev().find_map(|older| rate(older, now))
    }

    /// The latest recorded reading of `key`.
    pub fn latest(&self, key: &str) -> Option<&Sample> {
        self.samples.get(key)?.back()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(start: Instant, secs: f64, cpu_ns: u64) -> Sample {
        let usage = Usage { cpu_ns, working_set_bytes: 0 };
        Sample { at: start + Duration::from_secs_f64(secs), usage }
    }

    #[test]
    fn rate_is_cpu_time_over_wall_time_in_nanocores() {
        let t = Instant::now();
        // 2.5 s of CPU in 10 s: a quarter of a core.
        let r = rate(&sample(t, 0.0, 1_000_000_000), &sample(t, 10.0, 3_500_000_000)).unwrap();
        assert_eq!(r.nano_cores, 250_000_000);
        assert_eq!(r.window, Duration::from_secs(10));
        // Two busy cores.
        let r = rate(&sample(t, 0.0, 0), &sample(t, 2.0, 4_000_000_000)).unwrap();
        assert_eq!(r.nano_cores, 2_000_000_000);
    }

    #[test]
    fn no_rate_over_a_too_short_window_or_a_reset_counter() {
        let t = Instant::now();
        assert_eq!(rate(&sample(t, 0.0, 0), &sample(t, 0.5, 100)), None);
        assert_eq!(rate(&sample(t, 0.0, 500), &sample(t, 5.0, 100)), None);
        assert_eq!(rate(&sample(t, 5.0, 0), &sample(t, 0.0, 100)), None);
    }

    #[test]
    fn history_uses_the_newest_reading_old_enough_and_forgets_gone_keys() {
        let t = Instant::now();
        let mut h = History::default();
        h.record([("a".to_string(), sample(t, 0.0, 0)), ("b".to_string(), sample(t, 0.0, 0))]);
        h.record([("a".to_string(), sample(t, 10.0, 1_000_000_000))]);
        // 0.5 s after the newest reading: too short, so the window reaches the older one.
        let r = h.rate("a", &sample(t, 10.5, 2_050_000_000)).unwrap();
        assert_eq!(r.window, Duration::from_secs_f64(10.5));
        assert_eq!(r.nano_cores, 195_238_095);
        // 5 s after it: the newest reading is used.
        let r = h.rate("a", &sample(t, 15.0, 2_000_000_000)).unwrap();
        assert_eq!((r.window, r.nano_cores), (Duration::from_secs(5), 200_000_000));
        // "b" was not in the last round: gone, so no rate.
        assert_eq!(h.rate("b", &sample(t, 15.0, 1)), None);
        // Only the last two readings are kept.
        h.record([("a".to_string(), sample(t, 20.0, 2_000_000_000))]);
        h.record([("a".to_string(), sample(t, 30.0, 3_000_000_000))]);
        let r = h.rate("a", &sample(t, 30.5, 3_000_000_000)).unwrap();
        assert_eq!(r.window, Duration::from_secs_f64(10.5));
        assert_eq!(h.latest("a").map(|s| s.usage.cpu_ns), Some(3_000_000_000));
    }
}
