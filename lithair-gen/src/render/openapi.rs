//! The OpenAPI 3.1 document of a service, built from the checked schema.

use serde_json::{json, Map, Value};

use crate::schema::model::{
    ActionOutput, AggregateOp, Field, FieldType, Granularity, Model, Operation, Projection, Schema,
    OWNER,
};
use crate::schema::names;

mod operations;
mod projections;

use operations::{common_responses, operational_paths};
use projections::projection_path;

/// An `If-Match` or `If-None-Match` value: `*` or a list of entity tags (RFC 9110).
/// An unquoted tag (`If-Match: 3`) is taken as the quoted one.
const ETAG_LIST: &str = r#"^[ \t]*(\*|(W/)?("[!#-~]*"|[!#-+\--~]+)([ \t]*,[ \t]*(W/)?("[!#-~]*"|[!#-+\--~]+))*)[ \t]*$"#;

/// How consistent a read is: the `consistency` query parameter and the
/// `X-Lithair-Consistency` header (the parameter wins when both are given); any other
/// value is a 400.
pub(super) fn consistency_params() -> [Value; 2] {
    let schema = json!({"type": "string", "enum": ["local", "linearizable"]});
    [
        json!({"name": "consistency", "in": "query", "schema": schema,
            "description": "`linearizable`: answer only once this node has applied everything committed before the request; `local` (the default): answer from this node's state."}),
        json!({"name": "X-Lithair-Consistency", "in": "header", "schema": schema,
            "description": "As the `consistency` parameter, which wins when both are given (a value neither local nor linearizable in either is a 400)."}),
    ]
}

fn type_schema(ty: &FieldType) -> Value {
    match ty {
        FieldType::String | FieldType::Text => json!({"type": "string"}),
        FieldType::Bool => json!({"type": "boolean"}),
        FieldType::Int => json!({"type": "integer", "format": "int64"}),
        FieldType::Float => json!({"type": "number", "format": "double"}),
        FieldType::Uuid => json!({"type": "string", "format": "uuid"}),
        FieldType::Ref { model } => {
            json!({"type": "string", "format": "uuid", "description": format!("id of a {model}")})
        }
        FieldType::Date => json!({"type": "string", "format": "date"}),
        FieldType::Datetime => json!({"type": "string", "format": "date-time"}),
        FieldType::Json => json!({}),
        FieldType::Enum { values } => json!({"type": "string", "enum": values}),
        FieldType::List { item } => json!({"type": "array", "items": type_schema(item)}),
    }
}

/// Who sees and sets a field, and what the server fills in, for its description (None:
/// nothing beyond the model's permissions).
fn access_note(m: &Model, f: &Field) -> Option<String> {
    let list = |roles: &[String]| {
        if roles.is_empty() {
            "nobody".to_string()
        } else {
            roles.join(", ")
        }
    };
    let mut notes = Vec::new();
    if m.owner_field.as_deref() == Some(f.name.as_str()) {
        notes.push("The record's owner: filled with the creating caller's subject; only a caller with a role other than `owner` in the update permission may set or change it.".to_string());
    }
    if let Some(read) = f.read_roles() {
        notes.push(format!(
            "Present only in what callers with one of these roles receive: {}; filtering or sorting on it is refused (403) to others.",
            list(read)
        ));
    }
    if let (Some(write), true) = (f.write_roles(), !f.permissions.is_open()) {
        notes.push(format!(
            "Set or changed only by: {} (403 for others).",
            list(write)
        ));
    }
    (!notes.is_empty()).then(|| notes.join(" "))
}

