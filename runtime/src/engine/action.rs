//! What an action's handler reaches: the records of every model, and writes that are one
//! transaction.
//!
//! A handler reads through its [`ActionContext`] (`get`) and stages writes (`create`,
//! `update`, `patch`, `delete`, of any model). Each staged write goes through what the
//! HTTP API's write would (the schema's rules, the model's `before_*` hook, stamping)
//! and is seen by the handler's later reads, but nothing is written yet. `commit` proposes
//! the staged writes as one Raft entry; the state machine decides them together, in order
//! (versions, unique values, refs), and makes all of them or none. Writes still staged
//! when the handler returns `Ok` are committed then; when it returns an error, they are
//! dropped.
//!
//! A record read and then written is written against the version read: if another write
//! changed it in between, the transaction is refused with 409 and nothing is written (the
//! client runs the action again), rather than overwriting that write.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{metadata_stripped, Engine};
use crate::auth::{Access, Principal};
use crate::domain::decide::IdempotencyKey;
use crate::domain::event::{Event, EventKind, Record};
use crate::domain::version_of;
use crate::error::ApiError;
use crate::hooks::HookContext;
use crate::spec::Operation;
use crate::store::{Command, Refused};
use crate::validate::{self, Mode};

/// The most writes one transaction may hold.
pub const MAX_WRITES: usize = 1000;

/// A record struct of the generated code: the model it is a record of. lithair-gen
/// implements it for every model's struct, so an action names what it reads and writes
/// by type: `ctx.get::<Product>(id)`.
pub trait ModelRecord: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The model's name in the schema.
    const MODEL: &'static str;
}

/// An action's access to the records: reads of any model, and writes staged into one
/// transaction (see the module's documentation). Clones share the transaction.
#[derive(Clone)]
pub struct ActionContext {
    engine: Arc<Engine>,
    /// The caller.
    pub principal: Principal,
    /// The action's model.
    pub model: String,
    /// The action's name (its writes carry it into the event log and the audit log).
    pub action: String,
    /// The request's `Idempotency-Key`: a retry with it creates the same ids and is
    /// answered with the first run's events instead of writing again.
    key: Option<IdempotencyKey>,
    staged: Arc<Mutex<Staged>>,
}

/// The writes staged so far, in order, each record at most once.
#[derive(Default)]
struct Staged {
    writes: Vec<Option<Write>>,
    /// Where each staged record's write is.
    at: HashMap<(String, Uuid), usize>,
    /// Transactions committed so far (a retry's keys follow the same count).
    commits: u64,
    /// Records created so far (a retry creates the same ids).
    created: u64,
}

/// A staged write.
#[derive(Clone)]
enum Write {
    Create {
        model: String,
        record: Record,
    },
    Replace {
        model: String,
        old: Record,
        record: Record,
        expected: u64,
    },
    Delete {
        model: String,
        old: Record,
        expected: u64,
    },
}

impl Write {
    fn model(&self) -> &str {
        match self {
            Write::Create { model, .. }
            | Write::Replace { model, .. }
            | Write::Delete { model, .. } => model,
        }
    }

    /// The record as the handler sees it after this write (None: deleted).
    fn after(&self) -> Option<&Record> {
        match self {
            Write::Create { record, .. } | Write::Replace { record, .. } => Some(record),
            Write::Delete { .. } => None,
        }
    }

    /// Whether `ev` is this write's own event, not a first run's answered again: the
    /// stamped time matches (a delete carries none; its version must follow).
    fn made(&self, ev: &Event) -> bool {
        let stamped = |r: &Record| r.get("updated_at").cloned();
        match self {
            Write::Create { record, .. } => {
                stamped(record) == ev.event_data.get("updated_at").cloned()
            }
            Write::Replace { record, .. } => {
                stamped(record) == ev.event_data.get("updated_at").cloned()
            }
            Write::Delete { expected, .. } => *expected + 1 == ev.version,
        }
    }

