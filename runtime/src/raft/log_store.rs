//! The Raft log in a write-ahead log of its own (see `crate::wal`; folder `raft-log` in the
//! data dir), and the vote, committed id and purge point in the data dir's `raft-state`
//! file (replaced whole and atomically, see `wal::slot`).
//!
//! `append` answers through openraft's `LogFlushed` callback only once the entries are
//! durable as the `sync` setting says (`always`: one `fdatasync` of the log for every group
//! of appends waiting; `periodic`: a task syncs every `flush_interval`; `never`: left to
//! the operating system). Acknowledging earlier could lose committed entries when a
//! majority crashes. The vote is always made durable before `save_vote` returns; the
//! committed id is written with it and with the purge point (openraft needs it only as a
//! hint).
//!
//! The state machine's files are not synced per write: the log is what makes a write
//! durable, and anything they lost in a crash is applied again from it. Before purged
//! entries leave the disk, the state machine's checkpoint covers them and the purge point
//! is durable, so a purged entry is always in the event log.
//!
//! A failed write or sync of the log or of `raft-state` is a storage fault
//! (`domain::health`): no sync is tried again, and the node takes no write until restarted.
//! At open, a purge point past the state machine's applied state (a snapshot install that
//! did not finish) is taken back to it.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, RaftLogReader, StorageError, Vote};
use serde::{Deserialize, Serialize};

use super::state_machine::StateMachine;
use super::{io_error, Io, TypeConfig};
use crate::config::SyncMode;
use crate::domain::health::Health;
use crate::raft::data_dir::DataDir;
use crate::wal::slot::{Slot, SlotError};
use crate::wal::{Wal, WalError};

/// What the `raft-state` file holds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RaftState {
    /// The vote.
    pub vote: Option<Vote<u64>>,
    /// The last entry known committed, when this was written.
    pub committed: Option<LogId<u64>>,
    /// The last entry purged.
    pub last_purged: Option<LogId<u64>>,
}

/// How the Raft log is made durable (`[storage] sync`, `flush_interval_ms`).
#[derive(Clone, Copy, Debug)]
pub struct Durability {
    /// When appends are synced.
    pub sync: SyncMode,
    /// For periodic sync: how often.
    pub flush_interval: Duration,
}

impl RaftState {
    /// Reads the `raft-state` file of `dir` (defaults when it was never written).
    pub fn load(dir: &DataDir) -> Result<RaftState, SlotError> {
        let slot = dir.slot("raft-state");
        match slot.read()? {
            None => Ok(RaftState::default()),
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|source| SlotError::Unparsable {
                path: slot.path().display().to_string(),
                source,
            }),
        }
    }
}

/// The `raft-state` file and what it holds in memory (newer than the file between
/// writes: the committed id, and a purge point until its segments go).
struct Persisted {
    slot: Slot,
    now: Mutex<RaftState>,
    /// Held while the file is written, so that writes land in order.
    writing: Mutex<()>,
}

/// The log store; cheap to clone (shared handles).
#[derive(Clone)]
pub struct LogStore {
    state: Arc<Persisted>,
    wal: Arc<Mutex<Wal>>,
    /// The state machine's checkpoint thread, waited for before the log is purged.
    checkpoints: std::sync::mpsc::Sender<crate::raft::Checkpoint>,
    sync: SyncMode,
    /// Appends waiting for the next flush (group commit); see [`LogStore::open`].
    flushes: tokio::sync::mpsc::UnboundedSender<LogFlushed<TypeConfig>>,
    /// The newest entries, as appended: applying and replicating them reads them from
    /// here instead of decoding them again. Always a contiguous tail of the log.
    tail: Arc<Mutex<BTreeMap<u64, Entry<TypeConfig>>>>,
    /// Whether this node may still write (see `domain::health`).
    health: Arc<Health>,
    /// Counts the holders of the data dir (see `Cluster::shutdown`).
    _holder: Arc<()>,
}

/// How many of the newest entries [`LogStore`] keeps in memory.
const TAIL: usize = 512;