fn field_schema(m: &Model, f: &Field) -> Value {
    let mut s = type_schema(&f.ty);
    let Value::Object(obj) = &mut s else { return s };
    let description = match (&f.description, access_note(m, f)) {
        (Some(d), Some(n)) => Some(format!("{d} {n}")),
        (d, n) => d.clone().or(n),
    };
    if let Some(d) = description {
        obj.insert("description".into(), json!(d));
    }
    if let Some(read) = f.read_roles() {
        obj.insert("x-lithair-read-roles".into(), json!(read));
    }
    if let (Some(write), false) = (f.write_roles(), f.permissions.is_open()) {
        obj.insert("x-lithair-write-roles".into(), json!(write));
    }
    if let Some(d) = &f.default {
        obj.insert("default".into(), d.clone());
    }
    let r = &f.rules;
    let lengths = if matches!(f.ty, FieldType::List { .. }) {
        ("minItems", "maxItems")
    } else {
        ("minLength", "maxLength")
    };
    if let Some(v) = r.min {
        obj.insert("minimum".into(), json!(v));
    }
    if let Some(v) = r.max {
        obj.insert("maximum".into(), json!(v));
    }
    if let Some(v) = r.min_length {
        obj.insert(lengths.0.into(), json!(v));
    }
    if let Some(v) = r.max_length {
        obj.insert(lengths.1.into(), json!(v));
    }
    if let Some(p) = &r.pattern {
        obj.insert("pattern".into(), json!(p));
    }
    if f.optional {
        let inner = Value::Object(std::mem::take(obj));
        return json!({"oneOf": [inner, {"type": "null"}]});
    }
    s
}

fn record_schema(m: &Model) -> Value {
    let mut props = Map::new();
    props.insert(
        "id".into(),
        json!({"type": "string", "format": "uuid", "readOnly": true}),
    );
    for f in &m.fields {
        props.insert(f.name.clone(), field_schema(m, f));
    }
    props.insert(
        "created_at".into(),
        json!({"type": "string", "format": "date-time", "readOnly": true}),
    );
    props.insert(
        "updated_at".into(),
        json!({"type": "string", "format": "date-time", "readOnly": true}),
    );
    props.insert(
        "version".into(),
        json!({"type": "integer", "readOnly": true}),
    );
    let mut required = vec!["id".to_string()];
    // A field some readers do not see is not required in what they receive.
    required.extend(
        m.fields
            .iter()
            .filter(|f| !f.optional && f.read_roles().is_none())
            .map(|f| f.name.clone()),
    );
    required.extend(["created_at", "updated_at", "version"].map(String::from));
    let mut s = json!({"type": "object", "properties": props, "required": required});
    if let Some(d) = &m.description {
        s["description"] = json!(d);
    }
    s
}

fn input_schema(m: &Model) -> Value {
    object_of(m, &m.fields, &Field::required)
}

/// An object of `fields` (of `m`, or of one of its actions' input or output), no other
/// keys; those `required` says are required.
fn object_of(m: &Model, fields: &[Field], required: &dyn Fn(&Field) -> bool) -> Value {
    let props: Map<String, Value> = fields
        .iter()
        .map(|f| (f.name.clone(), field_schema(m, f)))
        .collect();
    let names: Vec<&str> = fields
        .iter()
        .filter(|f| required(f))
        .map(|f| f.name.as_str())
        .collect();
    json!({"type": "object", "properties": props, "required": names, "additionalProperties": false})
}

fn problem_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}})
}

fn roles_note(roles: &[String]) -> String {
    if roles.is_empty() {
        "Denied to everyone (no role is granted this operation).".into()
    } else if roles.iter().any(|r| r == "public") {
        "Open to anonymous callers.".into()
    } else {
        format!("Requires one of the roles: {}.", roles.join(", "))
    }
}

/// `roles_note` of a model operation, saying what the pseudo-role `owner` grants.
fn model_note(m: &Model, roles: &[String], list: bool) -> String {
    let mut note = roles_note(roles);
    if let (Some(field), true) = (&m.owner_field, roles.iter().any(|r| r == OWNER)) {
        note.push_str(&format!(
            " `owner`: a caller whose subject is the record's `{field}`{}.",
            if list {
                "; a caller whose read comes only from `owner` lists only its own records, and `total` counts only those"
            } else {
                " (records of others are 404 to a caller who may not read them, 403 otherwise)"
            }
        ));
    }
    note
}

fn security(roles: &[String]) -> Value {
    if roles.iter().any(|r| r == "public") {
        json!([{}, {"bearer": []}])
    } else {
        json!([{"bearer": []}])
    }
}

