//! The data dir of a node: its two logs and its few files, all on the file seam of
//! `wal::disk`, held by one process at a time.
//!
//! ```text
//! LOCK        held (flock) while a process uses the data dir
//! node        identity and format: format, created_by, node_id, cluster_id (JSON)
//! raft-state  the Raft vote, committed id and purge point (JSON)
//! applied     the state machine's applied state: log id, membership, last event (JSON)
//! snapshot    every record as of one event, compact (see `domain::snapshot`)
//! raft-log/   the Raft log (a write-ahead log: segment files, each finished one with its
//!             index file)
//! events/     the event log (a write-ahead log, the same way)
//! ```
//!
//! The four files are slots (`wal::slot`): each replaced whole, atomically and durably.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::domain::event::FORMAT;
use crate::wal::disk::{Disk, OsDisk};
use crate::wal::slot::Slot;
use crate::wal::{Wal, WalError, SEGMENT_BYTES};

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

/// What the `node` file holds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The format the data dir was written in (the events carry theirs too).
    pub format: u32,
    /// The runtime that created it.
    #[serde(default)]
    pub created_by: String,
    /// The node id it belongs to, once a node started on it.
    #[serde(default)]
    pub node_id: Option<u64>,
    /// The cluster it belongs to, once known (see `raft::identity`).
    #[serde(default)]
    pub cluster_id: Option<String>,
}

/// An open data dir.
pub struct DataDir {
    disk: Arc<dyn Disk>,
    path: PathBuf,
    segment_bytes: u64,
    node: Slot,
    info: Mutex<NodeInfo>,
    /// The `LOCK` file, locked while this is open (none on a simulated disk).
    _lock: Option<std::fs::File>,
}

impl std::fmt::Debug for DataDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataDir").field("path", &self.path).finish()
    }
}

impl DataDir {
    /// Opens (or creates) the data dir at `path` on the real file system, and locks it.
    pub fn open(path: &Path) -> Result<DataDir, OpenError> {
        let shown = path.display().to_string();
        let io = |e: std::io::Error| OpenError::Io {
            path: shown.clone(),
            message: e.to_string(),
        };
        if !path.exists() {
            std::fs::create_dir_all(path).map_err(io)?;
            // The new folder's entry is durable before anything is written in it.
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                OsDisk.sync_dir(parent).map_err(io)?;
            }
        }
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.join("LOCK"))
            .map_err(io)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(OpenError::Io {
                    path: shown,
                    message: "another process is using this data dir".into(),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        Self::open_on(Arc::new(OsDisk), path, SEGMENT_BYTES, Some(lock))
    }

    /// Opens (or creates) the data dir at `path` on `disk`, its logs starting a segment
    /// every `segment_bytes`.
    pub(crate) fn open_on(
        disk: Arc<dyn Disk>,
        path: &Path,
        segment_bytes: u64,
        lock: Option<std::fs::File>,
    ) -> Result<DataDir, OpenError> {
        let shown = path.display().to_string();
        let io = |e: std::io::Error| OpenError::Io {
            path: shown.clone(),
            message: e.to_string(),
        };
        disk.create_dir_all(path).map_err(io)?;
        let node = Slot::new(disk.clone(), path, "node");
        let stored = node.read().map_err(|e| OpenError::Corrupt {
            path: shown.clone(),
            what: e.to_string(),
        })?;
        let info = match stored {
            Some(bytes) => {
                let info: NodeInfo =
                    serde_json::from_slice(&bytes).map_err(|e| OpenError::Corrupt {
                        path: shown.clone(),
                        what: format!("the node file cannot be read ({e})"),
                    })?;
                if info.format > FORMAT {
                    return Err(OpenError::NewerFormat {
                        path: shown,
                        found: info.format,
                    });
                }
                info
            }
            None => {
                if disk.list(path).map_err(io)?.iter().any(|n| n == "store") {
                    return Err(OpenError::OlderFormat { path: shown });
                }
                let info = NodeInfo {
                    format: FORMAT,
                    created_by: format!("lithair-runtime {}", env!("CARGO_PKG_VERSION")),
                    node_id: None,
                    cluster_id: None,
                };
                let bytes = serde_json::to_vec(&info).map_err(|e| OpenError::Io {
                    path: shown.clone(),
                    message: e.to_string(),
                })?;
                node.write(&bytes).map_err(io)?;
                info
            }
        };
        Ok(DataDir {
            disk,
            path: path.to_path_buf(),
            segment_bytes,
            node,
            info: Mutex::new(info),
            _lock: lock,
        })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file `name` of the data dir (see the module doc).
    pub fn slot(&self, name: &str) -> Slot {
        Slot::new(self.disk.clone(), &self.path, name)
    }

    /// Opens (or creates) the log in the folder `name`.
    pub fn wal(&self, name: &str) -> Result<Wal, WalError> {
        let wal = Wal::open_on(self.disk.clone(), &self.path.join(name), self.segment_bytes)?;
        // The folder's entry in the data dir is durable before anything in it counts.
        self.disk
            .sync_dir(&self.path)
            .map_err(|source| WalError::Io {
                path: self.path.display().to_string(),
                source,
            })?;
        Ok(wal)
    }

    /// What the `node` file says.
    pub fn node_info(&self) -> NodeInfo {
        self.info.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Changes the `node` file, durably.
    pub fn update_node_info(&self, change: impl FnOnce(&mut NodeInfo)) -> std::io::Result<()> {
        let mut info = self.info.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = info.clone();
        change(&mut next);
        let bytes = serde_json::to_vec(&next).map_err(std::io::Error::other)?;
        self.node.write(&bytes)?;
        *info = next;
        Ok(())
    }
}
