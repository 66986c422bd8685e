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

mod context;
mod recorder;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::TraceId;
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{BatchSpanProcessor, SpanProcessor};
use opentelemetry_sdk::Resource;

use context::Parent;
pub(crate) use context::{new_span_id, new_trace_id};
pub use context::{Context, Traced};
pub use recorder::{current, record, scoped, within, Recorder};

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
    pub fn begin(self: &Arc<Self>, traceparent: Option<&str>, path: &str) -> Option<Arc<Recorder>> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use context::new_trace_id;

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
        for bad in [
            "https://collector:4318",
            "collector:4318",
            "http://",
            "http://:4318",
            "http://h:port",
        ] {
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
        assert!(ids
            .iter()
            .all(|id| ratio_says(*id, 0.3) == ratio_says(*id, 0.3)));
    }
}
