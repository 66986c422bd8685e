//! The past of records, for models with a `lifecycle` (`audited`, `versioned: N`): a
//! record's history (`GET …/{id}/history`), its whole state at a version (`GET
//! …/{id}/versions/{v}`, for the newest N; older ones are 410 Gone), and the audit log of
//! the audited models (`GET /api/_audit`, for the `audit.read` roles).
//!
//! Everything here is rebuilt from the event log (through the store's timeline of each
//! record's events): a version is the record's events applied in order up to it, and an
//! audit entry's old and new values are the record before and after its event. So it
//! survives restarts and reads the same on every node. The caller's field mask applies to
//! every value shown, and a record of someone else is not there for a caller who reads
//! only its own. A deleted record's history and versions stay readable, by the audit
//! roles only.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::app::App;
use super::cache;
use super::list::pairs;
use super::respond::{self, Resp};
use crate::auth::{Access, Principal};
use crate::domain::event::{changes, Event, EventKind, Record};
use crate::error::ApiError;
use crate::spec::{ModelSpec, Operation};
use crate::validate::METADATA;

/// Most history entries or audit entries in one answer.
const MAX_LIMIT: usize = 1000;
/// Entries in one answer unless `limit` says otherwise.
const DEFAULT_LIMIT: usize = 100;

/// A history's or the audit log's `limit`: a whole number from 1 to [`MAX_LIMIT`].
fn limit_of(v: &str) -> Result<usize, ApiError> {
    v.parse()
        .ok()
        .filter(|l| (1..=MAX_LIMIT).contains(l))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "limit must be a whole number from 1 to {MAX_LIMIT}"
            ))
        })
}
/// Most audit events one request looks at (a filter that matches little answers a
/// cursor to go on from).
const AUDIT_BUDGET: usize = 10_000;

/// One event of a record with the record before and after it.
struct Step {
    ev: Event,
    before: Option<Record>,
    after: Option<Record>,
}

/// The events of a record, applied in order; `upcast` brings each state up to the
/// current schema (fields renamed or backfilled since the event was written).
fn steps(events: Vec<Event>, upcast: impl Fn(&str, &mut Record)) -> Vec<Step> {
    let mut state: Option<Record> = None;
    let mut out = Vec::with_capacity(events.len());
    for ev in events {
        let mut after = ev.apply(state.as_ref());
        if let Some(r) = after.as_mut() {
            upcast(&ev.model, r);
        }
        out.push(Step {
            ev,
            before: state.take(),
            after: after.clone(),
        });
        state = after;
    }
    out
}

/// The steps of record `id`, read off the async threads.
fn record_steps(app: &App, m: &ModelSpec, id: Uuid) -> Result<Vec<Step>, ApiError> {
    let store = &app.engine.store;
    let events =
        tokio::task::block_in_place(|| store.history(&m.name, id)).map_err(ApiError::internal)?;
    let store = &app.engine.store;
    Ok(steps(events, |model, r| {
        store.read(|s| s.upcast(model, r));
    }))
}

fn action(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Created => "created",
        EventKind::Updated => "updated",
        EventKind::Deleted => "deleted",
    }
}

/// `record` without the fields `hidden` names.
fn masked(record: &Record, hidden: &[String]) -> Value {
    let mut r = record.clone();
    for h in hidden {
        r.remove(h);
    }
    Value::Object(r)
}

/// The changed fields of a step (`{field: {old, new}}`), without the server's metadata
/// and the hidden fields.
fn step_changes(step: &Step, hidden: &[String]) -> Map<String, Value> {
    let empty = Record::new();
    let mut c = changes(
        step.before.as_ref().unwrap_or(&empty),
        step.after.as_ref().unwrap_or(&empty),
    );
    for k in METADATA
        .iter()
        .copied()
        .map(String::from)
        .chain(hidden.iter().cloned())
    {
        c.remove(&k);
    }
    c
}

/// Whether `who` may read the audit log (and so deleted records' pasts).
fn audits(app: &App, who: &Principal) -> bool {
    app.engine
        .spec
        .spec
        .audit
        .as_ref()
        .is_some_and(|a| who.may(&a.read))
}

