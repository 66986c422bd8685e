//! The Raft state machine: the store's state and event log, applied from committed entries.
//!
//! Each normal entry carries a batch of [`Stamped`](crate::domain::decide::Stamped)
//! commands; applying one decides unique values, versions and refs against the state
//! (deterministic on every replica), appends the event (sequence numbers stay gap-free:
//! blank and membership entries make no event) and publishes the record to the in-memory
//! state that reads are served from. A transaction (`Command::Together`, an action's
//! writes) is decided whole first and published only when every write of it passes. The
//! events go to the event log (one `pwrite`); the
//! checkpoint thread syncs it and only then records the last applied log id and the
//! membership, so the recorded state never covers an event that is not on disk. The
//! Raft log is already durable, so applying needs no flush of its own. After a storage
//! fault (`domain::health`) nothing more is applied.
//!
//! Snapshots, in one format (`domain::snapshot`), for two purposes:
//! - the store's own, in the data dir's `snapshot` file (when `snapshot_every` events of a
//!   model make one due, see `State::snapshot_due`, and once more at a clean shutdown),
//!   which bounds the replay at restart;
//! - openraft's, which lets the log be purged and brings a lagging node up to date.
//!   Building one is O(1): it freezes the persistent maps of the state. Its bytes are
//!   produced only when a follower needs them (openraft 0.9 keeps only the meta of a
//!   built snapshot), and after a restart the current state stands in for it. A node
//!   that installs one keeps its bytes as its `snapshot` file.

use std::collections::{HashMap, VecDeque};
use std::io::Cursor;
use std::sync::{Arc, Mutex, RwLock};

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, RaftSnapshotBuilder, StorageError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Loaded;
use super::{io_error, Answers, Applied, Batch, Io, TypeConfig};
use crate::domain::decide::{Decider, IdempotencyKey, Overlay};
use crate::domain::health::Health;
use crate::domain::snapshot::{Image, Window};
use crate::domain::state::State;
use crate::domain::{Command, Refused, Stats};
use crate::raft::data_dir::DataDir;
use crate::spec::ServiceSpec;
use crate::store::feed::{Change, Feed};
use crate::wal::Wal;

/// The applied state, in the data dir's `applied` file (written after the events it
/// covers) and in every snapshot.
#[derive(Serialize, Deserialize)]
struct AppliedState {
    applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    /// The last event of the log when this was written.
    last_seq: u64,
}

/// An openraft snapshot: its meta, and the state frozen when it was built or installed.
#[derive(Clone)]
struct Frozen {
    meta: SnapshotMeta<u64, BasicNode>,
    image: Image,
}

impl Frozen {
    /// The snapshot with its bytes: the image, framed as a `snapshot` file is.
    fn snapshot(&self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let bytes = self.image.to_bytes().map_err(write_err)?;
        Ok(Snapshot {
            meta: self.meta.clone(),
            snapshot: Box::new(Cursor::new(crate::wal::slot::frame(bytes))),
        })
    }
}

/// Duplicate detection: the event ids of the events with the newest [`RECENT`] sequence
/// numbers. A command whose event id is there was accepted already (its first answer was
/// lost with a leader, and a follower sent it again): it is answered with that event and
/// changes nothing. The window is a function of the event log alone, identical on every
/// replica (rebuilt from the log at start, carried in snapshots), so every replica skips
/// the same commands. A command that was refused is not remembered: sent again, it is
/// decided again, alike everywhere.
///
/// The same window remembers the `Idempotency-Key`s of accepted writes: a command sent
/// again with a known key (a client retrying after a timeout) is answered with the first
/// write's event; with a known key but another request, it is refused.
#[derive(Default)]
struct Recent {
    by_id: HashMap<Uuid, u64>,
    order: VecDeque<(u64, Uuid)>,
    /// Key digest -> (sequence number, request digest).
    by_key: HashMap<String, (u64, String)>,
    key_order: VecDeque<(u64, IdempotencyKey)>,
}