    fn command(&self, id: Uuid) -> Command {
        match self.clone() {
            Write::Create { model, record } => Command::Create { model, record },
            Write::Replace {
                model,
                record,
                expected,
                ..
            } => Command::Replace {
                model,
                id,
                record,
                expected_version: expected,
                from_client: false,
            },
            Write::Delete {
                model, expected, ..
            } => Command::Delete {
                model,
                id,
                expected_version: Some(expected),
            },
        }
    }
}

/// What a committed transaction left: each record it wrote, as its event made it.
#[derive(Clone, Debug, Default)]
pub struct Committed {
    records: Vec<(String, Uuid, Option<Record>)>,
    events: Vec<Event>,
}

impl Committed {
    /// Record `id` of `T`'s model as the transaction left it: a 404 when the transaction
    /// deleted it, an error when it did not write it.
    pub fn get<T: ModelRecord>(&self, id: Uuid) -> Result<T, ApiError> {
        match self.record(T::MODEL, id) {
            Some(Some(r)) => T::deserialize(r).map_err(|e| {
                ApiError::internal(format!(
                    "a committed {} does not fit its struct: {e}",
                    T::MODEL
                ))
            }),
            Some(None) => Err(ApiError::not_found(format!(
                "the action deleted {} {id}",
                T::MODEL
            ))),
            None => Err(ApiError::internal(format!(
                "the action's transaction did not write {} {id}",
                T::MODEL
            ))),
        }
    }

    /// Record `id` of `model` as the transaction left it: `Some(None)` when it deleted
    /// it, `None` when it did not write it.
    pub fn record(&self, model: &str, id: Uuid) -> Option<Option<&Record>> {
        self.records
            .iter()
            .find(|(m, i, _)| m == model && *i == id)
            .map(|(_, _, r)| r.as_ref())
    }

    /// The transaction's events, in log order.
    pub fn events(&self) -> &[Event] {
        &self.events
    }
}

impl ActionContext {
    /// The context of action `action` of `model`, run for `principal` (with the request's
    /// `Idempotency-Key`, if it sent one).
    pub(crate) fn new(
        engine: Arc<Engine>,
        principal: Principal,
        model: &str,
        action: &str,
        key: Option<IdempotencyKey>,
    ) -> Self {
        ActionContext {
            engine,
            principal,
            model: model.to_string(),
            action: action.to_string(),
            key,
            staged: Arc::default(),
        }
    }

    fn staged(&self) -> std::sync::MutexGuard<'_, Staged> {
        self.staged.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn hook_context(&self, model: &str, operation: Operation) -> HookContext {
        HookContext {
            principal: self.principal.clone(),
            model: model.to_string(),
            operation,
            action: Some(self.action.clone()),
        }
    }

    /// The record as the handler sees it: its staged write's, or the store's.
    fn view(&self, model: &str, id: Uuid) -> Option<Record> {
        let staged = self.staged();
        match staged.at.get(&(model.to_string(), id)) {
            Some(&n) => staged.writes[n].as_ref().and_then(|w| w.after().cloned()),
            None => self.engine.get(model, id).map(|r| r.record()),
        }
    }

    /// Record `id` of `T`'s model: as this action's staged writes left it, or as stored.
    pub fn get<T: ModelRecord>(&self, id: Uuid) -> Result<Option<T>, ApiError> {
        self.view(T::MODEL, id).map(|r| typed(&r)).transpose()
    }

    /// Record `id` of `model`, as JSON (see [`ActionContext::get`]).
    pub fn get_json(&self, model: &str, id: Uuid) -> Option<Value> {
        self.view(model, id).map(Value::Object)
    }

    /// Stages the creation of a record of `T`'s model from `fields` (a create's body:
    /// checked against the schema, through the model's `before_create`), and answers it
    /// with its id, as it will be stored.
    pub fn create<T: ModelRecord>(&self, fields: &impl Serialize) -> Result<T, ApiError> {
        let body = serde_json::to_value(fields).map_err(ApiError::internal)?;
        typed(&self.create_record(T::MODEL, body)?)
    }

    /// [`ActionContext::create`] with a JSON body, for model `model`.
    pub fn create_json(&self, model: &str, body: Value) -> Result<Value, ApiError> {
        self.create_record(model, body).map(Value::Object)
    }

