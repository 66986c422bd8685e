//! lithair-spec: the checked model of a service, shared by the generator and the runtime.
//!
//! lithair-gen turns a YAML schema into a [`Schema`] once every diagnostic has passed and
//! writes it to `src/generated/spec.json` in the generated crate; lithair-runtime reads that
//! file at start. One definition of these types keeps the two sides from drifting apart.

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub mod values;

/// A whole, checked schema.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schema {
    /// The service block.
    pub service: Service,
    /// Declared roles (`public` is implicit and not listed).
    pub roles: Vec<Role>,
    /// Models in source order.
    pub models: Vec<Model>,
    /// Who may read the audit log (`audit:`; none: nobody).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<Audit>,
    /// Read models fed by a model's records (`projections:`), in source order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub projections: Vec<Projection>,
}

impl Schema {
    /// The model named `name`.
    pub fn model(&self, name: &str) -> Option<&Model> {
        self.models.iter().find(|m| m.name == name)
    }

    /// Per former model name (`renamed_from`): the model's name now.
    pub fn renamed_models(&self) -> std::collections::HashMap<String, String> {
        self.models
            .iter()
            .filter_map(|m| Some((m.renamed_from.clone()?, m.name.clone())))
            .collect()
    }

    /// The name a model has now: `name`, or the name of the model renamed from it
    /// (`renamed_from`), for what was stored under its former name.
    pub fn current_name<'a>(&'a self, name: &'a str) -> &'a str {
        if self.models.iter().any(|m| m.name == name) {
            return name;
        }
        self.models
            .iter()
            .find(|m| m.renamed_from.as_deref() == Some(name))
            .map_or(name, |m| m.name.as_str())
    }
}

/// A projection: aggregates of one model's records, per group, kept up to date by every
/// write and served read-only at its path.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Projection {
    /// PascalCase name.
    pub name: String,
    /// URL path (`/api/<snake_case plural of the name>`).
    pub path: String,
    /// What it shows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The model whose records it aggregates.
    pub source: String,
    /// Only the source's records with these values count (`where:`, equality).
    #[serde(default, rename = "where", skip_serializing_if = "Vec::is_empty")]
    pub filter: Vec<Condition>,
    /// What the records are grouped by.
    pub group_by: GroupBy,
    /// The roles that may read it.
    pub read: Vec<String>,
    /// The aggregates each group holds, in source order.
    pub aggregates: Vec<Aggregate>,
}

/// `field: value` of a projection's `where:`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// A field of the source model.
    pub field: String,
    /// The value it must have.
    pub value: Value,
}

/// `group_by:` of a projection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupBy {
    /// A field of the source model (or `created_at`, `updated_at`).
    pub field: String,
    /// For a date or datetime field: the time bucket (UTC) its values fall in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granularity: Option<Granularity>,
}

/// The time buckets a projection groups a date or datetime by (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    /// `2026-12-01T13` (datetimes only).
    Hour,
    /// `2026-12-01`.
    Day,
    /// `2026-W49` (ISO 8601 weeks).
    Week,
    /// `2026-12`.
    Month,
}

impl Granularity {
    /// Every granularity, finest first.
    pub const ALL: [Granularity; 4] = [
        Granularity::Hour,
        Granularity::Day,
        Granularity::Week,
        Granularity::Month,
    ];

    /// The YAML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Hour => "hour",
            Granularity::Day => "day",
            Granularity::Week => "week",
            Granularity::Month => "month",
        }
    }
}

/// One aggregate of a projection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Aggregate {
    /// snake_case name: the member of each group that holds it.
    pub name: String,
    /// What it computes.
    pub op: AggregateOp,
    /// The numeric field it reads (None for `count`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// What an aggregate computes over a group's records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggregateOp {
    /// How many records the group has.
    Count,
    /// The sum of the field's values (exact: the same whatever the order of the writes).
    Sum,
    /// Their mean (`null` while no record has a value).
    Avg,
    /// The smallest (`null` while no record has a value).
    Min,
    /// The largest (`null` while no record has a value).
    Max,
}

