//! `GET /api/<projection>`: a projection's groups (`domain/projection.rs`), read-only,
//! with the list conventions: `limit` (default 100, at most 1000) and `offset`, `sort`
//! on the group key or any aggregate (`-` for descending, several keys with commas),
//! and filters on the group key (`?placed_at=2026-12-01`, `?placed_at[gte]=2026-11`).
//!
//! The groups are a persistent map in key order: a page in that order (the default, or
//! `sort=<key>` / `sort=-<key>`) without filters reads only its groups; any other query
//! looks at every group. A caller who may not see a field of the source does not see
//! the aggregates over it, and may not read a projection grouped by it (403). Every
//! answer has an ETag that changes with any write to the source, and `If-None-Match`
//! answers 304.

use std::cmp::Ordering;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::app::App;
use super::cache;
use super::cluster;
use super::list::{pairs, Op, DEFAULT_LIMIT, MAX_LIMIT, MAX_SORT_KEYS};
use super::respond::{self, Resp};
use crate::auth::{Access, Principal};
use crate::domain::projection::Projection;
use crate::domain::state::SortKey;
use crate::error::ApiError;
use crate::spec::{FieldType, Operation, ProjectionSpec};

/// A parsed query.
struct Query {
    limit: usize,
    offset: usize,
    /// (member, descending).
    sort: Vec<(String, bool)>,
    filters: Vec<(Op, SortKey)>,
}

fn parse(
    p: &ProjectionSpec,
    source: &crate::spec::ModelSpec,
    raw: Option<&str>,
) -> Result<Query, ApiError> {
    let key = p.group_by.field.as_str();
    // The group key's values: strings for a time bucket, else the field's own type.
    let ty = match (&p.group_by.granularity, source.field(key)) {
        (None, Some(f)) => f.ty.clone(),
        _ => FieldType::String,
    };
    let mut q = Query {
        limit: DEFAULT_LIMIT,
        offset: 0,
        sort: Vec::new(),
        filters: Vec::new(),
    };
    let mut seen = std::collections::HashSet::new();
    for (k, v) in pairs(raw)? {
        match k.as_str() {
            "limit" => {
                q.limit = v.parse().ok().filter(|l| *l <= MAX_LIMIT).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "limit must be a whole number from 0 to {MAX_LIMIT}"
                    ))
                })?
            }
            "offset" => {
                q.offset = v
                    .parse()
                    .map_err(|_| ApiError::bad_request("offset must be a whole number"))?
            }
            "consistency" => {}
            "sort" if v.is_empty() => {}
            "sort" => {
                for part in v.split(',') {
                    if part.is_empty() || part == "-" {
                        return Err(ApiError::bad_request(format!(
                            "sort `{v}` has an empty key"
                        )));
                    }
                    let (name, desc) = match part.strip_prefix('-') {
                        Some(n) => (n, true),
                        None => (part, false),
                    };
                    if name != key && !p.aggregates.iter().any(|a| a.name == name) {
                        return Err(ApiError::bad_request(format!(
                            "cannot sort by `{name}`: {} has `{key}` and its aggregates ({})",
                            p.name,
                            members(p)
                        )));
                    }
                    q.sort.push((name.to_string(), desc));
                    if q.sort.len() > MAX_SORT_KEYS {
                        return Err(ApiError::bad_request(format!(
                            "at most {MAX_SORT_KEYS} sort keys are taken"
                        )));
                    }
                }
            }
            name => {
                if !seen.insert(name.to_string()) {
                    return Err(ApiError::bad_request(format!(
                        "the filter `{name}` is given twice"
                    )));
                }
                let (field, op) = match name.strip_suffix(']').and_then(|n| n.split_once('[')) {
                    Some((f, op)) => (f, op),
                    None => (name, "eq"),
                };
                if field != key {
                    return Err(ApiError::bad_request(format!(
                        "unknown query parameter `{name}`: {} takes limit, offset, sort and filters on `{key}`",
                        p.name
                    )));
                }
                let op = Op::parse(op).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "`{name}`: unknown filter operator `{op}`; use eq, ne, gt, gte, lt or lte"
                    ))
                })?;
                let value = match &ty {
                    FieldType::Int | FieldType::Float => v
                        .parse::<f64>()
                        .ok()
                        .filter(|n| n.is_finite())
                        .map(|n| json!(n)),
                    FieldType::Bool => match v.as_str() {
                        "true" => Some(Value::Bool(true)),
                        "false" => Some(Value::Bool(false)),
                        _ => None,
                    },
                    _ if v.is_empty() => None,
                    _ => Some(Value::String(v.clone())),
                };
                let value = value.ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "filter `{name}`: \"{v}\" is not a valid {} group key",
                        ty.spelling()
                    ))
                })?;
                q.filters.push((op, SortKey::of(Some(&value))));
            }
        }
    }
    Ok(q)
}

