//! The OpenAPI paths and schemas of the projections: `GET <path>` with the list
//! conventions, and each projection's group (`<Name>Group`).

use super::*;

/// The group key's schema of projection `p`.
fn group_key_schema(schema: &Schema, p: &Projection) -> Value {
    let key = &p.group_by.field;
    let source = schema.model(&p.source);
    match (p.group_by.granularity, source.and_then(|m| m.field(key))) {
        (Some(g), _) => {
            let (pattern, example) = match g {
                Granularity::Hour => (r"^\d{4}-\d{2}-\d{2}T\d{2}$", "2026-12-01T13"),
                Granularity::Day => (r"^\d{4}-\d{2}-\d{2}$", "2026-12-01"),
                Granularity::Week => (r"^\d{4}-W\d{2}$", "2026-W49"),
                Granularity::Month => (r"^\d{4}-\d{2}$", "2026-12"),
            };
            json!({"type": ["string", "null"], "pattern": pattern, "examples": [example],
                "description": format!("The UTC {} of `{key}` (null: records without one).", g.as_str())})
        }
        (None, Some(f)) => {
            let mut t = type_schema(&f.ty);
            t["description"] = json!(format!("The value of `{key}` (null: records without one)."));
            json!({"anyOf": [t, {"type": "null"}]})
        }
        (None, None) => {
            json!({"type": "string", "format": "date-time", "description": format!("The value of `{key}`.")})
        }
    }
}

/// The schema of a filter on projection `p`'s group key: a field's own type, or a
/// time bucket's text (a prefix such as `2026-11` compares as text); never empty.
fn key_filter_schema(schema: &Schema, p: &Projection) -> Value {
    let source = schema.model(&p.source);
    match (
        p.group_by.granularity,
        source.and_then(|m| m.field(&p.group_by.field)),
    ) {
        (None, Some(f)) => {
            let mut t = type_schema(&f.ty);
            if t["type"] == "string" {
                t["minLength"] = json!(1);
            }
            t
        }
        _ => json!({"type": "string", "minLength": 1}),
    }
}

/// `GET <path>` of projection `p`, and its group's schema.
pub(super) fn projection_path(
    schema: &Schema,
    p: &Projection,
    paths: &mut Map<String, Value>,
    components: &mut Map<String, Value>,
) {
    let key = &p.group_by.field;
    let source = schema.model(&p.source);
    let mut props = Map::new();
    props.insert(key.clone(), group_key_schema(schema, p));
    let mut required = vec![json!(key)];
    for a in &p.aggregates {
        let int = a
            .field
            .as_ref()
            .and_then(|f| source.and_then(|m| m.field(f)))
            .is_some_and(|f| f.ty == FieldType::Int);
        let hidden = a
            .field
            .as_ref()
            .and_then(|f| source.and_then(|m| m.field(f)))
            .and_then(|f| f.read_roles())
            .map(|r| r.to_vec());
        let of = a.field.as_deref().unwrap_or_default();
        let (ty, description) = match a.op {
            AggregateOp::Count => (
                json!({"type": "integer", "minimum": 1}),
                "How many records the group has.".to_string(),
            ),
            AggregateOp::Sum => (
                json!({"type": if int { "integer" } else { "number" }}),
                format!("The sum of `{of}` (exact; 0 while no record has one)."),
            ),
            AggregateOp::Avg => (
                json!({"type": ["number", "null"]}),
                format!("The mean of `{of}` (null while no record has one)."),
            ),
            AggregateOp::Min => (
                json!({"type": [if int { "integer" } else { "number" }, "null"]}),
                format!("The smallest `{of}` (null while no record has one)."),
            ),
            AggregateOp::Max => (
                json!({"type": [if int { "integer" } else { "number" }, "null"]}),
                format!("The largest `{of}` (null while no record has one)."),
            ),
        };
        let mut t = ty;
        let mut description = description;
        match &hidden {
            Some(roles) => {
                description.push_str(&format!(
                    " Only for callers who may read `{of}` ({}); others do not receive it.",
                    roles.join(", ")
                ));
                t["x-lithair-read-roles"] = json!(roles);
            }
            None => required.push(json!(a.name)),
        }
        t["description"] = json!(description);
        props.insert(a.name.clone(), t);
    }
    let group = format!("{}Group", p.name);
    components.insert(group.clone(), json!({"type": "object", "description": p.description.clone().unwrap_or_else(|| format!("One group of {}.", p.name)), "properties": props, "required": required, "additionalProperties": false}));
    let members: Vec<Value> = std::iter::once(key.clone())
        .chain(p.aggregates.iter().map(|a| a.name.clone()))
        .flat_map(|m| [json!(m.clone()), json!(format!("-{m}"))])
        .collect();
    let q = |name: &str, description: &str, schema: Value| json!({"name": name, "in": "query", "description": description, "schema": schema});
    let mut parameters = vec![
        q(
            "limit",
            "At most this many groups (100 by default).",
            json!({"type": "integer", "minimum": 0, "maximum": 1000}),
        ),
        q(
            "offset",
            "Groups to skip.",
            json!({"type": "integer", "minimum": 0, "maximum": u64::MAX}),
        ),
        json!({"name": "sort", "in": "query", "description": format!("Comma-separated members, `-` for descending; default `{key}`."),
            "schema": {"type": "array", "items": {"type": "string", "enum": members}, "maxItems": 8}, "style": "form", "explode": false}),
        q(
            key,
            "Only the group with this key.",
            key_filter_schema(schema, p),
        ),
    ];
    for op in ["ne", "gt", "gte", "lt", "lte"] {
        parameters.push(q(
            &format!("{key}[{op}]"),
            &format!("Groups whose key is {op} this."),
            key_filter_schema(schema, p),
        ));
    }
    parameters.extend(super::consistency_params());
    let filter_note = p
        .filter
        .iter()
        .map(|c| format!("`{}` = {}", c.field, c.value))
        .collect::<Vec<_>>();
    let mut description = format!(
        "{} Aggregates of the records of {}{}, grouped by `{key}`, updated with every write. Aggregates of fields a caller may not see are left out.",
        roles_note(&p.read),
        p.source,
        if filter_note.is_empty() { String::new() } else { format!(" with {}", filter_note.join(" and ")) }
    );
    if let Some(d) = &p.description {
        description = format!("{d}\n\n{description}");
    }
    paths.insert(p.path.clone(), json!({"get": {
        "tags": [p.name], "operationId": format!("list_{}", names::snake(&p.name)), "summary": format!("The groups of {}", p.name),
        "description": description,
        "security": security(&p.read),
        "parameters": parameters,
        "responses": {
            "200": {"description": "A page of groups.",
                "headers": {"ETag": {"description": "Changes with every write to the source.", "schema": {"type": "string"}}},
                "content": {"application/json": {"schema": {
                "type": "object", "properties": {"items": {"type": "array", "items": {"$ref": format!("#/components/schemas/{group}")}},
                    "total": {"type": "integer"}, "limit": {"type": "integer"}, "offset": {"type": "integer"}},
                "required": ["items", "total", "limit", "offset"]}}}},
            "304": {"description": "Not modified (If-None-Match)."},
            "400": problem_response("Bad query."), "401": problem_response("No or bad token."), "403": problem_response("Missing role, or grouped by a field the caller may not see.")}
    }}));
}