impl AggregateOp {
    /// Every operation.
    pub const ALL: [AggregateOp; 5] = [
        AggregateOp::Count,
        AggregateOp::Sum,
        AggregateOp::Avg,
        AggregateOp::Min,
        AggregateOp::Max,
    ];

    /// The YAML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AggregateOp::Count => "count",
            AggregateOp::Sum => "sum",
            AggregateOp::Avg => "avg",
            AggregateOp::Min => "min",
            AggregateOp::Max => "max",
        }
    }
}

/// `audit:` at the top level.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Audit {
    /// The roles that may read `GET /api/_audit` (and the history of deleted records).
    pub read: Vec<String>,
}

/// `lifecycle:` of a model: what of its past is kept readable.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lifecycle {
    /// Every write is an entry of the audit log (`GET /api/_audit`).
    #[serde(default)]
    pub audited: bool,
    /// The newest N versions of each record are readable (`{id}/versions/{v}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versioned: Option<u64>,
}

impl Lifecycle {
    /// Whether nothing is kept beyond the event log.
    pub fn is_off(&self) -> bool {
        !self.audited && self.versioned.is_none()
    }
}

/// `service:`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Crate and binary name (lowercase, `-` or `_`).
    pub name: String,
    /// What the service is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The service's version (`service.version`; the OpenAPI document's `info.version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// A role and the roles whose permissions it also holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    /// The role's name.
    pub name: String,
    /// Roles this one inherits from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inherits: Vec<String>,
}

/// The operations a model may expose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// `GET /api/<plural>`.
    List,
    /// `GET /api/<plural>/{id}`.
    Get,
    /// `POST /api/<plural>`.
    Create,
    /// `PUT /api/<plural>/{id}`.
    Update,
    /// `PATCH /api/<plural>/{id}`.
    Patch,
    /// `DELETE /api/<plural>/{id}`.
    Delete,
}

impl Operation {
    /// Every operation, in the order of the YAML default.
    pub const ALL: [Operation; 6] = [
        Operation::List,
        Operation::Get,
        Operation::Create,
        Operation::Update,
        Operation::Patch,
        Operation::Delete,
    ];

    /// The YAML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::List => "list",
            Operation::Get => "get",
            Operation::Create => "create",
            Operation::Update => "update",
            Operation::Patch => "patch",
            Operation::Delete => "delete",
        }
    }
}

/// The pseudo-role that grants an operation on the records a caller owns (the model's
/// `owner_field` equals the caller's subject).
pub const OWNER: &str = "owner";

/// Who may do what with a model. Each list names roles; an empty list denies everyone.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Permissions {
    /// `list` and `get`.
    pub read: Vec<String>,
    /// `create`.
    pub create: Vec<String>,
    /// `update` and `patch`.
    pub update: Vec<String>,
    /// `delete`.
    pub delete: Vec<String>,
}

/// A model: one resource with its CRUD endpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// PascalCase name.
    pub name: String,
    /// snake_case name, used for files and modules.
    pub snake: String,
    /// URL path of the collection.
    pub path: String,
    /// What the model is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Enabled operations, in canonical order.
    pub operations: Vec<Operation>,
    /// Role lists per operation group.
    pub permissions: Permissions,
    /// The string field that holds each record's owner (the subject of the caller who
    /// created it), for the `owner` pseudo-role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_field: Option<String>,
    /// The audit trail and version history (`lifecycle:`).
    #[serde(default, skip_serializing_if = "Lifecycle::is_off")]
    pub lifecycle: Lifecycle,
    /// Response caching (`cache: { ttl }`; None: answers say `no-store` to callers with
    /// a token, and nothing to others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<Cache>,
    /// Snapshot the model's store every N events (None: the config's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_every: Option<u64>,
    /// How its requests are traced when the service exports traces (`tracing:`; None:
    /// as `[telemetry]` says).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<Tracing>,
    /// Fields in source order (the implicit `id` is not listed).
    pub fields: Vec<Field>,
    /// Custom endpoints whose bodies the user writes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<Action>,
    /// The model's former name: records and events stored under it are this model's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renamed_from: Option<String>,
}

