//! Snapshots of a model's records in the `snapshots` tree.
//!
//! Layout: `<model>\0<seq BE>\0c<chunk BE>` holds up to [`CHUNK`] records as a JSON
//! array; `<model>\0<seq BE>\0h` is the header, written last, so a snapshot without a
//! header (the process died while writing it) is ignored. Older snapshots of the model
//! are removed once a newer header is in place.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::event::{Record, FORMAT};
use super::state::State;
use super::Stats;

const CHUNK: usize = 1000;

#[derive(Serialize, Deserialize)]
struct Header {
    format: u32,
    model: String,
    last_event_sequence: u64,
    records: u64,
    chunks: u64,
    created_at: String,
}

fn prefix(model: &str) -> Vec<u8> {
    let mut p = model.as_bytes().to_vec();
    p.push(0);
    p
}

fn base(model: &str, seq: u64) -> Vec<u8> {
    let mut k = prefix(model);
    k.extend_from_slice(&seq.to_be_bytes());
    k.push(0);
    k
}

/// Writes a snapshot of `records` as of sequence `seq`, then drops older ones.
pub fn write(
    tree: &sled::Tree,
    model: &str,
    seq: u64,
    records: &imbl::OrdMap<Uuid, Arc<Record>>,
) -> Result<(), String> {
    let b = base(model, seq);
    let mut chunks = 0u64;
    let all: Vec<&Arc<Record>> = records.values().collect();
    for part in all.chunks(CHUNK) {
        let mut k = b.clone();
        k.push(b'c');
        k.extend_from_slice(&chunks.to_be_bytes());
        let list: Vec<&Record> = part.iter().map(|r| r.as_ref()).collect();
        tree.insert(k, serde_json::to_vec(&list).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        chunks += 1;
    }
    let header = Header {
        format: FORMAT,
        model: model.to_string(),
        last_event_sequence: seq,
        records: records.len() as u64,
        chunks,
        created_at: chrono::Utc::now().to_rfc3339(),
    };
    let mut hk = b.clone();
    hk.push(b'h');
    tree.insert(hk, serde_json::to_vec(&header).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    // Remove older snapshots (and any headerless leftovers) of this model.
    let mut old = Vec::new();
    for item in tree.scan_prefix(prefix(model)) {
        let (k, _) = item.map_err(|e| e.to_string())?;
        let at = model.len() + 1;
        let key_seq = k
            .get(at..at + 8)
            .and_then(|s| <[u8; 8]>::try_from(s).ok())
            .map(u64::from_be_bytes);
        // Only older ones: a newer snapshot written meanwhile by another thread stays.
        if key_seq.is_some_and(|s| s < seq) {
            old.push(k);
        }
    }
    for k in old {
        tree.remove(k).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Loads each model's newest complete snapshot into `state`; answers model -> sequence.
pub fn load(
    tree: &sled::Tree,
    state: &mut State,
    stats: &Stats,
) -> Result<HashMap<String, u64>, String> {
    let mut out = HashMap::new();
    let models: Vec<String> = state.models.keys().cloned().collect();
    for model in models {
        let mut newest: Option<(u64, Header)> = None;
        for item in tree.scan_prefix(prefix(&model)) {
            let (k, v) = item.map_err(|e| format!("snapshot of {model} cannot be read: {e}"))?;
            if k.last() != Some(&b'h') || k.len() != model.len() + 1 + 8 + 2 {
                continue;
            }
            let h: Header = serde_json::from_slice(&v)
                .map_err(|e| format!("snapshot header of {model} is damaged: {e}"))?;
            if h.format > FORMAT {
                return Err(format!(
                    "snapshot of {model} has format {}, newer than {FORMAT}",
                    h.format
                ));
            }
            if newest
                .as_ref()
                .is_none_or(|(s, _)| h.last_event_sequence > *s)
            {
                newest = Some((h.last_event_sequence, h));
            }
        }
        let Some((seq, h)) = newest else { continue };
        let b = base(&model, seq);
        if !state.models.contains_key(&model) {
            continue;
        }
        let mut loaded = 0u64;
        for c in 0..h.chunks {
            let mut k = b.clone();
            k.push(b'c');
            k.extend_from_slice(&c.to_be_bytes());
            let v = tree
                .get(&k)
                .map_err(|e| format!("snapshot chunk {c} of {model} cannot be read: {e}"))?
                .ok_or_else(|| format!("snapshot of {model} at {seq} misses chunk {c}"))?;
            let records: Vec<Record> = serde_json::from_slice(&v)
                .map_err(|e| format!("snapshot chunk {c} of {model} is damaged: {e}"))?;
            for mut r in records {
                state.upcast(&model, &mut r);
                let id = r
                    .get("id")
                    .and_then(|v| v.as_str())
                    .and_then(|s| Uuid::parse_str(s).ok())
                    .ok_or_else(|| format!("a record in the snapshot of {model} has no id"))?;
                if let Some(ms) = state.models.get_mut(&model) {
                    ms.put(id, Some(Arc::new(r)));
                }
                loaded += 1;
            }
        }
        if loaded != h.records {
            return Err(format!(
                "snapshot of {model} at {seq} holds {loaded} records, its header says {}",
                h.records
            ));
        }
        if let Some(ms) = state.models.get_mut(&model) {
            ms.snapshot_seq = seq;
        }
        state.last_seq = state.last_seq.max(seq);
        stats.snapshot_records.fetch_add(loaded, Ordering::Relaxed);
        out.insert(model, seq);
    }
    Ok(out)
}