    fn create_record(&self, model: &str, body: Value) -> Result<Record, ApiError> {
        let engine = &self.engine;
        let spec = engine.model(model)?;
        let fields = validate::check_body(&engine.spec, spec, body, Mode::Create, None)?;
        let id = {
            let mut staged = self.staged();
            let n = staged.created;
            staged.created += 1;
            self.key
                .as_ref()
                .map_or_else(Uuid::new_v4, |k| k.nth_record(n))
        };
        let ctx = self.hook_context(model, Operation::Create);
        let record = engine.new_record(&ctx, spec, fields, id)?;
        self.stage(
            model,
            id,
            Write::Create {
                model: model.to_string(),
                record: record.clone(),
            },
        )?;
        Ok(record)
    }

    /// Stages the replacement of a record by `record` (its struct as read, with the
    /// fields changed): written against the version it was read at, checked against the
    /// schema, through the model's `before_update`. Answers it as it will be stored.
    pub fn update<T: ModelRecord>(&self, record: &T) -> Result<T, ApiError> {
        let body = serde_json::to_value(record).map_err(ApiError::internal)?;
        typed(&self.replace_record(T::MODEL, body, Operation::Update)?)
    }

    /// [`ActionContext::update`] with the record as JSON (with its `id` and the `version`
    /// it was read at), for model `model`.
    pub fn update_json(&self, model: &str, record: Value) -> Result<Value, ApiError> {
        self.replace_record(model, record, Operation::Update)
            .map(Value::Object)
    }

    /// Stages a JSON merge patch of record `id` of `T`'s model, as `PATCH` would apply
    /// it (against the record as the handler sees it now). Answers the record as it will
    /// be stored.
    pub fn patch<T: ModelRecord>(&self, id: Uuid, patch: Value) -> Result<T, ApiError> {
        typed(&self.patch_record(T::MODEL, id, patch)?)
    }

    /// [`ActionContext::patch`] for model `model`, as JSON.
    pub fn patch_json(&self, model: &str, id: Uuid, patch: Value) -> Result<Value, ApiError> {
        self.patch_record(model, id, patch).map(Value::Object)
    }

    fn patch_record(&self, model: &str, id: Uuid, patch: Value) -> Result<Record, ApiError> {
        if !patch.is_object() {
            return Err(ApiError::internal(
                "an action's merge patch must be a JSON object",
            ));
        }
        let current = self
            .view(model, id)
            .ok_or_else(|| ApiError::not_found(format!("no {model} with id {id}")))?;
        let mut merged = Value::Object(current);
        validate::merge_patch(&mut merged, &patch);
        self.replace_record(model, merged, Operation::Patch)
    }

