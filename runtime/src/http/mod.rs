//! The HTTP layer: hyper server, the request pipeline and the endpoints.
//!
//! The order of a request's stages is the seed's data flow, composed in one place
//! (`pipeline.rs`): connection limits → security headers → firewall (allow/deny, rate
//! limit) → CORS → deadline → router → authentication → permission check (`router.rs`)
//! → JSON parse and validation → hooks → store. The permission check runs before validation on
//! purpose: an anonymous caller learns nothing about the schema's rules, and refusing
//! early is cheaper.

pub(crate) mod app;
pub mod body;
mod cluster;
mod endpoints;
pub mod firewall;
pub mod list;
pub(crate) mod pipeline;
pub mod respond;
pub mod router;
mod server;
pub mod stage;

pub use app::{Live, ServeOptions};
pub use server::serve;
