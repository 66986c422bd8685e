//! The event envelope: what the log holds for every write.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// The on-disk format of events and snapshots. Raised on any incompatible change; a store
/// of a newer format is refused, an older one is read by a migration.
pub const FORMAT: u32 = 1;

/// A record: its fields plus `id`, `created_at`, `updated_at`, `version`.
pub type Record = Map<String, Value>;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A record was created; `event_data` is the whole record.
    Created,
    /// A record changed; `event_data.changes` maps each changed field to `{old, new}`.
    Updated,
    /// A record was deleted (a tombstone); `event_data.old` is the record as it was
    /// (empty in events written before it was kept).
    Deleted,
}

/// Who caused an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// Token name or `anonymous`.
    pub name: String,
    /// Its roles.
    pub roles: Vec<String>,
    /// The custom action whose handler made the write, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
}

/// One entry of the event log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// [`FORMAT`] when written.
    pub format: u32,
    /// Unique id of the event.
    pub event_id: Uuid,
    /// Global, gap-free position in the log, from 1.
    pub sequence_number: u64,
    /// The record's id.
    pub aggregate_id: Uuid,
    /// The record's model.
    pub model: String,
    /// `<Model>Created`, `<Model>Updated` or `<Model>Deleted`.
    pub event_type: String,
    /// Kind of change.
    pub kind: EventKind,
    /// The record's version after the event.
    pub version: u64,
    /// The change itself.
    pub event_data: Value,
    /// Server time of the write, RFC 3339.
    pub created_at: String,
    /// The node that accepted the write.
    pub node_id: String,
    /// Who wrote.
    pub principal: Actor,
    /// The `Idempotency-Key` the write was sent with (digests): rebuilds the window of
    /// remembered keys at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<Box<super::decide::IdempotencyKey>>,
    /// The transaction the event is part of (an action's writes, decided together), if
    /// it is: its events are consecutive in the log, the first one carries its id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction: Option<Transaction>,
}

/// Where an event stands in a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    /// The transaction's id: its first event's `event_id`.
    pub id: Uuid,
    /// How many events (writes) it made.
    pub writes: u32,
}

/// The changes between two records: field -> `{old, new}` (absent values as null).
pub fn changes(old: &Record, new: &Record) -> Map<String, Value> {
    let mut out = Map::new();
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        if matches!(k.as_str(), "updated_at" | "version") {
            continue;
        }
        let (o, n) = (old.get(k), new.get(k));
        if o != n {
            let mut c = Map::new();
            c.insert("old".into(), o.cloned().unwrap_or(Value::Null));
            c.insert("new".into(), n.cloned().unwrap_or(Value::Null));
            out.insert(k.clone(), Value::Object(c));
        }
    }
    out
}

impl Event {
    /// Applies the event to the previous state of its record.
    pub fn apply(&self, previous: Option<&Record>) -> Option<Record> {
        match self.kind {
            EventKind::Created => self.event_data.as_object().cloned(),
            EventKind::Deleted => None,
            EventKind::Updated => {
                let mut r = previous.cloned()?;
                if let Some(changes) = self.event_data.get("changes").and_then(Value::as_object) {
                    for (k, c) in changes {
                        match c.get("new") {
                            Some(Value::Null) | None => {
                                r.remove(k);
                            }
                            Some(v) => {
                                r.insert(k.clone(), v.clone());
                            }
                        }
                    }
                }
                if let Some(at) = self.event_data.get("updated_at") {
                    r.insert("updated_at".into(), at.clone());
                }
                r.insert("version".into(), Value::from(self.version));
                Some(r)
            }
        }
    }
}
