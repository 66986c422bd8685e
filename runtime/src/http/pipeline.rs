//! The request pipeline, composed in one place in the order of the seed's data flow:
//!
//! ```text
//! connection limits (at accept, in `server.rs`)
//!   → the front: sensitive headers (`Authorization`, `Cookie`, the cluster secret: never
//!     shown), the request id (`X-Request-Id`: the client's or a new one, on every
//!     answer), the rarer headers later stages look for (`facts::Seen`) and the security
//!     headers (on every answer, refusals included), in one pass over the request's
//!     headers (`front.rs`)
//!   → the request log (`[telemetry] request_log`, `request_log.rs`)
//!   → the trace (`[telemetry] otlp_endpoint`: a traced request's span, `trace.rs`)
//!   → firewall: client address, allow/deny, rate limit (`firewall.rs`)
//!   → CORS (when `[server.cors]` lists origins)
//!   → the request deadline (`[server] request_timeout_ms`)
//!   → router (404, 405) (`router.rs`)
//!   → measure: every routed request counted and timed for `/metrics` (`metrics.rs`)
//!   → authentication (401) → authorization (401/403) (`router.rs`)
//!   → body: size and time limits, JSON, a create's schema check (`body.rs`)
//!   → the endpoints: hooks and the store, through the engine (`endpoints.rs`)
//! ```
//!
//! Each stage is a tower layer; the stages that do not depend on the endpoints are
//! generic over the request body, so they are tested on their own. An answer comes back
//! through the stages as a [`Reply`]: one there at once (a get, a refusal) is changed by
//! each stage on its way out, without a future per stage. The firewall, the router,
//! authentication and authorization are [`Timed`]: their own work goes to
//! `lithair_stage_duration_seconds` (the store's `Stages`), as do the schema check, the
//! hooks, Raft, apply and the answer's rendering, timed where they run.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::header::HeaderValue;
use hyper::{Method, Request};
use tower::Service;

use super::app::App;
use super::body::{BodyLimits, ReadBody};
use super::endpoints::Endpoints;
use super::facts::Facts;
use super::front::Front;
use super::respond::{self, Resp};
use super::router::{Authenticate, Authorize, Plane, Router};
use super::stage::{call, Later, Next, Reply, Shared, StageLayer, Step, Timed};
use crate::domain::Stage;
use crate::error::ApiError;

/// The whole pipeline of `app` on the listener `plane`, for request bodies of type `B`
/// (hyper's `Incoming` when served; any body in tests), in the order of the module doc.
pub(crate) fn stack<B>(
    app: Arc<App>,
    plane: Plane,
) -> impl Service<Request<B>, Response = Resp, Error = Infallible, Future: Send> + Next<B> + Clone
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let spec = app.engine.spec.clone();
    let limits = BodyLimits {
        max_bytes: app.opts.max_body_bytes,
        within: app.opts.body_timeout,
    };
    let stages = app.engine.store.stats.stages.clone();
    let timed = |stage: Stage| stages.of(stage).clone();
    let routed = tower::ServiceBuilder::new()
        .layer(StageLayer(Timed {
            step: Router {
                spec: spec.clone(),
                plane,
            },
            stage: Stage::Route,
            histogram: timed(Stage::Route),
        }))
        .layer(StageLayer(super::metrics::Measure { app: app.clone() }))
        .layer(StageLayer(Timed {
            step: Authenticate {
                live: app.live.clone(),
                planes: app.opts.planes.clone(),
            },
            stage: Stage::Authenticate,
            histogram: timed(Stage::Authenticate),
        }))
        .layer(StageLayer(Timed {
            step: Authorize {
                spec: spec.clone(),
                planes: app.opts.planes.clone(),
            },
            stage: Stage::Authorize,
            histogram: timed(Stage::Authorize),
        }))
        .layer(ReadBody {
            spec,
            limits,
            validate: timed(Stage::Validate),
        })
        .service(Endpoints { app: app.clone() });
    outer(
        routed,
        Timed {
            step: app.live.firewall.clone(),
            stage: Stage::Firewall,
            histogram: timed(Stage::Firewall),
        },
        &app.opts.cors_origins,
        app.opts.request_timeout,
        Telemetry {
            log: app.opts.request_log,
            tracing: app.opts.tracing.clone(),
        },
    )
}

