//! The service's operations on records, between HTTP and the store: validation, user
//! hooks, leader-stamped ids and timestamps, then a command proposed to the store.
//!
//! A handler never writes state itself: it builds a [`Command`] and `propose`s it to the
//! node's Raft group; the state machine decides what depends on state (unique values,
//! versions, refs) when it applies the committed command, identically on every replica.
//!
//! An action's writes are staged in its context and proposed together as one
//! transaction (`action.rs`).

pub mod action;

use crate::clock::Instant;
use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::auth::Access;
use crate::domain::decide::IdempotencyKey;
use crate::domain::event::{Actor, Record};
use crate::domain::row::Stored;
use crate::domain::{Stage, Stages};
use crate::error::ApiError;
use crate::hooks::{HookContext, ModelHooks, NoHooks};
use crate::spec::{CompiledSpec, ModelSpec};
use crate::store::{Command, Refused, Store};
use crate::validate::{self, Mode};

/// How often a write computed from a stale read is retried before giving up with 409.
const MAX_RETRIES: usize = 8;

/// The service's core: spec, hooks and store.
pub struct Engine {
    /// The compiled schema.
    pub spec: Arc<CompiledSpec>,
    hooks: HashMap<String, Box<dyn ModelHooks>>,
    /// The store.
    pub store: Store,
}

impl Engine {
    /// Assembles an engine.
    pub fn new(
        spec: Arc<CompiledSpec>,
        hooks: HashMap<String, Box<dyn ModelHooks>>,
        store: Store,
    ) -> Self {
        Engine { spec, hooks, store }
    }

    /// Where the stages' times go.
    pub(crate) fn stages(&self) -> &Stages {
        &self.store.stats.stages
    }

    /// The hooks of `model`.
    pub fn hooks(&self, model: &str) -> &dyn ModelHooks {
        self.hooks
            .get(model)
            .map(|h| h.as_ref())
            .unwrap_or(&NoHooks)
    }

    pub(crate) fn model(&self, name: &str) -> Result<&ModelSpec, ApiError> {
        self.spec
            .model(name)
            .ok_or_else(|| ApiError::not_found(format!("no model {name}")))
    }

    /// A record.
    pub fn get(&self, model: &str, id: Uuid) -> Option<Arc<Stored>> {
        self.store.get(model, id)
    }

    pub(crate) fn actor(ctx: &HookContext) -> Actor {
        Actor {
            name: ctx.principal.name.clone(),
            roles: ctx.principal.roles.clone(),
            action: ctx.action.clone(),
        }
    }

    pub(crate) fn refused(&self, model: &ModelSpec, r: Refused) -> ApiError {
        match r {
            Refused::NotFound => ApiError::not_found(format!("no {} with this id", model.name)),
            Refused::VersionMismatch { current, .. } => {
                ApiError::precondition_failed(format!("the record is at version {current}; fetch it again and retry with If-Match: \"{current}\""))
            }
            Refused::Unique { field, .. } => ApiError::conflict(&field, format!("another {} already has this `{field}`", model.name)),
            Refused::MissingRef { field, model: target, id } => {
                ApiError::unprocessable(&field, "ref", format!("`{field}` refers to {target} {id}, which does not exist"))
            }
            Refused::Storage(e) => ApiError::outcome_unknown(format!("the write could not be completed ({e})")),
            Refused::Fault(f) => ApiError::storage_fault(&f),
            Refused::Timeout => ApiError::outcome_unknown("the write was not answered before the request's deadline"),
            Refused::Overloaded => ApiError::overloaded("too many writes are waiting on this node; nothing was written"),
            Refused::KeyReused => ApiError::unprocessable("", "idempotency_key", "this Idempotency-Key was used before with a different request; use a new key for a new request"),
            Refused::InTransaction { refused, .. } => self.refused(model, *refused),
        }
    }

