//! The process's log lines, on stderr: text, or one JSON object per line (`[telemetry]
//! log_format = "json"`, or `LITHAIR_LOG_FORMAT=json`, which wins): `timestamp` (RFC
//! 3339, UTC), `level`, `target`, `message`, the request's `trace_id` and `span_id` when
//! the event has them (the request log's lines do), and every other field of the event
//! in `context`. `LITHAIR_LOG` filters as `RUST_LOG` does (default `info,openraft=warn`).

pub(crate) mod json;
pub mod writer;

use std::sync::OnceLock;

use crate::config::LogFormat;
use json::JsonLines;

/// What keeps the log thread running: dropped at the end of `main`, it writes the lines
/// still queued.
#[must_use = "the lines still queued are written when this is dropped"]
pub struct Logs {
    _flusher: Option<writer::Flusher>,
}

/// Installs the process's subscriber: `format` unless `LITHAIR_LOG_FORMAT` says
/// otherwise. A second call does nothing (the first subscriber stays).
///
/// Lines go to stderr through a thread of their own (`writer.rs`): a request's line is
/// appended to a shared buffer, and the thread writes what gathered in one call. A
/// thread that logs never waits: with [`writer::MAX_PENDING`] bytes waiting (stderr does
/// not keep up), lines are dropped, and a warning says how many once it caught up.
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
    let (lines, flusher) = match writer::spawn(std::io::stderr()) {
        Ok((lines, flusher)) => (Some(lines), Some(flusher)),
        // No thread for the logs: each line is written by the thread that logs it.
        Err(_) => (None, None),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let installed = match (format, lines) {
        (LogFormat::Json, Some(lines)) => builder
            .event_format(JsonLines)
            .with_writer(lines)
            .try_init(),
        (LogFormat::Json, None) => builder
            .event_format(JsonLines)
            .with_writer(std::io::stderr)
            .try_init(),
        (LogFormat::Text, Some(lines)) => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(lines)
            .try_init(),
        (LogFormat::Text, None) => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .try_init(),
    };
    if installed.is_ok() && format == LogFormat::Json {
        if let Some(f) = &flusher {
            let _ = JSON_LINES.set(f.lines());
        }
    }
    Logs {
        _flusher: if installed.is_ok() { flusher } else { None },
    }
}

/// The log thread's writer, when the process's lines are JSON.
static JSON_LINES: OnceLock<writer::Lines> = OnceLock::new();

/// Where a hot path may append a JSON line it wrote itself (in the shape of
/// [`json::JsonLines`]), when the process writes JSON lines through the log thread. The
/// caller still asks `tracing` whether its event is enabled.
pub(crate) fn json_lines() -> Option<&'static writer::Lines> {
    JSON_LINES.get()
}

/// What the log tests share: a destination they read back, and the JSON lines a closure's
/// events make.
#[cfg(test)]
pub(crate) mod captured {
    use std::sync::{Arc, Mutex};

    /// A log destination the test reads back.
    #[derive(Clone, Default)]
    pub(crate) struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Captured {
        /// What was written.
        pub(crate) fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).to_string()
        }
    }

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

    /// The JSON lines (`super::json::JsonLines`) of the events `f` makes.
    pub(crate) fn json_lines(f: impl FnOnce()) -> String {
        let log = Captured::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .event_format(super::json::JsonLines)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        log.text()
    }
}
