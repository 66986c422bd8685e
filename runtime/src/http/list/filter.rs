//! A list's filters: `?field=value` (equality) and `?field[op]=value` with `op` one of
//! `eq`, `ne`, `gt`, `gte`, `lt`, `lte`.
//!
//! A filter compares a record's value as the ordered indexes order it ([`SortKey`]):
//! numbers as numbers, strings and dates by their bytes, `created_at` and `updated_at` by
//! their instant (they are always in the server's form). A `datetime` field keeps each
//! value with the offset it was written with, so its filters compare instants (to the
//! microsecond) row by row and never read an index. A record without a value (absent or
//! `null`) matches no filter, `ne` included. Ranges are taken on numbers, strings, dates
//! and datetimes; booleans, enums, UUIDs and refs take `eq` and `ne`.
//!
//! The filters on one indexed field (none of them `ne`) select a range of its index,
//! [`bounds`]: exactly the entries of the matching values, in order, so a list filtered
//! and sorted on that one field reads only its page (see `ordered.rs`).

use std::cmp::Ordering;
use std::ops::Bound;

use serde_json::Value;
use uuid::Uuid;

use crate::domain::state::SortKey;
use crate::error::ApiError;
use crate::spec::{FieldSpec, FieldType, ModelSpec};

/// How a filter compares a record's value with its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
}

impl Op {
    /// The operator of `field[op]`.
    pub(crate) fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "gt" => Op::Gt,
            "gte" => Op::Gte,
            "lt" => Op::Lt,
            "lte" => Op::Lte,
            _ => return None,
        })
    }

    fn is_range(self) -> bool {
        !matches!(self, Op::Eq | Op::Ne)
    }

    /// Whether a record whose value compares `o` with the filter's passes.
    pub(crate) fn holds(self, o: Ordering) -> bool {
        match self {
            Op::Eq => o == Ordering::Equal,
            Op::Ne => o != Ordering::Equal,
            Op::Gt => o == Ordering::Greater,
            Op::Gte => o != Ordering::Less,
            Op::Lt => o == Ordering::Less,
            Op::Lte => o != Ordering::Greater,
        }
    }
}

/// One filter of a list request.
#[derive(Debug)]
pub(super) struct Filter {
    pub field: String,
    pub op: Op,
    /// The filter's value as the index keeps values.
    key: SortKey,
    /// For a `datetime` field: the filter's instant, in microseconds since 1970.
    instant: Option<i64>,
}

/// An entry of an ordered index, or a probe between entries: no record has the nil or
/// the max UUID, so `(value, nil)` is below every entry of `value` and `(value, max)`
/// above them.
pub(super) type Probe = (SortKey, Uuid);

impl Filter {
    /// A filter from a query pair: `name` is `field` or `field[op]`.
    pub fn parse(model: &ModelSpec, name: &str, raw: &str) -> Result<Filter, ApiError> {
        let (field, op) = match name.strip_suffix(']').and_then(|n| n.split_once('[')) {
            Some((field, op)) => {
                let op = Op::parse(op).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "`{name}`: unknown filter operator `{op}`; use eq, ne, gt, gte, lt or lte"
                    ))
                })?;
                (field, op)
            }
            None => (name, Op::Eq),
        };
        let kind = match field {
            "created_at" | "updated_at" => Kind::ServerTime,
            _ => {
                let f = model.field(field).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "unknown query parameter `{name}`: use limit, offset, sort or a field of {} \
                         (`field=value` or `field[op]=value`)",
                        model.name
                    ))
                })?;
                Kind::Field(f)
            }
        };
        if op.is_range() && !kind.orderable() {
            return Err(ApiError::bad_request(format!(
                "`{name}`: `{field}` takes eq and ne only (it is a {})",
                kind.describe()
            )));
        }
        let bad = || {
            ApiError::bad_request(format!(
                "filter `{name}`: \"{raw}\" is not a valid {}",
                kind.describe()
            ))
        };
        let (key, instant) = match kind {
            Kind::ServerTime => {
                let micros = instant(raw).ok_or_else(bad)?;
                (SortKey::Time(micros), None)
            }
            Kind::Field(f) => match &f.ty {
                FieldType::Int => (
                    SortKey::num(raw.parse::<i64>().map_err(|_| bad())? as f64),
                    None,
                ),
                FieldType::Float => {
                    let x = raw.parse::<f64>().ok().filter(|x| x.is_finite());
                    (SortKey::num(x.ok_or_else(bad)?), None)
                }
                FieldType::Bool => (SortKey::Bool(raw.parse::<bool>().map_err(|_| bad())?), None),
                FieldType::Enum { values } if !values.iter().any(|v| v == raw) => return Err(bad()),
                FieldType::Uuid | FieldType::Ref { .. } if Uuid::parse_str(raw).is_err() => {
                    return Err(bad())
                }
                FieldType::Date if !crate::validate::is_date(raw) => return Err(bad()),
                FieldType::Datetime => (SortKey::Missing, Some(instant(raw).ok_or_else(bad)?)),
                FieldType::Json | FieldType::List { .. } => {
                    return Err(ApiError::bad_request(format!(
                        "`{field}` cannot be filtered on (it is a {})",
                        kind.describe()
                    )))
                }
                _ => (SortKey::of(Some(&Value::String(raw.to_string()))), None),
            },
        };
        Ok(Filter {
            field: field.to_string(),
            op,
            key,
            instant,
        })
    }

    /// Whether a record whose value of the field is `value` passes.
    pub fn matches(&self, value: Option<&Value>) -> bool {
        let order = match (value, self.instant) {
            (None | Some(Value::Null), _) => return false,
            (Some(v), Some(at)) => match v.as_str().and_then(instant) {
                Some(t) => t.cmp(&at),
                None => return false,
            },
            (Some(v), None) => {
                let key = SortKey::of(Some(v));
                if key.rank() != self.key.rank() {
                    return false;
                }
                key.cmp(&self.key)
            }
        };
        self.op.holds(order)
    }

    /// Whether an ordered index can select what this filter passes (see [`bounds`]).
    pub fn uses_index(&self) -> bool {
        self.instant.is_none() && self.op != Op::Ne
    }
}

