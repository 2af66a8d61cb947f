//! Request and response bodies: reading a bounded request body, decoding JSON or YAML objects,
//! and building JSON/YAML responses and `Status` errors in the body type every handler returns.

use std::convert::Infallible;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, Limited};
use serde_json::Value;

use super::request::{BodyFormat, Output};
use super::status::ApiError;

/// The body type of every response (a whole object, or a watch stream).
pub type ApiBody = UnsyncBoxBody<Bytes, Infallible>;

/// The largest request body accepted (the reference's 3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// Reads a request body, refusing more than [`MAX_BODY`] bytes with 413.
pub async fn read_body<B>(body: B) -> Result<Bytes, ApiError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::too_large(MAX_BODY))
        }
        Err(err) => Err(ApiError::bad_request(format!("reading the request body: {err}"))),
    }
}

/// Decodes a JSON or YAML object body; malformed input is a 400.
pub fn decode_object(bytes: &[u8], format: BodyFormat) -> Result<Value, ApiError> {
    let value: Value = match format {
        BodyFormat::Protobuf => super::protobuf::decode(bytes)?,
        BodyFormat::Yaml | BodyFormat::ApplyPatch => serde_yaml::from_slice(bytes)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?,
        _ => serde_json::from_slice(bytes).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        })?,
    };
    if !value.is_object() {
        return Err(ApiError::bad_request("the request body must be a JSON or YAML object"));
    }
    Ok(value)
}

fn full(bytes: impl Into<Bytes>) -> ApiBody {
    Full::new(bytes.into()).boxed_unsync()
}

/// An object response in the chosen format.
pub fn object_response(code: StatusCode, value: &Value, output: Output) -> Response<ApiBody> {
    let (bytes, content_type) = match output {
        Output::Yaml => (
            serde_yaml::to_string(value).map(String::into_bytes).unwrap_or_default(),
            "application/yaml",
        ),
        // Kinds without a protobuf form (custom resources) answer JSON, which kubectl accepts.
        Output::Protobuf => match super::protobuf::encode(value) {
            Some(bytes) => (bytes, super::protobuf::CONTENT_TYPE),
            None => (serde_json::to_vec(value).unwrap_or_default(), "application/json"),
        },
        _ => (serde_json::to_vec(value).unwrap_or_default(), "application/json"),
    };
    let mut response = Response::new(full(bytes));
    *response.status_mut() = code;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A response of JSON already encoded.
pub fn json_response(code: StatusCode, json: Vec<u8>) -> Response<ApiBody> {
    let mut response = Response::new(full(json));
    *response.status_mut() = code;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The `Status` of an error response, kept on the response (never sent) so that
/// [`negotiate_error`] can re-encode it for the client once the request's `Accept` is at hand.
#[derive(Clone)]
struct ErrorStatus(Value);

/// The `Status` response of an error (JSON; see [`negotiate_error`]).
pub fn error_response(err: &ApiError) -> Response<ApiBody> {
    let code = StatusCode::from_u16(err.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let status = err.to_status();
    let mut response = object_response(code, &status, Output::Json);
    response.extensions_mut().insert(ErrorStatus(status));
    if let Some(seconds) = err.retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// Encodes an error response's `Status` in protobuf when the request's `Accept` prefers
/// protobuf, as the reference negotiates error bodies like any object (client-go decodes them
/// by content type); every other client keeps the JSON `Status`.
pub fn negotiate_error(response: &mut Response<ApiBody>, accept: Option<&str>) {
    let Some(ErrorStatus(status)) = response.extensions_mut().remove::<ErrorStatus>() else {
        return;
    };
    if super::request::output_format(accept).ok() != Some(Output::Protobuf) {
        return;
    }
    if let Some(bytes) = super::protobuf::encode(&status) {
        *response.body_mut() = full(bytes);
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(super::protobuf::CONTENT_TYPE));
    }
}

/// A plain-text response (health checks, metrics).
pub fn text_response(
    code: StatusCode,
    text: impl Into<String>,
    content_type: &'static str,
) -> Response<ApiBody> {
    let mut response = Response::new(full(text.into()));
    *response.status_mut() = code;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A streamed response whose chunks come from `rx` (watches).
pub fn stream_response(
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    content_type: &'static str,
) -> Response<ApiBody> {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (Ok::<_, Infallible>(http_body::Frame::data(chunk)), rx))
    });
    let mut response =
        Response::new(BodyExt::boxed_unsync(http_body_util::StreamBody::new(stream)));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
