//! The body stage: after authorization, it reads what the route takes and hands the
//! endpoints a [`Payload`] instead of a body stream.
//!
//! - A body larger than `[server] max_body_bytes` is a 413 (a declared `Content-Length`
//!   alone suffices, before anything is read); one that does not arrive within
//!   `body_timeout_ms` is a 408; a body that is not JSON (`application/json`, `+json`, and
//!   `application/merge-patch+json` for PATCH) is a 415, and JSON that does not parse a 400.
//! - A create's body is checked against the schema here, every field at once (422): what
//!   reaches the endpoint is the new record's fields. Before that, a field the caller may
//!   not set is a 403 naming it, and the owner field is filled with the caller's subject
//!   (`auth::Access`). A PUT or PATCH body is checked by the
//!   engine against the record it changes (a patch is merged into it first, and immutable
//!   fields compare with it), inside the write's retry loop.
//! - Raft messages and membership changes are left unread: their endpoints read them with
//!   their own limits. Routes that take no body do not read it.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::{Request, StatusCode};
use serde_json::{Map, Value};
use tower::{Layer, Service};

use super::facts::Facts;
use super::respond::{self, Resp};
use super::router::{ModelOp, Route};
use super::stage::{carried, Answer, Next, Reply, Shared};
use crate::auth::{Access, Principal};
use crate::error::ApiError;
use crate::spec::{CompiledSpec, Operation};
use crate::validate::{self, Mode};

/// What the endpoints receive in place of the body.
#[derive(Debug)]
pub enum Payload<B> {
    /// The route takes no body.
    Empty,
    /// A parsed JSON body (`null` when the request had none and named no content type).
    Json(Value),
    /// A create's body, checked against the schema: the new record's fields.
    Checked(Map<String, Value>),
    /// Left for the endpoint to read (Raft messages, membership changes).
    Unread(B),
}

impl<B> Payload<B> {
    /// The JSON body (`null` for none).
    pub fn into_json(self) -> Value {
        match self {
            Payload::Json(v) => v,
            Payload::Checked(m) => Value::Object(m),
            Payload::Empty | Payload::Unread(_) => Value::Null,
        }
    }
}

/// The limits the stage reads bodies within.
#[derive(Clone, Debug)]
pub struct BodyLimits {
    /// Largest body, bytes (413 beyond).
    pub max_bytes: usize,
    /// How long the whole body may take to arrive (408 beyond).
    pub within: Duration,
}

/// The body stage as a tower layer.
#[derive(Clone)]
pub struct ReadBody {
    /// The schema (for the create check).
    pub spec: Arc<CompiledSpec>,
    /// The limits.
    pub limits: BodyLimits,
    /// Where the time of a create's schema check goes.
    pub validate: crate::histogram::Histogram,
}

impl<S> Layer<S> for ReadBody {
    type Service = BodyStage<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BodyStage {
            inner: Shared::new(inner),
            read: self.clone(),
        }
    }
}

/// The body stage in front of the endpoints (`S`, which take a [`Payload`]).
pub struct BodyStage<S> {
    inner: Shared<S>,
    read: ReadBody,
}

impl<S> Clone for BodyStage<S> {
    fn clone(&self) -> Self {
        BodyStage {
            inner: self.inner.clone(),
            read: self.read.clone(),
        }
    }
}

/// What a route takes.
enum Takes {
    Nothing,
    Json { patch: bool, create: Option<usize> },
    Raw,
}

fn takes(route: Option<&Route>) -> Takes {
    match route {
        Some(Route::Raft(_) | Route::Members) => Takes::Raw,
        Some(Route::Model(r)) => match r.op {
            ModelOp::Crud(Operation::Create) => Takes::Json {
                patch: false,
                create: Some(r.model),
            },
            ModelOp::Crud(Operation::Update) => Takes::Json {
                patch: false,
                create: None,
            },
            ModelOp::Crud(Operation::Patch) => Takes::Json {
                patch: true,
                create: None,
            },
            ModelOp::Action(_) => Takes::Json {
                patch: false,
                create: None,
            },
            ModelOp::Crud(_) | ModelOp::History | ModelOp::Version(_) | ModelOp::Events => {
                Takes::Nothing
            }
        },
        _ => Takes::Nothing,
    }
}

