//! Schema changes that records already stored cannot follow, and what the others do to
//! them.
//!
//! `generate` compares the new schema with the one of the last generate
//! (`.lithair/schema.prev.yaml`) and refuses the breaking ones unless `--allow-breaking`,
//! saying what will happen to the data. Additive changes (a new optional, defaulted or
//! backfilled field, a new model, a looser rule) pass, and so do the changes the runtime
//! carries stored data through: a field `renamed_from` its former name, a required field
//! with a `backfill`, and the lossless type changes (int to float, enum to string or
//! text, string to text). [`data_changes`] says what each of those does to stored data.

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

/// The model of `new` that continues model `old`: the one of its name, or the one
/// renamed from it.
fn successor<'a>(new: &'a Schema, old: &str) -> Option<&'a crate::schema::model::Model> {
    new.models.iter().find(|m| m.name == old).or_else(|| {
        new.models
            .iter()
            .find(|m| m.renamed_from.as_deref() == Some(old))
    })
}

/// The field of `old` that `new` continues: the one of its name, or the one it is
/// renamed from.
fn former<'a>(old: &'a crate::schema::model::Model, new: &Field) -> Option<&'a Field> {
    old.fields.iter().find(|f| f.name == new.name).or_else(|| {
        let from = new.renamed_from.as_deref()?;
        old.fields.iter().find(|f| f.name == from)
    })
}

/// Every breaking change from `old` to `new`.
pub fn compare(old: &Schema, new: &Schema) -> Vec<BreakingChange> {
    let mut out = Vec::new();
    for om in &old.models {
        let Some(nm) = successor(new, &om.name) else {
            push(
                &mut out,
                format!("model {} was removed", om.name),
                "its stored records stay on disk but are no longer served (orphaned); if it was renamed, give the new model `renamed_from:`",
            );
            continue;
        };
        for of in &om.fields {
            let what = format!("{}.{}", om.name, of.name);
            let renamed = nm
                .fields
                .iter()
                .find(|f| f.renamed_from.as_deref() == Some(of.name.as_str()));
            match nm.fields.iter().find(|f| f.name == of.name).or(renamed) {
                None => push(
                    &mut out,
                    format!("field {what} was removed"),
                    "stored values of this field are no longer served",
                ),
                Some(nf) => field_changes(&what, of, nf, &mut out),
            }
        }
        for nf in nm.fields.iter().filter(|f| former(om, f).is_none()) {
            if nf.required() && nf.backfill.is_none() {
                push(
                    &mut out,
                    format!("new field {}.{} is required and has no default", nm.name, nf.name),
                    "records stored before have no value for it and would fail validation on their next update; add `backfill:` (what they read), `default:` or `optional: true`",
                );
            } else if nf.unique && nf.fill().is_some() {
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

/// What the changes from `old` to `new` that are not breaking do to stored data, one
/// sentence each (renames, backfills, lossless type changes).
pub fn data_changes(old: &Schema, new: &Schema) -> Vec<String> {
    let mut out = Vec::new();
    for nm in &new.models {
        let Some(om) = old
            .models
            .iter()
            .find(|m| successor(new, &m.name).is_some_and(|s| s.name == nm.name))
        else {
            continue;
        };
        if om.name != nm.name {
            out.push(format!(
                "model {} is renamed {}: its stored records and events are read as {}'s",
                om.name, nm.name, nm.name
            ));
        }
        for nf in &nm.fields {
            let what = format!("{}.{}", nm.name, nf.name);
            match former(om, nf) {
                Some(of) => {
                    if of.name != nf.name {
                        out.push(format!(
                            "field {}.{} is renamed {}: stored records and events are read under the new name",
                            nm.name, of.name, nf.name
                        ));
                    }
                    if of.ty != nf.ty && converts(&of.ty, &nf.ty) {
                        out.push(format!(
                            "field {what} changes type from {} to {}: stored values are read as {} (no value changes)",
                            of.ty.spelling(),
                            nf.ty.spelling(),
                            nf.ty.spelling()
                        ));
                    }
                    if of.optional && !nf.optional {
                        if let Some(b) = nf.fill() {
                            out.push(format!(
                                "field {what} is now required: records stored without it read {b}"
                            ));
                        }
                    }
                }
                None => {
                    if let Some(b) = nf.fill() {
                        out.push(format!(
                            "new field {what}: records stored before read {b}{}",
                            if nf.backfill.is_some() {
                                " (backfill)"
                            } else {
                                " (default)"
                            }
                        ));
                    }
                }
            }
        }
    }
    out
}

fn field_changes(what: &str, old: &Field, new: &Field, out: &mut Vec<BreakingChange>) {
    if !same_kind(&old.ty, &new.ty) && !converts(&old.ty, &new.ty) {
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
    if old.optional && !new.optional && new.fill().is_none() {
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

/// Whether values of type `a` are read as type `b` without loss: an int as a float (up
/// to 2^53, as every number is held), a string as text, an enum's value as a string or
/// text.
fn converts(a: &FieldType, b: &FieldType) -> bool {
    match (a, b) {
        (FieldType::Int, FieldType::Float) => true,
        (FieldType::String, FieldType::Text) => true,
        (FieldType::Enum { .. }, FieldType::String | FieldType::Text) => true,
        (FieldType::List { item: x }, FieldType::List { item: y }) => converts(x, y),
        _ => false,
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