impl Recent {
    fn remember(&mut self, seq: u64, event_id: Uuid) {
        self.by_id.insert(event_id, seq);
        self.order.push_back((seq, event_id));
        while self
            .order
            .front()
            .is_some_and(|(oldest, _)| oldest + (RECENT as u64) <= seq)
        {
            if let Some((_, old)) = self.order.pop_front() {
                self.by_id.remove(&old);
            }
        }
        while self
            .key_order
            .front()
            .is_some_and(|(oldest, _)| oldest + (RECENT as u64) <= seq)
        {
            if let Some((old_seq, old)) = self.key_order.pop_front() {
                if self.by_key.get(&old.id).is_some_and(|(s, _)| *s == old_seq) {
                    self.by_key.remove(&old.id);
                }
            }
        }
    }

    /// Remembers the key of the event at `seq`; it leaves the window with that event (in
    /// [`Recent::remember`]).
    fn remember_key(&mut self, seq: u64, key: IdempotencyKey) {
        self.by_key
            .insert(key.id.clone(), (seq, key.request.clone()));
        self.key_order.push_back((seq, key));
    }

    /// The window of `events` with their keys (oldest first), trimmed to its size.
    fn of(events: Window) -> Self {
        let mut window = Recent::default();
        let from = events
            .events
            .last()
            .map_or(0, |(newest, _)| newest.saturating_sub(RECENT as u64 - 1));
        for (seq, key) in events.keys.into_iter().filter(|(seq, _)| *seq >= from) {
            window.remember_key(seq, key);
        }
        for (seq, id) in events.events.into_iter().filter(|(seq, _)| *seq >= from) {
            window.remember(seq, id);
        }
        window
    }

    /// Its events and keys, oldest first (for a snapshot).
    fn export(&self) -> Window {
        Window {
            events: self.order.iter().copied().collect(),
            keys: self.key_order.iter().cloned().collect(),
        }
    }
}

/// How many of the newest events duplicate detection looks back on.
const RECENT: usize = 100_000;

/// The state machine.
pub struct StateMachine {
    spec: ServiceSpec,
    state: Arc<RwLock<State>>,
    decider: Decider,
    /// The event log (sequence number -> event JSON).
    events: Arc<Mutex<Wal>>,
    /// The data dir (its `snapshot` file is replaced when a snapshot is installed).
    dir: Arc<DataDir>,
    applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    /// The last openraft snapshot built or installed.
    frozen: Arc<Mutex<Option<Frozen>>>,
    /// Duplicate detection (see [`Recent`]).
    recent: Recent,
    stats: Arc<Stats>,
    snapshot_every: HashMap<String, u64>,
    /// To the checkpoint thread (applied state, snapshots; see `raft::checkpoint`).
    checkpoints: std::sync::mpsc::Sender<crate::raft::Checkpoint>,
    /// Whether this node may still write (see `domain::health`).
    health: Arc<Health>,
    /// The change feed: applied events go there once they are in the event log.
    feed: Arc<Feed>,
    /// The changes of the entries being applied, while the feed has listeners.
    changes: Vec<Change>,
    /// Whether the feed had listeners when these entries began to apply (asked once per
    /// call of `apply`, under the state's lock: asking takes the feed's lock).
    listened: bool,
    holder: Arc<()>,
}

/// A state machine that stops (the node shuts down) hands a last snapshot to the
/// checkpoint thread when events were applied since the last one: the next start loads
/// it and replays nothing. The checkpoint thread writes it before it ends, and the node's
/// shutdown waits for that (`Cluster::shutdown`); a crash skips it, and the next start
/// replays the tail since the last snapshot instead.
impl Drop for StateMachine {
    fn drop(&mut self) {
        if self.health.fault().is_some() || self.health.is_abrupt() {
            return;
        }
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        if state.since_snapshot == 0 {
            return;
        }
        let Ok(applied) = self.applied_bytes(state.last_seq) else {
            return;
        };
        let image = Image::of(&state, applied, self.recent.export());
        drop(state);
        let _ = self
            .checkpoints
            .send(crate::raft::Checkpoint::Snapshot(image));
    }
}

