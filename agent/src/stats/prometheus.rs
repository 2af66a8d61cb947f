//! A usage [`Report`] in the Prometheus text format (0.0.4), with the metric names and labels
//! of the kubelet's `/metrics/resource`: `node_cpu_usage_seconds_total`,
//! `node_memory_working_set_bytes`, `container_cpu_usage_seconds_total` and
//! `container_memory_working_set_bytes` (labels `container`, `namespace`, `pod`), the pod
//! totals `pod_cpu_usage_seconds_total` and `pod_memory_working_set_bytes`, and `scrape_error`.
//! Counters are cumulative, so every running container shows from its first reading.

use std::fmt::Write;

use super::Report;

/// The content type of the rendered text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Escapes a label value (backslash, double quote, newline).
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// One metric family: help, type, and its samples (labels, value).
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, String)]) {
    let _ = writeln!(out, "# HELP {name} [STABLE] {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

/// Nanoseconds as seconds with full precision.
fn seconds(ns: u64) -> String {
    format!("{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000)
}

/// Renders `report`; pods no longer in the agent's cache (no name) are left out, as the
/// kubelet leaves out containers it cannot attribute.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let (mut cpu, mut mem, mut pod_cpu, mut pod_mem) = (vec![], vec![], vec![], vec![]);
    for pod in report.pods.iter().filter(|p| !p.name.is_empty()) {
        let pod_labels =
            format!("namespace=\"{}\",pod=\"{}\"", escape(&pod.namespace), escape(&pod.name));
        let (mut total_cpu, mut total_mem) = (0u64, 0u64);
        for c in &pod.containers {
            let labels = format!("{{container=\"{}\",{pod_labels}}}", escape(&c.name));
            cpu.push((labels.clone(), seconds(c.usage.cpu_usage_core_nano_seconds)));
            mem.push((labels, c.usage.memory_working_set_bytes.to_string()));
            total_cpu = total_cpu.saturating_add(c.usage.cpu_usage_core_nano_seconds);
            total_mem = total_mem.saturating_add(c.usage.memory_working_set_bytes);
        }
        pod_cpu.push((format!("{{{pod_labels}}}"), seconds(total_cpu)));
        pod_mem.push((format!("{{{pod_labels}}}"), total_mem.to_string()));
    }
    family(
        &mut out,
        "container_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the container in core-seconds",
        &cpu,
    );
    family(
        &mut out,
        "container_memory_working_set_bytes",
        "gauge",
        "Current working set of the container in bytes",
        &mem,
    );
    let node_cpu: Vec<(String, String)> = report
        .node
        .iter()
        .map(|n| (String::new(), seconds(n.cpu_usage_core_nano_seconds)))
        .collect();
    let node_mem: Vec<(String, String)> = report
        .node
        .iter()
        .map(|n| (String::new(), n.memory_working_set_bytes.to_string()))
        .collect();
    family(
        &mut out,
        "node_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the node in core-seconds",
        &node_cpu,
    );
    family(
        &mut out,
        "node_memory_working_set_bytes",
        "gauge",
        "Current working set of the node in bytes",
        &node_mem,
    );
    family(
        &mut out,
        "pod_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the pod in core-seconds",
        &pod_cpu,
    );
    family(
        &mut out,
        "pod_memory_working_set_bytes",
        "gauge",
        "Current working set of the pod in bytes",
        &pod_mem,
    );
    let error = if report.node.is_some() { "0" } else { "1" };
    family(
        &mut out,
        "scrape_error",
        "gauge",
        "1 if there was an error while getting container metrics, 0 otherwise",
        &[(String::new(), error.to_string())],
    );
    out
}

#[cfg(test)]
mod tests {
    use super::super::{ContainerUsage, NodeUsage, PodUsage};
    use super::*;

    fn usage(cpu_ns: u64, bytes: u64) -> NodeUsage {
        NodeUsage {
            timestamp: "2026-01-01T00:00:00Z".into(),
            window_seconds: None,
            cpu_usage_nano_cores: None,
            cpu_usage_core_nano_seconds: cpu_ns,
            memory_working_set_bytes: bytes,
        }
    }

    #[test]
    fn renders_the_kubelet_resource_metrics() {
        let report = Report {
            node: Some(usage(12_500_000_000, 1 << 30)),
            pods: vec![
                PodUsage {
                    uid: "u1".into(),
                    namespace: "default".into(),
                    name: "web".into(),
                    containers: vec![
                        ContainerUsage { name: "app".into(), usage: usage(1_000_000_001, 4096) },
                        ContainerUsage { name: "side".into(), usage: usage(500_000_000, 1024) },
                    ],
                },
                PodUsage {
                    uid: "u2".into(),
                    namespace: String::new(),
                    name: String::new(),
                    containers: vec![ContainerUsage { name: "gone".into(), usage: usage(1, 1) }],
                },
            ],
        };
        let text = render(&report);
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                "container_cpu_usage_seconds_total{container=\"app\",namespace=\"default\",pod=\"web\"} 1.000000001",
                "container_cpu_usage_seconds_total{container=\"side\",namespace=\"default\",pod=\"web\"} 0.500000000",
                "container_memory_working_set_bytes{container=\"app\",namespace=\"default\",pod=\"web\"} 4096",
                "container_memory_working_set_bytes{container=\"side\",namespace=\"default\",pod=\"web\"} 1024",
                "node_cpu_usage_seconds_total 12.500000000",
                "node_memory_working_set_bytes 1073741824",
                "pod_cpu_usage_seconds_total{namespace=\"default\",pod=\"web\"} 1.500000001",
                "pod_memory_working_set_bytes{namespace=\"default\",pod=\"web\"} 5120",
                "scrape_error 0",
            ]
        );
        assert!(text.contains("# TYPE container_cpu_usage_seconds_total counter\n"));
        assert!(text.contains("# TYPE node_memory_working_set_bytes gauge\n"));
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