/// The range of an ordered index that `filters` select together: all on the index's
/// field, none of them `ne`, none on a `datetime` field ([`Filter::uses_index`]). The
/// range holds exactly the entries of the values every filter passes: values of another
/// kind and missing values are outside it.
pub(super) fn bounds<'a>(
    filters: impl IntoIterator<Item = &'a Filter>,
) -> (Bound<Probe>, Bound<Probe>) {
    let (nil, max) = (Uuid::nil(), Uuid::max());
    let mut lo: Option<Probe> = None;
    let mut hi: Option<Probe> = None;
    let mut raise = |p: Probe| {
        if lo.as_ref().is_none_or(|l| p > *l) {
            lo = Some(p);
        }
    };
    let lower = |p: Probe, hi: &mut Option<Probe>| {
        if hi.as_ref().is_none_or(|h| p < *h) {
            *hi = Some(p);
        }
    };
    let mut kind = None;
    for f in filters {
        let k = f.key.clone();
        kind.get_or_insert_with(|| k.clone());
        match f.op {
            Op::Eq => {
                raise((k.clone(), nil));
                lower((k, max), &mut hi);
            }
            Op::Gt => raise((k, max)),
            Op::Gte => raise((k, nil)),
            Op::Lt => lower((k, nil), &mut hi),
            Op::Lte => lower((k, max), &mut hi),
            Op::Ne => {}
        }
    }
    // The ends of the kind: its values sort between them, other kinds outside.
    if let Some(kind) = kind {
        let (first, last) = match kind {
            SortKey::Num(_) => (SortKey::num(f64::NEG_INFINITY), SortKey::num(f64::INFINITY)),
            SortKey::Bool(_) => (SortKey::Bool(false), SortKey::Bool(true)),
            // Every string is at least the empty one and below any array or object.
            _ => (SortKey::string(""), SortKey::Other("".into())),
        };
        raise((first, nil));
        lower((last, if kind.rank() == 3 { nil } else { max }), &mut hi);
    }
    let end = |p: Option<Probe>| p.map_or(Bound::Unbounded, Bound::Included);
    (end(lo), end(hi))
}

/// What a filtered field is.
enum Kind<'a> {
    /// `created_at` or `updated_at`: a timestamp in the server's form.
    ServerTime,
    Field(&'a FieldSpec),
}

impl Kind<'_> {
    fn orderable(&self) -> bool {
        match self {
            Kind::ServerTime => true,
            Kind::Field(f) => f.ty.takes_ranges(),
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            Kind::ServerTime => "RFC 3339 timestamp",
            Kind::Field(f) => match f.ty {
                FieldType::Int => "integer",
                FieldType::Float => "number",
                FieldType::Bool => "boolean (true or false)",
                FieldType::Enum { .. } => "value of the enum",
                FieldType::Uuid | FieldType::Ref { .. } => "UUID",
                FieldType::Date => "date (YYYY-MM-DD)",
                FieldType::Datetime => "RFC 3339 timestamp",
                FieldType::Json => "json value",
                FieldType::List { .. } => "list",
                _ => "string",
            },
        }
    }
}

/// An RFC 3339 timestamp's instant, in microseconds since 1970 (finer digits dropped).
fn instant(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_micros())
}
