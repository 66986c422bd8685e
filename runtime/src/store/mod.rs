//! The event-sourced store, written through Raft.
//!
//! Every write is a [`Command`], stamped by the node that took it and proposed to the
//! node's Raft group (`crate::raft`): a single node is a cluster of one, so there is one
//! write path. Concurrent proposals are batched into one log entry; the entry is made
//! durable per the `sync` setting (one flush plus `fdatasync` for a whole group of
//! appends), committed, and then applied by the state machine, which decides each command
//! against the state (unique values, If-Match versions, refs: in log order, so every
//! replica decides the same), appends the events to the event log (`events/`, a
//! write-ahead log) and publishes them to the in-memory [`State`] that reads are served
//! from. Nothing is visible to readers before it is committed.
//!
//! Snapshots: once a model has `snapshot_every` events since the last snapshot (and a
//! snapshot saves at least half of the replay, see [`State::snapshot_due`]), every record
//! is written to the data dir's `snapshot` file from a frozen copy of the state, off the
//! apply path (see `snapshot.rs`). A restart loads it and replays only the events after
//! it. The data dir's files are listed in `data_dir.rs`.
//!
//! Faults ([`health`]): a failed write or sync of either log, or a failed checkpoint,
//! stops this node's writes until it is restarted; a snapshot that fails leaves the
//! previous one. Either way a restart replays more, never less.

mod checkpoint;
pub mod data_dir;
pub mod decide;
pub mod event;
pub mod health;
#[cfg(test)]
mod power_cuts;
mod recover;
pub mod snapshot;
pub mod state;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

use crate::config::SyncMode;
use crate::raft::node::{Cluster, ClusterOptions};
use crate::raft::wal::Wal;
use crate::spec::ServiceSpec;
use data_dir::DataDir;
use decide::Stamped;
use event::{Actor, Event, Record, Stored, FORMAT};
use state::State;

pub(crate) use checkpoint::checkpoint_thread;
pub use checkpoint::Checkpoint;
pub(crate) use recover::{load_state, open_events, Recovered};

/// Why the store cannot open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The file system refused (permissions, another process holds the data dir).
    #[error("cannot open the store in {path}: {message}")]
    Io { path: String, message: String },
    /// The store was written by a newer runtime.
    #[error("the store in {path} has format {found}, newer than this runtime understands ({FORMAT}); upgrade lithair-runtime")]
    NewerFormat { path: String, found: u32 },
    /// The data dir was written by an earlier runtime whose files this one does not read.
    #[error("the data dir {path} was written by an earlier lithair-runtime (it holds a sled folder `store`), whose files this runtime no longer reads; start the earlier runtime on it to export the records, or give this node an empty data dir")]
    OlderFormat { path: String },
    /// Some entry cannot be read.
    #[error("the store in {path} is damaged: {what}. Refusing to start rather than drop data; restore a backup or move the folder away")]
    Corrupt { path: String, what: String },
}

/// A write, as proposed to the store.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum Command {
    /// Create `record` (complete: id, timestamps and version stamped).
    Create {
        /// Model.
        model: String,
        /// The new record.
        record: Stored,
    },
    /// Replace record `id`, which must still be at `expected_version`.
    Replace {
        /// Model.
        model: String,
        /// Record id.
        id: Uuid,
        /// The whole new record.
        record: Stored,
        /// The version the change was computed from.
        expected_version: u64,
        /// Whether that version came from the client's If-Match (412) or from our read (retry).
        from_client: bool,
    },
    /// Delete record `id`.
    Delete {
        /// Model.
        model: String,
        /// Record id.
        id: Uuid,
        /// The version the client saw, if it sent If-Match.
        expected_version: Option<u64>,
    },
}

/// Why a command was refused.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Refused {
    /// No such record.
    NotFound,
    /// The record changed since the version given.
    VersionMismatch {
        /// Its version now.
        current: u64,
        /// Whether the expected version came from the client.
        from_client: bool,
    },
    /// A unique field's value is taken.
    Unique {
        /// Field.
        field: String,
        /// The holder.
        holder: Uuid,
    },
    /// A ref points at no record.
    MissingRef {
        /// Field (with index for lists).
        field: String,
        /// Target model.
        model: String,
        /// The missing id.
        id: String,
    },
    /// The write could not be completed; its outcome is unknown (it may still commit).
    Storage(String),
    /// This node stopped taking writes after a storage failure (until it is restarted).
    Fault(health::Fault),
    /// The request's deadline passed before the write was answered; it may still commit.
    Timeout,
    /// Too many writes are waiting already: refused at once, nothing was written.
    Overloaded,
    /// The Idempotency-Key was used before for a different request.
    KeyReused,
}

