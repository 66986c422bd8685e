//! Snapshots of the state in the `state` tree, written incrementally.
//!
//! The tree holds every record of a model as of the model's last snapshot
//! (`<model>\0<id: 16 bytes>` -> JSON) and a marker `\xff<model>` -> the sequence number
//! that snapshot stands at. Taking a snapshot writes only the records changed since the
//! previous one, together with the new marker, in one atomic sled batch: its cost is
//! bounded by `snapshot_every`, not by the size of the model, and the tree always matches
//! its marker exactly. A restart loads the tree and replays only the events after it.
//! A snapshot that fails to be written is merged into the model's next one
//! ([`Job::absorb`]), so a marker never moves past records the tree does not hold.

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

/// The records of one model changed since its last snapshot, to be written with the
/// new marker: taken from the state in O(changed), written by [`store`] off the apply path.
pub struct Job {
    model: String,
    seq: u64,
    /// Record id -> its JSON text (None: deleted).
    changed: Vec<(Uuid, Option<bytes::Bytes>)>,
}

impl Job {
    /// How many records the snapshot writes or removes.
    pub fn len(&self) -> usize {
        self.changed.len()
    }

    /// Whether no record changed.
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty()
    }

    /// The model.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Takes in an older snapshot of the same model that could not be written: its
    /// records that changed since are in this one already (newer); the others have not
    /// changed since, so the older text is still theirs at this snapshot's sequence.
    pub fn absorb(&mut self, older: Job) {
        let newer: std::collections::HashSet<Uuid> =
            self.changed.iter().map(|(id, _)| *id).collect();
        self.changed.extend(
            older
                .changed
                .into_iter()
                .filter(|(id, _)| !newer.contains(id)),
        );
    }
}

/// Takes the records of `model` changed since its last snapshot, for a snapshot at `seq`.
pub fn take(state: &mut State, model: &str, seq: u64) -> Option<Job> {
    let ms = state.models.get_mut(model)?;
    let changed = ms
        .dirty
        .drain()
        .map(|id| (id, ms.records.get(&id).map(|r| r.json.clone())))
        .collect();
    ms.since_snapshot = 0;
    ms.snapshot_seq = seq;
    Some(Job {
        model: model.to_string(),
        seq,
        changed,
    })
}

/// Writes a snapshot taken by [`take`]: the changed records and the new marker, in one
/// atomic batch.
pub fn store(tree: &sled::Tree, job: &Job) -> Result<(), String> {
    fail::fail_point!("snapshot-store", |_| Err("failpoint snapshot-store".into()));
    let mut batch = sled::Batch::default();
    for (id, json) in &job.changed {
        let key = record_key(&job.model, id);
        match json {
            Some(j) => batch.insert(key, &j[..]),
            None => batch.remove(key),
        }
    }
    batch.insert(marker_key(&job.model), &job.seq.to_be_bytes());
    tree.apply_batch(batch).map_err(|e| e.to_string())
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

/// Adds every record of `state` to `batch`, each model at sequence `seq`: what replaces
/// the tree when a node installs a Raft snapshot (the caller removes the old keys).
pub fn fill(batch: &mut sled::Batch, state: &mut State, seq: u64) {
    for (model, ms) in state.models.iter_mut() {
        for (id, r) in ms.records.iter() {
            batch.insert(record_key(model, id), &r.json[..]);
        }
        batch.insert(marker_key(model), &seq.to_be_bytes());
        ms.dirty.clear();
        ms.since_snapshot = 0;
        ms.snapshot_seq = seq;
    }
}
