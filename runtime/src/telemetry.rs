//! Traces (`[telemetry] otlp_endpoint`, `sample_rate`, `include_body`, and `tracing:`
//! per model): one span per traced request, a child span per stage it went through
//! (firewall, route, authenticate, authorize, validate, hooks, raft, apply, respond),
//! sent as OTLP/HTTP protobuf by the OpenTelemetry SDK's batch processor, on its own
//! thread.
//!
//! The stages are timed once, for `lithair_stage_duration_seconds`; a traced request's
//! spans are those same times ([`record`]), kept by the request's [`Recorder`] (a
//! task-local while the request runs) and handed to the processor as finished spans
//! when it is answered. An untraced request makes no span at all: the decision is taken
//! first, from the trace id (the share `sample_rate`, as OpenTelemetry's ratio sampler
//! takes it) or from an incoming W3C `traceparent`'s sampled flag, which is followed.
//!
//! A write's raft span crosses nodes: the command carries its trace context
//! ([`Traced`]), so a follower that hands a write to its leader passes the context on,
//! and the leader's own span of the proposal (with its apply) joins the same trace.
//! The leader's state machine puts an `apply` span under whichever raft span proposed
//! the command.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{BatchSpanProcessor, SpanData, SpanEvents, SpanLinks, SpanProcessor};
use opentelemetry_sdk::Resource;

use crate::domain::Stage;

/// The share of requests traced unless `[telemetry] sample_rate` says (the seed's).
pub const DEFAULT_RATE: f64 = 0.1;

/// The most of a request body a span keeps (`include_body`).
const BODY_LIMIT: usize = 4096;

/// Paths never traced: probes and scrapes, and the nodes' own Raft traffic (a
/// forwarded write's span is made by the leader's proposal, not by its HTTP request).
const UNTRACED: &[&str] = &["/health", "/ready", "/metrics", "/_raft/"];

/// How requests of one model (or of the service) are traced.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Policy {
    /// The share of requests traced that come without a sampled `traceparent`; a model
    /// with `enabled: false` has none at all, and follows no `traceparent` either.
    pub rate: f64,
    /// Whether a model with `enabled: false` turned tracing off.
    pub off: bool,
    /// Whether the span keeps the request's body.
    pub include_body: bool,
}

/// The trace export of a service: where its spans go and whom they are made for.
pub struct Tracing {
    processor: BatchSpanProcessor,
    scope: InstrumentationScope,
    /// The service's own setting.
    default: Policy,
    /// Each model's, by the path of its collection (`/api/products`).
    models: Vec<(String, Policy)>,
}

impl std::fmt::Debug for Tracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracing")
            .field("default", &self.default)
            .field("models", &self.models)
            .finish()
    }
}

/// What could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("[telemetry] otlp_endpoint: {0}")]
pub struct TracingError(String);

/// The service's identity in its spans' resource.
#[derive(Clone, Debug)]
pub struct Identity {
    /// `service.name`.
    pub name: String,
    /// `service.version`.
    pub version: String,
    /// `service.instance.id`: the node.
    pub instance: String,
}

impl Tracing {
    /// The export `[telemetry]` sets up for `spec` on node `node_id`, if it names an
    /// endpoint.
    pub fn of(
        config: &crate::config::TelemetryConfig,
        spec: &lithair_spec::Schema,
        node_id: u64,
    ) -> Result<Option<Arc<Tracing>>, TracingError> {
        let Some(endpoint) = &config.otlp_endpoint else {
            return Ok(None);
        };
        let default = Policy {
            rate: config.sample_rate.unwrap_or(DEFAULT_RATE),
            off: false,
            include_body: config.include_body.unwrap_or(false),
        };
        let who = Identity {
            name: spec.service.name.clone(),
            version: spec
                .service
                .version
                .clone()
                .unwrap_or_else(|| "0.1.0".to_string()),
            instance: node_id.to_string(),
        };
        Tracing::new(endpoint, default, spec, who).map(Some)
    }