/// The steps of record `id` as `who` may see them: 404 when there are none, when the
/// record is another's and the caller reads only its own, or when it was deleted and the
/// caller may not read the audit log.
fn visible_steps(
    app: &App,
    m: &ModelSpec,
    id: Uuid,
    who: &Principal,
    access: &Access,
) -> Result<Vec<Step>, ApiError> {
    let steps = record_steps(app, m, id)?;
    let missing = || ApiError::not_found(format!("no {} with this id", m.name));
    let last = steps.last().ok_or_else(missing)?;
    let known = last.after.as_ref().or(last.before.as_ref());
    if !access.covers(|f| known.and_then(|r| r.get(f).cloned())) {
        return Err(missing());
    }
    if last.after.is_none() && !audits(app, who) {
        return Err(missing());
    }
    Ok(steps)
}

/// `GET …/{id}/history`: newest first, `?limit=` (100; at most 1000) and `?before=<v>`
/// (the entries of versions below v).
pub(crate) fn history(
    app: &Arc<App>,
    m: &ModelSpec,
    id: Uuid,
    who: &Principal,
    query: Option<&str>,
) -> Result<Resp, ApiError> {
    let mut limit = DEFAULT_LIMIT;
    let mut before = u64::MAX;
    for (k, v) in pairs(query)? {
        match k.as_str() {
            "limit" => limit = limit_of(&v)?,
            // Checked by the endpoint (`?consistency=local|linearizable`).
            "consistency" => {}
            "before" => {
                before = v
                    .parse()
                    .map_err(|_| ApiError::bad_request("before must be a version number"))?
            }
            other => return Err(ApiError::bad_request(format!("unknown parameter {other}"))),
        }
    }
    let access = Access::of(m, who, Operation::Get);
    let steps = visible_steps(app, m, id, who, &access)?;
    let hidden = access.hidden();
    let items: Vec<Value> = steps
        .iter()
        .rev()
        .filter(|s| s.ev.version < before)
        .take(limit)
        .map(|s| {
            json!({
                "version": s.ev.version,
                "event_id": s.ev.event_id,
                "sequence_number": s.ev.sequence_number,
                "action": action(s.ev.kind),
                "by_action": s.ev.principal.action,
                "principal": s.ev.principal.name,
                "timestamp": s.ev.created_at,
                "changes": step_changes(s, hidden),
            })
        })
        .collect();
    Ok(respond::json(200, &json!({ "items": items })))
}

/// `GET …/{id}/versions/{v}`: the record as it was at version v, for its newest N versions
/// (`versioned: N`); an older one is 410 Gone.
pub(crate) fn version(
    app: &Arc<App>,
    m: &ModelSpec,
    id: Uuid,
    v: u64,
    who: &Principal,
) -> Result<Resp, ApiError> {
    let access = Access::of(m, who, Operation::Get);
    let steps = visible_steps(app, m, id, who, &access)?;
    let newest = steps
        .iter()
        .rev()
        .find_map(|s| s.after.as_ref().map(|_| s.ev.version))
        .unwrap_or(0);
    let kept = m.lifecycle.versioned.unwrap_or(0);
    let record = steps
        .iter()
        .find(|s| s.ev.version == v)
        .and_then(|s| s.after.as_ref())
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "this {} has no version {v} (its newest is {newest})",
                m.name
            ))
        })?;
    if v.saturating_add(kept) <= newest {
        return Err(ApiError::new(
            410,
            "Gone",
            format!(
                "version {v} is older than the newest {kept} versions this model keeps readable (the record is at version {newest})"
            ),
        ));
    }
    let body = masked(record, access.hidden());
    let etag = cache::record_etag(v);
    Ok(respond::with_header(
        respond::json(200, &body),
        "etag",
        &etag,
    ))
}

