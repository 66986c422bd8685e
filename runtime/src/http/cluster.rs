//! The cluster endpoints: Raft RPC (`/_raft/*`, cluster secret; `GET /_raft/events` lists
//! the node's event log), `/_cluster/status`, and
//! membership changes (`/_cluster/members`, admin role or cluster secret).

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request};
use openraft::{BasicNode, ChangeMembers};
use serde::Deserialize;
use serde_json::json;

use super::respond::{self, Resp};
use super::server::App;
use crate::error::ApiError;
use crate::raft::network::SECRET_HEADER;
use crate::raft::node::Cluster;
use crate::raft::TypeConfig;

/// Raft messages (appends carry many entries, snapshots come in chunks of a few MiB).
const RPC_BODY_LIMIT: usize = 64 * 1024 * 1024;

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn has_secret(c: &Cluster, req: &Request<Incoming>) -> bool {
    match &c.link.secret {
        // Without a secret, only a cluster started with --insecure-cluster listens to
        // Raft messages; a single node refuses them.
        None => c.insecure,
        Some(s) => req
            .headers()
            .get(SECRET_HEADER)
            .is_some_and(|v| same(v.as_bytes(), s.as_bytes())),
    }
}

async fn body(req: Request<Incoming>, limit: usize) -> Result<Bytes, ApiError> {
    Limited::new(req.into_body(), limit)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|_| ApiError::payload_too_large(limit))
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("not a Raft message: {e}")))
}

/// `POST /_raft/{append,vote,snapshot,propose}`.
pub(crate) async fn raft_rpc(
    app: &Arc<App>,
    rpc: &str,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let c = app.engine.store.cluster();
    if !has_secret(c, &req) {
        return Err(ApiError::unauthorized(
            "Raft messages need the cluster secret",
        ));
    }
    if rpc == "events" && req.method() == Method::GET {
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
    if req.method() != Method::POST {
        return Err(ApiError::method_not_allowed(&["POST"]));
    }
    let bytes = body(req, RPC_BODY_LIMIT).await?;
    Ok(match rpc {
        "append" => respond::json(
            200,
            &c.raft
                .append_entries(parse::<openraft::raft::AppendEntriesRequest<TypeConfig>>(
                    &bytes,
                )?)
                .await,
        ),
        "vote" => {
            let rpc: openraft::raft::VoteRequest<u64> = parse(&bytes)?;
            if c.may_vote() {
                respond::json(200, &c.raft.vote(rpc).await)
            } else {
                // Rejoined with an empty data dir and not caught up: no vote, and the
                // request changes nothing here.
                let m = c.raft.metrics().borrow().clone();
                let refused: Result<_, openraft::error::RaftError<u64>> =
                    Ok(openraft::raft::VoteResponse {
                        vote: m.vote,
                        vote_granted: false,
                        last_log_id: m.last_applied,
                    });
                respond::json(200, &refused)
            }
        }
        "snapshot" => {
            let rpc: openraft::raft::InstallSnapshotRequest<TypeConfig> = parse(&bytes)?;
            respond::json(200, &c.raft.install_snapshot(rpc).await)
        }
        "propose" => respond::json(200, &c.propose_as_leader(parse(&bytes)?).await),
        "read_index" => respond::json(200, &c.read_index_as_leader().await),
        _ => return Err(ApiError::not_found(format!("no Raft message {rpc}"))),
    })
}

/// `GET /_cluster/status`.
pub(crate) fn status(app: &App) -> Resp {
    let m = app.engine.store.cluster().raft.metrics().borrow().clone();
    let cluster_id = app.engine.store.cluster_id();
    let members: Vec<u64> = m.membership_config.membership().voter_ids().collect();
    let learners: Vec<u64> = m.membership_config.membership().learner_ids().collect();
    respond::json(
        200,
        &json!({
            "node_id": m.id,
            "cluster_id": cluster_id,
            "leader": m.current_leader,
            "term": m.current_term,
            "members": members,
            "learners": learners,
            "voting": app.engine.store.cluster().may_vote(),
            "last_applied": m.last_applied.map(|l| l.index),
            "state": format!("{:?}", m.state),
        }),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewMember {
    id: u64,
    addr: String,
}

/// `POST /_cluster/members` adds a node (as a learner, then a voter);
/// `DELETE /_cluster/members/{id}` removes one.
pub(crate) async fn members(
    app: &Arc<App>,
    path: &str,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let c = app.engine.store.cluster();
    let authorization = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if !has_secret(c, &req) || c.link.secret.is_none() {
        let who = app.auth().authenticate(
            req.headers()
                .get(hyper::header::AUTHORIZATION)
                .map(|v| v.as_bytes()),
        )?;
        crate::auth::authorize(&who, &["admin".to_string()], "change the cluster's members")?;
    }
    let method = req.method().clone();
    let change = match (method, path.strip_prefix("/_cluster/members").unwrap_or("")) {
        (Method::POST, "") => Change::Add(parse(&body(req, 64 * 1024).await?)?),
        (Method::DELETE, rest) if rest.len() > 1 => Change::Remove(
            rest[1..]
                .parse()
                .map_err(|_| ApiError::not_found("member ids are numbers"))?,
        ),
        (Method::POST | Method::DELETE, _) => {
            return Err(ApiError::not_found(format!("nothing at {path}")))
        }
        _ => return Err(ApiError::method_not_allowed(&["POST", "DELETE"])),
    };
    let result = match &change {
        Change::Add(m) => match c
            .raft
            .add_learner(
                m.id,
                BasicNode {
                    addr: m.addr.clone(),
                },
                true,
            )
            .await
        {
            Ok(_) => {
                c.raft
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([m.id])), false)
                    .await
            }
            Err(e) => Err(e),
        },
        Change::Remove(id) => {
            c.raft
                .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([*id])), false)
                .await
        }
    };
    match result {
        Ok(_) => Ok(status(app)),
        // Only the leader changes membership: hand the request to it, with the secret.
        Err(openraft::error::RaftError::APIError(
            openraft::error::ClientWriteError::ForwardToLeader(f),
        )) => {
            let leader = f
                .leader_node
                .ok_or_else(|| ApiError::unavailable("no leader right now; retry"))?;
            let (method, path, body) = match &change {
                Change::Add(m) => (
                    Method::POST,
                    "/_cluster/members".to_string(),
                    json!({"id": m.id, "addr": m.addr}),
                ),
                Change::Remove(id) => (
                    Method::DELETE,
                    format!("/_cluster/members/{id}"),
                    serde_json::Value::Null,
                ),
            };
            let timeout = std::time::Duration::from_secs(60);
            // With the secret, and with the caller's token (which is all an insecure
            // cluster checks).
            let answer: serde_json::Value = crate::raft::network::call_as(
                method,
                &leader.addr,
                &path,
                &c.link,
                authorization.as_deref(),
                &body,
                timeout,
            )
            .await
            .map_err(|e| {
                ApiError::unavailable(format!("the leader did not take the change: {e}"))
            })?;
            Ok(respond::json(200, &answer))
        }
        Err(e) => Err(ApiError::new(
            409,
            "Conflict",
            format!("membership change refused: {e}"),
        )),
    }
}

/// A membership change.
enum Change {
    Add(NewMember),
    Remove(u64),
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
/// linearizable read; other values are a 400. The query wins over the header.
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
    for (k, v) in super::list::pairs(query)? {
        if k == "consistency" {
            return asked(&v, "consistency");
        }
    }
    match headers.get(CONSISTENCY_HEADER) {
        Some(v) => asked(v.to_str().unwrap_or("?"), CONSISTENCY_HEADER),
        None => Ok(false),
    }
}