    /// Export to `endpoint` (OTLP/HTTP: `http://host:port`, to which `/v1/traces` is
    /// added unless it names a path) with the service's `default` policy and the
    /// models' `tracing:` of `spec`.
    pub fn new(
        endpoint: &str,
        default: Policy,
        spec: &lithair_spec::Schema,
        who: Identity,
    ) -> Result<Arc<Tracing>, TracingError> {
        use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
        let url = traces_url(endpoint).map_err(TracingError)?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(url)
            .with_timeout(Duration::from_secs(10))
            .with_headers(HashMap::new())
            .build()
            .map_err(|e| TracingError(e.to_string()))?;
        // A large queue: a traced request makes about ten spans, and a burst should not
        // lose them while the last batch is on its way (OTEL_BSP_* still override).
        let mut batch = opentelemetry_sdk::trace::BatchConfigBuilder::default();
        if std::env::var_os("OTEL_BSP_MAX_QUEUE_SIZE").is_none() {
            batch = batch.with_max_queue_size(65_536);
        }
        if std::env::var_os("OTEL_BSP_MAX_EXPORT_BATCH_SIZE").is_none() {
            batch = batch.with_max_export_batch_size(4096);
        }
        if std::env::var_os("OTEL_BSP_SCHEDULE_DELAY").is_none() {
            batch = batch.with_scheduled_delay(Duration::from_secs(1));
        }
        let mut processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batch.build())
            .build();
        processor.set_resource(
            &Resource::builder_empty()
                .with_service_name(who.name)
                .with_attributes([
                    KeyValue::new("service.version", who.version),
                    KeyValue::new("service.instance.id", who.instance),
                ])
                .build(),
        );
        let models = spec
            .models
            .iter()
            .filter_map(|m| {
                let t = m.tracing.as_ref()?;
                Some((
                    m.path.clone(),
                    Policy {
                        rate: if t.enabled {
                            t.sample_rate.unwrap_or(default.rate)
                        } else {
                            0.0
                        },
                        off: !t.enabled,
                        include_body: t.include_body.unwrap_or(default.include_body),
                    },
                ))
            })
            .collect();
        Ok(Arc::new(Tracing {
            processor,
            scope: InstrumentationScope::builder("lithair-runtime")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            default,
            models,
        }))
    }

    /// The policy of a request to `path`: its model's, or the service's.
    fn policy(&self, path: &str) -> Policy {
        self.models
            .iter()
            .find(|(prefix, _)| {
                path.strip_prefix(prefix.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
            .map_or(self.default, |(_, p)| *p)
    }

    /// The recorder of a request to `path` that came with `traceparent`, if it is
    /// traced.
    pub fn begin(
        self: &Arc<Self>,
        traceparent: Option<&str>,
        path: &str,
    ) -> Option<Arc<Recorder>> {
        if UNTRACED.iter().any(|p| path.starts_with(p)) {
            return None;
        }
        let policy = self.policy(path);
        if policy.off {
            return None;
        }
        let parent = traceparent.and_then(Parent::parse);
        let trace_id = parent.map_or_else(new_trace_id, |p| p.trace_id);
        let sampled = match parent {
            Some(p) => p.sampled,
            None => ratio_says(trace_id, policy.rate),
        };
        sampled.then(|| {
            Arc::new(Recorder::new(
                self.clone(),
                trace_id,
                parent.map(|p| p.span_id),
                policy.include_body,
            ))
        })
    }

    /// The recorder of a proposal a follower handed over with `context`: its span is a
    /// server span under the follower's raft span.
    pub fn remote(self: &Arc<Self>, context: &Context) -> Arc<Recorder> {
        Arc::new(Recorder::new(
            self.clone(),
            context.trace_id,
            Some(context.span_id),
            false,
        ))
    }

    /// Sends what is still queued and stops the processor's thread (at shutdown; it
    /// blocks for up to the export's timeout).
    pub fn shutdown(&self) {
        if let Err(e) = self.processor.shutdown() {
            tracing::warn!(error = %e, "the last spans were not exported");
        }
    }
}

/// `endpoint` as the URL spans are posted to.
pub(crate) fn traces_url(endpoint: &str) -> Result<String, String> {
    let rest = endpoint.strip_prefix("http://").ok_or_else(|| {
        if endpoint.starts_with("https://") {
            format!("\"{endpoint}\": only http:// is supported (a collector on this host or network); https is not built")
        } else {
            format!("\"{endpoint}\" is not an http:// URL, like \"http://127.0.0.1:4318\"")
        }
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let port_ok = match authority.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok(),
        None => !authority.is_empty(),
    };
    if !port_ok || authority.contains(['@', '?', '#', ' ']) {
        return Err(format!(
            "\"{endpoint}\" names no host (and port), like \"http://127.0.0.1:4318\""
        ));
    }
    Ok(match path.trim_end_matches('/') {
        "" => format!("http://{authority}/v1/traces"),
        _ => endpoint.to_string(),
    })
}

/// The ratio sampler's decision: the trace id's low 63 bits against `rate` of their
/// range, so every node decides the same for a trace.
fn ratio_says(trace_id: TraceId, rate: f64) -> bool {
    if rate >= 1.0 {
        return true;
    }
    if rate <= 0.0 {
        return false;
    }
    let bytes = trace_id.to_bytes();
    let low = u64::from_be_bytes([
        bytes[8], bytes[9], bytes[10], bytes[11], bytes[12], bytes[13], bytes[14], bytes[15],
    ]) >> 1;
    (low as f64) < rate * (1u64 << 63) as f64
}

thread_local! {
    /// The generator of trace and span ids: a fast one per thread, seeded from the OS
    /// (ids must be unlikely to collide, not unguessable).
    static IDS: std::cell::RefCell<rand::rngs::SmallRng> =
        std::cell::RefCell::new(rand::SeedableRng::from_entropy());
}

fn random<const N: usize>() -> [u8; N] {
    use rand::RngCore;
    let mut bytes = [0; N];
    IDS.with(|g| g.borrow_mut().fill_bytes(&mut bytes));
    bytes
}

/// A new random trace id (never the invalid all-zero one).
pub(crate) fn new_trace_id() -> TraceId {
    loop {
        let id = random::<16>();
        if id != [0; 16] {
            return TraceId::from_bytes(id);
        }
    }
}

/// A new random span id (never the invalid all-zero one).
pub(crate) fn new_span_id() -> SpanId {
    loop {
        let id = random::<8>();
        if id != [0; 8] {
            return SpanId::from_bytes(id);
        }
    }
}

/// An incoming `traceparent`: `00-<trace id>-<parent id>-<flags>`, lower-case hex.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Parent {
    trace_id: TraceId,
    span_id: SpanId,
    sampled: bool,
}

impl Parent {
    fn parse(value: &str) -> Option<Parent> {
        let hex = |s: &str, n: usize| {
            s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        let mut parts = value.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        // Version 00 has exactly four parts; later versions may add more.
        if !hex(version, 2) || version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        if !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
            return None;
        }
        let trace_id = TraceId::from_hex(trace).ok()?;
        let span_id = SpanId::from_hex(span).ok()?;
        if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
            return None;
        }
        let flags = u8::from_str_radix(flags, 16).ok()?;
        Some(Parent {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }
}

/// A span's place in its trace, as a command carries it to the node that applies it
/// (a `traceparent`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Context {
    /// The trace.
    pub trace_id: TraceId,
    /// The span the next one goes under.
    pub span_id: SpanId,
}

impl Context {
    /// As a W3C `traceparent` (sampled).
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-01", self.trace_id, self.span_id)
    }

    /// From a `traceparent`, if it is one.
    pub fn parse(value: &str) -> Option<Context> {
        Parent::parse(value).map(|p| Context {
            trace_id: p.trace_id,
            span_id: p.span_id,
        })
    }
}

/// A command's trace: its context, and on the node whose request proposed it, that
/// request's recorder (never sent: a node that receives the command has none).
#[derive(Clone)]
pub struct Traced {
    /// Where its spans go in the trace.
    pub context: Context,
    /// The recorder its apply span goes to, on the node that proposed it.
    pub recorder: Option<Arc<Recorder>>,
}

impl std::fmt::Debug for Traced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.context.traceparent())
    }
}

