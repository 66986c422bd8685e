//! The event-sourced store on sled.
//!
//! Every write is a [`Command`] proposed to the store. One writer thread takes commands
//! in batches (group commit): it decides each one against the current state plus the
//! batch's earlier effects (unique values, If-Match versions, refs: decisions taken here,
//! in order, so a replica applying the same log decides the same), appends the resulting
//! events to the `events` tree in one sled batch, makes them durable per the `sync`
//! setting (sled flush plus `fdatasync` of sled's log file for `always`), then publishes
//! them to the in-memory [`State`] that reads are served from and answers every proposer.
//! Nothing is visible to readers before it is durable.
//!
//! Snapshots: once a model has `snapshot_every` events since its last snapshot, the
//! records it changed since are written to the `state` tree with the new snapshot's
//! sequence number, in one atomic batch (see `snapshot.rs`). A restart loads that tree
//! and replays only the events after it.

pub mod decide;
pub mod event;
pub mod snapshot;
pub mod state;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::config::SyncMode;
use crate::spec::ServiceSpec;
use decide::{Decider, Overlay, Stamped};
use event::{Actor, Event, Record, Stored, FORMAT};
use state::State;

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
    /// The store could not write.
    Storage(String),
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

struct Proposal {
    stamped: Stamped,
    reply: oneshot::Sender<Result<Event, Refused>>,
}

/// Settings of a store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Durability.
    pub sync: SyncMode,
    /// For periodic sync.
    pub flush_interval: Duration,
    /// Default snapshot period.
    pub snapshot_every: u64,
    /// This node's id, stamped into events.
    pub node_id: String,
}

/// The store: a handle shared by all requests.
pub struct Store {
    db: sled::Db,
    path: PathBuf,
    state: Arc<RwLock<State>>,
    tx: Option<mpsc::UnboundedSender<Proposal>>,
    writer: Option<std::thread::JoinHandle<()>>,
    flusher: Option<std::thread::JoinHandle<()>>,
    /// Counters.
    pub stats: Arc<Stats>,
    closed: Arc<AtomicBool>,
    node_id: String,
    cluster: Option<Arc<crate::raft::node::Cluster>>,
}

