//! `GET /containerLogs/{ns}/{pod}/{container}`: a container's CRI log as `kubectl logs` prints
//! it, with the kubelet's options — `follow`, `tailLines`, `sinceSeconds` / `sinceTime`,
//! `timestamps`, `previous`, `limitBytes`. The log is read on a thread of its own (file I/O and
//! polling while following) and streamed as the response body; a client that goes away ends
//! the reader at its next poll.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use skerry_runtime::{ContainerState, LogReadOptions, Runtime};
use tokio::sync::mpsc;

use super::http_util::{refusal, Body, Params, Refusal};
use super::Streaming;

/// The reader's options from the query.
#[derive(Debug, Default)]
pub(crate) struct LogQuery {
    pub options: LogReadOptions,
    pub previous: bool,
    pub limit_bytes: Option<usize>,
}

/// Parses the kubelet's log parameters; a 400 `Status` when one is malformed.
pub(crate) fn parse_query(params: &Params, now: DateTime<Utc>) -> Result<LogQuery, Refusal> {
    let bad = |msg: String| refusal(StatusCode::BAD_REQUEST, msg);
    let mut query = LogQuery {
        previous: params.flag("previous"),
        options: LogReadOptions {
            follow: params.flag("follow"),
            timestamps: params.flag("timestamps"),
            ..Default::default()
        },
        limit_bytes: None,
    };
    if let Some(tail) = params.int("tailLines")? {
        let tail =
            usize::try_from(tail).map_err(|_| bad(format!("tailLines: {tail} must be >= 0")))?;
        query.options.tail = Some(tail);
    }
    if let Some(seconds) = params.int("sinceSeconds")? {
        if seconds < 1 {
            return Err(bad(format!("sinceSeconds: {seconds} must be greater than 0")));
        }
        query.options.since = Some(now - chrono::Duration::seconds(seconds));
    } else if let Some(time) = params.get("sinceTime").filter(|t| !t.is_empty()) {
        let since = DateTime::parse_from_rfc3339(time)
            .map_err(|e| bad(format!("sinceTime: {time:?} is not RFC 3339: {e}")))?;
        query.options.since = Some(since.with_timezone(&Utc));
    }
    if let Some(limit) = params.int("limitBytes")? {
        if limit < 1 {
            return Err(bad(format!("limitBytes: {limit} must be greater than 0")));
        }
        query.limit_bytes = usize::try_from(limit).ok();
    }
    Ok(query)
}

/// Serves one log request.
pub(crate) async fn serve(
    streaming: &Streaming,
    namespace: &str,
    pod: &str,
    container: &str,
    params: &Params,
) -> Response<Body> {
    let query = match parse_query(params, Utc::now()) {
        Ok(query) => query,
        Err(response) => return *response,
    };
    let id = match streaming.container(namespace, pod, container, query.previous) {
        Ok(id) => id,
        Err(response) => return *response,
    };
    let runtime = streaming.runtime.clone();
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    std::thread::spawn(move || read(runtime, id, query, tx));
    let chunks = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (Ok::<_, Infallible>(hyper::body::Frame::data(chunk)), rx))
    });
    let mut response = Response::new(StreamBody::new(chunks).boxed_unsync());
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// Whether a container is done writing its log.
fn exited(runtime: &Runtime, id: &str) -> bool {
    runtime
        .container_status(id)
        .map(|s| matches!(s.state, ContainerState::Exited | ContainerState::Unknown))
        .unwrap_or(true)
}

/// Reads the log into `tx` (runs on its own thread).
fn read(runtime: Arc<Runtime>, id: String, query: LogQuery, tx: mpsc::Sender<Bytes>) {
    let status = match runtime.container_status(&id) {
        Ok(status) => status,
        Err(err) => {
            let _ = tx.blocking_send(Bytes::from(format!("reading the log: {err}\n")));
            return;
        }
    };
    let mut left = query.limit_bytes.unwrap_or(usize::MAX);
    let finished = || tx.is_closed() || exited(&runtime, &id);
    let sink = |entry: &skerry_runtime::LogEntry| -> std::io::Result<()> {
        let mut bytes = entry.render(query.options.timestamps);
        bytes.truncate(left);
        left -= bytes.len();
        tx.blocking_send(Bytes::from(bytes)).map_err(|_| std::io::Error::other("client gone"))?;
        if left == 0 {
            return Err(std::io::Error::other("limitBytes reached"));
        }
        Ok(())
    };
    let max_files = status.spec.log_rotation.max_files;
    let result =
        skerry_runtime::logs::read_log(&status.log_path, max_files, &query.options, finished, sink);
    if let Err(err) = result {
        tracing::debug!(%err, container = %id, "log stream ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_options_follow_the_kubelet_parameters() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:01:00Z").unwrap().with_timezone(&Utc);
        let p = Params::parse(Some(
            "follow=true&tailLines=5&sinceSeconds=60&timestamps=true&limitBytes=100&previous=true",
        ));
        let q = parse_query(&p, now).unwrap();
        assert!(q.options.follow && q.options.timestamps && q.previous);
        assert_eq!(q.options.tail, Some(5));
        assert_eq!(q.options.since.unwrap().to_rfc3339(), "2026-01-01T00:00:00+00:00");
        assert_eq!(q.limit_bytes, Some(100));
        let p = Params::parse(Some("sinceTime=2025-12-31T23:00:00Z"));
        assert_eq!(
            parse_query(&p, now).unwrap().options.since.unwrap().to_rfc3339(),
            "2025-12-31T23:00:00+00:00"
        );
        for bad in
            ["tailLines=x", "tailLines=-1", "sinceSeconds=0", "limitBytes=0", "sinceTime=yesterday"]
        {
            let err = parse_query(&Params::parse(Some(bad)), now).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{bad}");
        }
    }
}
