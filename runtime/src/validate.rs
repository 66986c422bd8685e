//! Request bodies checked against the schema: every failing field reported at once.

use serde_json::{Map, Value};

use crate::error::{ApiError, FieldError};
use crate::spec::{CompiledSpec, FieldSpec, FieldType, ModelSpec};

use lithair_spec::values;

/// Keys every record carries, set by the server.
pub const METADATA: &[&str] = values::RESERVED_FIELDS;

/// What kind of write the body is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// POST: defaults fill missing fields.
    Create,
    /// PUT / PATCH: the body is the whole new record; defaults fill missing fields too.
    Replace,
}

/// Checks `body` for `model` and answers the record's fields (defaults filled, metadata
/// left out), or a 422 listing every failing field. `old` is the record being replaced.
pub fn check_body(
    spec: &CompiledSpec,
    model: &ModelSpec,
    body: Value,
    mode: Mode,
    old: Option<&Map<String, Value>>,
) -> Result<Map<String, Value>, ApiError> {
    let Value::Object(mut body) = body else {
        return Err(ApiError::unprocessable(
            "",
            "type",
            "the body must be a JSON object",
        ));
    };
    let mut errors = Vec::new();
    for meta in METADATA {
        if let Some(v) = body.remove(*meta) {
            let allowed = match (*meta, old) {
                ("id", Some(old)) => old.get("id") == Some(&v),
                ("id", None) => false,
                _ => true,
            };
            if !allowed {
                errors.push(FieldError::new(
                    *meta,
                    "read_only",
                    format!("`{meta}` is assigned by the server"),
                ));
            }
        }
    }
    let mut out = Map::new();
    for f in &model.fields {
        match body.remove(&f.name) {
            Some(Value::Null) if f.optional => {}
            Some(Value::Null) => errors.push(FieldError::new(
                &f.name,
                "required",
                format!("`{}` may not be null", f.name),
            )),
            Some(v) => {
                let before = errors.len();
                check_value(spec, model, f, &f.ty, &v, &f.name, &mut errors);
                if errors.len() == before {
                    out.insert(f.name.clone(), v);
                }
            }
            None => match &f.default {
                Some(d) => {
                    out.insert(f.name.clone(), d.clone());
                }
                None if f.optional => {}
                None => errors.push(FieldError::new(
                    &f.name,
                    "required",
                    format!("`{}` is required", f.name),
                )),
            },
        }
        if mode == Mode::Replace && f.immutable {
            if let Some(old) = old {
                if old.get(&f.name) != out.get(&f.name) && !errors.iter().any(|e| e.field == f.name)
                {
                    errors.push(FieldError::new(
                        &f.name,
                        "immutable",
                        format!("`{}` cannot change after creation", f.name),
                    ));
                }
            }
        }
    }
    let mut unknown: Vec<&String> = body.keys().collect();
    unknown.sort();
    for k in unknown {
        errors.push(FieldError::new(
            k.as_str(),
            "unknown_field",
            format!("`{k}` is not a field of {}", model.name),
        ));
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ApiError::invalid(errors))
    }
}

fn type_name(ty: &FieldType) -> String {
    match ty {
        FieldType::String | FieldType::Text => "a string".into(),
        FieldType::Bool => "true or false".into(),
        FieldType::Int => "an integer".into(),
        FieldType::Float => "a number".into(),
        FieldType::Uuid => "a UUID".into(),
        FieldType::Ref { model } => format!("the id (UUID) of a {model}"),
        FieldType::Date => "a date (YYYY-MM-DD)".into(),
        FieldType::Datetime => "an RFC 3339 timestamp".into(),
        FieldType::Json => "any JSON value".into(),
        FieldType::Enum { values } => format!("one of {}", values.join(", ")),
        FieldType::List { item } => format!("a list of {}", type_name(item)),
    }
}

fn check_value(
    spec: &CompiledSpec,
    model: &ModelSpec,
    f: &FieldSpec,
    ty: &FieldType,
    v: &Value,
    at: &str,
    errors: &mut Vec<FieldError>,
) {
    let ok = match ty {
        FieldType::Json => true,
        FieldType::String | FieldType::Text => v.is_string(),
        FieldType::Bool => v.is_boolean(),
        FieldType::Int => v.as_i64().is_some_and(values::int_fits),
        FieldType::Float => v.as_f64().is_some_and(f64::is_finite),
        FieldType::Uuid | FieldType::Ref { .. } => v.as_str().is_some_and(values::is_uuid),
        FieldType::Date => v.as_str().is_some_and(values::is_date),
        FieldType::Datetime => v.as_str().is_some_and(values::is_datetime),
        FieldType::Enum { values } => v.as_str().is_some_and(|s| values.iter().any(|x| x == s)),
        FieldType::List { item } => match v.as_array() {
            Some(items) => {
                for (i, x) in items.iter().enumerate() {
                    check_value(spec, model, f, item, x, &format!("{at}[{i}]"), errors);
                }
                true
            }
            None => false,
        },
    };
    if !ok {
        errors.push(FieldError::new(
            at,
            "type",
            format!("`{at}` must be {}", type_name(ty)),
        ));
        return;
    }
    // Rules apply to the field's own value, not to list items.
    if at != f.name {
        return;
    }
    let r = &f.rules;
    if let Some(n) = v.as_f64() {
        if let Some(min) = r.min.filter(|m| n < *m) {
            errors.push(FieldError::new(
                at,
                "min",
                format!("`{at}` must be at least {min}"),
            ));
        }
        if let Some(max) = r.max.filter(|m| n > *m) {
            errors.push(FieldError::new(
                at,
                "max",
                format!("`{at}` must be at most {max}"),
            ));
        }
    }
    let (len, unit) = match v {
        Value::String(s) => (Some(s.chars().count() as u64), "character"),
        Value::Array(a) => (Some(a.len() as u64), "item"),
        _ => (None, ""),
    };
    let units = |n: u64| {
        if n == 1 {
            unit.to_string()
        } else {
            format!("{unit}s")
        }
    };
    if let Some(len) = len {
        if let Some(min) = r.min_length.filter(|m| len < *m) {
            errors.push(FieldError::new(
                at,
                "min_length",
                format!("`{at}` must have at least {min} {}", units(min)),
            ));
        }
        if let Some(max) = r.max_length.filter(|m| len > *m) {
            errors.push(FieldError::new(
                at,
                "max_length",
                format!("`{at}` must have at most {max} {}", units(max)),
            ));
        }
    }
    if let (Some(p), Some(s)) = (
        spec.patterns.get(&(model.name.clone(), f.name.clone())),
        v.as_str(),
    ) {
        if !p.is_match(s) {
            errors.push(FieldError::new(
                at,
                "pattern",
                format!(
                    "`{at}` must match {}",
                    f.rules.pattern.as_deref().unwrap_or("")
                ),
            ));
        }
    }
}

/// Applies an RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// Whether `s` is a date written exactly `YYYY-MM-DD` (`lithair_spec::values`).
pub(crate) fn is_date(s: &str) -> bool {
    values::is_date(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc7386() {
        let mut t = serde_json::json!({"a": 1, "b": {"c": 2, "d": 3}});
        merge_patch(
            &mut t,
            &serde_json::json!({"a": null, "b": {"c": 5}, "e": [1]}),
        );
        assert_eq!(t, serde_json::json!({"b": {"c": 5, "d": 3}, "e": [1]}));
    }
}

