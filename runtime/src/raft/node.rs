//! A Raft node of a service: openraft wired to the storage and the HTTP network,
//! bootstrapped from the `--peers` list after the data dir's identity is checked
//! (`identity.rs`), and the proposal batcher: a bounded queue of writes (a full one
//! refuses at once), each batch bounded by the request deadline. The task that fetches
//! the events a snapshot skipped is in `backfill.rs`.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Semaphore};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Raft, SnapshotPolicy};

use super::api::{LeaderError, ReadError};
use super::backfill::{spawn_backfill, Backfill};
use super::identity;
use super::log_store::{Durability, LogStore, RaftState};
use super::network::{call_json, Link, Network};
use super::state_machine::StateMachine;
use super::Loaded;
use super::{Answers, Applied, Batch, TypeConfig};
use crate::config::ClusterConfig;
use crate::domain::decide::Stamped;
use crate::domain::state::State;
use crate::domain::Refused;
use crate::spec::ServiceSpec;

/// How a node joins its cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// This node's id.
    pub node_id: u64,
    /// Every initial member: id -> `host:port` (each node's HTTP address).
    pub peers: BTreeMap<u64, String>,
    /// The cluster secret (None only with `--insecure-cluster` or a cluster of one).
    pub secret: Option<String>,
    /// Without a secret: take Raft messages from anyone (`--insecure-cluster`). A node
    /// with neither refuses them, so a single node cannot be joined by accident.
    pub insecure: bool,
    /// Timing and sizes from `[cluster]`.
    pub tuning: ClusterConfig,
    /// The address calls to peers leave from (the one the node listens on; None: any).
    pub bind_ip: Option<std::net::IpAddr>,
    /// Mutual TLS to peers (`[cluster.tls]`).
    pub tls: Option<crate::tls::ClientTls>,
}

impl ClusterOptions {
    /// A cluster of one: node 1 at `addr` (its own HTTP address), default tuning.
    pub fn single(addr: impl Into<String>) -> Self {
        ClusterOptions {
            node_id: 1,
            peers: BTreeMap::from([(1, addr.into())]),
            secret: None,
            insecure: false,
            tuning: ClusterConfig::default(),
            bind_ip: None,
            tls: None,
        }
    }
}

/// The limits of a write (`[server] request_timeout_ms`, `[storage] max_pending_writes`).
#[derive(Clone, Copy, Debug)]
pub struct WriteLimits {
    /// How long a write may wait for its answer.
    pub timeout: Duration,
    /// Most writes waiting to enter the Raft log; more are refused at once.
    pub max_pending: usize,
}

