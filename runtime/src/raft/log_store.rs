//! The Raft log and vote on sled (`raft_log`: index -> entry; `raft_meta`: vote,
//! committed, last purged).
//!
//! `append` answers through openraft's `LogFlushed` callback only once the entries are
//! durable as the `sync` setting says (`always`: sled flush plus `fdatasync` of sled's log
//! file); acknowledging earlier could lose committed entries when a majority crashes. The
//! vote is always made durable before `save_vote` returns.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::File;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, RaftLogReader, StorageError, Vote};

use super::{io_error, Io, TypeConfig};
use crate::config::SyncMode;

/// The log store; cheap to clone (sled handles).
#[derive(Clone)]
pub struct LogStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    sync: SyncMode,
    log_file: Option<Arc<File>>,
    /// Appends waiting for the next flush (group commit); see [`LogStore::open`].
    flushes: tokio::sync::mpsc::UnboundedSender<LogFlushed<TypeConfig>>,
    /// The newest entries, as appended: applying and replicating them reads them from
    /// here instead of decoding them again from sled. Always a contiguous tail of the log.
    tail: Arc<Mutex<BTreeMap<u64, Entry<TypeConfig>>>>,
}

/// How many of the newest entries [`LogStore`] keeps in memory.
const TAIL: usize = 512;

impl LogStore {
    /// Opens the log store of the sled database `db` (whose folder is `dir`).
    ///
    /// With `sync = "always"`, appends are acknowledged by a flusher task: it takes every
    /// append waiting, makes them durable with one sled flush and one `fdatasync`, then
    /// answers them all. openraft keeps appending meanwhile, so concurrent client writes
    /// share a flush, as in the single-node store. Must be called within a tokio runtime.
    pub fn open(db: sled::Db, dir: &Path, sync: SyncMode) -> Result<Self, sled::Error> {
        let log = db.open_tree("raft_log")?;
        let meta = db.open_tree("raft_meta")?;
        let log_file = File::open(dir.join("db")).ok().map(Arc::new);
        let (flushes, mut waiting) =
            tokio::sync::mpsc::unbounded_channel::<LogFlushed<TypeConfig>>();
        let (fdb, ffile) = (db.clone(), log_file.clone());
        tokio::spawn(async move {
            while let Some(first) = waiting.recv().await {
                let mut batch = vec![first];
                while let Ok(more) = waiting.try_recv() {
                    batch.push(more);
                }
                let (db, file) = (fdb.clone(), ffile.clone());
                let result = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                    db.flush().map_err(std::io::Error::other)?;
                    if let Some(f) = file {
                        f.sync_data()?;
                    }
                    Ok(())
                })
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)));
                for callback in batch {
                    let r = match &result {
                        Ok(()) => Ok(()),
                        Err(e) => Err(std::io::Error::other(e.to_string())),
                    };
                    callback.log_io_completed(r);
                }
            }
        });
        Ok(LogStore {
            db,
            log,
            meta,
            sync,
            log_file,
            flushes,
            tail: Arc::default(),
        })
    }

    fn tail(&self) -> MutexGuard<'_, BTreeMap<u64, Entry<TypeConfig>>> {
        self.tail.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes everything written so far durable (sled flush, then fdatasync).
    async fn make_durable(&self) -> std::io::Result<()> {
        let db = self.db.clone();
        let file = self.log_file.clone();
        tokio::task::spawn_blocking(move || {
            db.flush().map_err(std::io::Error::other)?;
            if let Some(f) = file {
                f.sync_data()?;
            }
            Ok(())
        })
        .await
        .map_err(std::io::Error::other)?
    }

    fn get_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, StorageError<u64>> {
        match self.meta.get(key).map_err(|e| io_error(Io::Read, e))? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| io_error(Io::Read, e)),
        }
    }

    /// Removes the entries an iterator over the log yields, in one batch.
    fn remove_entries(&self, entries: sled::Iter) -> Result<(), StorageError<u64>> {
        let mut batch = sled::Batch::default();
        for key in entries.keys() {
            batch.remove(key.map_err(|e| io_error(Io::WriteLogs, e))?);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| io_error(Io::WriteLogs, e))
    }

    fn put_meta<T: serde::Serialize>(&self, key: &str, value: &T) -> Result<(), StorageError<u64>> {
        let bytes = serde_json::to_vec(value).map_err(|e| io_error(Io::Write, e))?;
        self.meta
            .insert(key, bytes)
            .map_err(|e| io_error(Io::Write, e))?;
        Ok(())
    }
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
        let mut out = Vec::new();
        for item in self.log.range(start.to_be_bytes()..) {
            let (k, v) = item.map_err(|e| io_error(Io::ReadLogs, e))?;
            let index = <[u8; 8]>::try_from(k.as_ref())
                .map(u64::from_be_bytes)
                .unwrap_or(u64::MAX);
            if !range.contains(&index) {
                break;
            }
            out.push(serde_json::from_slice(&v).map_err(|e| io_error(Io::ReadLogs, e))?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        let last_purged: Option<LogId<u64>> = self.get_meta("last_purged")?;
        let last = match self.log.last().map_err(|e| io_error(Io::ReadLogs, e))? {
            Some((_, v)) => {
                let e: Entry<TypeConfig> =
                    serde_json::from_slice(&v).map_err(|e| io_error(Io::ReadLogs, e))?;
                Some(e.log_id)
            }
            None => last_purged,
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
        self.put_meta("vote", vote)?;
        // A vote must never be forgotten, whatever the sync setting.
        self.make_durable()
            .await
            .map_err(|e| io_error(Io::WriteVote, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        self.get_meta("vote")
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<u64>>,
    ) -> Result<(), StorageError<u64>> {
        self.put_meta("committed", &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        Ok(self.get_meta::<Option<LogId<u64>>>("committed")?.flatten())
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
        let mut batch = sled::Batch::default();
        let mut appended = Vec::new();
        for e in entries {
            let bytes = serde_json::to_vec(&e).map_err(|err| io_error(Io::WriteLogs, err))?;
            batch.insert(&e.log_id.index.to_be_bytes(), bytes);
            appended.push(e);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| io_error(Io::WriteLogs, e))?;
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
        self.remove_entries(self.log.range(log_id.index.to_be_bytes()..))
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        // Record the purge point first: a crash in between leaves extra entries, never a hole.
        self.put_meta("last_purged", &log_id)?;
        self.tail().retain(|index, _| *index > log_id.index);
        self.remove_entries(self.log.range(..=log_id.index.to_be_bytes()))
    }
}
