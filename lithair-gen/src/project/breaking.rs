//! Schema changes that records already stored cannot follow.
//!
//! `generate` compares the new schema with the one of the last generate
//! (`.lithair/schema.prev.yaml`) and refuses these unless `--allow-breaking`, saying what
//! will happen to the data. Additive changes (a new optional or defaulted field, a new
//! model, a looser rule) pass: the runtime fills defaults when it reads older records.

use crate::schema::model::{Field, FieldType, Schema};

/// One breaking change, as sentences for the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreakingChange {
    /// What changed.
    pub change: String,
    /// What happens to stored data if it goes ahead.
    pub consequence: String,
}

fn push(out: &mut Vec<BreakingChange>, change: String, consequence: &str) {
    out.push(BreakingChange {
        change,
        consequence: consequence.to_string(),
    });
}

/// Every breaking change from `old` to `new`.
pub fn compare(old: &Schema, new: &Schema) -> Vec<BreakingChange> {
    let mut out = Vec::new();
    for om in &old.models {
        let Some(nm) = new.models.iter().find(|m| m.name == om.name) else {
            push(
                &mut out,
                format!("model {} was removed", om.name),
                "its stored records stay on disk but are no longer served (orphaned)",
            );
            continue;
        };
        for of in &om.fields {
            let what = format!("{}.{}", om.name, of.name);
            match nm.fields.iter().find(|f| f.name == of.name) {
                None => push(
                    &mut out,
                    format!("field {what} was removed"),
                    "stored values of this field are no longer served",
                ),
                Some(nf) => field_changes(&what, of, nf, &mut out),
            }
        }
        for nf in nm
            .fields
            .iter()
            .filter(|f| !om.fields.iter().any(|o| o.name == f.name))
        {
            if nf.required() {
                push(
                    &mut out,
                    format!("new field {}.{} is required and has no default", nm.name, nf.name),
                    "records stored before have no value for it and would fail validation on their next update; add `default:` or `optional: true`",
                );
            } else if nf.unique && nf.default.is_some() {
                push(
                    &mut out,
                    format!("new field {}.{} is unique and has a default", nm.name, nf.name),
                    "every record stored before would get the same default value, breaking uniqueness",
                );
            }
        }
    }
    out
}

fn field_changes(what: &str, old: &Field, new: &Field, out: &mut Vec<BreakingChange>) {
    if !same_kind(&old.ty, &new.ty) {
        push(
            out,
            format!(
                "field {what} changed type from {} to {}",
                old.ty.spelling(),
                new.ty.spelling()
            ),
            "stored values of the old type would be misread",
        );
        return;
    }
    if let (Some(ov), Some(nv)) = (enum_values(&old.ty), enum_values(&new.ty)) {
        for v in ov.iter().filter(|v| !nv.contains(v)) {
            push(
                out,
                format!("enum value \"{v}\" of {what} was removed"),
                "records holding it could no longer be read as the enum",
            );
        }
    }
    if old.optional && !new.optional && new.default.is_none() {
        push(
            out,
            format!("field {what} is no longer optional"),
            "records stored without it would fail validation",
        );
    }
    if !old.unique && new.unique {
        push(
            out,
            format!("field {what} became unique"),
            "records stored before may already share values",
        );
    }
    let (o, n) = (&old.rules, &new.rules);
    let tighter_min = |a: Option<f64>, b: Option<f64>| b.is_some_and(|b| a.is_none_or(|a| b > a));
    let tighter_max = |a: Option<f64>, b: Option<f64>| b.is_some_and(|b| a.is_none_or(|a| b < a));
    let as_f = |x: Option<u64>| x.map(|v| v as f64);
    let mut tightened = Vec::new();
    if tighter_min(o.min, n.min) {
        tightened.push("min");
    }
    if tighter_max(o.max, n.max) {
        tightened.push("max");
    }
    if tighter_min(as_f(o.min_length), as_f(n.min_length)) {
        tightened.push("min_length");
    }
    if tighter_max(as_f(o.max_length), as_f(n.max_length)) {
        tightened.push("max_length");
    }
    if n.pattern.is_some() && n.pattern != o.pattern {
        tightened.push("pattern");
    }
    if !tightened.is_empty() {
        push(
            out,
            format!(
                "validation of {what} was tightened ({})",
                tightened.join(", ")
            ),
            "records stored before may break the new rule and fail their next update",
        );
    }
}

fn same_kind(a: &FieldType, b: &FieldType) -> bool {
    match (a, b) {
        (FieldType::Enum { .. }, FieldType::Enum { .. }) => true,
        (FieldType::List { item: x }, FieldType::List { item: y }) => same_kind(x, y),
        // Text and string hold the same JSON; widening string to text is safe.
        (FieldType::String | FieldType::Text, FieldType::String | FieldType::Text) => true,
        _ => a == b,
    }
}

fn enum_values(t: &FieldType) -> Option<&Vec<String>> {
    match t {
        FieldType::Enum { values } => Some(values),
        FieldType::List { item } => enum_values(item),
        _ => None,
    }
}
