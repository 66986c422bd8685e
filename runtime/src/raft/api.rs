//! What the rest of the runtime asks of the node's Raft group, without reaching into
//! openraft: its status and readiness, linearizable reads, membership changes, and the
//! messages peers send (`/_raft/*`).

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers};
use serde::{Deserialize, Serialize};

use super::network::{call_as, call_json};
use super::node::Cluster;
use super::TypeConfig;

/// The node's view of its cluster (`GET /_cluster/status`).
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// This node's id.
    pub node_id: u64,
    /// The leader this node knows of.
    pub leader: Option<u64>,
    /// The current term.
    pub term: u64,
    /// The voters.
    pub members: Vec<u64>,
    /// The learners (members still catching up).
    pub learners: Vec<u64>,
    /// Whether this node grants votes (not before it has caught up after joining empty).
    pub voting: bool,
    /// The last log index this node has applied.
    pub last_applied: Option<u64>,
    /// Leader, Follower, Candidate or Learner.
    pub state: String,
}

/// Why the node is not ready for writes (its Raft side; the store adds its own reasons).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    /// The Raft core stopped.
    #[error("the Raft core has stopped: {0}")]
    Stopped(String),
    /// No leader is known.
    #[error("no Raft leader is known (an election is going on, or no quorum is reachable)")]
    NoLeader,
    /// This node leads but has not heard from a quorum lately.
    #[error("this leader has heard from no quorum for more than {patience_ms} ms")]
    NoQuorum {
        /// How long it waited.
        patience_ms: u64,
    },
}

/// Why a linearizable read could not be confirmed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ReadError {
    /// No leader answered in time.
    #[error("no leader could confirm the read; retry")]
    NoLeader,
    /// Raft refused.
    #[error("{0}")]
    Raft(String),
}

/// What a leader answers a follower that forwarded it a read or a write (sent between
/// nodes as JSON).
#[derive(Clone, Debug, Serialize, Deserialize, thiserror::Error)]
pub enum LeaderError {
    /// The write did not commit before its deadline; it may still commit.
    #[error("the write did not commit in time; it may still commit")]
    Timeout,
    /// Raft refused (this node is not the leader any more, or it stopped).
    #[error("{0}")]
    Raft(String),
}

/// A Raft message a peer sends (`POST /_raft/{name}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rpc {
    /// Log entries and heartbeats.
    Append,
    /// A vote request.
    Vote,
    /// A chunk of a snapshot.
    Snapshot,
    /// A batch of writes forwarded by a follower.
    Propose,
    /// A follower's request for the read index.
    ReadIndex,
}

impl Rpc {
    /// The message named `name` in the path.
    pub fn named(name: &str) -> Option<Rpc> {
        Some(match name {
            "append" => Rpc::Append,
            "vote" => Rpc::Vote,
            "snapshot" => Rpc::Snapshot,
            "propose" => Rpc::Propose,
            "read_index" => Rpc::ReadIndex,
            _ => return None,
        })
    }
}

/// A Raft message that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("not a Raft message: {0}")]
pub struct Malformed(#[from] serde_json::Error);

/// A membership change.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewMember {
    /// The node's id.
    pub id: u64,
    /// Its HTTP address (`host:port`).
    pub addr: String,
}

/// A change of the cluster's members.
#[derive(Clone, Debug)]
pub enum Change {
    /// Add a node: first as a learner, then as a voter once it has caught up.
    Add(NewMember),
    /// Remove a voter.
    Remove(u64),
}

/// Why a membership change was not made here.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// Only the leader changes membership; this is its address.
    #[error("this node is not the leader; the leader is at {0}")]
    NotLeader(String),
    /// No leader is known right now.
    #[error("no leader right now; retry")]
    NoLeader,
    /// Raft refused the change.
    #[error("membership change refused: {0}")]
    Refused(String),
    /// Another membership change is still committing.
    #[error("another membership change has not committed yet; retry in a moment ({0})")]
    Busy(String),
    /// The leader could not be reached with the forwarded change.
    #[error("the leader did not take the change: {0}")]
    Forward(String),
    /// The leader refused the forwarded change with this status and problem detail.
    #[error("{detail}")]
    LeaderRefused {
        /// The leader's status code.
        status: u16,
        /// The leader's explanation.
        detail: String,
    },
    /// The new member did not answer the cluster handshake.
    #[error("{0}")]
    Unreachable(String),
    /// The new member answered the handshake as another node or another cluster's.
    #[error("{0}")]
    Stranger(String),
}

