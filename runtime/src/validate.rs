//! Request bodies checked against the schema: every failing field reported at once.

use serde_json::{Map, Value};

use crate::error::{ApiError, FieldError};
use crate::spec::{CompiledSpec, FieldSpec, ModelSpec};

use lithair_spec::values::{self, Problem};

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
                check_value(spec, model, f, &v, &mut errors);
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

/// Checks `v` as the value of field `f` (the shared check of `lithair_spec::values`),
/// one error per problem, at the field's name (with `[i]` for a list's item).
fn check_value(
    spec: &CompiledSpec,
    model: &ModelSpec,
    f: &FieldSpec,
    v: &Value,
    errors: &mut Vec<FieldError>,
) {
    let pattern = spec.patterns.get(&(model.name.clone(), f.name.clone()));
    let matches = |s: &str| pattern.is_none_or(|p| p.is_match(s));
    let name = &f.name;
    for problem in values::check(&f.ty, &f.rules, v, &matches) {
        let (at, code, message) = match problem {
            Problem::Type { path, expected } => {
                let at = item_at(name, &path);
                let message = format!("`{at}` must be {}", values::expected(&expected));
                (at, "type", message)
            }
            Problem::NotInEnum {
                path,
                values: allowed,
                ..
            } => {
                let at = item_at(name, &path);
                let message = format!("`{at}` must be one of {}", allowed.join(", "));
                (at, "type", message)
            }
            Problem::Min(min) => (
                name.clone(),
                "min",
                format!("`{name}` must be at least {min}"),
            ),
            Problem::Max(max) => (
                name.clone(),
                "max",
                format!("`{name}` must be at most {max}"),
            ),
            Problem::MinLength(min) => (
                name.clone(),
                "min_length",
                format!("`{name}` must have at least {min} {}", units(v, min)),
            ),
            Problem::MaxLength(max) => (
                name.clone(),
                "max_length",
                format!("`{name}` must have at most {max} {}", units(v, max)),
            ),
            Problem::Pattern => (
                name.clone(),
                "pattern",
                format!(
                    "`{name}` must match {}",
                    f.rules.pattern.as_deref().unwrap_or("")
                ),
            ),
        };
        errors.push(FieldError::new(&at, code, message));
    }
}

/// `field[i][j]…` for the item at `path` of a list field.
fn item_at(field: &str, path: &[usize]) -> String {
    let mut at = field.to_string();
    for i in path {
        at.push_str(&format!("[{i}]"));
    }
    at
}

/// The unit a length of `v` counts in, for `n` of them.
fn units(v: &Value, n: u64) -> &'static str {
    match (v.is_array(), n == 1) {
        (true, true) => "item",
        (true, false) => "items",
        (false, true) => "character",
        (false, false) => "characters",
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