fn read_err(e: impl std::fmt::Display) -> StorageError<u64> {
    io_error(Io::ReadStateMachine, e)
}

fn write_err(e: impl std::fmt::Display) -> StorageError<u64> {
    io_error(Io::WriteStateMachine, e)
}

impl StateMachine {
    /// Opens the state machine of the data dir `dir` on its own: loads the state with
    /// default settings. The service uses [`StateMachine::new`] through the store.
    #[cfg(any(test, feature = "testing"))]
    pub fn open(dir: Arc<DataDir>, spec: &ServiceSpec) -> Result<Self, StorageError<u64>> {
        let stats = Arc::new(Stats::default());
        let mut events = crate::raft::open_events(&dir).map_err(read_err)?;
        let recovered =
            crate::raft::load_state(&dir, &mut events, spec, &stats).map_err(read_err)?;
        let snapshot_every = crate::raft::snapshot_periods(spec, 1000);
        let loaded = Loaded {
            recovered,
            dir,
            events: Arc::new(Mutex::new(events)),
            stats,
            snapshot_every,
            health: Arc::default(),
            feed: Arc::new(crate::store::feed::Feed::new(spec)),
        };
        Self::new(spec, loaded, Arc::new(()))
    }

    /// The state machine over a recovered state.
    pub(crate) fn new(
        spec: &ServiceSpec,
        loaded: Loaded,
        holder: Arc<()>,
    ) -> Result<Self, StorageError<u64>> {
        let recovered = loaded.recovered;
        let (applied, membership) = match &recovered.applied {
            Some(v) => {
                let a: AppliedState = serde_json::from_slice(v).map_err(read_err)?;
                (a.applied, a.membership)
            }
            None => (None, StoredMembership::default()),
        };
        let checkpoints = crate::raft::checkpoint_thread(
            &loaded.dir,
            loaded.stats.clone(),
            loaded.health.clone(),
            holder.clone(),
        )
        .map_err(write_err)?;
        Ok(StateMachine {
            spec: spec.clone(),
            state: Arc::new(RwLock::new(recovered.state)),
            decider: Decider::new(spec),
            events: loaded.events,
            dir: loaded.dir,
            applied,
            membership,
            frozen: Arc::default(),
            recent: Recent::of(recovered.window),
            stats: loaded.stats,
            snapshot_every: loaded.snapshot_every,
            checkpoints,
            health: loaded.health,
            feed: loaded.feed,
            changes: Vec::new(),
            listened: false,
            holder,
        })
    }

    /// The log id it has applied up to.
    pub fn applied(&self) -> Option<LogId<u64>> {
        self.applied
    }

    /// The event log it writes.
    pub fn events(&self) -> Arc<Mutex<Wal>> {
        self.events.clone()
    }

    /// Its checkpoint thread (see `raft::checkpoint`).
    pub fn checkpoints(&self) -> std::sync::mpsc::Sender<crate::raft::Checkpoint> {
        self.checkpoints.clone()
    }

    /// The store's counters and histograms.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Its write health (see `domain::health`).
    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    /// The state reads are served from.
    pub fn state(&self) -> Arc<RwLock<State>> {
        self.state.clone()
    }

    /// The answer to a command accepted before: its event, read back from the log (or
    /// from this very `apply`, when the batch is not written yet).
    fn answer_again(
        &self,
        seq: u64,
        earlier: &[Answers],
        now: &[Applied],
    ) -> Result<Applied, StorageError<u64>> {
        let held = {
            let log = crate::raft::lock_events(&self.events);
            let first = log.read(seq).map_err(read_err)?;
            match first {
                None => None,
                Some(bytes) => {
                    let ev: crate::domain::event::Event =
                        serde_json::from_slice(&bytes).map_err(read_err)?;
                    match ev.transaction {
                        // A transaction is answered with all its events.
                        Some(t) if t.id == ev.event_id => {
                            let mut events = vec![ev];
                            for next in seq + 1..seq + u64::from(t.writes) {
                                let bytes = log.read(next).map_err(read_err)?.ok_or_else(|| {
                                    read_err(format!("event {next} of a transaction is missing"))
                                })?;
                                events.push(serde_json::from_slice(&bytes).map_err(read_err)?);
                            }
                            Some(Applied::Together(events))
                        }
                        _ => Some(Applied::Done(ev)),
                    }
                }
            }
        };
        if let Some(applied) = held {
            return Ok(applied);
        }
        let found = earlier
            .iter()
            .flatten()
            .chain(now)
            .find(|a| match a {
                Applied::Done(ev) => ev.sequence_number == seq,
                Applied::Together(events) => {
                    events.first().is_some_and(|ev| ev.sequence_number == seq)
                }
                _ => false,
            })
            .cloned();
        // Accepted before a snapshot this node installed, and not fetched yet: still
        // nothing to apply; the sender learns that it went through.
        Ok(found.unwrap_or_else(|| {
            Applied::Refused(Refused::Storage(format!(
                "this write was accepted already (event {seq}); read the record to see it"
            )))
        }))
    }

