//! The YAML language as JSON Schema types, for `lithair-gen schema` and editor completion.
//!
//! These types exist only to describe the language (their doc comments become the
//! schema's descriptions); the checker in `parse.rs` reads the YAML itself so that it can
//! report every problem with its position.

#![allow(dead_code)]

use std::collections::BTreeMap;

use schemars::JsonSchema;

/// A lithair model definition: one service, its roles and its models.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields, title = "lithair model definition")]
pub struct ModelFile {
    /// The service: its name names the generated crate and binary.
    service: ServiceDoc,
    /// Roles that permissions may name. `public` (anonymous callers) always exists.
    roles: Option<Vec<RoleDoc>>,
    /// Models by PascalCase name; each becomes a REST resource.
    models: BTreeMap<String, ModelDoc>,
    /// Who may read the audit log of the `audited` models.
    audit: Option<AuditDoc>,
    /// Read models by PascalCase name: aggregates of one model's records per group, kept
    /// up to date by every write and served read-only at `/api/<snake_case plural>`.
    projections: Option<BTreeMap<String, ProjectionDoc>>,
}

/// A projection: per group of a model's records, the aggregates it declares.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct ProjectionDoc {
    /// The model whose records it aggregates.
    source: String,
    /// What it shows.
    description: Option<String>,
    /// Only the source's records with these field values count (equality).
    #[serde(rename = "where")]
    filter: Option<BTreeMap<String, serde_json::Value>>,
    /// What the records are grouped by.
    group_by: GroupByDoc,
    /// Who may read it; default: the source model's read roles.
    permissions: Option<ProjectionPermissionsDoc>,
    /// Members of each group by snake_case name: `{ count: true }`, or `{ sum | avg | min
    /// | max: <int or float field> }`.
    aggregates: BTreeMap<String, AggregateDoc>,
}

/// The field a projection groups by.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct GroupByDoc {
    /// A field of the source, or `created_at` / `updated_at`.
    field: String,
    /// For a date or datetime: group by its UTC hour (`2026-12-01T13`), day
    /// (`2026-12-01`), ISO week (`2026-W49`) or month (`2026-12`).
    granularity: Option<GranularityDoc>,
}

/// A time bucket.
#[derive(JsonSchema)]
#[serde(rename_all = "snake_case")]
enum GranularityDoc {
    Hour,
    Day,
    Week,
    Month,
}

/// Who may read a projection.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct ProjectionPermissionsDoc {
    /// Roles that may read it (`public`: anyone).
    read: Vec<String>,
}

/// One aggregate: exactly one of its keys.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct AggregateDoc {
    /// `true`: how many records the group has.
    count: Option<bool>,
    /// The sum of a numeric field (exact, whatever the order of the writes).
    sum: Option<String>,
    /// The mean of a numeric field (`null` while no record has a value).
    avg: Option<String>,
    /// The smallest value of a numeric field.
    min: Option<String>,
    /// The largest value of a numeric field.
    max: Option<String>,
}

/// The service block.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct ServiceDoc {
    /// Lowercase crate name, e.g. `shop`.
    #[schemars(regex(pattern = r"^[a-z][a-z0-9_-]*$"))]
    name: String,
    /// What the service is for.
    description: Option<String>,
    /// The service's version, `MAJOR.MINOR.PATCH` (the OpenAPI document's `info.version`;
    /// default `0.1.0`).
    #[schemars(regex(pattern = r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)*$"))]
    version: Option<String>,
}

/// A role: a name, or a mapping with the roles it inherits from.
#[derive(JsonSchema)]
#[serde(untagged)]
enum RoleDoc {
    /// A role name.
    Name(String),
    /// A role that inherits the permissions of others.
    WithParents(RoleWithParents),
}

/// A role that inherits the permissions of other roles.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct RoleWithParents {
    /// The role's name.
    name: String,
    /// Roles whose permissions this role also holds.
    inherits: Option<Vec<String>>,
}

/// The operations a model can expose.
#[derive(JsonSchema)]
#[serde(rename_all = "snake_case")]
enum OperationDoc {
    List,
    Get,
    Create,
    Update,
    Patch,
    Delete,
}