/// A running Raft node.
pub struct Cluster {
    /// The openraft handle.
    pub(super) raft: Raft<TypeConfig>,
    /// This node's id.
    pub node_id: u64,
    /// Whether Raft messages are taken without a secret.
    pub(super) insecure: bool,
    /// How this node calls its peers (with the cluster secret, `link.secret`).
    pub(super) link: Link,
    /// The log index this node must have applied before it grants votes (0: none).
    votes_from: u64,
    batcher: mpsc::Sender<Pending>,
    /// Held by every part that uses the data dir; see [`Cluster::shutdown`].
    holders: Arc<()>,
    /// Tells background tasks to end.
    stop: tokio::sync::watch::Sender<bool>,
    /// How long a write may take (the request deadline).
    write_timeout: Duration,
    /// The election timeout, ms (a leader that heard from no quorum for twice as long is
    /// not ready).
    pub(super) election_timeout_ms: u64,
    /// Where the spans of proposals that followers hand over go (see `crate::telemetry`).
    tracing: std::sync::OnceLock<Arc<crate::telemetry::Tracing>>,
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
    /// Starts the node on the recovered data dir `loaded` with the log's `sync` setting
    /// and flush interval; answers the node and the state that reads are served from.
    pub(crate) async fn start(
        spec: &ServiceSpec,
        durability: Durability,
        opts: ClusterOptions,
        loaded: Loaded,
        writes: WriteLimits,
    ) -> Result<(Cluster, Arc<RwLock<State>>), StartError> {
        let fail = |e: &dyn std::fmt::Display| StartError(e.to_string());
        let dir = loaded.dir.clone();
        let fresh = RaftState::load(&dir).map_err(|e| fail(&e))?.vote.is_none();
        let link = Link {
            secret: opts.secret.clone(),
            from: opts.bind_ip,
            pool: Default::default(),
            tls: opts.tls.clone(),
        };
        let peers_cluster = identity::check(&dir, &opts, &link).await?;
        // A node that joins a running cluster with an empty data dir may have voted
        // before it lost it: no vote until it has caught up (see `identity`).
        let votes_from = match &peers_cluster {
            Some(p) if fresh && p.applied > 0 => p.applied,
            _ => 0,
        };
        let holders = Arc::new(());
        let events = loaded.events.clone();
        let health = loaded.health.clone();
        let sm = StateMachine::new(spec, loaded, holders.clone()).map_err(|e| fail(&e))?;
        let log = LogStore::open(&dir, durability, &sm, holders.clone()).map_err(|e| fail(&e))?;
        let state = sm.state();
        let t = &opts.tuning;
        let config = openraft::Config {
            cluster_name: spec.service.name.clone(),
            election_timeout_min: t.election_timeout_ms,
            // openraft's leader lease is the longest timeout: a follower refuses votes for
            // that long after its leader's last heartbeat. A third more than the shortest
            // keeps the timeouts apart and the lease short.
            election_timeout_max: t.election_timeout_ms + t.election_timeout_ms.div_ceil(3),
            heartbeat_interval: t.heartbeat_interval_ms,
            max_payload_entries: t.max_payload_entries,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(t.snapshot_every),
            max_in_snapshot_log_to_keep: t.keep_after_snapshot,
            ..Default::default()
        }
        .validate()
        .map_err(|e| fail(&e))?;
        let network = Network { link: link.clone() };
        let raft = Raft::new(opts.node_id, Arc::new(config), network, log, sm)
            .await
            .map_err(|e| fail(&e))?;
        let lowest = opts.peers.keys().next().copied();
        let alone = opts.peers.len() == 1 && opts.peers.contains_key(&opts.node_id);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        // A node with an empty data dir whose peers already form a cluster joins it
        // instead of starting another; the lowest id of a new cluster starts it, at once
        // when it is its only member, else once a majority is there (see `identity`).
        if lowest == Some(opts.node_id)
            && peers_cluster.is_none()
            && !raft.is_initialized().await.map_err(|e| fail(&e))?
        {
            if alone {
                identity::create(&dir).map_err(|e| fail(&e))?;
                let members: BTreeMap<u64, BasicNode> = opts
                    .peers
                    .iter()
                    .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
                    .collect();
                tracing::info!(node_id = opts.node_id, "initializing a cluster of one");
                raft.initialize(members).await.map_err(|e| fail(&e))?;
            } else {
                tokio::spawn(identity::found(identity::Founding {
                    raft: raft.clone(),
                    opts: opts.clone(),
                    link: link.clone(),
                    dir: dir.clone(),
                    stopped: stopped.clone(),
                    _holder: holders.clone(),
                }));
            }
        }
        // The only voter leads at once instead of after an election timeout, and the
        // node answers writes as soon as it listens.
        let voters: Vec<u64> = raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        if voters == [opts.node_id] || (alone && voters.len() <= 1) {
            if let Err(e) = raft.trigger().elect().await {
                tracing::warn!(error = %e, "cannot trigger the election");
            }
            if let Err(e) = raft
                .wait(Some(Duration::from_secs(10)))
                .metrics(|m| m.current_leader.is_some(), "a leader is known")
                .await
            {
                tracing::warn!(error = %e, "no leader after 10 s");
            }
            // Every entry of the only voter's log is committed once it leads: reads are
            // served once they are applied, so a restart shows every acknowledged write.
            if let Err(e) = raft
                .wait(Some(Duration::from_secs(10)))
                .metrics(
                    |m| m.last_applied.map(|l| l.index) >= m.last_log_index,
                    "the log is applied",
                )
                .await
            {
                tracing::warn!(error = %e, "the log is not applied after 10 s");
            }
        }
        let batcher = spawn_batcher(
            Writer {
                raft: raft.clone(),
                link: link.clone(),
                timeout: writes.timeout,
                health,
            },
            writes.max_pending,
        );
        spawn_backfill(Backfill {
            raft: raft.clone(),
            node_id: opts.node_id,
            link: link.clone(),
            events: events.clone(),
            scratch: dir.path().join("events-fetch.tmp"),
            dir: dir.clone(),
            stopped,
            _holder: holders.clone(),
        });
        Ok((
            Cluster {
                raft,
                node_id: opts.node_id,
                insecure: opts.insecure,
                link,
                votes_from,
                batcher,
                holders,
                stop,
                write_timeout: writes.timeout,
                election_timeout_ms: opts.tuning.election_timeout_ms,
                tracing: Default::default(),
            },
            state,
        ))
    }