/// Builds the document; keys are emitted in a fixed order, so the output is deterministic.
pub fn document(schema: &Schema) -> Value {
    let mut paths = Map::new();
    let mut components = Map::new();
    components.insert(
        "Problem".into(),
        json!({
            "type": "object",
            "description": "An error (RFC 9457).",
            "properties": {
                "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                "detail": {"type": "string"},
                "errors": {"type": "array", "items": {"type": "object", "properties": {
                    "field": {"type": "string"}, "code": {"type": "string"}, "message": {"type": "string"}}}}
            },
            "required": ["type", "title", "status"]
        }),
    );
    let id_param = json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}});
    for m in &schema.models {
        let record = json!({"$ref": format!("#/components/schemas/{}", m.name)});
        let input = json!({"$ref": format!("#/components/schemas/{}Input", m.name)});
        components.insert(m.name.clone(), record_schema(m));
        components.insert(format!("{}Input", m.name), input_schema(m));
        components.insert(format!("{}Patch", m.name), patch_schema(m));
        let p = &m.permissions;
        let mut collection = Map::new();
        let mut item = Map::new();
        let tag = json!([m.name]);
        // Conditional reads (every model) and the Cache-Control of `cache` models.
        let if_none_match = json!({"name": "If-None-Match", "in": "header", "description": "An ETag of an earlier answer: 304 while it is current.", "schema": {"type": "string", "pattern": ETAG_LIST}});
        let mut read_headers = json!({"ETag": {"schema": {"type": "string"}}});
        if let Some(c) = &m.cache {
            read_headers["Cache-Control"] = json!({"description": format!("max-age={} (public when anonymous callers see the same answer, private otherwise)", c.ttl), "schema": {"type": "string"}});
        }
        let not_modified = json!({"description": "Not modified: the ETag named in If-None-Match is current.", "headers": {"ETag": {"schema": {"type": "string"}}}});
        if m.has(Operation::List) {
            let mut params = vec![
                json!({"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 1000}}),
                json!({"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": u64::MAX}}),
                json!({"name": "sort", "in": "query", "description": "Comma-separated fields (at most 8); `-` before a field sorts descending.", "schema": {"type": "string", "pattern": sort_pattern(m)}}),
            ];
            // `field=value`, and `field[op]=value`: eq and ne on every filterable field,
            // the ranges on the ordered types (and on the server's timestamps).
            let datetime = FieldType::Datetime;
            let fields = m
                .fields
                .iter()
                .filter(|f| !matches!(f.ty, FieldType::Json | FieldType::List { .. }))
                .map(|f| (f.name.as_str(), &f.ty))
                .chain([("created_at", &datetime), ("updated_at", &datetime)]);
            for (name, ty) in fields {
                let schema = type_schema(ty);
                let ordered = ty.takes_ranges();
                params.push(json!({"name": name, "in": "query", "description": "Equality filter.", "schema": schema}));
                let ops: &[(&str, &str)] = if ordered {
                    &[
                        ("eq", "equal to"),
                        ("ne", "not equal to"),
                        ("gt", "greater than"),
                        ("gte", "at least"),
                        ("lt", "less than"),
                        ("lte", "at most"),
                    ]
                } else {
                    &[("eq", "equal to"), ("ne", "not equal to")]
                };
                for (op, says) in ops {
                    params.push(json!({"name": format!("{name}[{op}]"), "in": "query",
                        "description": format!("Records whose `{name}` is {says} the value (a record without one matches no filter)."),
                        "schema": schema}));
                }
            }
            params.push(if_none_match.clone());
            params.extend(consistency_params());
            collection.insert("get".into(), json!({
                "tags": tag, "operationId": format!("list_{}", m.snake), "summary": format!("List {} records", m.name),
                "description": model_note(m, &p.read, true), "security": security(&p.read), "parameters": params,
                "responses": {"200": {"description": "A page of records.", "headers": read_headers.clone(), "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"items": {"type": "array", "items": record}, "total": {"type": "integer"},
                    "limit": {"type": "integer"}, "offset": {"type": "integer"}}, "required": ["items", "total"]}}}},
                    "304": not_modified.clone(),
                    "400": problem_response("Bad query."), "401": problem_response("No or bad token."), "403": problem_response("Missing role, or a filter or sort on a field the caller may not read.")}
            }));
        }
        if m.has(Operation::Create) {
            collection.insert("post".into(), json!({
                "tags": tag, "operationId": format!("create_{}", m.snake), "summary": format!("Create {}", article(&m.name)),
                "description": model_note(m, &p.create, false), "security": security(&p.create),
                "requestBody": {"required": true, "content": {"application/json": {"schema": input}}},
                "responses": {"201": {"description": "Created.", "headers": {"Location": {"schema": {"type": "string"}}, "ETag": {"schema": {"type": "string"}}},
                    "content": {"application/json": {"schema": record}}},
                    "400": problem_response("Malformed JSON."), "401": problem_response("No or bad token."), "403": problem_response("Missing role, or a field the caller may not set."),
                    "409": problem_response("Unique conflict."), "413": problem_response("Body too large."), "415": problem_response("Not JSON."),
                    "422": problem_response("Validation failed; `errors` lists every field.")}
            }));
        }
        if m.has(Operation::Get) {
            item.insert("get".into(), json!({
                "tags": tag, "operationId": format!("get_{}", m.snake), "summary": format!("Get {}", article(&m.name)),
                "description": model_note(m, &p.read, false), "security": security(&p.read),
                "parameters": [if_none_match, consistency_params()[0], consistency_params()[1]],
                "responses": {"200": {"description": "The record.", "headers": read_headers, "content": {"application/json": {"schema": record}}},
                    "304": not_modified,
                    "400": problem_response("An If-None-Match that is not an ETag list, or a consistency that is neither local nor linearizable."),
                    "401": problem_response("No or bad token."), "403": problem_response("Missing role."), "404": problem_response("No such record.")}
            }));
        }
        let write_responses = json!({"200": {"description": "The updated record.", "headers": {"ETag": {"description": "The new version's.", "schema": {"type": "string"}}}, "content": {"application/json": {"schema": record}}},
            "400": problem_response("Malformed JSON, or an If-Match that is not an ETag list."), "401": problem_response("No or bad token."), "403": problem_response("Missing role, or a field the caller may not change."),
            "404": problem_response("No such record."), "409": problem_response("Unique conflict."), "412": problem_response("If-Match does not match the current version."),
            "415": problem_response("Not JSON."), "422": problem_response("Validation failed.")});
        let if_match = json!({"name": "If-Match", "in": "header", "description": "The ETag of the version the change is made to: 412 when it is no longer current.", "schema": {"type": "string", "pattern": ETAG_LIST}});
        if m.has(Operation::Update) {
            item.insert("put".into(), json!({
                "tags": tag, "operationId": format!("update_{}", m.snake), "summary": format!("Replace {}", article(&m.name)),
                "description": model_note(m, &p.update, false), "security": security(&p.update), "parameters": [if_match],
                "requestBody": {"required": true, "content": {"application/json": {"schema": input}}}, "responses": write_responses
            }));
        }
        if m.has(Operation::Patch) {
            item.insert("patch".into(), json!({
                "tags": tag, "operationId": format!("patch_{}", m.snake), "summary": format!("Change {} (JSON merge patch)", article(&m.name)),
                "description": model_note(m, &p.update, false), "security": security(&p.update), "parameters": [if_match],
                "requestBody": {"required": true, "content": {
                    "application/merge-patch+json": {"schema": {"$ref": format!("#/components/schemas/{}Patch", m.name)}},
                    "application/json": {"schema": {"$ref": format!("#/components/schemas/{}Patch", m.name)}}}},
                "responses": write_responses
            }));
        }
        if m.has(Operation::Delete) {
            item.insert("delete".into(), json!({
                "tags": tag, "operationId": format!("delete_{}", m.snake), "summary": format!("Delete {}", article(&m.name)),
                "description": model_note(m, &p.delete, false), "security": security(&p.delete), "parameters": [if_match],
                "responses": {"204": {"description": "Deleted."}, "400": problem_response("An If-Match that is not an ETag list."), "401": problem_response("No or bad token."), "403": problem_response("Missing role."),
                    "404": problem_response("No such record."), "412": problem_response("If-Match does not match the current version.")}
            }));
        }
        if !collection.is_empty() {
            paths.insert(m.path.clone(), Value::Object(collection));
        }
        if !item.is_empty() {
            item.insert("parameters".into(), json!([id_param]));
            paths.insert(format!("{}/{{id}}", m.path), Value::Object(item));
        }
        if m.has(Operation::List) {
            paths.insert(format!("{}/_events", m.path), json!({"get": {
                "tags": tag, "operationId": format!("events_{}", m.snake), "summary": format!("The changes of {}, as server-sent events", m.name),
                "description": format!(
                    "{} One event per change: `id:` its sequence number, `event:` `{n}Created`, `{n}Updated` or `{n}Deleted`, `data:` a JSON object with `sequence_number`, `event_id`, `event_type`, `kind` (created, updated, deleted), `model`, `id`, `version`, `timestamp`, `principal`, `by_action` and `record` (the record after the change, as the caller may see it; null after a delete). `Last-Event-ID` or `since` resumes after that event (from the event log), otherwise the feed starts with the next change. A comment comes every 15 s while nothing changes. A consumer too slow to keep up is sent `event: lagged` and the stream ends; it reconnects with `Last-Event-ID`.",
                    model_note(m, &p.read, true), n = m.name),
                "security": security(&p.read),
                "parameters": [
                    {"name": "since", "in": "query", "description": "Resume after the event with this sequence number.", "schema": {"type": "integer", "minimum": 0, "maximum": u64::MAX}},
                    {"name": "Last-Event-ID", "in": "header", "description": "Resume after this event (what `EventSource` sends when it reconnects); wins over `since`.", "schema": {"type": "string", "pattern": "^[0-9]{1,19}$"}}],
                "responses": {
                    "200": {"description": "The stream of changes.", "content": {"text/event-stream": {"schema": {
                        "type": "object", "description": "One server-sent event.",
                        "properties": {"id": {"type": "string", "pattern": "^[0-9]+$"}, "event": {"type": "string"}, "data": {"type": "string", "description": "The change, as JSON."}, "retry": {"type": "integer"}}}}}},
                    "400": problem_response("A bad `since` or Last-Event-ID."), "401": problem_response("No or bad token."), "403": problem_response("Missing role."),
                    "410": problem_response("The resume point is before the first event this node holds.")}
            }}));
        }
        if m.keeps_history() {
            let audit_note = " A deleted record's past is readable by the audit roles only.";
            let entry = json!({"type": "object", "properties": {
                "version": {"type": "integer"}, "event_id": {"type": "string", "format": "uuid"},
                "sequence_number": {"type": "integer"},
                "action": {"type": "string", "enum": ["created", "updated", "deleted"]},
                "by_action": {"type": ["string", "null"], "description": "The custom action whose handler made the write, if one did."},
                "principal": {"type": "string"}, "timestamp": {"type": "string", "format": "date-time"},
                "changes": {"type": "object", "description": "Each changed field: {old, new} (null where absent); fields the caller may not see are left out.",
                    "properties": changes_schema(m)}},
                "required": ["version", "event_id", "action", "principal", "timestamp", "changes"]});
            paths.insert(format!("{}/{{id}}/history", m.path), json!({"get": {
                "tags": tag, "operationId": format!("history_{}", m.snake), "summary": format!("The changes of {}, newest first", article(&m.name)),
                "description": format!("{}{audit_note}", model_note(m, &p.read, false)), "security": security(&p.read),
                "parameters": [id_param,
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                    {"name": "before", "in": "query", "description": "Only the entries of versions below this one.", "schema": {"type": "integer", "minimum": 0, "maximum": u64::MAX}},
                    consistency_params()[0], consistency_params()[1]],
                "responses": {"200": {"description": "The record's history.", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"items": {"type": "array", "items": entry}}, "required": ["items"]}}}},
                    "400": problem_response("Bad query."), "401": problem_response("No or bad token."), "403": problem_response("Missing role."),
                    "404": problem_response("No such record.")}
            }}));
            if let Some(n) = m.lifecycle.versioned {
                paths.insert(format!("{}/{{id}}/versions/{{v}}", m.path), json!({"get": {
                    "tags": tag, "operationId": format!("version_{}", m.snake), "summary": format!("{} as it was at a version", capitalized(&article(&m.name))),
                    "description": format!("The newest {n} versions are readable; an older one is 410. {}{audit_note}", model_note(m, &p.read, false)),
                    "security": security(&p.read),
                    "parameters": [id_param, {"name": "v", "in": "path", "required": true, "schema": {"type": "integer", "minimum": 1, "maximum": u64::MAX}},
                        consistency_params()[0], consistency_params()[1]],
                    "responses": {"200": {"description": "The record at that version.", "headers": {"ETag": {"schema": {"type": "string"}}}, "content": {"application/json": {"schema": record}}},
                        "400": problem_response("A consistency that is neither local nor linearizable."), "401": problem_response("No or bad token."), "403": problem_response("Missing role."),
                        "404": problem_response("No such record or version."), "410": problem_response("Older than the versions kept readable.")}
                }}));
            }
        }
        for a in &m.actions {
            let path = format!("{}/{}", m.path, a.path);
            let mut op = json!({
                "tags": tag, "operationId": format!("{}_{}", m.snake, a.name),
                "summary": a.description.clone().unwrap_or_else(|| format!("Action {}", a.name)),
                "description": roles_note(&a.permission), "security": security(&a.permission),
                "requestBody": {"required": false, "content": {"application/json": {"schema": {}}}},
                "responses": {"200": {"description": "The action's answer.", "content": {"application/json": {"schema": {}}}},
                    "401": problem_response("No or bad token."), "403": problem_response("Missing role."), "404": problem_response("No such record."),
                    "409": problem_response("A write the action staged takes a unique value already taken, or a record it read changed before its writes were made; none of its writes is made."),
                    "422": problem_response("A write the action staged breaks the model's rules, or the handler refused the request; none of its writes is made.")}
            });
            if a.on_record() {
                op["parameters"] = json!([id_param]);
            }
            // A typed action: its body and its answer have the schemas of their fields.
            let object = |fields: &[Field], required: &dyn Fn(&Field) -> bool| {
                object_of(m, fields, required)
            };
            if let Some(input) = &a.input {
                op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": object(input, &|f: &Field| f.required())}}});
                op["responses"]["422"] = problem_response(
                    "The body breaks the action's input rules (every failing field is listed), a write the action staged breaks the model's rules, or the handler refused the request; none of its writes is made.",
                );
            }
            match &a.output {
                Some(ActionOutput::Model(name)) => {
                    op["responses"]["200"]["content"]["application/json"]["schema"] =
                        json!({"$ref": format!("#/components/schemas/{name}")});
                }
                Some(ActionOutput::Fields(fields)) => {
                    op["responses"]["200"]["content"]["application/json"]["schema"] =
                        object(fields, &|f: &Field| !f.optional);
                }
                None => {}
            }
            let entry = paths.entry(path).or_insert_with(|| json!({}));
            entry[a.method.to_ascii_lowercase()] = op;
        }
        record_links(&mut paths, m);
    }
    if schema.models.iter().any(|m| m.lifecycle.audited) {
        let read = schema
            .audit
            .as_ref()
            .map(|a| a.read.clone())
            .unwrap_or_default();
        let audited: Vec<&str> = schema
            .models
            .iter()
            .filter(|m| m.lifecycle.audited)
            .map(|m| m.name.as_str())
            .collect();
        let q = |name: &str, description: &str, schema: Value| json!({"name": name, "in": "query", "description": description, "schema": schema});
        let entry = json!({"type": "object", "properties": {
            "sequence_number": {"type": "integer"}, "event_id": {"type": "string", "format": "uuid"},
            "model": {"type": "string"}, "record_id": {"type": "string", "format": "uuid"},
            "action": {"type": "string", "enum": ["created", "updated", "deleted"]},
            "by_action": {"type": ["string", "null"], "description": "The custom action whose handler made the write, if one did."},
            "user": {"type": "string"}, "roles": {"type": "array", "items": {"type": "string"}},
            "timestamp": {"type": "string", "format": "date-time"},
            "old_values": {"type": ["object", "null"], "description": "The record before a delete, the changed fields' old values of an update, null for a create."},
            "new_values": {"type": ["object", "null"], "description": "The record after a create, the changed fields' new values of an update, null for a delete."}},
            "required": ["sequence_number", "event_id", "model", "record_id", "action", "user", "timestamp"]});
        paths.insert("/api/_audit".into(), json!({"get": {
            "tags": ["Audit"], "operationId": "audit_log", "summary": "The audit log of the audited models, oldest first",
            "description": format!("{} Entries derive from the event log; fields a caller may not see are left out of the values.", roles_note(&read)),
            "security": security(&read),
            "parameters": [
                q("model", "Only this model's entries.", json!({"type": "string", "enum": audited})),
                q("id", "Only this record's entries.", json!({"type": "string", "format": "uuid"})),
                q("principal", "Only the writes of this caller.", json!({"type": "string"})),
                q("since", "Only entries at or after this time.", json!({"type": "string", "format": "date-time"})),
                q("until", "Only entries at or before this time.", json!({"type": "string", "format": "date-time"})),
                q("limit", "At most this many entries (100 by default).", json!({"type": "integer", "minimum": 1, "maximum": 1000})),
                q("cursor", "The next_cursor of the page before.", json!({"type": "integer", "minimum": 0, "maximum": u64::MAX}))],
            "responses": {"200": {"description": "A page of entries.", "content": {"application/json": {"schema": {
                "type": "object", "properties": {"items": {"type": "array", "items": entry},
                    "next_cursor": {"type": ["integer", "null"], "description": "Where the next page starts; null at the end."}},
                "required": ["items", "next_cursor"]}}}},
                "400": problem_response("Bad query."), "401": problem_response("No or bad token."), "403": problem_response("Missing role.")}
        }}));
    }
    for p in &schema.projections {
        projection_path(schema, p, &mut paths, &mut components);
    }
    operational_paths(&mut paths);
    common_responses(&mut paths);
    let version = schema.service.version.as_deref().unwrap_or("0.1.0");
    let mut info = json!({"title": schema.service.name, "version": version});
    if let Some(d) = &schema.service.description {
        info["description"] = json!(d);
    }
    json!({
        "openapi": "3.1.0",
        "info": info,
        "servers": [{"url": "/", "description": "The service itself (every node of a cluster serves the same API)."}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "An API token from lithair.toml `[[auth.tokens]]`, or a JWT of the identity provider `[auth.jwt]` names."}}
        }
    })
}