/// The request log's mode and the trace export, for the stages that serve them.
#[derive(Clone, Debug, Default)]
pub(crate) struct Telemetry {
    pub log: crate::config::RequestLog,
    pub tracing: Option<Arc<crate::telemetry::Tracing>>,
}

/// The stages before the router: the front (sensitive headers, the request id, security
/// headers), the request log, the trace, firewall, CORS, deadline.
fn outer<S, B, F>(
    inner: S,
    firewall: F,
    cors: &[String],
    deadline: Duration,
    telemetry: Telemetry,
) -> impl Service<Request<B>, Response = Resp, Error = Infallible, Future: Send> + Next<B> + Clone
where
    S: Next<B>,
    B: Send + 'static,
    F: Step<B>,
{
    tower::ServiceBuilder::new()
        .layer(StageLayer(Front::new()))
        .layer(StageLayer(super::request_log::RequestLogStage {
            mode: telemetry.log,
        }))
        .layer(StageLayer(super::trace::TraceStage {
            tracing: telemetry.tracing,
        }))
        .layer(StageLayer(firewall))
        .layer(CorsStage(cors_layer(cors)))
        .layer(StageLayer(Deadline { deadline }))
        .service(inner)
}

/// The CORS layer of `[server.cors] allow_origins` (none when it is empty).
fn cors_layer(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    let headers = [
        "x-request-id",
        "authorization",
        "content-type",
        "if-match",
        "idempotency-key",
        "x-lithair-consistency",
    ];
    let exposed = [
        "x-request-id",
        "etag",
        "location",
        "retry-after",
        "ratelimit",
        "ratelimit-policy",
    ];
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers(headers.map(hyper::header::HeaderName::from_static))
            .expose_headers(exposed.map(hyper::header::HeaderName::from_static))
            .max_age(Duration::from_secs(600)),
    )
}

/// tower-http's CORS in the pipeline, when `[server.cors]` lists origins; otherwise the
/// rest of the pipeline as it is.
#[derive(Clone)]
struct CorsStage(Option<tower_http::cors::CorsLayer>);

impl<S> tower::Layer<S> for CorsStage {
    type Service = WithCors<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let inner = Shared::new(inner);
        WithCors {
            cors: self
                .0
                .as_ref()
                .map(|l| tower::Layer::layer(l, inner.clone())),
            inner,
        }
    }
}

/// The rest of the pipeline, behind CORS if it is on.
struct WithCors<S> {
    inner: Shared<S>,
    cors: Option<tower_http::cors::Cors<Shared<S>>>,
}

impl<S, B> Next<B> for WithCors<S>
where
    S: Next<B>,
    B: Send + 'static,
{
    fn answer(&self, mut req: Request<B>, facts: &mut Facts) -> Reply {
        match &self.cors {
            // tower-http's layer calls the rest as a tower service: the facts go in the
            // request's extensions.
            Some(cors) => {
                req.extensions_mut().insert(std::mem::take(facts));
                Reply::later(call(cors.clone(), req))
            }
            None => self.inner.answer(req, facts),
        }
    }
}

/// One deadline for every request (Raft messages, which may carry large snapshots, have
/// their own): past it, 503 with `Retry-After`, saying that a write's outcome is unknown.
/// It runs from when the answer first waits: an answer there at once (a get) makes no
/// timer at all.
#[derive(Clone, Copy, Debug)]
pub struct Deadline {
    /// How long a request may take.
    pub deadline: Duration,
}

impl<B: Send + 'static> Step<B> for Deadline {
    fn run(&self, next: &dyn Next<B>, req: Request<B>, facts: &mut Facts) -> Reply {
        let deadline = self.deadline;
        if req.uri().path().starts_with("/_raft/") {
            return next.answer(req, facts);
        }
        let safe = matches!(*req.method(), Method::GET | Method::HEAD);
        let mut reply = next.answer(req, facts);
        if reply.answered().is_some() {
            return reply;
        }
        match reply.ready() {
            Ok(r) => Reply::now(r),
            Err(answer) => Reply::later(WithDeadline {
                answer,
                deadline,
                timer: None,
                safe,
            }),
        }
    }
}

