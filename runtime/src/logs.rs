//! The process's log lines, on stderr: text, or one JSON object per line (`[telemetry]
//! log_format = "json"`, or `LITHAIR_LOG_FORMAT=json`, which wins): `timestamp` (RFC
//! 3339, UTC), `level`, `target`, `message`, the request's `trace_id` and `span_id` when
//! the event has them (the request log's lines do), and every other field of the event
//! in `context`. `LITHAIR_LOG` filters as `RUST_LOG` does (default `info,openraft=warn`).

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;

/// What keeps the log thread running: dropped at the end of `main`, it writes the lines
/// still queued.
#[must_use = "the lines still queued are written when this is dropped"]
pub struct Logs {
    _worker: Option<tracing_appender::non_blocking::WorkerGuard>,
}

/// Installs the process's subscriber: `format` unless `LITHAIR_LOG_FORMAT` says
/// otherwise. A second call does nothing (the first subscriber stays).
///
/// Lines go to stderr through a thread of their own (`tracing-appender`): a request's
/// line is queued, and the thread writes the queue in large writes, flushed whenever it
/// has caught up. Nothing is dropped: with 65,536 lines queued, a logging thread waits.
pub fn init(format: LogFormat) -> Logs {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("LITHAIR_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,openraft=warn"));
    let format = match std::env::var("LITHAIR_LOG_FORMAT").as_deref() {
        Ok("json") => LogFormat::Json,
        Ok("text") => LogFormat::Text,
        _ => format,
    };
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(65_536)
        .thread_name("lithair-logs")
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        ));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let installed = match format {
        LogFormat::Json => builder.event_format(JsonLines).try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
    Logs {
        _worker: installed.is_ok().then_some(guard),
    }
}

/// The JSON line format.
struct JsonLines;

/// An event's fields, as JSON.
#[derive(Default)]
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_string(), Value::from(format!("{value:?}")));
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut context = fields.0;
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            Value::from(
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            ),
        );
        line.insert("level".into(), Value::from(meta.level().as_str()));
        line.insert("target".into(), Value::from(meta.target()));
        line.insert(
            "message".into(),
            context.remove("message").unwrap_or(Value::from("")),
        );
        for id in ["trace_id", "span_id"] {
            if let Some(v) = context.remove(id) {
                line.insert(id.into(), v);
            }
        }
        line.insert("context".into(), Value::Object(context));
        writeln!(writer, "{}", Value::Object(line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A log destination the test reads back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_json_line_has_the_ids_on_top_and_the_rest_in_its_context() {
        let log = Captured::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .event_format(JsonLines)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "lithair::request", trace_id = "t1", span_id = "s1", status = 201u64, model = "Product", latency_ms = 1.5, "request");
        });
        let text = String::from_utf8_lossy(&log.0.lock().unwrap_or_else(|p| p.into_inner())).to_string();
        let line: Value = serde_json::from_str(text.trim()).unwrap_or(Value::Null);
        assert_eq!(line["level"], "INFO", "{text}");
        assert_eq!(line["message"], "request");
        assert_eq!((line["trace_id"].clone(), line["span_id"].clone()), (Value::from("t1"), Value::from("s1")));
        assert_eq!(line["context"], serde_json::json!({"status": 201, "model": "Product", "latency_ms": 1.5}));
        assert!(line["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    }
}