    /// Stops the node (giving Raft's own shutdown up to 10 s) and waits (up to 10 s more)
    /// until the log store, the state machine and their tasks have let go of the data
    /// dir, so that it can be opened again.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        match tokio::time::timeout(Duration::from_secs(10), self.raft.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "Raft shutdown"),
            Err(_) => tracing::warn!("Raft did not shut down within 10 s"),
        }
        for _ in 0..1000 {
            if Arc::strong_count(&self.holders) == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::warn!("the Raft node still holds the data dir after 10 s");
    }

    /// Whether this node grants votes: not before it has caught up, when it joined a
    /// running cluster with an empty data dir.
    pub fn may_vote(&self) -> bool {
        self.votes_from == 0
            || self
                .raft
                .metrics()
                .borrow()
                .last_applied
                .is_some_and(|l| l.index >= self.votes_from)
    }

    /// Proposes a stamped command. Concurrent proposals are batched into one log entry
    /// (see [`Batch`]); the answer comes once the entry is committed and applied here.
    ///
    /// A full queue (`max_pending_writes`) refuses at once with [`Refused::Overloaded`].
    /// A command is answered with [`Applied::Done`], a transaction with
    /// [`Applied::Together`].
    pub async fn propose(&self, stamped: Stamped) -> Result<Applied, Refused> {
        let (reply, answer) = oneshot::channel();
        self.batcher
            .try_send((stamped, reply))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => Refused::Overloaded,
                mpsc::error::TrySendError::Closed(_) => {
                    Refused::Storage("the Raft node has stopped".into())
                }
            })?;
        answer
            .await
            .map_err(|_| Refused::Storage("the Raft node has stopped".into()))?
    }

    /// Makes this node's state linearizable for a read: the leader confirms its leadership
    /// with a quorum (read index); a follower asks the leader for that index and waits
    /// until it has applied it.
    pub async fn linearizable(&self) -> Result<(), ReadError> {
        for _ in 0..20 {
            match self.raft.ensure_linearizable().await {
                Ok(_) => return Ok(()),
                Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(
                    f,
                ))) => {
                    let Some(leader) = f.leader_node else {
                        tokio::time::sleep(RETRY).await;
                        continue;
                    };
                    let index: Result<Result<Option<u64>, LeaderError>, _> = call_json(
                        hyper::Method::POST,
                        &leader.addr,
                        "/_raft/read_index",
                        &self.link,
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
                                .map_err(|e| ReadError::Raft(e.to_string()))?;
                            return Ok(());
                        }
                        Ok(Err(_)) | Err(_) => tokio::time::sleep(RETRY).await,
                    }
                }
                Err(e) => return Err(ReadError::Raft(e.to_string())),
            }
        }
        Err(ReadError::NoLeader)
    }

    /// The read index, answered as the leader (for a follower's linearizable read).
    pub async fn read_index_as_leader(&self) -> Result<Option<u64>, LeaderError> {
        self.raft
            .ensure_linearizable()
            .await
            .map(|l| l.map(|l| l.index))
            .map_err(|e| LeaderError::Raft(e.to_string()))
    }

    /// Exports the spans of the proposals followers hand over through `tracing` (set
    /// once, when the service starts).
    pub fn trace_with(&self, tracing: Option<Arc<crate::telemetry::Tracing>>) {
        if let Some(t) = tracing {
            let _ = self.tracing.set(t);
        }
    }

    /// Runs a batch forwarded by a follower (this node should be the leader). A traced
    /// command (its request's trace context came with it) gets a span of this node's
    /// proposal under the follower's raft span, and its apply under that.
    pub async fn propose_as_leader(&self, mut batch: Batch) -> Result<(Answers, u64), LeaderError> {
        let mut recorders = Vec::new();
        if let (Some(tracing), Some(commands)) = (self.tracing.get(), Arc::get_mut(&mut batch.0)) {
            for traced in commands.iter_mut().filter_map(|c| c.trace.as_mut()) {
                let recorder = tracing.remote(&traced.context);
                traced.context = recorder.context();
                traced.recorder = Some(recorder.clone());
                recorders.push(recorder);
            }
        }
        let written =
            match tokio::time::timeout(self.write_timeout, self.raft.client_write(batch)).await {
                Ok(written) => written
                    .map(|r| (r.data, r.log_id.index))
                    .map_err(|e| LeaderError::Raft(e.to_string())),
                Err(_) => Err(LeaderError::Timeout),
            };
        for r in recorders {
            let error = written.as_ref().err().map(|e| e.to_string());
            r.finish(
                "raft propose (leader)".to_string(),
                opentelemetry::trace::SpanKind::Server,
                error,
            );
        }
        written
    }
}

