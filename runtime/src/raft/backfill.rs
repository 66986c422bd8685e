//! Fetching the events a Raft snapshot skipped: a node that installed one holds only the
//! events after it, and fetches the earlier ones from the leader.

use std::sync::Arc;
use std::time::Duration;

use openraft::Raft;

use super::identity;
use super::network::{call_json, CallError, Link};
use super::TypeConfig;
use crate::raft::data_dir::DataDir;
use crate::wal::{Wal, WalError};

/// What the backfill task needs.
pub(crate) struct Backfill {
    pub(crate) raft: Raft<TypeConfig>,
    pub(crate) node_id: u64,
    pub(crate) link: Link,
    pub(crate) events: Arc<std::sync::Mutex<Wal>>,
    /// Where fetched events are gathered before they join the log.
    pub(crate) scratch: std::path::PathBuf,
    pub(crate) stopped: tokio::sync::watch::Receiver<bool>,
    /// The data dir (dropped before the holder).
    pub(crate) dir: Arc<DataDir>,
    pub(crate) _holder: Arc<()>,
}

/// How many events one fetch asks for.
const FETCH_PAGE: u64 = 2000;

/// A node that installed a Raft snapshot holds only the events after it. This task fetches
/// the earlier ones from the leader (every node applied the same log, so they are the same
/// events) and puts them in front of the log, so that every node ends up holding the whole
/// event log. Each round it also learns the cluster's id from the leader while this node
/// does not know it yet (see `identity`).
pub(crate) fn spawn_backfill(mut b: Backfill) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = b.stopped.changed() => break,
            }
            let mut stopped = b.stopped.clone();
            tokio::select! {
                r = async {
                    identity::learn(&b.raft, b.node_id, &b.link, &b.dir).await;
                    backfill_once(&b).await
                } => match r {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(events = n, "fetched the events a snapshot had skipped"),
                    Err(e) => tracing::debug!(error = %e, "fetching skipped events; retrying"),
                },
                _ = stopped.changed() => break,
            }
        }
    });
}

/// Why one attempt did not complete (it is tried again a second later).
#[derive(Debug, thiserror::Error)]
enum BackfillError {
    #[error("no other node leads")]
    NoLeader,
    #[error("the leader's address is unknown")]
    LeaderAddress,
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("an event without a sequence number")]
    NoSequence,
    #[error("the leader sent event {0} out of order")]
    OutOfOrder(u64),
    #[error("the leader's events stopped short")]
    StoppedShort,
    #[error("an event cannot be encoded: {0}")]
    Encode(#[from] serde_json::Error),
    #[error(transparent)]
    Log(#[from] WalError),
    #[error("the log moved while fetching; starting over")]
    Moved,
    #[error("a blocking task ended: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// One attempt: answers how many events joined the log.
async fn backfill_once(b: &Backfill) -> Result<u64, BackfillError> {
    // The log holds every event from its start on: the ones before are missing.
    let start = crate::raft::lock_events(&b.events).start().max(1);
    let missing_to = start - 1;
    if missing_to == 0 {
        return Ok(0);
    }
    let leader = {
        let m = b.raft.metrics().borrow().clone();
        let Some(id) = m.current_leader.filter(|l| *l != b.node_id) else {
            return Err(BackfillError::NoLeader);
        };
        m.membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
            .ok_or(BackfillError::LeaderAddress)?
    };
    let _ = tokio::fs::remove_file(&b.scratch).await;
    let mut first: Option<u64> = None;
    let mut expect: Option<u64> = None;
    let mut next = 1;
    while next <= missing_to {
        let to = (next + FETCH_PAGE - 1).min(missing_to);
        let page: Vec<serde_json::Value> = call_json(
            hyper::Method::GET,
            &leader,
            &format!("/_raft/events?from={next}&to={to}"),
            &b.link,
            &(),
            Duration::from_secs(30),
        )
        .await?;
        let mut entries = Vec::with_capacity(page.len());
        for ev in &page {
            let seq = ev["sequence_number"]
                .as_u64()
                .ok_or(BackfillError::NoSequence)?;
            // Contiguous from the first one received (which may be after 1, when the
            // leader itself started from a snapshot).
            if expect.is_some_and(|e| e != seq) {
                return Err(BackfillError::OutOfOrder(seq));
            }
            expect = Some(seq + 1);
            first.get_or_insert(seq);
            entries.push((seq, serde_json::to_vec(ev)?));
        }
        let Some(last) = entries.last().map(|(s, _)| *s) else {
            if first.is_none() {
                // The leader holds none of these (it skipped them too): go on after them.
                next = to + 1;
                continue;
            }
            return Err(BackfillError::StoppedShort);
        };
        let (scratch, chunk) = (b.scratch.clone(), entries);
        tokio::task::spawn_blocking(move || Wal::write_segment(&scratch, &chunk)).await??;
        next = last + 1;
    }
    let Some(first) = first else {
        return Ok(0);
    };
    // The log's files change: off the async threads.
    let (events, scratch) = (b.events.clone(), b.scratch.clone());
    tokio::task::spawn_blocking(move || {
        let mut log = crate::raft::lock_events(&events);
        let adopted = if log.start().max(1) != start {
            // A snapshot was installed meanwhile: these events may no longer fit.
            Err(BackfillError::Moved)
        } else {
            log.adopt(&scratch, first).map_err(BackfillError::from)
        };
        if adopted.is_err() {
            let _ = std::fs::remove_file(&scratch);
        }
        adopted.map(|()| start - first)
    })
    .await?
}