    fn applied_bytes(&self, last_seq: u64) -> Result<Vec<u8>, StorageError<u64>> {
        serde_json::to_vec(&AppliedState {
            applied: self.applied,
            membership: self.membership.clone(),
            last_seq,
        })
        .map_err(write_err)
    }

    /// Makes a decided event part of the state: into the entry's writes to the event
    /// log, the feed's changes (while it has listeners), the state, and the window of
    /// recent events.
    fn publish(
        &mut self,
        state: &mut State,
        ev: &crate::domain::event::Event,
        record: Option<Arc<crate::domain::row::Stored>>,
        writes: &mut Vec<(u64, Vec<u8>)>,
    ) -> Result<(), StorageError<u64>> {
        let seq = ev.sequence_number;
        writes.push((seq, serde_json::to_vec(ev).map_err(write_err)?));
        if self.listened {
            self.changes.push(Change {
                event: ev.clone(),
                record: record.clone(),
            });
        }
        state.publish(ev, record);
        self.recent.remember(seq, ev.event_id);
        Ok(())
    }

    /// Applies the commands of one batch; answers one per command.
    fn apply_batch(
        &mut self,
        state: &mut State,
        commands: Vec<crate::domain::decide::Stamped>,
        writes: &mut Vec<(u64, Vec<u8>)>,
        responses: &[Answers],
    ) -> Result<(Answers, u64), StorageError<u64>> {
        self.stats.batch_size.observe(commands.len() as f64);
        // The traced commands proposed on this node get an apply span under their raft
        // span (a command from another node's request has no recorder here).
        let traced: Vec<crate::telemetry::Traced> = commands
            .iter()
            .filter_map(|c| c.trace.clone().filter(|t| t.recorder.is_some()))
            .collect();
        let started = crate::clock::Instant::now();
        let applied = self.apply_commands(state, commands, writes, responses);
        let ended = crate::clock::Instant::now();
        self.stats
            .stages
            .record(crate::domain::Stage::Apply, ended - started);
        for t in traced {
            if let Some(r) = &t.recorder {
                r.child("apply", r.open().span_id, t.context.span_id, started, ended);
            }
        }
        applied
    }

