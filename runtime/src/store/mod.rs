//! The event-sourced store, written through Raft: the facade the engine uses (open,
//! propose, read, shutdown) over the domain ([`crate::domain`]) and its I/O ([`crate::raft`]).
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
//! Snapshots: once a model has `snapshot_every` events since the last snapshot (and the
//! events since are at least a twelfth of the records, see [`State::snapshot_due`]), every
//! record is written to the data dir's `snapshot` file in its compact form
//! (`domain/row.rs`) from a frozen copy of the state, off the apply path (see
//! `domain/snapshot.rs`). A restart loads it and replays only the events after it. The
//! data dir's files are listed in `raft/data_dir.rs`.
//!
//! The change feed (`feed.rs`): the state machine hands each applied event, with the
//! record after it, to the feed's live readers once it is in the event log; a reader
//! that resumes reads what it missed from the log.
//!
//! Faults ([`crate::domain::health`]): a failed write or sync of either log, or a failed checkpoint,
//! stops this node's writes until it is restarted; a snapshot that fails leaves the
//! previous one. Either way a restart replays more, never less.

pub mod feed;
#[cfg(test)]
mod power_cuts;
mod timeline;

pub use timeline::HistoryError;

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use uuid::Uuid;

use crate::config::SyncMode;
use crate::domain::decide::{IdempotencyKey, Stamped};
use crate::domain::event::{Actor, Event};
use crate::domain::health::Health;
use crate::domain::row::Stored;
use crate::domain::state::State;
use crate::domain::Stats;
use crate::raft::data_dir::DataDir;
use crate::raft::log_store::Durability;
use crate::raft::node::{Cluster, ClusterOptions, WriteLimits};
use crate::raft::{load_state, lock_events, open_events, snapshot_periods, Loaded};
use crate::spec::ServiceSpec;
use crate::wal::{Wal, WalError};

pub use crate::domain::{Command, Refused};
pub use crate::raft::data_dir::OpenError;

/// Why the node is not ready to serve writes (`/ready` answers 503 with it).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    /// The node is stopping.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// A storage failure stopped the node's writes.
    #[error("the store stopped taking writes after a storage failure ({0}); restart the node once the cause is fixed")]
    Fault(String),
    /// The node's Raft group cannot take writes.
    #[error(transparent)]
    Raft(#[from] crate::raft::api::NotReady),
}