impl Model {
    /// Whether `op` is enabled.
    pub fn has(&self, op: Operation) -> bool {
        self.operations.contains(&op)
    }

    /// The field named `name`.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Whether its records' histories are served (`audited` or `versioned`).
    pub fn keeps_history(&self) -> bool {
        !self.lifecycle.is_off()
    }
}

impl Permissions {
    /// The roles allowed to run `op`.
    pub fn for_op(&self, op: Operation) -> &[String] {
        match op {
            Operation::List | Operation::Get => &self.read,
            Operation::Create => &self.create,
            Operation::Update | Operation::Patch => &self.update,
            Operation::Delete => &self.delete,
        }
    }
}

/// `cache:` of a model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cache {
    /// Seconds a client (or a shared cache, for a public model) may reuse a get or list
    /// answer (`Cache-Control: max-age`).
    pub ttl: u64,
}

/// `tracing:` of a model: what of the service's trace export (`[telemetry]
/// otlp_endpoint`) applies to requests of this model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tracing {
    /// `false`: none of its requests is traced, whatever the caller's `traceparent` says.
    pub enabled: bool,
    /// The share of its requests traced (None: `[telemetry] sample_rate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<f64>,
    /// Whether a traced request's body is an attribute of its span (None: `[telemetry]
    /// include_body`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_body: Option<bool>,
}

/// A field's type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FieldType {
    /// A short string.
    String,
    /// A long string.
    Text,
    /// `true` or `false`.
    Bool,
    /// A 64-bit signed integer.
    Int,
    /// A 64-bit float.
    Float,
    /// A UUID.
    Uuid,
    /// A calendar date (`2024-09-13`).
    Date,
    /// An RFC 3339 timestamp.
    Datetime,
    /// Any JSON value.
    Json,
    /// One of fixed strings.
    Enum {
        /// The allowed values.
        values: Vec<String>,
    },
    /// A list of items.
    List {
        /// The item type.
        item: Box<FieldType>,
    },
    /// The id of a record of another model.
    Ref {
        /// The referenced model.
        model: String,
    },
}

impl FieldType {
    /// Whether lists take ranges on it (`gt`, `gte`, `lt`, `lte`): numbers, strings, dates
    /// and datetimes; the others take `eq` and `ne` only.
    pub fn takes_ranges(&self) -> bool {
        matches!(
            self,
            FieldType::String
                | FieldType::Text
                | FieldType::Int
                | FieldType::Float
                | FieldType::Date
                | FieldType::Datetime
        )
    }

    /// The type as written in YAML (`list<string>`, `ref<Category>`...).
    pub fn spelling(&self) -> String {
        match self {
            FieldType::String => "string".into(),
            FieldType::Text => "text".into(),
            FieldType::Bool => "bool".into(),
            FieldType::Int => "int".into(),
            FieldType::Float => "float".into(),
            FieldType::Uuid => "uuid".into(),
            FieldType::Date => "date".into(),
            FieldType::Datetime => "datetime".into(),
            FieldType::Json => "json".into(),
            FieldType::Enum { .. } => "enum".into(),
            FieldType::List { item } => format!("list<{}>", item.spelling()),
            FieldType::Ref { model } => format!("ref<{model}>"),
        }
    }

    /// Whether values of this type are strings (for length and pattern rules).
    pub fn is_stringy(&self) -> bool {
        matches!(self, FieldType::String | FieldType::Text)
    }

    /// Whether values of this type are numbers (for min/max and aggregates).
    pub fn is_numeric(&self) -> bool {
        matches!(self, FieldType::Int | FieldType::Float)
    }
}

