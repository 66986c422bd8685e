//! The event-sourced store on sled, written through Raft.
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
//! Snapshots: once a model has `snapshot_every` events since its last snapshot, the
//! records it changed since are written to the `state` tree with the new snapshot's
//! sequence number, in one atomic batch (see `snapshot.rs`). A restart loads that tree
//! and replays only the events after it.
//!
//! Faults ([`health`]): a failed write or sync of either log, or a failed checkpoint,
//! stops this node's writes until it is restarted; a snapshot that fails is merged into
//! the model's next one. Either way a restart replays more, never less.

mod checkpoint;
pub mod decide;
pub mod event;
pub mod health;
pub mod snapshot;
pub mod state;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

use crate::config::SyncMode;
use crate::raft::node::{Cluster, ClusterOptions};
use crate::raft::wal::Wal;
use crate::spec::ServiceSpec;
use decide::Stamped;
use event::{Actor, Event, Record, Stored, FORMAT};
use state::State;

pub(crate) use checkpoint::checkpoint_thread;
pub use checkpoint::Checkpoint;

/// Why the store cannot open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// sled refused the folder (damaged files, permissions, another process).
    #[error("cannot open the store in {path}: {message}")]
    Sled { path: String, message: String },
    /// The store was written by a newer runtime.
    #[error("the store in {path} has format {found}, newer than this runtime understands ({FORMAT}); upgrade lithair-runtime")]
    NewerFormat { path: String, found: u32 },
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
    db: sled::Db,
    path: PathBuf,
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
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// Opens (or creates) the sled database of a store and checks its format.
fn open_db(dir: &Path) -> Result<(sled::Db, PathBuf), OpenError> {
    let path = dir.join("store");
    let shown = path.display().to_string();
    let sled_err = |e: sled::Error| OpenError::Sled {
        path: shown.clone(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|e| OpenError::Sled {
        path: shown.clone(),
        message: e.to_string(),
    })?;
    // Writes are made durable by the Raft log (see `raft::log_store`); sled holds
    // snapshots and metadata, written out in the background, and is flushed before the
    // log is purged and at shutdown.
    // Reads are served from memory: sled's own cache only serves writes and the start.
    let db = sled::Config::new()
        .cache_capacity(64 * 1024 * 1024)
        .path(&path)
        .flush_every_ms(Some(500))
        .mode(sled::Mode::HighThroughput)
        .open()
        .map_err(sled_err)?;
    let meta = db.open_tree("meta").map_err(sled_err)?;
    match meta.get("format").map_err(sled_err)? {
        Some(v) => {
            let found = std::str::from_utf8(&v)
                .ok()
                .and_then(|s| s.parse::<u32>().ok())
                .ok_or_else(|| OpenError::Corrupt {
                    path: shown.clone(),
                    what: "meta/format is not a number".into(),
                })?;
            if found > FORMAT {
                return Err(OpenError::NewerFormat { path: shown, found });
            }
        }
        None => {
            // Every event carries its own format too, checked when it is read.
            meta.insert("format", FORMAT.to_string().as_bytes())
                .map_err(sled_err)?;
            meta.insert(
                "created_by",
                format!("lithair-runtime {}", env!("CARGO_PKG_VERSION")).as_bytes(),
            )
            .map_err(sled_err)?;
            db.flush().map_err(sled_err)?;
        }
    }

    Ok((db, path))
}

/// Key in the `meta` tree: the state machine's applied state (see `raft::state_machine`).
pub(crate) const APPLIED: &str = "applied";

/// Opens the event log of the store in `dir` (folder `events`).
pub(crate) fn open_events(dir: &Path) -> Result<Wal, OpenError> {
    let path = dir.join("events");
    Wal::open(&path).map_err(|e| OpenError::Corrupt {
        path: path.display().to_string(),
        what: e.to_string(),
    })
}

/// Loads the state of the store: each model's snapshot from the `state` tree of `db`,
/// then the events after it from `events`, checked for gaps, damage and newer formats.
///
/// Events past the applied state (written just before a crash, whose applied state was
/// not) are cut off: the Raft log applies them again, identically.
pub(crate) fn load_state(
    db: &sled::Db,
    events: &mut Wal,
    path: &Path,
    spec: &ServiceSpec,
    stats: &Stats,
) -> Result<State, OpenError> {
    let shown = path.display().to_string();
    let sled_err = |e: sled::Error| OpenError::Sled {
        path: shown.clone(),
        message: e.to_string(),
    };
    let corrupt = |what: String| OpenError::Corrupt {
        path: shown.clone(),
        what,
    };
    let meta = db.open_tree("meta").map_err(sled_err)?;
    let snapshots = db.open_tree("state").map_err(sled_err)?;
    let mut state = State::new(spec);
    let snapshot_seqs = snapshot::load(&snapshots, &mut state, stats).map_err(corrupt)?;
    // A node that installed a Raft snapshot holds only the events after it.
    let complete_from = events_complete_from(&meta).map_err(sled_err)?;
    #[derive(serde::Deserialize)]
    struct AppliedSeq {
        last_seq: u64,
    }
    let applied_seq = match meta.get(APPLIED).map_err(sled_err)? {
        Some(v) => {
            serde_json::from_slice::<AppliedSeq>(&v)
                .map_err(|e| corrupt(format!("the applied state cannot be read ({e})")))?
                .last_seq
        }
        None => 0,
    };
    let held = events.last_index().unwrap_or(0);
    if held > applied_seq {
        tracing::info!(
            from = applied_seq + 1,
            to = held,
            "events past the applied state are dropped; the Raft log applies them again"
        );
        events
            .truncate(applied_seq + 1)
            .map_err(|e| corrupt(e.to_string()))?;
    }
    let newest_snapshot = snapshot_seqs.values().copied().max().unwrap_or(0);
    let needed = applied_seq.max(newest_snapshot);
    if needed >= complete_from && events.last_index().unwrap_or(0) < needed {
        return Err(corrupt(format!(
            "the event log ends at {} but the state was applied up to {needed} \
             (was the machine powered off with sync = \"periodic\" or \"never\"?)",
            events.last_index().unwrap_or(0)
        )));
    }
    // A crash right after installing a Raft snapshot left the log as it was before it:
    // it continues after the snapshot.
    if complete_from > 1
        && events.start() < complete_from
        && events.last_index().unwrap_or(0) + 1 < complete_from
    {
        events
            .restart_at(complete_from)
            .map_err(|e| corrupt(e.to_string()))?;
    }
    // Replay from the oldest snapshot any model has; skip events a model's snapshot covers.
    let from = state
        .models
        .keys()
        .map(|m| snapshot_seqs.get(m).copied().unwrap_or(0))
        .min()
        .unwrap_or(0);
    let mut replayed = 0u64;
    let start = (from + 1).max(complete_from);
    let last = events.last_index().unwrap_or(0);
    if start <= last && events.first_index().is_none_or(|f| f > start) {
        return Err(corrupt(format!(
            "the event log starts at {} but the state needs the events from {start}",
            events.first_index().unwrap_or(0)
        )));
    }
    // What is needed to skip an event a snapshot covers, read without building the rest.
    #[derive(serde::Deserialize)]
    struct Head<'a> {
        format: u32,
        sequence_number: u64,
        #[serde(borrow)]
        model: std::borrow::Cow<'a, str>,
    }
    for seq in start..=last {
        let bytes = events
            .read(seq)
            .map_err(|e| corrupt(e.to_string()))?
            .ok_or_else(|| corrupt(format!("event {seq} is missing")))?;
        let head: Head = serde_json::from_slice(&bytes)
            .map_err(|e| corrupt(format!("event {seq} cannot be read ({e})")))?;
        if head.sequence_number != seq {
            return Err(corrupt(format!(
                "event log has a gap or mismatch at sequence {seq}"
            )));
        }
        if head.format > FORMAT {
            return Err(OpenError::NewerFormat {
                path: shown.clone(),
                found: head.format,
            });
        }
        state.last_seq = state.last_seq.max(seq);
        if snapshot_seqs
            .get(head.model.as_ref())
            .is_some_and(|s| *s >= seq)
        {
            continue;
        }
        let ev: Event = serde_json::from_slice(&bytes)
            .map_err(|e| corrupt(format!("event {seq} cannot be read ({e})")))?;
        state.apply(&ev);
        replayed += 1;
    }
    stats.replayed_events.store(replayed, Ordering::Relaxed);
    tracing::info!(
        path = %shown,
        last_sequence = state.last_seq,
        snapshot_records = stats.snapshot_records.load(Ordering::Relaxed),
        replayed_events = replayed,
        "store loaded"
    );
    Ok(state)
}

