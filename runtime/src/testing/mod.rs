//! A service's whole pipeline in process, for tests (feature `testing`): the same stages,
//! endpoints, engine and store as `serve`, on a data dir the test chooses, called without a
//! socket. The many status-code cases of the HTTP contract are tested this way; what only
//! a built binary shows (signals, a kill, a full disk, real connections) is tested end to
//! end. When the service serves an OpenAPI document, every answer is held to it
//! ([`Described`]): a route or status code the document does not describe panics.

mod described;
pub use described::Described;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use serde_json::Value;
use tower::util::BoxCloneSyncService;
use tower::ServiceExt;

use crate::auth::Authenticator;
use crate::config::{Config, ConfigError};
use crate::engine::Engine;
use crate::http::app::{App, Live, ServeOptions};
use crate::http::facts;
use crate::http::firewall::{Firewall, Rules};
pub use crate::http::respond::Body;
use crate::raft::node::ClusterOptions;
use crate::store::{OpenError, Store, StoreOptions};
use crate::Service;

/// Why an in-process service did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The settings.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The tokens of `[auth]`.
    #[error("[auth]: {0}")]
    Tokens(#[from] crate::auth::AuthConfigError),
    /// The store.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The roles of the operational routes.
    #[error("{0}")]
    Planes(String),
    /// The trace export.
    #[error(transparent)]
    Tracing(#[from] crate::telemetry::TracingError),
}

/// A running service without a listener.
pub struct InProcess {
    app: Arc<App>,
    described: Option<Described>,
    stack: BoxCloneSyncService<Request<Full<Bytes>>, Response<Body>, Infallible>,
}

/// An answer, read whole.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: hyper::HeaderMap,
    /// The body as JSON (`null` when empty or not JSON).
    pub json: Value,
    /// The body's bytes.
    pub bytes: Bytes,
}

impl Answer {
    /// A header's value, as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl InProcess {
    /// Opens the store of `service` in `data_dir` with the settings of `config` (a
    /// `lithair.toml`'s text) and builds its pipeline. A single node: a Raft group of one.
    pub async fn start(
        service: Service,
        config: &str,
        data_dir: &Path,
    ) -> Result<InProcess, StartError> {
        let config = Config::from_toml(config, "lithair.toml")?;
        // Key files are named by absolute paths here (or from the working directory).
        let tokens = Authenticator::from_config(&config.auth, &service.spec, Path::new(""))?;
        let node = ClusterOptions::single("127.0.0.1:0");
        let store = Store::open(
            data_dir,
            &service.spec.spec,
            StoreOptions::of(&config, node),
        )
        .await?;
        let engine = Arc::new(Engine::new(service.spec.clone(), service.hooks, store));
        let firewall = Firewall::new(Rules::new(&config.firewall, Vec::new()));
        let live = Live::new(firewall, tokens);
        let planes = crate::http::Planes::of(&config, &service.spec).map_err(StartError::Planes)?;
        let tracing = crate::telemetry::Tracing::of(&config.telemetry, &service.spec.spec, 1)
            .map_err(StartError::Tracing)?;
        engine.store.cluster().trace_with(tracing.clone());
        let opts = ServeOptions::of(&config.server)
            .with_planes(planes)
            .with_request_log(config.telemetry.request_log)
            .with_tracing(tracing);
        let described = service
            .openapi
            .and_then(|doc| serde_json::from_str::<Value>(doc).ok())
            .map(|doc| Described::of(&doc));
        let app = Arc::new(App::new(engine, live, service.openapi, opts));
        let stack = BoxCloneSyncService::new(crate::http::pipeline::stack::<Full<Bytes>>(
            app.clone(),
            crate::http::router::Plane::All,
        ));
        Ok(InProcess {
            app,
            described,
            stack,
        })
    }