/// Value rules of a field (`validate:`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// Smallest number allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Largest number allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Fewest characters (strings) or items (lists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_length: Option<u64>,
    /// Most characters (strings) or items (lists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u64>,
    /// A regular expression the whole string must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
}

impl Rules {
    /// Whether no rule is set.
    pub fn is_empty(&self) -> bool {
        *self == Rules::default()
    }
}

/// A field of a model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Field {
    /// snake_case name, as in JSON.
    pub name: String,
    /// The type.
    #[serde(rename = "type")]
    pub ty: FieldType,
    /// May be absent or null.
    #[serde(default)]
    pub optional: bool,
    /// The value used when a create leaves the field out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// No two records share a value.
    #[serde(default)]
    pub unique: bool,
    /// Kept in a secondary index (fast equality filters).
    #[serde(default)]
    pub indexed: bool,
    /// Set on create, refused on update.
    #[serde(default)]
    pub immutable: bool,
    /// Value rules.
    #[serde(default, skip_serializing_if = "Rules::is_empty")]
    pub rules: Rules,
    /// What the field holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Who may see and set it, beyond the model's permissions.
    #[serde(default, skip_serializing_if = "FieldPermissions::is_open")]
    pub permissions: FieldPermissions,
    /// The field's former name: stored records and events that hold the value under that
    /// name are read under this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renamed_from: Option<String>,
    /// The value records stored without the field read (those stored before it existed,
    /// or before it was required); without it, `default` serves for them too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfill: Option<Value>,
}

impl Field {
    /// Whether a create must carry this field.
    pub fn required(&self) -> bool {
        !self.optional && self.default.is_none()
    }

    /// The value a record stored without the field reads: its `backfill`, else its
    /// `default`.
    pub fn fill(&self) -> Option<&Value> {
        self.backfill.as_ref().or(self.default.as_ref())
    }

    /// The roles that see the field (None: whoever reads the model).
    pub fn read_roles(&self) -> Option<&[String]> {
        self.permissions.read.as_deref()
    }

    /// The roles that may set the field (None: whoever may create or update the model).
    /// A field whose `read` is limited and whose `write` is not given is written only by
    /// the roles that read it: a caller never sets what it cannot see.
    pub fn write_roles(&self) -> Option<&[String]> {
        self.permissions
            .write
            .as_deref()
            .or(self.permissions.read.as_deref())
    }
}

/// `permissions:` of a field: each list, when given, narrows the model's permissions to
/// those roles for this field (an empty list: nobody).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldPermissions {
    /// Who sees the field in what they receive, and may filter or sort on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<Vec<String>>,
    /// Who may set or change it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write: Option<Vec<String>>,
}

impl FieldPermissions {
    /// Whether neither list is given.
    pub fn is_open(&self) -> bool {
        self.read.is_none() && self.write.is_none()
    }
}

/// A custom endpoint on a model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    /// snake_case name; also the hook method's name.
    pub name: String,
    /// HTTP method.
    pub method: String,
    /// Path below the model's path, e.g. `{id}/restock` or `import`.
    pub path: String,
    /// Roles allowed to call it.
    pub permission: Vec<String>,
    /// What it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The fields of its body (`input:`, the syntax of a model's fields), checked as a
    /// create's body is before the handler runs (None: any JSON body, untyped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Vec<Field>>,
    /// What it answers (`output:`; None: any JSON, untyped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<ActionOutput>,
}

/// What an action answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionOutput {
    /// A record of this model (`output: Product`), as the caller may see it.
    Model(String),
    /// An object of these fields (`output: { ... }`, the syntax of a model's fields).
    Fields(Vec<Field>),
}

impl Action {
    /// Whether the action works on one record (its path starts with `{id}`).
    pub fn on_record(&self) -> bool {
        self.path.starts_with("{id}")
    }

    /// The path after `{id}/` (or the whole path for collection actions).
    pub fn tail(&self) -> &str {
        self.path.strip_prefix("{id}/").unwrap_or(&self.path)
    }
}
