//! Request metrics in the Prometheus text format, under the reference apiserver's names:
//! `apiserver_request_total{verb,resource,code}`, `apiserver_request_duration_seconds` (a
//! histogram by verb and resource), `apiserver_registered_watchers` (open watches) and
//! `etcd_request_duration_seconds` (store calls by operation and resource type).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::store::metered::LatencySink;

/// Histogram bucket bounds, seconds.
const BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 1.0, 2.5, 5.0, 10.0];

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += secs;
    }

    /// The `_bucket`, `_sum` and `_count` lines of `name` with `labels`.
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {}", self.counts[i]);
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

#[derive(Debug, Default)]
struct Tables {
    requests: BTreeMap<(String, String, u16), u64>,
    durations: BTreeMap<(String, String), Histogram>,
    store: BTreeMap<(&'static str, String), Histogram>,
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
        tables.durations.entry((verb, resource.to_string())).or_default().observe(elapsed);
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
            h.render(&mut out, "apiserver_request_duration_seconds", &labels);
        }
        out.push_str("# HELP etcd_request_duration_seconds Store call latency by operation and resource type.\n");
        out.push_str("# TYPE etcd_request_duration_seconds histogram\n");
        for ((operation, kind), h) in &tables.store {
            let labels = format!("operation=\"{operation}\",type=\"{kind}\"");
            h.render(&mut out, "etcd_request_duration_seconds", &labels);
        }
        out.push_str("# HELP apiserver_registered_watchers Number of currently open watches.\n");
        out.push_str("# TYPE apiserver_registered_watchers gauge\n");
        let _ = writeln!(out, "apiserver_registered_watchers {}", self.watchers());
        out
    }
}

impl LatencySink for Metrics {
    fn observe_store(&self, operation: &'static str, resource_type: &str, elapsed: Duration) {
        let mut tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        let key = (operation, resource_type.to_string());
        tables.store.entry(key).or_default().observe(elapsed);
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
        m.observe_store("range", "pods", Duration::from_millis(2));
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
        assert!(text.contains(
            "etcd_request_duration_seconds_bucket{operation=\"range\",type=\"pods\",le=\"0.005\"} 1"
        ));
        drop(guard);
        assert_eq!(m.watchers(), 0);
    }
}