    /// Sends `req` through the pipeline, as if from `127.0.0.1:40000` unless the request
    /// carries its own peer in its [`Facts`](crate::http::facts::Facts). Panics when the
    /// answer is one the service's OpenAPI document does not describe.
    pub async fn call(&self, mut req: Request<Full<Bytes>>) -> Response<Body> {
        if facts::peer(req.extensions()).is_none() {
            let from = SocketAddr::from(([127, 0, 0, 1], 40000));
            facts::of_mut(req.extensions_mut()).peer = Some(from);
        }
        let asked = format!("{} {}", req.method(), req.uri().path());
        let answer = match self.stack.clone().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        if let Some(d) = &self.described {
            let (method, path) = asked.split_once(' ').unwrap_or((&asked, ""));
            if let Err(why) = d.check(method, path, answer.status().as_u16()) {
                panic!("undocumented answer: {why}");
            }
        }
        answer
    }

    /// Sends `method path` with `headers` and a JSON `body` (if any; sent as
    /// `application/json`), and reads the answer whole.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Answer {
        let mut b = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let bytes = match body {
            Some(v) => {
                if !headers
                    .iter()
                    .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                {
                    b = b.header("content-type", "application/json");
                }
                Bytes::from(serde_json::to_vec(v).unwrap_or_default())
            }
            None => Bytes::new(),
        };
        let req = match b.body(Full::new(bytes)) {
            Ok(r) => r,
            Err(e) => panic!("the test built a bad request ({method} {path}): {e}"),
        };
        read(self.call(req).await).await
    }

    /// The store (to look at what a request wrote).
    pub fn store(&self) -> &Store {
        &self.app.engine.store
    }

    /// Stops the store and lets go of the data dir.
    pub async fn shutdown(self) {
        self.app.engine.store.shutdown().await;
        if let Some(t) = self.app.opts.tracing.clone() {
            let _ = tokio::task::spawn_blocking(move || t.shutdown()).await;
        }
    }
}

/// Hooks for tests: every `before_*` and `after_*` hook does nothing, and every action
/// runs `F` (with the action's context, its record id and body).
pub struct Actions<F>(pub F);

impl<F> crate::hooks::ModelHooks for Actions<F>
where
    F: Fn(
            crate::hooks::ActionContext,
            Option<uuid::Uuid>,
            Value,
        ) -> crate::hooks::BoxFuture<'static, crate::hooks::ActionResult>
        + Send
        + Sync,
{
    fn before_create(
        &self,
        _: &crate::hooks::HookContext,
        _: &mut serde_json::Map<String, Value>,
    ) -> Result<bool, crate::error::ApiError> {
        Ok(false)
    }
    fn after_create(&self, _: &crate::hooks::HookContext, _: &serde_json::Map<String, Value>) {}
    fn before_update(
        &self,
        _: &crate::hooks::HookContext,
        _: &serde_json::Map<String, Value>,
        _: &mut serde_json::Map<String, Value>,
    ) -> Result<bool, crate::error::ApiError> {
        Ok(false)
    }
    fn after_update(
        &self,
        _: &crate::hooks::HookContext,
        _: &serde_json::Map<String, Value>,
        _: &serde_json::Map<String, Value>,
    ) {
    }
    fn before_delete(
        &self,
        _: &crate::hooks::HookContext,
        _: &serde_json::Map<String, Value>,
    ) -> crate::hooks::HookResult {
        Ok(())
    }
    fn after_delete(&self, _: &crate::hooks::HookContext, _: &serde_json::Map<String, Value>) {}
    fn action<'a>(
        &'a self,
        _: &'a str,
        ctx: crate::hooks::ActionContext,
        id: Option<uuid::Uuid>,
        body: Value,
    ) -> crate::hooks::BoxFuture<'a, crate::hooks::ActionResult> {
        (self.0)(ctx, id, body)
    }
}

/// Mints a token named `name` with `roles`: answers the bearer value and the
/// `[[auth.tokens]]` table to put in the config.
pub fn mint_token(name: &str, roles: &[&str]) -> (String, String) {
    let (token, hash) = crate::auth::mint();
    let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
    (token, crate::auth::token_table(name, &hash, &roles, None))
}

/// Reads an answer whole.
pub async fn read(r: Response<Body>) -> Answer {
    let (parts, body) = r.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        json: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        bytes,
    }
}
