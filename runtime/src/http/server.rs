//! The hyper server (accepting connections within their caps), the endpoints, and
//! `/metrics`. The stages in front of the endpoints are composed in `pipeline.rs`.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use uuid::Uuid;

use super::firewall::{ClientIp, Firewall, PeerAddr};
use super::list::ListQuery;
use super::respond::{self, Resp};
use super::router::{ModelOp, Route};
use crate::auth::{Authenticator, Principal};
use crate::engine::Engine;
use crate::error::ApiError;
use crate::hooks::{ActionContext, ActionKey, HookContext};
use crate::spec::{ModelSpec, Operation};
use crate::store::decide::IdempotencyKey;
use crate::store::version_of;

/// Settings of the HTTP server.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Largest body.
    pub max_body_bytes: usize,
    /// Header read timeout (also how long an idle keep-alive connection stays open).
    pub header_timeout: Duration,
    /// How long in-flight requests may take at shutdown.
    pub drain_timeout: Duration,
    /// The deadline of every request (Raft messages excepted).
    pub request_timeout: Duration,
    /// How long the whole body may take to arrive (else 408).
    pub body_timeout: Duration,
    /// Most open connections.
    pub max_connections: usize,
    /// Most open connections from one address.
    pub max_connections_per_ip: usize,
    /// Origins allowed cross-origin (`[server.cors]`; empty: none).
    pub cors_origins: Vec<String>,
}

impl ServeOptions {
    /// The settings of `[server]` in `config`.
    pub fn of(config: &crate::config::ServerConfig) -> Self {
        ServeOptions {
            max_body_bytes: config.max_body_bytes,
            header_timeout: Duration::from_secs(config.header_timeout_secs),
            drain_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            body_timeout: Duration::from_millis(config.body_timeout_ms),
            max_connections: config.max_connections,
            max_connections_per_ip: config.max_connections_per_ip,
            cors_origins: config.cors.allow_origins.clone(),
        }
    }
}

/// What may change while the service runs (`SIGHUP`): the firewall's rules and the
/// tokens. Requests read the current ones; open connections stay.
#[derive(Clone)]
pub struct Live {
    /// The firewall.
    pub firewall: Firewall,
    tokens: Arc<arc_swap::ArcSwap<Authenticator>>,
}

impl Live {
    /// The settings a service starts with.
    pub fn new(firewall: Firewall, tokens: Authenticator) -> Self {
        Live {
            firewall,
            tokens: Arc::new(arc_swap::ArcSwap::from_pointee(tokens)),
        }
    }

    /// The tokens in force (read without a lock).
    pub fn tokens(&self) -> arc_swap::Guard<Arc<Authenticator>> {
        self.tokens.load()
    }

    /// Puts `tokens` in force for the requests that come after.
    pub fn replace_tokens(&self, tokens: Authenticator) {
        self.tokens.store(Arc::new(tokens));
    }
}

pub(crate) struct App {
    pub(crate) engine: Arc<Engine>,
    live: Live,
    lists: super::list::Workers,
    openapi: Option<&'static str>,
    opts: ServeOptions,
    connections: Arc<Connections>,
}

impl App {
    /// The tokens in force.
    pub(crate) fn auth(&self) -> arc_swap::Guard<Arc<Authenticator>> {
        self.live.tokens()
    }
}

/// Open connections, in total and per address: a connection over either cap is closed
/// at accept, before anything is read.
struct Connections {
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    max_total: usize,
    max_per_ip: usize,
}

/// One admitted connection; counted until dropped.
struct Admitted {
    connections: Arc<Connections>,
    ip: IpAddr,
}