/// An answer and its deadline; the timer is made when the answer first waits.
struct WithDeadline {
    answer: Later,
    deadline: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// A GET or HEAD: the client may simply retry.
    safe: bool,
}

impl Future for WithDeadline {
    type Output = Resp;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Resp> {
        let this = &mut *self;
        if let Poll::Ready(r) = Pin::new(&mut this.answer).poll(cx) {
            return Poll::Ready(r);
        }
        let deadline = this.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(deadline)));
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let ms = deadline.as_millis();
        let e = if this.safe {
            ApiError::overloaded(format!("the request did not finish within {ms} ms; retry"))
        } else {
            ApiError::outcome_unknown(format!("the request did not finish within {ms} ms"))
        };
        Poll::Ready(respond::problem(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Cidr, FirewallConfig, RateLimitConfig};
    use crate::http::facts::Facts;
    use crate::http::firewall::{Firewall, Rules};
    use crate::http::stage::Leaf;
    use std::net::SocketAddr;
    use tower::ServiceExt;

    /// An endpoint that answers 200, or sleeps first when asked to.
    fn endpoint() -> Leaf<
        impl Service<Request<()>, Response = Resp, Error = Infallible, Future: Send>
            + Clone
            + Send
            + Sync,
    > {
        Leaf(tower::service_fn(|req: Request<()>| async move {
            if req.uri().path() == "/slow" {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            if req.uri().path() == "/fail" {
                return Ok::<_, Infallible>(respond::problem(&ApiError::bad_request("no")));
            }
            Ok(respond::json(200, &serde_json::json!({"ok": true})))
        }))
    }

    fn request(from: &str, path: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let mut req = b.body(()).unwrap_or_default();
        let addr: SocketAddr = from.parse().unwrap_or(([127, 0, 0, 1], 1).into());
        req.extensions_mut().insert(Facts::from_peer(addr));
        req
    }

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter()
            .filter_map(|s| s.parse::<ipnet::IpNet>().ok().map(Cidr))
            .collect()
    }

    fn with(config: FirewallConfig) -> Firewall {
        Firewall::new(Rules::new(&config, vec![]))
    }

    async fn status<S>(svc: &S, req: Request<()>) -> (u16, Resp)
    where
        S: Service<Request<()>, Response = Resp, Error = Infallible> + Clone,
    {
        match svc.clone().oneshot(req).await {
            Ok(r) => (r.status().as_u16(), r),
            Err(never) => match never {},
        }
    }

    /// The stages before the router, around the test endpoint, with the firewall `fw`
    /// (no CORS, a 5 s deadline, the default telemetry).
    fn behind(
        fw: Firewall,
    ) -> impl Service<Request<()>, Response = Resp, Error = Infallible, Future: Send> + Next<()> + Clone
    {
        outer(
            endpoint(),
            fw,
            &[],
            Duration::from_secs(5),
            Default::default(),
        )
    }

    #[tokio::test]
    async fn deny_wins_over_allow_and_allow_keeps_everyone_else_out() {
        let fw = with(FirewallConfig {
            allow: cidrs(&["127.0.0.0/8"]),
            deny: cidrs(&["127.0.0.66/32"]),
            ..Default::default()
        });
        let svc = behind(fw);
        assert_eq!(status(&svc, request("127.0.0.5:9", "/x", &[])).await.0, 200);
        let (code, r) = status(&svc, request("127.0.0.66:9", "/x", &[])).await;
        assert_eq!(code, 403);
        assert_eq!(r.headers()["connection"], "close");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        assert_eq!(r.headers()["cache-control"], "no-store");
        assert_eq!(status(&svc, request("10.1.2.3:9", "/x", &[])).await.0, 403);
        assert_eq!(status(&svc, request("[::1]:9", "/x", &[])).await.0, 403);
        // An IPv4 address mapped into IPv6 is the IPv4 address.
        assert_eq!(
            status(&svc, request("[::ffff:127.0.0.66]:9", "/x", &[]))
                .await
                .0,
            403
        );
    }

    #[tokio::test]
    async fn forwarding_headers_count_only_from_trusted_proxies() {
        let fw = with(FirewallConfig {
            deny: cidrs(&["203.0.113.0/24"]),
            trusted_proxies: cidrs(&["127.0.0.2/32", "10.0.0.0/8"]),
            ..Default::default()
        });
        let svc = behind(fw);
        let spoof = [("x-forwarded-for", "198.51.100.7")];
        let denied = [("x-forwarded-for", "203.0.113.9, 10.0.0.4")];
        // From anyone else, the header is ignored: the socket's peer decides.
        assert_eq!(
            status(&svc, request("127.0.0.3:9", "/x", &denied)).await.0,
            200
        );
        // From the proxy, the nearest untrusted address in the chain is the client.
        assert_eq!(
            status(&svc, request("127.0.0.2:9", "/x", &denied)).await.0,
            403
        );
        assert_eq!(
            status(&svc, request("127.0.0.2:9", "/x", &spoof)).await.0,
            200
        );
        let forwarded = [("forwarded", "for=\"203.0.113.1:4711\";proto=https")];
        assert_eq!(
            status(&svc, request("127.0.0.2:9", "/x", &forwarded))
                .await
                .0,
            403
        );
    }

    #[tokio::test]
    async fn the_rate_limit_answers_429_with_retry_after_and_the_draft_headers() {
        let fw = with(FirewallConfig {
            rate_limit: RateLimitConfig {
                per_ip: 2,
                burst: 3,
            },
            ..Default::default()
        });
        let svc = behind(fw.clone());
        for left in (0..3).rev() {
            let (code, r) = status(&svc, request("127.0.0.9:1", "/x", &[])).await;
            assert_eq!(code, 200);
            assert_eq!(r.headers()["ratelimit-policy"], "\"per-ip\";q=3;w=2");
            let state = r.headers()["ratelimit"]
                .to_str()
                .unwrap_or_default()
                .to_string();
            assert!(
                state.starts_with(&format!("\"per-ip\";r={left};")),
                "{state}"
            );
        }
        let (code, r) = status(&svc, request("127.0.0.9:1", "/x", &[])).await;
        assert_eq!(code, 429);
        assert_eq!(r.headers()["retry-after"], "1");
        assert_eq!(r.headers()["ratelimit"], "\"per-ip\";r=0;t=1");
        // Another address has its own budget; /health and Raft messages have none.
        assert_eq!(
            status(&svc, request("127.0.0.10:1", "/x", &[])).await.0,
            200
        );
        assert_eq!(
            status(&svc, request("127.0.0.9:1", "/health", &[])).await.0,
            200
        );
        assert_eq!(
            status(&svc, request("127.0.0.9:1", "/_raft/vote", &[]))
                .await
                .0,
            200
        );
        assert_eq!(fw.rules().tracked(), 2);
    }

    #[tokio::test]
    async fn cluster_peers_are_never_rate_limited() {
        let config = FirewallConfig {
            rate_limit: RateLimitConfig {
                per_ip: 1,
                burst: 1,
            },
            ..Default::default()
        };
        let fw = Firewall::new(Rules::new(
            &config,
            vec!["127.0.0.7".parse().unwrap_or([127, 0, 0, 7].into())],
        ));
        let svc = behind(fw);
        for _ in 0..5 {
            assert_eq!(status(&svc, request("127.0.0.7:1", "/x", &[])).await.0, 200);
        }
    }

    #[tokio::test]
    async fn idle_addresses_are_forgotten() {
        let fw = with(FirewallConfig {
            rate_limit: RateLimitConfig {
                per_ip: 1000,
                burst: 1,
            },
            ..Default::default()
        });
        let svc = behind(fw.clone());
        for i in 0..200u32 {
            let from = format!("127.0.{}.{}:1", i / 250, i % 250 + 1);
            assert_eq!(status(&svc, request(&from, "/x", &[])).await.0, 200);
        }
        assert_eq!(fw.rules().tracked(), 200);
        // A burst of one at 1000/s is back after a millisecond.
        tokio::time::sleep(Duration::from_millis(20)).await;
        fw.rules().forget_idle();
        assert_eq!(fw.rules().tracked(), 0);
    }

    #[tokio::test]
    async fn the_deadline_answers_503_saying_the_outcome_is_unknown() {
        let svc = outer(
            endpoint(),
            with(FirewallConfig::default()),
            &[],
            Duration::from_millis(50),
            Default::default(),
        );
        let mut req = request("127.0.0.1:1", "/slow", &[]);
        *req.method_mut() = Method::POST;
        let (code, r) = status(&svc, req).await;
        assert_eq!(code, 503);
        assert!(r.headers().contains_key("retry-after"));
    }

    async fn body_json(r: Resp) -> serde_json::Value {
        let body = http_body_util::BodyExt::collect(r.into_body())
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        serde_json::from_slice(&body).unwrap_or_default()
    }

    #[tokio::test]
    async fn the_front_hides_secrets_and_names_every_answer() {
        // An endpoint that says what it was given: which headers were marked sensitive,
        // and the request id in the request's facts.
        let seen = Leaf(tower::service_fn(|req: Request<()>| async move {
            let sensitive: Vec<&str> = req
                .headers()
                .iter()
                .filter(|(_, v)| v.is_sensitive())
                .map(|(n, _)| n.as_str())
                .collect();
            let id = crate::http::facts::of(req.extensions())
                .and_then(|f| f.request_id.as_ref())
                .map_or("", |id| id.as_str());
            Ok::<_, Infallible>(respond::json(
                200,
                &serde_json::json!({"sensitive": sensitive, "id": id}),
            ))
        }));
        let svc = outer(
            seen,
            with(FirewallConfig::default()),
            &[],
            Duration::from_secs(5),
            Default::default(),
        );
        let secret = crate::raft::network::SECRET_HEADER;
        let (_, r) = status(
            &svc,
            request(
                "127.0.0.1:1",
                "/x",
                &[
                    ("authorization", "Bearer x"),
                    ("cookie", "a=b"),
                    (secret, "s"),
                    ("accept", "*/*"),
                    ("x-request-id", "client-1"),
                ],
            ),
        )
        .await;
        assert_eq!(r.headers()["x-request-id"], "client-1");
        let body = body_json(r).await;
        assert_eq!(body["id"], "client-1");
        assert_eq!(
            body["sensitive"],
            serde_json::json!(["authorization", "cookie", secret])
        );
        // Without one, the node makes an id: the same in the facts and on the answer, and
        // another for the next request.
        let (_, r) = status(&svc, request("127.0.0.1:1", "/x", &[])).await;
        let made = r.headers()["x-request-id"].clone();
        let body = body_json(r).await;
        assert_eq!(body["id"], made.to_str().unwrap_or("?"));
        let (_, next) = status(&svc, request("127.0.0.1:1", "/x", &[])).await;
        assert_ne!(next.headers()["x-request-id"], made);
    }

    #[tokio::test]
    async fn security_headers_and_cors() {
        let svc = outer(
            endpoint(),
            with(FirewallConfig::default()),
            &["https://app.example.com".to_string()],
            Duration::from_secs(5),
            Default::default(),
        );
        let (_, plain) = status(&svc, request("127.0.0.1:1", "/x", &[])).await;
        assert_eq!(plain.headers()["x-content-type-options"], "nosniff");
        assert!(!plain.headers().contains_key("cache-control"));
        let (_, authed) = status(
            &svc,
            request("127.0.0.1:1", "/x", &[("authorization", "Bearer x")]),
        )
        .await;
        assert_eq!(authed.headers()["cache-control"], "no-store");
        let (_, failed) = status(&svc, request("127.0.0.1:1", "/fail", &[])).await;
        assert_eq!(failed.headers()["cache-control"], "no-store");
        let mut preflight = request(
            "127.0.0.1:1",
            "/api/items",
            &[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "PATCH"),
                ("access-control-request-headers", "authorization, if-match"),
            ],
        );
        *preflight.method_mut() = Method::OPTIONS;
        let (_, r) = status(&svc, preflight).await;
        assert_eq!(
            r.headers()["access-control-allow-origin"],
            "https://app.example.com"
        );
        let (_, other) = status(
            &svc,
            request("127.0.0.1:1", "/x", &[("origin", "https://evil.example")]),
        )
        .await;
        assert!(!other.headers().contains_key("access-control-allow-origin"));
    }
}
