//! Building responses, and their body: the whole text at once, or a stream (the change
//! feed's events, `feed.rs`).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use hyper::Response;

use crate::error::ApiError;

/// The response type of every handler.
pub type Resp = Response<Body>;

/// A response body: bytes known at once, or a stream of chunks that its producer writes
/// into a bounded channel (it ends when the producer drops its sender; a client that
/// goes away drops the body, which the producer sees as a closed channel).
#[derive(Debug)]
pub struct Body(Kind);

#[derive(Debug)]
enum Kind {
    /// The whole body (None: sent, or empty).
    Full(Option<Bytes>),
    /// Chunks as they come.
    Stream(tokio::sync::mpsc::Receiver<Bytes>),
}

impl Body {
    /// A body of `bytes`.
    pub fn full(bytes: impl Into<Bytes>) -> Body {
        let bytes = bytes.into();
        Body(Kind::Full((!bytes.is_empty()).then_some(bytes)))
    }

    /// An empty body.
    pub fn empty() -> Body {
        Body(Kind::Full(None))
    }

    /// A streamed body that reads its chunks from `chunks`.
    pub fn stream(chunks: tokio::sync::mpsc::Receiver<Bytes>) -> Body {
        Body(Kind::Stream(chunks))
    }
}

impl Default for Body {
    fn default() -> Body {
        Body::empty()
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut self.get_mut().0 {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Stream(chunks) => chunks.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.0, Kind::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Kind::Stream(_) => SizeHint::default(),
        }
    }
}

/// A JSON response.
pub fn json<T: serde::Serialize + ?Sized>(status: u16, body: &T) -> Resp {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut r = Response::new(Body::full(bytes));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// A JSON response from ready-made JSON text.
pub fn json_bytes(status: u16, body: Bytes) -> Resp {
    let mut r = Response::new(Body::full(body));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// A body-less response.
pub fn empty(status: u16) -> Resp {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    r
}

/// A plain-text response.
pub fn text(status: u16, content_type: &'static str, body: String) -> Resp {
    let mut r = Response::new(Body::full(body));
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
    let (json, version) = record.json_and_version(hidden);
    let mut r = json_bytes(status, json);
    r.headers_mut().insert(
        hyper::header::ETAG,
        super::cache::record_etag_value(version),
    );
    r
}
