//! `GET /stats/resource` (a [`Report`] as JSON, what the API server's `metrics.k8s.io` asks
//! every node for) and `GET /metrics`, `/metrics/resource` (the same usage in Prometheus
//! text). The cgroup reads block, so they run off the async workers.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use super::http_util::{status_response, Body};
use super::Streaming;
use crate::stats::{prometheus, Report};

/// A fresh usage report, read on a blocking thread.
async fn report(streaming: &Streaming) -> Result<Report, Response<Body>> {
    let (lookup, usage) = (streaming.lookup.clone(), streaming.usage.clone());
    tokio::task::spawn_blocking(move || usage.report(&lookup.pod_names())).await.map_err(|err| {
        status_response(StatusCode::INTERNAL_SERVER_ERROR, format!("reading usage: {err}"))
    })
}

fn reply(body: String, content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)).boxed_unsync());
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// `GET /stats/resource`.
pub(super) async fn json(streaming: &Arc<Streaming>) -> Response<Body> {
    match report(streaming).await {
        Ok(report) => match serde_json::to_string(&report) {
            Ok(text) => reply(text, "application/json"),
            Err(err) => status_response(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
        },
        Err(response) => response,
    }
}

/// `GET /metrics` and `GET /metrics/resource`.
pub(super) async fn prometheus(streaming: &Arc<Streaming>) -> Response<Body> {
    match report(streaming).await {
        Ok(report) => reply(prometheus::render(&report), prometheus::CONTENT_TYPE),
        Err(response) => response,
    }
}