impl serde::Serialize for Traced {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.context.traceparent())
    }
}

impl<'de> serde::Deserialize<'de> for Traced {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Context::parse(&text)
            .map(|context| Traced {
                context,
                recorder: None,
            })
            .ok_or_else(|| serde::de::Error::custom("not a traceparent"))
    }
}

/// One finished child span.
struct Child {
    name: &'static str,
    id: SpanId,
    parent: SpanId,
    start: Instant,
    end: Instant,
}

/// The spans of one traced request (or of one proposal a follower handed over), kept
/// until it is answered.
pub struct Recorder {
    tracing: Arc<Tracing>,
    trace_id: TraceId,
    /// The request's own span.
    root: SpanId,
    /// The remote span it continues.
    parent: Option<SpanId>,
    started: Instant,
    wall: SystemTime,
    include_body: bool,
    children: Mutex<Vec<Child>>,
    attributes: Mutex<Vec<KeyValue>>,
}

impl Recorder {
    fn new(
        tracing: Arc<Tracing>,
        trace_id: TraceId,
        parent: Option<SpanId>,
        include_body: bool,
    ) -> Self {
        Recorder {
            tracing,
            trace_id,
            root: new_span_id(),
            parent,
            started: Instant::now(),
            wall: SystemTime::now(),
            include_body,
            children: Mutex::new(Vec::with_capacity(10)),
            attributes: Mutex::new(Vec::new()),
        }
    }

