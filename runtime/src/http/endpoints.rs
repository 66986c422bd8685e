//! The endpoints, innermost in the pipeline: the route, the caller and the body come from
//! the stages before them (`router.rs`, `body.rs`), which refused what they had to; here
//! the engine runs the hooks and writes through the store.
//!
//! A request that needs nothing to wait for (a get of a record that is not linearizable,
//! `/health`, `/ready`, `/metrics`, `/openapi.json`, `/_cluster/status`) is answered within
//! the pipeline's call; only the others make the future of the routes (kilobytes).

use std::sync::Arc;

use hyper::Request;
use serde_json::json;
use uuid::Uuid;

use super::app::App;
use super::body::Payload;
use super::cache;
use super::cluster;
use super::facts::{Facts, Seen};
use super::feed;
use super::lifecycle;
use super::list::ListQuery;
use super::projection;
use super::respond::{self, Resp};
use super::router::{ModelOp, Route};
use super::stage::{Next, Reply};
use crate::auth::{Access, Principal};
use crate::domain::decide::IdempotencyKey;
use crate::error::ApiError;
use crate::hooks::{ActionContext, HookContext};
use crate::spec::{ModelSpec, Operation};

/// The endpoints: the innermost stage of the pipeline (see `pipeline.rs`).
#[derive(Clone)]
pub(crate) struct Endpoints {
    pub(crate) app: Arc<App>,
}

impl<B> Next<Payload<B>> for Endpoints
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn answer(&self, req: Request<Payload<B>>, facts: &mut Facts) -> Reply {
        // What needs no waiting is answered here, without the future of every route (its
        // time is the endpoint's, not that of the stages whose call it runs in).
        let now = super::stage::apart(|| {
            let answer = answer_now(&self.app, facts, &req)?;
            Some(named(&self.app, answer, facts.principal.as_ref()))
        });
        if let Some(answer) = now {
            return Reply::now(answer);
        }
        let app = self.app.clone();
        let facts = std::mem::take(facts);
        Reply::later(async move { handle(&app, req, facts).await })
    }
}

async fn handle<B>(app: &Arc<App>, req: Request<Payload<B>>, facts: Facts) -> Resp
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // The caller (authentication found it), kept if some answers name it.
    let caller = app
        .opts
        .names_answers()
        .then(|| facts.principal.clone())
        .flatten();
    named(app, route(app, req, facts).await, caller.as_ref())
}

/// The answer, its error as a problem, naming `caller` when the request log or the trace
/// names this answer's caller.
fn named(app: &App, answer: Result<Resp, ApiError>, caller: Option<&Arc<Principal>>) -> Resp {
    let mut resp = answer.unwrap_or_else(|e| respond::problem(&e));
    if let Some(who) = caller {
        if app.opts.names_answer(resp.status().as_u16()) {
            resp.extensions_mut()
                .insert(super::request_log::Caller(who.clone()));
        }
    }
    resp
}

/// The answer of a request that needs no waiting: an operational route that reads the
/// state, or a get of a record that does not ask for a linearizable read. None: the
/// route waits for something (a body, a write, the list workers, the leader).
fn answer_now<B>(app: &App, facts: &Facts, req: &Request<B>) -> Option<Result<Resp, ApiError>> {
    let route = facts.route.as_ref()?;
    if let Some(answer) = operational(app, route, req.headers()) {
        return Some(answer);
    }
    let Route::Model(r) = route else {
        return None;
    };
    let (ModelOp::Crud(Operation::Get), Some(id)) = (r.op, r.id) else {
        return None;
    };
    // The headers most gets do not carry are looked up only when the front saw them.
    let carries = |h| facts.may_carry(h);
    if req.uri().query().is_some() || carries(Seen::CONSISTENCY) {
        match cluster::wants_linearizable(req.uri().query(), req.headers()) {
            Ok(false) => {}
            Ok(true) => return None,
            Err(e) => return Some(Err(e)),
        }
    }
    if carries(Seen::IF_MATCH) {
        if let Err(e) = if_match(req.headers()) {
            return Some(Err(e));
        }
    }
    let m = r.model(&app.engine.spec.spec);
    let condition = carries(Seen::IF_NONE_MATCH).then(|| req.headers());
    let caller = facts.principal.as_ref();
    Some(Access::with(
        &app.engine.spec,
        r.model,
        caller,
        Operation::Get,
        |access| get(app, m, access, id, condition),
    ))
}

