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

use std::time::Duration;

use hyper::Request;
use opentelemetry::trace::{SpanId, TraceId};

use super::facts::{Facts, Seen, TRACEPARENT};
use super::stage::{Next, Reply, Step};
use crate::config::RequestLog;

/// What later stages tell the request log, in the answer's extensions: the request's
/// model and operation (from the measure stage; [`Caller`] comes from the endpoints,
/// [`Validation`] from the body stage).
#[derive(Clone, Debug, Default)]
pub(crate) struct Logged {
    pub model: std::sync::Arc<str>,
    pub operation: std::sync::Arc<str>,
}

/// The caller, as the endpoints found it.
#[derive(Clone, Debug)]
pub(crate) struct Caller(pub std::sync::Arc<crate::auth::Principal>);

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
    fn run(&self, next: &dyn Next<B>, req: Request<B>, facts: &mut Facts) -> Reply {
        let mode = self.mode;
        if mode == RequestLog::Off {
            return next.answer(req, facts);
        }
        let started = crate::clock::Instant::now();
        // What the line needs of the request, kept without copying its text: the method,
        // the URI and the header values share the request's buffers.
        let method = req.method().clone();
        let uri = req.uri().clone();
        let headers = req.headers();
        let carries = |h| facts.may_carry(h);
        let size: u64 = carries(Seen::CONTENT_LENGTH)
            .then(|| {
                headers
                    .get(hyper::header::CONTENT_LENGTH)?
                    .to_str()
                    .ok()?
                    .parse()
                    .ok()
            })
            .flatten()
            .unwrap_or(0);
        let traceparent = carries(Seen::TRACEPARENT)
            .then(|| headers.get(TRACEPARENT).cloned())
            .flatten();
        let request_id = facts.request_id.clone();
        let client = facts.peer.map(|p| p.ip());
        next.answer(req, facts).edit(move |r| {
            let status = r.status().as_u16();
            if mode == RequestLog::All || status >= 400 {
                let none = Logged::default();
                let logged = r.extensions().get::<Logged>().unwrap_or(&none);
                let principal = r
                    .extensions()
                    .get::<Caller>()
                    .map_or("anonymous", |c| c.0.name.as_str());
                let validation_ms = r
                    .extensions()
                    .get::<Validation>()
                    .map_or(0.0, |v| v.0.as_secs_f64() * 1000.0);
                let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
                // A traced request's ids are its exported span's; the ids are made only
                // for a line that is written.
                let ids = r
                    .extensions()
                    .get::<TraceIds>()
                    .copied()
                    .unwrap_or_else(|| {
                        TraceIds::continuing(traceparent.as_ref().and_then(|v| v.to_str().ok()))
                    });
                Line {
                    ids,
                    request_id: request_id.as_ref().map_or("", |id| id.as_str()),
                    client: Client(client),
                    method: method.as_str(),
                    path: uri.path(),
                    model: &logged.model,
                    operation: &logged.operation,
                    principal,
                    status,
                    request_size: size,
                    latency_ms,
                    validation_ms,
                }
                .log();
            }
        })
    }
}

/// The target of the request log's lines (`LITHAIR_LOG=lithair::request=off` silences
/// them).
const TARGET: &str = "lithair::request";

/// One request's line.
struct Line<'a> {
    ids: TraceIds,
    request_id: &'a str,
    client: Client,
    method: &'a str,
    path: &'a str,
    model: &'a str,
    operation: &'a str,
    principal: &'a str,
    status: u16,
    request_size: u64,
    latency_ms: f64,
    validation_ms: f64,
}

