//! The process's log lines, on stderr: text, or one JSON object per line (`[telemetry]
//! log_format = "json"`, or `LITHAIR_LOG_FORMAT=json`, which wins): `timestamp` (RFC
//! 3339, UTC), `level`, `target`, `message`, the request's `trace_id` and `span_id` when
//! the event has them (the request log's lines do), and every other field of the event
//! in `context`. `LITHAIR_LOG` filters as `RUST_LOG` does (default `info,openraft=warn`).

use std::fmt::{self, Write as _};

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

/// The JSON line format, written straight into the line's buffer: no map of the fields,
/// no allocation per field (a request's line is written at every request with
/// `request_log = "all"`).
struct JsonLines;

/// Which of an event's fields a pass of [`JsonFields`] writes.
#[derive(Clone, Copy, PartialEq)]
enum Pick {
    /// The value of `message`, as a JSON string.
    Message,
    /// `"trace_id":…` and `"span_id":…`, each after a comma.
    Ids,
    /// Every other field, as `"name":value` pairs separated by commas.
    Context,
}

/// A visitor that writes some of an event's fields as JSON.
struct JsonFields<'a, W: fmt::Write> {
    out: &'a mut W,
    pick: Pick,
    /// Whether a context pair was written (the next one needs a comma).
    written: bool,
    result: fmt::Result,
}

impl<W: fmt::Write> JsonFields<'_, W> {
    /// Writes `name`'s key as the pass asks, or returns false when the pass skips it.
    fn key(&mut self, name: &str) -> bool {
        let wanted = match name {
            "message" => self.pick == Pick::Message,
            "trace_id" | "span_id" => self.pick == Pick::Ids,
            _ => self.pick == Pick::Context,
        };
        if !wanted || self.result.is_err() {
            return false;
        }
        self.result = match self.pick {
            Pick::Message => Ok(()),
            Pick::Ids => write!(self.out, ",\"{name}\":"),
            Pick::Context => {
                let comma = if std::mem::replace(&mut self.written, true) {
                    ","
                } else {
                    ""
                };
                self.out
                    .write_str(comma)
                    .and_then(|()| write_json_str(self.out, name))
                    .and_then(|()| self.out.write_char(':'))
            }
        };
        self.result.is_ok()
    }

    fn value(&mut self, field: &Field, write: impl FnOnce(&mut W) -> fmt::Result) {
        if self.key(field.name()) {
            self.result = write(self.out);
        }
    }
}

impl<W: fmt::Write> Visit for JsonFields<'_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.value(field, |w| write_json_str(w, value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.value(field, |w| write!(w, "{value}"));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.value(field, |w| write!(w, "{value}"));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinities.
        self.value(field, |w| {
            if value.is_finite() {
                write!(w, "{value}")
            } else {
                w.write_str("null")
            }
        });
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.value(field, |w| write!(w, "{value}"));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.value(field, |w| {
            w.write_char('"')?;
            write!(Escaped(w), "{value:?}")?;
            w.write_char('"')
        });
    }
}

/// `s` as a JSON string.
fn write_json_str(w: &mut impl fmt::Write, s: &str) -> fmt::Result {
    w.write_char('"')?;
    Escaped(w).write_str(s)?;
    w.write_char('"')
}

/// Writes what it is given JSON-escaped (without the quotes), in runs of plain text.
struct Escaped<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut plain = 0;
        for (i, b) in s.bytes().enumerate() {
            let escape = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..=0x1f => "",
                _ => continue,
            };
            self.0.write_str(&s[plain..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{b:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            plain = i + 1;
        }
        self.0.write_str(&s[plain..])
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
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        let stamp = crate::domain::row::time_text(micros).unwrap_or(*b"0000-00-00T00:00:00.000000Z");
        let meta = event.metadata();
        writer.write_str("{\"timestamp\":\"")?;
        writer.write_str(std::str::from_utf8(&stamp).unwrap_or_default())?;
        write!(writer, "\",\"level\":\"{}\",\"target\":", meta.level().as_str())?;
        write_json_str(&mut writer, meta.target())?;
        writer.write_str(",\"message\":\"")?;
        for pick in [Pick::Message, Pick::Ids, Pick::Context] {
            if pick == Pick::Ids {
                writer.write_char('"')?;
            }
            if pick == Pick::Context {
                writer.write_str(",\"context\":{")?;
            }
            let mut fields = JsonFields {
                out: &mut writer,
                pick,
                written: false,
                result: Ok(()),
            };
            if pick == Pick::Message {
                // The message's text, without its quotes (written around it).
                let mut text = MessageText(&mut fields);
                event.record(&mut text);
            } else {
                event.record(&mut fields);
            }
            fields.result?;
        }
        writer.write_str("}}\n")
    }
}

/// The first pass: the message's text, escaped, without quotes.
struct MessageText<'a, 'b, W: fmt::Write>(&'a mut JsonFields<'b, W>);

impl<W: fmt::Write> Visit for MessageText<'_, '_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.result = Escaped(self.0.out).write_str(value);
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.0.result = write!(Escaped(self.0.out), "{value:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
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
        let stamp = line["timestamp"].as_str().unwrap_or_default();
        assert!(
            chrono::DateTime::parse_from_rfc3339(stamp).is_ok(),
            "{stamp}"
        );
    }

    #[test]
    fn a_json_line_escapes_what_json_must_and_stays_one_line() {
        let log = Captured::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .event_format(JsonLines)
            .with_writer(move || writer.clone())
            .finish();
        let path = "/a\"b\\c\n\u{1}é";
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(
                target: "lithair::request",
                path = %path,
                debug = ?("q\"", 1),
                nan = f64::NAN,
                negative = -3i64,
                ok = true,
                "said \"{}\"\tthen",
                "hi"
            );
        });
        let text = String::from_utf8_lossy(&log.0.lock().unwrap_or_else(|p| p.into_inner())).to_string();
        assert_eq!(text.matches('\n').count(), 1, "{text}");
        let line: Value = serde_json::from_str(text.trim()).unwrap_or(Value::Null);
        assert_eq!(line["message"], "said \"hi\"\tthen", "{text}");
        assert_eq!(line["level"], "WARN");
        assert_eq!(
            line["context"],
            serde_json::json!({"path": path, "debug": "(\"q\\\"\", 1)", "nan": null, "negative": -3, "ok": true}),
            "{text}"
        );
        assert_eq!(line.get("trace_id"), None);
    }
}
