//! Request metrics in the Prometheus text format, under the reference apiserver's names:
//! `apiserver_request_total{verb,resource,code}`, `apiserver_request_duration_seconds` (a
//! histogram by verb and resource) and `apiserver_registered_watchers` (open watches).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Histogram bucket bounds, seconds.
const BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 1.0, 2.5, 5.0, 10.0];

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Debug, Default)]
struct Tables {
    requests: BTreeMap<(String, String, u16), u64>,
    durations: BTreeMap<(String, String), Histogram>,
}

/// The server's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    tables: Mutex<Tables>,
    watchers: AtomicI64,
}

/// Decrements the watcher gauge when a watch ends.
#[derive(Debug)]
pub struct WatcherGuard<'a>(&'a Metrics);

impl Drop for WatcherGuard<'_> {
    fn drop(&mut self) {
        self.0.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    /// Records one finished request.
    pub fn observe(&self, verb: &str, resource: &str, code: u16, elapsed: Duration) {
        let mut tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        let verb = verb.to_ascii_uppercase();
        *tables.requests.entry((verb.clone(), resource.to_string(), code)).or_default() += 1;
        // A watch's duration is its lifetime, not a latency: keep it out of the histogram.
        if verb == "WATCH" {
            return;
        }
        let h = tables.durations.entry((verb, resource.to_string())).or_default();
        let secs = elapsed.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// Counts an open watch until the guard drops.
    pub fn watcher(&self) -> WatcherGuard<'_> {
        self.watchers.fetch_add(1, Ordering::Relaxed);
        WatcherGuard(self)
    }

    /// Number of open watches.
    pub fn watchers(&self) -> i64 {
        self.watchers.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        out.push_str("# HELP apiserver_request_total Counter of apiserver requests by verb, resource and HTTP code.\n");
        out.push_str("# TYPE apiserver_request_total counter\n");
        for ((verb, resource, code), n) in &tables.requests {
            let _ = writeln!(
                out,
                "apiserver_request_total{{verb=\"{verb}\",resource=\"{resource}\",code=\"{code}\"}} {n}"
            );
        }
        out.push_str(
            "# HELP apiserver_request_duration_seconds Response latency by verb and resource.\n",
        );
        out.push_str("# TYPE apiserver_request_duration_seconds histogram\n");
        for ((verb, resource), h) in &tables.durations {
            let labels = format!("verb=\"{verb}\",resource=\"{resource}\"");
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "apiserver_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "apiserver_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(out, "apiserver_request_duration_seconds_sum{{{labels}}} {}", h.sum);
            let _ =
                writeln!(out, "apiserver_request_duration_seconds_count{{{labels}}} {}", h.count);
        }
        out.push_str("# HELP apiserver_registered_watchers Number of currently open watches.\n");
        out.push_str("# TYPE apiserver_registered_watchers gauge\n");
        let _ = writeln!(out, "apiserver_registered_watchers {}", self.watchers());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_histogram_render() {
        let m = Metrics::default();
        m.observe("get", "pods", 200, Duration::from_millis(3));
        m.observe("get", "pods", 200, Duration::from_millis(300));
        m.observe("create", "pods", 409, Duration::from_millis(1));
        let guard = m.watcher();
        let text = m.render();
        assert!(
            text.contains("apiserver_request_total{verb=\"GET\",resource=\"pods\",code=\"200\"} 2")
        );
        assert!(text
            .contains("apiserver_request_total{verb=\"CREATE\",resource=\"pods\",code=\"409\"} 1"));
        assert!(text.contains(
            "apiserver_request_duration_seconds_bucket{verb=\"GET\",resource=\"pods\",le=\"0.005\"} 1"
        ));
        assert!(text.contains("apiserver_registered_watchers 1"));
        drop(guard);
        assert_eq!(m.watchers(), 0);
    }
}
