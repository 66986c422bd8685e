//! Decisions that depend on state: unique values, versions (If-Match), refs.
//!
//! They are taken here, in log order, on a command that the proposing node has already
//! stamped (event id, time, node), so every replica that applies the same log decides the
//! same and writes the same events.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use super::event::{self, Actor, Event, EventKind, Record, FORMAT};
use super::row::Stored;
use super::state::{SortKey, State};
use super::{record_id, version_of, Command, Refused};
use crate::spec::ServiceSpec;

/// A command as proposed: stamped by the node that received it, so applying it is
/// deterministic everywhere.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Stamped {
    /// The write.
    pub command: Command,
    /// Who asked.
    pub actor: Actor,
    /// The id the event will carry.
    pub event_id: Uuid,
    /// The time the event will carry (RFC 3339).
    pub at: String,
    /// The node that accepted the write.
    pub node_id: String,
    /// The request's `Idempotency-Key`, if it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<IdempotencyKey>,
    /// The trace of a traced request's write (its `traceparent`): a follower hands it to
    /// the leader with the command, and the apply span goes under it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<crate::telemetry::Traced>,
}

/// An `Idempotency-Key` as the state machine remembers it: digests, so that neither the
/// key nor the request is kept in clear.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IdempotencyKey {
    /// Who sent the key, to which route, and the key itself (SHA-256, hex).
    pub id: String,
    /// The request the key was first sent with (SHA-256 of the body, hex): the same key
    /// with another request is refused.
    pub request: String,
}

impl IdempotencyKey {
    /// The key `key` sent by `principal` to `route` with body `body`.
    pub fn new(principal: &str, route: &str, key: &str, body: &[u8]) -> Self {
        use sha2::{Digest, Sha256};
        let mut id = Sha256::new();
        for part in [principal, route, key] {
            id.update((part.len() as u64).to_le_bytes());
            id.update(part.as_bytes());
        }
        IdempotencyKey {
            id: hex::encode(id.finalize()),
            request: hex::encode(Sha256::digest(body)),
        }
    }

    /// The key of commit number `n` (from 0) of an action sent with this key: an action
    /// run again with the same key commits under the same keys, so each of its
    /// transactions is answered with the first run's events instead of being written
    /// again. The request digest stays the action's.
    pub fn nth_commit(&self, n: u64) -> Self {
        use sha2::{Digest, Sha256};
        let mut derived = Sha256::new();
        derived.update(self.id.as_bytes());
        derived.update(b"commit");
        derived.update(n.to_le_bytes());
        IdempotencyKey {
            id: hex::encode(derived.finalize()),
            request: self.request.clone(),
        }
    }

    /// The id of the `n`th record (from 0) an action sent with this key creates: a retry
    /// creates the same ids, so its answer names the records the first run created.
    pub fn nth_record(&self, n: u64) -> Uuid {
        digest_id(&[self.id.as_bytes(), b"record", &n.to_le_bytes()])
    }
}

/// An id derived from `id` and `n`: the event id of write `n` of a transaction, alike on
/// every replica.
pub fn derived_id(id: &Uuid, n: u64) -> Uuid {
    digest_id(&[id.as_bytes(), &n.to_le_bytes()])
}

