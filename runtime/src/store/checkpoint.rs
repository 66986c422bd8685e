//! The checkpoint thread: off the apply path, it syncs the event log and only then
//! records the applied state, and writes the incremental snapshots, in order.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{health, snapshot, Stats, APPLIED};

/// Work for the checkpoint thread, done in the order it was sent.
pub enum Checkpoint {
    /// Sync the event log, then record the applied state (`meta`/[`APPLIED`]): the applied
    /// state on disk never covers an event that is not. Consecutive ones are coalesced.
    Applied {
        /// The applied state, encoded.
        state: Vec<u8>,
        /// What syncs the event log up to it.
        syncer: crate::raft::wal::Syncer,
    },
    /// Write this snapshot (sent after the `Applied` that covers its events).
    Snapshot(snapshot::Job),
    /// Answer once everything sent before is done: whether the applied state it
    /// recorded is on disk.
    Barrier(tokio::sync::oneshot::Sender<bool>),
    /// Forget the snapshots that could not be written: the state they came from was
    /// replaced (a Raft snapshot was installed).
    Discard,
}

/// Starts the checkpoint thread: it syncs the event log and records the applied state
/// off the apply path, and writes snapshots, in order. It ends when the sender is
/// dropped, after finishing what was sent; it holds `holder` (and the database) until
/// then.
///
/// Failures never shorten the replay of a restart:
/// - a failed sync of the event log or a failed write of the applied state is a
///   [`health::Fault`]: the sync is not retried (the kernel may have dropped the pages),
///   nothing is recorded any more, barriers answer false (so the Raft log is not purged)
///   and the state machine stops applying;
/// - a snapshot that could not be written is kept and merged into the model's next one,
///   so the next marker never stands for records that are not in the tree.
pub(crate) fn checkpoint_thread(
    db: &sled::Db,
    stats: Arc<Stats>,
    health: Arc<health::Health>,
    holder: Arc<()>,
) -> Result<std::sync::mpsc::Sender<Checkpoint>, String> {
    let tree = db.open_tree("state").map_err(|e| e.to_string())?;
    let meta = db.open_tree("meta").map_err(|e| e.to_string())?;
    let (tx, rx) = std::sync::mpsc::channel::<Checkpoint>();
    std::thread::Builder::new()
        .name("lithair-checkpoint".into())
        .spawn(move || {
            // Locals drop in reverse order: the trees (and so the database) go before the
            // holder that `Cluster::shutdown` counts.
            let _holder = holder;
            let (tree, meta) = (tree, meta);
            let mut pending: Option<(Vec<u8>, crate::raft::wal::Syncer)> = None;
            // Snapshots that failed, by model: merged into that model's next one.
            let mut unsaved: HashMap<String, snapshot::Job> = HashMap::new();
            // Records the pending applied state; answers whether everything sent so far
            // is recorded (false for good after a fault).
            let record = |p: &mut Option<(Vec<u8>, crate::raft::wal::Syncer)>| -> bool {
                if health.fault().is_some() {
                    *p = None;
                    return false;
                }
                let Some((state, syncer)) = p.take() else {
                    return true;
                };
                if let Err(e) = syncer.sync() {
                    health.fail("syncing the event log", e);
                    return false;
                }
                let recorded = (|| {
                    fail::fail_point!("checkpoint-applied", |_| Err(sled::Error::Io(
                        std::io::Error::other("failpoint checkpoint-applied")
                    )));
                    meta.insert(APPLIED, state.as_slice()).map(|_| ())
                })();
                match recorded {
                    Ok(()) => true,
                    Err(e) => {
                        health.fail("recording the applied state", e);
                        false
                    }
                }
            };
            while let Ok(first) = rx.recv() {
                let mut next = Some(first);
                while let Some(work) = next.take().or_else(|| rx.try_recv().ok()) {
                    match work {
                        Checkpoint::Applied { state, mut syncer } => {
                            if let Some((_, older)) = pending.take() {
                                syncer.absorb(older);
                            }
                            pending = Some((state, syncer));
                        }
                        Checkpoint::Snapshot(mut job) => {
                            if !record(&mut pending) {
                                // A snapshot must not stand ahead of the recorded state;
                                // after a fault the node writes nothing more.
                                continue;
                            }
                            if let Some(older) = unsaved.remove(job.model()) {
                                job.absorb(older);
                            }
                            match snapshot::store(&tree, &job) {
                                Ok(()) => {
                                    stats.snapshots.fetch_add(1, Ordering::Relaxed);
                                    tracing::debug!(changed = job.len(), "snapshot written");
                                }
                                // The marker stays where it was (a longer replay), and the
                                // records go with the model's next snapshot.
                                Err(e) => {
                                    tracing::error!(error = %e, model = job.model(), "snapshot failed; its records go with the next one");
                                    unsaved.insert(job.model().to_string(), job);
                                }
                            }
                        }
                        Checkpoint::Barrier(done) => {
                            let _ = done.send(record(&mut pending));
                        }
                        Checkpoint::Discard => unsaved.clear(),
                    }
                }
                record(&mut pending);
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(tx)
}
