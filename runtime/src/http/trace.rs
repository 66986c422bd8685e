//! The trace stage (`[telemetry] otlp_endpoint`): decides whether a request is traced
//! (`crate::telemetry`), and for one that is, makes its recorder the current one while
//! the later stages run (they record their spans into it), then ends the request's span
//! with what the answer says: status, model, operation, principal. The request log
//! reads the trace's ids from the answer ([`TraceIds`]), so a traced request's line
//! names its exported span.

use std::sync::Arc;

use hyper::Request;
use opentelemetry::trace::SpanKind;
use opentelemetry::KeyValue;

use super::facts::Facts;
use super::request_log::{Caller, Logged, TraceIds};
use super::respond::Resp;
use super::stage::{Next, Reply, Step};
use crate::telemetry::{self, Tracing};

/// The trace stage; without an export (`None`) it hands every request on.
#[derive(Clone, Debug)]
pub(crate) struct TraceStage {
    pub tracing: Option<Arc<Tracing>>,
}

impl<B: Send + 'static> Step<B> for TraceStage {
    fn run(&self, next: &dyn Next<B>, req: Request<B>, facts: &mut Facts) -> Reply {
        let Some(tracing) = &self.tracing else {
            return next.answer(req, facts);
        };
        let traceparent = req
            .headers()
            .get(super::facts::TRACEPARENT)
            .and_then(|v| v.to_str().ok());
        let Some(recorder) = tracing.begin(traceparent, req.uri().path()) else {
            return next.answer(req, facts);
        };
        let method = req.method().to_string();
        let mut attributes = vec![
            KeyValue::new("http.request.method", method.clone()),
            KeyValue::new("url.path", req.uri().path().to_string()),
        ];
        if let Some(id) = &facts.request_id {
            attributes.push(KeyValue::new("lithair.request_id", id.as_str().to_string()));
        }
        if let Some(peer) = facts.peer {
            attributes.push(KeyValue::new("client.address", peer.ip().to_string()));
        }
        recorder.attributes(attributes);
        let answer = telemetry::scoped(recorder.clone(), || next.answer(req, facts));
        match answer.ready() {
            Ok(r) => Reply::now(finish(&recorder, method, r)),
            Err(later) => Reply::later(async move {
                let r = telemetry::within(recorder.clone(), later).await;
                finish(&recorder, method, r)
            }),
        }
    }
}

/// Ends the span of a traced request with what its answer `r` says, and names the span's
/// ids in the answer (for the request log).
fn finish(recorder: &telemetry::Recorder, method: String, mut r: Resp) -> Resp {
    let status = r.status().as_u16();
    let logged = r.extensions().get::<Logged>().cloned().unwrap_or_default();
    let mut attributes = vec![KeyValue::new(
        "http.response.status_code",
        i64::from(status),
    )];
    let name = if logged.model.is_empty() {
        method
    } else {
        attributes.push(KeyValue::new("lithair.model", logged.model.clone()));
        attributes.push(KeyValue::new("lithair.operation", logged.operation.clone()));
        format!("{method} {}.{}", logged.model, logged.operation)
    };
    if let Some(Caller(who)) = r.extensions().get::<Caller>() {
        attributes.push(KeyValue::new("enduser.id", who.name.clone()));
    }
    recorder.attributes(attributes);
    let error = (status >= 500).then(|| {
        r.status()
            .canonical_reason()
            .unwrap_or("server error")
            .to_string()
    });
    recorder.finish(name, SpanKind::Server, error);
    r.extensions_mut().insert(TraceIds {
        trace_id: recorder.trace_id(),
        span_id: recorder.span_id(),
    });
    r
}
