//! lithair-runtime: everything generic a lithair-generated service needs at run time.
//!
//! A generated crate holds the service's schema (`spec.json`), typed records and each
//! model's actions trait; its handler files implement those and this crate's `Hooks`.
//! This crate does the rest, in the order of
//! the seed's data flow:
//!
//! - `http`: the hyper server and the request pipeline as tower stages (connection
//!   limits, security headers, firewall and rate limit, CORS, deadline, router,
//!   authentication, authorization, body), then the endpoints;
//! - `auth`: bearer API tokens and role checks (deny by default);
//! - `validate`: request bodies checked against the schema, every field at once;
//! - `hooks`: the bridge to the user's typed hooks and actions;
//! - `engine`: operations on records (hooks, stamps), turned into commands;
//! - `store`: the facade the engine writes and reads through (open, propose, read,
//!   shutdown), over `domain` (commands, events, state, the decision rule, snapshots; no
//!   I/O), `raft` (consensus, the data dir, recovery, checkpoints) and `wal` (the logs and
//!   small files on one file seam, a leaf);
//! - `logs` and `telemetry`: log lines (text or JSON) and trace export (OTLP);
//! - `histogram`: the lock-free histogram of the metrics; `clock`: the clock of the
//!   timings;
//! - [`config`] and `cli`: `lithair.toml`, `LITHAIR_*`, flags; `serve`, `token new` and `token list`.
//!
//! The public API is what a generated crate needs: [`Service`], [`main`], [`prelude`],
//! [`error`] and [`config`]. The feature `testing` makes the parts above public too, and
//! adds `testing` (a service's whole pipeline in process) for tests.

pub mod config;
pub mod error;
#[cfg(feature = "testing")]
pub mod testing;

// The runtime's own parts: public with the `testing` feature (the runtime's tests, its
// examples and benchmarks reach them), private to the crate otherwise. A generated crate
// needs only [`Service`], [`main`], [`prelude`], [`error`] and [`config`]. Each is
// declared twice, once per case, rather than through a macro: `cargo fmt` formats only
// the modules it finds declared.
#[cfg(feature = "testing")]
pub mod auth;
#[cfg(not(feature = "testing"))]
pub(crate) mod auth;
#[cfg(feature = "testing")]
pub mod cli;
#[cfg(not(feature = "testing"))]
pub(crate) mod cli;
#[cfg(feature = "testing")]
pub mod clock;
#[cfg(not(feature = "testing"))]
pub(crate) mod clock;
#[cfg(feature = "testing")]
pub mod domain;
#[cfg(not(feature = "testing"))]
pub(crate) mod domain;
#[cfg(feature = "testing")]
pub mod engine;
#[cfg(not(feature = "testing"))]
pub(crate) mod engine;
#[cfg(feature = "testing")]
pub mod histogram;
#[cfg(not(feature = "testing"))]
pub(crate) mod histogram;
#[cfg(feature = "testing")]
pub mod hooks;
#[cfg(not(feature = "testing"))]
pub(crate) mod hooks;
#[cfg(feature = "testing")]
pub mod http;
#[cfg(not(feature = "testing"))]
pub(crate) mod http;
#[cfg(feature = "testing")]
pub mod logs;
#[cfg(not(feature = "testing"))]
pub(crate) mod logs;
#[cfg(feature = "testing")]
pub mod raft;
#[cfg(not(feature = "testing"))]
pub(crate) mod raft;
#[cfg(feature = "testing")]
pub mod spec;
#[cfg(not(feature = "testing"))]
pub(crate) mod spec;
#[cfg(feature = "testing")]
pub mod store;
#[cfg(not(feature = "testing"))]
pub(crate) mod store;
#[cfg(feature = "testing")]
pub mod telemetry;
#[cfg(not(feature = "testing"))]
pub(crate) mod telemetry;
#[cfg(feature = "testing")]
pub mod tls;
#[cfg(not(feature = "testing"))]
pub(crate) mod tls;
#[cfg(feature = "testing")]
pub mod validate;
#[cfg(not(feature = "testing"))]
pub(crate) mod validate;
#[cfg(feature = "testing")]
pub mod wal;
#[cfg(not(feature = "testing"))]
pub(crate) mod wal;

use std::collections::HashMap;
use std::sync::Arc;

/// The allocator of every lithair service (feature `mimalloc`, on by default). Not in the
/// crate's own unit-test build, which links the crate a second time (as its
/// dev-dependency with the `testing` feature) and would have two.
#[cfg(all(feature = "mimalloc", not(test)))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub use chrono;
pub use cli::main;
pub use error::{ApiError, FieldError};
pub use serde;
pub use serde_json;
pub use spec::SpecError;
pub use uuid;

/// What [`main`] runs: a service, or what builds one (a generated crate's `service()`
/// builder, whose handlers `main.rs` may give).
pub trait IntoService {
    /// The service, or why its schema cannot be used.
    fn into_service(self) -> Result<Service, SpecError>;
}

impl IntoService for Service {
    fn into_service(self) -> Result<Service, SpecError> {
        Ok(self)
    }
}

impl IntoService for Result<Service, SpecError> {
    fn into_service(self) -> Result<Service, SpecError> {
        self
    }
}

/// What generated code and handler files import.
pub mod prelude {
    pub use crate::auth::Principal;
    pub use crate::error::{ApiError, FieldError};
    pub use crate::hooks::{
        action_input, action_output, no_actions, typed_hooks, ActionContext, ActionFn,
        ActionResponse, ActionResult, BoxFuture, ByDefault, Committed, Given, HookContext,
        HookResult, Hooks, ModelHooks, ModelRecord, Slot,
    };
    pub use crate::spec::Operation;
    pub use crate::{IntoService, Service, SpecError};
    pub use chrono::{DateTime, NaiveDate, Utc};
    pub use serde::{Deserialize, Serialize};
    pub use serde_json::{json, Value};
    pub use std::future::Future;
    pub use uuid::Uuid;
}

/// A service: its compiled schema, OpenAPI document and hooks, ready to serve.
pub struct Service {
    spec: Arc<spec::CompiledSpec>,
    openapi: Option<&'static str>,
    hooks: HashMap<String, Box<dyn hooks::ModelHooks>>,
}

impl Service {
    /// Reads the `spec.json` that lithair-gen generated.
    pub fn from_spec_json(text: &str) -> Result<Service, SpecError> {
        Ok(Service {
            spec: Arc::new(spec::CompiledSpec::from_json(text)?),
            openapi: None,
            hooks: HashMap::new(),
        })
    }

    /// Serves `doc` at `/openapi.json`.
    pub fn with_openapi(mut self, doc: &'static str) -> Self {
        self.openapi = Some(doc);
        self
    }

    /// Registers the hooks of `model`.
    pub fn with_hooks(mut self, model: &str, hooks: Box<dyn hooks::ModelHooks>) -> Self {
        self.hooks.insert(model.to_string(), hooks);
        self
    }
}