    fn replace_record(
        &self,
        model: &str,
        body: Value,
        operation: Operation,
    ) -> Result<Record, ApiError> {
        let engine = &self.engine;
        let spec = engine.model(model)?;
        let Value::Object(body) = body else {
            return Err(ApiError::internal(
                "an action wrote a record that is not a JSON object",
            ));
        };
        let id = body
            .get("id")
            .and_then(Value::as_str)
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| {
                ApiError::internal(format!("an action wrote a {model} without its id"))
            })?;
        let read_at = version_of(&body);
        let current = self
            .view(model, id)
            .ok_or_else(|| ApiError::not_found(format!("no {model} with id {id}")))?;
        let now_at = version_of(&current);
        if read_at != now_at {
            return Err(changed(model, id, now_at));
        }
        // The version the record will have: one more than stored, however often the
        // action changes it (its staged writes of one record are one write).
        let base = match self.staged_write(model, id) {
            Some(Write::Create { .. }) => 0,
            Some(Write::Replace { expected, .. }) => expected,
            _ => now_at,
        };
        let ctx = self.hook_context(model, operation);
        let input = Value::Object(metadata_stripped(body));
        let record = engine.replacement(&ctx, spec, &current, input, base, &Access::default())?;
        let write = match self.staged_write(model, id) {
            Some(Write::Create { .. }) => Write::Create {
                model: model.to_string(),
                record: record.clone(),
            },
            Some(Write::Replace { old, expected, .. }) => Write::Replace {
                model: model.to_string(),
                old,
                record: record.clone(),
                expected,
            },
            _ => Write::Replace {
                model: model.to_string(),
                old: current,
                record: record.clone(),
                expected: now_at,
            },
        };
        self.stage(model, id, write)?;
        Ok(record)
    }

    /// Stages the deletion of record `id` of `T`'s model (through the model's
    /// `before_delete`), against the version the handler sees now.
    pub fn delete<T: ModelRecord>(&self, id: Uuid) -> Result<(), ApiError> {
        self.delete_json(T::MODEL, id)
    }

    /// [`ActionContext::delete`] for model `model`.
    pub fn delete_json(&self, model: &str, id: Uuid) -> Result<(), ApiError> {
        self.engine.model(model)?;
        let current = self
            .view(model, id)
            .ok_or_else(|| ApiError::not_found(format!("no {model} with id {id}")))?;
        let ctx = self.hook_context(model, Operation::Delete);
        self.engine.hooks(model).before_delete(&ctx, &current)?;
        let write = match self.staged_write(model, id) {
            // Created and deleted by the same transaction: nothing to write.
            Some(Write::Create { .. }) => {
                let mut staged = self.staged();
                if let Some(n) = staged.at.remove(&(model.to_string(), id)) {
                    staged.writes[n] = None;
                }
                return Ok(());
            }
            Some(Write::Replace { old, expected, .. }) => Write::Delete {
                model: model.to_string(),
                old,
                expected,
            },
            _ => Write::Delete {
                model: model.to_string(),
                expected: version_of(&current),
                old: current,
            },
        };
        self.stage(model, id, write)
    }

    fn staged_write(&self, model: &str, id: Uuid) -> Option<Write> {
        let staged = self.staged();
        let n = *staged.at.get(&(model.to_string(), id))?;
        staged.writes[n].clone()
    }

    fn stage(&self, model: &str, id: Uuid, write: Write) -> Result<(), ApiError> {
        let mut staged = self.staged();
        match staged.at.get(&(model.to_string(), id)) {
            Some(&n) => staged.writes[n] = Some(write),
            None => {
                if staged.at.len() >= MAX_WRITES {
                    return Err(ApiError::internal(format!(
                        "action {} writes more than {MAX_WRITES} records in one transaction",
                        self.action
                    )));
                }
                let n = staged.writes.len();
                staged.writes.push(Some(write));
                staged.at.insert((model.to_string(), id), n);
            }
        }
        Ok(())
    }

    /// Whether writes are staged and not committed yet.
    pub fn pending(&self) -> bool {
        !self.staged().at.is_empty()
    }

    /// Commits the staged writes as one transaction: proposed as one Raft entry, decided
    /// together, all or nothing, durable per the `sync` setting when this returns.
    /// Answers the records as the transaction left them. A record another write changed
    /// since the action read it is a 409, a taken unique value a 409, a missing ref a
    /// 422, and then nothing was written. With nothing staged, writes nothing.
    pub async fn commit(&self) -> Result<Committed, ApiError> {
        let (writes, key) = {
            let mut staged = self.staged();
            let mut ids: Vec<((String, Uuid), usize)> = staged.at.drain().collect();
            ids.sort_by_key(|(_, n)| *n);
            let writes: Vec<(Uuid, Write)> = ids
                .into_iter()
                .filter_map(|((_, id), n)| staged.writes[n].take().map(|w| (id, w)))
                .collect();
            staged.writes.clear();
            if writes.is_empty() {
                return Ok(Committed::default());
            }
            let n = staged.commits;
            staged.commits += 1;
            (writes, self.key.as_ref().map(|k| k.nth_commit(n)))
        };
        let engine = &self.engine;
        let actor = Engine::actor(&self.hook_context(&self.model, Operation::Update));
        let commands: Vec<Command> = writes.iter().map(|(id, w)| w.command(*id)).collect();
        let answered = if commands.len() == 1 {
            let command = commands
                .into_iter()
                .next()
                .ok_or_else(|| ApiError::internal("no write"))?;
            engine
                .store
                .propose_once(command, actor, key)
                .await
                .map(|ev| vec![ev])
        } else {
            engine.store.propose_together(commands, actor, key).await
        };
        let events = answered.map_err(|r| {
            let (write, refused) = match r {
                Refused::InTransaction { write, refused } => (write, *refused),
                other => (0, other),
            };
            let (id, w) = &writes[write.min(writes.len() - 1)];
            self.refusal(w.model(), *id, refused)
        })?;
        Ok(self.committed(&writes, events))
    }

    /// Why the transaction was refused, for the write of record `id` of `model`.
    fn refusal(&self, model: &str, id: Uuid, refused: Refused) -> ApiError {
        match refused {
            Refused::VersionMismatch { current, .. } => changed(model, id, current),
            Refused::NotFound => ApiError::new(
                409,
                "Conflict",
                format!("{model} {id} was deleted while the action ran; nothing was written: run the action again"),
            ),
            other => match self.engine.spec.model(model) {
                Some(spec) => self.engine.refused(spec, other),
                None => ApiError::internal(format!("no model {model}")),
            },
        }
    }

    /// The records the transaction's `events` left, and its `after_*` hooks run.
    fn committed(&self, writes: &[(Uuid, Write)], events: Vec<Event>) -> Committed {
        let engine = &self.engine;
        let mut records = Vec::with_capacity(events.len());
        for ev in &events {
            let staged = writes
                .iter()
                .find(|(id, w)| *id == ev.aggregate_id && w.model() == ev.model)
                .map(|(_, w)| w);
            let stored = engine
                .get(&ev.model, ev.aggregate_id)
                .filter(|r| r.version() == ev.version)
                .map(|r| r.record());
            let after = match ev.kind {
                EventKind::Deleted => None,
                // The record as this event made it; for a retry answered with the first
                // run's events, as it is now when that differs.
                EventKind::Created => stored.or_else(|| ev.event_data.as_object().cloned()),
                EventKind::Updated => stored
                    .or_else(|| match staged {
                        Some(Write::Replace { old, expected, .. })
                            if *expected + 1 == ev.version =>
                        {
                            ev.apply(Some(old))
                        }
                        _ => None,
                    })
                    .or_else(|| engine.get(&ev.model, ev.aggregate_id).map(|r| r.record())),
            };
            // A retry answered with the first run's events wrote nothing: its hooks do
            // not run again.
            if let Some(write) = staged.filter(|w| w.made(ev)) {
                let hooks = engine.hooks(&ev.model);
                match (write, &after) {
                    (Write::Create { .. }, Some(new)) => {
                        hooks.after_create(&self.hook_context(&ev.model, Operation::Create), new)
                    }
                    (Write::Replace { old, .. }, Some(new)) => hooks.after_update(
                        &self.hook_context(&ev.model, Operation::Update),
                        old,
                        new,
                    ),
                    (Write::Delete { old, .. }, None) => {
                        hooks.after_delete(&self.hook_context(&ev.model, Operation::Delete), old)
                    }
                    _ => {}
                }
            }
            records.push((ev.model.clone(), ev.aggregate_id, after));
        }
        Committed { records, events }
    }
}

/// The 409 of a record that changed while the action ran.
fn changed(model: &str, id: Uuid, now_at: u64) -> ApiError {
    ApiError::new(
        409,
        "Conflict",
        format!("{model} {id} changed while the action ran (it is at version {now_at} now); nothing was written: run the action again"),
    )
}

fn typed<T: DeserializeOwned>(record: &Map<String, Value>) -> Result<T, ApiError> {
    T::deserialize(record)
        .map_err(|e| ApiError::internal(format!("a record does not fit its struct: {e}")))
}

impl std::fmt::Debug for ActionContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActionContext")
            .field("principal", &self.principal)
            .field("model", &self.model)
            .field("action", &self.action)
            .finish()
    }
}