    /// The trace's id.
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// The request's span id.
    pub fn span_id(&self) -> SpanId {
        self.root
    }

    /// The context a span under the request's own goes with.
    pub fn context(&self) -> Context {
        Context {
            trace_id: self.trace_id,
            span_id: self.root,
        }
    }

    /// A new span id, for a child whose id must be known before it ends (the raft
    /// span, under which the command's apply goes).
    pub fn open(&self) -> Context {
        Context {
            trace_id: self.trace_id,
            span_id: new_span_id(),
        }
    }

    /// Records the child `name` (id `id`, under `parent`) from `start` to `end`.
    pub fn child(&self, name: &'static str, id: SpanId, parent: SpanId, start: Instant, end: Instant) {
        lock(&self.children).push(Child {
            name,
            id,
            parent,
            start,
            end,
        });
    }

    /// Records the stage `stage` from `start` to `end`, under the request's span.
    pub fn stage(&self, stage: Stage, start: Instant, end: Instant) {
        self.child(stage.name(), new_span_id(), self.root, start, end);
    }

    /// Adds attributes to the request's span.
    pub fn attributes(&self, kvs: impl IntoIterator<Item = KeyValue>) {
        lock(&self.attributes).extend(kvs);
    }

    /// Keeps the request's JSON body (its first 4 KiB) on its span, if the policy says
    /// so.
    pub fn body(&self, body: &serde_json::Value) {
        if self.include_body {
            let mut text = body.to_string();
            if text.len() > BODY_LIMIT {
                let mut cut = BODY_LIMIT;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
            }
            self.attributes([KeyValue::new("http.request.body", text)]);
        }
    }