    /// Waits until this node has applied everything the leader had committed when asked
    /// (a linearizable read barrier).
    async fn confirm(&self) -> Result<(), ApiError> {
        self.store
            .cluster()
            .linearizable()
            .await
            .map_err(|e| ApiError::unavailable(format!("cannot confirm the record's state: {e}")))
    }

    /// Runs the schema check again on what a hook returned.
    fn recheck(
        &self,
        model: &ModelSpec,
        record: &Record,
        old: Option<&Record>,
    ) -> Result<(), ApiError> {
        let fields = metadata_stripped(record.clone());
        validate::check_body(&self.spec, model, Value::Object(fields), Mode::Replace, old)?;
        Ok(())
    }

    /// Creates a record from a request body (checked against the schema first).
    #[cfg(any(test, feature = "testing"))]
    pub async fn create(&self, ctx: &HookContext, body: Value) -> Result<Arc<Stored>, ApiError> {
        let model = self.model(&ctx.model)?;
        let fields = validate::check_body(&self.spec, model, body, Mode::Create, None)?;
        self.create_checked(ctx, fields, None).await
    }

    /// Creates a record from `fields`, a body the schema check has passed (the body stage
    /// of the pipeline checks it). With an idempotency `key`, a request sent again with
    /// the same key is answered with the record the first one created, and nothing is
    /// written again.
    pub async fn create_checked(
        &self,
        ctx: &HookContext,
        fields: Map<String, Value>,
        key: Option<IdempotencyKey>,
    ) -> Result<Arc<Stored>, ApiError> {
        let model = self.model(&ctx.model)?;
        let hooks = self.hooks(&model.name);
        let record = self.new_record(ctx, model, fields, Uuid::new_v4())?;
        let ev = self
            .store
            .propose_once(
                Command::Create {
                    model: model.name.clone(),
                    record,
                },
                Self::actor(ctx),
                key,
            )
            .await
            .map_err(|r| self.refused(model, r))?;
        fail::fail_point!("engine-answer");
        // Normally the committed record; if an update or a delete already followed, or
        // this node has not applied the write yet, the record as it was created.
        let stored = self
            .get(&model.name, ev.aggregate_id)
            .filter(|now| now.version() == ev.version)
            .or_else(|| {
                let created = ev.event_data.as_object()?;
                self.store
                    .read(|s| Some(s.models.get(&model.name)?.encode(created)))
            })
            .ok_or_else(|| ApiError::internal("a created record vanished"))?;
        hooks.after_create(ctx, &stored.record());
        Ok(stored)
    }

    /// A new record `id` of `model` from `fields` (a body the schema check has passed):
    /// stamped (timestamps, version 1), through `before_create` (and the schema check
    /// again, when the hook changed it).
    pub(crate) fn new_record(
        &self,
        ctx: &HookContext,
        model: &ModelSpec,
        fields: Map<String, Value>,
        id: Uuid,
    ) -> Result<Record, ApiError> {
        let now = now();
        let mut record = Map::new();
        record.insert("id".into(), Value::String(id.to_string()));
        record.extend(fields);
        record.insert("created_at".into(), Value::String(now.clone()));
        record.insert("updated_at".into(), Value::String(now));
        record.insert("version".into(), Value::from(1u64));
        let metadata = metadata_of(&record);
        let started = Instant::now();
        let changed = self.hooks(&model.name).before_create(ctx, &mut record);
        self.stages().since(Stage::Hooks, started);
        if changed? {
            restore_metadata(&mut record, metadata);
            self.recheck(model, &record, None)?;
        }
        Ok(record)
    }

