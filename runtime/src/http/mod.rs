//! The HTTP layer: hyper server, the request pipeline and the endpoints.
//!
//! The order of a request's stages is the seed's data flow, composed in one place
//! (`pipeline.rs`): connection limits and the header timeout (`server.rs`, `conn.rs`) →
//! the front: sensitive headers, request id, security headers (`front.rs`) → request log
//! → trace → firewall: allow/deny, rate limit (`firewall.rs`) → CORS → deadline → router
//! → measure (`metrics.rs`) → authentication → permission check (`router.rs`) → body:
//! limits, JSON, a create's schema check (`body.rs`) → the endpoints: hooks and the store
//! through the engine (`endpoints.rs`, `cluster.rs`, `lifecycle.rs`, `projection.rs`,
//! `feed.rs`). The permission check runs before the body is read on purpose: an anonymous
//! caller learns nothing about the schema's rules, and refusing early is cheaper.

pub(crate) mod app;
pub mod body;
mod cache;
mod cluster;
mod conn;
mod endpoints;
pub mod facts;
mod feed;
pub mod firewall;
mod front;
mod lifecycle;
pub mod list;
pub(crate) mod metrics;
pub(crate) mod pipeline;
mod projection;
pub(crate) mod request_log;
pub mod respond;
pub mod router;
mod server;
pub mod stage;
mod trace;

pub use app::{Live, Planes, ServeOptions};
pub use server::{serve, Listener};
