//! What the pipeline learns about a request: the address it came from (set by the
//! connection), its request id and the rarer headers it carries (the front stage), its
//! route (the router) and its caller (authentication). The facts go through the stages
//! beside the request, by reference (`stage.rs`): a stage reads and sets them in place,
//! with no allocation and no lookup. Where the pipeline meets a tower service (a test's
//! calls and endpoints), they travel in the request's extensions, as one value.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::header::HeaderName;
#[cfg(any(test, feature = "testing"))]
use hyper::http::Extensions;

pub use super::front::RequestId;
use super::router::Route;
use crate::auth::Principal;

/// What the stages found out about a request so far.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// The socket address the request came from.
    pub peer: Option<SocketAddr>,
    /// Its `X-Request-Id`: the client's, or one this node made.
    pub request_id: Option<RequestId>,
    /// Which of the headers in [`Seen`] it carries (None: the front has not looked).
    pub seen: Option<Seen>,
    /// Where the router sent it.
    pub route: Option<Route>,
    /// Who authentication found it from.
    pub principal: Option<Arc<Principal>>,
}

impl Facts {
    /// The facts of a request that came from `peer`.
    pub fn from_peer(peer: SocketAddr) -> Facts {
        Facts {
            peer: Some(peer),
            ..Facts::default()
        }
    }

    /// Whether the request may carry the header `h`: false only when the front found that
    /// it does not.
    pub fn may_carry(&self, h: Seen) -> bool {
        self.seen.is_none_or(|s| s.0 & h.0 != 0)
    }

    /// Who the request is from: the caller authentication found, or anonymous.
    pub fn caller(&self) -> &Principal {
        match self.principal.as_deref() {
            Some(p) => p,
            None => Principal::shared_anonymous(),
        }
    }
}

/// The headers a later stage looks for that few requests carry, noted by the front in
/// its one pass over a request's headers. A stage asks here before it looks one up: a
/// lookup by name hashes the name (and parses it when it is not a constant), and most
/// requests carry none of these.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seen(u8);

/// `X-Lithair-Consistency` (a constant: a name given as text is parsed at every use).
pub const CONSISTENCY: HeaderName = HeaderName::from_static(super::cluster::CONSISTENCY_HEADER);

/// `traceparent` (W3C trace context).
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

impl Seen {
    /// `If-Match`.
    pub const IF_MATCH: Seen = Seen(1);
    /// `If-None-Match`.
    pub const IF_NONE_MATCH: Seen = Seen(1 << 1);
    /// `X-Lithair-Consistency`.
    pub const CONSISTENCY: Seen = Seen(1 << 2);
    /// `traceparent`.
    pub const TRACEPARENT: Seen = Seen(1 << 3);
    /// `Content-Length`.
    pub const CONTENT_LENGTH: Seen = Seen(1 << 4);

    /// Notes the header `name` (if it is one of these).
    pub fn note(&mut self, name: &HeaderName) {
        use hyper::header::{CONTENT_LENGTH, IF_MATCH, IF_NONE_MATCH};
        let bit = if name == IF_NONE_MATCH {
            Seen::IF_NONE_MATCH
        } else if name == IF_MATCH {
            Seen::IF_MATCH
        } else if name == CONTENT_LENGTH {
            Seen::CONTENT_LENGTH
        } else if name == CONSISTENCY {
            Seen::CONSISTENCY
        } else if name == TRACEPARENT {
            Seen::TRACEPARENT
        } else {
            return;
        };
        self.0 |= bit.0;
    }
}

/// The facts a request carries in its extensions (a tower service's request), if any.
#[cfg(any(test, feature = "testing"))]
pub fn of(ext: &Extensions) -> Option<&Facts> {
    ext.get::<Facts>()
}

/// The facts a request carries in its extensions, to set one (made empty if there were
/// none yet).
#[cfg(any(test, feature = "testing"))]
pub fn of_mut(ext: &mut Extensions) -> &mut Facts {
    ext.get_or_insert_default::<Facts>()
}

/// The socket address a request came from, from the facts in its extensions.
#[cfg(any(test, feature = "testing"))]
pub fn peer(ext: &Extensions) -> Option<SocketAddr> {
    of(ext).and_then(|f| f.peer)
}

/// Where the router sent a request, from the facts in its extensions.
#[cfg(any(test, feature = "testing"))]
pub fn route(ext: &Extensions) -> Option<&Route> {
    of(ext).and_then(|f| f.route.as_ref())
}

/// Who authentication found a request from, from the facts in its extensions.
#[cfg(any(test, feature = "testing"))]
pub fn principal(ext: &Extensions) -> Option<&Arc<Principal>> {
    of(ext).and_then(|f| f.principal.as_ref())
}