impl Connections {
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Admitted> {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let mine = per_ip.get(&ip).copied().unwrap_or(0);
        if mine >= self.max_per_ip || self.total.load(Ordering::Relaxed) >= self.max_total {
            return None;
        }
        per_ip.insert(ip, mine + 1);
        self.total.fetch_add(1, Ordering::Relaxed);
        Some(Admitted {
            connections: self.clone(),
            ip,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let c = &self.connections;
        let mut per_ip = c.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        match per_ip.get_mut(&self.ip) {
            Some(n) if *n > 1 => *n -= 1,
            _ => {
                per_ip.remove(&self.ip);
            }
        }
        c.total.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish and stops the store.
pub async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    live: Live,
    openapi: Option<&'static str>,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    live.firewall.spawn_cleanup(Duration::from_secs(10));
    let stages = live.clone();
    let connections = Arc::new(Connections {
        total: AtomicUsize::new(0),
        per_ip: Mutex::new(HashMap::new()),
        max_total: opts.max_connections,
        max_per_ip: opts.max_connections_per_ip,
    });
    let app = Arc::new(App {
        engine: engine.clone(),
        live,
        lists: super::list::Workers::start(),
        openapi,
        opts: opts.clone(),
        connections: connections.clone(),
    });
    let spec = app.engine.spec.clone();
    let stack = super::pipeline::stack(
        Endpoints { app },
        spec,
        stages,
        &opts.cors_origins,
        opts.request_timeout,
    );
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and similar: wait a little rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Some(admitted) = connections.admit(peer.ip()) else {
                    tracing::debug!(%peer, "connection refused: too many open connections");
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let svc = tower::ServiceExt::map_request(stack.clone(), move |mut req: Request<Incoming>| {
                    req.extensions_mut().insert(PeerAddr(peer));
                    req
                });
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(opts.header_timeout)
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc));
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _admitted = admitted;
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, %peer, "connection ended with an error");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    // `/ready` answers 503 from now on.
    engine.store.health().stopping();
    tracing::info!("shutting down: finishing in-flight requests");
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(opts.drain_timeout) => tracing::warn!("some requests did not finish in time"),
    }
    match engine.store.shutdown().await {
        Ok(()) => tracing::info!("Raft node stopped; bye"),
        Err(e) => tracing::error!(error = %e, "the store did not stop cleanly"),
    }
    Ok(())
}

/// The endpoints: the innermost stage of the pipeline (see `pipeline.rs`).
#[derive(Clone)]
struct Endpoints {
    app: Arc<App>,
}

impl super::pipeline::Next<Incoming> for Endpoints {
    fn answer(&self, req: Request<Incoming>) -> super::pipeline::BoxFuture<Resp> {
        let app = self.app.clone();
        Box::pin(async move { handle(&app, req).await })
    }
}

async fn handle(app: &Arc<App>, req: Request<Incoming>) -> Resp {
    // Only pay for the request log line when it is wanted.
    let log = tracing::enabled!(tracing::Level::DEBUG).then(|| {
        (
            req.method().clone(),
            req.uri().path().to_string(),
            req.extensions().get::<ClientIp>().map(|c| c.0),
            std::time::Instant::now(),
        )
    });
    let resp = match route(app, req).await {
        Ok(r) => r,
        Err(e) => respond::problem(&e),
    };
    if let Some((method, path, client, started)) = log {
        tracing::debug!(%method, %path, status = resp.status().as_u16(), client = ?client,
            micros = started.elapsed().as_micros() as u64, "request");
    }
    resp
}