    /// The record that replaces `old` (a record of `model`, whose id it keeps) with
    /// `input` (its fields, unchecked) at version `base + 1`: checked against the schema
    /// and what `access` lets the caller set, stamped, through `before_update` (and the
    /// schema check again, when the hook changed it).
    pub(crate) fn replacement(
        &self,
        ctx: &HookContext,
        model: &ModelSpec,
        old: &Record,
        input: Value,
        base: u64,
        access: &Access,
    ) -> Result<Record, ApiError> {
        let started = Instant::now();
        let fields = validate::check_body(&self.spec, model, input, Mode::Replace, Some(old));
        self.stages().since(Stage::Validate, started);
        let fields = fields?;
        access.check_update(&fields, old)?;
        let mut record = Map::new();
        record.insert("id".into(), old.get("id").cloned().unwrap_or(Value::Null));
        record.extend(fields);
        record.insert(
            "created_at".into(),
            old.get("created_at").cloned().unwrap_or(Value::Null),
        );
        record.insert("updated_at".into(), Value::String(now()));
        record.insert("version".into(), Value::from(base + 1));
        let metadata = metadata_of(&record);
        let started = Instant::now();
        let changed = self.hooks(&model.name).before_update(ctx, old, &mut record);
        self.stages().since(Stage::Hooks, started);
        if changed? {
            restore_metadata(&mut record, metadata);
            self.recheck(model, &record, Some(old))?;
        }
        Ok(record)
    }

    /// Replaces (PUT) or patches (PATCH, when `patch` is true) a record, with no field
    /// or row restriction (see [`Engine::update_as`]).
    #[cfg(any(test, feature = "testing"))]
    pub async fn update(
        &self,
        ctx: &HookContext,
        id: Uuid,
        body: Value,
        patch: bool,
        if_match: Option<u64>,
    ) -> Result<Arc<Stored>, ApiError> {
        self.update_once(ctx, id, body, patch, if_match, None, &Access::default())
            .await
    }

    /// Like [`Engine::update`], within what `access` lets the caller do: a record it
    /// does not own is refused, a PUT keeps the fields it may not see or set, and a
    /// change of a field it may not set is a 403.
    pub async fn update_as(
        &self,
        ctx: &HookContext,
        id: Uuid,
        body: Value,
        patch: bool,
        if_match: Option<u64>,
        access: &Access,
    ) -> Result<Arc<Stored>, ApiError> {
        self.update_once(ctx, id, body, patch, if_match, None, access)
            .await
    }

    /// Like [`Engine::update_as`]; with an idempotency `key`, an update sent again with
    /// the same key writes nothing again and is answered with the record as it is.
    #[allow(clippy::too_many_arguments)]
    pub async fn update_once(
        &self,
        ctx: &HookContext,
        id: Uuid,
        body: Value,
        patch: bool,
        if_match: Option<u64>,
        key: Option<IdempotencyKey>,
        access: &Access,
    ) -> Result<Arc<Stored>, ApiError> {
        let model = self.model(&ctx.model)?;
        let hooks = self.hooks(&model.name);
        // This node's state may lag behind the leader's: a missing record or another
        // version is only answered (404, 412) once a linearizable read confirms it.
        let mut confirmed = false;
        for _ in 0..MAX_RETRIES {
            let current = self.get(&model.name, id);
            let stale = match (&current, if_match) {
                (None, _) => true,
                (Some(old), Some(v)) => v != old.version(),
                _ => false,
            };
            if stale && !confirmed {
                self.confirm().await?;
                confirmed = true;
                continue;
            }
            let old = current
                .ok_or_else(|| ApiError::not_found(format!("no {} with this id", model.name)))?;
            let old_version = old.version();
            if let Some(v) = if_match.filter(|v| *v != old_version) {
                return Err(ApiError::precondition_failed(format!(
                    "If-Match names version {v}, but the record is at version {old_version}"
                )));
            }
            let old = old.record();
            if !access.covers(|f| old.get(f).cloned()) {
                return Err(access.not_yours(&model.name, "change"));
            }
            let input = if patch {
                if !body.is_object() {
                    return Err(ApiError::unprocessable(
                        "",
                        "type",
                        "a merge patch must be a JSON object",
                    ));
                }
                let mut current = Value::Object(old.clone());
                validate::merge_patch(&mut current, &body);
                if let Value::Object(m) = &mut current {
                    for k in ["created_at", "updated_at", "version"] {
                        m.remove(k);
                    }
                }
                current
            } else {
                let mut whole = body.clone();
                access.complete_replace(&mut whole, &old);
                whole
            };
            let record = self.replacement(ctx, model, &old, input, old_version, access)?;
            let command = Command::Replace {
                model: model.name.clone(),
                id,
                record,
                expected_version: old_version,
                from_client: if_match.is_some(),
            };
            match self
                .store
                .propose_once(command, Self::actor(ctx), key.clone())
                .await
            {
                Ok(ev) => {
                    // Tests hold the answer here while a later write lands.
                    fail::fail_point!("engine-answer");
                    // The answer is the record as this write made it, never a later
                    // one: its version is the ETag the client writes against next.
                    let stored = match self.get(&model.name, id) {
                        // This node applied the write, and nothing after it yet.
                        Some(now) if now.version() == ev.version => Some(now),
                        // A later write is applied here already, or (a follower answered
                        // by the leader) this node's apply has not caught up yet.
                        _ if ev.version == old_version + 1 => ev.apply(Some(&old)).and_then(|r| {
                            self.store
                                .read(|s| Some(s.models.get(&model.name)?.encode(&r)))
                        }),
                        // Accepted before (sent again with its idempotency key): the
                        // record as it is.
                        now => now,
                    };
                    let stored = stored.ok_or_else(|| {
                        ApiError::not_found(format!(
                            "the {} was deleted right after this update",
                            model.name
                        ))
                    })?;
                    hooks.after_update(ctx, &old, &stored.record());
                    return Ok(stored);
                }
                // Someone wrote in between and the client did not pin a version: recompute.
                Err(Refused::VersionMismatch {
                    from_client: false, ..
                }) => continue,
                Err(r) => return Err(self.refused(model, r)),
            }
        }
        Err(ApiError::new(
            409,
            "Conflict",
            "the record changes too often to update it now; retry",
        ))
    }

