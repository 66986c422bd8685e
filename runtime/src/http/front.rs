//! The first stage of the pipeline (`pipeline.rs`). One pass over the request's headers
//! marks the secret ones sensitive (`Authorization`, `Cookie`, the cluster secret: no log
//! or debug output shows them) and finds the client's `X-Request-Id`; the request id (the
//! client's, or one this node makes) goes into the request's facts for the log and the
//! trace. Every answer, refusals included, carries the request id and the security
//! headers back.
//!
//! It is written here rather than taken from tower-http's request-id and
//! sensitive-headers layers: those are three layers, each cloned per request, each
//! looking the headers up by name and wrapping the answer's future; the front does their
//! work in one pass (measured in `bench/README.md`, session 15).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hyper::header::{HeaderName, HeaderValue, CACHE_CONTROL};
use hyper::Request;

use super::stage::{Next, Reply, Step};

/// The header that names a request: the client's, or one this node makes; every answer
/// carries it back.
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The cluster's secret header: its value is marked sensitive, as are `Authorization`'s
/// and `Cookie`'s, so that no log or debug output shows them.
const SECRET: HeaderName = HeaderName::from_static(crate::raft::network::SECRET_HEADER);

/// Makes request ids: a random prefix per process and a counter (unique per node,
/// without a system call per request).
#[derive(Clone)]
struct RequestIds {
    prefix: u32,
    next: Arc<AtomicU64>,
}

impl RequestIds {
    fn new() -> Self {
        RequestIds {
            prefix: rand::random(),
            next: Arc::new(AtomicU64::new(1)),
        }
    }

    /// The next id.
    fn make(&self) -> HeaderValue {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        // `{prefix:08x}-{n:x}`, written without the formatting machinery (every request
        // makes one).
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut id = [0u8; 8 + 1 + 16];
        for (i, d) in id[..8].iter_mut().enumerate() {
            *d = HEX[(self.prefix >> (28 - 4 * i) & 0xf) as usize];
        }
        id[8] = b'-';
        let digits = (64 - n.leading_zeros()).div_ceil(4).max(1) as usize;
        for (i, d) in id[9..9 + digits].iter_mut().enumerate() {
            *d = HEX[(n >> (4 * (digits - 1 - i)) & 0xf) as usize];
        }
        match HeaderValue::from_bytes(&id[..9 + digits]) {
            Ok(id) => id,
            // Hex digits and a dash are always a valid header value.
            Err(_) => HeaderValue::from_static("0"),
        }
    }
}

/// `X-Content-Type-Options` (a constant: a header named by a string is parsed per use).
const X_CONTENT_TYPE_OPTIONS: HeaderName = HeaderName::from_static("x-content-type-options");

/// The first stage. One pass over the request's headers marks the secret ones sensitive
/// and finds the client's `X-Request-Id`; the request id (the client's, or a new one) goes
/// into the request's facts for the log and the trace. Every answer, refusals included,
/// carries the request id back (unless it names one itself), `X-Content-Type-Options:
/// nosniff`, and `Cache-Control: no-store` when it is an error or answers an
/// authenticated request (unless it set its own).
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
    fn run(&self, next: &dyn Next<B>, mut req: Request<B>) -> Reply {
        let mut authenticated = false;
        let mut id = None;
        for (name, value) in req.headers_mut().iter_mut() {
            if name == hyper::header::AUTHORIZATION {
                authenticated = true;
                value.set_sensitive(true);
            } else if name == hyper::header::COOKIE || name == SECRET {
                value.set_sensitive(true);
            } else if name == REQUEST_ID && id.is_none() {
                id = Some(value.clone());
            }
        }
        let id = id.unwrap_or_else(|| self.ids.make());
        super::facts::of_mut(req.extensions_mut()).request_id = Some(id.clone());
        next.answer(req).map(move |mut r| {
            let error = r.status().as_u16() >= 400;
            let headers = r.headers_mut();
            headers.entry(REQUEST_ID).or_insert(id);
            headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
            if error || authenticated {
                headers
                    .entry(CACHE_CONTROL)
                    .or_insert(HeaderValue::from_static("no-store"));
            }
            r
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_the_prefix_and_the_count_in_hex() {
        for (prefix, n) in [(0, 1), (0xdead_beef, 0x10), (0x0000_00ff, u64::MAX), (7, 0xabc)] {
            let ids = RequestIds {
                prefix,
                next: Arc::new(AtomicU64::new(n)),
            };
            let id = ids.make();
            assert_eq!(
                id.to_str().ok(),
                Some(format!("{prefix:08x}-{n:x}").as_str())
            );
        }
    }
}
