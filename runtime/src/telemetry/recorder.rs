//! The spans of one traced request: kept by its [`Recorder`] (the task-local of the
//! request while it runs) as the stages record their times, and handed to the SDK's batch
//! processor as finished spans when the request is answered.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::clock::Instant;

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks, SpanProcessor};

use super::context::{new_span_id, Context};
use super::{Tracing, BODY_LIMIT};
use crate::domain::Stage;

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
    pub(super) fn new(
        tracing: Arc<Tracing>,
        trace_id: TraceId,
        parent: Option<SpanId>,
        include_body: bool,
    ) -> Self {
        RECORDING.store(true, std::sync::atomic::Ordering::Relaxed);
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
    pub fn child(
        &self,
        name: &'static str,
        id: SpanId,
        parent: SpanId,
        start: Instant,
        end: Instant,
    ) {
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

/// Whether a recorder was ever made in this process. Until then no request is traced,
/// and [`record`] does not look for the current one (a task-local lookup for each of
/// the half-dozen stage timings of every request).
static RECORDING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Records `stage` from `start` to `end` in the current request's trace, if it is
/// traced.
pub fn record(stage: Stage, start: Instant, end: Instant) {
    // A recorder is made before the request it records runs with it as the current one.
    if RECORDING.load(std::sync::atomic::Ordering::Relaxed) {
        let _ = CURRENT.try_with(|r| r.stage(stage, start, end));
    }
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