/// `GET /api/_audit?model=&id=&principal=&since=&until=&limit=&cursor=`: the audited
/// models' events, oldest first, each with who, what, when and the old and new values;
/// `next_cursor` continues (null at the end).
pub(crate) fn audit(
    app: &Arc<App>,
    who: &Principal,
    query: Option<&str>,
) -> Result<Resp, ApiError> {
    let spec = &app.engine.spec.spec;
    let mut model: Option<&ModelSpec> = None;
    let mut record = None;
    let mut principal = None;
    let (mut since, mut until) = (None, None);
    let mut limit = DEFAULT_LIMIT;
    let mut cursor = 0u64;
    let instant = |k: &str, v: &str| {
        chrono::DateTime::parse_from_rfc3339(v)
            .map(|t| t.timestamp_micros())
            .map_err(|_| ApiError::bad_request(format!("{k} must be an RFC 3339 timestamp")))
    };
    for (k, v) in pairs(query)? {
        match k.as_str() {
            "model" => {
                let m = spec
                    .models
                    .iter()
                    .find(|m| m.name == v && m.lifecycle.audited);
                model = Some(m.ok_or_else(|| {
                    ApiError::bad_request(format!("\"{v}\" is not an audited model"))
                })?);
            }
            "id" => {
                record = Some(
                    Uuid::parse_str(&v).map_err(|_| ApiError::bad_request("id must be a UUID"))?,
                )
            }
            "principal" => principal = Some(v),
            "since" => since = Some(instant("since", &v)?),
            "until" => until = Some(instant("until", &v)?),
            "limit" => limit = limit_of(&v)?,
            "cursor" => {
                cursor = v.parse().map_err(|_| {
                    ApiError::bad_request("cursor must be a next_cursor this log gave")
                })?
            }
            other => return Err(ApiError::bad_request(format!("unknown parameter {other}"))),
        }
    }
    let keep = |ev: &Event| {
        model.is_none_or(|m| m.name == ev.model)
            && principal.as_deref().is_none_or(|p| p == ev.principal.name)
            && (since.is_none() && until.is_none() || {
                let at = chrono::DateTime::parse_from_rfc3339(&ev.created_at)
                    .map(|t| t.timestamp_micros())
                    .unwrap_or(0);
                since.is_none_or(|s| at >= s) && until.is_none_or(|u| at <= u)
            })
    };
    let store = &app.engine.store;
    let (events, next) =
        tokio::task::block_in_place(|| store.audit(cursor, record, limit, AUDIT_BUDGET, keep))
            .map_err(ApiError::internal)?;
    // Each entry's record, before and after its event: its events applied in order, read
    // once per record of the page.
    let mut pasts: HashMap<Uuid, Vec<Step>> = HashMap::new();
    let mut items = Vec::with_capacity(events.len());
    for ev in events {
        let Some(m) = app.engine.spec.model(&ev.model) else {
            continue;
        };
        let past = match pasts.entry(ev.aggregate_id) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(record_steps(app, m, ev.aggregate_id)?)
            }
        };
        let hidden = Access::of(m, who, Operation::Get).hidden().to_vec();
        let step = past
            .iter()
            .find(|s| s.ev.sequence_number == ev.sequence_number);
        let (old, new) = match (ev.kind, step) {
            (EventKind::Created, Some(s)) => (
                Value::Null,
                s.after.as_ref().map_or(Value::Null, |r| masked(r, &hidden)),
            ),
            // The tombstone's own copy of the record, or (in events written before
            // deletes kept it) the record as its events left it.
            (EventKind::Deleted, s) => {
                let kept = ev.event_data.get("old").and_then(Value::as_object);
                let old = kept.or(s.and_then(|s| s.before.as_ref()));
                (old.map_or(Value::Null, |r| masked(r, &hidden)), Value::Null)
            }
            (EventKind::Updated, Some(s)) => {
                let c = step_changes(s, &hidden);
                let side = |which: &str| {
                    Value::Object(
                        c.iter()
                            .map(|(k, v)| (k.clone(), v.get(which).cloned().unwrap_or(Value::Null)))
                            .collect(),
                    )
                };
                (side("old"), side("new"))
            }
            (_, None) => (Value::Null, Value::Null),
        };
        items.push(json!({
            "sequence_number": ev.sequence_number,
            "event_id": ev.event_id,
            "model": ev.model,
            "record_id": ev.aggregate_id,
            "action": action(ev.kind),
            "by_action": ev.principal.action,
            "user": ev.principal.name,
            "roles": ev.principal.roles,
            "timestamp": ev.created_at,
            "old_values": old,
            "new_values": new,
        }));
    }
    Ok(respond::json(
        200,
        &json!({ "items": items, "next_cursor": next }),
    ))
}