    fn apply_commands(
        &mut self,
        state: &mut State,
        commands: Vec<crate::domain::decide::Stamped>,
        writes: &mut Vec<(u64, Vec<u8>)>,
        responses: &[Answers],
    ) -> Result<(Answers, u64), StorageError<u64>> {
        let mut answers = Vec::with_capacity(commands.len());
        let mut count = 0;
        for mut stamped in commands {
            if let Some(seq) = self.recent.by_id.get(&stamped.event_id).copied() {
                let again = self.answer_again(seq, responses, &answers)?;
                answers.push(again);
                continue;
            }
            if let Some(key) = &stamped.key {
                if let Some((seq, request)) = self.recent.by_key.get(&key.id).cloned() {
                    answers.push(if request == key.request {
                        self.answer_again(seq, responses, &answers)?
                    } else {
                        Applied::Refused(Refused::KeyReused)
                    });
                    continue;
                }
            }
            let key = stamped.key.clone();
            let seq = state.last_seq + 1;
            if matches!(stamped.command, Command::Together { .. }) {
                match self.decider.decide_together(state, &mut stamped, seq) {
                    Ok(decided) => {
                        let mut events = Vec::with_capacity(decided.len());
                        for (ev, record) in decided {
                            self.publish(state, &ev, record, writes)?;
                            events.push(ev);
                        }
                        count += events.len() as u64;
                        if let Some(key) = key {
                            self.recent.remember_key(seq, key);
                        }
                        answers.push(Applied::Together(events));
                    }
                    Err(refused) => answers.push(Applied::Refused(refused)),
                }
                continue;
            }
            let mut overlay = Overlay::default();
            match self.decider.decide(state, &mut overlay, &mut stamped, seq) {
                Ok((ev, record)) => {
                    self.publish(state, &ev, record, writes)?;
                    answers.push(Applied::Done(ev));
                    count += 1;
                    if let Some(key) = key {
                        self.recent.remember_key(seq, key);
                    }
                }
                Err(refused) => answers.push(Applied::Refused(refused)),
            }
        }
        Ok((answers, count))
    }
}

