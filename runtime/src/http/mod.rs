//! The HTTP layer: hyper server, limits, routing and the CRUD endpoints.
//!
//! The order of a request's stages is the seed's data flow: limits (body size, header
//! timeout) → router → permission check → JSON parse and validation → hooks → store. The
//! permission check runs before validation on purpose: an anonymous caller learns nothing
//! about the schema's rules, and refusing early is cheaper.

mod cluster;
pub mod list;
mod respond;
mod server;

pub use server::{serve, ServeOptions};