    /// Deletes a record (a tombstone event), within what `access` lets the caller do:
    /// a record it does not own is refused.
    pub async fn delete(
        &self,
        ctx: &HookContext,
        id: Uuid,
        if_match: Option<u64>,
        access: &Access,
    ) -> Result<(), ApiError> {
        let model = self.model(&ctx.model)?;
        let hooks = self.hooks(&model.name);
        let mut confirmed = false;
        for _ in 0..MAX_RETRIES {
            let old = match self.get(&model.name, id) {
                Some(old) => old,
                // Not here yet, perhaps: ask the leader before answering 404.
                None if !confirmed => {
                    self.confirm().await?;
                    confirmed = true;
                    continue;
                }
                None => {
                    return Err(ApiError::not_found(format!(
                        "no {} with this id",
                        model.name
                    )))
                }
            };
            if !access.covers(|f| old.get(f)) {
                return Err(access.not_yours(&model.name, "delete"));
            }
            // A delete allowed only to the owner is decided on the version whose owner
            // was checked: if the record changed in between, it is checked again.
            let pinned = access.own().is_some() && if_match.is_none();
            let expected_version = if pinned {
                Some(old.version())
            } else {
                if_match
            };
            let old = old.record();
            let started = Instant::now();
            let allowed = hooks.before_delete(ctx, &old);
            self.stages().since(Stage::Hooks, started);
            allowed?;
            let command = Command::Delete {
                model: model.name.clone(),
                id,
                expected_version,
            };
            match self.store.propose(command, Self::actor(ctx)).await {
                Ok(_) => {
                    hooks.after_delete(ctx, &old);
                    return Ok(());
                }
                Err(Refused::VersionMismatch { .. }) if pinned => continue,
                Err(r) => return Err(self.refused(model, r)),
            }
        }
        Err(ApiError::new(
            409,
            "Conflict",
            "the record changes too often to delete it now; retry",
        ))
    }
}