impl<S, B> Next<B> for BodyStage<S>
where
    S: Next<Payload<B>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn answer(&self, req: Request<B>, facts: &mut Facts) -> Reply {
        let (parts, body) = req.into_parts();
        let (patch, create) = match takes(facts.route.as_ref()) {
            // Nothing to wait for: handed on at once.
            Takes::Nothing => {
                return self
                    .inner
                    .answer(Request::from_parts(parts, Payload::Empty), facts)
            }
            Takes::Raw => {
                return self
                    .inner
                    .answer(Request::from_parts(parts, Payload::Unread(body)), facts)
            }
            Takes::Json { patch, create } => (patch, create),
        };
        let inner = self.inner.clone();
        let read = self.read.clone();
        // The body is read in the future: it takes the facts along.
        let mut facts = std::mem::take(facts);
        Reply::later(async move {
            let who = facts.principal.clone();
            let (payload, checked) = match read.json(&parts.headers, body, patch, create, who).await
            {
                Ok(p) => p,
                Err(e) => return respond::problem(&e),
            };
            let mut r = inner
                .answer(Request::from_parts(parts, payload), &mut facts)
                .await;
            if let Some(took) = checked {
                r.extensions_mut()
                    .insert(super::request_log::Validation(took));
            }
            r
        })
    }
}

impl<S, B> Service<Request<B>> for BodyStage<S>
where
    S: Next<Payload<B>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Resp;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (req, mut facts) = carried(req);
        Answer(self.answer(req, &mut facts))
    }
}

impl ReadBody {
    /// Reads and parses a JSON body; for a create of model number `create`, checks it
    /// (and answers how long the check took).
    async fn json<B>(
        &self,
        headers: &hyper::HeaderMap,
        body: B,
        patch: bool,
        create: Option<usize>,
        who: Option<Arc<Principal>>,
    ) -> Result<(Payload<B>, Option<Duration>), ApiError>
    where
        B: hyper::body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let mut value = read_json(headers, body, patch, &self.limits).await?;
        if let Some(r) = crate::telemetry::current() {
            r.body(&value);
        }
        let Some(model) = create else {
            return Ok((Payload::Json(value), None));
        };
        let m = &self.spec.spec.models[model];
        let who = who.unwrap_or_else(|| Arc::new(Principal::anonymous()));
        Access::of(m, &who, Operation::Create).prepare_create(&mut value)?;
        let started = crate::clock::Instant::now();
        let fields = validate::check_body(&self.spec, m, value, Mode::Create, None);
        let ended = crate::clock::Instant::now();
        let took = ended - started;
        self.validate.observe(took.as_secs_f64());
        crate::telemetry::record(crate::domain::Stage::Validate, started, ended);
        Ok((Payload::Checked(fields?), Some(took)))
    }
}

/// Reads a body within `limits` and parses it as JSON.
pub(crate) async fn read_json<B>(
    headers: &hyper::HeaderMap,
    body: B,
    patch: bool,
    limits: &BodyLimits,
) -> Result<Value, ApiError>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limit = limits.max_bytes;
    let declared = headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::payload_too_large(limit));
    }
    let content_type = headers
        .get(hyper::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("").to_ascii_lowercase());
    let bytes = collect(body, limits).await?;
    if bytes.is_empty() && content_type.is_none() {
        return Ok(Value::Null);
    }
    let media = content_type
        .as_deref()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim();
    let is_json = media == "application/json"
        || media.ends_with("+json")
        || (patch && media == "application/merge-patch+json");
    if !is_json {
        return Err(ApiError::unsupported_media_type());
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))
}

