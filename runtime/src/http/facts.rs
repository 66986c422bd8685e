//! What the pipeline learns about a request, carried in one extension: the address it
//! came from (set by the connection), its request id (the front stage), its route (the
//! router) and its caller (authentication). One value instead of one extension each:
//! every extension is a boxed value in a map that grows as they come, and a request
//! carried four or five.

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use hyper::header::HeaderValue;
use hyper::http::Extensions;

use super::router::Route;
use crate::auth::Principal;

/// What the stages found out about a request so far.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// The socket address the request came from.
    pub peer: Option<SocketAddr>,
    /// Its `X-Request-Id`: the client's, or one this node made.
    pub request_id: Option<HeaderValue>,
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
}

/// The facts of a request (its extensions), if any stage set one.
pub fn of(ext: &Extensions) -> Option<&Facts> {
    ext.get::<Facts>()
}

/// The facts of a request, to set one (made empty if there were none yet).
pub fn of_mut(ext: &mut Extensions) -> &mut Facts {
    ext.get_or_insert_default::<Facts>()
}

/// The socket address a request came from.
pub fn peer(ext: &Extensions) -> Option<SocketAddr> {
    of(ext).and_then(|f| f.peer)
}

/// Where the router sent a request.
pub fn route(ext: &Extensions) -> Option<&Route> {
    of(ext).and_then(|f| f.route.as_ref())
}

/// Who authentication found a request from.
pub fn principal(ext: &Extensions) -> Option<&Arc<Principal>> {
    of(ext).and_then(|f| f.principal.as_ref())
}

/// Who a request with `facts` is from: the caller authentication found, or anonymous.
pub fn caller(facts: Option<&Facts>) -> &Principal {
    static ANONYMOUS: LazyLock<Principal> = LazyLock::new(Principal::anonymous);
    match facts.and_then(|f| f.principal.as_deref()) {
        Some(p) => p,
        None => &ANONYMOUS,
    }
}
