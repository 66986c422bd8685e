//! Raft consensus with openraft 0.9, and the store's I/O around it: the data dir
//! (`data_dir.rs`), the Raft log store (`log_store.rs`, on the logs and slots of
//! [`crate::wal`]), the state machine with its recovery (`recover.rs`) and checkpoint
//! thread (`checkpoint.rs`), the network over HTTP under `/_raft/*` (`network.rs`), the
//! data dir's identity (`identity.rs`), the node that ties them together (`node.rs`),
//! and what the rest of the runtime asks of it (`api.rs`: status, readiness, membership,
//! the messages peers send).
//!
//! Every write of a service goes through here; a node without `--peers` is a cluster of
//! one. The storage is proven with `openraft::testing::Suite` (see
//! `tests/raft_storage.rs`). The state machine applies stamped commands through the
//! store's [`Decider`](crate::domain::decide::Decider), so every replica decides alike.

// openraft's trait methods return its `StorageError`, which is large; our helpers return
// the same type so that `?` works across them.
#![allow(clippy::result_large_err)]

pub mod api;
mod backfill;
mod checkpoint;
pub mod data_dir;
pub mod identity;
pub mod log_store;
pub mod network;
pub mod node;
mod recover;
pub mod state_machine;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::domain::decide::Stamped;
use crate::domain::event::Event;
use crate::domain::health::Health;
use crate::domain::{Refused, Stats};
use crate::spec::ServiceSpec;
use crate::wal::Wal;
use data_dir::DataDir;

pub(crate) use checkpoint::checkpoint_thread;
pub use checkpoint::Checkpoint;
pub(crate) use recover::{load_state, open_events, Recovered};

/// The payload of a normal log entry: the commands that reached the leader together.
///
/// Proposals are batched before they enter the log, so a burst of concurrent writes costs
/// one entry (one append, one replication round, one flush) instead of one each.
///
/// The commands are shared (`Arc`): openraft clones entries between the log, the
/// replication streams and the state machine, and a clone must not copy every record.
#[derive(Clone, Debug)]
pub struct Batch(pub Arc<Vec<Stamped>>);

impl Batch {
    /// A batch of `commands`.
    pub fn new(commands: Vec<Stamped>) -> Self {
        Batch(Arc::new(commands))
    }
}

impl Serialize for Batch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.as_slice().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Batch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<Stamped>::deserialize(d).map(Batch::new)
    }
}

/// What applying one log entry answered: one answer per command of its batch.
pub type Answers = Vec<Applied>;

/// What applying one command answered.
// Most answers are `Done`: boxing the event would cost an allocation per write.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Applied {
    /// The command was accepted: its event.
    Done(Event),
    /// A transaction (`Command::Together`) was accepted: its events, in order.
    Together(Vec<Event>),
    /// The command was refused (unique value taken, stale version, missing ref…).
    Refused(Refused),
    /// A blank or membership entry.
    Nothing,
}

openraft::declare_raft_types!(
    /// The Raft types of a lithair service.
    pub TypeConfig:
        D = Batch,
        R = Answers,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// Which storage operation failed.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Io {
    Write,
    ReadLogs,
    WriteLogs,
    WriteVote,
    ReadStateMachine,
    WriteStateMachine,
}

/// A storage error of openraft for an I/O failure of ours.
pub(crate) fn io_error(kind: Io, e: impl std::fmt::Display) -> openraft::StorageError<u64> {
    use openraft::StorageIOError as E;
    let io = std::io::Error::other(e.to_string());
    let err: E<u64> = match kind {
        Io::Write => E::write(&io),
        Io::ReadLogs => E::read_logs(&io),
        Io::WriteLogs => E::write_logs(&io),
        Io::WriteVote => E::write_vote(&io),
        Io::ReadStateMachine => E::read_state_machine(&io),
        Io::WriteStateMachine => E::write_state_machine(&io),
    };
    err.into()
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
    pub health: Arc<Health>,
    /// Where applied events go for the change feed.
    pub feed: Arc<crate::store::feed::Feed>,
}
