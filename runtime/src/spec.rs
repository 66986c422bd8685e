//! The service description the runtime serves: the checked schema that lithair-gen writes
//! to `src/generated/spec.json`, read once at start and compiled (regexes, role closure).

use std::collections::{BTreeSet, HashMap};

use regex::Regex;

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

pub use lithair_spec::{
    Action as ActionSpec, ActionOutput, AggregateOp, Field as FieldSpec, FieldType, Granularity,
    Model as ModelSpec, Operation, Projection as ProjectionSpec, Schema as ServiceSpec, OWNER,
};

/// The spec plus what is derived from it once: compiled patterns, inherited roles.
#[derive(Debug)]
pub struct CompiledSpec {
    /// The spec.
    pub spec: ServiceSpec,
    /// `(model, field)` -> compiled pattern, anchored.
    pub patterns: HashMap<(String, String), Regex>,
    /// role -> itself plus every role it inherits, transitively.
    pub effective_roles: HashMap<String, BTreeSet<String>>,
    /// `(model, action)` -> the action's `input` as a model of its own (named "the input
    /// of Product.restock" in its errors), which its body is checked against.
    pub inputs: HashMap<(String, String), ModelSpec>,
}

impl CompiledSpec {
    /// Parses and compiles `spec.json`.
    pub fn from_json(text: &str) -> Result<Self, SpecError> {
        let spec: ServiceSpec = serde_json::from_str(text)?;
        let mut inputs = HashMap::new();
        for m in &spec.models {
            for a in &m.actions {
                let Some(fields) = &a.input else { continue };
                let name = format!("the input of {}.{}", m.name, a.name);
                let model: ModelSpec = serde_json::from_value(serde_json::json!({
                    "name": name, "snake": "", "path": "", "operations": [],
                    "permissions": {"read": [], "create": [], "update": [], "delete": []},
                    "fields": fields,
                }))?;
                inputs.insert((m.name.clone(), a.name.clone()), model);
            }
        }
        let mut patterns = HashMap::new();
        for m in spec.models.iter().chain(inputs.values()) {
            for f in &m.fields {
                if let Some(p) = &f.rules.pattern {
                    let re = Regex::new(&lithair_spec::values::anchored(p)).map_err(|e| {
                        SpecError::Pattern {
                            model: m.name.clone(),
                            field: f.name.clone(),
                            message: e.to_string(),
                        }
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
            inputs,
        })
    }

    /// The model named `name`.
    pub fn model(&self, name: &str) -> Option<&ModelSpec> {
        self.spec.models.iter().find(|m| m.name == name)
    }
}

/// Schemas the runtime's unit tests share.
#[cfg(test)]
pub(crate) mod fixtures {
    /// One model, `Item`, with an int `stock`; every operation open to everyone.
    pub const STOCK: &str = r#"{
      "service": {"name": "t"},
      "roles": [],
      "models": [{
        "name": "Item", "snake": "item", "path": "/api/items",
        "operations": ["list", "get", "create", "update", "patch", "delete"],
        "permissions": {"read": [], "create": [], "update": [], "delete": []},
        "fields": [{"name": "stock", "type": {"kind": "int"}}]
      }]
    }"#;

    /// A schema of one model, `Item` (listed only), with `fields` (the JSON of its
    /// field list's entries).
    pub fn item(fields: &str) -> super::CompiledSpec {
        let text = format!(
            r#"{{
              "service": {{"name": "t"}}, "roles": [],
              "models": [{{
                "name": "Item", "snake": "item", "path": "/api/items",
                "operations": ["list"],
                "permissions": {{"read": [], "create": [], "update": [], "delete": []}},
                "fields": [{fields}]
              }}]
            }}"#
        );
        super::CompiledSpec::from_json(&text).expect("a test schema")
    }
}