/// Why the log store cannot open.
#[derive(Debug, thiserror::Error)]
pub enum LogOpenError {
    /// The `raft-state` file is unusable.
    #[error("{0}")]
    State(#[from] SlotError),
    /// The file system refused.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The write-ahead log is unusable.
    #[error("{0}")]
    Wal(#[from] WalError),
    /// The log does not continue from the purge point.
    #[error("the Raft log in {dir} starts at entry {first}, but entries up to {purged} only were purged: entries are missing. Refusing to start")]
    Missing {
        /// The log's folder.
        dir: String,
        /// First entry held.
        first: u64,
        /// Last entry purged.
        purged: u64,
    },
}

fn wal_io(kind: Io) -> impl Fn(WalError) -> StorageError<u64> {
    move |e| io_error(kind, e)
}

impl LogStore {
    /// Opens the log store of the data dir `dir`: the vote and purge point in its
    /// `raft-state` file, the log in its folder `raft-log`. `applied` is what the state
    /// machine has applied.
    ///
    /// With `sync = "always"`, appends are acknowledged by a flusher task: it takes every
    /// append waiting, makes them durable with one `fdatasync`, then answers them all.
    /// openraft keeps appending meanwhile, so concurrent client writes share a flush.
    /// Must be called within a tokio runtime.
    pub fn open(
        dir: &DataDir,
        durability: Durability,
        state_machine: &StateMachine,
        holder: Arc<()>,
    ) -> Result<Self, LogOpenError> {
        let events = state_machine.events();
        let checkpoints = state_machine.checkpoints();
        let applied = state_machine.applied();
        let health = state_machine.health();
        let Durability {
            sync,
            flush_interval,
        } = durability;
        let slot = dir.slot("raft-state");
        let mut raft_state = RaftState::load(dir)?;
        let wal_dir = dir.path().join("raft-log");
        let mut wal = dir.wal("raft-log")?;
        wal.observe_syncs(state_machine.stats().fsync.clone());
        let mut purged = raft_state.last_purged;
        // The purge point never passes the state machine's applied state: a node that
        // stopped between purging its log for a snapshot and installing it (a failed
        // install) still holds the entries (segments leave the disk only once a
        // checkpoint covers them), and takes the purge point back to what it applied.
        if let Some(p) = purged.filter(|p| applied.is_none_or(|a| a.index < p.index)) {
            let from = applied.map_or(1, |a| a.index + 1);
            if wal.first_index().is_some_and(|f| f > from) {
                return Err(LogOpenError::Missing {
                    dir: wal_dir.display().to_string(),
                    first: wal.first_index().unwrap_or(0),
                    purged: from - 1,
                });
            }
            tracing::warn!(
                purged = p.index,
                applied = from - 1,
                "the log was purged past the applied state (a snapshot install did not finish); the purge point goes back"
            );
            raft_state.last_purged = applied;
            let bytes = serde_json::to_vec(&raft_state).map_err(std::io::Error::other)?;
            slot.write(&bytes)?;
            purged = applied;
        }
        if let (Some(first), Some(purged)) = (wal.first_index(), purged) {
            if first > purged.index + 1 {
                return Err(LogOpenError::Missing {
                    dir: wal_dir.display().to_string(),
                    first,
                    purged: purged.index,
                });
            }
        }
        let wal = Arc::new(Mutex::new(wal));
        let (flushes, mut waiting) =
            tokio::sync::mpsc::unbounded_channel::<LogFlushed<TypeConfig>>();
        let (fwal, fholder, fhealth) = (wal.clone(), holder.clone(), health.clone());
        tokio::spawn(async move {
            let _holder = fholder;
            while let Some(first) = waiting.recv().await {
                let mut batch = vec![first];
                while let Ok(more) = waiting.try_recv() {
                    batch.push(more);
                }
                // Every append of the batch was written before its callback was sent.
                // After a failed sync none is tried again: the pages it was to write may
                // be gone, and a second sync could succeed without them.
                let result = match fhealth.fault() {
                    Some(f) => Err(std::io::Error::other(f.what.clone())),
                    None => {
                        let syncer = lock(&fwal).syncer();
                        let r = tokio::task::spawn_blocking(move || syncer.sync())
                            .await
                            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
                        if let Err(e) = &r {
                            fhealth.fail("syncing the Raft log", e);
                        }
                        r
                    }
                };
                for callback in batch {
                    let r = match &result {
                        Ok(()) => Ok(()),
                        Err(e) => Err(std::io::Error::other(e.to_string())),
                    };
                    callback.log_io_completed(r);
                }
            }
        });
        if sync == SyncMode::Periodic {
            let (pwal, pevents, pholder, phealth) = (
                Arc::downgrade(&wal),
                Arc::downgrade(&events),
                holder.clone(),
                health.clone(),
            );
            tokio::spawn(async move {
                let _holder = pholder;
                let mut every = tokio::time::interval(flush_interval);
                loop {
                    every.tick().await;
                    // Ends when the log store is gone.
                    let (Some(wal), Some(events)) = (pwal.upgrade(), pevents.upgrade()) else {
                        break;
                    };
                    let syncers = [lock(&wal).syncer(), lock(&events).syncer()];
                    drop((wal, events));
                    let synced = tokio::task::spawn_blocking(move || {
                        syncers.iter().try_for_each(|s| s.sync())
                    })
                    .await;
                    if let Ok(Err(e)) = synced {
                        phealth.fail("the periodic sync of the logs", e);
                        break;
                    }
                }
            });
        }
        Ok(LogStore {
            state: Arc::new(Persisted {
                slot,
                now: Mutex::new(raft_state),
                writing: Mutex::new(()),
            }),
            wal,
            checkpoints,
            sync,
            flushes,
            tail: Arc::default(),
            health,
            _holder: holder,
        })
    }

    fn tail(&self) -> MutexGuard<'_, BTreeMap<u64, Entry<TypeConfig>>> {
        self.tail.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What the `raft-state` file is to hold, in memory.
    fn raft_state(&self) -> MutexGuard<'_, RaftState> {
        self.state.now.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the `raft-state` file with what it holds in memory now, durably; `what`
    /// names the change for a fault, `kind` for openraft.
    async fn persist(&self, what: &str, kind: Io) -> Result<(), StorageError<u64>> {
        if let Some(f) = self.health.fault() {
            return Err(io_error(kind, &f.what));
        }
        let state = self.state.clone();
        let written = tokio::task::spawn_blocking(move || {
            let _turn = state.writing.lock().unwrap_or_else(|p| p.into_inner());
            let now = state.now.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let bytes = serde_json::to_vec(&now).map_err(std::io::Error::other)?;
            state.slot.write(&bytes)
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
        if let Err(e) = written {
            self.health
                .fail(&format!("writing the Raft state ({what})"), &e);
            return Err(io_error(kind, e));
        }
        Ok(())
    }

    /// Entry `index`, decoded from the log.
    fn read_entry(&self, index: u64) -> Result<Option<Entry<TypeConfig>>, StorageError<u64>> {
        let bytes = lock(&self.wal).read(index).map_err(wal_io(Io::ReadLogs))?;
        bytes
            .map(|b| serde_json::from_slice(&b).map_err(|e| io_error(Io::ReadLogs, e)))
            .transpose()
    }
}

fn lock(wal: &Mutex<Wal>) -> MutexGuard<'_, Wal> {
    wal.lock().unwrap_or_else(|p| p.into_inner())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<u64>> {
        let start = match range.start_bound() {
            std::ops::Bound::Included(s) => *s,
            std::ops::Bound::Excluded(s) => s.saturating_add(1),
            std::ops::Bound::Unbounded => 0,
        };
        {
            let tail = self.tail();
            if tail
                .first_key_value()
                .is_some_and(|(first, _)| *first <= start)
            {
                return Ok(tail
                    .range(start..)
                    .take_while(|(index, _)| range.contains(*index))
                    .map(|(_, e)| e.clone())
                    .collect());
            }
        }
        let (first, last) = {
            let wal = lock(&self.wal);
            (wal.first_index(), wal.last_index())
        };
        let (Some(first), Some(last)) = (first, last) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for index in start.max(first)..=last {
            if !range.contains(&index) {
                break;
            }
            match self.read_entry(index)? {
                Some(e) => out.push(e),
                None => break,
            }
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        let last_purged = self.raft_state().last_purged;
        let newest = self.tail().last_key_value().map(|(_, e)| e.log_id);
        let last = match newest {
            Some(id) => Some(id),
            None => {
                let last = lock(&self.wal).last_index();
                match last {
                    Some(index) if last_purged.is_none_or(|p| index > p.index) => {
                        self.read_entry(index)?.map(|e| e.log_id)
                    }
                    _ => last_purged,
                }
            }
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        self.raft_state().vote = Some(*vote);
        // A vote must never be forgotten, whatever the sync setting.
        self.persist("the vote", Io::WriteVote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        Ok(self.raft_state().vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<u64>>,
    ) -> Result<(), StorageError<u64>> {
        // Kept in memory; written with the next vote or purge point.
        self.raft_state().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        Ok(self.raft_state().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut encoded = Vec::new();
        let mut appended = Vec::new();
        for e in entries {
            let bytes = serde_json::to_vec(&e).map_err(|err| io_error(Io::WriteLogs, err))?;
            encoded.push((e.log_id.index, bytes));
            appended.push(e);
        }
        if let Some(f) = self.health.fault() {
            return Err(io_error(Io::WriteLogs, &f.what));
        }
        // One write at the end of the active segment (page cache; the sync comes later).
        let written = lock(&self.wal).append(&encoded);
        if let Err(e) = written {
            self.health.fail("appending to the Raft log", &e);
            return Err(io_error(Io::WriteLogs, e));
        }
        {
            let mut tail = self.tail();
            for e in appended {
                tail.insert(e.log_id.index, e);
            }
            while tail.len() > TAIL {
                tail.pop_first();
            }
        }
        match self.sync {
            // Answered by the flusher once durable, together with the appends around it.
            SyncMode::Always => {
                if let Err(tokio::sync::mpsc::error::SendError(callback)) =
                    self.flushes.send(callback)
                {
                    callback
                        .log_io_completed(Err(std::io::Error::other("the log flusher stopped")));
                }
            }
            // periodic / never: the user chose to acknowledge before the disk has it.
            SyncMode::Periodic | SyncMode::Never => callback.log_io_completed(Ok(())),
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        self.tail().retain(|index, _| *index < log_id.index);
        let wal = self.wal.clone();
        let done = tokio::task::spawn_blocking(move || lock(&wal).truncate(log_id.index))
            .await
            .map_err(|e| io_error(Io::WriteLogs, e))?;
        if let Err(e) = &done {
            self.health.fail("truncating the Raft log", e);
        }
        done.map_err(wal_io(Io::WriteLogs))
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        // Logically purged now; the entries leave the disk in the background, once the
        // state machine's checkpoint covers them and the purge point is durable: a crash
        // in between leaves extra entries, never a hole. Raft does not wait for it.
        self.raft_state().last_purged = Some(log_id);
        self.tail().retain(|index, _| *index > log_id.index);
        lock(&self.wal).forget(log_id.index);
        let store = self.clone();
        tokio::spawn(async move {
            let (done, checkpointed) = tokio::sync::oneshot::channel();
            let barrier = crate::raft::Checkpoint::Barrier(done);
            if store.checkpoints.send(barrier).is_err() || checkpointed.await != Ok(true) {
                // The state machine stopped, or its checkpoint failed: keep the entries.
                return;
            }
            if store.persist("the purge point", Io::Write).await.is_err() {
                tracing::error!("cannot record the purge point; the log is kept");
                return;
            }
            let wal = store.wal.clone();
            let removed =
                tokio::task::spawn_blocking(move || lock(&wal).remove_segments(log_id.index));
            match removed.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "cannot remove purged log segments"),
                Err(e) => tracing::error!(error = %e, "cannot remove purged log segments"),
            }
        });
        Ok(())
    }
}