/// The merge-patch body of `m` (RFC 7386): every field optional; `null` clears an
/// optional field.
fn patch_schema(m: &Model) -> Value {
    let props: Map<String, Value> = m
        .fields
        .iter()
        .map(|f| {
            // A default is what a create fills in; a patch that leaves a field out keeps it.
            let mut schema = without_default(field_schema(m, f));
            if f.optional {
                schema = json!({"anyOf": [schema, {"type": "null", "description": "Clears the field."}]});
            }
            (f.name.clone(), schema)
        })
        .collect();
    json!({"type": "object", "description": format!("A JSON merge patch of {}: the fields to change; `null` clears an optional field.", article(&m.name)),
        "properties": props, "additionalProperties": false})
}

/// Links from the answer of `m`'s create to every operation on the record it made: its
/// `id` as the path's, its `version` as a version's number, and its `ETag` as the
/// `If-Match` of the writes, so that a client (or an API fuzzer) can follow a create to
/// the record's reads, writes, history and actions.
fn record_links(paths: &mut Map<String, Value>, m: &Model) {
    let record = format!("{}/{{id}}", m.path);
    let mut links = Map::new();
    for (path, item) in paths.iter() {
        if *path != record && !path.starts_with(&format!("{record}/")) {
            continue;
        }
        for op in item.as_object().into_iter().flat_map(|ops| ops.values()) {
            let Some(id) = op["operationId"].as_str() else {
                continue;
            };
            let mut parameters = json!({"id": "$response.body#/id"});
            if path.contains("{v}") {
                parameters["v"] = json!("$response.body#/version");
            }
            let takes = |name: &str| {
                op["parameters"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["name"] == name))
            };
            if takes("If-Match") {
                parameters["header.If-Match"] = json!("$response.header.ETag");
            }
            let summary = op["summary"].as_str().unwrap_or(id);
            links.insert(
                id.to_string(),
                json!({"operationId": id, "parameters": parameters,
                    "description": format!("{summary}: the one just created.")}),
            );
        }
    }
    if links.is_empty() {
        return;
    }
    if let Some(created) = paths
        .get_mut(&m.path)
        .and_then(|item| item.get_mut("post"))
        .and_then(|post| post["responses"].get_mut("201"))
    {
        created["links"] = Value::Object(links);
    }
}