/// The endpoints: the route and the caller come from the router and authentication
/// stages (see `router.rs`), which have refused what they had to.
async fn route(app: &Arc<App>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let path = req.uri().path().to_string();
    let route = match req.extensions().get::<Route>() {
        Some(r) => r.clone(),
        None => super::router::resolve(&app.engine.spec.spec, req.method(), &path)?,
    };
    let principal = req
        .extensions()
        .get::<Arc<Principal>>()
        .cloned()
        .unwrap_or_else(|| Arc::new(Principal::anonymous()));
    let r = match route {
        Route::ClusterStatus => return Ok(super::cluster::status(app)),
        Route::Health => return Ok(respond::json(200, &json!({"status": "ok"}))),
        Route::Ready => {
            return Ok(match app.engine.store.ready() {
                Ok(()) => respond::json(200, &json!({"status": "ready"})),
                Err(reason) => respond::json(503, &json!({"status": "unready", "reason": reason})),
            })
        }
        Route::Metrics => return Ok(metrics(app)),
        Route::OpenApi => {
            return match app.openapi {
                Some(doc) => Ok(respond::text(200, "application/json", doc.to_string())),
                None => Err(ApiError::not_found("this service has no OpenAPI document")),
            }
        }
        Route::Raft(rpc) => return super::cluster::raft_rpc(app, &rpc, req).await,
        Route::Members => return super::cluster::members(app, &path, req).await,
        Route::Model(r) => r,
    };
    let m = r.model(&app.engine.spec.spec);
    let op = match r.op {
        ModelOp::Crud(op) => op,
        ModelOp::Action(a) => return action(app, req, &principal, m, a, r.id, &path).await,
    };
    match (op, r.id) {
        (Operation::List, _) => {
            let query = ListQuery::parse(m, req.uri().query())?;
            if super::cluster::wants_linearizable(req.uri().query(), req.headers())? {
                super::cluster::linearizable(app).await?;
            }
            // A frozen view (O(1)) under the lock; the filtering and sorting run on the
            // list workers, at a lower priority than writes and Raft.
            let view = app.engine.store.read(|s| query.view(s, m));
            let page = app.lists.run(query, view).await?;
            Ok(respond::json_bytes(200, page))
        }
        (Operation::Create, _) => {
            let key = idempotency_key(&req)?;
            let body = read_json(app, req, false).await?;
            let key = key.map(|k| {
                let request = serde_json::to_vec(&body).unwrap_or_default();
                IdempotencyKey::new(&principal.name, &m.path, &k, &request)
            });
            let ctx = hook_ctx(&principal, m, Operation::Create);
            let record = app.engine.create_once(&ctx, body, key).await?;
            let id = record
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let etag = format!("\"{}\"", version_of(&record));
            let r = respond::json_bytes(201, record.json.clone());
            let r = respond::with_header(r, "location", &format!("{}/{id}", m.path));
            Ok(respond::with_header(r, "etag", &etag))
        }
        (_, None) => Err(ApiError::not_found(format!("nothing at {path}"))),
        (op, Some(id)) => {
            let if_match = if_match(&req)?;
            match op {
                Operation::Get => {
                    if super::cluster::wants_linearizable(req.uri().query(), req.headers())? {
                        super::cluster::linearizable(app).await?;
                    }
                    let r = app.engine.get(&m.name, id).ok_or_else(|| {
                        ApiError::not_found(format!("no {} with this id", m.name))
                    })?;
                    let etag = format!("\"{}\"", version_of(&r));
                    Ok(respond::with_header(
                        respond::json_bytes(200, r.json.clone()),
                        "etag",
                        &etag,
                    ))
                }
                Operation::Update | Operation::Patch => {
                    let body = read_json(app, req, op == Operation::Patch).await?;
                    let ctx = hook_ctx(&principal, m, op);
                    let r = app
                        .engine
                        .update(&ctx, id, body, op == Operation::Patch, if_match)
                        .await?;
                    let etag = format!("\"{}\"", version_of(&r));
                    Ok(respond::with_header(
                        respond::json_bytes(200, r.json.clone()),
                        "etag",
                        &etag,
                    ))
                }
                _ => {
                    let ctx = hook_ctx(&principal, m, op);
                    app.engine.delete(&ctx, id, if_match).await?;
                    Ok(respond::empty(204))
                }
            }
        }
    }
}

/// Runs action number `index` of `m` (on record `id`, for a record action).
async fn action(
    app: &Arc<App>,
    req: Request<Incoming>,
    principal: &Principal,
    m: &ModelSpec,
    index: usize,
    id: Option<Uuid>,
    path: &str,
) -> Result<Resp, ApiError> {
    let action = &m.actions[index];
    let key = idempotency_key(&req)?;
    if let Some(id) = id {
        if app.engine.get(&m.name, id).is_none() {
            return Err(ApiError::not_found(format!("no {} with this id", m.name)));
        }
    }
    let body = read_json(app, req, false).await?;
    let key = key.map(|k| {
        let request = serde_json::to_vec(&body).unwrap_or_default();
        ActionKey::new(IdempotencyKey::new(&principal.name, path, &k, &request))
    });
    let ctx = ActionContext {
        engine: app.engine.clone(),
        principal: principal.clone(),
        model: m.name.clone(),
        key,
    };
    let out = app
        .engine
        .hooks(&m.name)
        .action(&action.name, ctx, id, body)
        .await?;
    Ok(respond::json(out.status, &out.body))
}

