//! The store's snapshot: every record of every model as of one event, with the state
//! machine's applied state and the duplicate-detection window at that event.
//!
//! One format serves both snapshots: the one in the data dir's `snapshot` file, which
//! bounds the replay at restart (a restart loads it and replays only the events after
//! it), and openraft's, which brings a lagging node up to date (a node that installs one
//! keeps its bytes as its own `snapshot` file). It is encoded from an [`Image`], an O(1)
//! frozen copy of the state (persistent maps), off the apply path, and read back with one
//! sequential read.
//!
//! Layout: `"LTHSNAP1" | header length: u32 LE | header (JSON) | records`, where the
//! header holds the last event's sequence number, the applied state (as the state machine
//! encoded it), the window, and each model's name with its record count; the records
//! follow in the header's order, each `length: u32 LE | the record's JSON text`. On disk
//! and on the wire the whole is framed by `wal::slot` (length and checksum).

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::decide::IdempotencyKey;
use super::event::{Record, Stored};
use super::state::State;
use super::Stats;
use crate::spec::ServiceSpec;

const MAGIC: &[u8; 8] = b"LTHSNAP1";

/// The duplicate-detection window of the state machine at one event, oldest first.
#[derive(Clone, Debug, Default)]
pub struct Window {
    /// `(sequence number, event id)` of the newest events.
    pub events: Vec<(u64, Uuid)>,
    /// The idempotency keys of the same events.
    pub keys: Vec<(u64, IdempotencyKey)>,
}

/// The state as of one event, frozen (cheap to take: the maps are shared).
#[derive(Clone)]
pub struct Image {
    /// The last event it holds.
    pub last_seq: u64,
    /// The state machine's applied state at that event (its own JSON).
    pub applied: Vec<u8>,
    /// Each model's records, by model name.
    pub models: Vec<(String, imbl::OrdMap<Uuid, Arc<Stored>>)>,
    /// The duplicate-detection window at that event.
    pub window: Window,
}

#[derive(Serialize, Deserialize)]
struct Header<'a> {
    last_seq: u64,
    #[serde(borrow)]
    applied: &'a serde_json::value::RawValue,
    models: Vec<(String, u64)>,
    recent: Vec<(u64, Uuid)>,
    keys: Vec<(u64, IdempotencyKey)>,
}

/// A snapshot read back: the state, and what the state machine needs besides.
pub struct Loaded {
    /// The state as of `state.last_seq`.
    pub state: State,
    /// The applied state stored with it.
    pub applied: Vec<u8>,
    /// The duplicate-detection window stored with it.
    pub window: Window,
}

impl Image {
    /// Freezes `state`, with the state machine's `applied` state and window.
    pub fn of(state: &State, applied: Vec<u8>, window: Window) -> Self {
        let mut models: Vec<_> = state
            .models
            .iter()
            .map(|(m, ms)| (m.clone(), ms.records.clone()))
            .collect();
        models.sort_by(|a, b| a.0.cmp(&b.0));
        Image {
            last_seq: state.last_seq,
            applied,
            models,
            window,
        }
    }

    /// How many records it holds.
    pub fn records(&self) -> usize {
        self.models.iter().map(|(_, r)| r.len()).sum()
    }

    /// Writes it to `out`, from the records' stored JSON text (nothing is serialised
    /// again).
    pub fn encode(&self, out: &mut impl Write) -> std::io::Result<()> {
        let applied: &serde_json::value::RawValue = serde_json::from_slice(&self.applied)
            .map_err(|e| std::io::Error::other(format!("the applied state: {e}")))?;
        let header = Header {
            last_seq: self.last_seq,
            applied,
            models: self
                .models
                .iter()
                .map(|(m, r)| (m.clone(), r.len() as u64))
                .collect(),
            recent: self.window.events.clone(),
            keys: self.window.keys.clone(),
        };
        let header = serde_json::to_vec(&header).map_err(std::io::Error::other)?;
        out.write_all(MAGIC)?;
        out.write_all(&len32(header.len())?.to_le_bytes())?;
        out.write_all(&header)?;
        for (_, records) in &self.models {
            for r in records.values() {
                out.write_all(&len32(r.json.len())?.to_le_bytes())?;
                out.write_all(&r.json)?;
            }
        }
        Ok(())
    }

    /// Its bytes, as [`Image::encode`] writes them.
    pub fn to_bytes(&self) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.encode(&mut out)?;
        Ok(out)
    }
}

fn len32(n: usize) -> std::io::Result<u32> {
    u32::try_from(n).map_err(|_| std::io::Error::other("a record of 4 GiB or more"))
}

/// Why a snapshot cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum Unreadable {
    /// It ends before its content does.
    #[error("the snapshot ends early, at byte {0}")]
    EndsEarly(usize),
    /// It does not start with the snapshot's magic bytes.
    #[error("this is not a lithair snapshot")]
    NotASnapshot,
    /// Its header does not parse.
    #[error("its header: {0}")]
    Header(serde_json::Error),
    /// A record does not parse.
    #[error("a record of {0} cannot be read: {1}")]
    Record(String, serde_json::Error),
    /// A record has no valid id.
    #[error("a record of {0} has no valid id")]
    NoId(String),
    /// Bytes follow the last record.
    #[error("{0} bytes follow the last record")]
    Trailing(usize),
}

/// Reads `bytes` (written by [`Image::encode`]) into a state for `spec`; counts the
/// records in `stats`. Records of models the schema no longer has are skipped; records
/// written before a field with a default existed get it.
pub fn decode(bytes: &[u8], spec: &ServiceSpec, stats: &Stats) -> Result<Loaded, Unreadable> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], Unreadable> {
        let piece = bytes.get(at..at + n).ok_or(Unreadable::EndsEarly(at))?;
        at += n;
        Ok(piece)
    };
    if take(8)? != MAGIC {
        return Err(Unreadable::NotASnapshot);
    }
    let len = |b: &[u8]| -> usize {
        let mut four = [0u8; 4];
        four.copy_from_slice(b);
        u32::from_le_bytes(four) as usize
    };
    let header_len = len(take(4)?);
    let header: Header =
        serde_json::from_slice(take(header_len)?).map_err(Unreadable::Header)?;
    let mut state = State::new(spec);
    let mut loaded = 0u64;
    for (model, count) in &header.models {
        for _ in 0..*count {
            let n = len(take(4)?);
            let text = take(n)?;
            let mut r: Record =
                serde_json::from_slice(text).map_err(|e| Unreadable::Record(model.clone(), e))?;
            if !state.models.contains_key(model) {
                continue;
            }
            let id = r
                .get("id")
                .and_then(serde_json::Value::as_str)
                .and_then(|s| Uuid::parse_str(s).ok())
                .ok_or_else(|| Unreadable::NoId(model.clone()))?;
            // The stored text is reused unless the record gained defaults.
            let stored = if state.upcast(model, &mut r) {
                Stored::new(r)
            } else {
                Stored {
                    record: r,
                    json: bytes::Bytes::copy_from_slice(text),
                }
            };
            if let Some(ms) = state.models.get_mut(model) {
                ms.put(id, Some(Arc::new(stored)));
            }
            loaded += 1;
        }
    }
    if at != bytes.len() {
        return Err(Unreadable::Trailing(bytes.len() - at));
    }
    state.last_seq = header.last_seq;
    state.mark_snapshot();
    stats.snapshot_records.fetch_add(loaded, Ordering::Relaxed);
    Ok(Loaded {
        state,
        applied: header.applied.get().as_bytes().to_vec(),
        window: Window {
            events: header.recent,
            keys: header.keys,
        },
    })
}
