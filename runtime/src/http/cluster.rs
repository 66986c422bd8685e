//! The cluster endpoints: Raft RPC (`/_raft/*`, cluster secret; `GET /_raft/events` lists
//! the node's event log), `/_cluster/status`, and
//! membership changes (`/_cluster/members`, admin role or cluster secret).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, Request};
use serde_json::json;

use super::app::App;
use super::body::BodyLimits;
use super::respond::{self, Resp};
use crate::error::ApiError;
use crate::raft::api::{Change, ChangeError, NewMember, Rpc};
use crate::raft::network::SECRET_HEADER;

/// Raft messages (appends carry many entries, snapshots come in chunks of a few MiB).
const RPC_BODY_LIMIT: usize = 64 * 1024 * 1024;

/// A membership change's body.
const MEMBER_BODY_LIMIT: usize = 64 * 1024;

fn secret_of<B>(req: &Request<B>) -> Option<&[u8]> {
    req.headers().get(SECRET_HEADER).map(|v| v.as_bytes())
}

/// How long a Raft message's body may take at least (a large append or snapshot chunk on
/// a slow link); `[server] body_timeout_ms` when it is longer.
const RPC_BODY_TIME: Duration = Duration::from_secs(60);

/// The limits of a Raft message's body.
fn rpc_limits(app: &App) -> BodyLimits {
    BodyLimits {
        max_bytes: RPC_BODY_LIMIT,
        within: app.opts.body_timeout.max(RPC_BODY_TIME),
    }
}

/// The limits of a membership change's body.
fn member_limits(app: &App) -> BodyLimits {
    BodyLimits {
        max_bytes: MEMBER_BODY_LIMIT,
        within: app.opts.body_timeout,
    }
}

async fn body<B>(req: Request<B>, limits: BodyLimits) -> Result<Bytes, ApiError>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    super::body::collect(req.into_body(), &limits).await
}

/// `POST /_raft/{append,vote,snapshot,propose,read_index}`, `GET /_raft/events`.
pub(crate) async fn raft_rpc<B>(
    app: &Arc<App>,
    name: &str,
    req: Request<B>,
) -> Result<Resp, ApiError>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let c = app.engine.store.cluster();
    if !c.accepts(secret_of(&req)) {
        return Err(ApiError::unauthorized(
            "Raft messages need the cluster secret",
        ));
    }
    if name == "events" && req.method() == Method::GET {
        // The node's event log (`?from=&to=`: a range), for operators, for the tests that
        // compare replicas, and for a node fetching the events a snapshot skipped.
        let (mut from, mut to) = (1, u64::MAX);
        for (k, v) in super::list::pairs(req.uri().query())? {
            let n = v
                .parse()
                .map_err(|_| ApiError::bad_request(format!("{k} must be a sequence number")))?;
            match k.as_str() {
                "from" => from = n,
                "to" => to = n,
                _ => return Err(ApiError::bad_request(format!("unknown parameter {k}"))),
            }
        }
        let store = &app.engine.store;
        let body = tokio::task::block_in_place(|| store.events_json(from, to))
            .map_err(ApiError::internal)?;
        return Ok(respond::json_bytes(200, body.into()));
    }
    let rpc =
        Rpc::named(name).ok_or_else(|| ApiError::not_found(format!("no Raft message {name}")))?;
    if req.method() != Method::POST {
        return Err(ApiError::method_not_allowed(&["POST"]));
    }
    let bytes = body(req, rpc_limits(app)).await?;
    let answer = c
        .rpc(rpc, &bytes)
        .await
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(respond::json_bytes(200, answer.into()))
}

/// `GET /_cluster/status`.
pub(crate) fn status(app: &App) -> Resp {
    let status = app.engine.store.cluster().status();
    let mut body = serde_json::to_value(&status).unwrap_or_default();
    body["cluster_id"] = json!(app.engine.store.cluster_id());
    respond::json(200, &body)
}

