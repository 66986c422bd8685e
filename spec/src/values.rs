//! What a field's value may be, in one place for the generator (defaults, backfills and
//! `where` values in the YAML) and the runtime (request bodies): the names a field may
//! not take, the largest integer, how a pattern is anchored, what a UUID, a date and a
//! datetime are, and the check of a value against a field's type and rules ([`check`]),
//! whose [`Problem`]s each side words in its own errors.

use serde_json::Value;

use crate::{FieldType, Rules};

/// The metadata every record has; no field may take these names.
pub const RESERVED_FIELDS: &[&str] = &["id", "created_at", "updated_at", "version"];

/// The largest integer an `int` holds: every number is kept as a JSON number, which
/// clients read as a double, exact up to 2^53.
pub const MAX_SAFE_INT: i64 = 9_007_199_254_740_992;

/// Whether `i` fits an `int` (within ±2^53).
pub fn int_fits(i: i64) -> bool {
    i.unsigned_abs() <= MAX_SAFE_INT as u64
}

/// A `validate.pattern` as it is matched: against the whole value.
pub fn anchored(pattern: &str) -> String {
    format!("^(?:{pattern})$")
}

/// Whether `s` is a UUID in its hyphenated form (`8-4-4-4-12` hex digits).
pub fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Whether `s` is a date written exactly `YYYY-MM-DD` (dates compare by their text, so
/// `2024-2-1`, a sign or a space would sort out of place).
pub fn is_date(s: &str) -> bool {
    s.len() == 10
        && chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .is_ok_and(|d| d.format("%Y-%m-%d").to_string() == s)
}

/// Whether `s` is an RFC 3339 timestamp.
pub fn is_datetime(s: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

/// What is wrong with a value of a field.
#[derive(Clone, Debug, PartialEq)]
pub enum Problem {
    /// A value (the field's, or the item at `path` of a list: its indices from the
    /// field's value down) that is not of type `expected`.
    Type {
        /// Where.
        path: Vec<usize>,
        /// The type the value should have.
        expected: FieldType,
    },
    /// A string that is not one of an enum's `values`.
    NotInEnum {
        /// Where (as in [`Problem::Type`]).
        path: Vec<usize>,
        /// The string.
        value: String,
        /// The enum's values.
        values: Vec<String>,
    },
    /// A number below `validate.min`.
    Min(f64),
    /// A number above `validate.max`.
    Max(f64),
    /// A string (in characters) or a list (in items) shorter than `validate.min_length`.
    MinLength(u64),
    /// A string or a list longer than `validate.max_length`.
    MaxLength(u64),
    /// A string that does not match `validate.pattern`.
    Pattern,
}

/// Whether `v` is a value of `ty` itself (for a list: an array, whatever its items).
fn is_of(ty: &FieldType, v: &Value) -> bool {
    match ty {
        FieldType::Json => true,
        FieldType::String | FieldType::Text => v.is_string(),
        FieldType::Bool => v.is_boolean(),
        FieldType::Int => v.as_i64().is_some_and(int_fits),
        FieldType::Float => v.as_f64().is_some_and(f64::is_finite),
        FieldType::Uuid | FieldType::Ref { .. } => v.as_str().is_some_and(is_uuid),
        FieldType::Date => v.as_str().is_some_and(is_date),
        FieldType::Datetime => v.as_str().is_some_and(is_datetime),
        FieldType::Enum { values } => v.as_str().is_some_and(|s| values.iter().any(|x| x == s)),
        FieldType::List { .. } => v.is_array(),
    }
}

fn check_type(ty: &FieldType, v: &Value, path: &mut Vec<usize>, out: &mut Vec<Problem>) {
    if !is_of(ty, v) {
        out.push(match (ty, v) {
            (FieldType::Enum { values }, Value::String(s)) => Problem::NotInEnum {
                path: path.clone(),
                value: s.clone(),
                values: values.clone(),
            },
            _ => Problem::Type {
                path: path.clone(),
                expected: ty.clone(),
            },
        });
        return;
    }
    if let (FieldType::List { item }, Value::Array(items)) = (ty, v) {
        for (n, x) in items.iter().enumerate() {
            path.push(n);
            check_type(item, x, path, out);
            path.pop();
        }
    }
}

/// The problems of `v` as a value of a field of type `ty` with `rules` (not null: each
/// side decides what null means), every one at once: its type, its items' types for a
/// list, and, when the value itself has the type, the rules (on the value, not on list
/// items). `matches` says whether a string matches the rules' pattern (anchored, see
/// [`anchored`]); each side compiles patterns its own way.
pub fn check(
    ty: &FieldType,
    rules: &Rules,
    v: &Value,
    matches: &dyn Fn(&str) -> bool,
) -> Vec<Problem> {
    let mut out = Vec::new();
    check_type(ty, v, &mut Vec::new(), &mut out);
    if !is_of(ty, v) {
        return out;
    }
    if let Some(n) = v.as_f64() {
        if let Some(min) = rules.min.filter(|m| n < *m) {
            out.push(Problem::Min(min));
        }
        if let Some(max) = rules.max.filter(|m| n > *m) {
            out.push(Problem::Max(max));
        }
    }
    let len = match v {
        Value::String(s) => Some(s.chars().count() as u64),
        Value::Array(a) => Some(a.len() as u64),
        _ => None,
    };
    if let Some(len) = len {
        if let Some(min) = rules.min_length.filter(|m| len < *m) {
            out.push(Problem::MinLength(min));
        }
        if let Some(max) = rules.max_length.filter(|m| len > *m) {
            out.push(Problem::MaxLength(max));
        }
    }
    if let (Some(_), Value::String(s)) = (&rules.pattern, v) {
        if !matches(s) {
            out.push(Problem::Pattern);
        }
    }
    out
}

/// What a value of `ty` is, in words ("an integer", "a list of a string"): how both
/// sides say what they expected.
pub fn expected(ty: &FieldType) -> String {
    match ty {
        FieldType::String | FieldType::Text => "a string".into(),
        FieldType::Bool => "true or false".into(),
        FieldType::Int => "an integer".into(),
        FieldType::Float => "a number".into(),
        FieldType::Uuid => "a UUID".into(),
        FieldType::Ref { model } => format!("the id (UUID) of a {model}"),
        FieldType::Date => "a date like \"2024-09-13\"".into(),
        FieldType::Datetime => "an RFC 3339 timestamp like \"2024-09-13T10:30:00Z\"".into(),
        FieldType::Json => "any value".into(),
        FieldType::Enum { values } => format!("one of {}", values.join(", ")),
        FieldType::List { item } => format!("a list of {}", expected(item)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_value_is_checked_against_its_type_and_rules_at_once() {
        let rules = Rules {
            min_length: Some(2),
            max_length: Some(3),
            ..Rules::default()
        };
        let list = FieldType::List {
            item: Box::new(FieldType::Enum {
                values: vec!["a".into(), "b".into()],
            }),
        };
        let never = |_: &str| false;
        assert_eq!(check(&list, &rules, &json!(["a", "b"]), &never), vec![]);
        assert_eq!(
            check(&list, &rules, &json!(["a", "c", 1, "b"]), &never),
            vec![
                Problem::NotInEnum {
                    path: vec![1],
                    value: "c".into(),
                    values: vec!["a".into(), "b".into()]
                },
                Problem::Type {
                    path: vec![2],
                    expected: FieldType::Enum {
                        values: vec!["a".into(), "b".into()]
                    }
                },
                Problem::MaxLength(3),
            ]
        );
        let int = FieldType::Int;
        let bounded = Rules {
            min: Some(1.0),
            max: Some(5.0),
            ..Rules::default()
        };
        assert_eq!(
            check(&int, &bounded, &json!(0), &never),
            vec![Problem::Min(1.0)]
        );
        assert_eq!(
            check(&int, &bounded, &json!(2.5), &never),
            vec![Problem::Type {
                path: vec![],
                expected: FieldType::Int
            }]
        );
        assert_eq!(
            check(&int, &bounded, &json!(MAX_SAFE_INT + 1), &never).len(),
            1
        );
        let pattern = Rules {
            pattern: Some("[a-z]+".into()),
            ..Rules::default()
        };
        let lower = |s: &str| s.chars().all(|c| c.is_ascii_lowercase());
        assert_eq!(
            check(&FieldType::String, &pattern, &json!("abc"), &lower),
            vec![]
        );
        assert_eq!(
            check(&FieldType::String, &pattern, &json!("aBc"), &lower),
            vec![Problem::Pattern]
        );
        assert_eq!(expected(&list), "a list of one of a, b");
    }

    #[test]
    fn the_value_rules() {
        assert!(int_fits(MAX_SAFE_INT) && int_fits(-MAX_SAFE_INT));
        assert!(!int_fits(MAX_SAFE_INT + 1) && !int_fits(i64::MIN));
        assert!(is_date("2024-02-29") && !is_date("2023-02-29") && !is_date("2024-2-01"));
        assert!(is_datetime("2024-09-13T10:30:00Z") && is_datetime("2024-09-13T10:30:00.5+02:00"));
        assert!(!is_datetime("2024-09-13") && !is_datetime("2024-09-13T25:00:00Z"));
        assert!(is_uuid("67e55044-10b1-426f-9247-bb680e5fe0c8") && !is_uuid("67e55044"));
        assert_eq!(anchored("a|b"), "^(?:a|b)$");
    }
}
