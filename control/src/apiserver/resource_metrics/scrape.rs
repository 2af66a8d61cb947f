//! Asking nodes for their usage: `GET /stats/resource` over each node's agent tunnel (the wire
//! contract with `skerry_agent::stats::Report`, spelled out again here as this crate cannot
//! link the agent's), all nodes at once, each with [`SCRAPE_TIMEOUT`]. A node that does not
//! answer in time, or answers badly, is left out of the result (and logged), as
//! metrics-server leaves out a node whose kubelet it cannot scrape.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use serde::Deserialize;

use super::super::server::ApiServer;

/// How long one node may take to answer.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest report accepted (a node with thousands of containers stays far below).
const MAX_REPORT_BYTES: usize = 16 << 20;

/// Usage of the node or of one container, as the agent reports it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// When the reading was taken (RFC 3339).
    pub timestamp: String,
    /// The window of the CPU rate, in seconds; absent before the agent has two readings.
    #[serde(default)]
    pub window_seconds: Option<f64>,
    #[serde(default)]
    pub cpu_usage_nano_cores: Option<u64>,
    #[serde(default)]
    pub memory_working_set_bytes: u64,
}

/// One container's usage.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ContainerUsage {
    pub name: String,
    #[serde(flatten)]
    pub usage: Usage,
}

/// One pod's running containers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PodUsage {
    pub uid: String,
    #[serde(default)]
    pub containers: Vec<ContainerUsage>,
}

/// A node's answer to `GET /stats/resource`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Report {
    #[serde(default)]
    pub node: Option<Usage>,
    #[serde(default)]
    pub pods: Vec<PodUsage>,
}

/// The reports of those `nodes` that answered in time, by node name.
pub async fn reports(server: &ApiServer, nodes: Vec<String>) -> HashMap<String, Report> {
    let asks = nodes.into_iter().map(|node| async move {
        let answer = tokio::time::timeout(SCRAPE_TIMEOUT, fetch(server, &node)).await;
        match answer {
            Ok(Ok(report)) => Some((node, report)),
            Ok(Err(err)) => {
                tracing::info!(%node, %err, "node usage unavailable");
                None
            }
            Err(_) => {
                tracing::info!(%node, timeout = ?SCRAPE_TIMEOUT, "node usage timed out");
                None
            }
        }
    });
    futures::future::join_all(asks).await.into_iter().flatten().collect()
}

/// One node's report, over its tunnel.
async fn fetch(server: &ApiServer, node: &str) -> Result<Report, String> {
    let stream = server.inner.tunnels.open(node).await.map_err(|e| e.message)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(stream).await.map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(%err, "usage stream ended with an error");
        }
    });
    let request = Request::get("/stats/resource")
        .header(header::HOST, "kubelet")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_REPORT_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading the report: {e}"))?
        .to_bytes();
    if status != StatusCode::OK {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
    }
    serde_json::from_slice(&body).map_err(|e| format!("bad report: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_agent_report_format() {
        let text = r#"{"node": {"timestamp": "2026-01-01T00:00:00Z", "windowSeconds": 10.5,
            "cpuUsageNanoCores": 5, "cpuUsageCoreNanoSeconds": 9, "memoryWorkingSetBytes": 7},
            "pods": [{"uid": "u1", "namespace": "default", "name": "web", "containers": [
              {"name": "app", "timestamp": "2026-01-01T00:00:00Z",
               "cpuUsageCoreNanoSeconds": 1, "memoryWorkingSetBytes": 2}]}]}"#;
        let report: Report = serde_json::from_str(text).unwrap();
        let node = report.node.unwrap();
        assert_eq!((node.window_seconds, node.cpu_usage_nano_cores), (Some(10.5), Some(5)));
        assert_eq!(node.memory_working_set_bytes, 7);
        let app = &report.pods[0].containers[0];
        assert_eq!((app.name.as_str(), app.usage.cpu_usage_nano_cores), ("app", None));
        assert_eq!(app.usage.memory_working_set_bytes, 2);
    }
}
