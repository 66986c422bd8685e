//! `GET /api/<plural>`: pagination, sorting and equality filters.

use std::cmp::Ordering;
use std::sync::Arc;

use serde_json::{json, Value};
use uuid::Uuid;

use crate::error::ApiError;
use crate::spec::{FieldType, ModelSpec};
use crate::store::event::Stored;
use crate::store::state::State;

/// Default page size.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest page size.
pub const MAX_LIMIT: usize = 1000;

/// A parsed list query.
#[derive(Debug, Default)]
pub struct ListQuery {
    limit: usize,
    offset: usize,
    sort: Vec<(String, bool)>,
    filters: Vec<(String, Value)>,
}

fn decode(s: &str) -> Result<String, ApiError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => out.push(b),
                    None => {
                        return Err(ApiError::bad_request("the query string has a bad %-escape"))
                    }
                }
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| ApiError::bad_request("the query string is not UTF-8"))
}

/// The `key=value` pairs of a query string, decoded.
pub fn pairs(query: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    let Some(q) = query.filter(|q| !q.is_empty()) else {
        return Ok(Vec::new());
    };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Ok((decode(k)?, decode(v)?))
        })
        .collect()
}

fn filter_value(f: &crate::spec::FieldSpec, raw: &str) -> Result<Value, ApiError> {
    let bad = || {
        ApiError::bad_request(format!(
            "filter `{}`: \"{raw}\" is not a valid {}",
            f.name,
            describe(&f.ty)
        ))
    };
    Ok(match &f.ty {
        FieldType::Int => Value::from(raw.parse::<i64>().map_err(|_| bad())?),
        FieldType::Float => serde_json::Number::from_f64(raw.parse::<f64>().map_err(|_| bad())?)
            .map(Value::Number)
            .ok_or_else(bad)?,
        FieldType::Bool => Value::Bool(raw.parse::<bool>().map_err(|_| bad())?),
        FieldType::Enum { values } if !values.iter().any(|v| v == raw) => return Err(bad()),
        FieldType::Uuid | FieldType::Ref { .. } if Uuid::parse_str(raw).is_err() => {
            return Err(bad())
        }
        FieldType::Json | FieldType::List { .. } => {
            return Err(ApiError::bad_request(format!(
                "`{}` cannot be filtered on (it is a {})",
                f.name,
                describe(&f.ty)
            )))
        }
        _ => Value::String(raw.to_string()),
    })
}

fn describe(t: &FieldType) -> &'static str {
    match t {
        FieldType::Int => "integer",
        FieldType::Float => "number",
        FieldType::Bool => "boolean (true or false)",
        FieldType::Enum { .. } => "value of the enum",
        FieldType::Uuid | FieldType::Ref { .. } => "UUID",
        FieldType::Json => "json value",
        FieldType::List { .. } => "list",
        _ => "string",
    }
}

impl ListQuery {
    /// Parses the query string of a list request.
    pub fn parse(model: &ModelSpec, query: Option<&str>) -> Result<ListQuery, ApiError> {
        let mut q = ListQuery {
            limit: DEFAULT_LIMIT,
            ..Default::default()
        };
        for (k, v) in pairs(query)? {
            match k.as_str() {
                "limit" => {
                    q.limit = v.parse().ok().filter(|l| *l <= MAX_LIMIT).ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "limit must be a whole number from 0 to {MAX_LIMIT}"
                        ))
                    })?
                }
                // Checked by the router (`?consistency=local|linearizable`).
                "consistency" => {}
                "offset" => {
                    q.offset = v
                        .parse()
                        .map_err(|_| ApiError::bad_request("offset must be a whole number"))?
                }
                "sort" => {
                    for part in v.split(',').filter(|p| !p.is_empty()) {
                        let (name, desc) = match part.strip_prefix('-') {
                            Some(n) => (n, true),
                            None => (part, false),
                        };
                        let known = model.field(name).is_some()
                            || matches!(name, "id" | "created_at" | "updated_at" | "version");
                        if !known {
                            return Err(ApiError::bad_request(format!(
                                "cannot sort by `{name}`: {} has no such field",
                                model.name
                            )));
                        }
                        q.sort.push((name.to_string(), desc));
                    }
                }
                name => {
                    let f = model.field(name).ok_or_else(|| {
                        ApiError::bad_request(format!("unknown query parameter `{name}`: use limit, offset, sort or a field of {}", model.name))
                    })?;
                    q.filters.push((name.to_string(), filter_value(f, &v)?));
                }
            }
        }
        Ok(q)
    }

    /// Runs the query against the state.
    /// Runs the query against the state; answers the page as JSON text, made of the
    /// records' stored JSON.
    pub fn run(&self, state: &State, model: &ModelSpec) -> bytes::Bytes {
        let Some(ms) = state.models.get(&model.name) else {
            return json!({"items": [], "total": 0, "limit": self.limit, "offset": self.offset})
                .to_string()
                .into();
        };
        // Use an index for the first indexed filter, if any.
        let indexed = self.filters.iter().find_map(|(f, v)| ms.lookup(f, v));
        let matches = |r: &Arc<Stored>| self.filters.iter().all(|(f, v)| equal(r.get(f), v));
        let mut rows: Vec<Arc<Stored>> = match indexed {
            Some(ids) => ids
                .iter()
                .filter_map(|id| ms.records.get(id).cloned())
                .filter(matches)
                .collect(),
            None => ms
                .records
                .values()
                .filter(|r| matches(r))
                .cloned()
                .collect(),
        };
        let mut keys = self.sort.clone();
        if keys.is_empty() {
            keys.push(("created_at".into(), false));
        }
        keys.push(("id".into(), false));
        rows.sort_by(|a, b| {
            for (k, desc) in &keys {
                let o = compare(a.get(k), b.get(k));
                if o != Ordering::Equal {
                    return if *desc { o.reverse() } else { o };
                }
            }
            Ordering::Equal
        });
        let total = rows.len();
        let mut out = Vec::with_capacity(64 + self.limit.min(total) * 400);
        out.extend_from_slice(b"{\"items\":[");
        for (i, r) in rows.iter().skip(self.offset).take(self.limit).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&r.json);
        }
        out.extend_from_slice(
            format!(
                "],\"total\":{total},\"limit\":{},\"offset\":{}}}",
                self.limit, self.offset
            )
            .as_bytes(),
        );
        out.into()
    }
}

fn equal(a: Option<&Value>, b: &Value) -> bool {
    match (a, b) {
        (Some(Value::Number(x)), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Some(x), y) => x == y,
        (None, _) => false,
    }
}

fn compare(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (None | Some(Value::Null), None | Some(Value::Null)) => Ordering::Equal,
        (None | Some(Value::Null), _) => Ordering::Less,
        (_, None | Some(Value::Null)) => Ordering::Greater,
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (Some(x), Some(y)) => x.to_string().cmp(&y.to_string()),
    }
}