    /// Ends the request's span now, named `name`, as a `kind` span that failed when
    /// `error` says so, and hands it and its children to the exporter.
    pub fn finish(&self, name: String, kind: SpanKind, error: Option<String>) {
        let end = Instant::now();
        let at = |i: Instant| self.wall + i.saturating_duration_since(self.started);
        let context = |id: SpanId| {
            SpanContext::new(
                self.trace_id,
                id,
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            )
        };
        let span = |name: Cow<'static, str>,
                    id: SpanId,
                    parent: SpanId,
                    remote: bool,
                    kind: SpanKind,
                    (start, end): (Instant, Instant),
                    attributes: Vec<KeyValue>,
                    status: Status| SpanData {
            span_context: context(id),
            parent_span_id: parent,
            parent_span_is_remote: remote,
            span_kind: kind,
            name,
            start_time: at(start),
            end_time: at(end),
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: self.tracing.scope.clone(),
        };
        for c in lock(&self.children).drain(..) {
            self.tracing.processor.on_end(span(
                Cow::Borrowed(c.name),
                c.id,
                c.parent,
                false,
                SpanKind::Internal,
                (c.start, c.end),
                Vec::new(),
                Status::Unset,
            ));
        }
        let status = match error {
            Some(description) => Status::error(description),
            None => Status::Unset,
        };
        self.tracing.processor.on_end(span(
            Cow::Owned(name),
            self.root,
            self.parent.unwrap_or(SpanId::INVALID),
            self.parent.is_some(),
            kind,
            (self.started, end),
            std::mem::take(&mut *lock(&self.attributes)),
            status,
        ));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

tokio::task_local! {
    /// The recorder of the request the task is answering, if it is traced.
    static CURRENT: Arc<Recorder>;
}

/// The current request's recorder, if it is traced.
pub fn current() -> Option<Arc<Recorder>> {
    CURRENT.try_with(|r| r.clone()).ok()
}

/// Records `stage` from `start` to `end` in the current request's trace, if it is
/// traced.
pub fn record(stage: Stage, start: Instant, end: Instant) {
    let _ = CURRENT.try_with(|r| r.stage(stage, start, end));
}

/// Runs `f` with `recorder` as the current request's (the stages that work before
/// they return their future).
pub fn scoped<R>(recorder: Arc<Recorder>, f: impl FnOnce() -> R) -> R {
    CURRENT.sync_scope(recorder, f)
}

/// `fut` with `recorder` as the current request's while it runs.
pub fn within<F: std::future::Future>(
    recorder: Arc<Recorder>,
    fut: F,
) -> impl std::future::Future<Output = F::Output> {
    CURRENT.scope(recorder, fut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_is_read_as_the_w3c_format_says() {
        let p = Parent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert_eq!(
            p.map(|p| (p.trace_id.to_string(), p.span_id.to_string(), p.sampled)),
            Some((
                "4bf92f3577b34da6a3ce929d0e0e4736".to_string(),
                "00f067aa0ba902b7".to_string(),
                true
            ))
        );
        let unsampled = Parent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
        assert_eq!(unsampled.map(|p| p.sampled), Some(false));
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "garbage",
        ] {
            assert_eq!(Parent::parse(bad), None, "{bad}");
        }
        // A later version may carry more.
        assert!(Parent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz").is_some());
    }

    #[test]
    fn the_endpoint_gets_the_traces_path_unless_it_names_one() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318").as_deref(),
            Ok("http://127.0.0.1:4318/v1/traces")
        );
        assert_eq!(
            traces_url("http://collector:4318/").as_deref(),
            Ok("http://collector:4318/v1/traces")
        );
        assert_eq!(
            traces_url("http://collector:4318/otlp/v1/traces").as_deref(),
            Ok("http://collector:4318/otlp/v1/traces")
        );
        for bad in ["https://collector:4318", "collector:4318", "http://", "http://:4318", "http://h:port"] {
            assert!(traces_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_ratio_decides_on_the_trace_id_alone() {
        let ids: Vec<TraceId> = (0..10_000).map(|_| new_trace_id()).collect();
        let share = |rate| ids.iter().filter(|id| ratio_says(**id, rate)).count();
        assert_eq!(share(0.0), 0);
        assert_eq!(share(1.0), 10_000);
        let tenth = share(0.1);
        assert!((800..1200).contains(&tenth), "{tenth}");
        assert!(ids.iter().all(|id| ratio_says(*id, 0.3) == ratio_says(*id, 0.3)));
    }
}