/// Why the event log could not be read back.
#[cfg(any(test, feature = "testing"))]
#[derive(Debug, thiserror::Error)]
pub enum ReadEventsError {
    /// The log's files.
    #[error(transparent)]
    Log(#[from] WalError),
    /// An event that does not parse.
    #[error("an event does not parse: {0}")]
    Decode(#[from] serde_json::Error),
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
    /// The settings of `[storage]` and the write deadline of `[server]` in `config`, for
    /// node `node`.
    pub fn of(config: &crate::config::Config, node: ClusterOptions) -> Self {
        StoreOptions {
            sync: config.storage.sync,
            flush_interval: Duration::from_millis(config.storage.flush_interval_ms),
            snapshot_every: config.storage.snapshot_every,
            node,
            write_timeout: Duration::from_millis(config.server.request_timeout_ms),
            max_pending_writes: config.storage.max_pending_writes,
        }
    }

    /// Default settings with `sync`, for node `node`.
    #[cfg(any(test, feature = "testing"))]
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
    health: Arc<Health>,
    /// Where the lifecycle models' events are in the event log.
    timeline: Arc<timeline::Timeline>,
    /// The change feed.
    feed: Arc<feed::Feed>,
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
        let health = Arc::new(Health::default());
        let (recovered, events) = {
            let (owned, spec, stats) = (dir.clone(), spec.clone(), stats.clone());
            tokio::task::spawn_blocking(move || {
                let mut events = open_events(&owned)?;
                events.observe_syncs(stats.fsync.clone());
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
        let feed = Arc::new(feed::Feed::new(spec));
        let loaded = Loaded {
            recovered,
            dir: dir.clone(),
            events: events.clone(),
            stats: stats.clone(),
            snapshot_every,
            health: health.clone(),
            feed: feed.clone(),
        };
        let durability = Durability {
            sync: opts.sync,
            flush_interval: opts.flush_interval,
        };
        let writes = WriteLimits {
            timeout: opts.write_timeout,
            max_pending: opts.max_pending_writes,
        };
        let (node, state) = Cluster::start(spec, durability, opts.node.clone(), loaded, writes)
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
            timeline: Arc::new(timeline::Timeline::new(spec)),
            feed,
        })
    }

    /// The change feed (`feed.rs`).
    pub fn feed(&self) -> &Arc<feed::Feed> {
        &self.feed
    }

    /// The events of `model` after sequence number `after`, at most `limit`, each with
    /// the record after it, from the event log. Reads files: call it off the async
    /// threads.
    pub fn feed_page(
        &self,
        model: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(Event, feed::After)>, HistoryError> {
        self.feed.page(&self.events, model, after, limit, |r| {
            self.read(|s| s.upcast(model, r));
        })
    }

    /// The first event this node's log holds (a node that installed a Raft snapshot may
    /// not hold the earlier ones yet).
    pub fn first_event(&self) -> Option<u64> {
        lock_events(&self.events).first_index()
    }

    /// The last event this node's log holds (the state may be ahead of it for a moment:
    /// events are applied, then appended).
    pub fn last_event(&self) -> Option<u64> {
        lock_events(&self.events).last_index()
    }

    /// The id of the cluster this node belongs to, once it knows it.
    pub fn cluster_id(&self) -> Option<String> {
        self.dir.node_info().cluster_id
    }

    /// The node's write health (see [`Health`]).
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// Whether this node is ready to serve writes: the node is not shutting down, the
    /// store is writable, and its Raft side is ready (see [`Cluster::ready`]).
    pub fn ready(&self) -> Result<(), NotReady> {
        if self.health.is_stopping() {
            return Err(NotReady::ShuttingDown);
        }
        if let Some(f) = self.health.fault() {
            return Err(NotReady::Fault(f.what.clone()));
        }
        self.cluster.ready().map_err(NotReady::Raft)
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
    /// the key's digest (see [`Stamped::key`]). A command proposed again with the
    /// same key is answered with the first one's event, on every replica.
    pub async fn propose_once(
        &self,
        command: Command,
        actor: Actor,
        key: Option<IdempotencyKey>,
    ) -> Result<Event, Refused> {
        match self.propose_stamped(command, actor, key).await? {
            crate::raft::Applied::Done(ev) => Ok(ev),
            _ => Err(Refused::Storage(
                "a write was answered as a transaction".into(),
            )),
        }
    }

    /// Proposes `writes` as one transaction: one log entry, decided together in log
    /// order, all or nothing; answers their events in order, or the first write's
    /// refusal (as [`Refused::InTransaction`]), in which case nothing was written. With
    /// `key`, a transaction proposed again with the same key is answered with the first
    /// one's events.
    pub async fn propose_together(
        &self,
        writes: Vec<Command>,
        actor: Actor,
        key: Option<IdempotencyKey>,
    ) -> Result<Vec<Event>, Refused> {
        match self
            .propose_stamped(Command::Together { writes }, actor, key)
            .await?
        {
            crate::raft::Applied::Together(events) => Ok(events),
            _ => Err(Refused::Storage(
                "a transaction was answered as one write".into(),
            )),
        }
    }

    async fn propose_stamped(
        &self,
        command: Command,
        actor: Actor,
        key: Option<IdempotencyKey>,
    ) -> Result<crate::raft::Applied, Refused> {
        if let Some(f) = self.health.fault() {
            return Err(Refused::Fault(f.clone()));
        }
        // A traced request's raft span has its id before it starts: the command
        // carries it (to the leader, when this node forwards), and its apply goes
        // under it.
        let recorder = crate::telemetry::current();
        let trace = recorder.as_ref().map(|r| crate::telemetry::Traced {
            context: r.open(),
            recorder: Some(r.clone()),
        });
        let span = trace.as_ref().map(|t| t.context.span_id);
        let stamped = Stamped {
            command,
            actor,
            event_id: Uuid::new_v4(),
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            node_id: self.node_id.clone(),
            key,
            trace,
        };
        // Every write's wait for Raft (committed and applied here) is the raft stage.
        let proposed = crate::clock::Instant::now();
        let answer = self.cluster.propose(stamped).await;
        let took = proposed.elapsed();
        self.stats
            .stages
            .of(crate::domain::Stage::Raft)
            .observe(took.as_secs_f64());
        if let (Some(r), Some(id)) = (recorder, span) {
            r.child("raft", id, r.context().span_id, proposed, proposed + took);
        }
        answer
    }

    /// Stops the node's Raft group and waits until its parts have let go of the data dir
    /// (the checkpoint thread records the applied state last). Writes proposed afterwards
    /// are refused.
    pub async fn shutdown(&self) {
        self.health.stopping();
        self.feed.close();
        self.cluster.shutdown().await;
    }

    /// Stops the node as a crash would leave the data dir: without the last snapshot a
    /// shutdown writes (what is on disk is what the sync setting put there).
    #[cfg(any(test, feature = "testing"))]
    pub async fn stop_as_a_crash_would(&self) {
        self.health.stop_abruptly();
        self.cluster.shutdown().await;
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
    pub fn events_json(&self, from: u64, to: u64) -> Result<Vec<u8>, WalError> {
        let log = lock_events(&self.events);
        let mut out = vec![b'['];
        if let (Some(first), Some(last)) = (log.first_index(), log.last_index()) {
            for seq in from.max(first)..=to.min(last) {
                if let Some(bytes) = log.read(seq)? {
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

    /// The events of record `id` of `model` (a model with a `lifecycle`), oldest first.
    /// Reads files: call it off the async threads.
    pub fn history(&self, model: &str, id: Uuid) -> Result<Vec<Event>, HistoryError> {
        self.timeline.of_record(&self.events, model, id)
    }

    /// A page of the audit log: the events of audited models after sequence number
    /// `after` (of record `record`, when given) that `keep` takes, at most `limit`,
    /// looking at no more than `budget` events; and where the next page starts (None: at
    /// the end). Reads files: call it off the async threads.
    pub fn audit(
        &self,
        after: u64,
        record: Option<Uuid>,
        limit: usize,
        budget: usize,
        keep: impl FnMut(&Event) -> bool,
    ) -> Result<(Vec<Event>, Option<u64>), HistoryError> {
        self.timeline
            .audit(&self.events, after, record, limit, budget, keep)
    }

    /// Every event this node holds, in order (for tests and tools; a node that installed
    /// a Raft snapshot holds the events after it until it has fetched the earlier ones).
    #[cfg(any(test, feature = "testing"))]
    pub fn events(&self) -> Result<Vec<Event>, ReadEventsError> {
        Ok(serde_json::from_slice(&self.events_json(1, u64::MAX)?)?)
    }
}