thread_local! {
    /// The buffer a thread writes its JSON request lines in.
    static JSON_LINE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

impl Line<'_> {
    /// Logs the line at INFO (WARN for a 5xx), if that is enabled. When the process
    /// writes JSON lines through the log thread, the line is written here, in the same
    /// shape, straight into the log thread's buffer (a line per request is on the hot
    /// path with `request_log = "all"`); otherwise it is a `tracing` event.
    fn log(&self) {
        let warn = self.status >= 500;
        let enabled = if warn {
            tracing::enabled!(target: TARGET, tracing::Level::WARN)
        } else {
            tracing::enabled!(target: TARGET, tracing::Level::INFO)
        };
        if !enabled {
            return;
        }
        match crate::logs::json_lines() {
            Some(lines) => JSON_LINE.with(|buf| {
                let mut buf = buf.borrow_mut();
                buf.clear();
                let level = if warn {
                    tracing::Level::WARN
                } else {
                    tracing::Level::INFO
                };
                if self.write_json(&mut *buf, &level).is_ok() {
                    lines.append(buf.as_bytes());
                }
            }),
            None if warn => self.event_warn(),
            None => self.event_info(),
        }
    }

    /// The line as `crate::logs::json::JsonLines` writes its event.
    fn write_json(&self, w: &mut impl std::fmt::Write, level: &tracing::Level) -> std::fmt::Result {
        use crate::logs::json::{write_head, write_json_str};
        write_head(w, level, TARGET)?;
        w.write_str(",\"message\":\"request\",\"trace_id\":\"")?;
        write_hex(w, &self.ids.trace_id.to_bytes())?;
        w.write_str("\",\"span_id\":\"")?;
        write_hex(w, &self.ids.span_id.to_bytes())?;
        w.write_str("\",\"context\":{\"request_id\":")?;
        write_json_str(w, self.request_id)?;
        w.write_str(",\"client\":\"")?;
        if let Some(ip) = self.client.0 {
            write!(w, "{ip}")?;
        }
        w.write_str("\",\"method\":")?;
        write_json_str(w, self.method)?;
        w.write_str(",\"path\":")?;
        write_json_str(w, self.path)?;
        w.write_str(",\"model\":")?;
        write_json_str(w, self.model)?;
        w.write_str(",\"operation\":")?;
        write_json_str(w, self.operation)?;
        w.write_str(",\"principal\":")?;
        write_json_str(w, self.principal)?;
        w.write_str(",\"status\":")?;
        w.write_str(itoa::Buffer::new().format(self.status))?;
        w.write_str(",\"request_size\":")?;
        w.write_str(itoa::Buffer::new().format(self.request_size))?;
        for (key, ms) in [
            (",\"latency_ms\":", self.latency_ms),
            (",\"validation_ms\":", self.validation_ms),
        ] {
            w.write_str(key)?;
            if ms.is_finite() {
                w.write_str(ryu::Buffer::new().format_finite(ms))?;
            } else {
                w.write_str("null")?;
            }
        }
        w.write_str("}}\n")
    }
}

/// `bytes` in lower-case hex.
fn write_hex(w: &mut impl std::fmt::Write, bytes: &[u8]) -> std::fmt::Result {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        w.write_char(char::from(DIGITS[usize::from(b >> 4)]))?;
        w.write_char(char::from(DIGITS[usize::from(b & 15)]))?;
    }
    Ok(())
}

/// The line as a `tracing` event at `$level`.
macro_rules! event {
    ($name:ident, $level:ident) => {
        impl Line<'_> {
            fn $name(&self) {
                tracing::$level!(
                    target: TARGET,
                    trace_id = %self.ids.trace_id,
                    span_id = %self.ids.span_id,
                    request_id = %self.request_id,
                    client = %self.client,
                    method = %self.method,
                    path = %self.path,
                    model = %self.model,
                    operation = %self.operation,
                    principal = %self.principal,
                    status = self.status,
                    request_size = self.request_size,
                    latency_ms = self.latency_ms,
                    validation_ms = self.validation_ms,
                    "request"
                )
            }
        }
    };
}
event!(event_info, info);
event!(event_warn, warn);

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

    /// The line written straight as JSON is the line the JSON format makes of its event.
    #[test]
    fn the_direct_json_line_is_the_events_json_line() {
        let ip = "127.0.0.9".parse().ok();
        for (status, client, path) in [(201, ip, "/api/items"), (503, None, "/a\"b\\\u{7}")] {
            let line = Line {
                ids: TraceIds::continuing(Some(
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                )),
                request_id: "r-1",
                client: Client(client),
                method: "POST",
                path,
                model: "Item",
                operation: "create",
                principal: "wendy",
                status,
                request_size: 17,
                latency_ms: 1.25,
                validation_ms: 0.0,
            };
            let event = crate::logs::captured::json_lines(|| {
                if status >= 500 {
                    line.event_warn()
                } else {
                    line.event_info()
                }
            });
            let level = if status >= 500 {
                tracing::Level::WARN
            } else {
                tracing::Level::INFO
            };
            let mut direct = String::new();
            line.write_json(&mut direct, &level).expect("write");
            let parse = |text: &str| {
                assert_eq!(text.matches('\n').count(), 1, "{text}");
                let mut v: serde_json::Value = serde_json::from_str(text.trim()).expect(text);
                assert!(
                    v["timestamp"].as_str().is_some_and(|t| t.len() == 27),
                    "{text}"
                );
                v["timestamp"] = serde_json::Value::Null;
                v
            };
            assert_eq!(parse(&direct), parse(&event), "{direct}\n{event}");
            // The same keys in the same order, on top and in the context.
            let keys = |v: &serde_json::Value| -> Vec<String> {
                let obj = v.as_object().cloned().unwrap_or_default();
                let context = obj
                    .get("context")
                    .and_then(|c| c.as_object())
                    .cloned()
                    .unwrap_or_default();
                obj.keys().chain(context.keys()).cloned().collect()
            };
            assert_eq!(keys(&parse(&direct)), keys(&parse(&event)));
        }
    }

    #[test]
    fn an_incoming_traceparent_is_continued_and_a_bad_one_ignored() {
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        let ids = TraceIds::continuing(Some(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ));
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