/// A model: a REST resource stored as events.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct ModelDoc {
    /// URL path of the collection; default `/api/<plural snake_case>`.
    path: Option<String>,
    /// What the model is (used in docs and OpenAPI).
    description: Option<String>,
    /// Enabled operations; default all.
    operations: Option<Vec<OperationDoc>>,
    /// Roles allowed per operation group; an operation with no roles is denied to everyone.
    permissions: Option<PermissionsDoc>,
    /// A string field the server fills with the creating caller's subject (token name or
    /// JWT subject); the pseudo-role `owner` in `read`, `update` or `delete` then grants
    /// the operation on the caller's own records.
    owner_field: Option<String>,
    /// What of its records' past stays readable: the audit log, the version history.
    lifecycle: Option<LifecycleDoc>,
    /// Response caching of get and list answers.
    cache: Option<CacheDoc>,
    /// Storage tuning.
    persistence: Option<PersistenceDoc>,
    /// How its requests are traced when the service exports traces (`[telemetry]
    /// otlp_endpoint` in lithair.toml).
    tracing: Option<TracingDoc>,
    /// Fields by snake_case name. `id`, `created_at`, `updated_at` and `version` are implicit.
    fields: BTreeMap<String, FieldDoc>,
    /// Custom endpoints whose bodies you write in `src/handlers/<model>.rs`.
    actions: Option<BTreeMap<String, ActionDoc>>,
    /// The model's former name: records and events stored under it are read as this
    /// model's (not a breaking change; its path follows the new name unless `path` says).
    renamed_from: Option<String>,
}

/// Roles per operation group.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct PermissionsDoc {
    /// `list` and `get`.
    read: Option<Vec<String>>,
    /// `create`.
    create: Option<Vec<String>>,
    /// `update` (PUT) and `patch` (PATCH).
    update: Option<Vec<String>>,
    /// `delete`.
    delete: Option<Vec<String>>,
}

/// The audit trail and version history of a model, derived from its events (so they
/// survive restarts and are the same on every node).
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct LifecycleDoc {
    /// Every create, update, patch and delete is an entry of `GET /api/_audit` (who, when,
    /// old and new values), and `GET …/{id}/history` lists the record's changes.
    audited: Option<bool>,
    /// `GET …/{id}/versions/{v}` serves the newest N versions of each record (older: 410),
    /// and `GET …/{id}/history` lists its changes.
    #[schemars(range(min = 1, max = 100000))]
    versioned: Option<u64>,
}

/// Who may read the audit log.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct AuditDoc {
    /// Roles that may read `GET /api/_audit` and the history of deleted records; none:
    /// nobody.
    read: Option<Vec<String>>,
}

/// Response caching of a model: `Cache-Control: max-age` on get and list answers (`public`
/// when anonymous callers read the model and see every field, `private` otherwise), and
/// a server-side cache of list pages that a write to the model invalidates. Every get and
/// list has an ETag and answers `If-None-Match` with 304, cached or not.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct CacheDoc {
    /// Seconds an answer may be reused (1 to 31536000).
    #[schemars(range(min = 1, max = 31536000))]
    ttl: u64,
}

/// Tracing of a model's requests: what of `[telemetry]` (lithair.toml) applies to them.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct TracingDoc {
    /// `false`: none of its requests is traced, whatever a caller's `traceparent` says
    /// (default true).
    enabled: Option<bool>,
    /// The share of its requests traced, 0 to 1 (default: `[telemetry] sample_rate`).
    #[schemars(range(min = 0, max = 1))]
    sample_rate: Option<f64>,
    /// Whether a traced request's body (up to 4 KiB) is an attribute of its span
    /// (default: `[telemetry] include_body`, itself false).
    include_body: Option<bool>,
}

/// Storage tuning of a model.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct PersistenceDoc {
    /// Write a snapshot every N events of this model (default from lithair.toml, 1000).
    #[schemars(range(min = 1))]
    snapshot_every: Option<u64>,
}

