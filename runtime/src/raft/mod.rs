//! Raft consensus with openraft 0.9: the log storage (a write-ahead log, `wal.rs`, and a
//! small file replaced whole, `slot.rs`, both on the file seam of `disk.rs`) and the
//! state machine, the network over HTTP under
//! `/_raft/*`, the data dir's identity (`identity.rs`), and the node that ties them
//! together.
//!
//! Every write of a service goes through here; a node without `--peers` is a cluster of
//! one. The storage is proven with `openraft::testing::Suite` (see
//! `tests/raft_storage.rs`). The state machine applies stamped commands through the
//! store's [`Decider`](crate::store::decide::Decider), so every replica decides alike.

// openraft's trait methods return its `StorageError`, which is large; our helpers return
// the same type so that `?` works across them.
#![allow(clippy::result_large_err)]

mod backfill;
pub mod disk;
pub mod identity;
pub mod log_store;
pub mod network;
pub mod node;
pub mod slot;
pub mod state_machine;
pub mod wal;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::store::decide::Stamped;
use crate::store::event::Event;
use crate::store::Refused;

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