/// Counters the store exposes (also at `/metrics`).
#[derive(Debug, Default)]
pub struct Stats {
    /// Events replayed at the last start (after snapshots).
    pub replayed_events: AtomicU64,
    /// Records loaded from snapshots at the last start.
    pub snapshot_records: AtomicU64,
    /// Batches committed.
    pub batches: AtomicU64,
    /// Events committed.
    pub events: AtomicU64,
    /// Snapshots written.
    pub snapshots: AtomicU64,
}

/// Settings of a store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Durability.
    pub sync: SyncMode,
    /// For periodic sync: how often the Raft log is synced.
    pub flush_interval: Duration,
    /// Default snapshot period (a model's own `snapshot_every` wins).
    pub snapshot_every: u64,
    /// The node and its cluster (a single node: [`ClusterOptions::single`]).
    pub node: ClusterOptions,
    /// How long a write may wait for its answer (`[server] request_timeout_ms`).
    pub write_timeout: Duration,
    /// Most writes waiting to enter the Raft log; more are refused at once
    /// (`[storage] max_pending_writes`).
    pub max_pending_writes: usize,
}

impl StoreOptions {
    /// Default settings with `sync`, for node `node`.
    pub fn new(sync: SyncMode, node: ClusterOptions) -> Self {
        StoreOptions {
            sync,
            flush_interval: Duration::from_millis(10),
            snapshot_every: 1000,
            node,
            write_timeout: Duration::from_secs(10),
            max_pending_writes: 10_000,
        }
    }
}

