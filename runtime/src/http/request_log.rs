//! The request log (`[telemetry] request_log`): one line per request, or per request
//! answered with a 4xx or 5xx (`errors`, the default), or none (`off`). The stage sits
//! outside the firewall, so a refused request is logged too.
//!
//! A line carries the request's `trace_id` and `span_id`: a traced request's (see
//! `trace.rs`), or else an incoming W3C `traceparent`'s trace or a new one, and a span
//! id of its own, and in its context the request id, the peer's
//! address, method, path,
//! model, operation, principal, status, request size, latency and the time of the body's
//! schema check. With `log_format = "json"` (`crate::logs`) that is the seed's shape.

use std::time::{Duration, Instant};

use hyper::Request;
use opentelemetry::trace::{SpanId, TraceId};

use super::respond::Resp;
use super::stage::{BoxFuture, Next, Step};
use crate::config::RequestLog;

/// What later stages tell the request log, in the answer's extensions: the request's
/// model and operation (from the measure stage; [`Caller`] comes from the endpoints,
/// [`Validation`] from the body stage).
#[derive(Clone, Debug, Default)]
pub(crate) struct Logged {
    pub model: String,
    pub operation: String,
}

/// The caller, as the endpoints found it.
#[derive(Clone, Debug)]
pub(crate) struct Caller(pub String);

/// How long the body's schema check took.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Validation(pub Duration);

/// A request's trace context: its trace and this node's span of it (both print as W3C
/// lower-case hex).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TraceIds {
    pub trace_id: TraceId,
    pub span_id: SpanId,
}

impl TraceIds {
    /// The trace of an incoming `traceparent` (`00-<trace id>-<parent id>-<flags>`, the
    /// header's value, if any), or a new one; the span is always new.
    pub(crate) fn continuing(traceparent: Option<&str>) -> Self {
        TraceIds {
            trace_id: traceparent
                .and_then(crate::telemetry::Context::parse)
                .map_or_else(crate::telemetry::new_trace_id, |c| c.trace_id),
            span_id: crate::telemetry::new_span_id(),
        }
    }
}

/// The request log stage.
#[derive(Clone, Debug)]
pub(crate) struct RequestLogStage {
    pub mode: RequestLog,
}

impl<B: Send + 'static> Step<B> for RequestLogStage {
    fn run(&self, next: &dyn Next<B>, req: Request<B>) -> BoxFuture<Resp> {
        let mode = self.mode;
        if mode == RequestLog::Off {
            return next.answer(req);
        }
        let started = Instant::now();
        // What the line needs of the request, kept without copying its text: the method,
        // the URI and the header values share the request's buffers.
        let method = req.method().clone();
        let uri = req.uri().clone();
        let headers = req.headers();
        let size: u64 = headers
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let request_id = headers.get(&super::pipeline::REQUEST_ID).cloned();
        let traceparent = headers.get("traceparent").cloned();
        let client = req
            .extensions()
            .get::<super::firewall::PeerAddr>()
            .map(|p| p.0.ip());
        let answer = next.answer(req);
        Box::pin(async move {
            let r = answer.await;
            let status = r.status().as_u16();
            if mode == RequestLog::All || status >= 400 {
                let none = Logged::default();
                let logged = r.extensions().get::<Logged>().unwrap_or(&none);
                let principal = r
                    .extensions()
                    .get::<Caller>()
                    .map_or("anonymous", |c| c.0.as_str());
                let validation_ms = r
                    .extensions()
                    .get::<Validation>()
                    .map_or(0.0, |v| v.0.as_secs_f64() * 1000.0);
                let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
                // A traced request's ids are its exported span's; the ids are made only
                // for a line that is written.
                let ids = r.extensions().get::<TraceIds>().copied().unwrap_or_else(|| {
                    TraceIds::continuing(traceparent.as_ref().and_then(|v| v.to_str().ok()))
                });
                let client = Client(client);
                macro_rules! line {
                    ($level:ident) => {
                        tracing::$level!(
                            target: "lithair::request",
                            trace_id = %ids.trace_id,
                            span_id = %ids.span_id,
                            request_id = %text(request_id.as_ref()),
                            client = %client,
                            method = %method,
                            path = %uri.path(),
                            model = %logged.model,
                            operation = %logged.operation,
                            principal = %principal,
                            status,
                            request_size = size,
                            latency_ms,
                            validation_ms,
                            "request"
                        )
                    };
                }
                if status >= 500 {
                    line!(warn);
                } else {
                    line!(info);
                }
            }
            r
        })
    }
}

/// A header's value as text (empty when absent or not text).
fn text(v: Option<&hyper::header::HeaderValue>) -> &str {
    v.and_then(|v| v.to_str().ok()).unwrap_or_default()
}

/// The peer's address as a line shows it (empty when unknown).
struct Client(Option<std::net::IpAddr>);

impl std::fmt::Display for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(ip) => ip.fmt(f),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_incoming_traceparent_is_continued_and_a_bad_one_ignored() {
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        let ids =
            TraceIds::continuing(Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        assert_eq!(ids.trace_id.to_string(), trace);
        assert_eq!(ids.span_id.to_string().len(), 16);
        assert_ne!(ids.span_id.to_string(), "00f067aa0ba902b7");
        for bad in [
            Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            Some("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
            Some("garbage"),
            None,
        ] {
            let ids = TraceIds::continuing(bad);
            assert_ne!(ids.trace_id.to_string(), trace);
            assert_eq!(ids.trace_id.to_string().len(), 32, "{bad:?}");
        }
    }
}
