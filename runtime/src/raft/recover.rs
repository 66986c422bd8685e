//! Recovery at start: the state from the data dir's snapshot plus the events after it,
//! checked against the applied state (see [`load_state`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::data_dir::DataDir;
use super::data_dir::OpenError;
use crate::domain::event::{Event, FORMAT};
use crate::domain::row::Stored;
use crate::domain::state::State;
use crate::domain::{snapshot, Stats};
use crate::spec::ServiceSpec;
use crate::wal::Wal;

/// How many parsed events the replay's reader may be ahead of the state.
const REPLAY_AHEAD: usize = 4096;
/// How many events the reader hands over at once.
const REPLAY_CHUNK: usize = 256;

/// Parses event `seq` of the log: it must be that event, in a format this runtime reads.
fn parse_event(seq: u64, bytes: &[u8], shown: &str) -> Result<Event, OpenError> {
    let corrupt = |what: String| OpenError::Corrupt {
        path: shown.to_string(),
        what,
    };
    let newer = |found: u32| OpenError::NewerFormat {
        path: shown.to_string(),
        found,
    };
    let ev: Event = match serde_json::from_slice(bytes) {
        Ok(ev) => ev,
        Err(e) => {
            #[derive(serde::Deserialize)]
            struct Format {
                format: u32,
            }
            if let Ok(f) = serde_json::from_slice::<Format>(bytes) {
                if f.format > FORMAT {
                    return Err(newer(f.format));
                }
            }
            return Err(corrupt(format!("event {seq} cannot be read ({e})")));
        }
    };
    if ev.sequence_number != seq {
        return Err(corrupt(format!(
            "event log has a gap or mismatch at sequence {seq}"
        )));
    }
    if ev.format > FORMAT {
        return Err(newer(ev.format));
    }
    Ok(ev)
}

/// Opens the event log of the data dir (folder `events`).
pub(crate) fn open_events(dir: &DataDir) -> Result<Wal, OpenError> {
    dir.wal("events").map_err(|e| OpenError::Corrupt {
        path: dir.path().join("events").display().to_string(),
        what: e.to_string(),
    })
}

/// What a start recovers from the data dir: the state, and what the state machine needs
/// besides (see [`load_state`]).
pub(crate) struct Recovered {
    /// The state as of the applied state.
    pub state: State,
    /// The applied state to start from (the state machine's JSON), if any.
    pub applied: Option<Vec<u8>>,
    /// The duplicate-detection window, as of the state.
    pub window: snapshot::Window,
}