/// `POST /_cluster/members` adds a node (as a learner, then a voter);
/// `DELETE /_cluster/members/{id}` removes one. The admin role, or the cluster secret on a
/// cluster that has one.
pub(crate) async fn members<B>(
    app: &Arc<App>,
    path: &str,
    req: Request<B>,
) -> Result<Resp, ApiError>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let c = app.engine.store.cluster();
    let authorization = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if !c.has_secret() || !c.accepts(secret_of(&req)) {
        let who = app.auth().authenticate(
            req.headers()
                .get(hyper::header::AUTHORIZATION)
                .map(|v| v.as_bytes()),
        )?;
        crate::auth::authorize(&who, &app.opts.planes.admin, "change the cluster's members")?;
    }
    let method = req.method().clone();
    // `/_cluster/members` takes POST; `/_cluster/members/<id>` takes DELETE.
    let rest = path.strip_prefix("/_cluster/members").unwrap_or("");
    let item = rest
        .strip_prefix('/')
        .filter(|id| !id.is_empty() && !id.contains('/'));
    let change = match (method, rest, item) {
        (Method::POST, "", _) => {
            let bytes = body(req, member_limits(app)).await?;
            let member: NewMember = serde_json::from_slice(&bytes).map_err(|e| {
                ApiError::bad_request(format!(
                    "a new member is {{\"id\": <number>, \"addr\": \"host:port\"}}: {e}"
                ))
            })?;
            if !is_host_port(&member.addr) {
                return Err(ApiError::bad_request(format!(
                    "a new member's addr is host:port, not {:?}",
                    member.addr
                )));
            }
            Change::Add(member)
        }
        (Method::DELETE, _, Some(id)) => Change::Remove(
            id.parse()
                .map_err(|_| ApiError::not_found("member ids are numbers"))?,
        ),
        (_, "", _) => return Err(ApiError::method_not_allowed(&["POST"])),
        (_, _, Some(_)) => return Err(ApiError::method_not_allowed(&["DELETE"])),
        _ => return Err(ApiError::not_found(format!("nothing at {path}"))),
    };
    let cluster_id = app.engine.store.cluster_id();
    match c.change_members(&change, cluster_id.as_deref()).await {
        Ok(()) => Ok(status(app)),
        // Only the leader changes membership: hand the request to it, with the secret.
        // The caller's token stays here (this node checked it); only a cluster without
        // a secret (`--insecure-cluster`) passes it on, as its leader has nothing else
        // to go by.
        Err(ChangeError::NotLeader(leader)) => {
            let passed_on = authorization.as_deref().filter(|_| !c.has_secret());
            let answer = c
                .forward_change(&leader, &change, passed_on)
                .await
                .map_err(|e| match e {
                    ChangeError::LeaderRefused { status, detail } => {
                        let title = hyper::StatusCode::from_u16(status)
                            .ok()
                            .and_then(|s| s.canonical_reason())
                            .unwrap_or("Error");
                        ApiError::new(status, title, detail)
                    }
                    other => ApiError::unavailable(other.to_string()),
                })?;
            Ok(respond::json(200, &answer))
        }
        Err(e @ (ChangeError::NoLeader | ChangeError::Busy(_))) => {
            Err(ApiError::overloaded(e.to_string()))
        }
        Err(e @ ChangeError::Unreachable(_)) => {
            Err(ApiError::new(502, "Bad Gateway", e.to_string()))
        }
        Err(e @ ChangeError::Stranger(_)) => Err(ApiError::new(409, "Conflict", e.to_string())),
        Err(e) => Err(ApiError::new(409, "Conflict", e.to_string())),
    }
}

/// Whether `addr` is `host:port`: a name or IPv4 address (letters, digits, `.`, `-`) or a
/// bracketed IPv6 address, and a port number.
fn is_host_port(addr: &str) -> bool {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return false;
    };
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => {
            !v6.is_empty()
                && v6
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        }
        None => {
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        }
    };
    host_ok
        && (1..=5).contains(&port.len())
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok()
}

/// For `?consistency=linearizable` reads: waits until this node's state is linearizable.
pub(crate) async fn linearizable(app: &App) -> Result<(), ApiError> {
    app.engine
        .store
        .cluster()
        .linearizable()
        .await
        .map_err(|e| ApiError::unavailable(format!("linearizable read: {e}")))
}

/// The header that asks for a read's consistency, like the `consistency` query parameter.
pub const CONSISTENCY_HEADER: &str = "x-lithair-consistency";

/// Whether the query (`consistency=`) or the `x-lithair-consistency` header asks for a
/// linearizable read. Any other value in either is a 400; when both are given and valid,
/// the query wins.
pub(crate) fn wants_linearizable(
    query: Option<&str>,
    headers: &hyper::HeaderMap,
) -> Result<bool, ApiError> {
    let asked = |v: &str, from: &str| match v {
        "linearizable" => Ok(true),
        "local" => Ok(false),
        other => Err(ApiError::bad_request(format!(
            "{from} must be local or linearizable, not \"{other}\""
        ))),
    };
    let header = match headers.get(super::facts::CONSISTENCY) {
        Some(v) => Some(asked(v.to_str().unwrap_or("?"), CONSISTENCY_HEADER)?),
        None => None,
    };
    for (k, v) in super::list::pairs(query)? {
        if k == "consistency" {
            return asked(&v, "consistency");
        }
    }
    Ok(header.unwrap_or(false))
}