fn members(p: &ProjectionSpec) -> String {
    p.aggregates
        .iter()
        .map(|a| format!("`{}`", a.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Answers `GET` of projection `index` for `who`.
pub(crate) async fn serve(
    app: &Arc<App>,
    index: usize,
    who: &Principal,
    raw: Option<&str>,
    headers: &hyper::HeaderMap,
) -> Result<Resp, ApiError> {
    let spec = &app.engine.spec.spec;
    let p = &spec.projections[index];
    let source = spec
        .model(&p.source)
        .ok_or_else(|| ApiError::internal("a projection without its source model"))?;
    let access = Access::of(source, who, Operation::List);
    if !access.sees(&p.group_by.field) {
        return Err(ApiError::forbidden(format!(
            "{} groups by `{}`, which you may not see",
            p.name, p.group_by.field
        )));
    }
    let hidden: Vec<bool> = p
        .aggregates
        .iter()
        .map(|a| a.field.as_ref().is_some_and(|f| !access.sees(f)))
        .collect();
    let q = parse(p, source, raw)?;
    if let Some((name, _)) = q.sort.iter().find(|(name, _)| {
        p.aggregates
            .iter()
            .zip(&hidden)
            .any(|(a, h)| *h && a.name == *name)
    }) {
        return Err(ApiError::forbidden(format!("you may not sort on `{name}`")));
    }
    if cluster::wants_linearizable(raw, headers)? {
        cluster::linearizable(app).await?;
    }
    let changed =
        |s: &crate::domain::state::State| s.models.get(&p.source).map_or(0, |ms| ms.changed);
    let etag = cache::projection_etag(p, app.engine.store.read(changed), raw, &access);
    if cache::none_match(headers, &etag)? {
        return Ok(decorate(respond::empty(304), source, &etag));
    }
    let (at, projection) = app
        .engine
        .store
        .read(|s| (changed(s), s.projection(&p.name).cloned()));
    let projection =
        projection.ok_or_else(|| ApiError::internal("the projection is not in the state"))?;
    let etag = cache::projection_etag(p, at, raw, &access);
    let in_key_order = q.filters.is_empty()
        && (q.sort.is_empty() || (q.sort.len() == 1 && q.sort[0].0 == p.group_by.field));
    let page = if in_key_order {
        page_in_key_order(&projection, &q, &hidden)
    } else {
        tokio::task::block_in_place(|| page_by_query(&projection, &q, &hidden))
    };
    Ok(decorate(respond::json_bytes(200, page), source, &etag))
}

fn decorate(mut r: Resp, source: &crate::spec::ModelSpec, etag: &str) -> Resp {
    use hyper::header::{HeaderValue, ETAG, VARY};
    if let Ok(v) = HeaderValue::from_str(etag) {
        r.headers_mut().insert(ETAG, v);
    }
    if source.fields.iter().any(|f| f.read_roles().is_some()) {
        r.headers_mut()
            .insert(VARY, HeaderValue::from_static("authorization"));
    }
    r
}

/// A page in key order, reading only its groups.
fn page_in_key_order(p: &Projection, q: &Query, hidden: &[bool]) -> bytes::Bytes {
    let total = p.groups.len();
    let desc = q.sort.first().is_some_and(|(_, d)| *d);
    let (from, to) = if desc {
        let to = total.saturating_sub(q.offset);
        (to.saturating_sub(q.limit), to)
    } else {
        let from = q.offset.min(total);
        (from, from.saturating_add(q.limit).min(total))
    };
    let mut items: Vec<Value> = p
        .groups
        .iter_at(from, to)
        .map(|(_, g)| Value::Object(p.render(g, hidden)))
        .collect();
    if desc {
        items.reverse();
    }
    answer(items, total, q)
}

/// A page of a filtered or otherwise sorted query: every group looked at.
fn page_by_query(p: &Projection, q: &Query, hidden: &[bool]) -> bytes::Bytes {
    let mut rows: Vec<(SortKey, Map<String, Value>)> = p
        .groups
        .iter()
        .filter(|(k, _)| {
            // A group without a key (`null`) matches no filter, `ne` included.
            q.filters.is_empty()
                || (!matches!(k, SortKey::Missing)
                    && q.filters
                        .iter()
                        .all(|(op, want)| k.rank() == want.rank() && op.holds((*k).cmp(want))))
        })
        .map(|(k, g)| (k.clone(), p.render(g, hidden)))
        .collect();
    let key = &p.def.spec.group_by.field;
    rows.sort_by(|(ka, a), (kb, b)| {
        for (name, desc) in &q.sort {
            let o = if name == key {
                ka.cmp(kb)
            } else {
                SortKey::of(a.get(name)).cmp(&SortKey::of(b.get(name)))
            };
            if o != Ordering::Equal {
                return if *desc { o.reverse() } else { o };
            }
        }
        ka.cmp(kb)
    });
    let total = rows.len();
    let items = rows
        .into_iter()
        .skip(q.offset)
        .take(q.limit)
        .map(|(_, r)| Value::Object(r))
        .collect();
    answer(items, total, q)
}

fn answer(items: Vec<Value>, total: usize, q: &Query) -> bytes::Bytes {
    let body = json!({"items": items, "total": total, "limit": q.limit, "offset": q.offset});
    serde_json::to_vec(&body).unwrap_or_default().into()
}