/// `schema` without its `default` (also inside a `oneOf` of an optional field).
fn without_default(mut schema: Value) -> Value {
    if let Some(obj) = schema.as_object_mut() {
        obj.remove("default");
        if let Some(Value::Array(alts)) = obj.get_mut("oneOf") {
            for a in alts {
                if let Some(o) = a.as_object_mut() {
                    o.remove("default");
                }
            }
        }
    }
    schema
}

/// The `changes` of a history entry of `m`: each field's old and new value, null where
/// there was none.
fn changes_schema(m: &Model) -> Map<String, Value> {
    m.fields
        .iter()
        .map(|f| {
            let value = json!({"anyOf": [type_schema(&f.ty), {"type": "null"}]});
            let change = json!({"type": "object", "properties": {"old": value, "new": value}, "required": ["old", "new"]});
            (f.name.clone(), change)
        })
        .collect()
}

/// The `sort` of `m`'s list: up to 8 comma-separated keys (fields, `id`, `created_at`,
/// `updated_at`, `version`), each with an optional `-`; or nothing.
fn sort_pattern(m: &Model) -> String {
    let keys: Vec<String> = m
        .fields
        .iter()
        .map(|f| f.name.clone())
        .chain(["id", "created_at", "updated_at", "version"].map(String::from))
        .collect();
    let key = format!("-?({})", keys.join("|"));
    format!("^({key}(,{key}){{0,7}})?$")
}

