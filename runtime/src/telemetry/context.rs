//! Where a span stands in its trace: W3C `traceparent` headers read and written, the
//! context a command carries to the node that applies it, and new trace and span ids.

use std::sync::Arc;

use opentelemetry::trace::{SpanId, TraceId};

use super::Recorder;

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
pub(super) struct Parent {
    pub(super) trace_id: TraceId,
    pub(super) span_id: SpanId,
    pub(super) sampled: bool,
}

impl Parent {
    pub(super) fn parse(value: &str) -> Option<Parent> {
        let hex = |s: &str, n: usize| {
            s.len() == n
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
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
        assert!(
            Parent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz").is_some()
        );
    }
}