impl Drop for Store {
    fn drop(&mut self) {
        // Stops the periodic flusher; the writer finishes its queue when the channel
        // closes, and releases the database when it ends.
        self.closed.store(true, Ordering::Relaxed);
        self.tx.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        // The flusher notices `closed` within one interval; it holds the database until then.
        if let Some(f) = self.flusher.take() {
            let _ = f.join();
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// For `sync = "periodic"`: a thread that flushes and fdatasyncs the store every
/// `flush_interval` until `closed` is set.
fn periodic_flusher(
    db: &sled::Db,
    path: &Path,
    opts: &StoreOptions,
    closed: &Arc<AtomicBool>,
) -> Result<Option<std::thread::JoinHandle<()>>, OpenError> {
    if opts.sync != SyncMode::Periodic {
        return Ok(None);
    }
    let (db, closed, every) = (db.clone(), closed.clone(), opts.flush_interval);
    let file = File::open(path.join("db")).ok();
    std::thread::Builder::new()
        .name("lithair-flusher".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            if closed.load(Ordering::Relaxed) {
                break;
            }
            if db.flush().is_err() {
                tracing::error!("periodic flush failed");
            }
            if let Some(f) = &file {
                let _ = f.sync_data();
            }
        })
        .map(Some)
        .map_err(|e| OpenError::Sled {
            path: path.display().to_string(),
            message: format!("cannot start the flusher: {e}"),
        })
}

/// Opens (or creates) the sled database of a store and checks its format.
fn open_db(dir: &Path, sync: SyncMode) -> Result<(sled::Db, PathBuf), OpenError> {
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
    let flush_every = match sync {
        SyncMode::Never => Some(1000),
        _ => None,
    };
    // Reads are served from memory: sled's own cache only serves writes and the start.
    let db = sled::Config::new()
        .cache_capacity(64 * 1024 * 1024)
        .path(&path)
        .flush_every_ms(flush_every)
        .mode(sled::Mode::HighThroughput)
        .open()
        .map_err(sled_err)?;
    let meta = db.open_tree("meta").map_err(sled_err)?;
    let events = db.open_tree("events").map_err(sled_err)?;
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
            if !events.is_empty() {
                return Err(OpenError::Corrupt {
                    path: shown,
                    what: "events exist but meta/format is missing".into(),
                });
            }
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

impl Store {
    /// Opens (or creates) the store in `dir`, loads snapshots, replays the tail and starts
    /// the writer thread.
    pub fn open(dir: &Path, spec: &ServiceSpec, opts: StoreOptions) -> Result<Store, OpenError> {
        let (db, path) = open_db(dir, opts.sync)?;
        let shown = path.display().to_string();
        let sled_err = |e: sled::Error| OpenError::Sled {
            path: shown.clone(),
            message: e.to_string(),
        };
        let events = db.open_tree("events").map_err(sled_err)?;
        let snapshots = db.open_tree("state").map_err(sled_err)?;

        let stats = Arc::new(Stats::default());
        let mut state = State::new(spec);
        let snapshot_seqs =
            snapshot::load(&snapshots, &mut state, &stats).map_err(|what| OpenError::Corrupt {
                path: shown.clone(),
                what,
            })?;
        // Replay from the oldest snapshot any model has; skip events a model's snapshot covers.
        let from = state
            .models
            .keys()
            .map(|m| snapshot_seqs.get(m).copied().unwrap_or(0))
            .min()
            .unwrap_or(0);
        let mut replayed = 0u64;
        let mut expected = from + 1;
        for item in events.range((from + 1).to_be_bytes()..) {
            let (k, v) = item.map_err(sled_err)?;
            let seq = key_seq(&k).ok_or_else(|| OpenError::Corrupt {
                path: shown.clone(),
                what: "an event key is not 8 bytes".into(),
            })?;
            let ev: Event = serde_json::from_slice(&v).map_err(|e| OpenError::Corrupt {
                path: shown.clone(),
                what: format!("event {seq} cannot be read ({e})"),
            })?;
            if ev.sequence_number != seq || seq != expected {
                return Err(OpenError::Corrupt {
                    path: shown.clone(),
                    what: format!("event log has a gap or mismatch at sequence {seq}"),
                });
            }
            expected = seq + 1;
            if ev.format > FORMAT {
                return Err(OpenError::NewerFormat {
                    path: shown.clone(),
                    found: ev.format,
                });
            }
            let covered = snapshot_seqs.get(&ev.model).is_some_and(|s| *s >= seq);
            if covered {
                state.last_seq = state.last_seq.max(seq);
                continue;
            }
            state.apply(&ev);
            replayed += 1;
        }
        if let Some(last) = events.last().map_err(sled_err)? {
            state.last_seq = state.last_seq.max(key_seq(&last.0).unwrap_or(0));
        }
        stats.replayed_events.store(replayed, Ordering::Relaxed);
        tracing::info!(
            path = %shown,
            last_sequence = state.last_seq,
            snapshot_records = stats.snapshot_records.load(Ordering::Relaxed),
            replayed_events = replayed,
            "store opened"
        );

        let state = Arc::new(RwLock::new(state));
        let (tx, rx) = mpsc::unbounded_channel();
        let log_file = File::open(path.join("db")).ok();
        let writer = Writer {
            db: db.clone(),
            events,
            snapshots,
            state: state.clone(),
            decider: Decider::new(spec),
            snapshot_every: spec
                .models
                .iter()
                .map(|m| {
                    (
                        m.name.clone(),
                        m.snapshot_every.unwrap_or(opts.snapshot_every).max(1),
                    )
                })
                .collect(),
            opts: opts.clone(),
            log_file,
            stats: stats.clone(),
        };
        let writer = std::thread::Builder::new()
            .name("lithair-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| OpenError::Sled {
                path: shown.clone(),
                message: format!("cannot start the writer: {e}"),
            })?;
        let closed = Arc::new(AtomicBool::new(false));
        let flusher = periodic_flusher(&db, &path, &opts, &closed)?;
        Ok(Store {
            db,
            path,
            state,
            tx: Some(tx),
            flusher,
            writer: Some(writer),
            stats,
            closed,
            node_id: opts.node_id.clone(),
            cluster: None,
        })
    }

    /// Opens the store as a node of a Raft cluster: writes go through consensus and are
    /// applied by the Raft state machine, which owns the state reads are served from.
    pub async fn open_cluster(
        dir: &Path,
        spec: &ServiceSpec,
        opts: StoreOptions,
        cluster: crate::raft::node::ClusterOptions,
    ) -> Result<Store, OpenError> {
        let (db, path) = open_db(dir, opts.sync)?;
        let node_id = cluster.node_id.to_string();
        let (node, state) = crate::raft::node::Cluster::start(&db, &path, spec, opts.sync, cluster)
            .await
            .map_err(|e| OpenError::Sled {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
        // `periodic` acknowledges Raft appends at once; this thread makes them durable.
        let closed = Arc::new(AtomicBool::new(false));
        let flusher = periodic_flusher(&db, &path, &opts, &closed)?;
        Ok(Store {
            db,
            path,
            state,
            tx: None,
            writer: None,
            flusher,
            stats: Arc::new(Stats::default()),
            closed,
            node_id,
            cluster: Some(Arc::new(node)),
        })
    }

    /// The Raft node, when the store runs as part of a cluster.
    pub fn cluster(&self) -> Option<&Arc<crate::raft::node::Cluster>> {
        self.cluster.as_ref()
    }

    /// Proposes a command; answers once its event is durable (or why it was refused).
    pub async fn propose(&self, command: Command, actor: Actor) -> Result<Event, Refused> {
        if let Some(cluster) = &self.cluster {
            let stamped = Stamped {
                command,
                actor,
                event_id: Uuid::new_v4(),
                at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                node_id: self.node_id.clone(),
            };
            return cluster.propose(stamped).await;
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .as_ref()
            .ok_or_else(|| Refused::Storage("the store is closed".into()))?
            .send(Proposal {
                stamped: Stamped {
                    command,
                    actor,
                    event_id: Uuid::new_v4(),
                    at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                    node_id: self.node_id.clone(),
                },
                reply,
            })
            .map_err(|_| Refused::Storage("the store's writer has stopped".into()))?;
        rx.await
            .map_err(|_| Refused::Storage("the store's writer has stopped".into()))?
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

    /// Flushes everything to disk (at shutdown).
    pub fn flush(&self) -> Result<(), String> {
        self.db.flush().map_err(|e| e.to_string())?;
        if let Ok(f) = File::open(self.path.join("db")) {
            f.sync_data().map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Every event of the log, in order (for tests and tools).
    pub fn events(&self) -> Result<Vec<Event>, String> {
        let tree = self.db.open_tree("events").map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for item in tree.iter() {
            let (k, v) = item.map_err(|e| e.to_string())?;
            // Only 8-byte keys are events (a Raft node keeps its applied state beside them).
            if k.len() == 8 {
                out.push(serde_json::from_slice(&v).map_err(|e| e.to_string())?);
            }
        }
        Ok(out)
    }
}

fn key_seq(k: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(k).ok().map(u64::from_be_bytes)
}

/// The single writer: decides, persists, publishes.
struct Writer {
    db: sled::Db,
    events: sled::Tree,
    snapshots: sled::Tree,
    state: Arc<RwLock<State>>,
    decider: Decider,
    snapshot_every: HashMap<String, u64>,
    opts: StoreOptions,
    log_file: Option<File>,
    stats: Arc<Stats>,
}

const MAX_BATCH: usize = 1024;

impl Writer {
    fn run(mut self, mut rx: mpsc::UnboundedReceiver<Proposal>) {
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            self.commit(batch);
        }
        tracing::debug!("store writer stopped");
    }

    fn commit(&mut self, batch: Vec<Proposal>) {
        type Decided = Result<(Event, Option<Arc<Stored>>), Refused>;
        let mut decided: Vec<(Proposal, Decided)> = Vec::with_capacity(batch.len());
        {
            let state = self.state.read().unwrap_or_else(|p| p.into_inner());
            let mut overlay = Overlay::default();
            let mut seq = state.last_seq;
            for mut p in batch {
                let result = self
                    .decider
                    .decide(&state, &mut overlay, &mut p.stamped, seq + 1);
                if result.is_ok() {
                    seq += 1;
                }
                decided.push((p, result));
            }
        }
        let mut sled_batch = sled::Batch::default();
        let mut count = 0;
        for (_, r) in &decided {
            if let Ok((ev, _)) = r {
                match serde_json::to_vec(ev) {
                    Ok(bytes) => sled_batch.insert(&ev.key(), bytes),
                    Err(e) => tracing::error!(error = %e, "cannot encode an event"),
                }
                count += 1;
            }
        }
        if count > 0 {
            if let Err(e) = self.persist(sled_batch) {
                tracing::error!(error = %e, "write failed; the batch is refused");
                for (p, _) in decided {
                    let _ = p.reply.send(Err(Refused::Storage(e.clone())));
                }
                return;
            }
            let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
            for (_, r) in &mut decided {
                if let Ok((ev, record)) = r {
                    state.publish(ev, record.take());
                }
            }
            self.stats.batches.fetch_add(1, Ordering::Relaxed);
            self.stats.events.fetch_add(count, Ordering::Relaxed);
            self.maybe_snapshot(&mut state);
        }
        for (p, r) in decided {
            let _ = p.reply.send(r.map(|(ev, _)| ev));
        }
    }

    fn persist(&mut self, batch: sled::Batch) -> Result<(), String> {
        self.events.apply_batch(batch).map_err(|e| e.to_string())?;
        if self.opts.sync == SyncMode::Always {
            self.db.flush().map_err(|e| e.to_string())?;
            // sled's flush ends in sync_file_range, which does not survive a power loss.
            if let Some(f) = &self.log_file {
                f.sync_data().map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    fn maybe_snapshot(&self, state: &mut State) {
        let seq = state.last_seq;
        let due: Vec<String> = state
            .models
            .iter()
            .filter(|(model, ms)| {
                ms.since_snapshot
                    >= self
                        .snapshot_every
                        .get(*model)
                        .copied()
                        .unwrap_or(self.opts.snapshot_every)
            })
            .map(|(model, _)| model.clone())
            .collect();
        for model in due {
            match snapshot::write(&self.snapshots, state, &model, seq) {
                Ok(changed) => {
                    self.stats.snapshots.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%model, sequence = seq, changed, "snapshot written");
                }
                Err(e) => {
                    tracing::error!(%model, error = %e, "snapshot failed; the next one retries")
                }
            }
        }
    }
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