/// What a new member says of itself in the handshake (`GET /_cluster/status`).
#[derive(Deserialize)]
struct Introduction {
    node_id: u64,
    cluster_id: Option<String>,
}

impl Cluster {
    /// The node's view of its cluster.
    pub fn status(&self) -> Status {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        Status {
            node_id: m.id,
            leader: m.current_leader,
            term: m.current_term,
            members: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            voting: self.may_vote(),
            last_applied: m.last_applied.map(|l| l.index),
            state: format!("{:?}", m.state),
        }
    }

    /// On the leader: each peer's lag, the log entries it has not matched yet (empty on
    /// other nodes).
    pub fn replication_lag(&self) -> Vec<(u64, u64)> {
        let m = self.raft.metrics().borrow().clone();
        let last = m.last_log_index.unwrap_or(0);
        m.replication
            .into_iter()
            .flatten()
            .filter(|(peer, _)| *peer != m.id)
            .map(|(peer, matched)| (peer, last.saturating_sub(matched.map_or(0, |l| l.index))))
            .collect()
    }

    /// Whether this node is the leader.
    #[cfg(any(test, feature = "testing"))]
    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics().borrow().clone();
        m.current_leader == Some(m.id)
    }

    /// Whether the Raft side of this node can take writes: its core runs, a leader is
    /// known, and a leader of several has heard from a quorum within two election
    /// timeouts.
    pub fn ready(&self) -> Result<(), NotReady> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        if let Err(e) = &m.running_state {
            return Err(NotReady::Stopped(e.to_string()));
        }
        if m.current_leader.is_none() {
            return Err(NotReady::NoLeader);
        }
        let voters = m.membership_config.membership().voter_ids().count();
        let patience_ms = 2 * self.election_timeout_ms;
        if m.state == openraft::ServerState::Leader
            && voters > 1
            && m.millis_since_quorum_ack.is_none_or(|ms| ms > patience_ms)
        {
            return Err(NotReady::NoQuorum { patience_ms });
        }
        Ok(())
    }

    /// Whether this node was given a cluster secret.
    pub fn has_secret(&self) -> bool {
        self.link.secret.is_some()
    }

    /// Whether a request carrying `secret` (the cluster-secret header's value) may send
    /// Raft messages: it must match the cluster secret (compared in constant time). A node
    /// without a secret takes them only when started with `--insecure-cluster`, so a
    /// single node cannot be joined by accident.
    pub fn accepts(&self, secret: Option<&[u8]>) -> bool {
        match &self.link.secret {
            None => self.insecure,
            Some(s) => secret.is_some_and(|v| same(v, s.as_bytes())),
        }
    }

    /// Answers the Raft message `rpc` with body `body`: openraft's answer, as JSON.
    pub async fn rpc(&self, rpc: Rpc, body: &[u8]) -> Result<Vec<u8>, Malformed> {
        fn json<T: Serialize>(value: &T) -> Vec<u8> {
            serde_json::to_vec(value).unwrap_or_default()
        }
        Ok(match rpc {
            Rpc::Append => {
                let req: openraft::raft::AppendEntriesRequest<TypeConfig> =
                    serde_json::from_slice(body)?;
                json(&self.raft.append_entries(req).await)
            }
            Rpc::Vote => {
                let req: openraft::raft::VoteRequest<u64> = serde_json::from_slice(body)?;
                if self.may_vote() {
                    json(&self.raft.vote(req).await)
                } else {
                    // Rejoined with an empty data dir and not caught up: no vote, and the
                    // request changes nothing here.
                    let m = self.raft.metrics().borrow().clone();
                    let refused: Result<_, RaftError<u64>> = Ok(openraft::raft::VoteResponse {
                        vote: m.vote,
                        vote_granted: false,
                        last_log_id: m.last_applied,
                    });
                    json(&refused)
                }
            }
            Rpc::Snapshot => {
                let req: openraft::raft::InstallSnapshotRequest<TypeConfig> =
                    serde_json::from_slice(body)?;
                json(&self.raft.install_snapshot(req).await)
            }
            Rpc::Propose => json(&self.propose_as_leader(serde_json::from_slice(body)?).await),
            Rpc::ReadIndex => json(&self.read_index_as_leader().await),
        })
    }

    /// Makes the change here, if this node leads (otherwise [`ChangeError::NotLeader`]
    /// names the leader). A node is added only once it answers the cluster handshake at
    /// its address (through this node's link: with the secret, and over mutual TLS when
    /// configured) as that node id, in this cluster (`cluster_id`): started with `--peers`
    /// naming the cluster's members, it has learnt the id from them.
    pub async fn change_members(
        &self,
        change: &Change,
        cluster_id: Option<&str>,
    ) -> Result<(), ChangeError> {
        if let Change::Add(m) = change {
            let metrics = self.raft.metrics().borrow().clone();
            match metrics.current_leader {
                Some(l) if l == self.node_id => self.handshake(m, cluster_id).await?,
                Some(l) => {
                    return Err(match metrics.membership_config.membership().get_node(&l) {
                        Some(n) => ChangeError::NotLeader(n.addr.clone()),
                        None => ChangeError::NoLeader,
                    })
                }
                None => return Err(ChangeError::NoLeader),
            }
        }
        let result = match change {
            Change::Add(m) => {
                let node = BasicNode {
                    addr: m.addr.clone(),
                };
                match self.raft.add_learner(m.id, node, true).await {
                    Ok(_) => {
                        let voters = ChangeMembers::AddVoterIds(BTreeSet::from([m.id]));
                        self.raft.change_membership(voters, false).await
                    }
                    Err(e) => Err(e),
                }
            }
            Change::Remove(id) => {
                let voters = ChangeMembers::RemoveVoters(BTreeSet::from([*id]));
                self.raft.change_membership(voters, false).await
            }
        };
        match result {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => match f.leader_node {
                Some(leader) => Err(ChangeError::NotLeader(leader.addr)),
                None => Err(ChangeError::NoLeader),
            },
            // The last change (or the cluster's first membership) has not committed yet:
            // a moment later it will have.
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                openraft::error::ChangeMembershipError::InProgress(e),
            ))) => Err(ChangeError::Busy(e.to_string())),
            Err(e) => Err(ChangeError::Refused(e.to_string())),
        }
    }

    /// Asks the node at `m.addr` who it is (see [`Cluster::change_members`]).
    async fn handshake(&self, m: &NewMember, ours: Option<&str>) -> Result<(), ChangeError> {
        let them: Introduction = call_json(
            hyper::Method::GET,
            &m.addr,
            "/_cluster/status",
            &self.link,
            &(),
            Duration::from_secs(5),
        )
        .await
        .map_err(|e| {
            ChangeError::Unreachable(format!(
                "node {} did not answer the cluster handshake at {}: {e}",
                m.id, m.addr
            ))
        })?;
        if them.node_id != m.id {
            return Err(ChangeError::Stranger(format!(
                "the node at {} is node {}, not node {}",
                m.addr, them.node_id, m.id
            )));
        }
        match (them.cluster_id.as_deref(), ours) {
            (Some(t), Some(o)) if t == o => Ok(()),
            (None, _) => Err(ChangeError::Stranger(format!(
                "node {} at {} is in no cluster yet: start it with --peers naming this cluster's members and itself, so that it learns this cluster's id from them, then add it",
                m.id, m.addr
            ))),
            (Some(t), _) => Err(ChangeError::Stranger(format!(
                "node {} at {} belongs to cluster {t}, not to this one ({})",
                m.id,
                m.addr,
                ours.unwrap_or("without an id")
            ))),
        }
    }

    /// Hands `change` to the leader at `leader` (with the cluster secret and the caller's
    /// `authorization`, which is all an insecure cluster checks); answers the leader's
    /// status after the change.
    pub async fn forward_change(
        &self,
        leader: &str,
        change: &Change,
        authorization: Option<&str>,
    ) -> Result<serde_json::Value, ChangeError> {
        let (method, path, body) = match change {
            Change::Add(m) => (
                hyper::Method::POST,
                "/_cluster/members".to_string(),
                serde_json::to_value(m).unwrap_or_default(),
            ),
            Change::Remove(id) => (
                hyper::Method::DELETE,
                format!("/_cluster/members/{id}"),
                serde_json::Value::Null,
            ),
        };
        call_as(
            method,
            leader,
            &path,
            &self.link,
            authorization,
            &body,
            Duration::from_secs(60),
        )
        .await
        .map_err(|e| match e {
            // The leader's own refusal (a 409 of the handshake, a 403): passed on as it is.
            super::network::CallError::Bad {
                status, message, ..
            } if (400..600).contains(&status) && status != 503 => {
                let detail = serde_json::from_str::<serde_json::Value>(&message)
                    .ok()
                    .and_then(|p| p["detail"].as_str().map(String::from))
                    .unwrap_or(message);
                ChangeError::LeaderRefused { status, detail }
            }
            other => ChangeError::Forward(other.to_string()),
        })
    }
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
