//! The service description the runtime serves: the checked schema that lithair-gen writes
//! to `src/generated/spec.json`, read once at start and compiled (regexes, role closure).

use std::collections::{BTreeSet, HashMap};

use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

/// Why the embedded spec could not be used (a lithair-gen/runtime version mismatch).
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The JSON does not have the expected shape.
    #[error("the generated spec does not match this lithair-runtime (regenerate with a matching lithair-gen): {0}")]
    Shape(#[from] serde_json::Error),
    /// A pattern does not compile.
    #[error("model {model}: field {field}: invalid pattern: {message}")]
    Pattern {
        model: String,
        field: String,
        message: String,
    },
}

/// `spec.json` as written by lithair-gen.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// The service block.
    pub service: ServiceInfo,
    /// Declared roles.
    pub roles: Vec<RoleSpec>,
    /// Models.
    pub models: Vec<ModelSpec>,
}

/// Name and description.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceInfo {
    /// Crate name.
    pub name: String,
    /// What it is.
    #[serde(default)]
    pub description: Option<String>,
}

/// A role and its parents.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSpec {
    /// Name.
    pub name: String,
    /// Inherited roles.
    #[serde(default)]
    pub inherits: Vec<String>,
}

/// An operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// Collection GET.
    List,
    /// Item GET.
    Get,
    /// Collection POST.
    Create,
    /// Item PUT.
    Update,
    /// Item PATCH.
    Patch,
    /// Item DELETE.
    Delete,
}

/// Role lists per operation group.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Permissions {
    /// list, get.
    pub read: Vec<String>,
    /// create.
    pub create: Vec<String>,
    /// update, patch.
    pub update: Vec<String>,
    /// delete.
    pub delete: Vec<String>,
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

/// A model.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// PascalCase name.
    pub name: String,
    /// snake_case name.
    pub snake: String,
    /// Collection path.
    pub path: String,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Enabled operations.
    pub operations: Vec<Operation>,
    /// Permissions.
    pub permissions: Permissions,
    /// Snapshot period in events (None: config default).
    #[serde(default)]
    pub snapshot_every: Option<u64>,
    /// Fields.
    pub fields: Vec<FieldSpec>,
    /// Actions.
    #[serde(default)]
    pub actions: Vec<ActionSpec>,
}

impl ModelSpec {
    /// The field named `name`.
    pub fn field(&self, name: &str) -> Option<&FieldSpec> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// A field type.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FieldType {
    /// String.
    String,
    /// Long string.
    Text,
    /// Boolean.
    Bool,
    /// i64.
    Int,
    /// f64.
    Float,
    /// UUID.
    Uuid,
    /// `YYYY-MM-DD`.
    Date,
    /// RFC 3339.
    Datetime,
    /// Any JSON.
    Json,
    /// One of the values.
    Enum {
        /// Allowed values.
        values: Vec<String>,
    },
    /// A list.
    List {
        /// Item type.
        item: Box<FieldType>,
    },
    /// Id of a record of `model`.
    Ref {
        /// Target model.
        model: String,
    },
}

/// Value rules.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// Smallest number.
    #[serde(default)]
    pub min: Option<f64>,
    /// Largest number.
    #[serde(default)]
    pub max: Option<f64>,
    /// Fewest chars / items.
    #[serde(default)]
    pub min_length: Option<u64>,
    /// Most chars / items.
    #[serde(default)]
    pub max_length: Option<u64>,
    /// Whole-value regex.
    #[serde(default)]
    pub pattern: Option<String>,
}

/// A field.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// JSON name.
    pub name: String,
    /// Type.
    #[serde(rename = "type")]
    pub ty: FieldType,
    /// May be absent/null.
    #[serde(default)]
    pub optional: bool,
    /// Default on create.
    #[serde(default)]
    pub default: Option<Value>,
    /// Unique across records.
    #[serde(default)]
    pub unique: bool,
    /// Secondary index.
    #[serde(default)]
    pub indexed: bool,
    /// Refused on update.
    #[serde(default)]
    pub immutable: bool,
    /// Rules.
    #[serde(default)]
    pub rules: Rules,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
}

/// A custom endpoint.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionSpec {
    /// Method name in the hooks trait.
    pub name: String,
    /// HTTP method.
    pub method: String,
    /// Path below the model path.
    pub path: String,
    /// Allowed roles.
    pub permission: Vec<String>,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
}

impl ActionSpec {
    /// Whether it works on one record.
    pub fn on_record(&self) -> bool {
        self.path.starts_with("{id}")
    }

    /// The path after `{id}/` (or the whole path for collection actions).
    pub fn tail(&self) -> &str {
        self.path.strip_prefix("{id}/").unwrap_or(&self.path)
    }
}

/// The spec plus what is derived from it once: compiled patterns, inherited roles.
#[derive(Debug)]
pub struct CompiledSpec {
    /// The spec.
    pub spec: ServiceSpec,
    /// `(model, field)` -> compiled pattern, anchored.
    pub patterns: HashMap<(String, String), Regex>,
    /// role -> itself plus every role it inherits, transitively.
    pub effective_roles: HashMap<String, BTreeSet<String>>,
}

impl CompiledSpec {
    /// Parses and compiles `spec.json`.
    pub fn from_json(text: &str) -> Result<Self, SpecError> {
        let spec: ServiceSpec = serde_json::from_str(text)?;
        let mut patterns = HashMap::new();
        for m in &spec.models {
            for f in &m.fields {
                if let Some(p) = &f.rules.pattern {
                    let re = Regex::new(&format!("^(?:{p})$")).map_err(|e| SpecError::Pattern {
                        model: m.name.clone(),
                        field: f.name.clone(),
                        message: e.to_string(),
                    })?;
                    patterns.insert((m.name.clone(), f.name.clone()), re);
                }
            }
        }
        let mut effective_roles = HashMap::new();
        for r in &spec.roles {
            let mut all = BTreeSet::new();
            let mut stack = vec![r.name.clone()];
            while let Some(x) = stack.pop() {
                if all.insert(x.clone()) {
                    if let Some(p) = spec.roles.iter().find(|p| p.name == x) {
                        stack.extend(p.inherits.iter().cloned());
                    }
                }
            }
            effective_roles.insert(r.name.clone(), all);
        }
        Ok(CompiledSpec {
            spec,
            patterns,
            effective_roles,
        })
    }

    /// The model named `name`.
    pub fn model(&self, name: &str) -> Option<&ModelSpec> {
        self.spec.models.iter().find(|m| m.name == name)
    }
}
