//! The checkpoint thread: off the apply path, it syncs the event log and only then
//! records the applied state (the `applied` file), and writes the store's snapshots (the
//! `snapshot` file), in order.

use std::sync::atomic::Ordering;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::data_dir::DataDir;
use crate::domain::{health, snapshot, Stats};
use crate::wal::slot::Slot;

/// How long the applied state on disk may lag behind the one in memory while nothing
/// asks for it: what a restart applies again from the Raft log.
const RECORD_EVERY: Duration = Duration::from_millis(100);

/// Work for the checkpoint thread, done in the order it was sent.
pub enum Checkpoint {
    /// Sync the event log, then record the applied state (the `applied` file): the applied
    /// state on disk never covers an event that is not. Consecutive ones are coalesced and
    /// recorded at most every [`RECORD_EVERY`], or when a snapshot or a barrier needs it.
    Applied {
        /// The applied state, encoded.
        state: Vec<u8>,
        /// What syncs the event log up to it.
        syncer: crate::wal::Syncer,
    },
    /// Write this snapshot (sent after the `Applied` that covers its events).
    Snapshot(snapshot::Image),
    /// Answer once everything sent before is done: whether the applied state it
    /// recorded is on disk.
    Barrier(tokio::sync::oneshot::Sender<bool>),
}

/// Starts the checkpoint thread on `dir`'s `applied` and `snapshot` files. It ends when
/// the sender is dropped, after recording what was sent; it holds `holder` until then.
///
/// Failures never shorten the replay of a restart:
/// - a failed sync of the event log or a failed write of the applied state is a
///   [`health::Fault`]: the sync is not retried (the kernel may have dropped the pages),
///   nothing is recorded any more, barriers answer false (so the Raft log is not purged)
///   and the state machine stops applying;
/// - a snapshot that could not be written leaves the previous one in place (the file is
///   replaced whole, atomically): a longer replay until the next one.
pub(crate) fn checkpoint_thread(
    dir: &DataDir,
    stats: Arc<Stats>,
    health: Arc<health::Health>,
    holder: Arc<()>,
) -> std::io::Result<std::sync::mpsc::Sender<Checkpoint>> {
    let applied = dir.slot("applied");
    let snapshots = dir.slot("snapshot");
    let (tx, rx) = std::sync::mpsc::channel::<Checkpoint>();
    std::thread::Builder::new()
        .name("lithair-checkpoint".into())
        .spawn(move || {
            let _holder = holder;
            let mut pending: Option<(Vec<u8>, crate::wal::Syncer)> = None;
            let mut recorded_at = Instant::now();
            // Records the pending applied state; answers whether everything sent so far
            // is recorded (false for good after a fault).
            let record =
                |p: &mut Option<(Vec<u8>, crate::wal::Syncer)>, at: &mut Instant| -> bool {
                    if health.fault().is_some() {
                        *p = None;
                        return false;
                    }
                    let Some((state, syncer)) = p.take() else {
                        return true;
                    };
                    *at = Instant::now();
                    if let Err(e) = syncer.sync() {
                        health.fail("syncing the event log", e);
                        return false;
                    }
                    match applied.write(&state) {
                        Ok(()) => true,
                        Err(e) => {
                            health.fail("recording the applied state", e);
                            false
                        }
                    }
                };
            loop {
                let work = if pending.is_some() {
                    let wait = RECORD_EVERY.saturating_sub(recorded_at.elapsed());
                    match rx.recv_timeout(wait) {
                        Ok(work) => Some(work),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                } else {
                    match rx.recv() {
                        Ok(work) => Some(work),
                        Err(_) => break,
                    }
                };
                match work {
                    None => {
                        record(&mut pending, &mut recorded_at);
                    }
                    Some(Checkpoint::Applied { state, mut syncer }) => {
                        if let Some((_, older)) = pending.take() {
                            syncer.absorb(older);
                        }
                        pending = Some((state, syncer));
                        if recorded_at.elapsed() >= RECORD_EVERY {
                            record(&mut pending, &mut recorded_at);
                        }
                    }
                    Some(Checkpoint::Snapshot(image)) => {
                        // A snapshot must not stand ahead of the recorded state; after a
                        // fault the node writes nothing more.
                        if record(&mut pending, &mut recorded_at) {
                            write_snapshot(&snapshots, &image, &stats);
                        }
                    }
                    Some(Checkpoint::Barrier(done)) => {
                        let _ = done.send(record(&mut pending, &mut recorded_at));
                    }
                }
            }
            record(&mut pending, &mut recorded_at);
        })?;
    Ok(tx)
}

/// Writes `image` as the new `snapshot` file; a failure leaves the previous one.
fn write_snapshot(slot: &Slot, image: &snapshot::Image, stats: &Stats) {
    let started = Instant::now();
    let written = (|| {
        let mut w = slot.writer()?;
        image.encode(&mut w)?;
        w.commit()
    })();
    match written {
        Ok(()) => {
            stats.snapshots.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                records = image.records(),
                sequence = image.last_seq,
                ms = started.elapsed().as_millis() as u64,
                "snapshot written"
            );
        }
        Err(e) => tracing::error!(
            error = %e,
            sequence = image.last_seq,
            "the snapshot could not be written; the previous one stays (a longer replay until the next)"
        ),
    }
}