type Pending = (Stamped, oneshot::Sender<Result<Applied, Refused>>);

/// What writes a batch: the Raft handle and the limits of a write.
#[derive(Clone)]
struct Writer {
    raft: Raft<TypeConfig>,
    link: Link,
    /// How long a batch may take to be answered (the request deadline).
    timeout: Duration,
    health: Arc<crate::domain::health::Health>,
}

/// Batches proposals: while up to two batches are in flight, new proposals wait (up to
/// `capacity` of them; more are refused) and then leave together as one log entry.
fn spawn_batcher(writer: Writer, capacity: usize) -> mpsc::Sender<Pending> {
    let (tx, mut rx) = mpsc::channel::<Pending>(capacity.max(1));
    let in_flight = Arc::new(Semaphore::new(2));
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let Ok(permit) = in_flight.clone().acquire_owned().await else {
                break;
            };
            let mut pending = vec![first];
            while pending.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(p) => pending.push(p),
                    Err(_) => break,
                }
            }
            let writer = writer.clone();
            tokio::spawn(async move {
                let (commands, replies): (Vec<Stamped>, Vec<_>) = pending.into_iter().unzip();
                let written = match tokio::time::timeout(
                    writer.timeout,
                    write_batch(&writer, commands),
                )
                .await
                {
                    Ok(r) => r,
                    Err(_) => Err(Refused::Timeout),
                };
                match written {
                    Ok(answers) => {
                        let mut answers = answers.into_iter();
                        for reply in replies {
                            let result = match answers.next() {
                                Some(a) => answer(a),
                                None => Err(Refused::Storage("the batch came back short".into())),
                            };
                            let _ = reply.send(result);
                        }
                    }
                    Err(e) => {
                        for reply in replies {
                            let _ = reply.send(Err(e.clone()));
                        }
                    }
                }
                drop(permit);
            });
        }
    });
    tx
}

/// How long a write or a read waits before it tries again while no leader is known or the
/// leader does not answer (a failover takes a few election timeouts).
const RETRY: Duration = Duration::from_millis(25);

/// Most commands in one log entry.
const MAX_BATCH: usize = 1024;

/// Writes a batch: on the leader through Raft; on a follower, forwarded to the leader,
/// then waited for until this node has applied it (read your writes). Bounded by the
/// caller's deadline.
async fn write_batch(w: &Writer, commands: Vec<Stamped>) -> Result<Answers, Refused> {
    let raft = &w.raft;
    let batch = Batch::new(commands);
    // A storage fault ends the Raft core; its error says less than the fault. A core
    // that stopped for any other reason is a fault too: this node writes no more.
    let failed = |e: String| {
        if w.health.fault().is_none() {
            if let Err(fatal) = &raft.metrics().borrow().running_state {
                w.health.fail("the Raft core stopped", fatal);
            }
        }
        match w.health.fault() {
            Some(f) => Refused::Fault(f.clone()),
            None => Refused::Storage(e),
        }
    };
    loop {
        // A follower that knows the leader hands the batch over at once.
        let known = {
            let metrics = raft.metrics();
            let m = metrics.borrow();
            m.current_leader
                .filter(|l| *l != m.id)
                .and_then(|l| m.membership_config.membership().get_node(&l).cloned())
        };
        let leader = match known {
            Some(leader) => leader,
            None => match raft.client_write(batch.clone()).await {
                Ok(resp) => return Ok(resp.data),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    let Some(leader) = f.leader_node else {
                        // An election is going on: wait a little and try again.
                        tokio::time::sleep(RETRY).await;
                        continue;
                    };
                    leader
                }
                Err(e) => return Err(failed(e.to_string())),
            },
        };
        let forwarded: Result<Result<(Answers, u64), LeaderError>, _> = call_json(
            hyper::Method::POST,
            &leader.addr,
            "/_raft/propose",
            &w.link,
            &batch,
            w.timeout,
        )
        .await;
        match forwarded {
            Ok(Ok((answers, index))) => {
                let _ = raft
                    .wait(Some(w.timeout))
                    .applied_index_at_least(Some(index), "forwarded write")
                    .await;
                return Ok(answers);
            }
            // The leader changed meanwhile, or is unreachable: try again until the
            // deadline (a batch that reached the log already is answered again, not
            // applied twice).
            Ok(Err(_)) | Err(_) => tokio::time::sleep(RETRY).await,
        }
    }
}

fn answer(applied: Applied) -> Result<Applied, Refused> {
    match applied {
        Applied::Refused(r) => Err(r),
        Applied::Nothing => Err(Refused::Storage("the entry made no event".into())),
        done => Ok(done),
    }
}