/// The answer of the operational routes that only read the state (None: `route` is not
/// one of them).
fn operational(
    app: &App,
    route: &Route,
    headers: &hyper::HeaderMap,
) -> Option<Result<Resp, ApiError>> {
    Some(match route {
        Route::ClusterStatus => Ok(cluster::status(app)),
        Route::Health => Ok(respond::json_bytes(
            200,
            bytes::Bytes::from_static(br#"{"status":"ok"}"#),
        )),
        Route::Ready => Ok(match app.engine.store.ready() {
            Ok(()) => respond::json_bytes(200, bytes::Bytes::from_static(br#"{"status":"ready"}"#)),
            Err(reason) => respond::json(
                503,
                &json!({"status": "unready", "reason": reason.to_string()}),
            ),
        }),
        Route::Metrics => Ok(super::metrics::serve(app, headers)),
        Route::OpenApi => match app.openapi {
            Some(doc) => Ok(respond::text(200, "application/json", doc.to_string())),
            None => Err(ApiError::not_found("this service has no OpenAPI document")),
        },
        _ => return None,
    })
}

/// A get of record `id` of `m` for a caller with `access`: the record as JSON with its
/// ETag, or 304 when `If-None-Match` names its version (`condition`: the request's
/// headers, None when it carries no `If-None-Match`).
fn get(
    app: &App,
    m: &ModelSpec,
    access: &Access,
    id: Uuid,
    condition: Option<&hyper::HeaderMap>,
) -> Result<Resp, ApiError> {
    // Another's record is not there for a caller who reads only its own.
    let r = app
        .engine
        .get(&m.name, id)
        .filter(|r| access.covers(|f| r.get(f)))
        .ok_or_else(|| ApiError::not_found(format!("no {} with this id", m.name)))?;
    // A condition is checked before anything is rendered: a 304 renders nothing.
    if let Some(headers) = condition.filter(|h| h.contains_key(hyper::header::IF_NONE_MATCH)) {
        let etag = cache::record_etag(r.version());
        if cache::none_match(headers, &etag)? {
            return Ok(cache::not_modified(m, &etag));
        }
    }
    // The record's JSON and its version, in one pass (or as this thread last rendered
    // them, `domain::hot`); `decorate` adds its ETag and caching headers.
    let mut version = 0;
    let answer = rendered(app, || {
        let (json, v) = crate::domain::hot::json_and_version(&r, access.hidden());
        version = v;
        respond::json_bytes(200, json)
    });
    Ok(cache::decorate_with(
        answer,
        m,
        Some(cache::record_etag_value(version)),
    ))
}

/// Answers the route the router resolved, for the caller authentication found.
async fn route<B>(app: &Arc<App>, req: Request<Payload<B>>, facts: Facts) -> Result<Resp, ApiError>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let path = req.uri().path().to_string();
    let route = facts
        .route
        .ok_or_else(|| ApiError::internal("the request reached the endpoints unrouted"))?;
    let principal = facts
        .principal
        .unwrap_or_else(|| Arc::new(Principal::anonymous()));
    let r = match route {
        // Answered by `answer_now` before the routes that wait come here.
        Route::ClusterStatus | Route::Health | Route::Ready | Route::Metrics | Route::OpenApi => {
            return operational(app, &route, req.headers()).unwrap_or_else(|| {
                Err(ApiError::internal("an operational route without an answer"))
            })
        }
        Route::Raft(rpc) => return cluster::raft_rpc(app, &rpc, unread(req)?).await,
        Route::Members => return cluster::members(app, &path, unread(req)?).await,
        Route::Audit => return lifecycle::audit(app, &principal, req.uri().query()),
        Route::Projection(index) => {
            return {
                projection::serve(app, index, &principal, req.uri().query(), req.headers()).await
            }
        }
        Route::Model(r) => r,
    };
    let m = r.model(&app.engine.spec.spec);
    let op = match r.op {
        ModelOp::Crud(op) => op,
        ModelOp::Action(a) => return action(app, req, &principal, m, a, r.id, &path).await,
        ModelOp::Events => {
            return feed::serve(app, m, &principal, req.uri().query(), req.headers())
        }
        ModelOp::History | ModelOp::Version(_) => {
            let id =
                r.id.ok_or_else(|| ApiError::not_found(format!("nothing at {path}")))?;
            if cluster::wants_linearizable(req.uri().query(), req.headers())? {
                cluster::linearizable(app).await?;
            }
            return match r.op {
                ModelOp::Version(v) => lifecycle::version(app, m, id, v, &principal),
                _ => lifecycle::history(app, m, id, &principal, req.uri().query()),
            };
        }
    };
    // The fields this caller sees and sets, and the records its right covers.
    let access = Access::of(m, &principal, op);
    match (op, r.id) {
        (Operation::List, _) => {
            let raw = req.uri().query();
            let mut query = ListQuery::parse(m, raw)?;
            query.restrict(m, &access)?;
            if cluster::wants_linearizable(raw, req.headers())? {
                cluster::linearizable(app).await?;
            }
            let changed =
                |s: &crate::domain::state::State| s.models.get(&m.name).map_or(0, |ms| ms.changed);
            // Before any work: the client's page is still current (304), or a `cache`
            // model's page is kept.
            let etag = cache::list_etag(m, app.engine.store.read(changed), raw, &access);
            if cache::none_match(req.headers(), &etag)? {
                return Ok(cache::not_modified(m, &etag));
            }
            if let Some(page) = m.cache.as_ref().and_then(|_| app.pages.get(&etag)) {
                return Ok(cache::decorate(respond::json_bytes(200, page), m, &etag));
            }
            // A frozen view (O(1)) under the lock, with the ETag of that same state; the
            // filtering and sorting run on the list workers, at a lower priority than
            // writes and Raft.
            let (at, view) = app.engine.store.read(|s| (changed(s), query.view(s, m)));
            let etag = cache::list_etag(m, at, raw, &access);
            let page = app.lists.run(query, view).await?;
            if m.cache.is_some() {
                app.pages.put(etag.clone(), page.clone());
            }
            Ok(cache::decorate(respond::json_bytes(200, page), m, &etag))
        }
        (Operation::Create, _) => {
            let key = idempotency_key(req.headers())?;
            let Payload::Checked(fields) = req.into_body() else {
                return Err(ApiError::internal(
                    "a create reached the endpoints unchecked",
                ));
            };
            let key = key.map(|k| {
                let request = serde_json::to_vec(&fields).unwrap_or_default();
                IdempotencyKey::new(&principal.name, &m.path, &k, &request)
            });
            let ctx = hook_ctx(&principal, m, Operation::Create);
            let record = app.engine.create_checked(&ctx, fields, key).await?;
            let id = record.id().map(|id| id.to_string()).unwrap_or_default();
            let r = rendered(app, || respond::record(201, &record, access.hidden()));
            Ok(respond::with_header(
                r,
                "location",
                &format!("{}/{id}", m.path),
            ))
        }
        (_, None) => Err(ApiError::not_found(format!("nothing at {path}"))),
        (op, Some(id)) => {
            let if_match = if_match(req.headers())?;
            match op {
                Operation::Get => {
                    if cluster::wants_linearizable(req.uri().query(), req.headers())? {
                        cluster::linearizable(app).await?;
                    }
                    get(app, m, &access, id, Some(req.headers()))
                }
                Operation::Update | Operation::Patch => {
                    let body = req.into_body().into_json();
                    let ctx = hook_ctx(&principal, m, op);
                    let patch = op == Operation::Patch;
                    let r = app
                        .engine
                        .update_as(&ctx, id, body, patch, if_match, &access)
                        .await?;
                    Ok(rendered(app, || respond::record(200, &r, access.hidden())))
                }
                _ => {
                    let ctx = hook_ctx(&principal, m, op);
                    app.engine.delete(&ctx, id, if_match, &access).await?;
                    Ok(respond::empty(204))
                }
            }
        }
    }
}

/// A record's answer, `render`ed, its time recorded as the respond stage's.
fn rendered(app: &App, render: impl FnOnce() -> Resp) -> Resp {
    let started = crate::clock::Instant::now();
    let answer = render();
    app.engine
        .stages()
        .since(crate::domain::Stage::Respond, started);
    answer
}

/// Runs action number `index` of `m` (on record `id`, for a record action).
async fn action<B>(
    app: &Arc<App>,
    req: Request<Payload<B>>,
    principal: &Principal,
    m: &ModelSpec,
    index: usize,
    id: Option<Uuid>,
    path: &str,
) -> Result<Resp, ApiError> {
    let action = &m.actions[index];
    let key = idempotency_key(req.headers())?;
    if let Some(id) = id {
        if app.engine.get(&m.name, id).is_none() {
            return Err(ApiError::not_found(format!("no {} with this id", m.name)));
        }
    }
    let mut body = req.into_body().into_json();
    // A typed action's body is checked as a create's is: every failing field at once.
    let spec = &app.engine.spec;
    if let Some(input) = spec.inputs.get(&(m.name.clone(), action.name.clone())) {
        let fields =
            crate::validate::check_body(spec, input, body, crate::validate::Mode::Create, None)?;
        body = serde_json::Value::Object(fields);
    }
    let key = key.map(|k| {
        let request = serde_json::to_vec(&body).unwrap_or_default();
        IdempotencyKey::new(&principal.name, path, &k, &request)
    });
    let ctx = ActionContext::new(
        app.engine.clone(),
        principal.clone(),
        &m.name,
        &action.name,
        key,
    );
    let mut out = app
        .engine
        .hooks(&m.name)
        .action(&action.name, ctx.clone(), id, body)
        .await?;
    // Writes the handler staged and did not commit are committed now: the answer waits
    // for them, and is their refusal if they are refused.
    if ctx.pending() {
        ctx.commit().await?;
    }
    // An answer built from records leaves out the fields the caller may not see: of the
    // output's model, when the action answers a record of one.
    let shown = match &action.output {
        Some(crate::spec::ActionOutput::Model(name)) => spec.model(name).unwrap_or(m),
        _ => m,
    };
    Access::of(shown, principal, Operation::Get).mask_value(&mut out.body);
    Ok(respond::json(out.status, &out.body))
}

/// The body of a route whose endpoint reads it itself (the body stage left it unread).
fn unread<B>(req: Request<Payload<B>>) -> Result<Request<B>, ApiError> {
    let (parts, payload) = req.into_parts();
    match payload {
        Payload::Unread(body) => Ok(Request::from_parts(parts, body)),
        _ => Err(ApiError::internal(
            "the body stage read a body meant for its endpoint",
        )),
    }
}

/// The header a client sends to make a POST safe to retry.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The `Idempotency-Key` of a request: 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &hyper::HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get(IDEMPOTENCY_KEY) else {
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
        action: None,
    }
}

/// The version an `If-Match` header names (`"3"`, `W/"3"`; `*` names none). A header
/// that is no ETag list is the client's syntax error (400); one that names no version of
/// the record, or several, is a failed precondition (412).
fn if_match(headers: &hyper::HeaderMap) -> Result<Option<u64>, ApiError> {
    let condition = cache::condition(
        headers,
        hyper::header::IF_MATCH,
        "send the ETag of the version you changed, or no header",
    )?;
    let tags = match condition {
        None | Some(cache::Condition::Any) => return Ok(None),
        Some(cache::Condition::Tags(tags)) => tags,
    };
    let mut versions: Vec<u64> = tags.iter().filter_map(|(_, t)| t.parse().ok()).collect();
    versions.sort_unstable();
    versions.dedup();
    match versions[..] {
        [v] => Ok(Some(v)),
        [] => Err(ApiError::precondition_failed(format!(
            "If-Match {} names no version of this record",
            headers
                .get(hyper::header::IF_MATCH)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
        ))),
        _ => Err(ApiError::precondition_failed(
            "If-Match names several versions: send the ETag of the one you changed",
        )),
    }
}