/// Builds an openraft snapshot: freezes the state as of the last applied entry.
pub struct Builder {
    frozen: Frozen,
    slot: Arc<Mutex<Option<Frozen>>>,
    _holder: Arc<()>,
}

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(self.frozen.clone());
        tracing::debug!(snapshot = %self.frozen.meta.snapshot_id, "snapshot built");
        // openraft 0.9 keeps only the meta of a built snapshot; the bytes are produced by
        // `get_current_snapshot` when a follower needs them.
        Ok(Snapshot {
            meta: self.frozen.meta.clone(),
            snapshot: Box::new(Cursor::new(Vec::new())),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Builder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError<u64>> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Answers>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        // After a storage fault nothing more is applied: the error stops the Raft core, so
        // this node acknowledges no write until it is restarted.
        if let Some(f) = self.health.fault() {
            return Err(write_err(format!("this node stopped writing: {}", f.what)));
        }
        let mut responses = Vec::new();
        let mut writes = Vec::new();
        let mut count = 0;
        // The entries are committed (durable in the Raft log): readers may see their
        // effects before the event log has them.
        let (last_seq, image) = {
            let state_lock = self.state.clone();
            let mut state = state_lock.write().unwrap_or_else(|p| p.into_inner());
            // Under the state's lock: a feed reader that subscribes after this reads the
            // state's last sequence after these events, and takes them from the log.
            self.listened = self.feed.listened();
            for entry in entries {
                self.applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => responses.push(Vec::new()),
                    EntryPayload::Membership(m) => {
                        self.membership = StoredMembership::new(Some(entry.log_id), m);
                        responses.push(Vec::new());
                    }
                    EntryPayload::Normal(Batch(commands)) => {
                        // The log's cache may still share the commands: copy them then.
                        let commands =
                            Arc::try_unwrap(commands).unwrap_or_else(|shared| (*shared).clone());
                        let (answers, n) =
                            self.apply_batch(&mut state, commands, &mut writes, &responses)?;
                        count += n;
                        responses.push(answers);
                    }
                }
            }
            let image = if count > 0 && state.snapshot_due(&self.snapshot_every) {
                state.mark_snapshot();
                Some(Image::of(
                    &state,
                    self.applied_bytes(state.last_seq)?,
                    self.recent.export(),
                ))
            } else {
                None
            };
            (state.last_seq, image)
        };
        // The events go to the log now (the page cache); the checkpoint thread syncs them
        // and then records the applied state, off the apply path. A crash before that
        // applies the same entries again from the Raft log, identically.
        let syncer = {
            let mut log = crate::raft::lock_events(&self.events);
            if let Err(e) = log.append(&writes) {
                self.health.fail("appending to the event log", &e);
                return Err(write_err(e));
            }
            log.syncer()
        };
        // In the log now: the feed's readers may be sent them.
        if !self.changes.is_empty() {
            self.feed.publish(std::mem::take(&mut self.changes));
        }
        let checkpoint = crate::raft::Checkpoint::Applied {
            state: self.applied_bytes(last_seq)?,
            syncer,
        };
        if self.checkpoints.send(checkpoint).is_err() {
            return Err(write_err("the checkpoint thread stopped"));
        }
        if count > 0 {
            use std::sync::atomic::Ordering;
            self.stats.batches.fetch_add(1, Ordering::Relaxed);
            self.stats.events.fetch_add(count, Ordering::Relaxed);
        }
        // After the events: a snapshot never stands ahead of the events it summarises.
        if let Some(image) = image {
            if self
                .checkpoints
                .send(crate::raft::Checkpoint::Snapshot(image))
                .is_err()
            {
                tracing::error!("the snapshot writer stopped");
            }
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let snapshot_id = match self.applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, state.last_seq),
            None => format!("empty-{}", state.last_seq),
        };
        let meta = SnapshotMeta {
            last_log_id: self.applied,
            last_membership: self.membership.clone(),
            snapshot_id,
        };
        let applied = serde_json::to_vec(&AppliedState {
            applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            last_seq: state.last_seq,
        })
        .unwrap_or_default();
        Builder {
            frozen: Frozen {
                meta,
                image: Image::of(&state, applied, self.recent.export()),
            },
            slot: self.frozen.clone(),
            _holder: self.holder.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        // Snapshots of the old state still queued must not land on top of the new one.
        let (done, written) = tokio::sync::oneshot::channel();
        if self
            .checkpoints
            .send(crate::raft::Checkpoint::Barrier(done))
            .is_err()
            || written.await != Ok(true)
        {
            return Err(write_err(
                "the checkpoint before installing a snapshot failed",
            ));
        }
        let framed = snapshot.into_inner();
        let content = crate::wal::slot::unframe(&framed).map_err(read_err)?;
        let loaded = crate::domain::snapshot::decode(content, &self.spec, &Stats::default())
            .map_err(read_err)?;
        let carried: AppliedState = serde_json::from_slice(&loaded.applied).map_err(read_err)?;
        if carried.applied != meta.last_log_id {
            return Err(read_err(format!(
                "the snapshot's data stands at {:?}, its meta at {:?}",
                carried.applied, meta.last_log_id
            )));
        }
        let seq = loaded.state.last_seq;
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        let syncer = {
            // Under the event log's lock: the backfill task reads the log's start and
            // puts fetched events in front of it.
            let mut log = crate::raft::lock_events(&self.events);
            let installed = (|| {
                fail::fail_point!("snapshot-install", |_| Err(
                    "failpoint snapshot-install".to_string()
                ));
                // The new snapshot (with its applied state) is durable before the old
                // events go: a crash in between finds the new state and realigns the log
                // at start, never the old state without its events.
                self.dir
                    .slot("snapshot")
                    .write_framed(&framed)
                    .map_err(|e| e.to_string())?;
                // The event log continues after the snapshot.
                log.restart_at(seq + 1).map_err(|e| e.to_string())?;
                log.syncer().sync().map_err(|e| e.to_string())
            })();
            if let Err(e) = installed {
                self.health.fail("installing a Raft snapshot", &e);
                return Err(write_err(e));
            }
            log.syncer()
        };
        // The `applied` file follows (until it does, a start takes the snapshot's).
        let checkpoint = crate::raft::Checkpoint::Applied {
            state: self.applied_bytes(seq)?,
            syncer,
        };
        if self.checkpoints.send(checkpoint).is_err() {
            return Err(write_err("the checkpoint thread stopped"));
        }
        // The duplicate-detection window is the snapshot's, as on the node that built it.
        self.recent = Recent::of(loaded.window);
        *self.frozen.lock().unwrap_or_else(|p| p.into_inner()) = Some(Frozen {
            meta: meta.clone(),
            image: Image::of(&loaded.state, loaded.applied, self.recent.export()),
        });
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = loaded.state;
        tracing::info!(snapshot = %meta.snapshot_id, sequence = seq, "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        let frozen = self
            .frozen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        frozen.map(|f| f.snapshot()).transpose()
    }
}
