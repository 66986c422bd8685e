//! The keys each mapping of the language accepts. The checker reads these lists, and a
//! test holds them equal to the JSON Schema's properties, so the editor completion and
//! the checks never drift apart.

/// Top level.
pub const TOP: &[&str] = &["service", "roles", "models", "audit", "projections"];
/// Top-level keys of the design that the runtime does not act on yet.
pub const TOP_UNSUPPORTED: &[(&str, &str)] = &[];
/// `service:`.
pub const SERVICE: &[&str] = &["name", "description", "version"];
/// A role written as a mapping.
pub const ROLE: &[&str] = &["name", "inherits"];
/// A model.
pub const MODEL: &[&str] = &[
    "path",
    "description",
    "operations",
    "permissions",
    "owner_field",
    "lifecycle",
    "cache",
    "persistence",
    "tracing",
    "fields",
    "actions",
    "renamed_from",
];
/// Model keys of the design that the runtime does not act on yet.
pub const MODEL_UNSUPPORTED: &[(&str, &str)] = &[];
/// `permissions:` of a model.
pub const PERMISSIONS: &[&str] = &["read", "create", "update", "delete"];
/// `audit:` at the top level.
pub const AUDIT: &[&str] = &["read"];
/// `lifecycle:` of a model.
pub const LIFECYCLE: &[&str] = &["audited", "versioned"];
/// `cache:` of a model.
pub const CACHE: &[&str] = &["ttl"];
/// `tracing:` of a model.
pub const TRACING: &[&str] = &["enabled", "sample_rate", "include_body"];
/// `persistence:` of a model.
pub const PERSISTENCE: &[&str] = &["snapshot_every"];
/// A field.
pub const FIELD: &[&str] = &[
    "type",
    "description",
    "optional",
    "default",
    "unique",
    "indexed",
    "immutable",
    "values",
    "validate",
    "permissions",
    "renamed_from",
    "backfill",
];
/// `permissions:` of a field.
pub const FIELD_PERMISSIONS: &[&str] = &["read", "write"];
/// `validate:` of a field.
pub const VALIDATE: &[&str] = &["min", "max", "min_length", "max_length", "pattern"];
/// An action.
pub const ACTION: &[&str] = &[
    "method",
    "path",
    "permission",
    "description",
    "input",
    "output",
];
/// A projection.
pub const PROJECTION: &[&str] = &[
    "source",
    "description",
    "where",
    "group_by",
    "permissions",
    "aggregates",
];
/// `group_by:` of a projection.
pub const GROUP_BY: &[&str] = &["field", "granularity"];
/// `permissions:` of a projection.
pub const PROJECTION_PERMISSIONS: &[&str] = &["read"];