/// A field: its type and rules. `name: string` is shorthand for `name: { type: string }`.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(clippy::large_enum_variant)] // never built: it only describes the language
enum FieldDoc {
    /// Shorthand: only the type.
    Type(TypeDoc),
    /// The full form.
    Full(FieldFull),
}

/// A field type: string, text, bool, int, float, uuid, date, datetime, json, enum,
/// `list<T>` or `ref<Model>`.
#[derive(JsonSchema)]
struct TypeDoc(
    #[schemars(regex(
        pattern = r"^(string|text|bool|int|float|uuid|date|datetime|json|enum|list<(string|text|bool|int|float|uuid|date|datetime|json|enum|ref<[A-Z][A-Za-z0-9]*>)>|ref<[A-Z][A-Za-z0-9]*>)$"
    ))]
    String,
);

/// The full form of a field.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct FieldFull {
    /// The type.
    #[serde(rename = "type")]
    ty: TypeDoc,
    /// What the field holds.
    description: Option<String>,
    /// The field may be absent or null.
    optional: Option<bool>,
    /// The value a create gets when it leaves the field out; must match the type and rules.
    default: Option<serde_json::Value>,
    /// No two records share a value (409 on conflict).
    unique: Option<bool>,
    /// Kept in a secondary index for fast equality filters.
    indexed: Option<bool>,
    /// Set on create, refused on update (422).
    immutable: Option<bool>,
    /// The allowed values of an enum.
    values: Option<Vec<String>>,
    /// Value rules, checked on every write (422 lists every failing field).
    validate: Option<ValidateDoc>,
    /// Narrows the model's permissions for this field.
    permissions: Option<FieldPermissionsDoc>,
    /// The field's former name: records and events stored under it are read under this
    /// one (not a breaking change).
    renamed_from: Option<String>,
    /// The value records stored without the field read: those stored before it existed
    /// or was required (so a new required field is not a breaking change). `default` is
    /// what a create that leaves the field out gets; without `backfill`, it serves for
    /// older records too.
    backfill: Option<serde_json::Value>,
}

/// Roles that see and set one field.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct FieldPermissionsDoc {
    /// Who sees the field in answers and may filter or sort on it; others never receive it.
    read: Option<Vec<String>>,
    /// Who may set or change it (403 for others); default: the `read` roles.
    write: Option<Vec<String>>,
}

/// Value rules.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct ValidateDoc {
    /// Smallest number (int, float).
    min: Option<f64>,
    /// Largest number (int, float).
    max: Option<f64>,
    /// Fewest characters (string, text) or items (list).
    min_length: Option<u64>,
    /// Most characters (string, text) or items (list).
    max_length: Option<u64>,
    /// A regular expression the whole value must match (string, text).
    pattern: Option<String>,
}

/// A custom endpoint.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct ActionDoc {
    /// HTTP method.
    method: MethodDoc,
    /// Path below the model's path: `{id}/restock` (one record) or `import` (collection).
    path: String,
    /// Roles allowed to call it; none means nobody.
    permission: Option<Vec<String>>,
    /// What it does.
    description: Option<String>,
    /// The fields of its body, in a model's field syntax: checked before the handler runs
    /// (422 lists every failing field), and the handler gets them as a typed struct.
    input: Option<BTreeMap<String, FieldDoc>>,
    /// What it answers: a model's name (a record of it, as the caller may see it), or
    /// fields in a model's field syntax; the handler returns it typed.
    output: Option<OutputDoc>,
}

/// An action's answer: a model's name, or fields.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(clippy::large_enum_variant)] // never built: it only describes the language
enum OutputDoc {
    /// A record of this model.
    Model(String),
    /// An object of these fields.
    Fields(BTreeMap<String, FieldDoc>),
}

/// An HTTP method.
#[derive(JsonSchema)]
#[allow(clippy::upper_case_acronyms)] // the variant names are the YAML spelling
enum MethodDoc {
    GET,
    POST,
    PUT,
    PATCH,
    DELETE,
}

/// The JSON Schema of the language, pretty-printed with a trailing newline.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(ModelFile);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}