/// `name` with its indefinite article, as a summary reads it: "a Category", "an Order".
fn article(name: &str) -> String {
    let vowel = name
        .chars()
        .next()
        .is_some_and(|c| "AEIOUaeiou".contains(c));
    format!("{} {name}", if vowel { "an" } else { "a" })
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shop() -> Value {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/shop.yaml"
        ))
        .expect("shop.yaml");
        document(&crate::schema::check(&text).expect("a valid schema"))
    }

    /// Every operation documents the rate limit's 429 and the 503, with `Retry-After`; an
    /// operation with a body its 413 and 415; the operational routes are there; a PATCH
    /// body is typed.
    #[test]
    fn the_document_describes_every_route_and_common_answer() {
        let doc = shop();
        for (path, ops) in doc["paths"].as_object().expect("paths") {
            for (method, op) in ops.as_object().expect("operations") {
                if method == "parameters" {
                    continue;
                }
                for code in ["429", "503"] {
                    assert!(
                        op["responses"][code]["headers"]["Retry-After"].is_object()
                            || (path == "/ready" && code == "503"),
                        "{method} {path}: no {code} with Retry-After"
                    );
                }
                if op.get("requestBody").is_some() {
                    assert!(
                        op["responses"]["413"].is_object() && op["responses"]["415"].is_object(),
                        "{method} {path}"
                    );
                }
            }
        }
        for path in [
            "/health",
            "/ready",
            "/metrics",
            "/_cluster/status",
            "/openapi.json",
        ] {
            assert!(doc["paths"][path]["get"].is_object(), "{path}");
        }
        let patch = &doc["paths"]["/api/products/{id}"]["patch"]["requestBody"]["content"]
            ["application/merge-patch+json"]["schema"];
        assert_eq!(patch["$ref"], "#/components/schemas/ProductPatch");
        let schema = &doc["components"]["schemas"]["ProductPatch"];
        assert!(
            schema["required"].is_null(),
            "every field is optional in a patch"
        );
        assert!(
            schema["properties"]["cost"]["anyOf"][1]["type"] == "null",
            "an optional field clears with null"
        );
        assert_eq!(doc["servers"][0]["url"], "/");
    }
}
