//! Fetching the events a Raft snapshot skipped: a node that installed one holds only the
//! events after it, and fetches the earlier ones from the leader.

use std::sync::Arc;
use std::time::Duration;

use openraft::Raft;

use super::identity;
use super::network::{call_json, Link};
use super::wal::Wal;
use super::TypeConfig;

/// What the backfill task needs.
pub(crate) struct Backfill {
    pub(crate) raft: Raft<TypeConfig>,
    pub(crate) node_id: u64,
    pub(crate) link: Link,
    pub(crate) events: Arc<std::sync::Mutex<Wal>>,
    pub(crate) meta: sled::Tree,
    /// Where fetched events are gathered before they join the log.
    pub(crate) scratch: std::path::PathBuf,
    pub(crate) stopped: tokio::sync::watch::Receiver<bool>,
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
                    identity::learn(&b.raft, b.node_id, &b.link, &b.meta).await;
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

/// One attempt: answers how many events joined the log.
async fn backfill_once(b: &Backfill) -> Result<u64, String> {
    // Read together under the log's lock, which installing a snapshot holds while it
    // moves both.
    let (start, complete) = {
        let log = crate::store::lock_events(&b.events);
        let complete = complete_from(&b.meta)?;
        let start = log.start().max(1);
        if start < complete {
            // Fetched before a crash that came before this note.
            set_complete_from(&b.meta, start)?;
            (start, start)
        } else {
            (start, complete)
        }
    };
    let missing_to = start.min(complete).saturating_sub(1);
    if missing_to == 0 {
        return Ok(0);
    }
    let leader = {
        let m = b.raft.metrics().borrow().clone();
        let Some(id) = m.current_leader.filter(|l| *l != b.node_id) else {
            return Err("no other node leads".into());
        };
        m.membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
            .ok_or("the leader's address is unknown")?
    };
    let _ = std::fs::remove_file(&b.scratch);
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
        .await
        .map_err(|e| e.to_string())?;
        let mut entries = Vec::with_capacity(page.len());
        for ev in &page {
            let seq = ev["sequence_number"]
                .as_u64()
                .ok_or("an event without a sequence number")?;
            // Contiguous from the first one received (which may be after 1, when the
            // leader itself started from a snapshot).
            if expect.is_some_and(|e| e != seq) {
                return Err(format!("the leader sent event {seq} out of order"));
            }
            expect = Some(seq + 1);
            first.get_or_insert(seq);
            entries.push((seq, serde_json::to_vec(ev).map_err(|e| e.to_string())?));
        }
        let Some(last) = entries.last().map(|(s, _)| *s) else {
            if first.is_none() {
                // The leader holds none of these (it skipped them too): go on after them.
                next = to + 1;
                continue;
            }
            return Err("the leader's events stopped short".into());
        };
        let (scratch, chunk) = (b.scratch.clone(), entries);
        tokio::task::spawn_blocking(move || Wal::write_segment(&scratch, &chunk))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        next = last + 1;
    }
    let Some(first) = first else {
        return Ok(0);
    };
    let mut log = crate::store::lock_events(&b.events);
    if log.start().max(1) != start || complete_from(&b.meta)? != complete {
        // A snapshot was installed meanwhile: these events may no longer fit.
        let _ = std::fs::remove_file(&b.scratch);
        return Err("the log moved while fetching; starting over".into());
    }
    if let Err(e) = log.adopt(&b.scratch, first) {
        let _ = std::fs::remove_file(&b.scratch);
        return Err(e.to_string());
    }
    set_complete_from(&b.meta, first)?;
    Ok(start - first)
}

fn complete_from(meta: &sled::Tree) -> Result<u64, String> {
    crate::store::events_complete_from(meta).map_err(|e| e.to_string())
}

fn set_complete_from(meta: &sled::Tree, from: u64) -> Result<(), String> {
    meta.insert(crate::store::EVENTS_FROM, &from.to_be_bytes())
        .map(|_| ())
        .map_err(|e| e.to_string())
}
