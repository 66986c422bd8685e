//! A Raft node of a service: openraft wired to the sled storage and the HTTP network,
//! bootstrapped from the `--peers` list.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Raft, SnapshotPolicy};

use super::log_store::LogStore;
use super::network::{post_json, Network};
use super::state_machine::StateMachine;
use super::{Applied, TypeConfig};
use crate::config::{ClusterConfig, SyncMode};
use crate::spec::ServiceSpec;
use crate::store::decide::Stamped;
use crate::store::event::Event;
use crate::store::state::State;
use crate::store::Refused;

/// How a node joins its cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// This node's id.
    pub node_id: u64,
    /// Every initial member: id -> `host:port` (each node's HTTP address).
    pub peers: BTreeMap<u64, String>,
    /// The cluster secret (None only with `--insecure-cluster` or a cluster of one).
    pub secret: Option<String>,
    /// Timing and sizes from `[cluster]`.
    pub tuning: ClusterConfig,
}

/// A running Raft node.
pub struct Cluster {
    /// The openraft handle.
    pub raft: Raft<TypeConfig>,
    /// This node's id.
    pub node_id: u64,
    /// The cluster secret.
    pub secret: Option<String>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.node_id)
            .finish()
    }
}

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the Raft node: {0}")]
pub struct StartError(pub String);

impl Cluster {
    /// Starts the node on the sled database `db` (folder `dir`); answers the node and the
    /// state that reads are served from.
    pub async fn start(
        db: &sled::Db,
        dir: &Path,
        spec: &ServiceSpec,
        sync: SyncMode,
        opts: ClusterOptions,
    ) -> Result<(Cluster, Arc<RwLock<State>>), StartError> {
        let fail = |e: &dyn std::fmt::Display| StartError(e.to_string());
        let log = LogStore::open(db.clone(), dir, sync).map_err(|e| fail(&e))?;
        let sm = StateMachine::open(db, spec).map_err(|e| fail(&e))?;
        let state = sm.state();
        let t = &opts.tuning;
        let config = openraft::Config {
            cluster_name: spec.service.name.clone(),
            election_timeout_min: t.election_timeout_ms,
            election_timeout_max: t.election_timeout_ms * 2,
            heartbeat_interval: t.heartbeat_interval_ms,
            max_payload_entries: t.max_payload_entries,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(t.snapshot_every),
            max_in_snapshot_log_to_keep: t.keep_after_snapshot,
            ..Default::default()
        }
        .validate()
        .map_err(|e| fail(&e))?;
        let network = Network {
            secret: opts.secret.clone(),
        };
        let raft = Raft::new(opts.node_id, Arc::new(config), network, log, sm)
            .await
            .map_err(|e| fail(&e))?;
        let lowest = opts.peers.keys().next().copied();
        if lowest == Some(opts.node_id) && !raft.is_initialized().await.map_err(|e| fail(&e))? {
            let members: BTreeMap<u64, BasicNode> = opts
                .peers
                .iter()
                .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
                .collect();
            tracing::info!(node_id = opts.node_id, members = ?opts.peers, "initializing the cluster");
            raft.initialize(members).await.map_err(|e| fail(&e))?;
        }
        Ok((
            Cluster {
                raft,
                node_id: opts.node_id,
                secret: opts.secret,
            },
            state,
        ))
    }

    /// Proposes a stamped command: on the leader through Raft; on a follower, forwarded to
    /// the leader, then waited for until this node has applied it (read your writes).
    pub async fn propose(&self, stamped: Stamped) -> Result<Event, Refused> {
        for _ in 0..20 {
            match self.raft.client_write(stamped.clone()).await {
                Ok(resp) => return answer(resp.data),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    let Some(leader) = f.leader_node else {
                        // An election is going on: wait a little and try again.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    let forwarded: Result<Result<(Applied, u64), String>, _> = post_json(
                        &leader.addr,
                        "/_raft/propose",
                        self.secret.as_deref(),
                        &stamped,
                        Duration::from_secs(10),
                    )
                    .await;
                    match forwarded {
                        Ok(Ok((applied, index))) => {
                            let _ = self
                                .raft
                                .wait(Some(Duration::from_secs(10)))
                                .applied_index_at_least(Some(index), "forwarded write")
                                .await;
                            return answer(applied);
                        }
                        // The leader changed meanwhile, or is unreachable: try again.
                        Ok(Err(_)) | Err(_) => {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    }
                }
                Err(e) => return Err(Refused::Storage(e.to_string())),
            }
        }
        Err(Refused::Storage(
            "no leader could take the write; retry".into(),
        ))
    }

    /// Makes this node's state linearizable for a read: the leader confirms its leadership
    /// with a quorum (read index); a follower asks the leader for that index and waits
    /// until it has applied it.
    pub async fn linearizable(&self) -> Result<(), String> {
        for _ in 0..20 {
            match self.raft.ensure_linearizable().await {
                Ok(_) => return Ok(()),
                Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(
                    f,
                ))) => {
                    let Some(leader) = f.leader_node else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    let index: Result<Result<Option<u64>, String>, _> = post_json(
                        &leader.addr,
                        "/_raft/read_index",
                        self.secret.as_deref(),
                        &(),
                        Duration::from_secs(10),
                    )
                    .await;
                    match index {
                        Ok(Ok(index)) => {
                            self.raft
                                .wait(Some(Duration::from_secs(10)))
                                .applied_index_at_least(index, "linearizable read")
                                .await
                                .map_err(|e| e.to_string())?;
                            return Ok(());
                        }
                        Ok(Err(_)) | Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        Err("no leader could confirm the read; retry".into())
    }

    /// The read index, answered as the leader (for a follower's linearizable read).
    pub async fn read_index_as_leader(&self) -> Result<Option<u64>, String> {
        self.raft
            .ensure_linearizable()
            .await
            .map(|l| l.map(|l| l.index))
            .map_err(|e| e.to_string())
    }

    /// Runs a write forwarded by a follower (this node should be the leader).
    pub async fn propose_as_leader(&self, stamped: Stamped) -> Result<(Applied, u64), String> {
        self.raft
            .client_write(stamped)
            .await
            .map(|r| (r.data, r.log_id.index))
            .map_err(|e| e.to_string())
    }
}

fn answer(applied: Applied) -> Result<Event, Refused> {
    match applied {
        Applied::Done(ev) => Ok(ev),
        Applied::Refused(r) => Err(r),
        Applied::Nothing => Err(Refused::Storage("the entry made no event".into())),
    }
}
