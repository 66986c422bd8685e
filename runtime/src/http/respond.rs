//! Building responses.

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;

use crate::error::ApiError;

/// The response type of every handler.
pub type Resp = Response<Full<Bytes>>;

/// A JSON response.
pub fn json<T: serde::Serialize + ?Sized>(status: u16, body: &T) -> Resp {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(bytes)));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// A JSON response from ready-made JSON text.
pub fn json_bytes(status: u16, body: Bytes) -> Resp {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// A body-less response.
pub fn empty(status: u16) -> Resp {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    r
}

/// A plain-text response.
pub fn text(status: u16, content_type: &'static str, body: String) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    r
}

/// An error as problem+json.
pub fn problem(e: &ApiError) -> Resp {
    let mut r = json(e.status, &e.body());
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/problem+json"),
    );
    for (k, v) in &e.headers {
        if let Ok(v) = hyper::header::HeaderValue::from_str(v) {
            r.headers_mut().insert(*k, v);
        }
    }
    r
}

/// Adds a header (ignored if the value is not a valid header value).
pub fn with_header(mut r: Resp, name: &'static str, value: &str) -> Resp {
    if let Ok(v) = hyper::header::HeaderValue::from_str(value) {
        r.headers_mut().insert(name, v);
    }
    r
}

/// A record as an answer: its JSON text (rendered from the stored record, without the
/// fields in `hidden`, which the caller may not see), and its version as the `ETag`.
pub fn record(status: u16, record: &crate::domain::row::Stored, hidden: &[String]) -> Resp {
    let mut r = json_bytes(status, record.json_without(hidden));
    let etag = format!("\"{}\"", record.version());
    if let Ok(v) = hyper::header::HeaderValue::try_from(etag) {
        r.headers_mut().insert(hyper::header::ETAG, v);
    }
    r
}