/// A version-4 UUID made of the SHA-256 of `parts`.
fn digest_id(parts: &[&[u8]]) -> Uuid {
    use sha2::{Digest, Sha256};
    let mut digest = Sha256::new();
    for part in parts {
        digest.update(part);
    }
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest.finalize()[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// A decided write: its event and the record it leaves (None: deleted).
pub type Decided = (Event, Option<Arc<Stored>>);

/// Field names with their ref targets and unique flags, per model, for decisions.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    unique: HashMap<String, Vec<String>>,
    refs: HashMap<String, Vec<(String, String, bool)>>,
}

impl Rules {
    /// The rules of every model of `spec`.
    pub fn new(spec: &ServiceSpec) -> Self {
        use crate::spec::FieldType;
        let mut r = Rules::default();
        for m in &spec.models {
            r.unique.insert(
                m.name.clone(),
                m.fields
                    .iter()
                    .filter(|f| f.unique)
                    .map(|f| f.name.clone())
                    .collect(),
            );
            let refs = m
                .fields
                .iter()
                .filter_map(|f| match &f.ty {
                    FieldType::Ref { model } => Some((f.name.clone(), model.clone(), false)),
                    FieldType::List { item } => match &**item {
                        FieldType::Ref { model } => Some((f.name.clone(), model.clone(), true)),
                        _ => None,
                    },
                    _ => None,
                })
                .collect();
            r.refs.insert(m.name.clone(), refs);
        }
        r
    }
}

/// The batch's effects not yet in the shared state.
#[derive(Default)]
pub struct Overlay {
    records: HashMap<(String, Uuid), Option<Arc<Stored>>>,
    claims: HashMap<(String, String, SortKey), Option<Uuid>>,
}

/// Decides commands against a state (plus the effects of the batch so far).
#[derive(Clone, Debug)]
pub struct Decider {
    rules: Rules,
    /// Per former model name (`renamed_from`): the model's name now. A command proposed
    /// before the rename (still in the Raft log at a restart) is the renamed model's.
    renamed: std::collections::HashMap<String, String>,
}

impl Decider {
    /// A decider for `spec`.
    pub fn new(spec: &ServiceSpec) -> Self {
        Decider {
            rules: Rules::new(spec),
            renamed: spec.renamed_models(),
        }
    }

    fn current(
        &self,
        state: &State,
        overlay: &Overlay,
        model: &str,
        id: Uuid,
    ) -> Option<Arc<Stored>> {
        match overlay.records.get(&(model.to_string(), id)) {
            Some(r) => r.clone(),
            None => state.get(model, id),
        }
    }

    fn holder(
        &self,
        state: &State,
        overlay: &Overlay,
        model: &str,
        field: &str,
        key: &SortKey,
    ) -> Option<Uuid> {
        if let Some(c) = overlay
            .claims
            .get(&(model.to_string(), field.to_string(), key.clone()))
        {
            return *c;
        }
        let index = state.models.get(model)?.index(field)?;
        // Ids whose record the transaction already changed are judged by the overlay:
        // the value they have now (a moved value is in `claims` above).
        index
            .holders(key)
            .find(|id| match overlay.records.get(&(model.to_string(), *id)) {
                None => true,
                Some(Some(now)) => SortKey::of(now.get(field).as_ref()) == *key,
                Some(None) => false,
            })
    }

    /// Decides a transaction (`Command::Together` in `p`), its events numbered from
    /// `first_seq`: every write in order, each seeing the ones before it, and either all
    /// of them (their events, marked with the transaction, and the records they leave) or
    /// the first refusal. Nothing is published here, so a refusal leaves no trace.
    pub fn decide_together(
        &self,
        state: &State,
        p: &mut Stamped,
        first_seq: u64,
    ) -> Result<Vec<Decided>, Refused> {
        let writes = match &mut p.command {
            Command::Together { writes } => std::mem::take(writes),
            _ => return Err(Refused::Storage("not a transaction".into())),
        };
        let count = u32::try_from(writes.len())
            .map_err(|_| Refused::Storage("a transaction of too many writes".into()))?;
        let transaction = event::Transaction {
            id: p.event_id,
            writes: count,
        };
        let mut overlay = Overlay::default();
        let mut decided = Vec::with_capacity(writes.len());
        for (n, command) in writes.into_iter().enumerate() {
            // The first write carries the transaction's id and key; the others have ids
            // derived from it, alike on every replica.
            let mut one = Stamped {
                command,
                actor: p.actor.clone(),
                event_id: if n == 0 {
                    p.event_id
                } else {
                    derived_id(&p.event_id, n as u64)
                },
                at: p.at.clone(),
                node_id: p.node_id.clone(),
                key: if n == 0 { p.key.clone() } else { None },
                trace: None,
            };
            let (mut event, stored) = self
                .decide(state, &mut overlay, &mut one, first_seq + n as u64)
                .map_err(|refused| Refused::InTransaction {
                    write: n,
                    refused: Box::new(refused),
                })?;
            event.transaction = Some(transaction);
            decided.push((event, stored));
        }
        Ok(decided)
    }

    /// Decides one command: the event it makes and the record it leaves (None: deleted).
    pub fn decide(
        &self,
        state: &State,
        overlay: &mut Overlay,
        p: &mut Stamped,
        seq: u64,
    ) -> Result<Decided, Refused> {
        let now = p.at.clone();
        let actor = p.actor.clone();
        let named = match &mut p.command {
            Command::Create { model, .. }
            | Command::Replace { model, .. }
            | Command::Delete { model, .. } => model,
            Command::Together { .. } => {
                return Err(Refused::Storage(
                    "a transaction was proposed inside a transaction".into(),
                ))
            }
        };
        if let Some(now) = self.renamed.get(named.as_str()) {
            *named = now.clone();
        }
        let (model, id, old, new, kind) = match &mut p.command {
            Command::Create { model, record } => {
                let id = record_id(record)?;
                if self.current(state, overlay, model, id).is_some() {
                    return Err(Refused::Storage(format!("record {id} exists already")));
                }
                (
                    model,
                    id,
                    None,
                    Some(std::mem::take(record)),
                    EventKind::Created,
                )
            }
            Command::Replace {
                model,
                id,
                record,
                expected_version,
                from_client,
            } => {
                let old = self
                    .current(state, overlay, model, *id)
                    .ok_or(Refused::NotFound)?;
                let current = old.version();
                if current != *expected_version {
                    return Err(Refused::VersionMismatch {
                        current,
                        from_client: *from_client,
                    });
                }
                (
                    model,
                    *id,
                    Some(old),
                    Some(std::mem::take(record)),
                    EventKind::Updated,
                )
            }
            Command::Delete {
                model,
                id,
                expected_version,
            } => {
                let old = self
                    .current(state, overlay, model, *id)
                    .ok_or(Refused::NotFound)?;
                let current = old.version();
                if expected_version.is_some_and(|v| v != current) {
                    return Err(Refused::VersionMismatch {
                        current,
                        from_client: true,
                    });
                }
                (model, *id, Some(old), None, EventKind::Deleted)
            }
            Command::Together { .. } => unreachable!("refused above"),
        };
        if let Some(new) = &new {
            for field in self.rules.unique.get(model).into_iter().flatten() {
                if let Some(v) = new.get(field).filter(|v| !v.is_null()) {
                    if let Some(holder) = self
                        .holder(state, overlay, model, field, &SortKey::of(Some(v)))
                        .filter(|h| *h != id)
                    {
                        return Err(Refused::Unique {
                            field: field.clone(),
                            holder,
                        });
                    }
                }
            }
            for (field, target, is_list) in self.rules.refs.get(model).into_iter().flatten() {
                let values: Vec<(String, &Value)> = match new.get(field) {
                    Some(Value::Array(items)) if *is_list => items
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (format!("{field}[{i}]"), v))
                        .collect(),
                    Some(v) if !v.is_null() => vec![(field.clone(), v)],
                    _ => Vec::new(),
                };
                for (at, v) in values {
                    let target_id = v.as_str().and_then(|s| Uuid::parse_str(s).ok());
                    let exists = target_id
                        .is_some_and(|t| self.current(state, overlay, target, t).is_some());
                    if !exists {
                        return Err(Refused::MissingRef {
                            field: at,
                            model: target.clone(),
                            id: v.as_str().unwrap_or("").to_string(),
                        });
                    }
                }
            }
        }
        let layout = state
            .models
            .get(model.as_str())
            .map(|ms| ms.layout.clone())
            .ok_or_else(|| Refused::Storage(format!("this node has no model {model}")))?;
        let old_record: Option<Record> = old.as_ref().map(|o| o.record());
        // Record the batch's effects for the commands after this one.
        for field in self.rules.unique.get(model).into_iter().flatten() {
            let old_key = old_record
                .as_ref()
                .and_then(|o| o.get(field))
                .filter(|v| !v.is_null())
                .map(|v| SortKey::of(Some(v)));
            let new_key = new
                .as_ref()
                .and_then(|n| n.get(field))
                .filter(|v| !v.is_null())
                .map(|v| SortKey::of(Some(v)));
            if old_key != new_key {
                if let Some(k) = old_key {
                    overlay
                        .claims
                        .insert((model.clone(), field.clone(), k), None);
                }
                if let Some(k) = new_key {
                    overlay
                        .claims
                        .insert((model.clone(), field.clone(), k), Some(id));
                }
            }
        }
        let version = match &new {
            Some(n) => version_of(n),
            None => old.as_ref().map(|o| o.version() + 1).unwrap_or(1),
        };
        let event_data = match (&old_record, new, kind) {
            (_, Some(n), EventKind::Created) => Value::Object(n),
            (Some(o), Some(n), EventKind::Updated) => json!({
                "changes": event::changes(o, &n),
                "updated_at": n.get("updated_at").cloned().unwrap_or(Value::Null),
            }),
            // A tombstone keeps what it removed: the audit log and the change feed show
            // the old values without replaying the record.
            (Some(o), None, EventKind::Deleted) => json!({ "old": o }),
            _ => json!({}),
        };
        let suffix = match kind {
            EventKind::Created => "Created",
            EventKind::Updated => "Updated",
            EventKind::Deleted => "Deleted",
        };
        let event = Event {
            format: FORMAT,
            event_id: p.event_id,
            sequence_number: seq,
            aggregate_id: id,
            model: model.clone(),
            event_type: format!("{model}{suffix}"),
            kind,
            version,
            event_data,
            created_at: now,
            node_id: p.node_id.clone(),
            principal: actor,
            idempotency_key: p.key.clone().map(Box::new),
            transaction: None,
        };
        // The record is what the event makes of the old one, exactly as a replay of the
        // log makes it (a field set to null, for one, is left out).
        let stored = match (&event.kind, event.event_data.as_object()) {
            // A created record is its event's data: encoded from there when it lacks no
            // default (the engine filled them in), without a copy.
            (EventKind::Created, Some(created)) if !state.lacks_defaults(model, created) => {
                Some(Arc::new(Stored::encode(&layout, created)))
            }
            _ => event.apply(old_record.as_ref()).map(|mut next| {
                state.upcast(model, &mut next);
                Arc::new(Stored::encode(&layout, &next))
            }),
        };
        overlay.records.insert((model.clone(), id), stored.clone());
        Ok((event, stored))
    }
}