/// Loads the state of the data dir `dir`: its snapshot, then the events after it from
/// `events`, checked for gaps, damage and newer formats, up to the applied state.
///
/// The applied state is the newer of the `applied` file and the one stored with the
/// snapshot (a node that installed a Raft snapshot may have stopped before recording it).
/// Events past it (written just before a crash, whose applied state was not) are cut off:
/// the Raft log applies them again, identically. A log that ends before the snapshot (a
/// crash right after installing one) continues after it.
pub(crate) fn load_state(
    dir: &DataDir,
    events: &mut Wal,
    spec: &ServiceSpec,
    stats: &Stats,
) -> Result<Recovered, OpenError> {
    let shown = dir.path().display().to_string();
    let corrupt = |what: String| OpenError::Corrupt {
        path: shown.clone(),
        what,
    };
    let started = std::time::Instant::now();
    let (mut state, snapshot_applied, mut window) = match dir
        .slot("snapshot")
        .read()
        .map_err(|e| corrupt(e.to_string()))?
    {
        Some(bytes) => {
            let loaded = snapshot::decode_owned(bytes, spec, stats)
                .map_err(|e| corrupt(format!("the snapshot cannot be read: {e}")))?;
            (loaded.state, Some(loaded.applied), loaded.window)
        }
        None => (State::new(spec), None, snapshot::Window::default()),
    };
    let snapshot_seq = state.last_seq;
    let snapshot_ms = started.elapsed().as_millis() as u64;
    let recorded = dir
        .slot("applied")
        .read()
        .map_err(|e| corrupt(e.to_string()))?;
    // What is needed of an applied state here: its log index and last event.
    #[derive(serde::Deserialize)]
    struct Head {
        applied: Option<Index>,
        last_seq: u64,
    }
    #[derive(serde::Deserialize)]
    struct Index {
        index: u64,
    }
    let head = |bytes: &Option<Vec<u8>>| -> Result<Option<(u64, u64)>, OpenError> {
        bytes
            .as_ref()
            .map(|b| {
                serde_json::from_slice::<Head>(b)
                    .map(|h| (h.applied.map_or(0, |a| a.index), h.last_seq))
                    .map_err(|e| corrupt(format!("the applied state cannot be read ({e})")))
            })
            .transpose()
    };
    let (from_file, from_snapshot) = (head(&recorded)?, head(&snapshot_applied)?);
    let (applied, applied_seq) = match (from_file, from_snapshot) {
        (Some(f), Some(s)) if s > f => (snapshot_applied, s.1),
        (Some(f), _) => (recorded, f.1),
        (None, Some(s)) => (snapshot_applied, s.1),
        (None, None) => (None, 0),
    };
    let applied_seq = applied_seq.max(snapshot_seq);
    let held = events.last_index().unwrap_or(0);
    if held > applied_seq {
        tracing::info!(
            from = applied_seq + 1,
            to = held,
            "events past the applied state are dropped; the Raft log applies them again"
        );
        events
            .truncate(applied_seq + 1)
            .map_err(|e| corrupt(e.to_string()))?;
    }
    // The last event the log stands for: an empty log that continues after a gap (a Raft
    // snapshot was installed) stands for the events before it.
    let held_to = |events: &Wal| {
        events
            .last_index()
            .unwrap_or(events.start().saturating_sub(1))
    };
    // A crash right after installing a Raft snapshot left the log as it was before it:
    // it continues after the snapshot (the events before it are fetched again).
    if snapshot_seq > 0 && held_to(events) < snapshot_seq {
        events
            .restart_at(snapshot_seq + 1)
            .map_err(|e| corrupt(e.to_string()))?;
    }
    let last = held_to(events);
    if last < applied_seq {
        return Err(corrupt(format!(
            "the event log ends at {last} but the state was applied up to {applied_seq} \
             (was the machine powered off with sync = \"periodic\" or \"never\"?)"
        )));
    }
    let start = snapshot_seq + 1;
    if start <= last && events.first_index().is_none_or(|f| f > start) {
        return Err(corrupt(format!(
            "the event log starts at {} but the state needs the events from {start}",
            events.first_index().unwrap_or(0)
        )));
    }
    // The events are read and parsed (and created records encoded) on a thread of their
    // own while this one applies them in order (a restart is mostly these two halves).
    let mut replayed = 0u64;
    let events: &Wal = events;
    std::thread::scope(|scope| -> Result<(), OpenError> {
        // Handed over in chunks: one wake-up of the applying thread per chunk.
        type Chunk = Vec<(Event, Option<(Arc<Stored>, bool)>)>;
        let (tx, rx) =
            std::sync::mpsc::sync_channel::<Result<Chunk, OpenError>>(REPLAY_AHEAD / REPLAY_CHUNK);
        let shown = &shown;
        // Created records are encoded here too, beside the parsing.
        let encoder = state.encoder();
        let reader = std::thread::Builder::new()
            .name("lithair-replay".into())
            .spawn_scoped(scope, move || {
                let mut chunk = Vec::with_capacity(REPLAY_CHUNK);
                for seq in start..=last {
                    let read = events
                        .read(seq)
                        .map_err(|e| corrupt(e.to_string()))
                        .and_then(|b| b.ok_or_else(|| corrupt(format!("event {seq} is missing"))))
                        .and_then(|bytes| parse_event(seq, &bytes, shown));
                    match read {
                        Ok(mut ev) => {
                            let created = encoder.created(&mut ev);
                            chunk.push((ev, created));
                        }
                        Err(e) => {
                            let _ = tx.send(Ok(std::mem::take(&mut chunk)));
                            let _ = tx.send(Err(e));
                            return;
                        }
                    }
                    if chunk.len() == REPLAY_CHUNK || seq == last {
                        let full = std::mem::replace(&mut chunk, Vec::with_capacity(REPLAY_CHUNK));
                        if tx.send(Ok(full)).is_err() {
                            return;
                        }
                    }
                }
            })
            .map_err(|e| corrupt(format!("cannot start the replay: {e}")))?;
        for read in rx {
            for (mut ev, created) in read? {
                state.apply_encoded(&mut ev, created);
                window.events.push((ev.sequence_number, ev.event_id));
                if let Some(key) = ev.idempotency_key {
                    window.keys.push((ev.sequence_number, *key));
                }
                replayed += 1;
            }
        }
        reader
            .join()
            .map_err(|_| corrupt("the replay stopped".to_string()))
    })?;
    stats.replayed_events.store(replayed, Ordering::Relaxed);
    tracing::info!(
        path = %shown,
        last_sequence = state.last_seq,
        snapshot_records = stats.snapshot_records.load(Ordering::Relaxed),
        replayed_events = replayed,
        snapshot_ms,
        replay_ms = started.elapsed().as_millis() as u64 - snapshot_ms,
        "store loaded"
    );
    // Records written under an older schema, brought up to date as they were read.
    let upgraded = std::mem::take(&mut state.upgraded);
    for (model, records) in upgraded {
        let ms = spec.models.iter().find(|m| m.name == model);
        let renamed: Vec<String> = ms
            .into_iter()
            .flat_map(|m| &m.fields)
            .filter_map(|f| Some(format!("{} from {}", f.name, f.renamed_from.as_ref()?)))
            .collect();
        let filled: Vec<&str> = ms
            .into_iter()
            .flat_map(|m| &m.fields)
            .filter(|f| f.fill().is_some())
            .map(|f| f.name.as_str())
            .collect();
        tracing::info!(%model, records, renamed = %renamed.join(", "), filled = %filled.join(", "),
            "records written under an earlier schema were upgraded as they were read");
    }
    // A projection is built from the snapshot's records and follows the replay: a new
    // or changed one is complete now.
    for ms in state.models.values() {
        for p in &ms.projections {
            tracing::info!(projection = %p.name(), source = %p.def.spec.source,
                records = ms.records.len(), groups = p.groups.len(),
                "projection built from the store's records");
        }
    }
    Ok(Recovered {
        state,
        applied,
        window,
    })
}
