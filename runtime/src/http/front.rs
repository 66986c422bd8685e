//! The first stage of the pipeline (`pipeline.rs`). One pass over the request's headers
//! marks the secret ones sensitive (`Authorization`, `Cookie`, the cluster secret: no log
//! or debug output shows them), finds the client's `X-Request-Id`, and notes which of the
//! rarer headers later stages look for it carries (`facts::Seen`); the request id (the
//! client's, or one this node makes) goes into the request's facts for the log and the
//! trace. Every answer, refusals included, carries the request id and the security
//! headers back.
//!
//! It is written here rather than taken from tower-http's request-id and
//! sensitive-headers layers: those are three layers, each cloned per request, each
//! looking the headers up by name and wrapping the answer's future; the front does their
//! work in one pass (measured in `bench/README.md`, session 15).

use std::sync::atomic::{AtomicU64, Ordering};

use hyper::header::{HeaderName, HeaderValue, CACHE_CONTROL};
use hyper::Request;

use super::facts::Facts;
use super::stage::{Next, Reply, Step};

/// The header that names a request: the client's, or one this node makes; every answer
/// carries it back.
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The cluster's secret header: its value is marked sensitive, as are `Authorization`'s
/// and `Cookie`'s, so that no log or debug output shows them.
const SECRET: HeaderName = HeaderName::from_static(crate::raft::network::SECRET_HEADER);

/// A request's id: one this node made, kept inline (the request log copies it without
/// touching the heap), or the client's `X-Request-Id`.
#[derive(Clone, Debug)]
pub enum RequestId {
    /// Made here: `{prefix:08x}-{n:x}`, the first `len` bytes of `text`.
    Made { text: [u8; 25], len: u8 },
    /// The client's.
    Given(HeaderValue),
}

impl RequestId {
    /// The id `{prefix:08x}-{n:x}`, written without the formatting machinery (every
    /// request makes one).
    fn made(prefix: u32, n: u64) -> RequestId {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = [0u8; 25];
        for (i, d) in text[..8].iter_mut().enumerate() {
            *d = HEX[(prefix >> (28 - 4 * i) & 0xf) as usize];
        }
        text[8] = b'-';
        let digits = (64 - n.leading_zeros()).div_ceil(4).max(1) as usize;
        for (i, d) in text[9..9 + digits].iter_mut().enumerate() {
            *d = HEX[(n >> (4 * (digits - 1 - i)) & 0xf) as usize];
        }
        RequestId::Made {
            text,
            // At most 9 + 16.
            len: (9 + digits) as u8,
        }
    }

    /// Its text (empty for a client's id that is not visible ASCII).
    pub fn as_str(&self) -> &str {
        match self {
            RequestId::Made { text, len } => {
                std::str::from_utf8(&text[..usize::from(*len)]).unwrap_or_default()
            }
            RequestId::Given(v) => v.to_str().unwrap_or_default(),
        }
    }

    /// Its header value.
    fn header(self) -> HeaderValue {
        match self {
            RequestId::Made { text, len } => {
                match HeaderValue::from_bytes(&text[..usize::from(len)]) {
                    Ok(id) => id,
                    // Hex digits and a dash are always a valid header value.
                    Err(_) => HeaderValue::from_static("0"),
                }
            }
            RequestId::Given(v) => v,
        }
    }
}

/// Makes request ids: a random prefix per node and a count, unique in the process.
#[derive(Clone, Copy)]
struct RequestIds {
    prefix: u32,
}

/// Counts a thread takes from the process's count at once: the workers do not share one
/// counter's cache line per request.
const BLOCK: u64 = 1024;

/// The process's count: the start of the next block a thread takes.
static NEXT_BLOCK: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The current thread's block: the next count it gives, and the block's end.
    static BLOCK_OF: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
}

/// The next count of the current thread, from its block (a new block when it has used
/// its last): every count is given once in the process.
fn next_count() -> u64 {
    BLOCK_OF.with(|b| {
        let (mut n, mut end) = b.get();
        if n == end {
            n = NEXT_BLOCK.fetch_add(BLOCK, Ordering::Relaxed);
            end = n.saturating_add(BLOCK);
        }
        b.set((n + 1, end));
        n
    })
}

impl RequestIds {
    fn new() -> Self {
        RequestIds {
            prefix: rand::random(),
        }
    }

    /// The next id.
    fn make(self) -> RequestId {
        RequestId::made(self.prefix, next_count())
    }
}

/// `X-Content-Type-Options` (a constant: a header named by a string is parsed per use).
const X_CONTENT_TYPE_OPTIONS: HeaderName = HeaderName::from_static("x-content-type-options");

/// The first stage. One pass over the request's headers marks the secret ones sensitive,
/// finds the client's `X-Request-Id` and notes the rarer headers (`facts::Seen`); the
/// request id (the client's, or a new one) goes into the request's facts for the log and
/// the trace. Every answer, refusals included, carries the request id back (unless it
/// names one itself), `X-Content-Type-Options: nosniff`, and `Cache-Control: no-store`
/// when it is an error or answers an authenticated request (unless it set its own).
#[derive(Clone)]
pub(crate) struct Front {
    ids: RequestIds,
}

impl Front {
    /// The front of a node's pipeline, making the node's request ids.
    pub(crate) fn new() -> Front {
        Front {
            ids: RequestIds::new(),
        }
    }
}

impl<B: Send + 'static> Step<B> for Front {
    fn run(&self, next: &dyn Next<B>, mut req: Request<B>, facts: &mut Facts) -> Reply {
        let mut authenticated = false;
        let mut id = None;
        let mut seen = super::facts::Seen::default();
        for (name, value) in req.headers_mut().iter_mut() {
            if name == hyper::header::AUTHORIZATION {
                authenticated = true;
                value.set_sensitive(true);
            } else if name == hyper::header::COOKIE || name == SECRET {
                value.set_sensitive(true);
            } else if name == REQUEST_ID {
                id = id.or_else(|| Some(RequestId::Given(value.clone())));
            } else {
                seen.note(name);
            }
        }
        let id = id.unwrap_or_else(|| self.ids.make());
        facts.request_id = Some(id.clone());
        facts.seen = Some(seen);
        next.answer(req, facts).edit(move |r| {
            let error = r.status().as_u16() >= 400;
            let headers = r.headers_mut();
            if let hyper::header::Entry::Vacant(v) = headers.entry(REQUEST_ID) {
                v.insert(id.header());
            }
            headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
            if error || authenticated {
                headers
                    .entry(CACHE_CONTROL)
                    .or_insert(HeaderValue::from_static("no-store"));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_the_prefix_and_the_count_in_hex() {
        for (prefix, n) in [
            (0, 1),
            (0xdead_beef, 0x10),
            (0x0000_00ff, u64::MAX),
            (7, 0xabc),
        ] {
            let id = RequestId::made(prefix, n);
            let text = format!("{prefix:08x}-{n:x}");
            assert_eq!(id.as_str(), text);
            assert_eq!(id.header().to_str().ok(), Some(text.as_str()));
        }
    }

    #[test]
    fn threads_never_make_the_same_id() {
        let ids = RequestIds::new();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    (0..3 * BLOCK)
                        .map(|_| ids.make().as_str().to_string())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all = std::collections::HashSet::new();
        for t in threads {
            for id in t.join().expect("maker") {
                assert!(all.insert(id), "an id made twice");
            }
        }
        assert_eq!(all.len() as u64, 4 * 3 * BLOCK);
    }
}