impl Store {
    /// Opens (or creates) the store in `dir`: loads snapshots, replays the tail, and starts
    /// the node's Raft group (joining or bootstrapping its cluster; a single node is a
    /// cluster of one).
    pub async fn open(
        dir: &Path,
        spec: &ServiceSpec,
        opts: StoreOptions,
    ) -> Result<Store, OpenError> {
        let (db, path) = {
            let owned = dir.to_path_buf();
            tokio::task::spawn_blocking(move || open_db(&owned))
                .await
                .map_err(|e| OpenError::Sled {
                    path: dir.display().to_string(),
                    message: e.to_string(),
                })??
        };
        let stats = Arc::new(Stats::default());
        let health = Arc::new(health::Health::default());
        let (state, events) = {
            let (db, path, spec, stats) = (db.clone(), path.clone(), spec.clone(), stats.clone());
            let owned = dir.to_path_buf();
            tokio::task::spawn_blocking(move || {
                let mut events = open_events(&owned)?;
                let state = load_state(&db, &mut events, &path, &spec, &stats)?;
                Ok::<_, OpenError>((state, events))
            })
            .await
            .map_err(|e| OpenError::Sled {
                path: dir.display().to_string(),
                message: e.to_string(),
            })??
        };
        let events = Arc::new(Mutex::new(events));
        let snapshot_every = snapshot_periods(spec, opts.snapshot_every);
        let node_id = opts.node.node_id.to_string();
        let loaded = Loaded {
            state,
            path: path.clone(),
            events: events.clone(),
            stats: stats.clone(),
            snapshot_every,
            health: health.clone(),
        };
        let (node, state) = Cluster::start(
            &db,
            &path,
            spec,
            (opts.sync, opts.flush_interval),
            opts.node.clone(),
            loaded,
            (opts.write_timeout, opts.max_pending_writes),
        )
        .await
        .map_err(|e| OpenError::Sled {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(Store {
            db,
            path,
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
        self.db
            .open_tree("meta")
            .ok()
            .and_then(|m| crate::raft::identity::cluster_id(&m))
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

    /// Stops the node's Raft group and waits until it has released the database; then
    /// flushes. Writes proposed afterwards are refused.
    pub async fn shutdown(&self) -> Result<(), String> {
        self.health.stopping();
        self.cluster.shutdown().await;
        let (db, path) = (self.db.clone(), self.path.clone());
        tokio::task::spawn_blocking(move || flush(&db, &path))
            .await
            .map_err(|e| e.to_string())?
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

    /// Flushes everything to disk.
    pub fn flush(&self) -> Result<(), String> {
        flush(&self.db, &self.path)
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

/// Flushes sled, then `fdatasync`s its log file (sled's own flush ends in
/// `sync_file_range`, which does not survive a power loss).
pub(crate) fn flush(db: &sled::Db, path: &Path) -> Result<(), String> {
    db.flush().map_err(|e| e.to_string())?;
    if let Ok(f) = File::open(path.join("db")) {
        f.sync_data().map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Key in the `meta` tree: the first sequence number from which the event log is complete
/// (absent: 1). A node that installs a Raft snapshot holds only the events after it.
pub(crate) const EVENTS_FROM: &str = "events_from";

/// The first sequence number from which this node's event log is complete.
pub(crate) fn events_complete_from(meta: &sled::Tree) -> Result<u64, sled::Error> {
    Ok(meta
        .get(EVENTS_FROM)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(1))
}

/// Each model's snapshot period: its own `snapshot_every`, or `default`.
pub(crate) fn snapshot_periods(spec: &ServiceSpec, default: u64) -> HashMap<String, u64> {
    spec.models
        .iter()
        .map(|m| (m.name.clone(), m.snapshot_every.unwrap_or(default).max(1)))
        .collect()
}

/// What the state machine starts from: the loaded state and the store's settings.
pub(crate) struct Loaded {
    pub state: State,
    /// The sled folder.
    pub path: PathBuf,
    /// The event log (shared with the store's readers).
    pub events: Arc<Mutex<Wal>>,
    pub stats: Arc<Stats>,
    /// Snapshot period per model.
    pub snapshot_every: HashMap<String, u64>,
    /// The node's write health.
    pub health: Arc<health::Health>,
}

/// Takes the incremental snapshot of every model that is due (see `snapshot.rs`).
///
/// A model is due once it has `snapshot_every` events since its last snapshot and the
/// snapshot would save at least half of their replay: it writes one record per record
/// changed, the replay reads one event per event. A model whose events mostly create
/// records (each one changed once) is rebuilt from its events, which cost the same to
/// read as a snapshot, and writing each record a second time is spared.
pub(crate) fn snapshots_due(state: &mut State, every: &HashMap<String, u64>) -> Vec<snapshot::Job> {
    let seq = state.last_seq;
    let due: Vec<String> = state
        .models
        .iter()
        .filter(|(model, ms)| {
            ms.since_snapshot >= every.get(*model).copied().unwrap_or(1000)
                && ms.dirty.len() as u64 * 2 <= ms.since_snapshot
        })
        .map(|(model, _)| model.clone())
        .collect();
    due.iter()
        .filter_map(|model| snapshot::take(state, model, seq))
        .collect()
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