/// The server's metadata of a record, which hooks may not change.
fn metadata_of(record: &Record) -> Vec<(&'static str, Option<Value>)> {
    validate::METADATA
        .iter()
        .map(|k| (*k, record.get(*k).cloned()))
        .collect()
}

/// `record` without the server's metadata (`id`, timestamps, `version`): the fields a
/// body sets.
pub(crate) fn metadata_stripped(mut record: Record) -> Record {
    for m in validate::METADATA {
        record.remove(*m);
    }
    record
}

/// Puts the metadata back after a hook changed the record.
fn restore_metadata(record: &mut Record, metadata: Vec<(&'static str, Option<Value>)>) {
    for (k, v) in metadata {
        match v {
            Some(v) => {
                record.insert(k.to_string(), v);
            }
            None => {
                record.remove(k);
            }
        }
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Principal;
    use crate::config::SyncMode;
    use crate::domain::decide::IdempotencyKey;
    use crate::hooks::ActionContext;
    use crate::raft::node::ClusterOptions;
    use crate::spec::CompiledSpec;
    use crate::spec::Operation;
    use crate::store::{Store, StoreOptions};
    use serde_json::json;

    use crate::spec::fixtures::STOCK as SPEC;

    /// A non-idempotent action (it adds to the stock it reads), run as a retry would run
    /// it.
    async fn restock(
        engine: &Arc<Engine>,
        id: Uuid,
        key: Option<&str>,
        units: i64,
    ) -> Result<Value, ApiError> {
        let principal = Principal {
            name: "clerk".into(),
            roles: vec![],
            effective: Default::default(),
        };
        let body = serde_json::to_vec(&json!({ "units": units })).unwrap_or_default();
        let key = key.map(|k| IdempotencyKey::new("clerk", "/api/items/x/restock", k, &body));
        let ctx = ActionContext::new(engine.clone(), principal, "Item", "restock", key);
        let stock = ctx
            .get_json("Item", id)
            .and_then(|r| r["stock"].as_i64())
            .unwrap_or_default();
        ctx.patch_json("Item", id, json!({ "stock": stock + units }))?;
        let done = ctx.commit().await?;
        Ok(done
            .record("Item", id)
            .flatten()
            .map(|r| Value::Object(r.clone()))
            .unwrap_or(Value::Null))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_action_run_again_with_its_key_writes_nothing_twice() {
        let dir = tempfile::tempdir().expect("temp dir");
        let spec = Arc::new(CompiledSpec::from_json(SPEC).expect("spec"));
        let opts = StoreOptions::new(SyncMode::Always, ClusterOptions::single("127.0.0.1:0"));
        let store = Store::open(dir.path(), &spec.spec, opts)
            .await
            .expect("store");
        let engine = Arc::new(Engine::new(spec, Default::default(), store));
        let ctx = HookContext {
            principal: Principal {
                name: "clerk".into(),
                roles: vec![],
                effective: Default::default(),
            },
            model: "Item".into(),
            operation: Operation::Create,
            action: None,
        };
        let item = engine
            .create(&ctx, json!({"stock": 10}))
            .await
            .expect("create");
        let id = item.id().expect("id");
        let first = restock(&engine, id, Some("r-1"), 3)
            .await
            .expect("first run");
        assert_eq!(first["stock"], json!(13));
        // The client retries: the action runs again, its write is answered, not made.
        let again = restock(&engine, id, Some("r-1"), 3).await.expect("retry");
        assert_eq!(again["stock"], json!(13));
        assert_eq!(again["version"], first["version"]);
        // The same key with another request is the client's mistake.
        let other = restock(&engine, id, Some("r-1"), 5).await;
        assert_eq!(other.map(|_| ()).map_err(|e| e.status), Err(422));
        // A new key, or none, is a new request.
        let next = restock(&engine, id, Some("r-2"), 3).await.expect("new key");
        assert_eq!(next["stock"], json!(16));
        let plain = restock(&engine, id, None, 1).await.expect("no key");
        assert_eq!(plain["stock"], json!(17));
        engine.store.shutdown().await;
    }
}
