//! Snapshots of the state in the `state` tree, written incrementally.
//!
//! The tree holds every record of a model as of the model's last snapshot
//! (`<model>\0<id: 16 bytes>` -> JSON) and a marker `\xff<model>` -> the sequence number
//! that snapshot stands at. Taking a snapshot writes only the records changed since the
//! previous one, together with the new marker, in one atomic sled batch: its cost is
//! bounded by `snapshot_every`, not by the size of the model, and the tree always matches
//! its marker exactly. A restart loads the tree and replays only the events after it.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use uuid::Uuid;

use super::event::{Record, Stored};
use super::state::State;
use super::Stats;

fn record_key(model: &str, id: &Uuid) -> Vec<u8> {
    let mut k = Vec::with_capacity(model.len() + 17);
    k.extend_from_slice(model.as_bytes());
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}

fn marker_key(model: &str) -> Vec<u8> {
    let mut k = vec![0xff];
    k.extend_from_slice(model.as_bytes());
    k
}

/// Writes the records of `model` changed since its last snapshot, and the new marker `seq`.
/// Answers how many records were written or removed.
pub fn write(tree: &sled::Tree, state: &mut State, model: &str, seq: u64) -> Result<usize, String> {
    let Some(ms) = state.models.get_mut(model) else {
        return Ok(0);
    };
    let mut batch = sled::Batch::default();
    let changed = ms.dirty.len();
    for id in ms.dirty.drain() {
        let key = record_key(model, &id);
        match ms.records.get(&id) {
            Some(r) => batch.insert(key, &r.json[..]),
            None => batch.remove(key),
        }
    }
    batch.insert(marker_key(model), &seq.to_be_bytes());
    tree.apply_batch(batch).map_err(|e| e.to_string())?;
    ms.since_snapshot = 0;
    ms.snapshot_seq = seq;
    Ok(changed)
}

/// Loads each model's snapshot into `state`; answers model -> sequence it stands at.
pub fn load(
    tree: &sled::Tree,
    state: &mut State,
    stats: &Stats,
) -> Result<HashMap<String, u64>, String> {
    let mut out = HashMap::new();
    let models: Vec<String> = state.models.keys().cloned().collect();
    for model in models {
        let Some(marker) = tree
            .get(marker_key(&model))
            .map_err(|e| format!("snapshot of {model} cannot be read: {e}"))?
        else {
            continue;
        };
        let seq = <[u8; 8]>::try_from(marker.as_ref())
            .map(u64::from_be_bytes)
            .map_err(|_| format!("the snapshot marker of {model} is damaged"))?;
        let mut prefix = model.as_bytes().to_vec();
        prefix.push(0);
        let mut loaded = 0u64;
        for item in tree.scan_prefix(&prefix) {
            let (k, v) = item.map_err(|e| format!("snapshot of {model} cannot be read: {e}"))?;
            let id = k
                .get(prefix.len()..)
                .and_then(|b| Uuid::from_slice(b).ok())
                .ok_or_else(|| format!("a key of the snapshot of {model} is damaged"))?;
            let mut r: Record = serde_json::from_slice(&v)
                .map_err(|e| format!("record {id} in the snapshot of {model} is damaged: {e}"))?;
            // The stored text is reused unless the record gained defaults.
            let stored = if state.upcast(&model, &mut r) {
                Stored::new(r)
            } else {
                Stored {
                    record: r,
                    json: bytes::Bytes::copy_from_slice(&v),
                }
            };
            if let Some(ms) = state.models.get_mut(&model) {
                ms.put(id, Some(Arc::new(stored)));
            }
            loaded += 1;
        }
        if let Some(ms) = state.models.get_mut(&model) {
            ms.snapshot_seq = seq;
            ms.dirty.clear();
        }
        state.last_seq = state.last_seq.max(seq);
        stats.snapshot_records.fetch_add(loaded, Ordering::Relaxed);
        out.insert(model, seq);
    }
    Ok(out)
}