/// The header a client sends to make a POST safe to retry.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The `Idempotency-Key` of a request: 1 to 255 visible ASCII characters.
fn idempotency_key(req: &Request<Incoming>) -> Result<Option<String>, ApiError> {
    let Some(v) = req.headers().get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let bad = || ApiError::bad_request("Idempotency-Key must be 1 to 255 visible ASCII characters");
    let text = v.to_str().map_err(|_| bad())?.trim();
    if text.is_empty() || text.len() > 255 || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad());
    }
    Ok(Some(text.to_string()))
}

fn hook_ctx(principal: &Principal, m: &ModelSpec, op: Operation) -> HookContext {
    HookContext {
        principal: principal.clone(),
        model: m.name.clone(),
        operation: op,
    }
}

/// The version an `If-Match` header names (`"3"`, `W/"3"`; `*` names none).
fn if_match(req: &Request<Incoming>) -> Result<Option<u64>, ApiError> {
    let Some(v) = req.headers().get(hyper::header::IF_MATCH) else {
        return Ok(None);
    };
    let text = v
        .to_str()
        .map_err(|_| ApiError::precondition_failed("If-Match is not valid text"))?
        .trim();
    if text == "*" {
        return Ok(None);
    }
    let bare = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    bare.parse::<u64>().map(Some).map_err(|_| {
        ApiError::precondition_failed(format!("If-Match {text} names no version of this record"))
    })
}

async fn read_json(app: &App, req: Request<Incoming>, patch: bool) -> Result<Value, ApiError> {
    let limit = app.opts.max_body_bytes;
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::payload_too_large(limit));
    }
    let content_type = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("").to_ascii_lowercase());
    let within = app.opts.body_timeout;
    let collected = tokio::time::timeout(within, Limited::new(req.into_body(), limit).collect())
        .await
        .map_err(|_| {
            ApiError::new(
                408,
                "Request Timeout",
                format!(
                    "the request body did not arrive within {} ms",
                    within.as_millis()
                ),
            )
        })?;
    let bytes: Bytes = collected
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                ApiError::payload_too_large(limit)
            } else {
                ApiError::bad_request(format!("the request body could not be read: {e}"))
            }
        })?
        .to_bytes();
    if bytes.is_empty() && content_type.is_none() {
        return Ok(Value::Null);
    }
    let media = content_type
        .as_deref()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    let is_json = media == "application/json"
        || media.ends_with("+json")
        || (patch && media == "application/merge-patch+json");
    if !is_json {
        return Err(ApiError::unsupported_media_type());
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))
}

fn metrics(app: &App) -> Resp {
    let s = &app.engine.store.stats;
    let (records, last_seq) = app.engine.store.read(|st| {
        (
            st.models.values().map(|m| m.records.len()).sum::<usize>(),
            st.last_seq,
        )
    });
    let body = format!(
        "# TYPE lithair_store_events_total counter\nlithair_store_events_total {}\n\
         # TYPE lithair_store_batches_total counter\nlithair_store_batches_total {}\n\
         # TYPE lithair_store_snapshots_total counter\nlithair_store_snapshots_total {}\n\
         # TYPE lithair_store_replayed_events gauge\nlithair_store_replayed_events {}\n\
         # TYPE lithair_store_snapshot_records_loaded gauge\nlithair_store_snapshot_records_loaded {}\n\
         # TYPE lithair_store_records gauge\nlithair_store_records {records}\n\
         # TYPE lithair_store_last_sequence gauge\nlithair_store_last_sequence {last_seq}\n\
         # TYPE lithair_http_open_connections gauge\nlithair_http_open_connections {}\n\
         # TYPE lithair_firewall_tracked_addresses gauge\nlithair_firewall_tracked_addresses {}\n",
        s.events.load(Ordering::Relaxed),
        s.batches.load(Ordering::Relaxed),
        s.snapshots.load(Ordering::Relaxed),
        s.replayed_events.load(Ordering::Relaxed),
        s.snapshot_records.load(Ordering::Relaxed),
        app.connections.total.load(Ordering::Relaxed),
        app.live.firewall.rules().tracked(),
    );
    respond::text(200, "text/plain; version=0.0.4", body)
}