/// The store: a handle shared by all requests.
pub struct Store {
    dir: Arc<DataDir>,
    events: Arc<Mutex<Wal>>,
    state: Arc<RwLock<State>>,
    /// Counters.
    pub stats: Arc<Stats>,
    node_id: String,
    cluster: Arc<Cluster>,
    health: Arc<health::Health>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).finish()
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`: loads the snapshot, replays the tail, and
    /// starts the node's Raft group (joining or bootstrapping its cluster; a single node
    /// is a cluster of one).
    pub async fn open(
        dir: &Path,
        spec: &ServiceSpec,
        opts: StoreOptions,
    ) -> Result<Store, OpenError> {
        let owned = dir.to_path_buf();
        let data_dir = tokio::task::spawn_blocking(move || DataDir::open(&owned))
            .await
            .map_err(|e| OpenError::Io {
                path: dir.display().to_string(),
                message: e.to_string(),
            })??;
        Self::open_in(Arc::new(data_dir), spec, opts).await
    }

    /// Opens the store in an open data dir (on any disk: tests cut its power).
    pub(crate) async fn open_in(
        dir: Arc<DataDir>,
        spec: &ServiceSpec,
        opts: StoreOptions,
    ) -> Result<Store, OpenError> {
        let stats = Arc::new(Stats::default());
        let health = Arc::new(health::Health::default());
        let (recovered, events) = {
            let (owned, spec, stats) = (dir.clone(), spec.clone(), stats.clone());
            tokio::task::spawn_blocking(move || {
                let mut events = open_events(&owned)?;
                let recovered = load_state(&owned, &mut events, &spec, &stats)?;
                Ok::<_, OpenError>((recovered, events))
            })
            .await
            .map_err(|e| OpenError::Io {
                path: dir.path().display().to_string(),
                message: e.to_string(),
            })??
        };
        let events = Arc::new(Mutex::new(events));
        let snapshot_every = snapshot_periods(spec, opts.snapshot_every);
        let node_id = opts.node.node_id.to_string();
        let loaded = Loaded {
            recovered,
            dir: dir.clone(),
            events: events.clone(),
            stats: stats.clone(),
            snapshot_every,
            health: health.clone(),
        };
        let (node, state) = Cluster::start(
            spec,
            (opts.sync, opts.flush_interval),
            opts.node.clone(),
            loaded,
            (opts.write_timeout, opts.max_pending_writes),
        )
        .await
        .map_err(|e| OpenError::Io {
            path: dir.path().display().to_string(),
            message: e.to_string(),
        })?;
        Ok(Store {
            dir,
            events,
            state,
            stats,
            node_id,
            cluster: Arc::new(node),
            health,
        })
    }

    /// The id of the cluster this node belongs to, once it knows it.
    pub fn cluster_id(&self) -> Option<String> {
        self.dir.node_info().cluster_id
    }

    /// The node's write health (see [`health`]).
    pub fn health(&self) -> &Arc<health::Health> {
        &self.health
    }

    /// Whether this node is ready to serve writes: its Raft core runs, a leader is known,
    /// the store is writable and the node is not shutting down; otherwise why not.
    pub fn ready(&self) -> Result<(), String> {
        if self.health.is_stopping() {
            return Err("the node is shutting down".into());
        }
        if let Some(f) = self.health.fault() {
            return Err(format!(
                "the store stopped taking writes after a storage failure ({}); restart the node once the cause is fixed",
                f.what
            ));
        }
        let metrics = self.cluster.raft.metrics();
        let m = metrics.borrow();
        if let Err(e) = &m.running_state {
            return Err(format!("the Raft core has stopped: {e}"));
        }
        if m.current_leader.is_none() {
            return Err(
                "no Raft leader is known (an election is going on, or no quorum is reachable)"
                    .into(),
            );
        }
        let voters = m.membership_config.membership().voter_ids().count();
        let patience = 2 * self.cluster.election_timeout_ms;
        if m.state == openraft::ServerState::Leader
            && voters > 1
            && m.millis_since_quorum_ack.is_none_or(|ms| ms > patience)
        {
            return Err(format!(
                "this leader has heard from no quorum for more than {patience} ms"
            ));
        }
        Ok(())
    }

    /// The node's Raft group.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// Proposes a command; answers once its event is committed and applied here (or why it
    /// was refused).
    pub async fn propose(&self, command: Command, actor: Actor) -> Result<Event, Refused> {
        self.propose_once(command, actor, None).await
    }

    /// Like [`Store::propose`], for a request that carries an `Idempotency-Key`: `key` is
    /// the key's digest (see [`decide::Stamped::key`]). A command proposed again with the
    /// same key is answered with the first one's event, on every replica.
    pub async fn propose_once(
        &self,
        command: Command,
        actor: Actor,
        key: Option<decide::IdempotencyKey>,
    ) -> Result<Event, Refused> {
        if let Some(f) = self.health.fault() {
            return Err(Refused::Fault(f.clone()));
        }
        let stamped = Stamped {
            command,
            actor,
            event_id: Uuid::new_v4(),
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            node_id: self.node_id.clone(),
            key,
        };
        self.cluster.propose(stamped).await
    }

    /// Stops the node's Raft group and waits until its parts have let go of the data dir
    /// (the checkpoint thread records the applied state last). Writes proposed afterwards
    /// are refused.
    pub async fn shutdown(&self) -> Result<(), String> {
        self.health.stopping();
        self.cluster.shutdown().await;
        Ok(())
    }

    /// Reads through the current state.
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        let guard = self.state.read().unwrap_or_else(|p| p.into_inner());
        f(&guard)
    }

    /// The record `id` of `model`.
    pub fn get(&self, model: &str, id: Uuid) -> Option<Arc<Stored>> {
        self.read(|s| s.get(model, id))
    }

    /// The events from `from` to `to` (inclusive) that this node holds, as a JSON array
    /// built from the stored text (for peers fetching what they miss).
    pub fn events_json(&self, from: u64, to: u64) -> Result<Vec<u8>, String> {
        let log = lock_events(&self.events);
        let mut out = vec![b'['];
        if let (Some(first), Some(last)) = (log.first_index(), log.last_index()) {
            for seq in from.max(first)..=to.min(last) {
                if let Some(bytes) = log.read(seq).map_err(|e| e.to_string())? {
                    if out.len() > 1 {
                        out.push(b',');
                    }
                    out.extend_from_slice(&bytes);
                }
            }
        }
        out.push(b']');
        Ok(out)
    }

    /// Every event this node holds, in order (for tests and tools; a node that installed
    /// a Raft snapshot holds the events after it until it has fetched the earlier ones).
    pub fn events(&self) -> Result<Vec<Event>, String> {
        serde_json::from_slice(&self.events_json(1, u64::MAX)?).map_err(|e| e.to_string())
    }
}

/// Locks the event log.
pub(crate) fn lock_events(events: &Mutex<Wal>) -> std::sync::MutexGuard<'_, Wal> {
    events.lock().unwrap_or_else(|p| p.into_inner())
}

/// Each model's snapshot period: its own `snapshot_every`, or `default`.
pub(crate) fn snapshot_periods(spec: &ServiceSpec, default: u64) -> HashMap<String, u64> {
    spec.models
        .iter()
        .map(|m| (m.name.clone(), m.snapshot_every.unwrap_or(default).max(1)))
        .collect()
}

/// What the state machine starts from: the recovered state and the store's settings.
pub(crate) struct Loaded {
    pub recovered: Recovered,
    /// The data dir.
    pub dir: Arc<DataDir>,
    /// The event log (shared with the store's readers).
    pub events: Arc<Mutex<Wal>>,
    pub stats: Arc<Stats>,
    /// Snapshot period per model.
    pub snapshot_every: HashMap<String, u64>,
    /// The node's write health.
    pub health: Arc<health::Health>,
}

pub(crate) fn record_id(r: &Record) -> Result<Uuid, Refused> {
    r.get("id")
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| Refused::Storage("a record without a valid id was proposed".into()))
}

/// The `version` of a record.
pub fn version_of(r: &Record) -> u64 {
    r.get("version").and_then(Value::as_u64).unwrap_or(0)
}