/// Collects a body within `limits` (413 past the size, 408 past the time).
pub(crate) async fn collect<B>(body: B, limits: &BodyLimits) -> Result<Bytes, ApiError>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limit = limits.max_bytes;
    let collected = tokio::time::timeout(limits.within, Limited::new(body, limit).collect())
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT.as_u16(),
                "Request Timeout",
                format!(
                    "the request body did not arrive within {} ms",
                    limits.within.as_millis()
                ),
            )
        })?;
    collected.map(|c| c.to_bytes()).map_err(|e| {
        if e.downcast_ref::<http_body_util::LengthLimitError>()
            .is_some()
        {
            ApiError::payload_too_large(limit)
        } else {
            ApiError::bad_request(format!("the request body could not be read: {e}"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    use crate::spec::fixtures::STOCK as SPEC;

    /// An endpoint that answers what it received.
    struct Echo;

    impl Next<Payload<Full<Bytes>>> for Echo {
        fn answer(&self, req: Request<Payload<Full<Bytes>>>, _: &mut Facts) -> Reply {
            let what = match req.into_body() {
                Payload::Empty => serde_json::json!("empty"),
                Payload::Json(v) => serde_json::json!({ "json": v }),
                Payload::Checked(m) => serde_json::json!({ "checked": m }),
                Payload::Unread(_) => serde_json::json!("unread"),
            };
            Reply::now(respond::json(200, &what))
        }
    }

    fn stage(max_bytes: usize) -> BodyStage<Echo> {
        let spec = Arc::new(CompiledSpec::from_json(SPEC).expect("spec"));
        ReadBody {
            spec,
            limits: BodyLimits {
                max_bytes,
                within: Duration::from_secs(5),
            },
            validate: crate::domain::Stages::default()
                .of(crate::domain::Stage::Validate)
                .clone(),
        }
        .layer(Echo)
    }

    fn request(
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> Request<Full<Bytes>> {
        let spec = CompiledSpec::from_json(SPEC).expect("spec");
        let m: hyper::Method = method.parse().expect("method");
        let route = super::super::router::resolve(&spec.spec, &m, path).expect("route");
        let mut b = Request::builder().method(m).uri(path);
        if let Some(t) = content_type {
            b = b.header("content-type", t);
        }
        let mut req = b
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("request");
        super::super::facts::of_mut(req.extensions_mut()).route = Some(route);
        req
    }

    async fn answer(s: &BodyStage<Echo>, req: Request<Full<Bytes>>) -> (u16, Value) {
        let (req, mut facts) = carried(req);
        let r = s.answer(req, &mut facts).await;
        let status = r.status().as_u16();
        let bytes = r
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    #[tokio::test]
    async fn a_create_is_parsed_and_checked_other_bodies_parsed_only() {
        let s = stage(1024);
        let json = Some("application/json");
        let (status, v) = answer(&s, request("POST", "/api/items", json, r#"{"stock": 3}"#)).await;
        assert_eq!(
            (status, v),
            (200, serde_json::json!({"checked": {"stock": 3}}))
        );
        let (status, v) =
            answer(&s, request("POST", "/api/items", json, r#"{"stock": "x"}"#)).await;
        assert_eq!(status, 422, "{v}");
        let id = "/api/items/00000000-0000-4000-8000-000000000000";
        let (status, v) = answer(&s, request("PUT", id, json, r#"{"stock": "x"}"#)).await;
        assert_eq!(
            (status, v),
            (200, serde_json::json!({"json": {"stock": "x"}}))
        );
        let patch = Some("application/merge-patch+json");
        let (status, _) = answer(&s, request("PATCH", id, patch, "{}")).await;
        assert_eq!(status, 200);
        let (status, v) = answer(&s, request("GET", id, json, "not read")).await;
        assert_eq!((status, v), (200, serde_json::json!("empty")));
        let (status, v) = answer(&s, request("POST", "/_raft/append", None, "raw")).await;
        assert_eq!((status, v), (200, serde_json::json!("unread")));
    }

    #[tokio::test]
    async fn bad_bodies_get_a_precise_4xx() {
        let s = stage(16);
        let json = Some("application/json");
        let (status, _) = answer(&s, request("POST", "/api/items", json, "{")).await;
        assert_eq!(status, 400);
        let (status, _) = answer(&s, request("POST", "/api/items", Some("text/plain"), "{}")).await;
        assert_eq!(status, 415);
        let big = format!(r#"{{"stock": {}}}"#, "1".repeat(32));
        let (status, _) = answer(&s, request("POST", "/api/items", json, &big)).await;
        assert_eq!(status, 413);
        // No body and no content type: null, which the create check refuses with 422.
        let (status, _) = answer(&s, request("POST", "/api/items", None, "")).await;
        assert_eq!(status, 422);
    }
}
