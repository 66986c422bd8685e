//! The JSON line format (`log_format = "json"`): `timestamp` (RFC 3339, UTC,
//! microseconds), `level`, `target`, `message`, the request's `trace_id` and `span_id`
//! when the event has them, and every other field of the event in `context`, written
//! straight into the line's buffer: no map of the fields and no allocation per field (a
//! request's line is written at every request with `request_log = "all"`).

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The JSON line format.
pub(crate) struct JsonLines;

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
                w.write_str(ryu::Buffer::new().format_finite(value))
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
pub(crate) fn write_json_str(w: &mut impl fmt::Write, s: &str) -> fmt::Result {
    w.write_char('"')?;
    Escaped(w).write_str(s)?;
    w.write_char('"')
}

/// Writes what it is given JSON-escaped (without the quotes), in runs of plain text.
struct Escaped<'a, W: fmt::Write>(&'a mut W);

/// The bytes a JSON string cannot hold as they are: `"`, `\\` and the control characters.
const NEEDS_ESCAPE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

impl<W: fmt::Write> fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut plain = 0;
        for (i, &b) in s.as_bytes().iter().enumerate() {
            if !NEEDS_ESCAPE[usize::from(b)] {
                continue;
            }
            self.0.write_str(&s[plain..i])?;
            match b {
                b'"' => self.0.write_str("\\\"")?,
                b'\\' => self.0.write_str("\\\\")?,
                b'\n' => self.0.write_str("\\n")?,
                b'\r' => self.0.write_str("\\r")?,
                b'\t' => self.0.write_str("\\t")?,
                _ => write!(self.0, "\\u{b:04x}")?,
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
        let meta = event.metadata();
        write_head(&mut writer, meta.level(), meta.target())?;
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

/// The start of a line: `{"timestamp":"<now>","level":"<level>","target":<target>`.
pub(crate) fn write_head(
    w: &mut impl fmt::Write,
    level: &tracing::Level,
    target: &str,
) -> fmt::Result {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    let stamp = crate::domain::row::time_text(micros).unwrap_or(*b"0000-00-00T00:00:00.000000Z");
    w.write_str("{\"timestamp\":\"")?;
    w.write_str(std::str::from_utf8(&stamp).unwrap_or_default())?;
    w.write_str("\",\"level\":\"")?;
    w.write_str(level.as_str())?;
    w.write_str("\",\"target\":")?;
    write_json_str(w, target)
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
    use crate::logs::captured::json_lines;
    use serde_json::Value;

    #[test]
    fn a_json_line_has_the_ids_on_top_and_the_rest_in_its_context() {
        let text = json_lines(|| {
            tracing::info!(target: "lithair::request", trace_id = "t1", span_id = "s1", status = 201u64, model = "Product", latency_ms = 1.5, "request");
        });
        let line: Value = serde_json::from_str(text.trim()).unwrap_or(Value::Null);
        assert_eq!(line["level"], "INFO", "{text}");
        assert_eq!(line["message"], "request");
        assert_eq!(
            (line["trace_id"].clone(), line["span_id"].clone()),
            (Value::from("t1"), Value::from("s1"))
        );
        assert_eq!(
            line["context"],
            serde_json::json!({"status": 201, "model": "Product", "latency_ms": 1.5})
        );
        assert!(line["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
        let stamp = line["timestamp"].as_str().unwrap_or_default();
        assert!(
            chrono::DateTime::parse_from_rfc3339(stamp).is_ok(),
            "{stamp}"
        );
    }

    #[test]
    fn a_json_line_escapes_what_json_must_and_stays_one_line() {
        let path = "/a\"b\\c\n\u{1}é";
        let text = json_lines(|| {
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
